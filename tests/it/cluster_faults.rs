//! Faults against a cluster under DHCP load, with their figures (issue 20):
//! a node killed with -9 (its clients keep their addresses through a
//! survivor), a node partitioned from etcd (it stops ACKing new bindings,
//! keeps answering renewals), and etcd entirely down (renewals answered,
//! new bindings refused, full service back without a restart). Every ACK
//! goes into a client-side history the checker proves against a dump.
//! Clients are the relaying Rust client (tests/common/dhcp_client.rs);
//! bench/cluster.sh runs the same tests longer (`VPCBOX_ETCD_OUTAGE`).

#![cfg(feature = "cluster")]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::cluster_lab::{relay_ip, within, ClusterKeys, Lab, LabSpec, NodeOptions};
use crate::dhcp_client::{key, Answer, Relay};
use crate::history::{check, now, History, Kind};
use crate::netns::require_root;

/// Every node's `[cluster] lease_ttl` here (ClusterKeys' test default).
const TTL: f64 = 3.0;
/// How long a relay waits for an answer.
const WAIT: Duration = Duration::from_millis(300);

/// A lab of `nodes` cluster nodes on `etcd` members, `relays` relay
/// addresses on the driver, every node started.
fn cluster(nodes: usize, etcd: usize, relays: usize) -> Lab {
    let lab = Lab::new(&LabSpec {
        nodes,
        clients: 0,
        etcd,
        relays,
    });
    let keys = ClusterKeys::new("n0", lab.etcd_endpoints());
    for i in 0..nodes {
        let mut o = NodeOptions::standalone(relays);
        // Room for the load: a node takes never-used addresses first, so
        // it claims blocks at the rate of new clients, releases or not; a
        // pool all claimed leaves a node that rejoins nothing to give.
        o.relayed_pool = (Ipv4Addr::new(10, 21, 1, 0), Ipv4Addr::new(10, 21, 200, 255));
        o.cluster = Some(ClusterKeys {
            node: format!("n{i}"),
            ..keys.clone()
        });
        lab.write_config(i, &o);
        lab.start_node(i);
    }
    lab
}

fn servers(lab: &Lab, which: &[usize]) -> Vec<SocketAddr> {
    which
        .iter()
        .map(|&i| (lab.nodes[i].ip, 67).into())
        .collect()
}

/// A MAC of test `t`, stream `s`, number `n`.
fn mac(t: u8, s: u8, n: u32) -> [u8; 6] {
    [2, 0xc6, t, s, (n >> 8) as u8, n as u8]
}

/// A client holding an address, and who answered it last.
#[derive(Clone, Debug)]
struct Bound {
    mac: [u8; 6],
    ip: Ipv4Addr,
    node: Ipv4Addr,
}

/// One new binding attempt: DISCOVER, then (if offered) REQUEST sent at
/// `sent`.
#[derive(Clone, Debug)]
struct Attempt {
    sent: f64,
    got: f64,
    acked: Option<(Ipv4Addr, Ipv4Addr)>,
}

/// DORA for `mac` through `relay` (up to `tries` tries); the ACK goes
/// into `h`.
fn bind(relay: &mut Relay, h: &History, mac: [u8; 6], tries: usize) -> Option<Bound> {
    for _ in 0..tries {
        let Some(offer) = relay.discover(mac) else {
            continue;
        };
        let sent = now();
        if let Answer::Ack { ip, lease, node } = relay.select(mac, offer) {
            h.ack(&node.to_string(), &key(mac), ip, sent + lease.as_secs_f64());
            return Some(Bound { mac, ip, node });
        }
    }
    None
}

/// Renews `b` once; true on an ACK of its own address (recorded in `h`).
/// Another address or a NAK while its lease runs fails the test.
fn renew(relay: &mut Relay, h: &History, b: &mut Bound) -> bool {
    let sent = now();
    match relay.renew(b.mac, b.ip) {
        Answer::Ack { ip, lease, node } => {
            h.ack(
                &node.to_string(),
                &key(b.mac),
                ip,
                sent + lease.as_secs_f64(),
            );
            assert_eq!(ip, b.ip, "{:?} renewed into another address by {node}", b);
            b.node = node;
            true
        }
        Answer::Nak { node } => panic!("{b:?} got a NAK from {node} for its own address"),
        Answer::Silence => false,
    }
}

/// New clients (stream `s` of test `t`) doing DORA through relay `r` to
/// `to` until `stop`, each releasing its address once ACKed; each attempt
/// in `out`, each ACK and release in `h`.
fn new_bindings(
    lab: &Lab,
    (t, s, r): (u8, u8, usize),
    to: Vec<SocketAddr>,
    h: &History,
    out: &Mutex<Vec<Attempt>>,
    stop: &AtomicBool,
) {
    lab.driver.enter();
    let mut relay = Relay::bind(relay_ip(r), to, WAIT);
    let mut n = 0u32;
    while !stop.load(Relaxed) {
        n += 1;
        let m = mac(t, s, n);
        let sent = now();
        let Some(offer) = relay.discover(m) else {
            // No offer is a refusal too (a fenced node has no block to give from).
            let mut all = out.lock().unwrap_or_else(|e| e.into_inner());
            all.push(Attempt {
                sent,
                got: now(),
                acked: None,
            });
            continue;
        };
        let sent = now();
        let acked = match relay.select(m, offer) {
            Answer::Ack { ip, lease, node } => {
                h.ack(&node.to_string(), &key(m), ip, sent + lease.as_secs_f64());
                // Given back at once: the pool lasts however long a loaded
                // machine stretches the test.
                h.event("-", &key(m), ip, Kind::Release);
                relay.release(m, ip, node);
                Some((ip, node))
            }
            _ => None,
        };
        let mut all = out.lock().unwrap_or_else(|e| e.into_inner());
        all.push(Attempt {
            sent,
            got: now(),
            acked,
        });
    }
}

/// The checker over `h` against node `from`'s dump.
fn verdict(lab: &Lab, h: &History, from: usize) {
    let dump_t = now();
    let report = check(&h.events(), &lab.dump(from), dump_t, 0.5);
    eprintln!(
        "history (dump of node {from}): {} acks, {} clients, {} open at the dump",
        report.acks, report.clients, report.open_at_dump
    );
    report.assert_ok();
    assert!(report.open_at_dump > 0, "{report:?}");
}

/// Binds `count` clients of stream `s` through `relay`; all must bind.
fn bind_all(relay: &mut Relay, h: &History, t: u8, s: u8, count: u32) -> Vec<Bound> {
    (0..count)
        .map(|n| bind(relay, h, mac(t, s, n), 3).unwrap_or_else(|| panic!("client {n} not bound")))
        .collect()
}

/// `kill -9` of a node under load: every client it answered renews
/// through a survivor with its own address, within the lease TTL plus a
/// generous bound (the figure is printed); the history holds.
#[test]
fn kill9_of_a_node_moves_its_clients_to_a_survivor_with_their_addresses() {
    if !require_root("kill9_of_a_node_moves_its_clients_to_a_survivor_with_their_addresses") {
        return;
    }
    let lab = cluster(3, 1, 2);
    let h = History::default();
    let all = servers(&lab, &[0, 1, 2]);
    let (attempts, stop) = (Mutex::new(Vec::new()), AtomicBool::new(false));
    let (victim, moved, t_kill) = std::thread::scope(|s| {
        s.spawn(|| new_bindings(&lab, (1, 1, 1), all.clone(), &h, &attempts, &stop));
        let lab = &lab;
        let h = &h;
        let all = all.clone();
        let found = s.spawn(move || {
            lab.driver.enter();
            let mut relay = Relay::bind(relay_ip(0), all, WAIT);
            let mut clients = bind_all(&mut relay, h, 1, 0, 48);
            // The victim: the node that answered the most of them.
            let count = |i: usize| clients.iter().filter(|b| b.node == lab.nodes[i].ip).count();
            let victim = (0..3).max_by_key(|&i| count(i)).unwrap_or(0);
            let dead = lab.nodes[victim].ip;
            lab.kill_node(victim);
            let t_kill = now();
            // Each of its clients renews (relayed, to every node) until a
            // survivor answers, one at a time so that the first answer is
            // timed to one relay wait: RENEWING and REBINDING look alike relayed.
            let mut pending: Vec<usize> = (0..clients.len())
                .filter(|&c| clients[c].node == dead)
                .collect();
            let mut moved: Vec<(usize, f64)> = Vec::new();
            let done = within(Duration::from_secs_f64(TTL + 30.0), || {
                if let Some(&c) = pending.first() {
                    if renew(&mut relay, h, &mut clients[c]) {
                        assert_ne!(clients[c].node, dead, "a dead node answered");
                        moved.push((c, now() - t_kill));
                        pending.remove(0);
                    }
                }
                pending.is_empty()
            });
            assert!(
                done.is_some(),
                "{} clients of the killed node still unanswered; moved: {moved:?}",
                pending.len()
            );
            (victim, moved, t_kill)
        });
        let out = found.join();
        // Then a new binding through the survivors after the takeover.
        if let Ok((_, _, t_kill)) = &out {
            within(Duration::from_secs(20), || {
                let a = attempts.lock().unwrap_or_else(|e| e.into_inner());
                a.iter().any(|a| a.sent > t_kill + TTL && a.acked.is_some())
            });
        }
        stop.store(true, Relaxed);
        out.unwrap_or_else(|e| std::panic::resume_unwind(e))
    });
    let secs: Vec<f64> = moved.iter().map(|(_, t)| *t).collect();
    let first = secs.iter().copied().fold(f64::INFINITY, f64::min);
    let last = secs.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "FIGURE failover: node {victim} killed; {} clients moved; first ACK by a survivor {first:.2} s after the kill, last {last:.2} s (lease_ttl {TTL} s)",
        secs.len()
    );
    assert!(!secs.is_empty(), "the killed node answered no client");
    let attempts = attempts.into_inner().unwrap_or_else(|e| e.into_inner());
    let after = attempts
        .iter()
        .filter(|a| a.sent > t_kill + TTL && a.acked.is_some())
        .count();
    assert!(after > 0, "no new binding after the takeover: {attempts:?}");
    verdict(&lab, &h, (victim + 1) % 3);
}

/// The node whose lease runs out cannot ACK a new binding once cut off
/// etcd (its commits need etcd; past its TTL it is fenced and says so in
/// `/readyz`), keeps answering renewals that need no write, and after
/// healing binds again; the survivor serves meanwhile; the history holds.
#[test]
fn a_node_partitioned_from_etcd_stops_new_bindings_and_keeps_renewing() {
    if !require_root("a_node_partitioned_from_etcd_stops_new_bindings_and_keeps_renewing") {
        return;
    }
    let lab = cluster(2, 1, 3);
    let h = History::default();
    let (to_p, all) = (servers(&lab, &[0]), servers(&lab, &[0, 1]));
    let (at_p, at_all) = (Mutex::new(Vec::new()), Mutex::new(Vec::new()));
    let stop = AtomicBool::new(false);
    let times = std::thread::scope(|s| {
        s.spawn(|| new_bindings(&lab, (2, 1, 1), to_p.clone(), &h, &at_p, &stop));
        s.spawn(|| new_bindings(&lab, (2, 2, 2), all.clone(), &h, &at_all, &stop));
        let (lab, h, to_p) = (&lab, &h, to_p.clone());
        let run = s.spawn(move || {
            lab.driver.enter();
            partition_run(lab, h, to_p)
        });
        let out = run.join();
        stop.store(true, Relaxed);
        out.unwrap_or_else(|e| std::panic::resume_unwind(e))
    });
    let (t_p, t_heal, t_back, renewed) = times;
    let (at_p, at_all) = (
        at_p.into_inner().unwrap_or_else(|e| e.into_inner()),
        at_all.into_inner().unwrap_or_else(|e| e.into_inner()),
    );
    let acked = |a: &&Attempt| a.acked.is_some();
    let last = at_p
        .iter()
        .filter(acked)
        .filter(|a| a.got > t_p && a.sent < t_heal)
        .map(|a| a.got - t_p)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    let before = at_p.iter().filter(acked).filter(|a| a.got < t_p).count();
    let late: Vec<_> = at_p
        .iter()
        .filter(acked)
        .filter(|a| a.sent > t_p + TTL && a.sent < t_heal)
        .collect();
    let survivor = at_all
        .iter()
        .filter(acked)
        .filter(|a| a.sent > t_p + TTL && a.sent < t_heal)
        .count();
    eprintln!(
        "FIGURE partition: the partitioned node ACKed {before} new bindings before it, the last one {} after it (lease_ttl {TTL} s); renewals answered by it meanwhile {}/{}; new bindings through the survivor meanwhile {survivor}; after healing it bound again {:.2} s later",
        last.map_or("none".into(), |t| format!("{t:.2} s")),
        renewed.0,
        renewed.1,
        t_back - t_heal
    );
    assert!(before > 0, "the node bound nobody before the partition");
    assert!(late.is_empty(), "new bindings ACKed past the TTL: {late:?}");
    assert!(
        survivor > 0,
        "the survivor bound nobody during the partition"
    );
    verdict(&lab, &h, 1);
    verdict(&lab, &h, 0);
}

/// The partition itself, from the driver: the partitioned node's clients
/// bound first, renewed through it during the partition, then the heal.
/// Returns (partition, heal, first new binding after healing, (renewals
/// answered, sent) during the partition).
fn partition_run(lab: &Lab, h: &History, to_p: Vec<SocketAddr>) -> (f64, f64, f64, (u32, u32)) {
    let mut relay = Relay::bind(relay_ip(0), to_p.clone(), WAIT);
    // The clients node 0 answers: about half of all clients.
    let mut mine: Vec<Bound> = (0..40)
        .filter_map(|n| bind(&mut relay, h, mac(2, 0, n), 1))
        .collect();
    assert!(
        mine.len() >= 4,
        "node 0 answered {} of 40 clients",
        mine.len()
    );
    lab.partition(0);
    let t_p = now();
    let (mut fenced_acks, mut sent, mut acks) = (vec![false; mine.len()], 0, 0);
    let mut k = 0;
    // At least 3 s past the TTL, and until each client was answered while
    // its node was fenced (a loaded machine may time a renewal out).
    let fenced_all = |f: &[bool]| f.iter().all(|a| *a);
    while (now() < t_p + TTL + 3.0 || !fenced_all(&fenced_acks)) && now() < t_p + TTL + 20.0 {
        let c = k % mine.len();
        k += 1;
        let t = now();
        sent += 1;
        if renew(&mut relay, h, &mut mine[c]) {
            acks += 1;
            fenced_acks[c] |= t > t_p + TTL;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, body) = lab.api(0, "GET", "/readyz", "");
    assert_eq!(
        code, 503,
        "a partitioned node past its TTL is not ready: {body}"
    );
    assert!(
        fenced_all(&fenced_acks),
        "renewals unanswered while fenced: {fenced_acks:?}"
    );
    lab.heal(0);
    let t_heal = now();
    // Back: a new binding through node 0 alone.
    let mut n = 1000;
    let back = within(Duration::from_secs(30), || {
        n += 1;
        bind(&mut relay, h, mac(2, 0, n), 1).is_some()
    });
    assert!(
        back.is_some(),
        "node 0 bound nobody after healing; /readyz {:?}; its log:\n{}",
        lab.api(0, "GET", "/readyz", ""),
        tail(&lab.node_log(0), 40)
    );
    (t_p, t_heal, now(), (acks, sent))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Seconds etcd stays down in [`etcd_down_renewals_answered_new_bindings_refused_then_back`]
/// (`VPCBOX_ETCD_OUTAGE`, 8 by default; the bench runs 30).
fn outage() -> f64 {
    std::env::var("VPCBOX_ETCD_OUTAGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8.0)
}

/// Clients that keep renewing through the etcd outage.
const RENEWERS: u32 = 24;

/// etcd entirely down: every renewal is answered (no write needed), no
/// new binding is ACKed, both nodes say so in `/readyz`; once etcd is
/// back, both serve new bindings again without a restart; the history holds.
#[test]
fn etcd_down_renewals_answered_new_bindings_refused_then_back() {
    if !require_root("etcd_down_renewals_answered_new_bindings_refused_then_back") {
        return;
    }
    let lab = cluster(2, 1, 2);
    let h = History::default();
    let all = servers(&lab, &[0, 1]);
    let (attempts, stop) = (Mutex::new(Vec::new()), AtomicBool::new(false));
    let renewals = Mutex::new(Vec::new());
    let (t_down, t_restart, t_up) = std::thread::scope(|s| {
        s.spawn(|| new_bindings(&lab, (3, 1, 1), all.clone(), &h, &attempts, &stop));
        let (lab, h, all, stop, renewals) = (&lab, &h, all.clone(), &stop, &renewals);
        s.spawn(move || {
            lab.driver.enter();
            let mut relay = Relay::bind(relay_ip(0), all, WAIT);
            let mut clients = bind_all(&mut relay, h, 3, 0, RENEWERS);
            let mut k = 0;
            while !stop.load(Relaxed) {
                let c = k % clients.len();
                k += 1;
                let sent = now();
                let ok = renew(&mut relay, h, &mut clients[c]);
                let mut r = renewals.lock().unwrap_or_else(|e| e.into_inner());
                r.push((c, sent, ok));
                drop(r);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let out =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| outage_run(lab, renewals)));
        stop.store(true, Relaxed);
        out.unwrap_or_else(|e| std::panic::resume_unwind(e))
    });
    let attempts = attempts.into_inner().unwrap_or_else(|e| e.into_inner());
    let renewals = renewals.into_inner().unwrap_or_else(|e| e.into_inner());
    let acked_new: Vec<_> = attempts
        .iter()
        .filter(|a| a.acked.is_some() && a.sent > t_down && a.sent < t_restart)
        .collect();
    let down: Vec<_> = renewals
        .iter()
        .filter(|(_, t, _)| *t > t_down && *t < t_restart)
        .collect();
    let answered = down.iter().filter(|(_, _, ok)| *ok).count();
    let back = attempts
        .iter()
        .filter(|a| a.acked.is_some() && a.sent > t_up)
        .map(|a| a.got - t_up)
        .fold(f64::INFINITY, f64::min);
    let refused = attempts
        .iter()
        .filter(|a| a.sent > t_down && a.sent < t_restart)
        .count();
    eprintln!(
        "FIGURE etcd down {:.1} s: renewals answered {answered}/{}; new bindings ACKed 0 expected, {} seen of {refused} tried; first new binding {back:.2} s after etcd was healthy again",
        t_restart - t_down,
        down.len(),
        acked_new.len()
    );
    assert!(
        acked_new.is_empty(),
        "ACKed while etcd was down: {acked_new:?}"
    );
    // Every client answered while its node was fenced; a loaded machine
    // may time out a few renewals, a node that refuses them fails many.
    let fenced: std::collections::BTreeSet<usize> = down
        .iter()
        .filter(|(_, t, ok)| *ok && *t > t_down + TTL)
        .map(|(c, _, _)| *c)
        .collect();
    assert_eq!(
        fenced.len(),
        RENEWERS as usize,
        "clients renewed while etcd was down: {fenced:?}"
    );
    assert!(
        answered * 100 >= down.len() * 95,
        "renewals unanswered: {down:?}"
    );
    assert!(back.is_finite(), "no new binding after etcd came back");
    verdict(&lab, &h, 0);
    verdict(&lab, &h, 1);
}

/// Stops etcd for [`outage`] seconds once renewals run, checks the nodes
/// say they are fenced, restarts it and waits for both nodes to be ready
/// again. Returns (etcd killed, restart begun, etcd healthy).
fn outage_run(lab: &Lab, renewals: &Mutex<Vec<(usize, f64, bool)>>) -> (f64, f64, f64) {
    let running = within(Duration::from_secs(30), || {
        renewals
            .lock()
            .map(|r| r.len() > RENEWERS as usize)
            .unwrap_or(false)
    });
    assert!(running.is_some(), "the renewals never started");
    lab.etcd().kill(0);
    let t_down = now();
    std::thread::sleep(Duration::from_secs_f64(TTL + 1.0));
    for i in 0..2 {
        let (code, body) = lab.api(i, "GET", "/readyz", "");
        assert_eq!(code, 503, "node {i} ready without etcd: {body}");
    }
    let rest = t_down + outage() - now();
    std::thread::sleep(Duration::from_secs_f64(rest.max(0.0)));
    let t_restart = now();
    lab.etcd().restart(0);
    let t_up = now();
    for i in 0..2 {
        let ready = within(Duration::from_secs(30), || {
            lab.api(i, "GET", "/readyz", "").0 == 200
        });
        assert!(ready.is_some(), "node {i} not ready after etcd came back");
    }
    // The load thread needs a moment to show a new binding after this.
    std::thread::sleep(Duration::from_secs(2));
    (t_down, t_restart, t_up)
}
