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
    let code = vb.wait(Duration::from_secs(6));
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
