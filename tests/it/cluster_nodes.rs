//! Cluster operations on loopback (real `vpcbox` processes, a real etcd):
//! nodes started at the same instant, the API while etcd is down, and a
//! node whose clients outgrow one block.
#![cfg(feature = "cluster")]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::cluster_ops::{blocks_of, node_config, status, text, TOKEN};
use crate::etcd::Etcd;
use crate::netns::tag;
use crate::support::{eventually, Running};

/// A prefix no other test uses.
fn prefix() -> String {
    format!("/vpcbox-test/nodes{}", tag())
}

/// One API call with curl: (status, headers, body).
fn call(http: u16, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "-m", "10", "-X", method, "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .args(["-H", "Content-Type: application/json", "-d", body])
        .arg(format!("http://127.0.0.1:{http}{path}"))
        .output()
        .expect("curl");
    let all = text(&out.stdout);
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_ascii_lowercase(), body.to_owned())
}

fn allocate(http: u16, client: &str) -> (u16, String, String) {
    let body = format!("{{\"client\":\"{client}\"}}");
    call(http, "POST", "/v1/subnets/lab/allocations", &body)
}

/// Three nodes started at the same instant against an empty cluster all
/// store the config's subnet and reservation at once: every node becomes
/// ready (the losers of the race find the same values stored), and each
/// registers and claims a block. Each publishes its rates, which `cluster
/// status` shows per node.
#[test]
fn three_nodes_started_at_once_all_become_ready() {
    let etcd = Etcd::start(1);
    let prefix = prefix();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let cfgs: Vec<(PathBuf, u16)> = ["a", "b", "c"]
        .iter()
        .zip(&dirs)
        .map(|(name, d)| node_config(d.path(), &etcd, name, &prefix, "10s"))
        .collect();
    let mut nodes: Vec<Running> = cfgs.iter().map(|(c, _)| Running::start(c)).collect();
    for (n, (_, http)) in nodes.iter_mut().zip(&cfgs) {
        n.wait_ready(*http);
    }
    let all = eventually(Duration::from_secs(20), || {
        let s = status(&cfgs[0].0);
        ["a", "b", "c"].iter().all(|n| blocks_of(&s, n) >= 1)
    });
    assert!(all, "{}", status(&cfgs[0].0));
    for n in &mut nodes {
        assert!(n.child.try_wait().unwrap().is_none(), "a node exited");
    }
    // Each node publishes its rates in its node key: b's API is busy.
    let rate = |s: &Value, name: &str| {
        let n = s["nodes"].as_array()?.iter().find(|n| n["name"] == name)?;
        n["rates"]["api_requests_per_s"].as_f64()
    };
    let busy = eventually(Duration::from_secs(20), || {
        for _ in 0..10 {
            call(cfgs[1].1, "GET", "/v1/subnets", "");
        }
        let s = status(&cfgs[0].0);
        rate(&s, "b").is_some_and(|r| r > 0.0) && rate(&s, "c") == Some(0.0)
    });
    assert!(busy, "{}", status(&cfgs[0].0));
    let out = crate::cluster_ops::run(&["cluster", "status"], &cfgs[0].0);
    assert!(
        text(&out.stdout).contains(" api req/s"),
        "{}",
        text(&out.stdout)
    );
    // The /ui page's updates carry the same per node, from a's own copy.
    let mut last = String::new();
    let shown = eventually(Duration::from_secs(20), || {
        last = stream(cfgs[0].1);
        let u = last.lines().rev().find_map(|l| l.strip_prefix("data: "));
        let v: Value = u
            .and_then(|u| serde_json::from_str(u).ok())
            .unwrap_or_default();
        let nodes = v["cluster"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        v["cluster"]["fenced"].is_null()
            && nodes.len() == 3
            && nodes.iter().all(|n| n["blocks"].as_u64() >= Some(1))
            && nodes.iter().all(|n| n["dhcp_acks_per_s"].is_number())
            && nodes.iter().any(|n| n["this"] == true && n["name"] == "a")
    });
    assert!(shown, "{last}");
    // And the page draws them: one row per node, this one marked.
    let mut b = crate::browser::Browser::start(1200, 900);
    b.navigate(&format!("http://127.0.0.1:{}/ui", cfgs[0].1));
    let drawn = "!document.getElementById('cluster-section').hidden \
        && document.querySelectorAll('#cluster tbody tr').length === 3 \
        && document.querySelector('#cluster tbody').innerText.includes('a (this node)')";
    assert!(
        b.wait_for(drawn, Duration::from_secs(20)),
        "{}",
        b.eval("document.getElementById('cluster-section').outerHTML")
    );
}

/// About two seconds of `/v1/events/stream` from a node.
fn stream(http: u16) -> String {
    let out = Command::new("curl")
        .args(["-sN", "-m", "2", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg(format!("http://127.0.0.1:{http}/v1/events/stream"))
        .output()
        .expect("curl");
    text(&out.stdout)
}

/// With etcd down, an API write fails with 503, a JSON error naming the
/// cluster or etcd, and `Retry-After`; first while the node still holds
/// its lease (the etcd call fails), then fenced; an isolation too. Once
/// etcd is back the same call succeeds, without a restart.
#[test]
fn api_writes_answer_503_cluster_while_etcd_is_down() {
    let mut etcd = Etcd::start(1);
    let d = tempfile::tempdir().unwrap();
    let (cfg, http) = node_config(d.path(), &etcd, "a", &prefix(), "6s");
    let mut node = Running::start(&cfg);
    node.wait_ready(http);
    let (code, _, body) = allocate(http, "mac:02:00:00:00:05:01");
    assert_eq!(code, 201, "{body}");

    etcd.kill(0);
    let unavailable = |code: u16, head: &str, body: &str| {
        let v: Value = serde_json::from_str(body).unwrap_or_default();
        let (c, m) = (&v["error"]["code"], v["error"]["message"].as_str());
        code == 503
            && head.contains("retry-after: 1")
            && ["cluster", "cluster_conflict", "degraded"].contains(&c.as_str().unwrap_or(""))
            && m.is_some_and(|m| m.contains("etcd") || m.contains("cluster"))
    };
    // Before the fence: the write reaches for etcd and fails.
    let (code, head, body) = allocate(http, "mac:02:00:00:00:05:02");
    assert!(unavailable(code, &head, &body), "{code} {head} {body}");
    let fenced = eventually(Duration::from_secs(15), || {
        call(http, "GET", "/readyz", "").2.contains("\"cluster\"")
    });
    assert!(fenced, "{:?}", call(http, "GET", "/readyz", ""));
    let (code, head, body) = allocate(http, "mac:02:00:00:00:05:03");
    assert!(unavailable(code, &head, &body), "{code} {head} {body}");
    assert!(!body.contains("\"storage\""), "{body}");
    // An isolation is stored in etcd too: the same 503.
    let isolate = "{\"client\":\"mac:02:00:00:00:05:04\"}";
    let (code, head, body) = call(http, "POST", "/v1/isolations", isolate);
    assert!(unavailable(code, &head, &body), "{code} {head} {body}");

    etcd.restart(0);
    let back = eventually(Duration::from_secs(60), || {
        allocate(http, "mac:02:00:00:00:05:03").0 == 201
    });
    if !back {
        let last = allocate(http, "mac:02:00:00:00:05:03");
        node.signal("KILL");
        panic!("{last:?}\n{}", node.stderr());
    }
    assert!(node.child.try_wait().unwrap().is_none(), "the node exited");
}

/// Blocks of 16: a node with 40 clients holds at least three blocks,
/// claimed as its free addresses ran low, and every client has its own
/// address inside them.
#[test]
fn a_node_claims_more_blocks_as_its_clients_fill_them() {
    let etcd = Etcd::start(1);
    let d = tempfile::tempdir().unwrap();
    let (cfg, http) = node_config(d.path(), &etcd, "a", &prefix(), "10s");
    let mut node = Running::start(&cfg);
    node.wait_ready(http);
    let mut ips = BTreeSet::new();
    for i in 0..40 {
        let client = format!("mac:02:00:00:00:06:{i:02x}");
        let (code, _, body) = allocate(http, &client);
        assert_eq!(code, 201, "client {i}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        ips.insert(v["ip"].as_str().unwrap().to_owned());
    }
    assert_eq!(ips.len(), 40, "{ips:?}");
    let s = status(&cfg);
    assert!(blocks_of(&s, "a") >= 3, "{s}");
    let bound = s["nodes"][0]["blocks"]["lab"]["bound"].as_u64();
    assert_eq!(bound, Some(40), "{s}");
}
