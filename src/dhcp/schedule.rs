//! A worker's schedule: which comes next, a queued packet or an operation
//! that ended. Generic, so tests drive it with plain jobs and futures.

use std::future::Future;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Jobs a worker takes from its queue in a row before it finishes the
/// operations that have ended meanwhile (their acks), even if more jobs
/// are queued.
const FAIR_SHARE: usize = 32;

/// What a worker does with a job and with an operation that ended;
/// [`serve`] decides when. A trait rather than two async closures: rustc
/// cannot prove `Send` (the worker is spawned) for a generic await of an
/// async closure's future that borrows the closure's captures.
pub(super) trait Handler {
    type Job;
    type Op: Future;
    async fn job(&mut self, job: Self::Job, ops: &mut FuturesUnordered<Self::Op>);
    async fn ended(
        &mut self,
        ended: <Self::Op as Future>::Output,
        ops: &mut FuturesUnordered<Self::Op>,
    );
}

/// `cancel` first, then the queue, then the operations that ended, but
/// never more than [`FAIR_SHARE`] jobs in a row while operations have
/// ended. Returns when `cancel` fires or every sender is gone, leaving the
/// jobs still queued and the operations in flight to the caller.
pub(super) async fn serve<H: Handler>(
    rx: &mut mpsc::Receiver<H::Job>,
    ops: &mut FuturesUnordered<H::Op>,
    cancel: &CancellationToken,
    handler: &mut H,
) {
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    // Jobs taken from the queue since operations were last looked at.
    let mut in_a_row = 0;
    loop {
        // Queued packets before ended operations: a look's offers go out
        // ahead of the acks a group commit released at once.
        tokio::select! {
            biased;
            _ = &mut cancelled => break,
            job = rx.recv() => {
                let Some(job) = job else { break };
                handler.job(job, ops).await;
                in_a_row += 1;
                if in_a_row >= FAIR_SHARE {
                    // A queue that never empties (a flood) must not starve
                    // the acks: finish what has ended before more jobs.
                    in_a_row = 0;
                    while let Some(Some(ended)) = ops.next().now_or_never() {
                        handler.ended(ended, ops).await;
                    }
                }
            }
            Some(ended) = ops.next(), if !ops.is_empty() => {
                in_a_row = 0;
                handler.ended(ended, ops).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use futures::stream::FuturesUnordered;
    use tokio::sync::{mpsc, oneshot};
    use tokio_util::sync::CancellationToken;

    use crate::dhcp::schedule::{serve, Handler, FAIR_SHARE};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        /// Job `n` taken from the queue (it started its operation).
        Job(u32),
        /// The operation of job `n` ended and was handed to the worker.
        End(u32),
    }

    /// A job's number and its operation, which ends when its sender sends
    /// that number.
    type TestJob = (u32, oneshot::Receiver<u32>);
    type TestOps = FuturesUnordered<oneshot::Receiver<u32>>;

    /// Starts each job's operation and records what [`serve`] hands it;
    /// cancels once `stop` holds for the trace.
    struct Tracer {
        trace: Vec<Event>,
        stop: fn(&[Event]) -> bool,
        cancel: CancellationToken,
    }

    impl Tracer {
        fn note(&mut self, event: Event) {
            self.trace.push(event);
            if (self.stop)(&self.trace) {
                self.cancel.cancel();
            }
        }
    }

    impl Handler for Tracer {
        type Job = TestJob;
        type Op = oneshot::Receiver<u32>;

        async fn job(&mut self, (n, op): TestJob, ops: &mut TestOps) {
            self.note(Event::Job(n));
            ops.push(op);
        }

        async fn ended(&mut self, ended: Result<u32, oneshot::error::RecvError>, _: &mut TestOps) {
            self.note(Event::End(
                ended.expect("every operation is ended by a send"),
            ));
        }
    }

    /// Serves `rx` until `stop` holds for the trace; a worker that stalls
    /// instead fails the test after 5 s.
    async fn serve_until(
        rx: &mut mpsc::Receiver<TestJob>,
        ops: &mut TestOps,
        stop: fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let cancel = CancellationToken::new();
        let mut tracer = Tracer {
            trace: Vec::new(),
            stop,
            cancel: cancel.clone(),
        };
        let served = serve(rx, ops, &cancel, &mut tracer);
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the worker stalled");
        tracer.trace
    }

    /// Job `n`, whose operation ends as soon as it starts.
    fn ended(n: u32) -> TestJob {
        let (end, op) = oneshot::channel();
        end.send(n).expect("the receiver is alive");
        (n, op)
    }

    fn ends(trace: &[Event]) -> usize {
        trace.iter().filter(|e| matches!(e, Event::End(_))).count()
    }

    /// A flood: the queue holds 200 jobs from the start and each job's
    /// operation ends at once. The queue goes first, yet no ended operation
    /// waits while FAIR_SHARE more jobs are taken (the job that started it
    /// counts toward the share).
    #[tokio::test]
    async fn a_full_queue_does_not_starve_ended_operations() {
        const JOBS: usize = 200;
        // `tx` stays open to the end: a closed queue would stop the worker.
        let (tx, mut rx) = mpsc::channel(JOBS);
        for n in 0..JOBS as u32 {
            tx.try_send(ended(n)).expect("room for every job");
        }
        let mut ops = TestOps::new();
        let trace = serve_until(&mut rx, &mut ops, |t| ends(t) == JOBS).await;

        // Jobs taken so far; the count when each job was taken.
        let mut taken = 0;
        let mut started = HashMap::new();
        for &event in &trace {
            match event {
                Event::Job(n) => {
                    taken += 1;
                    started.insert(n, taken);
                }
                Event::End(n) => {
                    let waited = taken - started[&n];
                    assert!(
                        waited < FAIR_SHARE,
                        "operation {n} ended, then waited while {waited} jobs were taken"
                    );
                }
            }
        }
        assert_eq!(taken, JOBS);
        // Whatever FAIR_SHARE is: operations were finished during the
        // flood, not only once the queue had emptied.
        let first_end = trace.iter().position(|e| matches!(e, Event::End(_)));
        let last_job = trace.iter().rposition(|e| matches!(e, Event::Job(_)));
        assert!(
            first_end < last_job,
            "no operation finished during the flood"
        );
    }

    /// An operation that ends while the queue is empty is finished then,
    /// without waiting for another job.
    #[tokio::test]
    async fn an_operation_that_ends_on_an_empty_queue_is_finished_at_once() {
        let (tx, mut rx) = mpsc::channel(1);
        let (end, op) = oneshot::channel();
        tx.try_send((0, op)).expect("room for the job");
        let mut ops = TestOps::new();
        let worker = serve_until(&mut rx, &mut ops, |t| t.len() == 2);
        let ender = async {
            // Lets the worker take the job (and empty the queue) first.
            tokio::task::yield_now().await;
            end.send(0).expect("the operation is in flight");
        };
        let (trace, ()) = tokio::join!(worker, ender);
        assert_eq!(trace, [Event::Job(0), Event::End(0)]);
    }

    /// Cancel goes before queued jobs and ended operations alike: both are
    /// left to the caller.
    #[tokio::test]
    async fn cancel_leaves_queued_jobs_and_ended_operations() {
        let (tx, mut rx) = mpsc::channel(10);
        for n in 0..10 {
            tx.try_send(ended(n)).expect("room for every job");
        }
        let mut ops = TestOps::new();
        // Cancelled while job 3 is handled.
        let trace = serve_until(&mut rx, &mut ops, |t| t.len() == 4).await;
        assert_eq!(trace, (0..4).map(Event::Job).collect::<Vec<_>>());
        assert_eq!(rx.len(), 6);
        assert_eq!(ops.len(), 4);
    }
}
