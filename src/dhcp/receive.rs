//! The receive loop: takes what every socket holds, admits it, lets the
//! workers answer, flushes the replies they queued, then waits for the next
//! datagram or, under load, sleeps [`COALESCE`] first ([`Pace`]).

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::admission::{admit, Arrival};
use super::mmsg::{RecvBatch, BATCH};
use super::outbox;
use super::pace::{Pace, COALESCE};
use super::state::{Job, State};
use super::wire::MAX_DATAGRAM;

/// Datagrams taken from one socket per look, so the others get their turn.
const BUDGET: usize = 256;

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

async fn flush(state: &State, spare: &mut Vec<outbox::Outgoing<SocketAddrV4>>) {
    let (outbox, listeners) = (&state.outbox, &state.listeners);
    outbox::flush(outbox, listeners, |l| &l.socket, &state.stats, spare).await;
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
