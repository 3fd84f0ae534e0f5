//! The receive loop, on the DHCPv6 server's own thread: takes what the
//! socket holds, [`BATCH`] datagrams per system call with their
//! IPV6_PKTINFO, and admits each ([`super::admission`]) before the worker
//! gets its turn; then sends the replies the worker queued meanwhile in
//! sendmmsg batches ([`outbox`]) and waits for the next datagram or, under
//! load, sleeps [`COALESCE6`] first (as v4: [`Pace`]). A flooding client costs a share of
//! one system call and one wake-up, the peek and its counters.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::admission::{admit, Arrival};
use super::state::{Job6, State6};
use super::wire::MAX_DATAGRAM;
use crate::dhcp::mmsg::{RecvBatch, To6, BATCH};
use crate::dhcp::outbox::{self, Outgoing};
use crate::dhcp::pace::Pace;

/// Datagrams taken per wake-up before the loop yields to the worker.
pub(super) const BUDGET: usize = 256;

/// Under load the loop sleeps this long between looks (v4's is
/// [`crate::dhcp::pace::COALESCE`]): each look costs its own system calls,
/// sleep and wake-ups of the peers its flush answers, so fewer, fuller
/// looks cost less per exchange. Bounds a packet's extra wait under load
/// (see `bench/RESULTS-dhcp6.md`).
pub(super) const COALESCE6: Duration = Duration::from_millis(1);

/// Runs until `cancel` fires, or an error the socket cannot recover from;
/// either way sends the replies still queued before it returns.
pub(super) async fn receive(
    state: &State6,
    queue: mpsc::Sender<Job6>,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    let mut spare = Vec::new();
    let looked = look(state, &queue, cancel, &mut spare).await;
    state.outbox.set_batching(false);
    flush(state, &mut spare).await;
    looked
}

/// Takes, admits, lets the worker answer and flushes what it queued, look
/// after look: replies go out in batches while the loop is busy.
async fn look(
    state: &State6,
    queue: &mpsc::Sender<Job6>,
    cancel: &CancellationToken,
    spare: &mut Vec<Outgoing<To6>>,
) -> std::io::Result<()> {
    // One byte over the limit, so oversize datagrams are seen as such.
    let mut batch = RecvBatch::with_pktinfo6(MAX_DATAGRAM + 1);
    let mut pace = Pace::new(Instant::now());
    let mut busy = false;
    loop {
        if !busy {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                ready = state.socket.readable() => ready?,
            }
        } else if cancel.is_cancelled() {
            return Ok(());
        }
        let n = take(state, &mut batch, queue);
        busy = pace.busy(n, Instant::now());
        state.outbox.set_batching(busy);
        // The worker answers what was admitted before the loop sleeps;
        // the thread is the server's own, so the sleep blocks nothing else.
        tokio::task::yield_now().await;
        flush(state, spare).await;
        if busy && n < BUDGET {
            std::thread::sleep(COALESCE6);
        }
    }
}

async fn flush(state: &State6, spare: &mut Vec<Outgoing<To6>>) {
    let socket = std::slice::from_ref(&state.socket);
    outbox::flush(&state.outbox, socket, |s| s, &state.stats, spare).await;
}

/// Takes up to [`BUDGET`] datagrams, [`BATCH`] per system call, and admits
/// them; returns how many it took.
pub(super) fn take(state: &State6, batch: &mut RecvBatch, queue: &mpsc::Sender<Job6>) -> usize {
    let mut n = 0;
    while n < BUDGET {
        let want = (BUDGET - n).min(BATCH);
        match batch.recv(&state.socket, want) {
            Ok(k) => {
                n += k;
                let now = Instant::now();
                for i in 0..k {
                    // An IPv6-only socket: every datagram has an IPv6 source.
                    let Some(from) = batch.from6(i) else { continue };
                    let info = batch.pktinfo6(i);
                    let a = Arrival {
                        buf: batch.get(i),
                        from,
                        ifindex: info.map_or(0, |p| p.ifindex),
                        dst: info.map_or(Ipv6Addr::UNSPECIFIED, |p| p.dst),
                        now,
                    };
                    admit(state, a, queue);
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
                tracing::debug!(error = %e, "dhcp6 recv");
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp6::socket::iface;
    use crate::dhcp6::state::for_tests;
    use crate::dhcp6::wire::put;
    use crate::ipam::Ipam;
    use crate::stats::DropReason;
    use std::time::Duration;

    fn solicit(duid: &[u8], broken: bool) -> Vec<u8> {
        let mut m = vec![1, 0, 0, 1];
        put(&mut m, 1, duid);
        put(&mut m, 8, &[0, 0]);
        if broken {
            // Framed well (peek reads it), but an IA_NA too short to decode.
            put(&mut m, 3, &[0, 0, 0, 1, 0]);
        }
        m
    }

    /// One DUID floods among legit clients, all waiting on the socket at
    /// once: batches take everything, every legit client is queued, and
    /// the flooder past its burst is refused by its quota before its
    /// datagrams are decoded (its IA is broken: only the burst is seen
    /// as malformed).
    #[tokio::test]
    async fn a_flooding_duid_is_refused_before_decoding_and_legit_ones_pass() {
        let dir = tempfile::tempdir().unwrap();
        let ipam =
            Ipam::open(dir.path(), Default::default(), crate::stats::Stats::new(16)).unwrap();
        let mut lo = iface("lo").unwrap();
        lo.addrs = vec!["fd00:77::1".parse().unwrap()];
        let subnet = crate::config::Subnet6Config::new("lab6", "fd00:77::/64".parse().unwrap());
        let s = for_tests(ipam, vec![subnet], vec![lo], 9).await;
        let to = s.socket.local_addr().unwrap();
        let c = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
        let flooder = [0, 3, 0, 1, 2, 0, 0, 0, 0, 1];
        let (flood, legit) = (300, 30u8);
        for i in 0..flood {
            c.send_to(&solicit(&flooder, true), to).await.unwrap();
            if i % 10 == 0 {
                let duid = [0, 3, 0, 1, 2, 0, 0, 0, 1, (i / 10) as u8];
                c.send_to(&solicit(&duid, false), to).await.unwrap();
            }
        }
        let (tx, mut rx) = mpsc::channel(1000);
        let mut batch = RecvBatch::with_pktinfo6(MAX_DATAGRAM + 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut took = 0;
        while took < flood + usize::from(legit) && Instant::now() < deadline {
            s.socket.readable().await.unwrap();
            let n = take(&s, &mut batch, &tx);
            assert!(n <= BUDGET, "{n}");
            took += n;
        }
        assert_eq!(took, flood + usize::from(legit));
        let mut queued = 0;
        while let Ok(job) = rx.try_recv() {
            assert_ne!(job.key, crate::client::ClientKey::duid(&flooder).unwrap());
            queued += 1;
        }
        assert_eq!(queued, legit, "every legit client is queued");
        let burst = flood - s.stats.drops(DropReason::RateLimited) as usize;
        let malformed = s.stats.dhcp.malformed6_counts();
        assert_eq!(malformed, vec![("bad_length", burst as u64)]);
        assert!((20..=25).contains(&burst), "the flooder's burst: {burst}");
    }
}
