//! The nemesis of the cluster workload (cluster_workload.rs): faults on a
//! schedule, each undone after the downtime, and how long the clients of a
//! faulted node went without an answer.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::cluster_lab::Lab;
use crate::history::{now, Event, Kind};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// `kill -9` a node, restart it after the downtime.
    KillNode,
    /// `kill -9` a random etcd member, restart it after the downtime.
    KillEtcdMember,
    KillEtcdLeader,
    /// Cut a node off etcd (nftables), heal after the downtime.
    Partition,
}

/// Which faults, how often, for how long.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub faults: Vec<Fault>,
    /// Time between two faults, and how long each lasts.
    pub every: Duration,
    pub downtime: Duration,
    pub seed: u64,
}

/// One fault as it happened.
#[derive(Clone, Debug)]
pub struct Act {
    pub fault: Fault,
    /// The node (node faults) or the etcd member (etcd faults).
    pub target: usize,
    /// The node's server id, which its DHCP answers carry (node faults).
    pub node_ip: Option<Ipv4Addr>,
    /// When the fault was in place (the process reaped, the rule added).
    pub start: f64,
    pub undone: f64,
}

impl Act {
    /// Seconds from the fault to the first DHCP ACK after it to a client
    /// the faulted node answered last (any ACK, for etcd faults).
    pub fn recovery(&self, events: &[Event]) -> Option<f64> {
        self.first_ack(events, |_| true)
    }

    /// The same, counting only ACKs from another node: a takeover.
    pub fn takeover(&self, events: &[Event]) -> Option<f64> {
        let me = self.node_ip;
        self.first_ack(events, |by| Some(by) != me)
    }

    fn first_ack(&self, events: &[Event], by: impl Fn(Ipv4Addr) -> bool) -> Option<f64> {
        // DHCP answers only: their node is a server id.
        let dhcp_ack =
            |e: &&Event| matches!(e.kind, Kind::Ack { .. }) && e.node.parse::<Ipv4Addr>().is_ok();
        let mut last = std::collections::BTreeMap::new();
        for e in events.iter().filter(dhcp_ack).filter(|e| e.t < self.start) {
            last.insert(e.client.as_str(), e.node.as_str());
        }
        let mine = self.node_ip.map(|ip| ip.to_string());
        let clients: BTreeSet<&str> = last
            .into_iter()
            .filter(|(_, n)| mine.as_deref().is_none_or(|m| m == *n))
            .map(|(c, _)| c)
            .collect();
        events
            .iter()
            .filter(dhcp_ack)
            .filter(|e| e.t > self.start + IN_FLIGHT && clients.contains(e.client.as_str()))
            .find(|e| e.node.parse().is_ok_and(&by))
            .map(|e| e.t - self.start)
    }
}

/// An answer read this soon after a fault was on its way before it.
const IN_FLIGHT: f64 = 0.05;

/// Every `every`, the next fault (in an order shuffled by the seed, round
/// robin), undone after `downtime`, then handed to `record`; none that
/// could not be undone before the deadline.
pub fn nemesis(
    lab: &Lab,
    w: &Schedule,
    record: impl Fn(Act),
    stop: &AtomicBool,
    deadline: Instant,
) {
    let mut rng = fastrand::Rng::with_seed(w.seed ^ 0xdead);
    let mut order = w.faults.clone();
    rng.shuffle(&mut order);
    let pause = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until && !stop.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for k in 0.. {
        pause(w.every);
        if stop.load(Relaxed) || order.is_empty() || Instant::now() + w.downtime >= deadline {
            return;
        }
        let fault = order[k % order.len()];
        let node = rng.usize(..lab.nodes.len());
        let (target, node_ip, start) = match fault {
            Fault::KillNode => {
                lab.kill_node(node);
                let start = now();
                std::thread::sleep(w.downtime);
                lab.start_node(node);
                (node, Some(lab.nodes[node].ip), start)
            }
            Fault::KillEtcdMember | Fault::KillEtcdLeader => {
                let m = match fault {
                    Fault::KillEtcdLeader => lab.etcd().wait_leader(Duration::from_secs(10)),
                    _ => rng.usize(..lab.etcd().len()),
                };
                lab.etcd().kill(m);
                let start = now();
                std::thread::sleep(w.downtime);
                lab.etcd().restart(m);
                (m, None, start)
            }
            Fault::Partition => {
                lab.partition(node);
                let start = now();
                std::thread::sleep(w.downtime);
                lab.heal(node);
                (node, Some(lab.nodes[node].ip), start)
            }
        };
        record(Act {
            fault,
            target,
            node_ip,
            start,
            undone: now(),
        });
    }
}
