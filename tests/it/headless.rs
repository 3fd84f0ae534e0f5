//! `vpcbox run --headless`: starts, and stops cleanly on SIGTERM / SIGINT.

use std::time::Duration;

use crate::support::{write_config, Running};

#[test]
fn sigterm_drains_and_exits_zero_within_the_grace_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, _) = write_config(dir.path(), "");
    let mut vb = Running::start(&cfg);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        vb.child.try_wait().expect("try_wait").is_none(),
        "exited early: {}",
        vb.stderr()
    );
    vb.signal("TERM");
    let code = vb.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{}", vb.stderr());
    assert!(vb.stderr().contains("shutting down"));
}

#[test]
fn sigint_is_quick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, _) = write_config(dir.path(), "");
    let mut vb = Running::start(&cfg);
    std::thread::sleep(Duration::from_millis(500));
    vb.signal("INT");
    assert_eq!(vb.wait(Duration::from_secs(2)), Some(0), "{}", vb.stderr());
}

#[test]
fn sighup_applies_a_valid_config_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, _) = write_config(dir.path(), "");
    let original = std::fs::read_to_string(&cfg).expect("read");
    let mut vb = Running::start(&cfg);
    std::thread::sleep(Duration::from_millis(500));
    // A broken config: refused, the process keeps running.
    std::fs::write(&cfg, format!("{original}\n[tui]\nrefresh = \"never\"\n")).expect("write");
    vb.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        vb.child.try_wait().expect("try_wait").is_none(),
        "died on a bad reload"
    );
    // A valid change: applied.
    std::fs::write(&cfg, format!("{original}\n[tui]\nrefresh = \"500ms\"\n")).expect("write");
    vb.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
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
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, _) = write_config(dir.path(), "");
    let child = std::process::Command::new(crate::support::bin())
        .args(["run", "--headless", "--log-format", "json", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut vb = Running { child };
    std::thread::sleep(Duration::from_millis(500));
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
