//! DHCPv6 with real parts: the `vpcbox` binary in a network namespace
//! serving `[[subnet6]]` on a veth, ISC `dhclient -6` in another.
//!
//! ```text
//!  ns cli: c6<t> (fe80::…, fd00:77::2 + ::3 as a relay) ──veth── s6<t> (fd00:77::1/64)  ns srv
//!          dhclient -6 / raw UDP sockets                         vpcbox [::]:547, interfaces = [s6<t>]
//! ```

use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::netns::{require_root, sh, tag, veth, Netns, Proc};
use crate::support::eventually;

/// The two namespaces, the veth between them, the files of the test.
struct Topo6 {
    srv: Netns,
    cli: Netns,
    srv_if: String,
    cli_if: String,
    dir: tempfile::TempDir,
}

/// No duplicate address detection: addresses are usable at once.
fn no_dad(ns: &Netns) {
    for key in ["all", "default"] {
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &ns.name,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.accept_dad=0"),
            ],
        );
    }
}

fn topo6(mac: &str) -> Topo6 {
    let t = tag();
    let (srv, cli) = (Netns::with_prefix("v6s"), Netns::with_prefix("v6s"));
    no_dad(&srv);
    no_dad(&cli);
    let (srv_if, cli_if) = (format!("s6{t}"), format!("c6{t}"));
    veth(&srv, &srv_if, &cli, &cli_if);
    cli.ip(&["link", "set", &cli_if, "address", mac]);
    srv.ip(&[
        "-6",
        "addr",
        "add",
        "fd00:77::1/64",
        "dev",
        &srv_if,
        "nodad",
    ]);
    Topo6 {
        srv,
        cli,
        srv_if,
        cli_if,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

fn config(t: &Topo6) -> String {
    format!(
        r#"[storage]
path = "{data}"
[dhcp]
enabled = false
[dhcp6]
enabled = true
listen = "[::]:547"
interfaces = ["{srv_if}"]
per_client_rate = "50/s"
[gateway]
listen = "127.0.0.1:8080"
admin_token_file = "{data}/admin.token"
[[subnet6]]
id = "lab6"
prefix = "fd00:77::/64"
pools = ["fd00:77::100-fd00:77::1ff"]
dns = ["fd00:77::1"]
preferred_lifetime = "4s"
valid_lifetime = "8s"
pd_pools = [{{ prefix = "fd00:78::/48", delegated_len = 56 }}]
relays = ["fd00:77::2"]
"#,
        data = t.dir.path().join("data").display(),
        srv_if = t.srv_if
    )
}

/// `vpcbox run --headless` in the server namespace, once `/readyz` says so.
fn start(t: &Topo6) -> Proc {
    start_with(t, &config(t))
}

/// [`start`] with the config `text`.
fn start_with(t: &Topo6, text: &str) -> Proc {
    let path = t.dir.path().join("config.toml");
    std::fs::write(&path, text).expect("write config");
    let bin = crate::support::bin();
    let p = t.srv.spawn(
        bin.to_str().expect("utf-8"),
        &[
            "run",
            "--headless",
            "--config",
            path.to_str().expect("utf-8"),
        ],
    );
    if !eventually(Duration::from_secs(60), || {
        curl(t, &[], "/readyz").is_some()
    }) {
        p.signal("KILL");
        panic!("vpcbox not ready: {}", p.wait().1);
    }
    p
}

/// curl inside the server namespace; the body if it answered 2xx.
fn curl(t: &Topo6, args: &[&str], path: &str) -> Option<String> {
    let url = format!("http://127.0.0.1:8080{path}");
    let out = t
        .srv
        .command("curl")
        .args(["-sf"])
        .args(args)
        .arg(&url)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The admin API with the token vpcbox wrote.
fn admin(t: &Topo6, method: &str, path: &str, body: Option<&str>) -> Option<String> {
    let token = std::fs::read_to_string(t.dir.path().join("data/admin.token")).expect("token");
    let auth = format!("Authorization: Bearer {}", token.trim());
    let mut args = vec![
        "-X",
        method,
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
    ];
    if let Some(b) = body {
        args.extend(["-d", b]);
    }
    curl(t, &args, path)
}

/// The value of one `/metrics` series (0 when absent).
fn metric(t: &Topo6, series: &str) -> f64 {
    let text = curl(t, &[], "/metrics").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A dhclient hook logging "<reason> <address>" and configuring the
/// address on the interface, as the real dhclient-script would.
fn script(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("dhclient6.log");
    let path = dir.join("dhclient6.sh");
    let text = format!(
        "#!/bin/sh\necho \"$reason $new_ip6_address\" >> {log}\n[ -n \"$new_ip6_prefix\" ] && echo \"PD-$reason $new_ip6_prefix\" >> {log}\ncase \"$reason\" in\n  BOUND6|RENEW6|REBIND6|REBOOT6) ip -6 addr replace \"$new_ip6_address/128\" dev \"$interface\" nodad ;;\n  RELEASE6|EXPIRE6|STOP6) ip -6 addr del \"$old_ip6_address/128\" dev \"$interface\" ;;\nesac\nexit 0\n",
        log = log.display()
    );
    std::fs::write(&path, text).expect("script");
    sh("chmod", &["+x", path.to_str().expect("utf-8")]);
    (path, log)
}

/// Waits for a line `<reason> <address>` after line `after`; the address.
fn wait_reason(log: &Path, reason: &str, after: usize, limit: Duration) -> Option<Ipv6Addr> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let hit = text.lines().skip(after).find_map(|l| {
            let rest = l.strip_prefix(reason)?.strip_prefix(' ')?;
            rest.trim().parse().ok()
        });
        if hit.is_some() {
            return hit;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn lines(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().count())
}

/// Whether `addr` is configured on the client's interface.
fn configured(t: &Topo6, addr: Ipv6Addr) -> bool {
    let out = t.cli.ip(&["-6", "addr", "show", "dev", &t.cli_if]);
    String::from_utf8_lossy(&out.stdout).contains(&format!("{addr}/128"))
}

/// dhclient -6 (IA_NA, DUID-LL from the interface's MAC) in the client namespace.
fn dhclient(t: &Topo6, extra: &[&str]) -> Proc {
    let (s, _) = script(t.dir.path());
    let lf = t.dir.path().join("dhclient6.leases");
    let pf = t.dir.path().join("dhclient6.pid");
    let (s, lf, pf) = (
        s.to_str().expect("utf-8").to_owned(),
        lf.to_str().expect("utf-8").to_owned(),
        pf.to_str().expect("utf-8").to_owned(),
    );
    let mut args = vec!["-6", "-v", "-D", "LL", "-lf", &lf, "-pf", &pf, "-sf", &s];
    args.extend_from_slice(extra);
    args.push(&t.cli_if);
    t.cli.spawn("dhclient", &args)
}

fn in_pool(a: Ipv6Addr) -> bool {
    let (lo, hi): (Ipv6Addr, Ipv6Addr) = (
        "fd00:77::100".parse().unwrap(),
        "fd00:77::1ff".parse().unwrap(),
    );
    (lo..=hi).contains(&a)
}

#[test]
fn dhclient6_gets_renews_and_releases_an_address() {
    if !require_root("dhclient6_gets_renews_and_releases_an_address") {
        return;
    }
    let t = topo6("02:00:00:00:06:01");
    let _server = start(&t);
    let log = t.dir.path().join("dhclient6.log");
    let c = dhclient(&t, &["-d"]);
    let addr = wait_reason(&log, "BOUND6", 0, Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "no BOUND6: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(in_pool(addr), "{addr}");
    assert!(configured(&t, addr), "{addr} not on the client's interface");
    // Preferred lifetime 4 s: T1 is 2 s, so dhclient renews on its own.
    let n = lines(&log);
    assert_eq!(
        wait_reason(&log, "RENEW6", n, Duration::from_secs(20)),
        Some(addr)
    );
    let renewed = "vpcbox_dhcp_packets_total{type=\"renew\",result=\"reply\"}";
    assert!(eventually(Duration::from_secs(5), || metric(&t, renewed) >= 1.0));
    drop(c);
    // Release: dhclient -6 -r sends a Release and waits for our Reply.
    let (ok, out) = dhclient(&t, &["-r"]).wait();
    assert!(ok, "dhclient -6 -r: {out}");
    assert!(
        eventually(Duration::from_secs(10), || {
            metric(
                &t,
                "vpcbox_dhcp_packets_total{type=\"release\",result=\"reply\"}",
            ) >= 1.0
        }),
        "no Reply to the Release"
    );
    assert!(
        !configured(&t, addr),
        "{addr} still configured after release"
    );
    for series in [
        "vpcbox_dhcp_packets_total{type=\"solicit\",result=\"advertise\"}",
        "vpcbox_dhcp_packets_total{type=\"request\",result=\"reply\"}",
    ] {
        let seen = eventually(Duration::from_secs(5), || metric(&t, series) >= 1.0);
        assert!(seen, "{series}");
    }
    // The client shows in the clients table under its DUID (DUID-LL of its MAC).
    let clients = admin(&t, "GET", "/v1/clients", None).expect("/v1/clients");
    assert!(clients.contains("duid:00030001020000000601"), "{clients}");
}

#[test]
fn an_isolated_duid_gets_no_answer() {
    if !require_root("an_isolated_duid_gets_no_answer") {
        return;
    }
    let t = topo6("02:00:00:00:06:02");
    let _server = start(&t);
    let duid = "duid:00030001020000000602";
    admin(
        &t,
        "POST",
        "/v1/isolations",
        Some(&format!("{{\"client\": \"{duid}\"}}")),
    )
    .expect("isolate");
    let log = t.dir.path().join("dhclient6.log");
    let c = dhclient(&t, &["-d"]);
    // Solicits retransmit at 1, 2, 4 s: several reach the server and are dropped.
    let isolated = "vpcbox_client_drops_total{reason=\"isolated\"}";
    assert!(
        eventually(Duration::from_secs(15), || metric(&t, isolated) >= 2.0),
        "isolated drops: {}",
        metric(&t, isolated)
    );
    assert_eq!(wait_reason(&log, "BOUND6", 0, Duration::from_secs(1)), None);
    assert_eq!(
        metric(
            &t,
            "vpcbox_dhcp_packets_total{type=\"solicit\",result=\"advertise\"}"
        ),
        0.0
    );
    // Released: the same client is served.
    let path = format!("/v1/isolations/{}", duid.replace(':', "%3A"));
    admin(&t, "DELETE", &path, None).expect("release the isolation");
    let addr = wait_reason(&log, "BOUND6", 0, Duration::from_secs(30));
    assert!(addr.is_some_and(in_pool), "{addr:?}");
    drop(c);
}

/// A Solicit from `duid` (hand-built: header, Client Identifier,
/// Elapsed Time, one IA_NA).
fn solicit(xid: u8, duid: &[u8]) -> Vec<u8> {
    let mut m = vec![1, 0, 0, xid];
    opt(&mut m, 1, duid);
    opt(&mut m, 8, &[0, 0]);
    opt(&mut m, 3, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    m
}

fn opt(out: &mut Vec<u8>, code: u16, v: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(v.len() as u16).to_be_bytes());
    out.extend_from_slice(v);
}

/// A Relay-Forw from link `link` (Interface-Id "port1") around `msg`.
fn relay_forw(link: Ipv6Addr, msg: &[u8]) -> Vec<u8> {
    let mut m = vec![12, 0];
    m.extend_from_slice(&link.octets());
    m.extend_from_slice(&"fe80::99".parse::<Ipv6Addr>().unwrap().octets());
    opt(&mut m, 18, b"port1");
    opt(&mut m, 9, msg);
    m
}

/// What arrives on `s` within `wait`.
fn replies(s: &UdpSocket, wait: Duration) -> Vec<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 2048];
    while t0.elapsed() < wait {
        if let Ok(n) = s.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    got
}

/// Malformed datagrams (truncated option, an option running past the end,
/// a Relay-Repl, relay nesting past the hop limit, a bad DUID) sent to the
/// multicast group from a raw UDP socket are dropped and counted by reason,
/// never answered; a well-formed Solicit then still gets its Advertise.
/// Relayed: a trusted relay gets a Relay-Repl echoing its Interface-Id, an
/// untrusted one nothing; both are counted as relayed.
#[test]
fn malformed_and_untrusted_datagrams_are_dropped_counted_and_unanswered() {
    if !require_root("malformed_and_untrusted_datagrams_are_dropped_counted_and_unanswered") {
        return;
    }
    let t = topo6("02:00:00:00:06:03");
    t.cli.ip(&[
        "-6",
        "addr",
        "add",
        "fd00:77::2/64",
        "dev",
        &t.cli_if,
        "nodad",
    ]);
    t.cli.ip(&[
        "-6",
        "addr",
        "add",
        "fd00:77::3/64",
        "dev",
        &t.cli_if,
        "nodad",
    ]);
    let server = start(&t);
    let duid = [0, 3, 0, 1, 2, 0, 0, 0, 6, 3];
    let hop_limit = (0..33).fold(solicit(9, &duid), |m, _| {
        relay_forw("fd00:77::2".parse().unwrap(), &m)
    });
    let mut relay_repl = relay_forw("fd00:77::2".parse().unwrap(), &solicit(8, &duid));
    relay_repl[0] = 13;
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("truncated_option", vec![1, 0, 0, 1, 0, 1, 0]),
        ("option_overrun", vec![1, 0, 0, 2, 0, 1, 0, 200, 0, 3]),
        ("relay_reply", relay_repl),
        ("hop_limit", hop_limit),
        ("duid_length", vec![1, 0, 0, 3, 0, 1, 0, 1, 0]),
        ("too_short", vec![1, 0]),
    ];
    let cli_if = t.cli_if.clone();
    let to_send = malformed.clone();
    let (direct, relayed, untrusted) = t
        .cli
        .thread(move || {
            let idx = nix::net::if_::if_nametoindex(cli_if.as_str()).expect("ifindex");
            let group = SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, idx);
            let c = UdpSocket::bind("[::]:546").expect("bind 546");
            for (_, m) in &to_send {
                c.send_to(m, group).expect("send");
            }
            let silent = replies(&c, Duration::from_secs(2));
            c.send_to(&solicit(7, &duid), group).expect("send");
            let direct = (silent, replies(&c, Duration::from_secs(3)));
            // Relayed, from the trusted relay fd00:77::2 and from ::3.
            let server = SocketAddrV6::new("fd00:77::1".parse().unwrap(), 547, 0, 0);
            let r = UdpSocket::bind("[fd00:77::2]:547").expect("bind relay");
            let msg = relay_forw("fd00:77::2".parse().unwrap(), &solicit(6, &duid));
            r.send_to(&msg, server).expect("send");
            let relayed = replies(&r, Duration::from_secs(3));
            let u = UdpSocket::bind("[fd00:77::3]:547").expect("bind untrusted");
            let msg = relay_forw("fd00:77::3".parse().unwrap(), &solicit(5, &duid));
            u.send_to(&msg, server).expect("send");
            (direct, relayed, replies(&u, Duration::from_secs(2)))
        })
        .join()
        .expect("client thread");
    let (silent, answered) = direct;
    assert!(
        silent.is_empty(),
        "malformed datagrams answered: {silent:?}"
    );
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0][..4], [2, 0, 0, 7], "an Advertise for xid 7");
    for (reason, _) in &malformed {
        let series = format!("vpcbox_dhcp6_malformed_total{{reason=\"{reason}\"}}");
        let counted = eventually(Duration::from_secs(5), || metric(&t, &series) == 1.0);
        assert!(counted, "{series}: {}", metric(&t, &series));
    }
    let dropped = "vpcbox_dhcp_packets_total{type=\"malformed\",result=\"dropped\"}";
    assert!(metric(&t, dropped) >= 6.0);
    // The trusted relay: a Relay-Repl (hop count, link, peer, Interface-Id
    // echoed) around an Advertise.
    assert_eq!(relayed.len(), 1, "{relayed:?}");
    let r = &relayed[0];
    assert_eq!(r[0], 13, "a Relay-Repl");
    assert_eq!(r[2..18], "fd00:77::2".parse::<Ipv6Addr>().unwrap().octets());
    let w = r
        .windows(9)
        .any(|w| w == [0, 18, 0, 5, b'p', b'o', b'r', b't', b'1']);
    assert!(w, "Interface-Id echoed: {r:?}");
    let inner = r
        .windows(8)
        .position(|w| w[..2] == [0, 9] && w[4..] == [2, 0, 0, 6]);
    assert!(inner.is_some(), "an Advertise for xid 6 inside: {r:?}");
    assert!(
        untrusted.is_empty(),
        "untrusted relay answered: {untrusted:?}"
    );
    let untrusted_drops = "vpcbox_client_drops_total{reason=\"untrusted_relay\"}";
    assert!(eventually(Duration::from_secs(5), || metric(
        &t,
        untrusted_drops
    ) >= 1.0));
    // Relayed messages are counted under their inner type and again as
    // relayed: the trusted relay's Solicit answered, the untrusted one's
    // dropped, the hop-limit datagram malformed; the direct Solicit is not.
    let relayed = |ty: &str, result: &str| {
        let series =
            format!("vpcbox_dhcp6_relayed_packets_total{{type=\"{ty}\",result=\"{result}\"}}");
        metric(&t, &series)
    };
    for (ty, result) in [
        ("solicit", "advertise"),
        ("solicit", "dropped"),
        ("malformed", "dropped"),
    ] {
        let one = eventually(Duration::from_secs(5), || relayed(ty, result) == 1.0);
        assert!(one, "relayed {ty} {result}: {}", relayed(ty, result));
    }
    let all = "vpcbox_dhcp_packets_total{type=\"solicit\",result=\"advertise\"}";
    assert_eq!(metric(&t, all), 2.0, "the direct and the relayed Advertise");
    // Still alive, and SIGTERM stops it cleanly.
    assert!(curl(&t, &[], "/readyz").is_some());
    server.signal("TERM");
    let (ok, out) = server.wait();
    assert!(ok, "vpcbox after SIGTERM: {out}");
    assert!(out.contains("dhcp6 server stopped"), "{out}");
}

/// `[dhcp6] listen` on a port another socket holds: exit 69 naming it, as
/// for v4.
#[test]
fn a_taken_dhcp6_port_exits_69_naming_it() {
    let held = UdpSocket::bind("[::1]:0").expect("bind");
    let addr = held.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let text = format!(
        "[storage]\npath = \"{data}\"\n[dhcp]\nenabled = false\n[gateway]\nenabled = false\n[dhcp6]\nenabled = true\nlisten = \"{addr}\"\n",
        data = dir.path().join("data").display()
    );
    std::fs::write(&path, text).expect("config");
    let out = std::process::Command::new(crate::support::bin())
        .args([
            "run",
            "--headless",
            "--config",
            path.to_str().expect("utf-8"),
        ])
        .output()
        .expect("run vpcbox");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!("binding {addr} failed: address already in use")),
        "{stderr}"
    );
}

/// One DUID flooding Solicits is held to its own quota (`[dhcp6]
/// per_client_rate` 50/s, burst 20): most of its flood is dropped as
/// rate_limited, and another client's Solicit meanwhile gets its Advertise.
#[test]
fn a_flooding_duid_is_held_to_its_quota_and_others_are_served() {
    if !require_root("a_flooding_duid_is_held_to_its_quota_and_others_are_served") {
        return;
    }
    let t = topo6("02:00:00:00:06:04");
    let _server = start(&t);
    let cli_if = t.cli_if.clone();
    let (flood_answers, other) = t
        .cli
        .thread(move || {
            let idx = nix::net::if_::if_nametoindex(cli_if.as_str()).expect("ifindex");
            let group = SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, idx);
            let c = UdpSocket::bind("[::]:546").expect("bind 546");
            let flooder = [0, 3, 0, 1, 2, 0, 0, 0, 6, 0x66];
            for i in 0..500u32 {
                c.send_to(&solicit((i % 200) as u8, &flooder), group)
                    .expect("send");
            }
            c.send_to(&solicit(0xee, &[0, 3, 0, 1, 2, 0, 0, 0, 6, 0x77]), group)
                .expect("send");
            let got = replies(&c, Duration::from_secs(3));
            let other = got.iter().filter(|r| r[..4] == [2, 0, 0, 0xee]).count();
            (got.len() - other, other)
        })
        .join()
        .expect("client thread");
    assert_eq!(other, 1, "the other client's Advertise");
    assert!(
        flood_answers >= 20,
        "the flooder's burst is served: {flood_answers}"
    );
    assert!(
        flood_answers < 250,
        "the flooder was not limited: {flood_answers}"
    );
    let limited = "vpcbox_client_drops_total{reason=\"rate_limited\"}";
    assert!(
        eventually(Duration::from_secs(5), || metric(&t, limited) >= 250.0),
        "rate_limited drops: {}",
        metric(&t, limited)
    );
}

/// `dhclient -6 -P`: an IA_PD, and the prefix delegated is a /56 of the pool.
#[test]
fn dhclient6_gets_a_delegated_prefix() {
    if !require_root("dhclient6_gets_a_delegated_prefix") {
        return;
    }
    let t = topo6("02:00:00:00:06:05");
    let _server = start(&t);
    let log = t.dir.path().join("dhclient6.log");
    let _c = dhclient(&t, &["-P", "-d"]);
    let t0 = Instant::now();
    let prefix = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let hit = text.lines().find_map(|l| {
            let p = l.strip_prefix("PD-BOUND6 ")?;
            p.trim().parse::<ipnet::Ipv6Net>().ok()
        });
        if let Some(p) = hit {
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no PD-BOUND6: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let pool: ipnet::Ipv6Net = "fd00:78::/48".parse().unwrap();
    assert_eq!(prefix.prefix_len(), 56, "{prefix}");
    assert!(pool.contains(&prefix), "{prefix}");
}

/// A client message `kind` from `duid` with one IA_NA per IAID in `iaids`
/// (and the server's DUID, if given).
fn with_ias(kind: u8, xid: u8, duid: &[u8], server: Option<&[u8]>, iaids: &[u32]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, xid];
    opt(&mut m, 1, duid);
    if let Some(s) = server {
        opt(&mut m, 2, s);
    }
    opt(&mut m, 8, &[0, 0]);
    for iaid in iaids {
        let mut ia = iaid.to_be_bytes().to_vec();
        ia.extend_from_slice(&[0; 8]);
        opt(&mut m, 3, &ia);
    }
    m
}

/// The first datagram on `s` starting with `head`, waiting up to `wait`.
fn reply_to(s: &UdpSocket, head: [u8; 4], wait: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 2048];
    while t0.elapsed() < wait {
        if let Ok(n) = s.recv(&mut buf) {
            if buf[..n].starts_with(&head) {
                return Some(buf[..n].to_vec());
            }
        }
    }
    None
}

/// The top-level options of a reply: `(code, value)`.
fn options(reply: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = reply.get(4..).unwrap_or_default();
    while let [c0, c1, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*l0, *l1])).min(tail.len());
        out.push((u16::from_be_bytes([*c0, *c1]), &tail[..len]));
        rest = &tail[len..];
    }
    out
}

/// The IA_NAs of a reply given an address (an IAADDR sub-option), and
/// those answered NoAddrsAvail (status 2).
fn ia_na_outcomes(reply: &[u8]) -> (usize, usize) {
    let (mut given, mut none) = (0, 0);
    for (_, ia) in options(reply).into_iter().filter(|(c, _)| *c == 3) {
        let mut sub = vec![0, 0, 0, 0];
        sub.extend_from_slice(ia.get(12..).unwrap_or_default());
        for (code, v) in options(&sub) {
            match code {
                5 => given += 1,
                13 if v.starts_with(&[0, 2]) => none += 1,
                _ => {}
            }
        }
    }
    (given, none)
}

/// One DUID asking for many IA_NAs: a message with 100 is refused whole
/// (counted malformed, unanswered); 13 Requests of 8 new IAIDs each (104)
/// bind 8 (`IA_CAP6`), every other IA is answered NoAddrsAvail, and the
/// API lists 8 bindings for the DUID. Fails without the per-DUID cap.
#[test]
fn one_duid_gets_at_most_its_cap_of_ias_whatever_it_asks() {
    if !require_root("one_duid_gets_at_most_its_cap_of_ias_whatever_it_asks") {
        return;
    }
    let t = topo6("02:00:00:00:06:06");
    // Bindings that outlive the test, however slowly it runs.
    let _server = start_with(
        &t,
        &config(&t)
            .replace("\"4s\"", "\"30m\"")
            .replace("\"8s\"", "\"1h\""),
    );
    let cli_if = t.cli_if.clone();
    let duid = [0, 3, 0, 1, 2, 0, 0, 0, 6, 6];
    let (hundred, outcomes) = t
        .cli
        .thread(move || {
            let idx = nix::net::if_::if_nametoindex(cli_if.as_str()).expect("ifindex");
            let group = SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, idx);
            let c = UdpSocket::bind("[::]:546").expect("bind 546");
            let all: Vec<u32> = (0..100).collect();
            c.send_to(&with_ias(1, 1, &duid, None, &all), group)
                .expect("send");
            let hundred = replies(&c, Duration::from_secs(1));
            c.send_to(&with_ias(1, 2, &duid, None, &all[..8]), group)
                .expect("send");
            let adv = reply_to(&c, [2, 0, 0, 2], Duration::from_secs(5));
            let server = options(&adv.expect("an Advertise"))
                .into_iter()
                .find(|(c, _)| *c == 2)
                .expect("a Server Identifier")
                .1
                .to_vec();
            let mut outcomes = Vec::new();
            for (i, iaids) in (0..104u32).collect::<Vec<_>>().chunks(8).enumerate() {
                let xid = 10 + i as u8;
                let req = with_ias(3, xid, &duid, Some(&server), iaids);
                c.send_to(&req, group).expect("send");
                let reply = reply_to(&c, [7, 0, 0, xid], Duration::from_secs(5));
                outcomes.push(ia_na_outcomes(&reply.expect("a Reply")));
            }
            (hundred, outcomes)
        })
        .join()
        .expect("client thread");
    assert!(hundred.is_empty(), "100 IA_NAs answered: {hundred:?}");
    let given: usize = outcomes.iter().map(|o| o.0).sum();
    let refused: usize = outcomes.iter().map(|o| o.1).sum();
    assert_eq!((given, refused), (8, 96), "{outcomes:?}");
    let leases = admin(
        &t,
        "GET",
        "/v1/leases?client=duid%3A00030001020000000606",
        None,
    )
    .expect("/v1/leases");
    let v: serde_json::Value = serde_json::from_str(&leases).expect("json");
    assert_eq!(v["leases"].as_array().map(Vec::len), Some(8), "{v}");
    let malformed = "vpcbox_dhcp_packets_total{type=\"malformed\",result=\"dropped\"}";
    assert!(eventually(Duration::from_secs(5), || metric(&t, malformed) >= 1.0));
}

/// The address of the IA_NA in an Advertise or Reply, if one was given.
fn given_address(reply: &[u8]) -> Option<Ipv6Addr> {
    let (_, ia) = options(reply).into_iter().find(|(c, _)| *c == 3)?;
    let mut sub = vec![0, 0, 0, 0];
    sub.extend_from_slice(ia.get(12..)?);
    let (_, a) = options(&sub).into_iter().find(|(c, _)| *c == 5)?;
    Some(Ipv6Addr::from(<[u8; 16]>::try_from(a.get(..16)?).ok()?))
}

/// A Solicit from a raw socket on the client's link; the address advertised.
fn solicit_once(t: &Topo6, xid: u8) -> Option<Ipv6Addr> {
    let cli_if = t.cli_if.clone();
    t.cli
        .thread(move || {
            let idx = nix::net::if_::if_nametoindex(cli_if.as_str()).expect("ifindex");
            let group = SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, idx);
            let c = UdpSocket::bind("[::]:546").expect("bind 546");
            let duid = [0, 3, 0, 1, 2, 0, 0, 0, 6, 7];
            c.send_to(&solicit(xid, &duid), group).expect("send");
            reply_to(&c, [2, 0, 0, xid], Duration::from_secs(5))
        })
        .join()
        .expect("client thread")
        .and_then(|r| given_address(&r))
}

/// A v6 subnet added through the API on a running server (whose config
/// has another) is served at once; after a restart the store still has
/// it beside the configured one, and serves it (config and API subnets
/// combine as v4's do).
#[test]
fn a_subnet6_added_through_the_api_is_served_at_once_and_after_a_restart() {
    if !require_root("a_subnet6_added_through_the_api_is_served_at_once_and_after_a_restart") {
        return;
    }
    let t = topo6("02:00:00:00:06:07");
    let cfg = config(&t);
    let cfg = cfg.replace("fd00:77:", "fd00:88:").replace("lab6", "cfg6");
    let server = start_with(&t, &cfg);
    assert_eq!(solicit_once(&t, 1), None, "no subnet serves the link yet");
    let body = r#"{"family": 6, "id": "api6", "prefix": "fd00:77::/64",
        "pools": [{"start": "fd00:77::500", "end": "fd00:77::5ff"}],
        "dns": ["fd00:77::1"]}"#;
    admin(&t, "POST", "/v1/subnets", Some(body)).expect("POST /v1/subnets");
    let pool = "fd00:77::500".parse::<Ipv6Addr>().unwrap()..="fd00:77::5ff".parse().unwrap();
    let in_api_pool = |a: Ipv6Addr| pool.contains(&a);
    let a = solicit_once(&t, 2);
    assert!(a.is_some_and(in_api_pool), "{a:?}");
    server.signal("TERM");
    assert!(server.wait().0, "vpcbox after SIGTERM");
    let _server = start_with(&t, &cfg);
    let listed = curl(&t, &[], "/v1/subnets").expect("/v1/subnets");
    let v: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let mut ids: Vec<&str> = v["subnets"]
        .as_array()
        .expect("subnets")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["api6", "cfg6"], "{v}");
    let b = solicit_once(&t, 3);
    assert!(b.is_some_and(in_api_pool), "{b:?}");
}
