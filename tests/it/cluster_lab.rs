//! A multi-node DHCP lab for the cluster tests: one bridge in a hub
//! namespace; K server namespaces, each able to run one `vpcbox run
//! --headless` node; client namespaces for udhcpc; a driver namespace that
//! relays the Rust client's traffic (tests/common/dhcp_client.rs) and calls
//! the nodes' APIs; etcd (tests/common/etcd.rs) in the hub, on the bridge.
//!
//! ```text
//!                       ns hub: bridge br0 10.20.0.0/24, etcd on 10.20.0.2
//!   ┌──────────────┬────────────┴─┬──────────────────┬────────────────────┐
//!  ns n0 10.20.0.11  ns n1 .12 …   ns c0 (udhcpc) …    ns drv 10.20.0.5 + relays 10.21.0.1…
//!  vpcbox :67 + API :8080                               (giaddrs; subnet "relayed" 10.21.0.0/16)
//! ```
//!
//! Partitioning one node from etcd is one nftables rule in that node's
//! namespace (drop its packets to etcd's client ports); healing deletes it.
//! Every namespace is named `c20n-…` and removed on drop.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::cluster_config::{
    node_config, node_ip, relay_ip, ClusterKeys, NodeOptions, API_PORT,
};
use crate::etcd::{Etcd, EtcdOptions};
use crate::history::Dumped;
use crate::netns::{sh, tag, veth, Netns, Proc};

pub const ETCD_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);
pub const DRIVER_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 5);
pub const TOKEN: &str = "c20n-admin-token";
const PREFIX: &str = "c20n";

/// Each node's nftables table: packets in and out pass chain `etcd`, where
/// a partition is one rule. The counter rule turns conntrack on in the
/// namespace from the start, so that it knows who opened each connection.
const PARTITION_CHAINS: &str = "table inet c20n {
  chain etcd {
  }
  chain in {
    type filter hook input priority 0; policy accept;
    ct state established counter
    jump etcd
  }
  chain out {
    type filter hook output priority 0; policy accept;
    jump etcd
  }
}
";

/// The shape of a lab.
#[derive(Clone, Debug)]
pub struct LabSpec {
    pub nodes: usize,
    pub clients: usize,
    /// etcd members in the hub (0: none).
    pub etcd: usize,
    /// Relay addresses on the driver.
    pub relays: usize,
}

/// A server namespace; its vpcbox (if running) is killed before the
/// namespace goes (fields drop in order).
pub struct Node {
    proc: Mutex<Option<Proc>>,
    /// The handle of this node's partition rule, when partitioned.
    partition: Mutex<Option<String>>,
    pub ns: Netns,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
}

pub struct Client {
    pub ns: Netns,
    pub ifname: String,
    pub mac: [u8; 6],
}

impl Node {
    /// Node `i`'s namespace on the bridge, its route to the relays, its
    /// nftables chains, its dir with the admin token.
    fn new(hub: &Netns, dir: &Path, i: usize) -> Self {
        let ns = Netns::with_prefix(PREFIX);
        let ifname = attach(hub, &ns, Some(node_ip(i)));
        let via = DRIVER_IP.to_string();
        ns.ip(&["route", "add", "10.21.0.0/16", "via", &via]);
        let dir = dir.join(format!("n{i}"));
        std::fs::create_dir_all(dir.join("data")).expect("node dir");
        let rules = dir.join("partition.nft");
        std::fs::write(&rules, PARTITION_CHAINS).expect("nft rules");
        nft(&ns, &["-f", rules.to_str().expect("utf-8")]);
        crate::support::write_token(&dir.join("data/admin.token"), TOKEN);
        Self {
            ns,
            ifname,
            ip: node_ip(i),
            dir,
            proc: Mutex::new(None),
            partition: Mutex::new(None),
        }
    }
}

/// A veth from `ns` to the hub's bridge, with `ip`/24 on the inner end;
/// returns the inner end's name.
fn attach(hub: &Netns, ns: &Netns, ip: Option<Ipv4Addr>) -> String {
    let t = tag();
    let (inner, outer) = (format!("ci{t}"), format!("ch{t}"));
    veth(ns, &inner, hub, &outer);
    hub.ip(&["link", "set", &outer, "master", "br0"]);
    if let Some(ip) = ip {
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", &inner]);
    }
    inner
}

/// The lab; fields drop in order: etcd and nodes first, namespaces after.
pub struct Lab {
    pub etcd: Option<Mutex<Etcd>>,
    pub nodes: Vec<Node>,
    pub clients: Vec<Client>,
    pub driver: Netns,
    pub hub: Netns,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new(spec: &LabSpec) -> Self {
        let hub = Netns::with_prefix(PREFIX);
        hub.ip(&["link", "add", "br0", "type", "bridge"]);
        hub.ip(&["link", "set", "br0", "up"]);
        hub.ip(&["addr", "add", &format!("{ETCD_IP}/24"), "dev", "br0"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = (0..spec.nodes)
            .map(|i| Node::new(&hub, dir.path(), i))
            .collect();
        let clients = (0..spec.clients)
            .map(|i| {
                let ns = Netns::with_prefix(PREFIX);
                let ifname = attach(&hub, &ns, None);
                let mac = [2, 0xc2, 0, 0, 1, i as u8];
                ns.ip(&["link", "set", &ifname, "address", &mac_text(mac)]);
                Client { ns, ifname, mac }
            })
            .collect();
        let driver = Netns::with_prefix(PREFIX);
        let drv_if = attach(&hub, &driver, Some(DRIVER_IP));
        for r in 0..spec.relays {
            let relay = format!("{}/32", relay_ip(r));
            driver.ip(&["addr", "add", &relay, "dev", &drv_if]);
        }
        let etcd = (spec.etcd > 0).then(|| {
            Mutex::new(Etcd::start_with(EtcdOptions {
                members: spec.etcd,
                host: ETCD_IP.into(),
                netns: Some(hub.name.clone()),
            }))
        });
        Self {
            etcd,
            nodes,
            clients,
            driver,
            hub,
            dir,
        }
    }

    pub fn etcd(&self) -> std::sync::MutexGuard<'_, Etcd> {
        self.etcd
            .as_ref()
            .expect("a lab with etcd")
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// etcd's client endpoints (for a node's `[cluster] etcd`).
    pub fn etcd_endpoints(&self) -> Vec<String> {
        self.etcd().endpoints()
    }

    /// Writes node `i`'s config.toml; returns its path.
    pub fn write_config(&self, i: usize, opts: &NodeOptions) -> PathBuf {
        let n = &self.nodes[i];
        let text = node_config(&n.ifname, n.ip, &n.dir, opts);
        let path = self.nodes[i].dir.join("config.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Starts node `i` on its config.toml (stderr to `vpcbox.log` in its
    /// dir); waits until its API answers `/readyz`.
    pub fn start_node(&self, i: usize) {
        let n = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.join("vpcbox.log"))
            .expect("node log");
        let child =
            n.ns.command(crate::support::bin().to_str().expect("utf-8 path"))
                .args(["run", "--headless", "--config"])
                .arg(n.dir.join("config.toml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn vpcbox");
        *n.proc.lock().unwrap_or_else(|e| e.into_inner()) = Some(Proc { child: Some(child) });
        let ready = crate::support::eventually(Duration::from_secs(15), || {
            self.node_exited(i).is_none() && self.api(i, "GET", "/readyz", "").0 == 200
        });
        assert!(ready, "node {i} not ready: {}", self.node_log(i));
    }

    /// `kill -9` node `i` (and reap it).
    pub fn kill_node(&self, i: usize) {
        let p = self.nodes[i]
            .proc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(p); // Proc kills (SIGKILL) and reaps on drop
    }

    /// The exit code if node `i` ran and exited (None while it runs or never ran).
    pub fn node_exited(&self, i: usize) -> Option<i32> {
        let mut g = self.nodes[i].proc.lock().unwrap_or_else(|e| e.into_inner());
        let c = g.as_mut()?.child.as_mut()?;
        c.try_wait().ok().flatten().map(|s| s.code().unwrap_or(-1))
    }

    pub fn node_running(&self, i: usize) -> bool {
        let mut g = self.nodes[i].proc.lock().unwrap_or_else(|e| e.into_inner());
        g.as_mut()
            .and_then(|p| p.child.as_mut())
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn node_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("vpcbox.log")).unwrap_or_default()
    }

    /// One request to node `i`'s API, from the driver namespace.
    pub fn api(&self, i: usize, method: &str, path: &str, body: &str) -> (u16, String) {
        let (to, m, p, b) = (
            SocketAddr::from((self.nodes[i].ip, API_PORT)),
            method.to_owned(),
            path.to_owned(),
            body.to_owned(),
        );
        self.driver
            .thread(move || http(to, &m, &p, &b))
            .join()
            .expect("api thread")
    }

    /// Every lease node `i` stores (all pages of `/v1/leases`).
    pub fn dump(&self, i: usize) -> Vec<Dumped> {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let (code, body) = self.api(i, "GET", &format!("/v1/leases?limit=10000{cursor}"), "");
            assert_eq!(code, 200, "dump from node {i}: {body}");
            let page: serde_json::Value = serde_json::from_str(&body).expect("leases json");
            all.extend(Dumped::from_page(&page));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => return all,
            }
        }
    }

    /// Cuts node `i` off etcd: one rule dropping its traffic with etcd, both ways.
    pub fn partition(&self, i: usize) {
        let n = &self.nodes[i];
        let mut held = n.partition.lock().unwrap_or_else(|e| e.into_inner());
        assert!(held.is_none(), "node {i} is already partitioned");
        // Both directions of every connection the node opened to etcd's
        // address (conntrack's original tuple), and any new one. The address
        // serves etcd only (nft 1.0.6 cannot match `ct original proto-dst`).
        let rule = format!("ct original ip daddr {ETCD_IP} drop");
        let out = nft(
            &n.ns,
            &[
                "--echo", "--handle", "add", "rule", "inet", PREFIX, "etcd", &rule,
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let handle = text
            .split("# handle ")
            .nth(1)
            .and_then(|h| h.split_whitespace().next())
            .filter(|h| h.parse::<u64>().is_ok())
            .unwrap_or_else(|| panic!("no rule handle in: {text}"))
            .to_owned();
        *held = Some(handle);
    }

    /// Deletes node `i`'s partition rule.
    pub fn heal(&self, i: usize) {
        let n = &self.nodes[i];
        if let Some(h) = n.partition.lock().unwrap_or_else(|e| e.into_inner()).take() {
            nft(
                &n.ns,
                &["delete", "rule", "inet", PREFIX, "etcd", "handle", &h],
            );
        }
    }

    pub fn partitioned(&self, i: usize) -> bool {
        self.nodes[i]
            .partition
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether a TCP connection from node `i`'s namespace to etcd member
    /// `m`'s client port opens within `limit`.
    pub fn reaches_etcd(&self, i: usize, m: usize, limit: Duration) -> bool {
        let to = SocketAddr::from((ETCD_IP, self.etcd().client_ports()[m]));
        self.nodes[i]
            .ns
            .thread(move || TcpStream::connect_timeout(&to, limit).is_ok())
            .join()
            .expect("connect thread")
    }

    /// Starts busybox udhcpc for client `c`: its hook script appends history
    /// lines (tests/common/history.rs `parse_line`) to the returned log.
    pub fn udhcpc(&self, c: usize) -> (Proc, PathBuf) {
        let cl = &self.clients[c];
        let (script, log) = hook_script(
            self.dir.path(),
            "udhcpc",
            c,
            &crate::dhcp_client::key(cl.mac),
        );
        let p = cl.ns.spawn(
            "udhcpc",
            &[
                "-f",
                "-i",
                &cl.ifname,
                "-s",
                script.to_str().expect("utf-8"),
                "-t",
                "5",
                "-T",
                "1",
                "-A",
                "1",
            ],
        );
        (p, log)
    }

    /// Starts ISC dhclient (foreground) for client `c`, with a hook script
    /// like udhcpc's; its lease file lives in the lab's dir.
    pub fn dhclient(&self, c: usize) -> (Proc, PathBuf) {
        let cl = &self.clients[c];
        let key = crate::dhcp_client::key(cl.mac);
        let (script, log) = hook_script(self.dir.path(), "dhclient", c, &key);
        let dir = self.dir.path();
        let (lf, pf) = (
            dir.join(format!("dhclient{c}.leases")),
            dir.join(format!("dhclient{c}.pid")),
        );
        let utf8 = |p: &Path| p.to_str().expect("utf-8").to_owned();
        let p = cl.ns.spawn(
            "dhclient",
            &[
                "-4",
                "-d",
                "-v",
                "-lf",
                &utf8(&lf),
                "-pf",
                &utf8(&pf),
                "-sf",
                &utf8(&script),
                &cl.ifname,
            ],
        );
        (p, log)
    }
}

/// Starts a real client on every client slot: busybox udhcpc on the first
/// two, ISC dhclient on the rest; each with its history log.
pub fn start_clients(lab: &Lab) -> Vec<(Proc, PathBuf)> {
    (0..lab.clients.len())
        .map(|c| {
            if c < 2 {
                lab.udhcpc(c)
            } else {
                lab.dhclient(c)
            }
        })
        .collect()
}

/// Whether every client's log holds an ACK.
pub fn all_acked(clients: &[(Proc, PathBuf)]) -> bool {
    clients
        .iter()
        .all(|(_, log)| std::fs::read_to_string(log).is_ok_and(|t| t.contains(" ack ")))
}

/// The hook script of client `c` for `tool` (udhcpc or dhclient): it
/// appends history lines to its log (`ack` on a binding or renewal, `nak`
/// for the address it held, `release` when it stops using an address) and
/// configures the address, so that renewals go out unicast.
fn hook_script(dir: &Path, tool: &str, c: usize, client: &str) -> (PathBuf, PathBuf) {
    let (path, log, held) = (
        dir.join(format!("{tool}{c}.sh")),
        dir.join(format!("{tool}{c}.log")),
        dir.join(format!("{tool}{c}.held")),
    );
    let (log, held) = (log.display().to_string(), held.display().to_string());
    let ack = |ip: &str, lease: &str, server: &str| {
        format!(
            "echo \"$t ${{{server}:--}} {client} ack ${ip} ${{{lease}:-0}}\" >> {log}\n    \
             echo \"${ip}\" > {held}\n    \
             ip addr flush dev \"$interface\"; ip addr add \"${ip}/24\" dev \"$interface\""
        )
    };
    let stop = format!(
        "[ -s {held} ] && echo \"$t - {client} release $(cat {held})\" >> {log}\n    \
         : > {held}\n    ip addr flush dev \"$interface\""
    );
    let cases = match tool {
        "udhcpc" => format!(
            "case \"$1\" in\n  bound|renew)\n    {}\n    ;;\n  nak)\n    \
             [ -s {held} ] && echo \"$t ${{serverid:--}} {client} nak $(cat {held})\" >> {log} ;;\n  \
             deconfig)\n    {stop} ;;\nesac",
            ack("ip", "lease", "serverid")
        ),
        _ => format!(
            "case \"$reason\" in\n  BOUND|RENEW|REBIND|REBOOT)\n    {}\n    ;;\n  \
             EXPIRE|FAIL|RELEASE|STOP)\n    {stop} ;;\nesac",
            ack("new_ip_address", "new_dhcp_lease_time", "new_dhcp_server_identifier")
        ),
    };
    let text = format!("#!/bin/sh\nt=$(date +%s.%N)\n{cases}\nexit 0\n");
    std::fs::write(&path, text).expect("hook script");
    sh("chmod", &["+x", path.to_str().expect("utf-8")]);
    (path, PathBuf::from(log))
}

fn nft(ns: &Netns, args: &[&str]) -> std::process::Output {
    let out = ns
        .command("nft")
        .args(args)
        .output()
        .expect("nft is needed (apt-get install -y nftables)");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn mac_text(mac: [u8; 6]) -> String {
    crate::dhcp_client::key(mac)
        .trim_start_matches("mac:")
        .to_owned()
}

/// One HTTP/1.1 request with the lab's admin token; (status, body), (0, "")
/// if nothing answers within 3 s.
pub fn http(to: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    crate::support::http_request(to, Some(TOKEN), method, path, body, Duration::from_secs(3))
}

/// Waits until `f` holds, at most `limit`; the time it took.
pub fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}
