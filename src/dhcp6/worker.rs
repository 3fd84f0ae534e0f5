//! The worker: deadline, the pure plan, the IPAM for every IA, the reply.
//! Messages are handled concurrently (each IPAM operation waits for its
//! group commit), at most `limit` at a time; a Reply that commits, extends,
//! releases or declines goes out only once the IPAM said Ok.

use std::future::Future;
use std::net::SocketAddrV6;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;

use dhcproto::v6::MessageType;
use futures::stream::{FuturesUnordered, StreamExt};
use ipnet::Ipv6Net;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::admission::{self, refuse, Refused};
use super::handler::{answer, plan, Answer, IaAnswer, Op6, Plan6};
use super::relay;
use super::reply::{Lease6, Reply6};
use super::state::{Job6, State6, DRAIN};
use crate::client::ClientKey;
use crate::config::Subnet6Config;
use crate::dhcp::mmsg::To6;
use crate::dhcp::outbox::Outgoing;
use crate::ipam::{Ia6Key, Ia6Kind, Ia6Result, IaAsk, IpamError};
use crate::stats::{DhcpOutcome, DropReason};

/// Takes jobs from `rx` and handles up to `limit` at once, until `cancel`
/// fires (jobs still queued then are discarded: no new IPAM operation
/// starts) or the sender is gone; then waits up to [`DRAIN`] for the ones
/// in flight, which reply once their writes are durable.
pub(super) async fn run(
    state: Arc<State6>,
    mut rx: mpsc::Receiver<Job6>,
    limit: usize,
    cancel: CancellationToken,
) {
    let mut ops = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(()) = ops.next(), if !ops.is_empty() => {}
            job = rx.recv(), if ops.len() < limit => match job {
                Some(job) => {
                    state.stats.dhcp.queue_depth.fetch_sub(1, Relaxed);
                    if let Some(op) = start(&state, job) {
                        ops.push(op);
                    }
                }
                None => break,
            },
        }
    }
    rx.close();
    let left = rx.len();
    state.stats.dhcp.queue_depth.fetch_sub(left as i64, Relaxed);
    let in_flight = ops.len();
    let all = async { while ops.next().await.is_some() {} };
    if tokio::time::timeout(DRAIN, all).await.is_err() {
        tracing::warn!(
            "dhcp6: in-flight IPAM operations did not finish; their clients get no reply"
        );
    }
    tracing::info!(
        drained = in_flight,
        discarded = left,
        "dhcp6 worker stopped"
    );
}

/// Handles `job` unless the same message of the same client is being
/// handled (a retransmission: dropped as a duplicate).
fn start(state: &Arc<State6>, job: Job6) -> Option<impl Future<Output = ()> + Send + 'static> {
    let id = (job.key.clone(), job.req.xid);
    let fresh = lock(&state.inflight).insert(id.clone());
    if !fresh {
        refuse(state, &job, Refused::Drop(DropReason::Duplicate));
        return None;
    }
    let state = state.clone();
    Some(async move {
        process(state.clone(), job).await;
        lock(&state.inflight).remove(&id);
    })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Handles one admitted message. Cancel-safety: the IPAM's operations are
/// (a write made is flushed anyway); this future is only ever run to its end.
async fn process(state: Arc<State6>, job: Job6) {
    let s = &*state;
    if let Err(r) = admission::in_time(s, &job) {
        return refuse(s, &job, r);
    }
    let subnet = job.subnet();
    let op = match plan(&job.req, job.via, subnet, &s.ctx) {
        Plan6::Reply(r) => return send(s, &job, r).await,
        Plan6::Silent => {
            let relayed = job.chain.is_relayed();
            return s
                .stats
                .dhcp
                .packet_via(job.kind, DhcpOutcome::Silent, relayed);
        }
        Plan6::Drop(reason) => return refuse(s, &job, Refused::Drop(reason)),
        Plan6::Ipam(op) => op,
    };
    // plan() names an IPAM operation only for a client with a DUID on a subnet.
    let (Some(subnet), Some(client)) = (subnet, job.req.client.as_ref()) else {
        return refuse(s, &job, Refused::Drop(DropReason::NoSubnet));
    };
    if matches!(op, Op6::Advertise | Op6::Commit) {
        if let Err(r) = admission::new_lease(s) {
            return refuse(s, &job, r);
        }
    }
    let now = SystemTime::now();
    match ias(s, &job, subnet, client, op, now).await {
        Ok(ans) => {
            let reply = answer(&job.req, Some(subnet), &s.ctx, op, &ans);
            send(s, &job, reply).await
        }
        Err(e) => {
            tracing::debug!(client = %job.key, error = %e, "dhcp6: IPAM operation failed; no reply");
            let reason = match e {
                IpamError::PortFull { .. } => DropReason::PortCap,
                _ => DropReason::Storage,
            };
            refuse(s, &job, Refused::Drop(reason))
        }
    }
}

/// Runs `op` for every IA of the request, in order, in one IPAM call (one
/// lock, one group commit); an IPAM error ends it (no reply is built from
/// a partial answer).
async fn ias(
    s: &State6,
    job: &Job6,
    subnet: &Subnet6Config,
    client: &ClientKey,
    op: Op6,
    now: SystemTime,
) -> Result<Answer, IpamError> {
    let req = &job.req;
    let key = |kind, iaid| Ia6Key {
        client: client.clone(),
        kind,
        iaid,
    };
    let na = req.ia_na.iter().map(|ia| {
        let hints = ia.hints.iter().map(|&a| Ipv6Net::from(a)).collect();
        (key(Ia6Kind::Na, ia.iaid), hints)
    });
    let pd = req
        .ia_pd
        .iter()
        .map(|ia| (key(Ia6Kind::Pd, ia.iaid), ia.hints.clone()));
    let keyed: Vec<(Ia6Key, Vec<Ipv6Net>)> = na.chain(pd).collect();
    let asks: Vec<IaAsk<'_>> = keyed
        .iter()
        .map(|(ia, hints)| IaAsk { ia, hints })
        .collect();
    let port = job.chain.port();
    let results = s
        .ipam
        .ias6(&subnet.id, &asks, op, port.as_deref(), now)
        .await?;
    let mut ans = Answer::default();
    for ((ia, _), r) in keyed.iter().zip(results) {
        let one = (ia.iaid, ia_answer(r, subnet, now));
        match ia.kind {
            Ia6Kind::Na => ans.na.push(one),
            Ia6Kind::Pd => ans.pd.push(one),
        }
    }
    Ok(ans)
}

/// The IPAM's answer for one IA, its lifetimes as seen at `now`.
fn ia_answer(r: Ia6Result, subnet: &Subnet6Config, now: SystemTime) -> IaAnswer {
    match r {
        Ia6Result::Held(held) => IaAnswer::Leases(
            held.into_iter()
                .map(|h| Lease6::remaining(h.prefix, subnet, h.expires_at, now))
                .collect(),
        ),
        Ia6Result::Exhausted => IaAnswer::Exhausted,
        Ia6Result::NoBinding => IaAnswer::NoBinding,
        Ia6Result::NotOnLink => IaAnswer::NotOnLink,
    }
}

/// Sends `reply` (queued for the receive loop's flush while it is busy, at
/// once otherwise): in Relay-Repl envelopes to the relay that sent the
/// message (server port), or to a direct client's address (client port,
/// on the interface it came in on).
async fn send(s: &State6, job: &Job6, reply: Reply6) {
    let outcome = match reply.kind {
        MessageType::Advertise => DhcpOutcome::Advertise,
        _ => DhcpOutcome::Reply,
    };
    let (bytes, to) = match job.chain.is_relayed() {
        true => {
            let to = SocketAddrV6::new(*job.from.ip(), s.server_port, 0, job.from.scope_id());
            (relay::wrap(&job.chain, &reply.bytes), to)
        }
        false => {
            let to = SocketAddrV6::new(*job.from.ip(), s.client_port, 0, job.from.scope_id());
            (reply.bytes, to)
        }
    };
    let out = Outgoing {
        bytes,
        to: To6 { to, from: job.src },
        kind: job.kind,
        outcome,
        relayed: job.chain.is_relayed(),
        key: job.key.clone(),
    };
    s.outbox.send(0, &s.socket, &s.stats, out).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pool6;
    use crate::dhcp6::handler::Via;
    use crate::dhcp6::relay::RelayChain;
    use crate::dhcp6::request::{Ia, Request6};
    use crate::dhcp6::state::for_tests;
    use crate::ipam::Ipam;
    use crate::stats::DhcpKind;
    use std::time::{Duration, Instant};

    /// The Reply to a Request goes out only once the IPAM said Ok: under a
    /// storage error the client gets nothing and the drop is counted.
    #[tokio::test]
    async fn a_storage_error_gets_no_reply_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::ipam::tests::Faulty::open(dir.path());
        let ipam = Ipam::with_store(
            dir.path().into(),
            store.clone(),
            Default::default(),
            crate::stats::Stats::new(16),
        )
        .unwrap();
        let subnet = Subnet6Config {
            pools: vec![Pool6 {
                start: "fd00:76::100".parse().unwrap(),
                end: "fd00:76::1ff".parse().unwrap(),
            }],
            ..Subnet6Config::new("w6", "fd00:76::/64".parse().unwrap())
        };
        ipam.apply_config6(std::slice::from_ref(&subnet)).unwrap();
        let client = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
        let client_port = client.local_addr().unwrap().port();
        let duid = ipam.server_duid().unwrap();
        let state = Arc::new(for_tests(ipam, vec![subnet.clone()], vec![], client_port).await);
        let stats = state.stats.clone();
        let key = ClientKey::duid(&[0, 3, 0, 1, 2, 0, 0, 0, 7, 6]).unwrap();
        let job = || Job6 {
            chain: RelayChain::default(),
            req: Request6 {
                kind: MessageType::Request,
                xid: [1, 2, 3],
                client: Some(key.clone()),
                server_id: Some(duid.clone().into()),
                ia_na: vec![Ia {
                    iaid: 1,
                    t1: 0,
                    t2: 0,
                    hints: vec![],
                }],
                ia_pd: vec![],
                oro: vec![],
                rapid_commit: false,
                elapsed: None,
                lladdr: None,
            },
            key: key.clone(),
            kind: DhcpKind::Request,
            via: Via::Multicast,
            subnets: Arc::new(vec![subnet.clone()]),
            subnet: Some(0),
            from: SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, 9, 0, 0),
            src: None,
            at: Instant::now(),
        };
        let mut buf = [0u8; 1500];
        store
            .fail_apply
            .store(1, std::sync::atomic::Ordering::Relaxed);
        process(state.clone(), job()).await;
        let got = tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await;
        assert!(got.is_err(), "a Reply under a storage error");
        assert_eq!(stats.drops(DropReason::Storage), 1);
        assert_eq!(
            stats.dhcp.packets(DhcpKind::Request, DhcpOutcome::Dropped),
            1
        );
        // The store takes writes again once the IPAM's probe says so.
        for _ in 0..500 {
            if state.ipam.degraded().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        process(state.clone(), job()).await;
        let n = client.recv(&mut buf).await.unwrap();
        assert_eq!(
            buf[..4],
            [7, 1, 2, 3],
            "a Reply once the store takes writes"
        );
        assert!(n > 4);
        assert_eq!(stats.dhcp.packets(DhcpKind::Request, DhcpOutcome::Reply), 1);
        // A retransmission while the first is handled is a duplicate; once
        // it is done, the same message is handled again.
        let first = start(&state, job()).expect("first");
        assert!(start(&state, job()).is_none());
        assert_eq!(stats.drops(DropReason::Duplicate), 1);
        first.await;
        assert!(start(&state, job()).is_some());
        // While the receive loop is busy, the Reply waits for its flush,
        // counted only once the kernel took it.
        client.recv(&mut buf).await.unwrap(); // the Reply to `first`
        let replies = stats.dhcp.packets(DhcpKind::Request, DhcpOutcome::Reply);
        state.outbox.set_batching(true);
        process(state.clone(), job()).await;
        let got = tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf)).await;
        assert!(got.is_err(), "a Reply before the flush");
        assert_eq!(
            stats.dhcp.packets(DhcpKind::Request, DhcpOutcome::Reply),
            replies
        );
        let mut spare = Vec::new();
        let socket = std::slice::from_ref(&state.socket);
        crate::dhcp::outbox::flush(&state.outbox, socket, |s| s, &stats, &mut spare).await;
        client.recv(&mut buf).await.unwrap();
        assert_eq!(buf[..4], [7, 1, 2, 3], "the Reply, at the flush");
        assert_eq!(
            stats.dhcp.packets(DhcpKind::Request, DhcpOutcome::Reply),
            replies + 1
        );
    }
}
