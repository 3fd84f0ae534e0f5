//! Cluster tests against a real etcd (started per test on loopback ports).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::testkit::{runtime, wait_for, TestEtcd};
use super::*;
use crate::client::ClientKey;
use crate::config::ClusterConfig;
use crate::ipam::{ClusterHooks, Ipam, IpamError, IpamOptions, PoolRange, SubnetSpec};
use crate::stats::Stats;

fn config(etcd: &TestEtcd, node: &str, ttl: u64) -> ClusterConfig {
    ClusterConfig {
        node: node.into(),
        etcd: vec![etcd.url.clone()],
        prefix: "/vpcbox/t".into(),
        lease_ttl: Duration::from_secs(ttl),
        block_size: 16,
    }
}

fn subnet() -> SubnetSpec {
    let pool = PoolRange {
        start: Ipv4Addr::new(10, 9, 0, 10),
        end: Ipv4Addr::new(10, 9, 3, 250),
    };
    SubnetSpec::new("lab", "10.9.0.0/22".parse().unwrap(), pool)
        .with_lease_time(Duration::from_secs(3600))
}

/// One node: joined, its IPAM open over etcd with the test subnet, its
/// committer running.
struct TestNode {
    ipam: Arc<Ipam>,
    cluster: Cluster,
    _cancel: tokio_util::sync::DropGuard,
}

fn node(etcd: &TestEtcd, name: &str, ttl: u64) -> TestNode {
    node_with(etcd, name, ttl, subnet())
}

fn node_with(etcd: &TestEtcd, name: &str, ttl: u64, spec: SubnetSpec) -> TestNode {
    let stats = Stats::new(64);
    let (cluster, store) = Cluster::join(&config(etcd, name, ttl), stats.clone()).unwrap();
    let ipam = Ipam::with_store(name.into(), store, IpamOptions::default(), stats).unwrap();
    ipam.apply_config(&[spec], &[], SystemTime::now()).unwrap();
    cluster.start(&ipam, None, None);
    let cancel = CancellationToken::new();
    ipam.spawn_committer(&TaskTracker::new(), cancel.clone());
    TestNode {
        ipam,
        cluster,
        _cancel: cancel.drop_guard(),
    }
}

fn mac(node: u8, i: u32) -> ClientKey {
    let b = i.to_be_bytes();
    ClientKey::Mac([2, node, b[0], b[1], b[2], b[3]])
}

/// A node registers on its lease, keepalives hold it past the TTL, and
/// with etcd gone it fences itself before the lease could have expired
/// (TTL − margin after its last answered keepalive): no write goes out.
#[test]
fn a_node_keeps_its_lease_and_fences_itself_within_the_ttl_when_etcd_dies() {
    let mut etcd = TestEtcd::start();
    let rt = runtime();
    let _rt = rt.enter();
    let n = node(&etcd, "a", 3);
    assert_eq!(n.cluster.node.fenced(), None);
    let now = SystemTime::now();
    let held = rt.block_on(bind(&n.ipam, &mac(1, 0), now));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        n.cluster.node.fenced(),
        None,
        "keepalives hold the lease past its TTL"
    );
    assert_eq!(etcd.get("/vpcbox/t/nodes/a", false).len(), 2);
    assert!(n.ipam.fenced().is_none());

    etcd.kill();
    let killed = Instant::now();
    wait_for("fenced", Duration::from_secs(3), || {
        n.ipam.fenced().is_some()
    });
    assert!(
        killed.elapsed() <= Duration::from_secs(3),
        "fenced within the TTL"
    );
    let err = n
        .ipam
        .offer("lab", &mac(1, 1), None, SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(err, IpamError::Degraded(_) | IpamError::Cluster(_)),
        "{err:?}"
    );
    // A renewal that needs no write is still answered; one that does is not.
    let soon = now + Duration::from_secs(60);
    let renewed = rt.block_on(n.ipam.renew(&mac(1, 0), held, soon)).unwrap();
    assert_eq!(renewed.ip, held);
    let late = now + Duration::from_secs(1800);
    let err = rt
        .block_on(n.ipam.renew(&mac(1, 0), held, late))
        .unwrap_err();
    assert!(matches!(err, IpamError::Degraded(_)), "{err:?}");
}

/// Offer and bind for `c`, retrying while the node has no block yet.
async fn bind(ipam: &Ipam, c: &ClientKey, now: SystemTime) -> Ipv4Addr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = match ipam.offer("lab", c, None, now) {
            Ok(o) => ipam.bind("lab", c, o.ip, None, now).await,
            Err(e) => Err(e),
        };
        match got {
            Ok(l) => return l.ip,
            Err(e) => assert!(Instant::now() < deadline, "{c}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Node a binds a client that hashes to it; a leaves (its lease revoked:
/// etcd drops its registration and blocks); b then answers that client,
/// and its REQUEST (a renewal past the cache threshold: a real write) and
/// DISCOVER get the address it had.
#[test]
fn a_survivor_answers_a_dead_nodes_client_with_its_existing_address() {
    let etcd = TestEtcd::start();
    let rt = runtime();
    let _rt = rt.enter();
    let a = node(&etcd, "a", 10);
    let b = node(&etcd, "b", 10);
    let nodes = |n: &TestNode| n.cluster.node.stats.ipam.cluster_nodes.load(Relaxed);
    wait_for("both see two nodes", Duration::from_secs(3), || {
        nodes(&a) == 2 && nodes(&b) == 2
    });
    let c = (0..)
        .map(|i| mac(9, i))
        .find(|c| a.ipam.answers(c) && !b.ipam.answers(c))
        .unwrap();
    let now = SystemTime::now();
    let ip = rt.block_on(bind(&a.ipam, &c, now));
    wait_for("b sees the lease", Duration::from_secs(2), || {
        b.ipam.lease_of(&c).is_some_and(|l| l.ip == ip)
    });

    a.cluster.leave();
    wait_for("b answers a's client", Duration::from_secs(2), || {
        b.ipam.answers(&c)
    });
    let later = now + Duration::from_secs(1800);
    let renewed = rt
        .block_on(b.ipam.bind("lab", &c, ip, None, later))
        .unwrap();
    assert_eq!(renewed.ip, ip);
    let stored = etcd.get(&format!("/vpcbox/t/leases/{ip}"), false);
    let expires = later
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    assert!(
        stored[1].contains(&format!("\"expires\":{expires}")),
        "{stored:?}"
    );
    assert_eq!(b.ipam.offer("lab", &c, None, later).unwrap().ip, ip);
}

/// Two nodes on one etcd bind 2×N clients at once: no address twice, each
/// node only inside its own blocks, every bind durable in etcd (read back
/// with etcdctl), each in one compare-fenced txn per group commit.
#[test]
fn two_nodes_bind_concurrently_without_giving_an_address_twice() {
    const N: u32 = 150;
    let etcd = TestEtcd::start();
    let rt = runtime();
    let _rt = rt.enter();
    let a = node(&etcd, "a", 10);
    let b = node(&etcd, "b", 10);
    let bound: Vec<(u8, ClientKey, Ipv4Addr)> = rt.block_on(async {
        let mut tasks = Vec::new();
        for (id, n) in [(1u8, &a), (2u8, &b)] {
            for i in 0..N {
                let ipam = n.ipam.clone();
                tasks.push(tokio::spawn(async move {
                    let c = mac(id, i);
                    let deadline = Instant::now() + Duration::from_secs(20);
                    loop {
                        let got = match ipam.offer("lab", &c, None, SystemTime::now()) {
                            Ok(o) => ipam.bind("lab", &c, o.ip, None, SystemTime::now()).await,
                            Err(e) => Err(e),
                        };
                        match got {
                            Ok(l) => return (id, c, l.ip),
                            Err(e) => {
                                assert!(Instant::now() < deadline, "client {i} of node {id}: {e}");
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }));
            }
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let mut by_ip: HashMap<Ipv4Addr, &ClientKey> = HashMap::new();
    for (_, c, ip) in &bound {
        assert!(by_ip.insert(*ip, c).is_none(), "{ip} given twice");
    }
    for (id, _, ip) in &bound {
        let n = if *id == 1 { &a } else { &b };
        assert!(
            n.cluster.node.owns("lab", u32::from(*ip)),
            "{ip} outside node {id}'s blocks"
        );
    }
    // Durable in etcd: every binding and its lease record, read back.
    let leases = etcd.get("/vpcbox/t/leases/", true);
    for (_, c, ip) in &bound {
        let key = format!("/vpcbox/t/leases/{ip}");
        let at = leases
            .iter()
            .position(|l| *l == key)
            .unwrap_or_else(|| panic!("{key} not in etcd"));
        assert!(
            leases[at + 1].contains(&c.to_string()),
            "{key}: {}",
            leases[at + 1]
        );
    }
    assert_eq!(etcd.get("/vpcbox/t/bindings/", true).len(), 2 * bound.len());
    // Each node sees the other's bindings through the watch.
    let (_, c, ip) = &bound[0];
    wait_for("b sees a's lease", Duration::from_secs(2), || {
        b.ipam.lease_of(c).is_some_and(|l| l.ip == *ip)
    });
    let writes = a.ipam.options().commit_interval;
    let _ = writes;
}

/// A bound lease record of `client` in the store's encoding.
fn record(client: &str) -> Vec<u8> {
    let json =
        format!(r#"{{"state":"bound","client":"{client}","expires":4000000000,"updated":1}}"#);
    crate::ipam::lease_from_json(json.as_bytes()).unwrap()
}

fn lease_op(ip: [u8; 4], client: &str) -> crate::ipam::Op {
    crate::ipam::Op {
        tree: crate::ipam::TreeId::Leases,
        key: ip.to_vec(),
        value: Some(record(client)),
    }
}

/// The compares themselves: a node whose copy is stale (it has not seen
/// the other's write) can neither give the same address to another client
/// nor bind the same client to a second address; etcd refuses the txn.
#[test]
fn a_write_planned_on_a_stale_copy_is_refused_by_etcd() {
    use crate::ipam::Store;
    let etcd = TestEtcd::start();
    // Joined but not started: no watch, so b's copy stays as it was.
    let (_a, sa) = Cluster::join(&config(&etcd, "a", 10), Stats::new(16)).unwrap();
    let (_b, sb) = Cluster::join(&config(&etcd, "b", 10), Stats::new(16)).unwrap();
    sa.apply(&[lease_op([10, 9, 0, 20], "mac:02:00:00:00:00:01")])
        .unwrap();
    let taken = sb.apply(&[lease_op([10, 9, 0, 20], "mac:02:00:00:00:00:02")]);
    assert!(taken.is_err(), "the same address went to a second client");
    let twice = sb.apply(&[lease_op([10, 9, 0, 21], "mac:02:00:00:00:00:01")]);
    assert!(
        twice.is_err(),
        "the same client was bound to a second address"
    );
    let stored = etcd.get("/vpcbox/t/leases/", true);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored[1].contains("mac:02:00:00:00:00:01"));
    // A fresh copy (another write to a key nobody else touched) goes through.
    sb.apply(&[lease_op([10, 9, 0, 22], "mac:02:00:00:00:00:03")])
        .unwrap();
}

/// A node whose copy trails etcd (its watch stopped, as in a partition):
/// the client's binding was released through another node, so neither the
/// API's idempotent allocation nor a DHCP REQUEST after DISCOVER may be
/// answered from the copy (the old address, which etcd now holds free).
#[test]
fn a_stale_node_answers_no_new_binding_from_its_copy() {
    let etcd = TestEtcd::start();
    let rt = runtime();
    let _rt = rt.enter();
    let a = node(&etcd, "a", 10);
    let b = node(&etcd, "b", 10);
    let c = mac(9, 1);
    let now = SystemTime::now();
    let held = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match a.ipam.allocate("lab", &c, now).await {
                Ok(l) => break l.ip,
                Err(e) => assert!(Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    wait_for("b sees the binding", Duration::from_secs(5), || {
        b.ipam.lease_of(&c).is_some_and(|l| l.ip == held)
    });
    // Fresh copies answer at once, on either node, with the same address.
    let again = rt.block_on(b.ipam.allocate("lab", &c, now)).unwrap();
    assert_eq!(again.ip, held);

    // b's watch stops; a releases the client.
    let TestNode {
        ipam: stale,
        cluster,
        _cancel,
    } = b;
    drop(cluster);
    rt.block_on(a.ipam.release(&c, held, now)).unwrap();
    assert!(etcd.get("/vpcbox/t/bindings/", true).is_empty());
    let got = rt.block_on(stale.allocate("lab", &c, now));
    assert!(
        !got.as_ref().is_ok_and(|l| l.ip == held),
        "a stale copy answered {got:?}, which etcd holds free"
    );
    assert!(matches!(got, Err(IpamError::Cluster(_))), "{got:?}");
    let selected = rt.block_on(stale.bind("lab", &c, held, None, now));
    assert!(selected.is_err(), "a stale copy acked {selected:?}");
}

/// Nodes that joined before any stored the config (each read an empty
/// cluster) store it at once: every write after the first loses its
/// compare. The loser reads what won and, the same config, has nothing to
/// write; a node whose subnet differs is told what differs.
#[test]
fn nodes_joined_together_store_the_same_config_once() {
    let etcd = TestEtcd::start();
    let rt = runtime();
    let _rt = rt.enter();
    let join = |name: &str| {
        let stats = Stats::new(64);
        let (c, store) = Cluster::join(&config(&etcd, name, 10), stats.clone()).unwrap();
        let ipam = Ipam::with_store(name.into(), store, IpamOptions::default(), stats).unwrap();
        (c, ipam)
    };
    let ((ca, a), (cb, b), (cc, c)) = (join("a"), join("b"), join("c"));
    ca.apply_config(&a, &[subnet()], &[], &[]).unwrap();
    let plain = b.apply_config(&[subnet()], &[], SystemTime::now());
    assert!(matches!(plain, Err(IpamError::Conflict(_))), "{plain:?}");
    cb.apply_config(&b, &[subnet()], &[], &[]).unwrap();
    assert_eq!(b.subnets().len(), 1);
    let other = subnet().with_lease_time(Duration::from_secs(60));
    let e = cc.apply_config(&c, &[other], &[], &[]).unwrap_err();
    assert!(
        matches!(&e, ApplyError::Differs(w) if w == "subnet 'lab'"),
        "{e}"
    );
    assert_eq!(
        etcd.get("/vpcbox/t/subnets/", true).len(),
        2,
        "one subnet key and value"
    );
}

/// A pool of exactly eight blocks of 16 (10.9.0.16–10.9.0.143).
fn small_subnet() -> SubnetSpec {
    let pool = PoolRange {
        start: Ipv4Addr::new(10, 9, 0, 16),
        end: Ipv4Addr::new(10, 9, 0, 143),
    };
    SubnetSpec::new("lab", "10.9.0.0/22".parse().unwrap(), pool)
        .with_lease_time(Duration::from_secs(3600))
}

/// The blocks `node` holds in etcd (keys), read with etcdctl.
fn blocks_in_etcd(etcd: &TestEtcd, node: &str) -> Vec<String> {
    let kvs = etcd.get("/vpcbox/t/blocks/lab/", true);
    kvs.chunks(2)
        .filter(|kv| kv.len() == 2 && kv[1].contains(&format!("\"node\":\"{node}\"")))
        .map(|kv| kv[0].clone())
        .collect()
}

/// Node a takes most of a small pool in a burst, then all its clients but
/// one release. a gives its idle blocks back (deleted in etcd) and keeps
/// the block with the live lease plus a reserve; b, joining late, claims
/// the blocks a gave back and binds more clients than the blocks nobody
/// had claimed could hold.
#[test]
fn a_node_gives_back_idle_blocks_and_another_binds_in_them() {
    let etcd = TestEtcd::start();
    let rt = runtime();
    let _rt = rt.enter();
    let a = node_with(&etcd, "a", 10, small_subnet());
    let now = SystemTime::now();
    let burst: Vec<(ClientKey, Ipv4Addr)> = rt.block_on(async {
        let mut out = Vec::new();
        for i in 0..100 {
            let c = mac(1, i);
            let ip = bind(&a.ipam, &c, now).await;
            out.push((c, ip));
        }
        out
    });
    let peak = blocks_in_etcd(&etcd, "a").len();
    assert!(peak >= 7, "a holds {peak} blocks after the burst");
    for (c, ip) in &burst[1..] {
        rt.block_on(a.ipam.release(c, *ip, now)).unwrap();
    }
    let (kept, kept_ip) = &burst[0];
    let kept_block = format!(
        "/vpcbox/t/blocks/lab/{}",
        Ipv4Addr::from(u32::from(*kept_ip) & !15)
    );
    wait_for(
        "a gives back its idle blocks",
        Duration::from_secs(40),
        || blocks_in_etcd(&etcd, "a").len() <= 3,
    );
    let held = blocks_in_etcd(&etcd, "a");
    assert!(held.contains(&kept_block), "{kept_block} not in {held:?}");
    assert!(held.len() >= 2, "a keeps a reserve: {held:?}");
    // cluster status counts what each node can still give.
    let status = read_status(&config(&etcd, "a", 10)).unwrap();
    let mine = status.nodes.iter().find(|n| n.name == "a").unwrap();
    let lab = &mine.blocks["lab"];
    assert_eq!(
        (lab.blocks, lab.free),
        (held.len() as u64, lab.blocks * 16 - 1)
    );

    let b = node_with(&etcd, "b", 10, small_subnet());
    let taken: Vec<Ipv4Addr> = rt.block_on(async {
        let mut out = Vec::new();
        for i in 0..64 {
            out.push(bind(&b.ipam, &mac(2, i), now).await);
        }
        out
    });
    let mut seen: HashMap<Ipv4Addr, ()> = HashMap::new();
    for ip in &taken {
        assert!(
            ip != kept_ip && seen.insert(*ip, ()).is_none(),
            "{ip} twice"
        );
    }
    assert_eq!(a.ipam.lease_of(kept).map(|l| l.ip), Some(*kept_ip));
    assert!(blocks_in_etcd(&etcd, "a").contains(&kept_block));
}

/// A batch of 300 bindings (600 writes, etcd takes 128 per txn) commits
/// as several txns that share no key, and every lease and binding is in
/// etcd and in the node's copy afterwards.
#[test]
fn a_batch_over_the_op_limit_commits_in_parts_and_every_binding_is_in_etcd() {
    use crate::ipam::{Store, TreeId};
    let etcd = TestEtcd::start();
    let (_a, sa) = Cluster::join(&config(&etcd, "a", 10), Stats::new(16)).unwrap();
    let client = |i: u32| format!("mac:02:00:00:00:{:02x}:{:02x}", i >> 8, i & 0xff);
    let ip = |i: u32| [10, 9, 1 + (i / 200) as u8, (i % 200) as u8];
    let ops: Vec<_> = (0..300).map(|i| lease_op(ip(i), &client(i))).collect();
    let before = sa.etcd.revision().unwrap();
    sa.apply(&ops).unwrap();
    let txns = sa.etcd.revision().unwrap() - before;
    assert!(txns >= 5, "600 writes in {txns} txns");
    let leases = etcd.get("/vpcbox/t/leases/", true);
    let bindings = etcd.get("/vpcbox/t/bindings/", true);
    assert_eq!((leases.len(), bindings.len()), (600, 600));
    for i in 0..300 {
        let key = format!("/vpcbox/t/bindings/{}", client(i));
        let at = bindings.iter().position(|l| *l == key).expect("bound");
        assert_eq!(bindings[at + 1], Ipv4Addr::from(ip(i)).to_string());
        assert!(sa.get(TreeId::Leases, &ip(i)).unwrap().is_some());
    }
}

/// Another node bound the client first (this node's copy had not seen
/// it): the bind loses its compare, and the very next write goes through
/// (a lost race is no storage fault: no refusal until a probe).
#[test]
fn a_lost_race_leaves_the_ipam_writable_for_the_next_batch() {
    let etcd = TestEtcd::start();
    let rt = runtime();
    let _rt = rt.enter();
    // a writes straight to etcd; b, joined but without a watch, never sees it.
    let (_a, sa) = Cluster::join(&config(&etcd, "a", 10), Stats::new(16)).unwrap();
    let stats = Stats::new(64);
    let (_b, sb) = Cluster::join(&config(&etcd, "b", 10), stats.clone()).unwrap();
    let b = Ipam::with_store("b".into(), sb, IpamOptions::default(), stats).unwrap();
    b.apply_config(&[subnet()], &[], SystemTime::now()).unwrap();
    let cancel = CancellationToken::new();
    b.spawn_committer(&TaskTracker::new(), cancel.clone());
    let _stop = cancel.drop_guard();
    let (c, d) = (mac(9, 1), mac(9, 2));
    crate::ipam::Store::apply(&*sa, &[lease_op([10, 9, 3, 200], &c.to_string())]).unwrap();
    let now = SystemTime::now();
    let lost = rt.block_on(async {
        let o = b.offer("lab", &c, None, now)?;
        b.bind("lab", &c, o.ip, None, now).await
    });
    assert!(matches!(lost, Err(IpamError::Conflict(_))), "{lost:?}");
    let o = b.offer("lab", &d, None, now).expect("writable at once");
    let bound = rt.block_on(b.bind("lab", &d, o.ip, None, now)).unwrap();
    let stored = etcd.get(&format!("/vpcbox/t/bindings/{d}"), false);
    assert_eq!(stored.get(1), Some(&bound.ip.to_string()), "{stored:?}");
    assert_eq!(b.degraded(), None);
}
