//! DHCPv6 lab: a server namespace with a bridge, client namespaces on it, and
//! a [`Server6`] that is either vpcbox or ISC Kea (`kea-dhcp6`) serving the
//! same two subnets, so the real-client tests in `dhcp6_clients` can run
//! against either. `VPCBOX_DHCP6_SERVER=kea` picks Kea, `=/path/to/vpcbox`
//! another vpcbox build; this build's vpcbox otherwise.
//!
//! ```text
//!  ns v6l-… (one per client) v6c<t> ──veth── v6p<t> ┐
//!  ns v6l-… (load: perfdhcp) v6c<t> fd00:79::2 ──── ├─ bridge v6b<t> fd00:77::1/64, fd00:79::1/64
//!                                                    ┘  ns v6l-… (server): vpcbox | kea-dhcp6 on [::]:547
//! ```
//!
//! Direct clients get addresses of fd00:77::/64 and /56s of fd00:78::/40
//! (subnet "direct6"); relayed ones (perfdhcp -A1: link-address and source
//! fd00:79::2) get fd00:90::/64 and /56s of fd00:91::/40 ("relayed6").

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ipnet::Ipv6Net;

use crate::netns::{sh, tag, veth, Netns, Proc};
use crate::support::eventually;

/// One of the two subnets both servers serve.
pub struct Net6 {
    pub id: &'static str,
    /// Kea's subnet-id for it.
    pub kea_id: u32,
    pub prefix: &'static str,
    pub pool: (&'static str, &'static str),
    pub pd_pool: &'static str,
    pub delegated_len: u8,
}

pub const DIRECT: Net6 = Net6 {
    id: "direct6",
    kea_id: 1,
    prefix: "fd00:77::/64",
    pool: ("fd00:77::100", "fd00:77::ffff"),
    pd_pool: "fd00:78::/40",
    delegated_len: 56,
};

pub const RELAYED: Net6 = Net6 {
    id: "relayed6",
    kea_id: 2,
    prefix: "fd00:90::/64",
    pool: ("fd00:90::100", "fd00:90::ffff"),
    pd_pool: "fd00:91::/40",
    delegated_len: 56,
};

/// The relay perfdhcp -A1 plays: its link-address and source address.
pub const RELAY: &str = "fd00:79::2";
/// The server's unicast address relays send to.
pub const SERVER_UNICAST: &str = "fd00:79::1";

impl Net6 {
    /// An address lease (`len` 128) in the pool, or a delegated prefix of
    /// `delegated_len` in the pd pool.
    pub fn holds(&self, l: &Lease6) -> bool {
        let ip = |s: &str| s.parse::<Ipv6Addr>().expect("pool address");
        if l.len == 128 {
            return (ip(self.pool.0)..=ip(self.pool.1)).contains(&l.addr);
        }
        let pd: Ipv6Net = self.pd_pool.parse().expect("pd pool");
        l.len == self.delegated_len
            && pd.contains(&l.addr)
            && Ipv6Net::new(l.addr, l.len).is_ok_and(|n| n.network() == l.addr)
    }
}

/// A bound lease as the server stored it: an address (`len` 128) or a
/// delegated prefix, and the client's DUID as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lease6 {
    pub addr: Ipv6Addr,
    pub len: u8,
    pub duid: String,
}

/// A client namespace on the bridge.
pub struct Client6 {
    pub ns: Netns,
    pub ifname: String,
}

pub struct Topo6 {
    pub srv: Netns,
    pub bridge: String,
    /// perfdhcp's namespace, with the relay's address.
    pub load: Client6,
    pub clients: Vec<Client6>,
    /// Config, lease and log files of the test.
    pub dir: tempfile::TempDir,
}

/// A namespace (named `prefix`…) whose addresses are usable at once (no
/// duplicate address detection; a tentative link-local address cannot
/// send or receive).
pub fn netns6(prefix: &str) -> Netns {
    let ns = Netns::with_prefix(prefix);
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ],
    );
    ns
}

/// Adds bridge `name` in `ns` without multicast snooping (so every port
/// hears ff02::1:2 before any MLD report), still down.
pub fn bridge6(ns: &Netns, name: &str) {
    ns.ip(&["link", "add", name, "type", "bridge", "mcast_snooping", "0"]);
}

impl Topo6 {
    /// The server namespace, perfdhcp's, and `clients` more on the bridge.
    pub fn new(clients: usize) -> Self {
        let srv = netns6("v6l");
        let bridge = format!("v6b{}", tag());
        bridge6(&srv, &bridge);
        for a in ["fd00:77::1/64", "fd00:79::1/64"] {
            srv.ip(&["addr", "add", a, "dev", &bridge, "nodad"]);
        }
        srv.ip(&["link", "set", &bridge, "up"]);
        let attach = || {
            let (ns, t) = (netns6("v6l"), tag());
            let (ifname, port) = (format!("v6c{t}"), format!("v6p{t}"));
            veth(&ns, &ifname, &srv, &port);
            srv.ip(&["link", "set", &port, "master", &bridge]);
            Client6 { ns, ifname }
        };
        let load = attach();
        let relay = format!("{RELAY}/64");
        load.ns
            .ip(&["addr", "add", &relay, "dev", &load.ifname, "nodad"]);
        let clients = (0..clients).map(|_| attach()).collect();
        Self {
            srv,
            bridge,
            load,
            clients,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
}

/// The server under test, running in the server namespace; killed on drop.
pub enum Server6 {
    Vpcbox(Proc),
    Kea(Proc),
}

impl Server6 {
    /// vpcbox (this build's, or the binary `VPCBOX_DHCP6_SERVER=/path`
    /// names), or Kea with `VPCBOX_DHCP6_SERVER=kea`; returns once it is
    /// bound to UDP 547 (and, for vpcbox, answers `/readyz`).
    pub fn start(t: &Topo6) -> Self {
        let choice = std::env::var("VPCBOX_DHCP6_SERVER").unwrap_or_default();
        let kea = choice == "kea";
        let mut server = match choice.as_str() {
            "kea" => start_kea(t),
            path if path.contains('/') => start_vpcbox(t, Path::new(path)),
            _ => start_vpcbox(t, &crate::support::bin()),
        };
        // Until it serves, or exits (a refused config: its output says why).
        let mut exited = false;
        let ready = eventually(Duration::from_secs(60), || {
            exited = !server.running();
            exited || ((kea || http_ok(t, "/readyz")) && bound_547(t))
        });
        if !ready || exited {
            let p = server.into_proc();
            p.signal("KILL");
            panic!("DHCPv6 server not ready: {}", p.wait().1);
        }
        server
    }

    fn running(&mut self) -> bool {
        let (Self::Vpcbox(p) | Self::Kea(p)) = self;
        p.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn into_proc(self) -> Proc {
        match self {
            Self::Vpcbox(p) | Self::Kea(p) => p,
        }
    }

    /// The bound leases (addresses and delegated prefixes) of `net`.
    pub fn leases(&self, t: &Topo6, net: &Net6) -> Vec<Lease6> {
        match self {
            Self::Kea(_) => kea_leases(&t.dir.path().join("kea-leases6.csv"), net.kea_id),
            Self::Vpcbox(_) => vpcbox_leases(t, net.id),
        }
    }
}

fn bound_547(t: &Topo6) -> bool {
    t.srv
        .command("ss")
        .args(["-Hlun", "sport = :547"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
}

fn http_ok(t: &Topo6, path: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &t.srv.name, "curl", "-sf"])
        .arg(format!("http://127.0.0.1:8080{path}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn subnet6_toml(net: &Net6, relays: &[&str]) -> String {
    let relays: Vec<String> = relays.iter().map(|r| format!("{r:?}")).collect();
    format!(
        "[[subnet6]]\nid = \"{id}\"\nprefix = \"{prefix}\"\npools = [\"{a}-{b}\"]\n\
         pd_pools = [{{ prefix = \"{pd}\", delegated_len = {dl} }}]\ndns = [\"fd00:77::1\"]\n\
         preferred_lifetime = \"30m\"\nvalid_lifetime = \"1h\"\nrelays = [{relays}]\n",
        id = net.id,
        prefix = net.prefix,
        a = net.pool.0,
        b = net.pool.1,
        pd = net.pd_pool,
        dl = net.delegated_len,
        relays = relays.join(", "),
    )
}

/// vpcbox's config: DHCPv6 only on the bridge, the API inside the server
/// namespace (for readiness and the lease listing).
pub fn vpcbox_config(t: &Topo6) -> String {
    let data = t.dir.path().join("data");
    format!(
        // No per-port cap: perfdhcp's relayed clients share one relay and no Interface-Id.
        "[storage]\npath = \"{data}\"\n[dhcp]\nenabled = false\nmax_leases_per_port = 0\n\
         [gateway]\nlisten = \"127.0.0.1:8080\"\nadmin_token_file = \"{data}/admin.token\"\n\
         [dhcp6]\nenabled = true\nlisten = \"[::]:547\"\ninterfaces = [\"{br}\"]\n\
         per_client_rate = \"10/s\"\nper_client_burst = 20\n{direct}{relayed}",
        data = data.display(),
        br = t.bridge,
        direct = subnet6_toml(&DIRECT, &[]),
        relayed = subnet6_toml(&RELAYED, &[RELAY]),
    )
}

fn start_vpcbox(t: &Topo6, bin: &Path) -> Server6 {
    let config = t.dir.path().join("vpcbox.toml");
    std::fs::write(&config, vpcbox_config(t)).expect("write config");
    let args = ["run", "--headless", "--config", path(&config)];
    Server6::Vpcbox(t.srv.spawn(path(bin), &args))
}

fn kea_subnet(net: &Net6, select: &str) -> String {
    let (pd, len) = net.pd_pool.split_once('/').expect("pd pool");
    format!(
        r#"{{ "id": {id}, "subnet": "{prefix}", {select},
      "pools": [ {{ "pool": "{a} - {b}" }} ],
      "pd-pools": [ {{ "prefix": "{pd}", "prefix-len": {len}, "delegated-len": {dl} }} ],
      "option-data": [ {{ "name": "dns-servers", "data": "fd00:77::1" }} ] }}"#,
        id = net.kea_id,
        prefix = net.prefix,
        a = net.pool.0,
        b = net.pool.1,
        dl = net.delegated_len,
    )
}

/// Kea's config for the same subnets: leases in a memfile CSV in the test's
/// directory (written before each Reply), unicast on the relays' address.
pub fn kea_config(t: &Topo6) -> String {
    let dir = t.dir.path();
    format!(
        r#"{{ "Dhcp6": {{
  "interfaces-config": {{ "interfaces": [ "{br}/{unicast}" ] }},
  "data-directory": "{dir}",
  "lease-database": {{ "type": "memfile", "persist": true, "name": "{dir}/kea-leases6.csv", "lfc-interval": 0 }},
  "preferred-lifetime": 1800, "valid-lifetime": 3600, "renew-timer": 900, "rebind-timer": 1440,
  "subnet6": [ {direct}, {relayed} ],
  "loggers": [ {{ "name": "kea-dhcp6", "output_options": [ {{ "output": "{dir}/kea-dhcp6.log" }} ], "severity": "INFO" }} ]
}} }}"#,
        br = t.bridge,
        unicast = SERVER_UNICAST,
        dir = dir.display(),
        direct = kea_subnet(&DIRECT, &format!(r#""interface": "{}""#, t.bridge)),
        relayed = kea_subnet(
            &RELAYED,
            &format!(r#""relay": {{ "ip-addresses": [ "{RELAY}" ] }}"#)
        ),
    )
}

fn start_kea(t: &Topo6) -> Server6 {
    let dir = t.dir.path();
    let config = dir.join("kea-dhcp6.json");
    std::fs::write(&config, kea_config(t)).expect("write kea config");
    // Its pid and lock files in the test's directory, not /run/kea.
    let p = t
        .srv
        .command("env")
        .arg(format!("KEA_PIDFILE_DIR={}", dir.display()))
        .arg(format!("KEA_LOCKFILE_DIR={}", dir.display()))
        .args(["kea-dhcp6", "-c", path(&config)])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kea-dhcp6 (apt-get install kea-dhcp6-server)");
    Server6::Kea(Proc { child: Some(p) })
}

/// The live leases of Kea's memfile: the last line per lease wins; a valid
/// lifetime of 0 is a released or deleted lease.
pub fn kea_leases(csv: &Path, subnet_id: u32) -> Vec<Lease6> {
    let text = std::fs::read_to_string(csv).unwrap_or_default();
    let mut last: BTreeMap<(Ipv6Addr, u8), (String, bool)> = BTreeMap::new();
    // address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,…
    for f in text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
    {
        let (Some(addr), Some(len)) = (f[0].parse().ok(), f.get(8).and_then(|l| l.parse().ok()))
        else {
            continue;
        };
        if f.get(4).and_then(|s| s.parse::<u32>().ok()) != Some(subnet_id) {
            continue;
        }
        let live = f[2] != "0";
        last.insert((addr, len), (f[1].replace(':', "").to_lowercase(), live));
    }
    last.into_iter()
        .filter(|(_, (_, live))| *live)
        .map(|((addr, len), (duid, _))| Lease6 { addr, len, duid })
        .collect()
}

/// vpcbox's bound leases of `subnet` from `GET /v1/leases`, page by page
/// (`next_cursor`). A v6 entry (v6ipam's `Binding6`) has `ip`: the address
/// or the delegated prefix ("fd00:78::/56"), and `client`: `duid:HEX`.
pub fn vpcbox_leases(t: &Topo6, subnet: &str) -> Vec<Lease6> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!(
            "http://127.0.0.1:8080/v1/leases?subnet={subnet}&state=bound&limit=10000{cursor}"
        );
        let page = sh("ip", &["netns", "exec", &t.srv.name, "curl", "-sf", &url]);
        let v: serde_json::Value = serde_json::from_slice(&page.stdout).expect("lease listing");
        let list = v["leases"].as_array().cloned().unwrap_or_default();
        out.extend(
            list.iter()
                .filter(|l| l["state"].as_str().is_none_or(|s| s == "bound"))
                .map(|l| vpcbox_lease(l).unwrap_or_else(|| panic!("unreadable lease {l}"))),
        );
        match v["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return out,
        }
    }
}

fn vpcbox_lease(l: &serde_json::Value) -> Option<Lease6> {
    let ip = l["ip"].as_str()?;
    let (addr, len) = match ip.split_once('/') {
        Some((a, n)) => (a.parse().ok()?, n.parse().ok()?),
        None => (ip.parse().ok()?, 128),
    };
    let duid = l["client"].as_str()?.strip_prefix("duid:")?;
    Some(Lease6 {
        addr,
        len,
        duid: duid.replace(':', "").to_lowercase(),
    })
}

/// A client hook script appending `<reason> <address> <prefix>/<len>` lines
/// (dhcpcd's and dhclient's variable names given) to `<name>.log`.
pub fn hook(dir: &Path, name: &str, line: &str) -> (PathBuf, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let script = dir.join(format!("{name}.sh"));
    let text = format!(
        "#!/bin/sh\necho \"{line}\" >> {log}\nexit 0\n",
        log = log.display()
    );
    std::fs::write(&script, text).expect("hook script");
    sh("chmod", &["+x", path(&script)]);
    (script, log)
}

/// Waits for a line of `log` after the first `after` that starts with
/// `reason`; returns its remaining words.
pub fn wait_reason(log: &Path, reason: &str, after: usize, limit: Duration) -> Vec<String> {
    let mut hit = None;
    let found = eventually(limit, || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        hit = text.lines().skip(after).find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(reason)).then(|| w.map(str::to_owned).collect())
        });
        hit.is_some()
    });
    assert!(
        found,
        "no {reason} in {}: {}",
        log.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    hit.unwrap_or_default()
}

pub fn lines(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().count())
}

/// `"fd00:78:0:100::/56"` → a lease-shaped (address, length).
pub fn prefix(text: &str) -> (Ipv6Addr, u8) {
    let net: Ipv6Net = text
        .parse()
        .unwrap_or_else(|_| panic!("not a prefix: {text:?}"));
    (net.addr(), net.prefix_len())
}
