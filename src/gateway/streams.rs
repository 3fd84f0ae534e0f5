//! The h2 streams of one connection, run by that connection's task: hyper
//! hands each stream to its executor, and here that executor is a
//! `FuturesUnordered` the connection's own task polls right after the
//! connection ([`Streams::serve`]), so the streams a read accepted, and the
//! writes of the responses finished meanwhile, run in the same task turn
//! rather than as tasks of their own. A stream lives exactly as long as its
//! connection; a panic in one ends its connection.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};

use futures::stream::{FuturesUnordered, StreamExt};

use super::respbudget::{within, Ctl, ResponseBudget};

/// A stream's future, boxed: hyper's stream type names its executor, so
/// the set cannot name the stream type.
type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One connection's streams, owned by its task; dropping it drops them.
pub(crate) struct Streams {
    /// std `Mutex`: only the connection's task takes it, never across an
    /// await, and never nested (hyper calls `execute` while polling the
    /// connection; the set is polled after that poll returns). It is never
    /// contended; it is there because hyper's executor takes `&self` and
    /// the connection future must be `Send`.
    set: Arc<Mutex<FuturesUnordered<StreamFuture>>>,
    budget: Arc<ResponseBudget>,
    /// The share of what the connection's own poll buffers (HTTP/1.1
    /// bodies are polled there); resetting it closes the connection.
    conn_ctl: Arc<Ctl>,
    /// `conn_ctl` while the connection is polled (see [`within`]).
    conn_slot: Mutex<Option<Arc<Ctl>>>,
}

impl Streams {
    pub(crate) fn new(budget: Arc<ResponseBudget>) -> Self {
        let conn_ctl = Arc::new(Ctl::new(None));
        Self {
            set: Arc::new(Mutex::new(FuturesUnordered::new())),
            budget,
            conn_ctl: conn_ctl.clone(),
            conn_slot: Mutex::new(Some(conn_ctl)),
        }
    }

    pub(crate) fn spawner(&self) -> Spawner {
        Spawner {
            set: Arc::downgrade(&self.set),
            budget: self.budget.clone(),
            conn: self.conn_ctl.clone(),
        }
    }

    /// Streams not yet finished.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Drives `conn` with its streams: polls the connection (whose read
    /// accepts streams), then the streams that are ready, and the
    /// connection again while streams finished, so that the responses they
    /// queued are written in the same task turn. Waiting for the wake the
    /// responses cause put every connection's writes behind every other
    /// ready connection's read: in a burst of new connections, each
    /// connection's 503s waited for all the others to be read (and for the
    /// upstream connects of the admitted streams among them).
    /// `None`: the response budget's sweeper reset the connection.
    /// Cancel-safe: the connection and the streams stay where they are.
    pub(crate) fn serve<'a, C: Future>(
        &'a self,
        mut conn: Pin<&'a mut C>,
    ) -> impl Future<Output = Option<C::Output>> + 'a {
        poll_fn(move |cx| {
            for _ in 0..ROUNDS {
                if self.conn_ctl.poll_killed(cx) {
                    return Poll::Ready(None);
                }
                let mut slot = self
                    .conn_slot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let polled = within(&self.budget, &mut slot, None, || conn.as_mut().poll(cx));
                drop(slot);
                if let Poll::Ready(out) = polled {
                    return Poll::Ready(Some(out));
                }
                if self.poll_streams(cx) == 0 {
                    break;
                }
            }
            Poll::Pending
        })
    }

    /// Polls every stream that is ready until none is; returns how many
    /// finished. An empty set registers no waker: streams only arrive while
    /// the connection is polled, which [`Self::serve`] does just before.
    fn poll_streams(&self, cx: &mut Context<'_>) -> usize {
        let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        let mut finished = 0;
        while let Poll::Ready(Some(())) = set.poll_next_unpin(cx) {
            finished += 1;
        }
        finished
    }
}

/// The executor hyper's h2 server spawns a connection's streams into.
/// Weak: hyper keeps a clone in every stream it spawns, so a strong
/// reference would make the set own itself and outlive its connection.
#[derive(Clone)]
pub(crate) struct Spawner {
    set: Weak<Mutex<FuturesUnordered<StreamFuture>>>,
    budget: Arc<ResponseBudget>,
    conn: Arc<Ctl>,
}

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for Spawner {
    /// After the connection's task has ended, `fut` is dropped unpolled.
    fn execute(&self, fut: F) {
        if let Some(set) = self.set.upgrade() {
            let tracked = Tracked {
                fut,
                budget: self.budget.clone(),
                conn: self.conn.clone(),
                ctl: None,
            };
            set.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Box::pin(tracked));
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream with its share of the response budget: polled with its
    /// [`Ctl`] current, and ended (dropped: h2 resets it and drops its
    /// queued chunks) when the budget's sweeper resets it.
    struct Tracked<F> {
        #[pin]
        fut: F,
        budget: Arc<ResponseBudget>,
        conn: Arc<Ctl>,
        ctl: Option<Arc<Ctl>>,
    }
}

impl<F: Future<Output = ()>> Future for Tracked<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.ctl.as_ref().is_some_and(|c| c.poll_killed(cx)) {
            return Poll::Ready(());
        }
        let had = this.ctl.is_some();
        let fut = this.fut;
        let out = within(this.budget, this.ctl, Some(this.conn), || fut.poll(cx));
        // Charged for the first time in this poll: watch for a reset.
        if !had && this.ctl.as_ref().is_some_and(|c| c.poll_killed(cx)) {
            return Poll::Ready(());
        }
        out
    }
}

/// Connection polls per task turn at most: read and write, and one more
/// write for streams that finished after a first one woke them.
const ROUNDS: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// A connection that never ends and counts its polls; what a stream
    /// spawns while it is polled (as hyper's read does) goes in on the
    /// first poll.
    struct Conn {
        polls: Arc<AtomicUsize>,
        accept: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
        spawner: Spawner,
    }

    impl Future for Conn {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, SeqCst);
            if let Some(stream) = self.accept.take() {
                self.spawner.execute(stream);
            }
            Poll::Pending
        }
    }

    fn conn(
        streams: &Streams,
        accept: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    ) -> (Conn, Arc<AtomicUsize>) {
        let polls = Arc::new(AtomicUsize::new(0));
        let conn = Conn {
            polls: polls.clone(),
            accept,
            spawner: streams.spawner(),
        };
        (conn, polls)
    }

    fn budget() -> Arc<ResponseBudget> {
        let cfg = crate::config::Config::embedded().unwrap().gateway;
        Arc::new(ResponseBudget::new(&cfg, crate::stats::Stats::new(16)))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_finished_stream_gets_its_connection_polled_again_in_the_same_turn() {
        let streams = Streams::new(budget());
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let (mut c, polls) = conn(
            &streams,
            Some(Box::pin(async move {
                d.fetch_add(1, SeqCst);
            })),
        );
        assert!(futures::poll!(streams.serve(Pin::new(&mut c))).is_pending());
        // Read (accepts the stream), the stream answers, write.
        assert_eq!((done.load(SeqCst), polls.load(SeqCst)), (1, 2));
        // Nothing finished: one poll.
        assert!(futures::poll!(streams.serve(Pin::new(&mut c))).is_pending());
        assert_eq!(polls.load(SeqCst), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_stream_is_polled_again_when_woken_from_elsewhere() {
        let streams = Streams::new(budget());
        let done = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let d = done.clone();
        let (mut c, polls) = conn(
            &streams,
            Some(Box::pin(async move {
                let _ = rx.await;
                d.fetch_add(1, SeqCst);
            })),
        );
        assert!(futures::poll!(streams.serve(Pin::new(&mut c))).is_pending());
        assert_eq!(
            (done.load(SeqCst), streams.len(), polls.load(SeqCst)),
            (0, 1, 1)
        );
        tx.send(()).unwrap();
        assert!(futures::poll!(streams.serve(Pin::new(&mut c))).is_pending());
        assert_eq!(
            (done.load(SeqCst), streams.len(), polls.load(SeqCst)),
            (1, 0, 3)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn streams_holding_the_spawner_die_with_the_connection() {
        let streams = Streams::new(budget());
        let spawner = streams.spawner();
        let alive = Arc::new(());
        let (held, s) = (alive.clone(), spawner.clone());
        // Like hyper's stream futures, this one keeps a spawner clone.
        spawner.execute(async move {
            let _keep = (held, s);
            std::future::pending::<()>().await
        });
        let mut idle = std::future::pending::<()>();
        assert!(futures::poll!(streams.serve(Pin::new(&mut idle))).is_pending());
        assert_eq!(Arc::strong_count(&alive), 2);
        drop(streams);
        assert_eq!(Arc::strong_count(&alive), 1, "the stream was not dropped");
        // Spawning after the end drops the future.
        let held = alive.clone();
        spawner.execute(async move { drop(held) });
        assert_eq!(Arc::strong_count(&alive), 1);
    }
}
