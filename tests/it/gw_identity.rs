//! Who an API request is charged to, attacked from outside against the real
//! `vpcbox run --headless`: a client that invents a new bearer token per
//! request, and a flood of new source addresses past the quota map's cap.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::support::{eventually, write_config, Running};

const TOKEN: &str = "identity-test-admin-token";

/// A headless vpcbox with `gateway` lines in `[gateway]` and a known admin
/// token; returns it and its HTTP port.
fn start(dir: &Path, gateway: &str) -> (Running, u16) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    crate::support::write_token(&dir.join("data/admin.token"), TOKEN);
    let (cfg, _, port) = write_config(dir, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace("[gateway]\n", &format!("[gateway]\n{gateway}\n"));
    std::fs::write(&cfg, text).unwrap();
    let mut vb = Running::start(&cfg);
    // Every probe comes from 127.0.0.1 and spends its quota: a 429 too
    // says the gateway is serving.
    let ready = eventually(Duration::from_secs(10), || {
        Conn::open("127.0.0.1", port).is_some_and(|mut c| {
            let code = c.get("/readyz", None).0;
            code == 200 || code == 429
        })
    });
    assert!(ready, "vpcbox never became ready: {}", vb.stderr());
    (vb, port)
}

/// One HTTP/1.1 keep-alive connection from a chosen loopback address.
struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(from: &str, port: u16) -> Option<Self> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
        let local: SocketAddr = format!("{from}:0").parse().unwrap();
        sock.bind(&local.into()).ok()?;
        let remote: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        sock.connect_timeout(&remote.into(), Duration::from_secs(2))
            .ok()?;
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        Some(Self {
            r: BufReader::new(s),
        })
    }

    /// `(status, body)` of `GET path`, with `Authorization: Bearer token`.
    fn get(&mut self, path: &str, token: Option<&str>) -> (u16, String) {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
        self.r.get_mut().write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut len = 0;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// One request on a fresh connection from `from`: its status.
fn once(from: &str, port: u16, token: Option<&str>) -> u16 {
    Conn::open(from, port)
        .expect("connect")
        .get("/healthz", token)
        .0
}

#[test]
fn a_new_random_token_per_request_does_not_escape_the_ip_quota() {
    let dir = tempfile::tempdir().unwrap();
    let (_vb, port) = start(
        dir.path(),
        "per_client_rate = \"5/s\"\nper_client_burst = 10",
    );
    let mut c = Conn::open("127.0.0.5", port).unwrap();
    let t0 = std::time::Instant::now();
    let codes: Vec<u16> = (0..40)
        .map(|i| {
            let invented = format!("invented-{i}-{:x}", std::process::id());
            c.get("/healthz", Some(&invented)).0
        })
        .collect();
    let served = codes.iter().filter(|s| **s == 200).count();
    let limited = codes.iter().filter(|s| **s == 429).count();
    assert_eq!(served + limited, 40, "{codes:?}");
    // The burst (10) and what 5/s refills while the 40 are sent.
    let refilled = (5.0 * t0.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        served >= 10 && served <= 10 + refilled + 1,
        "served {served} of 40 invented tokens: {codes:?}"
    );
    // None of the invented tokens became a client of the dashboard.
    let admin = Conn::open("127.0.0.2", port)
        .unwrap()
        .get("/v1/clients", Some(TOKEN));
    assert_eq!(admin.0, 200, "{}", admin.1);
    let admin_key = vpcbox::client::ClientKey::token(TOKEN.as_bytes()).to_string();
    let tokens = admin.1.matches("\"token:").count();
    let ours = admin.1.matches(&format!("\"{admin_key}\"")).count();
    assert_eq!(
        tokens, ours,
        "only the verified token is a client: {}",
        admin.1
    );
}

#[test]
fn the_admin_token_is_a_client_of_its_own_but_spends_its_ip_quota() {
    let dir = tempfile::tempdir().unwrap();
    let (_vb, port) = start(
        dir.path(),
        "per_client_rate = \"1/m\"\nper_client_burst = 3",
    );
    let mut c = Conn::open("127.0.0.3", port).unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("/healthz", None).0, 200);
    }
    // The IP's burst is spent: the verified token does not bring another.
    let (code, body) = c.get("/v1/clients", Some(TOKEN));
    assert_eq!(code, 429, "{body}");
    // From an address with quota left it is served, and listed as itself.
    let admin_key = vpcbox::client::ClientKey::token(TOKEN.as_bytes()).to_string();
    let mut n = 0;
    let listed = eventually(Duration::from_secs(5), || {
        n += 1;
        let (code, body) = Conn::open(&format!("127.0.4.{n}"), port)
            .unwrap()
            .get("/v1/clients", Some(TOKEN));
        assert_ne!(code, 429, "{body}");
        body.contains(&admin_key)
    });
    assert!(listed, "the admin token's row");
}

#[test]
fn past_the_quota_map_cap_new_source_addresses_share_one_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let (_vb, port) = start(
        dir.path(),
        "per_client_rate = \"1/m\"\nper_client_burst = 2\nmax_quota_clients = 50",
    );
    // 50 addresses fill the map (the readiness probes came from 127.0.0.1).
    for i in 1..50 {
        assert_eq!(once(&format!("127.9.0.{i}"), port, None), 200, "{i}");
    }
    // Each new address past the cap draws on one shared bucket of burst 2.
    let fresh: Vec<u16> = (1..=20)
        .map(|i| once(&format!("127.9.1.{i}"), port, None))
        .collect();
    let served = fresh.iter().filter(|s| **s == 200).count();
    assert!(served <= 3, "new addresses past the cap: {fresh:?}");
    // An address that has its own entry keeps its own quota.
    assert_eq!(once("127.9.0.7", port, None), 200);
    assert_eq!(once("127.9.0.7", port, None), 429);
}
