//! The receive loop: takes what every socket holds, admits it, lets the
//! workers answer, flushes the replies they queued, then waits for the next
//! datagram or, under load, sleeps [`COALESCE`] first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::admission::{admit, Arrival};
use super::mmsg::{RecvBatch, BATCH};
use super::outbox;
use super::state::{Job, State};
use super::wire::MAX_DATAGRAM;

/// Under load the loop sleeps this long between looks and takes what
/// gathered meanwhile in one go: waking for every datagram (and waking the
/// peer for every reply) costs more CPU than answering it. Bounds the extra
/// wait of a packet under load; see `bench/RESULTS-*.md`.
pub const COALESCE: Duration = Duration::from_micros(500);

/// Datagrams per second from which the loop sleeps [`COALESCE`] between
/// looks: enough that a look finds a few; below it, every datagram wakes
/// the loop at once.
const BUSY_RATE: u32 = 5_000;

/// Datagrams taken from one socket per look, so the others get their turn.
const BUDGET: usize = 256;

/// Counts arrivals per 10 ms window: is the loop busy enough to coalesce?
#[derive(Debug)]
struct Pace {
    since: Instant,
    count: u32,
    previous: u32,
}

impl Pace {
    const WINDOW: Duration = Duration::from_millis(10);
    const BUSY: u32 = BUSY_RATE / 100;

    fn new(now: Instant) -> Self {
        Self {
            since: now,
            count: 0,
            previous: 0,
        }
    }

    fn busy(&mut self, got: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= Self::WINDOW {
            // A quiet window after a busy one counts as quiet.
            self.previous = if elapsed >= 2 * Self::WINDOW {
                0
            } else {
                self.count
            };
            self.count = 0;
            self.since = now;
        }
        self.count = self.count.saturating_add(got as u32);
        self.count.max(self.previous) >= Self::BUSY
    }
}

/// Runs until `cancel` fires. The thread is the DHCP server's own, so the
/// sleep blocks nothing else. Stopping loses no datagram already taken from
/// a socket, and sends the replies still queued.
pub(super) async fn receive(
    state: Arc<State>,
    queues: Arc<[mpsc::Sender<Job>]>,
    cancel: CancellationToken,
) {
    // One byte over the limit, so oversize datagrams are seen as such.
    let mut batch = RecvBatch::new(MAX_DATAGRAM + 1);
    let mut spare = Vec::new();
    let mut pace = Pace::new(Instant::now());
    let mut busy = false;
    loop {
        if !busy {
            let ready = futures::future::select_all(
                state
                    .listeners
                    .iter()
                    .map(|l| Box::pin(l.socket.readable())),
            );
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = ready => {}
            }
        } else if cancel.is_cancelled() {
            break;
        }
        let mut got = 0;
        let mut full = false;
        for (idx, l) in state.listeners.iter().enumerate() {
            let n = take(&state, idx, &l.socket, &mut batch, &queues);
            full |= n == BUDGET;
            got += n;
        }
        busy = pace.busy(got, Instant::now());
        state.outbox.set_batching(busy);
        // The workers answer what was admitted before the loop sleeps.
        tokio::task::yield_now().await;
        flush(&state, &mut spare).await;
        if busy && !full {
            std::thread::sleep(COALESCE);
        }
    }
    state.outbox.set_batching(false);
    flush(&state, &mut spare).await;
}

async fn flush(state: &State, spare: &mut Vec<outbox::Outgoing>) {
    outbox::flush(&state.outbox, &state.listeners, &state.stats, spare).await;
}

/// Takes up to [`BUDGET`] datagrams from listener `idx`'s socket, [`BATCH`]
/// per system call, and admits them; returns how many it took.
fn take(
    state: &State,
    idx: usize,
    socket: &tokio::net::UdpSocket,
    batch: &mut RecvBatch,
    queues: &[mpsc::Sender<Job>],
) -> usize {
    let mut n = 0;
    while n < BUDGET {
        let want = (BUDGET - n).min(BATCH);
        match batch.recv(socket, want) {
            Ok(k) => {
                n += k;
                let now = Instant::now();
                for i in 0..k {
                    let arrival = Arrival {
                        buf: batch.get(i),
                        from: batch.from(i),
                        listener: idx,
                        now,
                    };
                    admit(state, arrival, queues);
                }
                if k < want {
                    break; // the socket had no more
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                // ICMP errors of earlier sends surface here; the socket is
                // fine. Counted against the budget, so no error can keep
                // the loop here.
                n += 1;
                tracing::debug!(error = %e, "dhcp recv");
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop coalesces from BUSY_RATE datagrams a second on, and stops
    /// once a whole window passes below it.
    #[test]
    fn pace_turns_busy_at_the_busy_rate_and_quiet_after_a_quiet_window() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut pace = Pace::new(t0);
        // 1,000 a second: one every millisecond.
        assert!((0..30).all(|i| !pace.busy(1, ms(i))));
        // 10,000 a second: ten every millisecond.
        assert!(!pace.busy(10, ms(30)));
        assert!(pace.busy(Pace::BUSY as usize, ms(31)));
        assert!(pace.busy(1, ms(41)), "the busy window still counts");
        // Silence for two windows: quiet at once.
        assert!(!pace.busy(1, ms(70)));
    }
}
