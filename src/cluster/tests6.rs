//! DHCPv6 on the cluster, against a real etcd: v6 bindings written through
//! one node reach the other's copy and index, a stale copy cannot give an
//! address twice nor bind an IA twice, a fenced node writes nothing.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::Ipv6Net;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::testkit::{runtime, wait_for, TestEtcd};
use super::*;
use crate::client::ClientKey;
use crate::config::ClusterConfig;
use crate::ipam::{
    Ia6Key, Ia6Kind, Ia6Op, Ia6Result, Ipam, IpamError, IpamOptions, LeaseFilter, Op, PdPoolSpec,
    Range6, Store, Subnet6Spec, TreeId,
};
use crate::stats::Stats;

fn config(etcd: &TestEtcd, node: &str) -> ClusterConfig {
    ClusterConfig {
        node: node.into(),
        etcd: vec![etcd.url.clone()],
        prefix: "/vpcbox/t6".into(),
        lease_ttl: Duration::from_secs(10),
        block_size: 16,
    }
}

fn subnet6() -> Subnet6Spec {
    Subnet6Spec {
        pools: vec![Range6 {
            start: "fd00:77::100".parse().unwrap(),
            end: "fd00:77::ffff".parse().unwrap(),
        }],
        pd_pools: vec![PdPoolSpec {
            prefix: "fd00:78::/48".parse().unwrap(),
            delegated_len: 56,
        }],
        ..Subnet6Spec::new("lab6", "fd00:77::/64".parse().unwrap())
    }
}

struct TestNode {
    ipam: Arc<Ipam>,
    cluster: Cluster,
    _cancel: tokio_util::sync::DropGuard,
}

/// A started node serving `lab6` (stored through the cluster's config path).
fn node(etcd: &TestEtcd, name: &str) -> TestNode {
    let stats = Stats::new(64);
    let (cluster, store) = Cluster::join(&config(etcd, name), stats.clone()).unwrap();
    let ipam = Ipam::with_store(name.into(), store, IpamOptions::default(), stats).unwrap();
    cluster.apply_config(&ipam, &[], &[], &[subnet6()]).unwrap();
    cluster.start(&ipam, None, None);
    let cancel = CancellationToken::new();
    ipam.spawn_committer(&TaskTracker::new(), cancel.clone());
    TestNode {
        ipam,
        cluster,
        _cancel: cancel.drop_guard(),
    }
}

fn ia(node: u8, i: u32, kind: Ia6Kind) -> Ia6Key {
    let b = i.to_be_bytes();
    Ia6Key {
        client: ClientKey::Duid(vec![0, 3, 0, 1, 2, node, b[0], b[1], b[2], b[3]].into()),
        kind,
        iaid: 1,
    }
}

/// Binds `ia` through `ipam` (Commit): the address or prefix held.
async fn commit(
    ipam: &Ipam,
    ia: &Ia6Key,
    hint: &[Ipv6Net],
    now: SystemTime,
) -> Result<Ipv6Net, IpamError> {
    match ipam.ia6("lab6", ia, Ia6Op::Commit, hint, None, now).await? {
        Ia6Result::Held(h) if h.len() == 1 => Ok(h[0].prefix),
        other => panic!("{ia}: {other:?}"),
    }
}

/// What the other node's index holds for `ia`, as the API lists it.
fn listed(ipam: &Ipam, ia: &Ia6Key) -> Option<String> {
    let filter = LeaseFilter {
        client: Some(ia.client.clone()),
        ..Default::default()
    };
    let page = ipam.bindings6(&filter, None, 100, 10_000);
    page.bindings
        .into_iter()
        .find(|b| b.kind == ia.kind && b.iaid == ia.iaid)
        .map(|b| b.ip)
}

/// An address and a prefix bound through node a are in etcd (lease and
/// IA binding keys) and in b's index; b, answering a Renew, gives the same
/// ones (within the cache threshold: no write). The server DUID is one for
/// both nodes.
#[test]
fn v6_bindings_through_one_node_reach_the_other() {
    let etcd = TestEtcd::start();
    let rt = runtime();
    let _rt = rt.enter();
    let a = node(&etcd, "a");
    let b = node(&etcd, "b");
    assert_eq!(a.ipam.server_duid().unwrap(), b.ipam.server_duid().unwrap());
    let now = SystemTime::now();
    let (na, pd) = (ia(1, 0, Ia6Kind::Na), ia(1, 0, Ia6Kind::Pd));
    let addr = rt.block_on(commit(&a.ipam, &na, &[], now)).unwrap();
    let prefix = rt.block_on(commit(&a.ipam, &pd, &[], now)).unwrap();
    assert_eq!((addr.prefix_len(), prefix.prefix_len()), (128, 56));
    let leases = etcd.get("/vpcbox/t6/leases6/", true);
    assert_eq!(leases.len(), 4, "{leases:?}");
    assert!(leases.contains(&format!("/vpcbox/t6/leases6/{}", addr.addr())));
    assert!(leases.contains(&format!("/vpcbox/t6/leases6/{prefix}")));
    let bindings = etcd.get(&format!("/vpcbox/t6/bindings6/{na}"), false);
    assert_eq!(
        bindings.get(1),
        Some(&addr.addr().to_string()),
        "{bindings:?}"
    );
    wait_for("b's index holds both", Duration::from_secs(5), || {
        listed(&b.ipam, &na) == Some(addr.addr().to_string())
            && listed(&b.ipam, &pd) == Some(prefix.to_string())
    });
    let soon = now + Duration::from_secs(60);
    let renew = |k: &Ia6Key| rt.block_on(b.ipam.ia6("lab6", k, Ia6Op::Extend, &[], None, soon));
    let held = |r: Result<Ia6Result, IpamError>| match r.unwrap() {
        Ia6Result::Held(h) => h[0].prefix,
        other => panic!("{other:?}"),
    };
    assert_eq!(held(renew(&na)), addr);
    assert_eq!(held(renew(&pd)), prefix);
    // A Release through b removes both keys of the IA.
    rt.block_on(b.ipam.ia6("lab6", &na, Ia6Op::Release, &[], None, soon))
        .unwrap();
    assert!(etcd
        .get(&format!("/vpcbox/t6/bindings6/{na}"), false)
        .is_empty());
    assert!(etcd
        .get(&format!("/vpcbox/t6/leases6/{}", addr.addr()), false)
        .is_empty());
    wait_for("a's index drops it", Duration::from_secs(5), || {
        listed(&a.ipam, &na).is_none()
    });
}

/// A bound v6 record of `ia` in the store's encoding.
fn record(ia: &Ia6Key) -> Vec<u8> {
    let json = format!(
        r#"{{"state":"bound","client":"{}","kind":"{}","iaid":{},"expires":4000000000,"updated":1}}"#,
        ia.client,
        ia.kind.as_str(),
        ia.iaid
    );
    crate::ipam::lease6_from_json(json.as_bytes()).unwrap()
}

fn lease_op(addr: &str, ia: &Ia6Key) -> Op {
    let net = Ipv6Net::from(addr.parse::<std::net::Ipv6Addr>().unwrap());
    Op {
        tree: TreeId::Leases6,
        key: crate::ipam::key6_from_text(&net.addr().to_string()).unwrap(),
        value: Some(record(ia)),
    }
}

/// The compares themselves, on copies that have not seen the other node's
/// write (no watch): a new v6 lease is create-only, so an address bound
/// through a cannot go to another IA through b; and an IA's binding key is
/// compared, so the IA cannot be bound to a second address through b.
#[test]
fn a_stale_copy_cannot_give_a_v6_address_twice_nor_bind_an_ia_twice() {
    let etcd = TestEtcd::start();
    let (_a, sa) = Cluster::join(&config(&etcd, "a"), Stats::new(16)).unwrap();
    let (_b, sb) = Cluster::join(&config(&etcd, "b"), Stats::new(16)).unwrap();
    let (one, two) = (ia(1, 1, Ia6Kind::Na), ia(2, 2, Ia6Kind::Na));
    sa.apply(&[lease_op("fd00:77::200", &one)]).unwrap();
    let taken = sb.apply(&[lease_op("fd00:77::200", &two)]);
    assert!(taken.is_err(), "the same address went to a second IA");
    let twice = sb.apply(&[lease_op("fd00:77::201", &one)]);
    assert!(twice.is_err(), "the same IA was bound to a second address");
    let stored = etcd.get("/vpcbox/t6/leases6/", true);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored[1].contains(&one.client.to_string()), "{stored:?}");
    assert_eq!(
        etcd.get("/vpcbox/t6/bindings6/", true)[1],
        "fd00:77::200",
        "one IA binding, to the first address"
    );
    // Another IA on another address goes through.
    sb.apply(&[lease_op("fd00:77::202", &two)]).unwrap();
}

/// Both nodes bind IAs at once, each asking for the same hinted addresses,
/// retrying as clients do: every IA is bound in the end, every Reply's
/// address is in etcd for that IA (nobody's acked binding was overwritten)
/// and no address went to two IAs.
#[test]
fn two_nodes_binding_the_same_hints_never_ack_one_address_twice() {
    const N: u32 = 40;
    let etcd = TestEtcd::start();
    let rt = runtime();
    let _rt = rt.enter();
    let a = node(&etcd, "a");
    let b = node(&etcd, "b");
    let acked: Vec<(Ia6Key, Ipv6Net)> = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..N {
            let hint: Ipv6Net = format!("fd00:77::{:x}/128", 0x1000 + i).parse().unwrap();
            for (id, n) in [(1u8, &a), (2u8, &b)] {
                let ipam = n.ipam.clone();
                tasks.push(tokio::spawn(async move {
                    // As a client does: a failed Request (a lost race fails
                    // its whole group commit) is sent again.
                    let k = ia(id, i, Ia6Kind::Na);
                    for _ in 0..20 {
                        if let Ok(held) = commit(&ipam, &k, &[hint], SystemTime::now()).await {
                            return Some((k, held));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    None
                }));
            }
        }
        let mut out = Vec::new();
        for t in tasks {
            out.extend(t.await.unwrap());
        }
        out
    });
    assert_eq!(acked.len() as u32, 2 * N, "IAs bound");
    let stored = etcd.get("/vpcbox/t6/leases6/", true);
    let mut seen = std::collections::HashSet::new();
    for (k, held) in &acked {
        assert!(seen.insert(held.addr()), "{held} acked twice");
        let key = format!("/vpcbox/t6/leases6/{}", held.addr());
        let at = stored
            .iter()
            .position(|l| *l == key)
            .unwrap_or_else(|| panic!("{key} not in etcd"));
        assert!(
            stored[at + 1].contains(&k.client.to_string()),
            "{key} acked to {k} holds {}",
            stored[at + 1]
        );
    }
}

/// A fenced node (etcd gone) writes nothing: no new binding, no renewal
/// that needs a write; a renewal inside the cache threshold is answered.
/// A node whose registration is gone (its lease revoked) writes nothing
/// either: the registration compare fails.
#[test]
fn a_fenced_node_writes_no_v6_binding_and_answers_fresh_renewals() {
    let mut etcd = TestEtcd::start();
    let rt = runtime();
    let _rt = rt.enter();
    let a = node(&etcd, "a");
    let now = SystemTime::now();
    let na = ia(1, 0, Ia6Kind::Na);
    let addr = rt.block_on(commit(&a.ipam, &na, &[], now)).unwrap();

    // Registration revoked behind the node's back: its next write fails.
    let lease = a.cluster.node.lease.load(Relaxed);
    let mut c = a.cluster.etcd.client();
    a.cluster
        .etcd
        .block(async move { c.lease_revoke(lease).await })
        .unwrap();
    let other = ia(1, 1, Ia6Kind::Na);
    let got = rt.block_on(commit(&a.ipam, &other, &[], now));
    assert!(got.is_err(), "acked {got:?} without a registration");
    assert!(
        etcd.get(&format!("/vpcbox/t6/bindings6/{other}"), false)
            .is_empty(),
        "written without a registration"
    );

    // Back (registered again), then etcd dies: fenced within the TTL.
    wait_for("registered again", Duration::from_secs(15), || {
        a.ipam.fenced().is_none() && etcd.get("/vpcbox/t6/nodes/a", false).len() == 2
    });
    etcd.kill();
    wait_for("fenced", Duration::from_secs(10), || {
        a.ipam.fenced().is_some()
    });
    let got = rt.block_on(commit(&a.ipam, &other, &[], now));
    assert!(matches!(got, Err(IpamError::Degraded(_))), "{got:?}");
    let solicit = a.ipam.ia6("lab6", &other, Ia6Op::Advertise, &[], None, now);
    assert!(rt.block_on(solicit).is_err(), "advertised while fenced");
    let renew = |at| rt.block_on(a.ipam.ia6("lab6", &na, Ia6Op::Extend, &[], None, at));
    match renew(now + Duration::from_secs(60)) {
        Ok(Ia6Result::Held(h)) => assert_eq!(h[0].prefix, addr),
        other => panic!("fresh renewal: {other:?}"),
    }
    let late = renew(now + Duration::from_secs(1800));
    assert!(matches!(late, Err(IpamError::Degraded(_))), "{late:?}");
}

/// `db import` (and `cluster migrate`, which is an import) carries v6
/// subnets, bindings and the server DUID into an empty cluster, each bound
/// IA with its binding key; `db export` reads them back; a node joining
/// serves with that DUID; `cluster status` counts them.
#[test]
fn v6_subnets_and_bindings_go_through_import_export_and_status() {
    use crate::ipam::{Binding6, Dump, LeaseState, SCHEMA};
    let etcd = TestEtcd::start();
    let rt = runtime();
    let cfg = config(&etcd, "a");
    let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    let binding = |ip: &str, kind, state| Binding6 {
        ip: ip.into(),
        subnet: "lab6".into(),
        client: "duid:00030001020000000601".parse().unwrap(),
        kind,
        iaid: 1,
        state,
        expires_at: at(4_000_000_000),
        updated_at: at(1_700_000_000),
    };
    let dump = Dump {
        schema: SCHEMA,
        subnets: vec![],
        reservations: vec![],
        leases: vec![],
        isolations: vec![],
        subnets6: vec![subnet6()],
        leases6: vec![
            binding("fd00:77::100", Ia6Kind::Na, LeaseState::Bound),
            binding("fd00:78:0:100::/56", Ia6Kind::Pd, LeaseState::Bound),
            binding("fd00:77::101", Ia6Kind::Na, LeaseState::Declined),
        ],
        server_duid: Some("000400112233445566778899aabbccddeeff".into()),
    };
    let writes = rt.block_on(prepare(dump.clone(), &cfg)).unwrap();
    import(&cfg, writes).unwrap();
    let ia = "duid:00030001020000000601/pd/1";
    let key = etcd.get(&format!("/vpcbox/t6/bindings6/{ia}"), false);
    assert_eq!(key.get(1).map(String::as_str), Some("fd00:78:0:100::/56"));
    assert_eq!(
        etcd.get("/vpcbox/t6/bindings6/", true).len(),
        4,
        "bound IAs only"
    );
    let back = export(&cfg).unwrap();
    assert_eq!(back.subnets6, dump.subnets6);
    assert_eq!(back.server_duid, dump.server_duid, "one DUID, carried over");
    // A node that joins answers with it, so the clients' Renews still name it.
    let _rt = rt.enter();
    let a = node(&etcd, "a");
    assert_eq!(a.ipam.server_duid().map(hex::encode).ok(), dump.server_duid);
    drop(a);
    let mut want = dump.leases6.clone();
    let mut got = back.leases6.clone();
    want.sort_by(|a, b| a.ip.cmp(&b.ip));
    got.sort_by(|a, b| a.ip.cmp(&b.ip));
    assert_eq!(got, want);
    let status = read_status(&cfg).unwrap();
    assert_eq!(status.subnets6, vec!["lab6".to_owned()]);
    let counts: Vec<(&str, u64)> = status
        .leases6
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        counts,
        [("na bound", 1), ("na declined", 1), ("pd bound", 1)]
    );
    assert!(render_status(&status).contains("leases6: na bound 1, na declined 1, pd bound 1"));
}

/// A v6 subnet added through node a's API is in b's index (the watch) and
/// b binds in it; deleted through b, it is gone from a.
#[test]
fn a_v6_subnet_added_through_one_node_is_served_by_the_other() {
    let etcd = TestEtcd::start();
    let rt = runtime();
    let _rt = rt.enter();
    let a = node(&etcd, "a");
    let b = node(&etcd, "b");
    let mut api = subnet6();
    api.id = "api6".into();
    api.prefix = "fd00:99::/64".parse().unwrap();
    api.pools = vec![Range6 {
        start: "fd00:99::100".parse().unwrap(),
        end: "fd00:99::1ff".parse().unwrap(),
    }];
    api.pd_pools = vec![];
    rt.block_on(a.ipam.add_subnet6(api)).unwrap();
    let has = |ipam: &Ipam| ipam.subnets6().iter().any(|s| s.id == "api6");
    wait_for("b sees api6", Duration::from_secs(10), || has(&b.ipam));
    let na = ia(2, 0, Ia6Kind::Na);
    let held = rt.block_on(
        b.ipam
            .ia6("api6", &na, Ia6Op::Commit, &[], None, SystemTime::now()),
    );
    match held.unwrap() {
        Ia6Result::Held(h) => assert!(h[0].prefix.addr().segments()[1] == 0x99, "{h:?}"),
        other => panic!("{other:?}"),
    }
    rt.block_on(b.ipam.delete_subnet6("api6")).unwrap();
    wait_for("a drops api6", Duration::from_secs(10), || !has(&a.ipam));
}
