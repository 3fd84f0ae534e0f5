//! SIGHUP says what it did: keys it cannot apply live are named in the
//! reload log line, and `vpcbox check --diff` lists them before the reload.

use std::time::Duration;

use crate::support::{eventually, vpcbox, write_config, Running};

fn healthy(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn sighup_names_each_changed_key_that_needs_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), "");
    let original = std::fs::read_to_string(&cfg).expect("read");
    let mut vb = Running::start(&cfg);
    assert!(eventually(Duration::from_secs(10), || healthy(http)));
    let changed = original
        .replace(
            "[gateway]\n",
            "[gateway]\nmax_body = \"2MiB\"\nper_client_rate = \"50/s\"\n",
        )
        .replace("[dhcp]\n", "[dhcp]\nworkers = 3\n");
    std::fs::write(&cfg, changed).expect("write");
    vb.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    // A second reload that changes only a live key still names the
    // restart-only keys: they are still not in effect.
    let again = std::fs::read_to_string(&cfg)
        .expect("read")
        .replace("per_client_rate = \"50/s\"", "per_client_rate = \"60/s\"");
    std::fs::write(&cfg, again).expect("write");
    vb.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    vb.signal("TERM");
    assert_eq!(vb.wait(Duration::from_secs(15)), Some(0));
    let log = vb.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("config reloaded from"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    for line in &lines {
        assert!(
            line.contains("applied live: gateway.per_client_rate"),
            "{line}"
        );
        assert!(
            line.contains(
                "NOT applied, need a restart (old values kept): dhcp.workers, gateway.max_body"
            ),
            "{line}"
        );
    }
}

#[test]
fn check_diff_lists_changed_keys_and_what_a_reload_does_with_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, _, _) = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&running).expect("read");
    let new = dir.path().join("new.toml");
    let edited = text
        .replace(
            "[gateway]\n",
            "[gateway]\nidle_timeout = \"30s\"\nbody_budget = \"8MiB\"\n",
        )
        .replace(
            "[process]\n",
            "[[route]]\nprefix = \"/x/\"\nupstream = \"http://127.0.0.1:9\"\n[process]\n",
        );
    std::fs::write(&new, edited).expect("write");
    let out = vpcbox(&[
        "check",
        "--config",
        new.to_str().expect("utf-8"),
        "--diff",
        running.to_str().expect("utf-8"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.splitn(2, ' ').map(str::trim).collect())
        .collect();
    assert_eq!(
        lines,
        vec![
            vec!["gateway.body_budget", "applied by SIGHUP"],
            vec!["gateway.idle_timeout", "needs a restart"],
            vec!["route", "applied by SIGHUP"],
        ],
        "{stdout}"
    );
    let same = vpcbox(&[
        "check",
        "--config",
        running.to_str().expect("utf-8"),
        "--diff",
        running.to_str().expect("utf-8"),
    ]);
    assert_eq!(String::from_utf8_lossy(&same.stdout), "no changes\n");
    // A broken RUNNING file is a config error like any other.
    std::fs::write(dir.path().join("bad.toml"), "[dhcp]\nqueue = \"x\"\n").expect("write");
    let bad = vpcbox(&[
        "check",
        "--config",
        running.to_str().expect("utf-8"),
        "--diff",
        dir.path().join("bad.toml").to_str().expect("utf-8"),
    ]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("dhcp.queue"));
}

/// A `[[subnet6]]` added to the file reaches the store on SIGHUP (the
/// DHCPv6 server reads its subnets there), and the reload says so.
#[test]
fn sighup_applies_a_new_subnet6() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), "");
    let mut vb = Running::start(&cfg);
    vb.wait_ready(http);
    assert_eq!(crate::support::http_status(http, "/v1/subnets/r6"), 404);
    let mut text = std::fs::read_to_string(&cfg).expect("read");
    text.push_str("\n[[subnet6]]\nid = \"r6\"\nprefix = \"fd00:5::/64\"\npools = [\"fd00:5::10-fd00:5::20\"]\n");
    std::fs::write(&cfg, text).expect("write");
    vb.signal("HUP");
    let served = eventually(Duration::from_secs(10), || {
        crate::support::http_status(http, "/v1/subnets/r6") == 200
    });
    vb.signal("TERM");
    assert_eq!(vb.wait(Duration::from_secs(15)), Some(0));
    let log = vb.stderr();
    assert!(served, "{log}");
    assert!(log.contains("applied live: subnet6"), "{log}");
}
