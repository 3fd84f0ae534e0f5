//! What is public, from outside the process: per-client metrics need the
//! token, lease listings come in bounded pages, and secrets on disk that
//! others can read stop the start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cert::self_signed;
use crate::support::{bin, eventually, write_config, Running};

/// One HTTP/1.1 GET; (status, body). `token` goes into `Authorization`.
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n"
    )
    .expect("write");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

fn token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/admin.token"))
        .expect("token")
        .trim()
        .to_owned()
}

fn started(http: u16) -> bool {
    eventually(Duration::from_secs(10), || {
        get(http, "/healthz", None).0 == 200
    })
}

const PER_CLIENT: &str = "vpcbox_client_rate{client=";

#[test]
fn metrics_name_clients_only_with_the_token_or_the_switch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), "");
    let mut vb = Running::start(&cfg);
    assert!(started(http));
    let t = token(dir.path());
    // The published snapshot must include these requests.
    assert!(eventually(Duration::from_secs(5), || {
        get(http, "/metrics", Some(&t)).1.contains(PER_CLIENT)
    }));
    let (status, public) = get(http, "/metrics", None);
    assert_eq!(status, 200);
    assert!(!public.contains(PER_CLIENT), "{public}");
    assert!(!public.contains("vpcbox_client_pending{"), "{public}");
    assert!(
        public.contains("vpcbox_client_drops_total"),
        "aggregates stay public"
    );
    assert!(public.contains("vpcbox_gateway_requests_total"));

    // The switch, applied by SIGHUP.
    let text = std::fs::read_to_string(&cfg).expect("read");
    let open = text.replace("[gateway]\n", "[gateway]\npublic_client_metrics = true\n");
    std::fs::write(&cfg, open).expect("write");
    vb.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || {
        get(http, "/metrics", None).1.contains(PER_CLIENT)
    }));
    vb.signal("TERM");
    assert_eq!(vb.wait(Duration::from_secs(15)), Some(0));
    let log = vb.stderr();
    assert!(
        log.contains("applied live: gateway.public_client_metrics"),
        "{log}"
    );
}

/// Starts vpcbox and expects exit 69 with `want` on stderr.
fn refused(cfg: &Path, want: &[&str]) {
    let mut vb = Running::start(cfg);
    let code = vb.wait(Duration::from_secs(10));
    if code.is_none() {
        let _ = vb.child.kill(); // so stderr ends
    }
    let log = vb.stderr();
    assert_eq!(code, Some(69), "{log}");
    for w in want {
        assert!(log.contains(w), "{w:?} not in: {log}");
    }
}

#[test]
fn an_admin_token_file_others_can_read_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), "");
    let file = dir.path().join("data/admin.token");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    std::fs::write(&file, format!("{}\n", "7".repeat(64))).expect("write");
    let path = file.display().to_string();
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        refused(&cfg, &[&path, &format!("has mode {mode:04o}")]);
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let _vb = Running::start(&cfg);
    assert!(started(http), "a 0600 token file starts");
}

#[test]
fn a_tls_key_its_group_can_read_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let tls = format!(
        "[gateway.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let (cfg, _, http) = write_config(dir.path(), &tls);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    refused(&cfg, &[&key.display().to_string(), "has mode 0640"]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut vb = Running::start(&cfg);
    let up = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", http)).is_ok()
    });
    assert!(up, "a 0600 key starts: {}", {
        let _ = vb.child.kill();
        vb.stderr()
    });
}

/// Bound leases in 10.8.0.0/16, more than one page may read.
const LEASES: u32 = 12_000;

/// A store holding [`LEASES`] bound leases, made with `vpcbox db import`.
fn big_store(cfg: &Path, dir: &Path) {
    let leases: Vec<serde_json::Value> = (0..LEASES)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 8, 0, 10)) + i);
            serde_json::json!({
                "ip": ip.to_string(), "subnet": "big",
                "client": format!("mac:02:00:00:00:{:02x}:{:02x}", i >> 8, i & 0xff),
                "state": "bound", "expires_at": 4_000_000_000u64,
                "updated_at": 1_700_000_000u64, "hostname": null,
            })
        })
        .collect();
    let dump = serde_json::json!({
        "schema": 1,
        "subnets": [{"id": "big", "cidr": "10.8.0.0/16",
                     "pools": [{"start": "10.8.0.10", "end": "10.8.255.200"}],
                     "gateway": null, "lease_time": "1h"}],
        "reservations": [], "leases": leases, "isolations": [],
    });
    let file = dir.join("dump.json");
    std::fs::write(&file, dump.to_string()).expect("write dump");
    let out = Command::new(bin())
        .args(["db", "import", "--config"])
        .arg(cfg)
        .arg(&file)
        .output()
        .expect("import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn lease_listing_comes_in_bounded_pages_with_a_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), "");
    big_store(&cfg, dir.path());
    let _vb = Running::start(&cfg);
    assert!(started(http));

    // A filter that matches nothing reads a bounded part of the store, and
    // says where to go on.
    let (status, body) = get(http, "/v1/leases?state=expired&limit=10", None);
    assert_eq!(status, 200, "{body}");
    let page = json(&body);
    assert_eq!(page["leases"], serde_json::json!([]), "{body}");
    let next = page["next_cursor"].as_str().expect("a next_cursor");
    let (_, rest) = get(
        http,
        &format!("/v1/leases?state=expired&cursor={next}"),
        None,
    );
    assert_eq!(
        json(&rest)["next_cursor"],
        serde_json::Value::Null,
        "{rest}"
    );

    // Pages follow each other in address order.
    let page1 = json(&get(http, "/v1/leases?limit=3", None).1);
    let ips = |p: &serde_json::Value| -> Vec<String> {
        p["leases"]
            .as_array()
            .expect("leases")
            .iter()
            .map(|l| l["ip"].as_str().expect("ip").to_owned())
            .collect()
    };
    assert_eq!(ips(&page1), ["10.8.0.10", "10.8.0.11", "10.8.0.12"]);
    assert_eq!(page1["next_cursor"], "10.8.0.12");
    assert_eq!(page1["truncated"], true);
    let page2 = json(&get(http, "/v1/leases?limit=3&cursor=10.8.0.12", None).1);
    assert_eq!(ips(&page2), ["10.8.0.13", "10.8.0.14", "10.8.0.15"]);

    let (status, bad) = get(http, "/v1/leases?cursor=nope", None);
    assert_eq!(status, 422, "{bad}");
    assert_eq!(json(&bad)["error"]["code"], "invalid");
    let (status, _) = get(http, "/v1/leases?limit=10001", None);
    assert_eq!(status, 422, "the page size is bounded");

    // The admin CLI follows the cursor.
    let cli = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .expect("vpcbox leases");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(cli(&["leases", "--state", "expired"]), "no leases\n");
    let all = json(&cli(&["leases", "--limit", "11000", "--json"]));
    assert_eq!(all["leases"].as_array().expect("leases").len(), 11_000);
    assert_eq!(all["truncated"], true);
    let rest = json(&cli(&["leases", "--limit", "20000", "--json"]));
    assert_eq!(
        rest["leases"].as_array().expect("leases").len(),
        LEASES as usize
    );
    assert_eq!(rest["truncated"], false);
}

/// Runs vpcbox (one gateway thread, the default) under strace with every
/// fsync, fdatasync and sync_file_range (sled's flush) slowed by 400 ms, and
/// runs `during` against it (HTTP port, admin token).
fn with_slow_fsync(during: impl FnOnce(u16, &str)) {
    /// Kills strace and its vpcbox however the test ends.
    struct Traced(std::process::Child);
    impl Drop for Traced {
        fn drop(&mut self) {
            let children = format!("/proc/{0}/task/{0}/children", self.0.id());
            if let Ok(c) = std::fs::read_to_string(children) {
                for pid in c.split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), "");
    let syncs = "fsync,fdatasync,sync_file_range";
    let _traced = Traced(
        Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-o",
                "/dev/null",
                "-e",
                &format!("trace={syncs}"),
            ])
            .args(["-e", &format!("inject={syncs}:delay_enter=400000")])
            .arg(bin())
            .args(["run", "--headless", "--config"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("strace is needed (apt-get install -y strace)"),
    );
    assert!(started(http), "vpcbox under strace did not start");
    during(http, &token(dir.path()));
}

/// One request; (status line, how long the answer took).
fn timed(http: u16, method: &str, path: &str, token: &str, body: &str) -> (String, Duration) {
    use std::io::{Read, Write};
    let t0 = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let status = reply.lines().next().unwrap_or("").to_owned();
    (status, t0.elapsed())
}

#[test]
fn isolation_changes_fsync_off_the_gateway_thread() {
    with_slow_fsync(|http, token| {
        for (method, path, body) in [
            (
                "POST",
                "/v1/isolations",
                r#"{"client":"mac:02:00:00:00:00:42"}"#,
            ),
            ("DELETE", "/v1/isolations/mac:02:00:00:00:00:42", ""),
        ] {
            let change = std::thread::scope(|s| {
                let change = s.spawn(|| timed(http, method, path, token, body));
                std::thread::sleep(Duration::from_millis(100));
                // The same (only) gateway thread answers this meanwhile.
                let (status, took) = timed(http, "GET", "/healthz", token, "");
                assert!(status.contains(" 200"), "{status}");
                assert!(
                    took < Duration::from_millis(250),
                    "/healthz waited {took:?} behind the {method}'s fsync"
                );
                change.join().expect("change")
            });
            assert!(change.0.contains(" 20"), "{change:?}");
            assert!(
                change.1 >= Duration::from_millis(400),
                "durable: waited for its fsync {change:?}"
            );
        }
    });
}
