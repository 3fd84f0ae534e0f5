//! DHCPv6 on the cluster (issues 20 + 21): two vpcbox nodes on one bridge
//! hear the same multicast, share one etcd, and each client (DUID) is
//! answered by one of them. A dhcpcd client (IA_NA + IA_PD) and a few
//! hundred perfdhcp clients: every IA one binding in etcd, no address or
//! prefix twice, one answer per Solicit. Then the node that served dhcpcd
//! is killed with SIGKILL, and its Renew gets the same address and prefix
//! from the survivor.
//!
//! ```text
//!  ns c6v-… hub: bridge c6vb<t> 10.26.0.2/24, etcd
//!   ├─ ns n0: 10.26.0.11/24, fd00:77::11/64, vpcbox (API 127.0.0.1:8080)
//!   ├─ ns n1: 10.26.0.12/24, fd00:77::12/64, vpcbox
//!   ├─ ns dhcpcd (link-local only)
//!   └─ ns perfdhcp (link-local only)
//! ```
#![cfg(feature = "cluster")]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::dhcp6_support::{bridge6, hook, lines, netns6, prefix, wait_reason, Lease6, DIRECT};
use crate::etcd::{Etcd, EtcdOptions};
use crate::netns::{require_root, tag, veth, Netns, Proc};
use crate::support::eventually;

const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 26, 0, 2);
const TTL_SECS: u64 = 3;
const PREFIX: &str = "/c6v";

struct Lab {
    etcd: Etcd,
    nodes: Vec<Node>,
    dhcpcd: (Netns, String),
    load: (Netns, String),
    dir: tempfile::TempDir,
    hub: Netns,
}

struct Node {
    proc: Option<Proc>,
    ns: Netns,
    ifname: String,
}

impl Lab {
    fn new() -> Self {
        let hub = netns6("c6v");
        let bridge = format!("c6vb{}", tag());
        bridge6(&hub, &bridge);
        hub.ip(&["addr", "add", &format!("{HUB_IP}/24"), "dev", &bridge]);
        hub.ip(&["link", "set", &bridge, "up"]);
        let attach = |v4: Option<Ipv4Addr>, v6: Option<&str>| {
            let (ns, t) = (netns6("c6v"), tag());
            let (inner, outer) = (format!("c6vi{t}"), format!("c6vh{t}"));
            veth(&ns, &inner, &hub, &outer);
            hub.ip(&["link", "set", &outer, "master", &bridge]);
            if let Some(ip) = v4 {
                ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", &inner]);
            }
            if let Some(ip) = v6 {
                ns.ip(&["addr", "add", ip, "dev", &inner, "nodad"]);
            }
            (ns, inner)
        };
        let nodes = (0..2u8)
            .map(|i| {
                let v6 = format!("fd00:77::{}/64", 11 + i);
                let (ns, ifname) = attach(Some(Ipv4Addr::new(10, 26, 0, 11 + i)), Some(&v6));
                Node {
                    proc: None,
                    ns,
                    ifname,
                }
            })
            .collect();
        let dhcpcd = attach(None, None);
        let load = attach(None, None);
        let etcd = Etcd::start_with(EtcdOptions {
            members: 1,
            host: IpAddr::V4(HUB_IP),
            netns: Some(hub.name.clone()),
        });
        Self {
            etcd,
            nodes,
            dhcpcd,
            load,
            dir: tempfile::tempdir().expect("tempdir"),
            hub,
        }
    }

    fn config(&self, i: usize) -> PathBuf {
        let dir = self.dir.path().join(format!("n{i}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let data = dir.join("data");
        let text = format!(
            "[storage]\npath = \"{data}\"\n[dhcp]\nenabled = false\nmax_leases_per_port = 0\n\
             [gateway]\nlisten = \"127.0.0.1:8080\"\nadmin_token_file = \"{data}/admin.token\"\n\
             [dhcp6]\nenabled = true\nlisten = \"[::]:547\"\ninterfaces = [\"{ifname}\"]\n\
             per_client_rate = \"10/s\"\nper_client_burst = 20\n\
             [[subnet6]]\nid = \"{id}\"\nprefix = \"{prefix}\"\npools = [\"{a}-{b}\"]\n\
             pd_pools = [{{ prefix = \"{pd}\", delegated_len = {dl} }}]\n\
             preferred_lifetime = \"30m\"\nvalid_lifetime = \"1h\"\n\
             [cluster]\nnode = \"n{i}\"\netcd = [\"{etcd}\"]\nprefix = \"{PREFIX}\"\n\
             lease_ttl = \"{TTL_SECS}s\"\nblock_size = 16\n",
            data = data.display(),
            ifname = self.nodes[i].ifname,
            id = DIRECT.id,
            prefix = DIRECT.prefix,
            a = DIRECT.pool.0,
            b = DIRECT.pool.1,
            pd = DIRECT.pd_pool,
            dl = DIRECT.delegated_len,
            etcd = self.etcd.endpoints().join("\", \""),
        );
        let path = dir.join("vpcbox.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn start(&mut self, i: usize) {
        let config = self.config(i);
        let args = [
            "run",
            "--headless",
            "--config",
            config.to_str().expect("utf-8"),
        ];
        let bin = crate::support::bin();
        let proc = self.nodes[i].ns.spawn(bin.to_str().expect("utf-8"), &args);
        self.nodes[i].proc = Some(proc);
        let ready = eventually(Duration::from_secs(60), || self.http_ok(i, "/readyz"));
        assert!(ready, "node {i} not ready: {}", self.stop(i));
    }

    /// SIGKILLs node `i`; its output.
    fn stop(&mut self, i: usize) -> String {
        let Some(p) = self.nodes[i].proc.take() else {
            return String::new();
        };
        p.signal("KILL");
        p.wait().1
    }

    fn http_ok(&self, i: usize, path: &str) -> bool {
        self.nodes[i]
            .ns
            .command("curl")
            .args(["-sf", "-m", "5", &format!("http://127.0.0.1:8080{path}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn metrics(&self, i: usize) -> String {
        let out = self.nodes[i]
            .ns
            .command("curl")
            .args(["-sf", "-m", "5", "http://127.0.0.1:8080/metrics"])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The sum of node `i`'s metric lines that start with `series`.
    fn metric(&self, i: usize, series: &str) -> u64 {
        self.metrics(i)
            .lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Solicits node `i` answered (Advertise, or Reply with Rapid Commit).
    fn advertised(&self, i: usize) -> u64 {
        ["advertise", "reply"]
            .iter()
            .map(|r| {
                let series =
                    format!("vpcbox_dhcp_packets_total{{type=\"solicit\",result=\"{r}\"}}");
                self.metric(i, &series)
            })
            .sum()
    }

    fn other_node(&self, i: usize) -> u64 {
        self.metric(i, "vpcbox_client_drops_total{reason=\"other_node\"}")
    }

    /// Every key and value under `PREFIX/<what>`.
    fn etcd_kv(&mut self, what: &str) -> Vec<(String, String)> {
        let out = self
            .etcd
            .etcdctl(&["get", "--prefix", &format!("{PREFIX}/{what}")]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .map(|kv| {
                (
                    kv[0].to_owned(),
                    kv.get(1).copied().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }
}

/// dhcpcd with IA_NA 1 and IA_PD 2 and DUID-LL `…06:99`: (the process,
/// its hook log, its DUID as hex).
fn dhcpcd(lab: &Lab) -> (Proc, PathBuf, String) {
    let (ns, ifname) = &lab.dhcpcd;
    let dir = lab.dir.path();
    let duid = "00030001020000000699";
    let conf = dir.join("dhcpcd.conf");
    let text = format!(
        "ipv6only\nnoipv6rs\nduid 00:03:00:01:02:00:00:00:06:99\ninterface {ifname}\n  ia_na 1\n  ia_pd 2 lo/0/64\n"
    );
    std::fs::write(&conf, text).expect("dhcpcd.conf");
    let line = "$reason $new_dhcp6_ia_na1_ia_addr1 $new_dhcp6_ia_pd1_prefix1/$new_dhcp6_ia_pd1_prefix1_length";
    let (script, log) = hook(dir, "dhcpcd", line);
    let args = ["-B", "-6", "-f", conf.to_str().expect("utf-8"), "-c"];
    let mut args: Vec<&str> = args.to_vec();
    args.extend([script.to_str().expect("utf-8"), ifname.as_str()]);
    (ns.spawn("dhcpcd", &args), log, duid.to_owned())
}

/// The hook line's (address, prefix) after `reason` past line `after`.
fn bound(log: &std::path::Path, reason: &str, after: usize, duid: &str) -> (Lease6, Lease6) {
    let w = wait_reason(log, reason, after, Duration::from_secs(40));
    assert_eq!(w.len(), 2, "{reason} without address and prefix: {w:?}");
    let (p, len) = prefix(&w[1]);
    let lease = |addr, len| Lease6 {
        addr,
        len,
        duid: duid.to_owned(),
    };
    (lease(w[0].parse().expect("address"), 128), lease(p, len))
}

/// perfdhcp -6 with address-and-prefix: (solicits, advertises, requests, replies, output).
fn perfdhcp(lab: &Lab) -> (u64, u64, u64, u64, String) {
    let (ns, ifname) = &lab.load;
    let args = [
        "-6",
        "-e",
        "address-and-prefix",
        "-u",
        "-r",
        "100",
        "-p",
        "3",
        "-R",
        "1000000",
        "-W",
        "1000000",
        "-l",
        ifname,
    ];
    let (_, out) = ns.spawn("perfdhcp", &args).wait();
    let (mut section, mut n) = ("", [0u64; 4]);
    for l in out.lines().map(str::trim) {
        if l.contains("SOLICIT-ADVERTISE") || l.contains("REQUEST-REPLY") {
            section = if l.contains("SOLICIT") { "SA" } else { "RR" };
        }
        let num = |p: &str| {
            l.strip_prefix(p)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        };
        let base = if section == "SA" { 0 } else { 2 };
        if let Some(v) = num("sent packets:") {
            n[base] = v;
        }
        if let Some(v) = num("received packets:") {
            n[base + 1] = v;
        }
        let bad = num("non unique addresses:").unwrap_or(0) + num("rejected leases:").unwrap_or(0);
        assert_eq!(bad, 0, "{out}");
    }
    (n[0], n[1], n[2], n[3], out)
}

#[test]
fn cluster_dhcp6_two_nodes_answer_each_client_once_and_a_survivor_keeps_its_bindings() {
    if !require_root(
        "cluster_dhcp6_two_nodes_answer_each_client_once_and_a_survivor_keeps_its_bindings",
    ) {
        return;
    }
    let mut lab = Lab::new();
    lab.start(0);
    lab.start(1);
    let both = eventually(Duration::from_secs(20), || {
        (0..2).all(|i| lab.metric(i, "vpcbox_cluster_nodes ") == 2)
    });
    assert!(both, "the nodes do not see each other");

    // One real client; the node that answered it is the one advertising.
    let (_dhcpcd, log, duid) = dhcpcd(&lab);
    let (addr, pd) = bound(&log, "BOUND6", 0, &duid);
    assert!(DIRECT.holds(&addr) && DIRECT.holds(&pd), "{addr:?} {pd:?}");
    // The counters reach /metrics with the next snapshot.
    let mut served = Vec::new();
    eventually(Duration::from_secs(10), || {
        served = (0..2).map(|i| lab.advertised(i)).collect();
        served.iter().sum::<u64>() > 0
    });
    let owner = match served[..] {
        [n, 0] if n > 0 => 0,
        [0, n] if n > 0 => 1,
        _ => panic!(
            "dhcpcd answered by {served:?} advertisements: {}",
            lab.metrics(0)
        ),
    };

    // A few hundred perfdhcp clients: each Solicit answered once, by one node.
    let (solicits, advertises, _requests, replies, out) = perfdhcp(&lab);
    eprintln!("{out}");
    assert!(solicits >= 100, "too few exchanges: {out}");
    assert!(advertises <= solicits, "a Solicit answered twice: {out}");
    assert!(
        replies * 10 >= solicits * 9,
        "exchanges not completed: {out}"
    );
    // Both nodes heard every Solicit; together they answered each once.
    let mut per_node = Vec::new();
    eventually(Duration::from_secs(10), || {
        per_node = (0..2).map(|i| lab.advertised(i)).collect();
        per_node.iter().sum::<u64>() >= advertises + served.iter().sum::<u64>()
    });
    let answers: u64 = per_node.iter().sum();
    assert!(
        answers <= solicits + served.iter().sum::<u64>(),
        "{per_node:?} answers to {solicits} Solicits"
    );
    assert!(
        per_node.iter().all(|n| *n > 1),
        "one node answered all: {per_node:?}"
    );
    assert!(
        (0..2).all(|i| lab.other_node(i) > 0),
        "a node did not leave the other's clients alone"
    );

    // etcd: every IA one bound lease, every lease its IA's binding key.
    let leases = lab.etcd_kv("leases6/");
    let mut by_ia: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &leases {
        let j: serde_json::Value = serde_json::from_str(v).unwrap_or_else(|_| panic!("{k}: {v}"));
        if j["state"] == "bound" {
            let ia = format!(
                "{}/{}/{}",
                j["client"].as_str().unwrap_or(""),
                j["kind"].as_str().unwrap_or(""),
                j["iaid"]
            );
            by_ia.entry(ia).or_default().push(k.clone());
        }
    }
    let twice: Vec<_> = by_ia.iter().filter(|(_, ks)| ks.len() > 1).collect();
    assert!(twice.is_empty(), "IAs with two bindings: {twice:?}");
    assert!(
        by_ia.len() as u64 >= 2 * replies,
        "{} IAs for {replies} replies",
        by_ia.len()
    );
    let bindings: BTreeSet<(String, String)> = lab
        .etcd_kv("bindings6/")
        .into_iter()
        .map(|(k, v)| {
            (
                k.trim_start_matches(&format!("{PREFIX}/bindings6/"))
                    .to_owned(),
                v,
            )
        })
        .collect();
    for (ia, ks) in &by_ia {
        let at = ks[0]
            .trim_start_matches(&format!("{PREFIX}/leases6/"))
            .to_owned();
        assert!(
            bindings.contains(&(ia.clone(), at.clone())),
            "{ia} → {at} has no binding key"
        );
    }
    let mine = format!("duid:{duid}/na/1");
    assert_eq!(
        by_ia.get(&mine).map(|k| k[0].clone()),
        Some(format!("{PREFIX}/leases6/{}", addr.addr))
    );

    // The node that served dhcpcd dies; the survivor answers its Renew
    // with the same address and prefix once the dead node's lease expired.
    let survivor = 1 - owner;
    let killed = Instant::now();
    lab.stop(owner);
    let alone = eventually(Duration::from_secs(TTL_SECS + 20), || {
        lab.metric(survivor, "vpcbox_cluster_nodes ") == 1
    });
    assert!(alone, "the survivor still sees the dead node");
    eprintln!("survivor alone {:?} after kill -9", killed.elapsed());
    let n = lines(&log);
    let renew = lab
        .dhcpcd
        .0
        .command("dhcpcd")
        .args(["-6", "-N", &lab.dhcpcd.1])
        .output();
    assert!(renew.is_ok_and(|o| o.status.success()), "dhcpcd -N");
    let again = bound(&log, "RENEW6", n, &duid);
    let took = killed.elapsed();
    eprintln!("renewed through the survivor {took:?} after kill -9");
    assert_eq!(again, (addr, pd), "the survivor gave other bindings");
    // A deadline, not a speed test (the failover time is measured in bench/).
    assert!(
        took <= Duration::from_secs(TTL_SECS + 30),
        "failover took {took:?}"
    );
    let _ = &lab.hub;
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
        let f = format!("/var/lib/dhcpcd/{}.lease6", self.dhcpcd.1);
        let _ = std::fs::remove_file(f);
    }
}
