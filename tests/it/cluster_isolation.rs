//! An isolation made through one node's API applies on every node: node
//! b drops the client's DHCP once a's write reaches it through etcd's
//! watch. Times each propagation; `VPCBOX_ISOLATION_TRIES` (default 3)
//! sets how many clients, and the figures go to bench/RESULTS-cluster.md.
#![cfg(feature = "cluster")]

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::cluster_lab::{http, relay_ip, ClusterKeys, Lab, LabSpec, NodeOptions, API_PORT};
use crate::dhcp_client::{key, Relay};
use crate::netns::require_root;

/// One client: (API call on a → b lists it, a answered → b lists it).
type Delay = (Duration, Duration);

/// The propagation of one isolation: finds a MAC node b answers, isolates
/// it on node a, polls b until b lists it, then checks b drops its
/// DISCOVER.
fn one(relay: &mut Relay, a: SocketAddr, b: SocketAddr, i: usize) -> Delay {
    let mac = (0u16..512)
        .map(|n| {
            let [hi, lo] = n.to_be_bytes();
            [2, 0xc3, i as u8, hi, lo, 1]
        })
        .find(|mac| relay.discover(*mac).is_some())
        .expect("node b answers some client");
    let client = key(mac);
    let t0 = Instant::now();
    let body = format!("{{\"client\":\"{client}\"}}");
    let (code, text) = http(a, "POST", "/v1/isolations", &body);
    assert_eq!(code, 201, "isolate on a: {text}");
    let t1 = Instant::now();
    let listed = loop {
        let (code, text) = http(b, "GET", "/v1/isolations", "");
        if code == 200 && text.contains(&client) {
            break Instant::now();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "b never listed {client}: {text}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        relay.discover(mac),
        None,
        "b still answers isolated {client}"
    );
    (listed - t0, listed - t1)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median and the maximum of `v`, in ms.
fn median_max(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort_unstable();
    (millis(v[v.len() / 2]), millis(v[v.len() - 1]))
}

/// Two cluster nodes; every isolation made on node a's API is applied by
/// node b (listed by its API, its DHCP dropped) well within a deadline.
#[test]
fn an_isolation_made_on_one_node_applies_on_the_other() {
    if !require_root("an_isolation_made_on_one_node_applies_on_the_other") {
        return;
    }
    let tries: usize = std::env::var("VPCBOX_ISOLATION_TRIES")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(3);
    let lab = Lab::new(&LabSpec {
        nodes: 2,
        clients: 0,
        etcd: 1,
        relays: 1,
    });
    let keys = ClusterKeys::new("n0", lab.etcd_endpoints());
    for i in 0..2 {
        let mut o = NodeOptions::standalone(1);
        o.cluster = Some(ClusterKeys {
            node: format!("n{i}"),
            ..keys.clone()
        });
        lab.write_config(i, &o);
        lab.start_node(i);
    }
    let (a, b) = (lab.nodes[0].ip, lab.nodes[1].ip);
    let delays: Vec<Delay> = lab
        .driver
        .thread(move || {
            let (a, b_api) = (
                SocketAddr::from((a, API_PORT)),
                SocketAddr::from((b, API_PORT)),
            );
            // Both nodes registered: b answers only the clients that hash to it.
            let deadline = Instant::now() + Duration::from_secs(20);
            while TcpStream::connect_timeout(&b_api, Duration::from_secs(1)).is_err() {
                assert!(Instant::now() < deadline, "b's API does not answer");
            }
            let b_dhcp = SocketAddr::from((b, 67));
            let mut relay = Relay::bind(relay_ip(0), vec![b_dhcp], Duration::from_millis(400));
            (0..tries).map(|i| one(&mut relay, a, b_api, i)).collect()
        })
        .join()
        .expect("driver thread");
    let (call, answered): (Vec<_>, Vec<_>) = delays.into_iter().unzip();
    let ((m0, x0), (m1, x1)) = (median_max(call), median_max(answered));
    println!(
        "isolation propagation over {tries} clients: from the API call on a: median {m0:.1} ms, \
         max {x0:.1} ms; from a's answer: median {m1:.1} ms, max {x1:.1} ms"
    );
}
