//! The store through the binary: one owner per data directory, a corrupt
//! directory is a clear exit 69, and `db export` / `db import` round-trip.

use std::process::Command;
use std::time::Duration;

use crate::support::{bin, write_config, Running};

fn run(args: &[&str], cfg: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .expect("run vpcbox")
}

#[test]
fn a_second_instance_on_the_same_data_directory_exits_69() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, http) = write_config(dir.path(), "");
    let mut first = Running::start(&cfg);
    // Ready: it owns the directory and has its SIGTERM handler.
    first.wait_ready(http);
    let out = run(&["db", "export"], &cfg);
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("another vpcbox owns it"));
    first.signal("TERM");
    assert_eq!(
        first.wait(Duration::from_secs(15)),
        Some(0),
        "{}",
        first.stderr()
    );
}

#[test]
fn a_corrupt_data_directory_exits_69_without_panicking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, _) = write_config(dir.path(), "");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    for name in ["conf", "db", "blobs"] {
        std::fs::write(
            data.join(name),
            b"\x00\xffnot a sled database at all\x13\x37".repeat(100),
        )
        .expect("write");
    }
    let out = run(&["db", "export"], &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("data directory"), "{stderr}");
}

#[test]
fn export_then_import_round_trips_and_refuses_a_non_empty_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, _) = write_config(dir.path(), SUBNET);
    let out = run(&["db", "export"], &cfg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = dir.path().join("dump.json");
    std::fs::write(&dump, &out.stdout).expect("write dump");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"id\": \"lab\"") && text.contains("mac:02:00:00:00:00:10"),
        "{text}"
    );

    let refused = run(&["db", "import", dump.to_str().expect("utf-8")], &cfg);
    assert_eq!(refused.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));

    // Into a fresh store (another data directory), then export again: equal.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let (cfg2, _, _) = write_config(dir2.path(), "");
    let imported = run(&["db", "import", dump.to_str().expect("utf-8")], &cfg2);
    assert_eq!(
        imported.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let again = run(&["db", "export"], &cfg2);
    assert_eq!(String::from_utf8_lossy(&again.stdout), text);

    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").expect("write");
    let bad = run(
        &["db", "import", "--force", garbage.to_str().expect("utf-8")],
        &cfg2,
    );
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a vpcbox export"));
}

const SUBNET: &str = r#"
[[subnet]]
id = "lab"
cidr = "10.0.0.0/24"
pools = ["10.0.0.100-10.0.0.199"]
gateway = "10.0.0.1"

[[reservation]]
subnet = "lab"
client = "mac:02:00:00:00:00:10"
ip = "10.0.0.10"
"#;

/// `db import` is checked whole before anything is written: each invalid
/// dump in tests/dumps/invalid/ exits 64 naming its bad record (the text in
/// its `_expect` field), and the store is exactly as before.
#[test]
fn an_invalid_import_names_the_record_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, _, _) = write_config(dir.path(), "");
    let dumps = crate::support::repo().join("tests/dumps");
    let valid = dumps.join("valid.json");
    let out = run(&["db", "import", valid.to_str().unwrap()], &cfg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = run(&["db", "export"], &cfg);
    assert_eq!(before.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&before.stdout).contains("web-1"));
    let mut checked = 0;
    for entry in std::fs::read_dir(dumps.join("invalid")).expect("fixtures") {
        let path = entry.expect("entry").path();
        let raw = std::fs::read(&path).expect("read");
        let expect = String::from_utf8_lossy(&raw)
            .split("\"_expect\": \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("_expect")
            .to_owned();
        let out = run(&["db", "import", "--force", path.to_str().unwrap()], &cfg);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{path:?}: {stderr}");
        assert!(
            stderr.contains(&expect),
            "{path:?}: {stderr:?} lacks {expect:?}"
        );
        let after = run(&["db", "export"], &cfg);
        assert_eq!(after.stdout, before.stdout, "{path:?} changed the store");
        checked += 1;
    }
    assert!(checked >= 9, "{checked} fixtures");
}
