//! Real DHCPv6 clients in network namespaces against the server of
//! `dhcp6_support` (vpcbox; Kea with `VPCBOX_DHCP6_SERVER=kea`): dhcpcd with
//! IA_NA + IA_PD, `dhclient -6 -P` (IA_PD), and short perfdhcp -6 runs with
//! address-and-prefix, direct and relayed (-A1). Each checks the exchanges
//! completed, that no address or prefix went to two DUIDs (from the clients'
//! side), and that the server's durable leases match the Replies.
//!
//! Against Kea: `VPCBOX_DHCP6_SERVER=kea cargo test --test it dhcp6_clients`;
//! against another vpcbox build: `VPCBOX_DHCP6_SERVER=/path/to/vpcbox`.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::time::Duration;

use crate::dhcp6_support::{
    hook, lines, prefix, wait_reason, Client6, Lease6, Net6, Server6, Topo6, DIRECT, RELAY,
    RELAYED, SERVER_UNICAST,
};
use crate::netns::{require_root, Proc};
use crate::support::eventually;

const BOUND: Duration = Duration::from_secs(30);

/// dhcpcd on one client namespace: IA_NA 1 and IA_PD 2 (assigned to `lo`),
/// DUID-LL `02:00:00:00:06:<n>`, no router solicitation, our hook only.
struct Dhcpcd<'a> {
    client: &'a Client6,
    duid: String,
    log: std::path::PathBuf,
    _proc: Proc,
}

impl<'a> Dhcpcd<'a> {
    fn start(t: &Topo6, client: &'a Client6, n: u8) -> Self {
        let dir = t.dir.path();
        let duid = format!("000300010200000006{n:02x}");
        let duid_conf: Vec<String> = duid
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        let conf = dir.join(format!("dhcpcd{n}.conf"));
        let text = format!(
            "ipv6only\nnoipv6rs\nduid {}\ninterface {}\n  ia_na 1\n  ia_pd 2 lo/0/64\n",
            duid_conf.join(":"),
            client.ifname
        );
        std::fs::write(&conf, text).expect("dhcpcd.conf");
        let line = "$reason $new_dhcp6_ia_na1_ia_addr1 $new_dhcp6_ia_pd1_prefix1/$new_dhcp6_ia_pd1_prefix1_length";
        let (script, log) = hook(dir, &format!("dhcpcd{n}"), line);
        let args = [
            "-B",
            "-6",
            "-f",
            conf.to_str().expect("utf-8"),
            "-c",
            script.to_str().expect("utf-8"),
            &client.ifname,
        ];
        let proc = client.ns.spawn("dhcpcd", &args);
        Self {
            client,
            duid,
            log,
            _proc: proc,
        }
    }

    /// Waits for `reason` after line `after`: (address, prefix).
    fn wait(&self, reason: &str, after: usize) -> (Lease6, Lease6) {
        let w = wait_reason(&self.log, reason, after, BOUND);
        assert_eq!(w.len(), 2, "{reason} without address and prefix: {w:?}");
        let addr: Ipv6Addr = w[0].parse().expect("address");
        let (p, len) = prefix(&w[1]);
        let lease = |addr, len| Lease6 {
            addr,
            len,
            duid: self.duid.clone(),
        };
        (lease(addr, 128), lease(p, len))
    }

    /// `dhcpcd -6 -N` (renew) or `-k` (release) to the running one.
    fn control(&self, flag: &str) {
        let out = self
            .client
            .ns
            .command("dhcpcd")
            .args(["-6", flag, &self.client.ifname])
            .output()
            .expect("dhcpcd control");
        assert!(out.status.success(), "dhcpcd {flag}: {out:?}");
    }
}

impl Drop for Dhcpcd<'_> {
    fn drop(&mut self) {
        // Its lease file lives in the host's /var/lib/dhcpcd.
        let f = format!("/var/lib/dhcpcd/{}.lease6", self.client.ifname);
        let _ = std::fs::remove_file(f);
    }
}

/// Waits until the server's bound leases of `net` include all of `want`.
fn wait_durable(server: &Server6, t: &Topo6, net: &Net6, want: &[Lease6]) -> Vec<Lease6> {
    let mut have = Vec::new();
    let ok = eventually(Duration::from_secs(10), || {
        have = server.leases(t, net);
        want.iter().all(|w| have.contains(w))
    });
    assert!(ok, "server's leases {have:?} lack some of {want:?}");
    have
}

#[test]
fn dhcpcd_clients_get_distinct_addresses_and_prefixes_renew_and_release() {
    if !require_root("dhcpcd_clients_get_distinct_addresses_and_prefixes_renew_and_release") {
        return;
    }
    let t = Topo6::new(3);
    let server = Server6::start(&t);
    let clients: Vec<Dhcpcd> = (0..3u8)
        .map(|n| Dhcpcd::start(&t, &t.clients[usize::from(n)], n))
        .collect();
    let bound: Vec<(Lease6, Lease6)> = clients.iter().map(|c| c.wait("BOUND6", 0)).collect();
    let all: Vec<Lease6> = bound
        .iter()
        .flat_map(|(a, p)| [a.clone(), p.clone()])
        .collect();
    for l in &all {
        assert!(DIRECT.holds(l), "{l:?} outside direct6's pools");
    }
    let distinct: BTreeSet<_> = all.iter().map(|l| (l.addr, l.len)).collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "an address or prefix twice: {all:?}"
    );
    // The server holds each of them, for that client's DUID.
    let have = wait_durable(&server, &t, &DIRECT, &all);
    assert_eq!(have.len(), all.len(), "{have:?}");

    // Renew: the same address and prefix.
    let n = lines(&clients[0].log);
    clients[0].control("-N");
    assert_eq!(clients[0].wait("RENEW6", n), bound[0]);
    // Release: both leave the server's bound leases; the others stay.
    let n = lines(&clients[0].log);
    clients[0].control("-k");
    wait_reason(&clients[0].log, "RELEASE6", n, BOUND);
    let mut left = Vec::new();
    let released = eventually(Duration::from_secs(10), || {
        left = server.leases(&t, &DIRECT);
        !left.contains(&bound[0].0) && !left.contains(&bound[0].1)
    });
    assert!(released, "still bound after Release: {left:?}");
    assert_eq!(left.len(), all.len() - 2, "{left:?}");
}

#[test]
fn dhclient_gets_a_delegated_prefix_keeps_it_on_restart_and_releases_it() {
    if !require_root("dhclient_gets_a_delegated_prefix_keeps_it_on_restart_and_releases_it") {
        return;
    }
    let t = Topo6::new(1);
    let server = Server6::start(&t);
    let c = &t.clients[0];
    let dir = t.dir.path();
    let (script, log) = hook(dir, "dhclient6", "$reason $new_ip6_prefix");
    let (lf, pf) = (dir.join("dhclient6.leases"), dir.join("dhclient6.pid"));
    let (s, lf, pf) = (
        script.to_str().expect("utf-8"),
        lf.to_str().expect("utf-8"),
        pf.to_str().expect("utf-8"),
    );
    let run = |extra: &[&str]| {
        let mut args = vec!["-6", "-P", "-v", "-D", "LL", "-lf", lf, "-pf", pf, "-sf", s];
        args.extend_from_slice(extra);
        args.push(&c.ifname);
        c.ns.spawn("dhclient", &args)
    };
    let first = run(&["-d"]);
    let w = wait_reason(&log, "BOUND6", 0, BOUND);
    let (p, len) = prefix(w.first().expect("BOUND6 without a prefix"));
    let got = Lease6 {
        addr: p,
        len,
        duid: String::new(),
    };
    assert!(DIRECT.holds(&got), "{got:?} outside direct6's pd pool");
    let durable = |leases: &[Lease6]| leases.iter().any(|l| (l.addr, l.len) == (p, len));
    let mut have = Vec::new();
    let stored = eventually(Duration::from_secs(10), || {
        have = server.leases(&t, &DIRECT);
        durable(&have)
    });
    assert!(stored, "{p}/{len} not among the server's leases {have:?}");
    assert_eq!(have.len(), 1, "one prefix, no address asked: {have:?}");
    // Killed (no Release): on restart it rebinds the prefix from its lease file.
    drop(first);
    let n = lines(&log);
    let again = run(&["-d"]);
    let w = wait_reason(&log, "REBIND6", n, BOUND);
    assert_eq!(w.first().map(|s| prefix(s)), Some((p, len)), "{w:?}");
    drop(again);
    // Release: gone from the server.
    let (ok, out) = run(&["-r"]).wait();
    assert!(ok, "dhclient -r: {out}");
    let released = eventually(Duration::from_secs(10), || {
        !durable(&server.leases(&t, &DIRECT))
    });
    assert!(
        released,
        "still bound after Release: {:?}",
        server.leases(&t, &DIRECT)
    );
}

/// perfdhcp's figures for one run.
#[derive(Debug, Default)]
struct Perf6 {
    solicits: u64,
    advertises: u64,
    requests: u64,
    replies: u64,
    non_unique: u64,
    rejected: u64,
}

/// Runs perfdhcp -6 with address-and-prefix and uniqueness checks in the
/// load namespace, a few hundred exchanges (`VPCBOX_PERF6_RATE`/s for 3 s).
fn perfdhcp(t: &Topo6, mode: &[&str], server: &[&str]) -> (Perf6, String) {
    let rate = std::env::var("VPCBOX_PERF6_RATE").unwrap_or_else(|_| "100".into());
    let mut args = vec!["-6", "-e", "address-and-prefix", "-u", "-r", &rate];
    // 3 s of new clients; then 1 s for the replies still in flight.
    args.extend_from_slice(&["-p", "3", "-R", "1000000", "-W", "1000000"]);
    args.extend_from_slice(mode);
    args.extend_from_slice(server);
    let (_, out) = t.load.ns.spawn("perfdhcp", &args).wait();
    let mut p = Perf6::default();
    let mut section = "";
    for l in out.lines().map(str::trim) {
        if l.contains("SOLICIT-ADVERTISE") || l.contains("REQUEST-REPLY") {
            section = if l.contains("SOLICIT") { "SA" } else { "RR" };
        }
        let num = |prefix: &str| {
            l.strip_prefix(prefix)
                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        };
        match (section, num("sent packets:"), num("received packets:")) {
            ("SA", Some(n), _) => p.solicits = n,
            ("SA", _, Some(n)) => p.advertises = n,
            ("RR", Some(n), _) => p.requests = n,
            ("RR", _, Some(n)) => p.replies = n,
            _ => {}
        }
        p.non_unique += num("non unique addresses:").unwrap_or(0);
        p.rejected += num("rejected leases:").unwrap_or(0);
    }
    (p, out)
}

/// The checks both perfdhcp tests share: the exchanges completed, perfdhcp
/// saw no address or prefix twice, and every Reply it received stands for
/// a durable address and prefix (and no lease without a Request).
fn check_run(server: &Server6, t: &Topo6, net: &Net6, p: &Perf6, out: &str) {
    eprintln!("{out}");
    assert!(p.solicits >= 100, "too few exchanges: {p:?}");
    // Completed: all on a quiet machine; a loaded 2-core box may lose a few.
    assert!(
        p.replies * 10 >= p.solicits * 9,
        "exchanges not completed: {p:?}"
    );
    assert_eq!((p.non_unique, p.rejected), (0, 0), "{p:?}");
    let mut leases = Vec::new();
    let settled = eventually(Duration::from_secs(10), || {
        leases = server.leases(t, net);
        leases.len() as u64 >= 2 * p.replies
    });
    let (na, pd): (Vec<&Lease6>, Vec<&Lease6>) = leases.iter().partition(|l| l.len == 128);
    assert!(
        settled,
        "{} addresses, {} prefixes for {p:?}",
        na.len(),
        pd.len()
    );
    for l in &leases {
        assert!(net.holds(l), "{l:?} outside {}'s pools", net.id);
    }
    // One address and one prefix per client (DUID), none shared.
    for kind in [&na, &pd] {
        let duids: BTreeSet<&str> = kind.iter().map(|l| l.duid.as_str()).collect();
        assert_eq!(duids.len(), kind.len(), "a DUID with two leases of a kind");
        let (n, replies, requests) = (kind.len() as u64, p.replies, p.requests);
        assert!(n >= replies && n <= requests, "{n} leases: {p:?}");
        if replies == requests {
            assert_eq!(n, replies, "{p:?}");
        }
    }
}

#[test]
fn perfdhcp_direct_addresses_and_prefixes_are_unique_and_durable() {
    if !require_root("perfdhcp_direct_addresses_and_prefixes_are_unique_and_durable") {
        return;
    }
    let t = Topo6::new(0);
    let server = Server6::start(&t);
    let (p, out) = perfdhcp(&t, &["-l", &t.load.ifname], &[]);
    check_run(&server, &t, &DIRECT, &p, &out);
}

#[test]
fn perfdhcp_relayed_addresses_and_prefixes_are_unique_and_durable() {
    if !require_root("perfdhcp_relayed_addresses_and_prefixes_are_unique_and_durable") {
        return;
    }
    let t = Topo6::new(0);
    let server = Server6::start(&t);
    // -A1: one relay level; link-address and source are perfdhcp's -l address.
    let (p, out) = perfdhcp(&t, &["-A1", "-l", RELAY], &[SERVER_UNICAST]);
    check_run(&server, &t, &RELAYED, &p, &out);
    assert!(
        server.leases(&t, &DIRECT).is_empty(),
        "relayed clients served on the direct link"
    );
}
