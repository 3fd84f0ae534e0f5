//! `vpcbox cluster status|leave|migrate` and `vpcbox db export|import` with
//! a `[cluster]` section: real `vpcbox` processes against a real etcd.
#![cfg(feature = "cluster")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::etcd::Etcd;
use crate::support::{bin, eventually, write_config, write_token, Running};

const SUBNET: &str = r#"
[[subnet]]
id = "lab"
cidr = "10.0.0.0/24"
pools = ["10.0.0.100-10.0.0.199"]
gateway = "10.0.0.1"

[[reservation]]
subnet = "lab"
client = "mac:02:00:00:00:00:10"
ip = "10.0.0.10"
"#;

pub const TOKEN: &str = "cluster-ops-token";

/// A node's config in `dir`: the lab subnet, node `name` of the cluster
/// under `prefix`. Returns the config and the gateway's port.
pub fn node_config(dir: &Path, etcd: &Etcd, name: &str, prefix: &str, ttl: &str) -> (PathBuf, u16) {
    let endpoints: Vec<String> = etcd
        .endpoints()
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect();
    let cluster = format!(
        "\n[cluster]\nnode = \"{name}\"\netcd = [{}]\nprefix = \"{prefix}\"\nlease_ttl = \"{ttl}\"\nblock_size = 16\n",
        endpoints.join(", ")
    );
    let (cfg, _, http) = write_config(dir, &format!("{SUBNET}{cluster}"));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    write_token(&dir.join("data/admin.token"), TOKEN);
    (cfg, http)
}

pub fn run(args: &[&str], cfg: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .expect("run vpcbox")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn status(cfg: &Path) -> Value {
    let out = run(&["cluster", "status", "--json"], cfg);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Allocates an address for `client` through a node's API.
pub fn allocate(http: u16, client: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .args(["-d", &format!("{{\"client\":\"{client}\"}}")])
        .arg(format!(
            "http://127.0.0.1:{http}/v1/subnets/lab/allocations"
        ))
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// The status code and body of a GET on a node's gateway.
pub fn get(http: u16, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{http}{path}"))
        .output()
        .expect("curl");
    text(&out.stdout)
}

/// The blocks a node holds in `lab`, as `cluster status` reports them.
pub fn blocks_of(s: &Value, node: &str) -> u64 {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .map_or(0, |n| n["blocks"]["lab"]["blocks"].as_u64().unwrap_or(0))
}

/// Node a, then (once a holds a block) node b (nodes started at the same
/// instant: cluster_nodes.rs).
fn start_two(ca: &Path, cb: &Path) -> (Running, Running) {
    let a = Running::start(ca);
    assert!(eventually(Duration::from_secs(20), || blocks_of(
        &status(ca),
        "a"
    ) >= 1));
    let b = Running::start(cb);
    let both = eventually(Duration::from_secs(20), || {
        let s = status(ca);
        blocks_of(&s, "a") >= 1 && blocks_of(&s, "b") >= 1
    });
    assert!(both, "{}", status(ca));
    (a, b)
}

/// Two nodes running: status lists both, healthy with their lease TTL, each
/// with its blocks and the addresses leased in them; the etcd endpoint is
/// healthy and the leader. Text output names the same. `/metrics` counts
/// the nodes; with etcd gone the node is fenced (`/readyz` 503 `cluster`,
/// `vpcbox_cluster_fenced 1`) and status exits 69.
#[test]
fn status_shows_two_registered_nodes_their_blocks_and_leases() {
    let mut etcd = Etcd::start(1);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca, http_a) = node_config(da.path(), &etcd, "a", "/vpcbox/st", "10s");
    let (cb, _) = node_config(db.path(), &etcd, "b", "/vpcbox/st", "10s");
    let (_a, _b) = start_two(&ca, &cb);
    let lease = allocate(http_a, "mac:02:00:00:00:01:01");
    assert_eq!(lease["state"], "bound", "{lease}");

    let s = status(&cb);
    assert_eq!(s["prefix"], "/vpcbox/st");
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{s}");
    for n in nodes {
        let ttl = n["ttl_left"].as_i64().unwrap();
        assert!((1..=10).contains(&ttl), "{n}");
        assert_eq!(n["granted_ttl"], 10);
    }
    let a = nodes.iter().find(|n| n["name"] == "a").unwrap();
    assert_eq!(
        a["blocks"]["lab"]["bound"], 1,
        "the allocation is in a's block: {s}"
    );
    assert_eq!(s["leases"]["bound"], 1);
    assert_eq!(s["reservations"], 1);
    assert_eq!(s["subnets"], serde_json::json!(["lab"]));
    let ep = &s["endpoints"][0];
    assert_eq!(
        (ep["healthy"].as_bool(), ep["leader"].as_bool()),
        (Some(true), Some(true)),
        "{ep}"
    );

    let out = run(&["cluster", "status"], &ca);
    let t = text(&out.stdout);
    assert!(
        t.contains("nodes (2):") && t.contains("  a ") && t.contains("  b "),
        "{t}"
    );
    assert!(t.contains("lab: ") && t.contains("leader"), "{t}");

    // Snapshots are published a few times a second: the gauges follow.
    let counted = eventually(Duration::from_secs(5), || {
        let m = get(http_a, "/metrics");
        m.contains("vpcbox_cluster_nodes 2") && m.contains("vpcbox_cluster_fenced 0")
    });
    assert!(counted, "{}", get(http_a, "/metrics"));
    assert!(get(http_a, "/readyz").contains("200"));

    etcd.kill(0);
    // Node a fences itself within its TTL and says so.
    let fenced = eventually(Duration::from_secs(12), || {
        let r = get(http_a, "/readyz");
        r.contains("503") && r.contains("\"cluster\"")
    });
    assert!(fenced, "{}", get(http_a, "/readyz"));
    let fenced_metric = eventually(Duration::from_secs(5), || {
        get(http_a, "/metrics").contains("vpcbox_cluster_fenced 1")
    });
    assert!(fenced_metric);
    let t0 = Instant::now();
    let out = run(&["cluster", "status"], &ca);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cluster.etcd"),
        "{}",
        text(&out.stderr)
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
}

/// A running node is not made to leave behind its back (its lease is
/// renewed: exit 64). Killed with -9, its lease would live on for the TTL;
/// `cluster leave` revokes it at once: its registration and blocks are gone
/// and the other node claims what it needs.
#[test]
fn leave_gives_a_killed_nodes_blocks_back_at_once() {
    let mut etcd = Etcd::start(1);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca, _) = node_config(da.path(), &etcd, "a", "/vpcbox/lv", "20s");
    let (cb, _) = node_config(db.path(), &etcd, "b", "/vpcbox/lv", "20s");
    let (mut a, _b) = start_two(&ca, &cb);

    let out = run(&["cluster", "leave"], &ca);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is running"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        blocks_of(&status(&ca), "a") >= 1,
        "a running node keeps its blocks"
    );

    a.signal("KILL");
    a.wait(Duration::from_secs(5));
    let killed = Instant::now();
    let out = run(&["cluster", "leave"], &ca);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("left the cluster"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        killed.elapsed() < Duration::from_secs(15),
        "well before the 20 s TTL"
    );
    assert_eq!(etcd.get("/vpcbox/lv/nodes/a"), None);
    let s = status(&cb);
    assert_eq!(s["nodes"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["orphan_blocks"], 0, "{s}");
    let blocks = etcd.etcdctl(&[
        "get",
        "/vpcbox/lv/blocks/",
        "--prefix",
        "--print-value-only",
    ]);
    let blocks = text(&blocks.stdout);
    assert!(
        !blocks.contains("\"a\"") && blocks.contains("\"b\""),
        "{blocks}"
    );

    let again = run(&["cluster", "leave"], &ca);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again.stdout).contains("not registered"),
        "{}",
        text(&again.stdout)
    );
}

/// `db export` from a running cluster, `db import` into a fresh prefix (no
/// node there), `db export` of that: the same document. Importing again is
/// refused (the prefix holds data; nothing is overwritten), so is --force.
#[test]
fn export_import_round_trips_into_a_fresh_prefix() {
    let etcd = Etcd::start(1);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca, http) = node_config(da.path(), &etcd, "a", "/vpcbox/one", "10s");
    let (cb, _) = node_config(db.path(), &etcd, "b", "/vpcbox/two", "10s");
    let _a = Running::start(&ca);
    assert!(eventually(Duration::from_secs(20), || blocks_of(
        &status(&ca),
        "a"
    ) >= 1));
    for i in 1..=3 {
        assert_eq!(
            allocate(http, &format!("mac:02:00:00:00:02:0{i}"))["state"],
            "bound"
        );
    }
    let out = run(&["db", "export"], &ca);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dump = text(&out.stdout);
    assert_eq!(dump.matches("\"state\": \"bound\"").count(), 3, "{dump}");
    let file = da.path().join("dump.json");
    std::fs::write(&file, &dump).unwrap();
    let file = file.to_str().unwrap();

    let out = run(&["db", "import", file], &cb);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let again = run(&["db", "export"], &cb);
    assert_eq!(text(&again.stdout), dump);
    let bindings = etcd_keys(&etcd, "/vpcbox/two/bindings/");
    assert_eq!(bindings.len(), 3, "{bindings:?}");

    let twice = run(&["db", "import", file], &cb);
    assert_eq!(twice.status.code(), Some(64));
    assert!(
        text(&twice.stderr).contains("not empty"),
        "{}",
        text(&twice.stderr)
    );
    let forced = run(&["db", "import", "--force", file], &cb);
    assert_eq!(forced.status.code(), Some(64));
    assert_eq!(text(&run(&["db", "export"], &cb).stdout), dump);
}

fn etcd_keys(etcd: &Etcd, prefix: &str) -> Vec<String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", etcd.endpoints().join(",")))
        .args(["get", prefix, "--prefix", "--keys-only"])
        .output()
        .expect("etcdctl");
    text(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A single node's sled store with leases (bound and released) and a
/// reservation goes into the cluster with one command; the cluster then
/// exports the same document as the sled store; a second migrate is
/// refused (non-empty prefix), so are a directory that holds no store
/// and a config without `[cluster]` (exit 64).
#[test]
fn migrate_moves_a_sled_store_with_leases_and_reservations_into_the_cluster() {
    let etcd = Etcd::start(1);
    let (single, dc) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (cs, _, _) = write_config(single.path(), "");
    let valid = crate::support::repo().join("tests/dumps/valid.json");
    let out = run(&["db", "import", valid.to_str().unwrap()], &cs);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let before = text(&run(&["db", "export"], &cs).stdout);
    assert!(
        before.contains("\"released\"") && before.contains("mac:02:00:00:00:00:aa"),
        "{before}"
    );

    let no_cluster = run(&["cluster", "status"], &cs);
    assert_eq!(no_cluster.status.code(), Some(64));
    assert!(text(&no_cluster.stderr).contains("no [cluster] section"));

    let (cc, _) = node_config(dc.path(), &etcd, "a", "/vpcbox/mig", "10s");
    let not_data = Command::new(bin())
        .args(["cluster", "migrate", "--from"])
        .arg(dc.path())
        .arg("--config")
        .arg(&cc)
        .output()
        .unwrap();
    assert_eq!(
        not_data.status.code(),
        Some(64),
        "{}",
        text(&not_data.stderr)
    );
    let data = single.path().join("data");
    let out = Command::new(bin())
        .args(["cluster", "migrate", "--from"])
        .arg(&data)
        .arg("--config")
        .arg(&cc)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let after = run(&["db", "export"], &cc);
    assert_eq!(text(&after.stdout), before);
    // The bound lease has its client's binding (what keeps it unique).
    assert_eq!(
        etcd_keys(&etcd, "/vpcbox/mig/bindings/"),
        ["/vpcbox/mig/bindings/mac:02:00:00:00:00:01"]
    );

    let twice = Command::new(bin())
        .args(["cluster", "migrate", "--from"])
        .arg(&data)
        .arg("--config")
        .arg(&cc)
        .output()
        .unwrap();
    assert_eq!(twice.status.code(), Some(64), "{}", text(&twice.stderr));
    assert!(
        text(&twice.stderr).contains("not empty"),
        "{}",
        text(&twice.stderr)
    );
}

/// `vpcbox run` with its dashboard in tmux, on a tmux server of its own;
/// the vpcbox (the pane's process) is killed on drop.
struct Dashboard {
    socket: PathBuf,
}

impl Dashboard {
    fn start(dir: &Path, cfg: &Path) -> Self {
        let socket = dir.join("tmux.sock");
        let cmd = format!("{} run --config {}", bin().display(), cfg.display());
        let ok = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args([
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "40",
                "-s",
                "ops",
                &cmd,
            ])
            .status()
            .expect("tmux (scripts/test installs it)");
        assert!(ok.success());
        Self { socket }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        text(&out.stdout)
    }

    fn wait_for(&self, what: &str) -> bool {
        eventually(Duration::from_secs(15), || {
            self.tmux(&["capture-pane", "-p", "-t", "ops"])
                .contains(what)
        })
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let pid = self.tmux(&["display-message", "-p", "-t", "ops", "#{pane_pid}"]);
        if !pid.trim().is_empty() {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        self.tmux(&["kill-server"]);
    }
}

/// The dashboard of a cluster node shows the cluster in its header: the
/// nodes and their blocks while it may write, and "fenced" once etcd is
/// gone (within its TTL).
#[test]
fn the_dashboard_shows_the_nodes_their_blocks_and_the_fence() {
    let mut etcd = Etcd::start(1);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ca, _) = node_config(da.path(), &etcd, "a", "/vpcbox/ui", "4s");
    let (cb, _) = node_config(db.path(), &etcd, "b", "/vpcbox/ui", "4s");
    let _b = Running::start(&cb);
    assert!(eventually(Duration::from_secs(20), || blocks_of(
        &status(&cb),
        "b"
    ) >= 1));
    let ui = Dashboard::start(da.path(), &ca);
    // Each node's rates show once it has published them (every 2 s).
    for line in [
        "cluster node a │ writing │ 2 nodes: a 1 blk",
        "· b 1 blk 0 ack/s 0 api/s",
    ] {
        assert!(
            ui.wait_for(line),
            "{}",
            ui.tmux(&["capture-pane", "-p", "-t", "ops"])
        );
    }
    etcd.kill(0);
    assert!(
        ui.wait_for("cluster node a │ fenced: not writing"),
        "{}",
        ui.tmux(&["capture-pane", "-p", "-t", "ops"])
    );
}
