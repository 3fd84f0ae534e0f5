//! A random-identity DHCP flood against the spawned binary, from outside
//! the process: every DISCOVER claims a new MAC or a new client-id. The
//! per-client quota map must stay at `dhcp.max_client_quotas` (read from
//! `/metrics`), and the identities past it must share one quota.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption as O, MessageType as M};

use crate::dhcp_support::{packet, send_burst};
use crate::support::{eventually, free_port, Running};

const CAP: u64 = 2_000;
const RELAY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn config(dir: &std::path::Path, dhcp: u16, http: u16) -> std::path::PathBuf {
    let text = format!(
        r#"[storage]
path = "{data}"
[dhcp]
listen = "127.0.0.1:{dhcp}"
server_id = "10.0.0.1"
max_client_quotas = {CAP}
global_rate = "1000000/s"
[gateway]
listen = "127.0.0.1:{http}"
admin_token_file = "{data}/admin.token"
[[subnet]]
id = "lab"
cidr = "10.0.0.0/24"
pools = ["10.0.0.100-10.0.0.199"]
relays = ["127.0.0.2"]
"#,
        data = dir.join("data").display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// `name value` from a Prometheus text page (an unlabelled series).
fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf
}

/// DISCOVERs relayed from 127.0.0.2, each with identity `i`: even ones a
/// fresh MAC, odd ones a fresh 12-byte client-id (option 61).
fn discovers(from: u32, n: u32) -> Vec<Vec<u8>> {
    (from..from + n)
        .map(|i| {
            let b = i.to_be_bytes();
            let mac = [2, 0xfe, b[0], b[1], b[2], b[3]];
            packet(M::Discover, mac, RELAY, |m| {
                if i % 2 == 1 {
                    let id = [0xff, 0, 0, 0, 0, 0, 0, 0, b[0], b[1], b[2], b[3]];
                    m.opts_mut().insert(O::ClientIdentifier(id.to_vec()));
                }
            })
        })
        .collect()
}

#[test]
fn random_identity_flood_keeps_the_quota_map_at_its_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dhcp, http) = (free_port(), free_port());
    let mut vb = Running::start(&config(dir.path(), dhcp, http));
    assert!(
        eventually(Duration::from_secs(10), || metric(
            &metrics(http),
            "vpcbox_dhcp_tracked_clients"
        )
        .is_some()),
        "no metrics: {}",
        vb.stderr()
    );
    let sock = UdpSocket::bind((RELAY, 0)).expect("bind relay");
    let to = SocketAddr::from(([127, 0, 0, 1], dhcp));
    // Built before the flood, so the sender is not the bottleneck.
    let packets = discovers(0, 60_000);
    let t0 = Instant::now();
    let mut peak = 0.0f64;
    let mut next_look = t0;
    let mut sent = 0;
    for chunk in packets.chunks(64) {
        send_burst(&sock, to, chunk);
        sent += chunk.len();
        // About 15,000 new identities a second for four seconds.
        let due = t0 + Duration::from_secs_f64(sent as f64 / 15_000.0);
        while Instant::now() < due {
            std::thread::sleep(Duration::from_millis(1));
        }
        if Instant::now() >= next_look {
            let page = metrics(http);
            peak = peak.max(metric(&page, "vpcbox_dhcp_tracked_clients").unwrap_or(0.0));
            next_look = Instant::now() + Duration::from_millis(200);
        }
    }
    // The gauge is taken once a second: look for two more.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        let page = metrics(http);
        peak = peak.max(metric(&page, "vpcbox_dhcp_tracked_clients").unwrap_or(0.0));
    }
    let page = metrics(http);
    let limited = page
        .lines()
        .find_map(|l| {
            l.strip_prefix("vpcbox_client_drops_total{reason=\"rate_limited\"} ")?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0);
    let received: f64 = page
        .lines()
        .filter(|l| l.starts_with("vpcbox_dhcp_packets_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(
        received > 4.0 * CAP as f64,
        "the server saw only {received} packets; the flood did not reach it"
    );
    assert!(peak > 0.0, "the gauge never moved");
    assert!(peak <= CAP as f64, "{peak} keys tracked, cap {CAP}");
    assert!(
        limited > received / 4.0,
        "identities past the cap share one quota: only {limited} of {received} rate-limited"
    );
}
