//! `vpcbox run --headless`: starts, and stops cleanly on SIGTERM / SIGINT.

use std::time::Duration;

use crate::support::{write_config, Running};

#[test]
fn sigterm_drains_and_exits_zero_within_the_grace_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), "");
    let mut vb = Running::start(&cfg);
    vb.wait_ready(http);
    vb.signal("TERM");
    let code = vb.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{}", vb.stderr());
    assert!(vb.stderr().contains("shutting down"));
}

#[test]
fn sigint_is_quick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), "");
    let mut vb = Running::start(&cfg);
    vb.wait_ready(http);
    vb.signal("INT");
    assert_eq!(vb.wait(Duration::from_secs(2)), Some(0), "{}", vb.stderr());
}

#[test]
fn sighup_applies_a_valid_config_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), "");
    let original = std::fs::read_to_string(&cfg).expect("read");
    let mut vb = Running::start(&cfg);
    assert!(crate::support::eventually(
        Duration::from_secs(10),
        || get_status(http, "/healthz") == 200
    ));
    assert_eq!(get_status(http, "/added/x"), 404, "no such route yet");
    // A broken config: refused, the process keeps running.
    std::fs::write(&cfg, format!("{original}\n[tui]\nrefresh = \"never\"\n")).expect("write");
    vb.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        vb.child.try_wait().expect("try_wait").is_none(),
        "died on a bad reload"
    );
    // A valid change, with a new route: applied. Nothing listens on the
    // upstream's port, so the route answers 502 where there was a 404.
    let route = "[[route]]\nprefix = \"/added/\"\nupstream = \"http://127.0.0.1:9\"\n";
    std::fs::write(
        &cfg,
        format!("{original}\n{route}[tui]\nrefresh = \"500ms\"\n"),
    )
    .expect("write");
    vb.signal("HUP");
    assert!(crate::support::eventually(
        Duration::from_secs(5),
        || get_status(http, "/added/x") == 502
    ));
    vb.signal("TERM");
    assert_eq!(vb.wait(Duration::from_secs(15)), Some(0));
    let log = vb.stderr();
    assert!(
        log.contains(
            "config reload refused, keeping the old config: tui.refresh: 'never' is not a duration"
        ),
        "{log}"
    );
    assert!(log.contains("config reloaded from"), "{log}");
    assert!(log.contains("gateway routes reloaded"), "{log}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), "");
    let child = std::process::Command::new(crate::support::bin())
        .args(["run", "--headless", "--log-format", "json", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut vb = Running { child };
    vb.wait_ready(http);
    vb.signal("TERM");
    assert_eq!(vb.wait(Duration::from_secs(15)), Some(0));
    let log = vb.stderr();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
}

/// One HTTP/1.1 GET; the status code (0 if nothing answered).
fn get_status(port: u16, path: &str) -> u16 {
    let reply = get_body(port, path);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn sighup_applies_a_changed_rate_to_the_running_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), "");
    let original = std::fs::read_to_string(&cfg).expect("read");
    let mut vb = Running::start(&cfg);
    assert!(crate::support::eventually(
        Duration::from_secs(10),
        || get_status(http, "/healthz") == 200
    ));
    let before: Vec<u16> = (0..10).map(|_| get_status(http, "/healthz")).collect();
    assert!(before.iter().all(|c| *c == 200), "{before:?}");
    let slow = original.replace(
        "[gateway]\n",
        "[gateway]\nper_client_rate = \"1/m\"\nper_client_burst = 2\n",
    );
    std::fs::write(&cfg, slow).expect("write");
    vb.signal("HUP");
    let limited = crate::support::eventually(Duration::from_secs(5), || {
        (0..3)
            .map(|_| get_status(http, "/healthz"))
            .any(|c| c == 429)
    });
    vb.signal("TERM");
    assert_eq!(vb.wait(Duration::from_secs(15)), Some(0));
    let log = vb.stderr();
    assert!(limited, "the reloaded 1/m rate never limited: {log}");
    assert!(log.contains("gateway limits reloaded"), "{log}");
    assert!(log.contains("dhcp quotas reloaded"), "{log}");
    assert!(log.contains("memory marks reloaded"), "{log}");
}

/// One HTTP/1.1 GET; the whole reply, head and body (empty if refused).
fn get_body(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .expect("write");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf
}

#[test]
fn headless_serves_health_readiness_and_every_design_metric() {
    let dir = tempfile::tempdir().expect("tempdir");
    let subnet =
        "[[subnet]]\nid = \"lab\"\ncidr = \"10.0.0.0/24\"\npools = [\"10.0.0.100-10.0.0.199\"]\n";
    let (cfg, _, http) = write_config(dir.path(), subnet);
    let mut vb = Running::start(&cfg);
    assert!(crate::support::eventually(
        Duration::from_secs(10),
        || get_status(http, "/readyz") == 200
    ));
    assert_eq!(get_status(http, "/healthz"), 200);
    // Snapshots are published every 250 ms: let one include those requests.
    std::thread::sleep(Duration::from_millis(600));
    let metrics = get_body(http, "/metrics");
    let names: std::collections::HashSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty() && l.starts_with("vpcbox_"))
        .map(|l| l.split(['{', ' ']).next().unwrap_or(""))
        .collect();
    for want in [
        "vpcbox_dhcp_packets_total",
        "vpcbox_dhcp_queue_depth",
        "vpcbox_ipam_leases",
        "vpcbox_ipam_commit_seconds_bucket",
        "vpcbox_gateway_requests_total",
        "vpcbox_gateway_pending",
        "vpcbox_gateway_streams",
        "vpcbox_memory_rss_bytes",
        "vpcbox_heap_allocated_bytes",
        "vpcbox_heap_resident_bytes",
        "vpcbox_heap_shrinks_total",
        "vpcbox_overload_state",
        "vpcbox_isolated_clients",
        "vpcbox_client_drops_total",
    ] {
        assert!(
            names.contains(want),
            "{want} missing from /metrics:\n{metrics}"
        );
    }
    vb.signal("TERM");
    assert_eq!(vb.wait(Duration::from_secs(15)), Some(0));
    assert!(vb.stderr().contains("store flushed"));
}
