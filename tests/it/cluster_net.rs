//! The cluster lab itself (cluster_lab.rs): two standalone nodes on one
//! bridge serving udhcpc and dhclient clients, each from its own pool, checked through
//! the client-side history; a node cut off etcd by one nftables rule and
//! healed; the node config with a `[cluster]` section.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::cluster_lab::{
    all_acked, start_clients, within, ClusterKeys, Lab, LabSpec, NodeOptions,
};
use crate::history::{check, now, History, Kind};
use crate::netns::require_root;

#[test]
fn lab_two_standalone_nodes_serve_real_clients_once_each() {
    if !require_root("lab_two_standalone_nodes_serve_real_clients_once_each") {
        return;
    }
    let lab = Lab::new(&LabSpec {
        nodes: 2,
        clients: 4,
        etcd: 0,
        relays: 0,
    });
    let pools = [
        (Ipv4Addr::new(10, 20, 0, 100), Ipv4Addr::new(10, 20, 0, 149)),
        (Ipv4Addr::new(10, 20, 0, 150), Ipv4Addr::new(10, 20, 0, 199)),
    ];
    for (i, pool) in pools.iter().enumerate() {
        let mut o = NodeOptions::standalone(0);
        o.direct_pool = *pool;
        lab.write_config(i, &o);
        lab.start_node(i);
    }
    // Two busybox udhcpc and two ISC dhclient.
    let clients = start_clients(&lab);
    let history = History::default();
    let read = |history: &History| {
        for (_, log) in &clients {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert_eq!(history.add_log(&text), 0, "{text}");
        }
    };
    let all_bound = within(Duration::from_secs(20), || all_acked(&clients));
    assert!(all_bound.is_some(), "not every client bound: {:?}", {
        read(&history);
        history.events()
    });
    // One renewal (udhcpc SIGUSR1): the same address from the same node.
    clients[0].0.signal("USR1");
    let renewed = within(Duration::from_secs(10), || {
        std::fs::read_to_string(&clients[0].1).is_ok_and(|t| t.matches(" ack ").count() >= 2)
    });
    assert!(renewed.is_some(), "no renewal");
    read(&history);
    let events = history.events();
    // Each ACK came from the node owning the pool the address is in.
    for e in &events {
        if let Kind::Ack { .. } = e.kind {
            let i = pools
                .iter()
                .position(|p| (p.0..=p.1).contains(&e.ip))
                .unwrap_or_else(|| panic!("{e:?} outside both pools"));
            assert_eq!(e.node, lab.nodes[i].ip.to_string(), "{e:?}");
        }
    }
    let dump_t = now();
    let mut dump = lab.dump(0);
    dump.extend(lab.dump(1));
    let report = check(&events, &dump, dump_t, 0.5);
    report.assert_ok();
    assert_eq!(report.clients, 4, "{events:?}");
    assert_eq!(report.open_at_dump, 4, "{report:?}");
    assert!(report.acks >= 5, "{events:?}");
}

#[test]
fn lab_partitions_one_node_from_etcd_and_heals() {
    if !require_root("lab_partitions_one_node_from_etcd_and_heals") {
        return;
    }
    let lab = Lab::new(&LabSpec {
        nodes: 2,
        clients: 0,
        etcd: 1,
        relays: 0,
    });
    let quick = Duration::from_millis(500);
    assert!(lab.reaches_etcd(0, 0, quick) && lab.reaches_etcd(1, 0, quick));
    let health = |i: usize| {
        let ep = lab.etcd_endpoints().join(",");
        lab.nodes[i]
            .ns
            .command("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &ep,
                "--dial-timeout=1s",
                "--command-timeout=1s",
            ])
            .args(["endpoint", "health"])
            .output()
            .expect("etcdctl")
            .status
            .success()
    };
    assert!(health(0), "etcd not healthy from node 0");
    // A watch node 0 holds open: the partition cuts connections already
    // open too, both ways (no event comes in), and healing resumes it.
    let seen = lab.dir.path().join("watch.out");
    let ep = lab.etcd_endpoints().join(",");
    let watch = lab.nodes[0]
        .ns
        .command("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &ep, "watch", "/c20n/w"])
        .stdout(std::fs::File::create(&seen).expect("watch out"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let _watch = crate::netns::Proc { child: Some(watch) };
    let watched = |v: &str| std::fs::read_to_string(&seen).is_ok_and(|t| t.contains(v));
    let put = |v: &str| assert!(lab.etcd().put("/c20n/w", v), "put {v}");
    // The watch may start after the first puts: put until one is seen.
    let mut n = 0;
    let started = within(Duration::from_secs(5), || {
        n += 1;
        put(&format!("before{n}"));
        watched("before")
    });
    assert!(started.is_some(), "the watch saw nothing");
    lab.partition(0);
    assert!(lab.partitioned(0));
    assert!(
        !lab.reaches_etcd(0, 0, quick),
        "partitioned node 0 still reaches etcd"
    );
    assert!(!health(0), "etcdctl answered through the partition");
    assert!(lab.reaches_etcd(1, 0, quick), "node 1 lost etcd too");
    assert!(health(1));
    put("during");
    std::thread::sleep(Duration::from_secs(1));
    assert!(!watched("during"), "an event crossed the partition");
    lab.heal(0);
    let resumed = within(Duration::from_secs(10), || watched("during"));
    assert!(resumed.is_some(), "the watch did not resume after healing");
    eprintln!("watch resumed {resumed:?} after healing");
    assert!(!lab.partitioned(0));
    assert!(
        lab.reaches_etcd(0, 0, quick),
        "healed node 0 does not reach etcd"
    );
    assert!(health(0));
}

/// The cluster config is the shipped one plus `[cluster]`: without the
/// section the binary accepts it; with it, a binary without the cluster
/// either accepts it or refuses exactly that section (exit 64).
#[test]
fn lab_node_config_carries_the_cluster_section() {
    if !require_root("lab_node_config_carries_the_cluster_section") {
        return;
    }
    let lab = Lab::new(&LabSpec {
        nodes: 1,
        clients: 0,
        etcd: 0,
        relays: 2,
    });
    let check = |o: &NodeOptions| {
        let path = lab.write_config(0, o);
        let out = crate::support::vpcbox(&["check", "--config", path.to_str().expect("utf-8")]);
        let text = std::fs::read_to_string(&path).expect("config");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            text,
        )
    };
    let (code, err, _) = check(&NodeOptions::standalone(2));
    assert_eq!(code, Some(0), "{err}");
    let mut o = NodeOptions::standalone(2);
    o.cluster = Some(ClusterKeys::new("n0", vec!["http://10.20.0.2:2379".into()]));
    let (code, err, text) = check(&o);
    let table: toml::Table = text.parse().expect("toml");
    let c = &table["cluster"];
    assert_eq!(c["node"].as_str(), Some("n0"));
    assert_eq!(c["etcd"][0].as_str(), Some("http://10.20.0.2:2379"));
    assert_eq!(c["block_size"].as_integer(), Some(16));
    assert!(c["prefix"].as_str().is_some_and(|p| p.starts_with('/')));
    assert!(c["lease_ttl"].as_str().is_some());
    assert!(
        code == Some(0) || (code == Some(64) && err.contains("cluster")),
        "exit {code:?}: {err}"
    );
}

/// The cluster target (issue 20): three nodes sharing one pool through
/// etcd serve udhcpc and dhclient clients, each exactly one lease, no
/// address twice; a client keeps its address when its node is killed.
/// Runs once the `[cluster]` section exists.
#[test]
fn lab_three_cluster_nodes_serve_real_clients_from_one_pool() {
    if !require_root("lab_three_cluster_nodes_serve_real_clients_from_one_pool") {
        return;
    }
    let lab = Lab::new(&LabSpec {
        nodes: 3,
        clients: 4,
        etcd: 3,
        relays: 0,
    });
    let keys = ClusterKeys::new("n0", lab.etcd_endpoints());
    for i in 0..3 {
        let mut o = NodeOptions::standalone(0);
        o.lease_time = "20s".into();
        o.cluster = Some(ClusterKeys {
            node: format!("n{i}"),
            ..keys.clone()
        });
        lab.write_config(i, &o);
        lab.start_node(i);
    }
    let clients = start_clients(&lab);
    let logs = |history: &History| {
        for (_, log) in &clients {
            history.add_log(&std::fs::read_to_string(log).unwrap_or_default());
        }
    };
    let all_bound = within(Duration::from_secs(30), || all_acked(&clients));
    assert!(all_bound.is_some(), "not every client bound");
    let first = History::default();
    logs(&first);
    other_nodes_clients_dropped_early(&lab, &first);
    // Kill the node that answered client 0; it renews (T1 = 10 s) or
    // rebinds through a survivor, keeping its address.
    let c0 = crate::dhcp_client::key(lab.clients[0].mac);
    let node = first
        .events()
        .into_iter()
        .find(|e| e.client == c0 && matches!(e.kind, Kind::Ack { .. }))
        .expect("client 0 acked")
        .node;
    let victim = lab
        .nodes
        .iter()
        .position(|n| n.ip.to_string() == node)
        .expect("a node answered");
    lab.kill_node(victim);
    let acks = |t: &str| t.matches(" ack ").count();
    let kept = within(Duration::from_secs(30), || {
        std::fs::read_to_string(&clients[0].1).is_ok_and(|t| acks(&t) >= 2)
    });
    assert!(kept.is_some(), "client 0 not renewed after its node died");
    let history = History::default();
    logs(&history);
    let survivor = (victim + 1) % 3;
    let dump_t = now();
    let report = check(&history.events(), &lab.dump(survivor), dump_t, 0.5);
    report.assert_ok();
    assert_eq!(report.clients, 4);
}

/// Every node hears every client: one it does not answer is dropped on a
/// hash of its key and counted as `other_node`, but never enters its client
/// table (where it would push out the node's own clients).
fn other_nodes_clients_dropped_early(lab: &Lab, history: &History) {
    let acked: Vec<String> = history
        .events()
        .into_iter()
        .filter(|e| matches!(e.kind, Kind::Ack { .. }))
        .map(|e| e.client)
        .collect();
    let dropped = |i: usize| {
        let (_, text) = lab.api(i, "GET", "/metrics", "");
        text.lines()
            .filter(|l| l.starts_with("vpcbox_client_drops_total{reason=\"other_node\"}"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let counted = within(Duration::from_secs(10), || {
        (0..3).map(dropped).sum::<f64>() > 0.0
    });
    assert!(counted.is_some(), "no node counted another node's client");
    // The table is published a few times a second.
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..3 {
        let (code, body) = lab.api(i, "GET", "/v1/clients", "");
        assert_eq!(code, 200, "clients of node {i}: {body}");
        let page: serde_json::Value = serde_json::from_str(&body).expect("clients json");
        for row in page["clients"].as_array().expect("rows") {
            // Past the "others" row and the API's own callers (token:, ip:).
            let Some(client) = row["client"].as_str().filter(|c| c.starts_with("mac:")) else {
                continue;
            };
            assert!(acked.iter().any(|c| c == client), "node {i} lists {row}");
            assert!(
                row["drops_by_reason"].get("other_node").is_none(),
                "node {i} counts another node's client in its table: {row}"
            );
        }
    }
}
