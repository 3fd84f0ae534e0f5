//! A Jepsen-style workload against the lab's nodes (cluster_lab.rs):
//! DHCP workers (the relaying Rust client, many MACs each: DORA, renew,
//! INIT-REBOOT, release, a holder's DISCOVER) and API workers (allocate,
//! idempotent re-allocate, deallocate) on any node, while a nemesis kills
//! nodes (-9, then restarts them), kills etcd members (the leader
//! included) and partitions nodes from etcd on a schedule. Every answer
//! goes into a client-side history for the checker (tests/common/history.rs).
//!
//! Sized by the environment: `VPCBOX_HISTORY_SECONDS` (default 12),
//! `VPCBOX_HISTORY_WORKERS` (DHCP workers, default 2), `VPCBOX_HISTORY_SEED`
//! (printed, to replay a run's schedule).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cluster_lab::{http, relay_ip, Lab, LabSpec, NodeOptions, API_PORT};
use crate::cluster_nemesis::{nemesis, Act, Fault, Schedule};
use crate::dhcp_client::{key, Answer, Relay};
use crate::history::{check, now, History, Kind};
use crate::netns::require_root;

#[derive(Clone, Debug)]
pub struct Workload {
    pub duration: Duration,
    pub dhcp_workers: usize,
    pub macs_per_worker: usize,
    pub api_workers: usize,
    pub macs_per_api_worker: usize,
    pub nemesis: Schedule,
    pub seed: u64,
    /// The relayed subnet's lease time (bounds an API lease's end).
    pub lease_time: Duration,
}

impl Workload {
    /// The CI size, or what the environment asks for.
    pub fn from_env(faults: Vec<Fault>) -> Self {
        let env = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let seed = env(
            "VPCBOX_HISTORY_SEED",
            u64::from(std::process::id()) ^ now() as u64,
        );
        Self {
            duration: Duration::from_secs(env("VPCBOX_HISTORY_SECONDS", 12)),
            dhcp_workers: env("VPCBOX_HISTORY_WORKERS", 2) as usize,
            // Many MACs per worker: each stays well under its per-client quota.
            macs_per_worker: 64,
            api_workers: 1,
            macs_per_api_worker: 32,
            nemesis: Schedule {
                faults,
                every: Duration::from_secs(3),
                downtime: Duration::from_secs(1),
                seed,
            },
            seed,
            lease_time: Duration::from_secs(3600),
        }
    }
}

/// What a run produced.
#[derive(Default)]
pub struct Outcome {
    pub history: History,
    /// The nemesis's acts, in order.
    pub nemesis: Mutex<Vec<Act>>,
    pub acks: AtomicU64,
    pub naks: AtomicU64,
    pub silences: AtomicU64,
    /// API answers other than success, by status (0: no answer).
    pub api_errors: Mutex<std::collections::BTreeMap<u16, u64>>,
}

impl Outcome {
    fn api_error(&self, code: u16) {
        let mut e = self.api_errors.lock().unwrap_or_else(|e| e.into_inner());
        *e.entry(code).or_default() += 1;
    }

    pub(crate) fn act(&self, a: Act) {
        eprintln!("nemesis: {a:?}");
        self.nemesis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(a);
    }

    pub fn acts(&self) -> Vec<Act> {
        self.nemesis.lock().map(|n| n.clone()).unwrap_or_default()
    }

    pub fn summary(&self) -> String {
        format!(
            "acks {}, naks {}, silences {}, api errors {:?}, nemesis acts {}",
            self.acks.load(Relaxed),
            self.naks.load(Relaxed),
            self.silences.load(Relaxed),
            self.api_errors
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default(),
            self.nemesis.lock().map(|n| n.len()).unwrap_or(0)
        )
    }
}

/// Runs `w` against every node of `lab` (all started); every node runs
/// and no partition is left when it returns.
pub fn run(lab: &Lab, w: &Workload) -> Outcome {
    eprintln!("workload: {w:?}");
    let out = Outcome::default();
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + w.duration;
    let servers: Vec<SocketAddr> = lab.nodes.iter().map(|n| (n.ip, 67).into()).collect();
    std::thread::scope(|s| {
        for k in 0..w.dhcp_workers {
            let (out, stop, servers) = (&out, &stop, servers.clone());
            s.spawn(move || {
                lab.driver.enter();
                dhcp_worker(k, w, servers, out, stop, deadline)
            });
        }
        for k in 0..w.api_workers {
            let (out, stop) = (&out, &stop);
            s.spawn(move || {
                lab.driver.enter();
                api_worker(k, lab, w, out, stop, deadline)
            });
        }
        s.spawn(|| nemesis(lab, &w.nemesis, |a| out.act(a), &stop, deadline));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Relaxed);
    });
    for i in 0..lab.nodes.len() {
        lab.heal(i);
        if !lab.node_running(i) {
            lab.start_node(i);
        }
    }
    eprintln!("workload done: {}", out.summary());
    out
}

/// A lease a worker's client holds.
#[derive(Clone, Copy)]
struct Held {
    ip: Ipv4Addr,
    node: Ipv4Addr,
    end: f64,
}

fn dhcp_worker(
    k: usize,
    w: &Workload,
    servers: Vec<SocketAddr>,
    out: &Outcome,
    stop: &AtomicBool,
    deadline: Instant,
) {
    let mut relay = Relay::bind(relay_ip(k), servers, Duration::from_millis(500));
    let mut rng = fastrand::Rng::with_seed(w.seed ^ (k as u64 + 1));
    let macs: Vec<[u8; 6]> = (0..w.macs_per_worker)
        .map(|m| [2, 0xc3, 0, k as u8, (m >> 8) as u8, m as u8])
        .collect();
    let mut held: Vec<Option<Held>> = vec![None; macs.len()];
    while !stop.load(Relaxed) && Instant::now() < deadline {
        let m = rng.usize(..macs.len());
        dhcp_step(&mut relay, &mut rng, macs[m], &mut held[m], out);
        std::thread::sleep(Duration::from_millis(rng.u64(2..8)));
    }
}

/// One random act of one client, by its state.
fn dhcp_step(
    relay: &mut Relay,
    rng: &mut fastrand::Rng,
    mac: [u8; 6],
    held: &mut Option<Held>,
    out: &Outcome,
) {
    let (client, h) = (key(mac), &out.history);
    if let Some(l) = held.filter(|l| l.end <= now()) {
        h.event("-", &client, l.ip, Kind::Expire);
        *held = None;
    }
    let Some(l) = *held else {
        let Some(offer) = relay.discover(mac) else {
            out.silences.fetch_add(1, Relaxed);
            return;
        };
        let sent = now();
        let a = relay.select(mac, offer);
        return answered(a, sent, offer.ip, &client, held, out);
    };
    let sent = now();
    let a = match rng.u8(0..100) {
        0..50 => relay.renew(mac, l.ip),
        50..70 => relay.reboot(mac, l.ip),
        70..85 => {
            h.event("-", &client, l.ip, Kind::Release);
            relay.release(mac, l.ip, l.node);
            *held = None;
            return;
        }
        // The holder's DISCOVER: its own address again.
        _ => match relay.discover(mac) {
            Some(offer) => relay.select(mac, offer),
            None => Answer::Silence,
        },
    };
    answered(a, sent, l.ip, &client, held, out);
}

fn answered(
    a: Answer,
    sent: f64,
    asked: Ipv4Addr,
    client: &str,
    held: &mut Option<Held>,
    out: &Outcome,
) {
    match a {
        Answer::Ack { ip, lease, node } => {
            let end = sent + lease.as_secs_f64();
            out.history.ack(&node.to_string(), client, ip, end);
            out.acks.fetch_add(1, Relaxed);
            *held = Some(Held { ip, node, end });
        }
        Answer::Nak { node } => {
            out.history
                .event(&node.to_string(), client, asked, Kind::Nak);
            out.naks.fetch_add(1, Relaxed);
            *held = None;
        }
        Answer::Silence => {
            out.silences.fetch_add(1, Relaxed);
        }
    }
}

/// Allocates, re-allocates (idempotent: the same address) and deallocates
/// through the API of a random node.
fn api_worker(
    k: usize,
    lab: &Lab,
    w: &Workload,
    out: &Outcome,
    stop: &AtomicBool,
    deadline: Instant,
) {
    let mut rng = fastrand::Rng::with_seed(w.seed ^ (0xa000 + k as u64));
    let mut held: Vec<Option<(Ipv4Addr, f64)>> = vec![None; w.macs_per_api_worker];
    while !stop.load(Relaxed) && Instant::now() < deadline {
        let m = rng.usize(..held.len());
        let client = key([2, 0xc4, 0, k as u8, 0, m as u8]);
        let node = lab.nodes[rng.usize(..lab.nodes.len())].ip;
        let to = SocketAddr::from((node, API_PORT));
        let valid = held[m].filter(|(_, end)| *end > now() + 1.0);
        match valid {
            Some((ip, _)) if rng.u8(0..100) < 30 => {
                out.history.event("-", &client, ip, Kind::Release);
                held[m] = None;
                let (code, _) = http(
                    to,
                    "DELETE",
                    &format!("/v1/subnets/relayed/allocations/{ip}"),
                    "",
                );
                if code != 204 {
                    out.api_error(code);
                }
            }
            _ => {
                let body = serde_json::json!({ "client": client }).to_string();
                let sent = now();
                let (code, text) = http(to, "POST", "/v1/subnets/relayed/allocations", &body);
                let lease: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let ip = lease["ip"].as_str().and_then(|i| i.parse().ok());
                match (code, ip, lease["expires_at"].as_f64()) {
                    (200 | 201, Some(ip), Some(exp)) => {
                        let end = exp.min(sent + w.lease_time.as_secs_f64());
                        out.history.ack(&format!("api@{node}"), &client, ip, end);
                        out.acks.fetch_add(1, Relaxed);
                        held[m] = Some((ip, end));
                    }
                    _ => out.api_error(code),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.u64(5..20)));
    }
}

/// The checker's verdict over a finished run, with the final dump taken
/// from node `from`.
pub fn verdict(lab: &Lab, out: &Outcome, from: usize) -> crate::history::Report {
    let dump_t = now();
    let dump = lab.dump(from);
    let report = check(&out.history.events(), &dump, dump_t, 0.5);
    eprintln!(
        "history: {} acks, {} clients, {} leases open at the dump ({} stored)",
        report.acks,
        report.clients,
        report.open_at_dump,
        dump.len()
    );
    report
}

/// Today's target: one standalone node, node kills only. The checker holds
/// over real DHCP and API traffic with `kill -9` and restarts (sled keeps
/// every ACKed lease).
#[test]
fn history_one_node_with_node_kills() {
    if !require_root("history_one_node_with_node_kills") {
        return;
    }
    let w = Workload::from_env(vec![Fault::KillNode]);
    let lab = Lab::new(&LabSpec {
        nodes: 1,
        clients: 0,
        etcd: 0,
        relays: w.dhcp_workers,
    });
    lab.write_config(0, &NodeOptions::standalone(w.dhcp_workers));
    lab.start_node(0);
    let out = run(&lab, &w);
    let report = verdict(&lab, &out, 0);
    report.assert_ok();
    let acts = out.acts();
    assert!(acts.len() >= 2, "nemesis acts: {acts:?}");
    for a in &acts {
        let back = a.recovery(&out.history.events());
        eprintln!("{a:?}: first ACK to a client of the node {back:?} s after the kill");
        assert!(back.is_some(), "nobody served after {a:?}");
    }
    assert!(
        report.acks >= 100 && report.open_at_dump >= 20,
        "{}",
        out.summary()
    );
    assert!(out.silences.load(Relaxed) > 0, "the kills went unnoticed");
}

/// The checker's other attack: a node that comes back from `kill -9`
/// without its store has lost every ACKed lease, and the history says so.
#[test]
fn history_catches_a_node_that_forgets_its_leases() {
    if !require_root("history_catches_a_node_that_forgets_its_leases") {
        return;
    }
    let mut w = Workload::from_env(vec![]);
    w.duration = Duration::from_secs(3);
    let lab = Lab::new(&LabSpec {
        nodes: 1,
        clients: 0,
        etcd: 0,
        relays: w.dhcp_workers,
    });
    lab.write_config(0, &NodeOptions::standalone(w.dhcp_workers));
    lab.start_node(0);
    let out = run(&lab, &w);
    lab.kill_node(0);
    let data = lab.nodes[0].dir.join("data");
    for entry in std::fs::read_dir(&data).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("wipe");
        } else if path.file_name().is_some_and(|n| n != "admin.token") {
            std::fs::remove_file(&path).expect("wipe");
        }
    }
    lab.start_node(0);
    let report = verdict(&lab, &out, 0);
    assert!(report.open_at_dump > 0, "{report:?}");
    assert_eq!(report.lost.len(), report.open_at_dump, "{report:?}");
}

/// Every fault of the nemesis, done and undone under load, against a
/// standalone node beside a three-member etcd it does not use: etcd heals
/// after each member kill (the leader's too), the partition lifts, and the
/// history holds.
#[test]
fn history_nemesis_does_and_undoes_every_fault() {
    if !require_root("history_nemesis_does_and_undoes_every_fault") {
        return;
    }
    let all = vec![
        Fault::KillNode,
        Fault::KillEtcdMember,
        Fault::KillEtcdLeader,
        Fault::Partition,
    ];
    let mut w = Workload::from_env(all.clone());
    w.duration = Duration::from_secs(10);
    (w.nemesis.every, w.nemesis.downtime) =
        (Duration::from_millis(800), Duration::from_millis(500));
    let lab = Lab::new(&LabSpec {
        nodes: 1,
        clients: 0,
        etcd: 3,
        relays: w.dhcp_workers,
    });
    lab.write_config(0, &NodeOptions::standalone(w.dhcp_workers));
    lab.start_node(0);
    let out = run(&lab, &w);
    verdict(&lab, &out, 0).assert_ok();
    let acts = out.acts();
    for f in &all {
        assert!(acts.iter().any(|a| a.fault == *f), "no {f:?} in {acts:?}");
    }
    assert!(!lab.partitioned(0));
    let mut etcd = lab.etcd();
    etcd.wait_healthy(Duration::from_secs(5));
    assert!(etcd.put("/c20n/after", "1"), "{}", etcd.logs());
}

/// The cluster target (issue 20): three nodes sharing one pool through a
/// three-member etcd, every fault. Runs once the `[cluster]` section exists.
#[test]
fn history_three_nodes_three_etcd_members_with_every_fault() {
    if !require_root("history_three_nodes_three_etcd_members_with_every_fault") {
        return;
    }
    let w = Workload::from_env(vec![
        Fault::KillNode,
        Fault::KillEtcdMember,
        Fault::KillEtcdLeader,
        Fault::Partition,
    ]);
    let lab = Lab::new(&LabSpec {
        nodes: 3,
        clients: 0,
        etcd: 3,
        relays: w.dhcp_workers,
    });
    let keys = crate::cluster_lab::ClusterKeys::new("n0", lab.etcd_endpoints());
    for i in 0..lab.nodes.len() {
        let mut o = NodeOptions::standalone(w.dhcp_workers);
        o.cluster = Some(crate::cluster_lab::ClusterKeys {
            node: format!("n{i}"),
            ..keys.clone()
        });
        lab.write_config(i, &o);
        lab.start_node(i);
    }
    let out = run(&lab, &w);
    for from in 0..lab.nodes.len() {
        verdict(&lab, &out, from).assert_ok();
    }
}

/// The checker's own attack: two standalone nodes on one network sharing
/// one pool (what issue 20 exists to prevent) hand one address to two
/// clients, and each node's dump lacks the other's leases. The history
/// must say so.
#[test]
fn history_catches_two_standalone_nodes_sharing_a_pool() {
    if !require_root("history_catches_two_standalone_nodes_sharing_a_pool") {
        return;
    }
    let mut w = Workload::from_env(vec![]);
    w.duration = Duration::from_secs(4);
    let lab = Lab::new(&LabSpec {
        nodes: 2,
        clients: 0,
        etcd: 0,
        relays: w.dhcp_workers,
    });
    for i in 0..2 {
        lab.write_config(i, &NodeOptions::standalone(w.dhcp_workers));
        lab.start_node(i);
    }
    let out = run(&lab, &w);
    let report = verdict(&lab, &out, 0);
    assert!(
        !report.double.is_empty(),
        "no double allocation found: {report:?}"
    );
    assert!(!report.lost.is_empty(), "no lost lease found: {report:?}");
    eprintln!(
        "found {} double allocations, e.g. {}",
        report.double.len(),
        report.double[0]
    );
}
