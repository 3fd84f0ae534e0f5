//! One invalid config per file under tests/configs/invalid/; each must exit
//! 64 with exactly the stderr line its `# expect:` header gives.

use crate::support::{repo, vpcbox};

#[test]
fn every_invalid_fixture_exits_64_naming_the_key() {
    let dir = repo().join("tests/configs/invalid");
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks '# expect:'", path.display()))
            .replace("{path}", &path.display().to_string());
        let out = vpcbox(&["check", "--config", path.to_str().expect("utf-8 path")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{}: {stderr}", path.display());
        let line = stderr.lines().next().unwrap_or_default();
        let want = format!("vpcbox: {expect}");
        match want.strip_suffix(" ...") {
            Some(prefix) => assert!(
                line.starts_with(prefix),
                "{}:\n got {line}\nwant {want}",
                path.display()
            ),
            None => assert_eq!(line, want, "{}", path.display()),
        }
        assert_eq!(stderr.lines().count(), 1, "one line only: {stderr}");
        n += 1;
    }
    assert!(n >= 20, "only {n} fixtures");
}

#[test]
fn shipped_config_checks_and_prints_the_resolved_config() {
    let out = vpcbox(&[
        "check",
        "--config",
        repo().join("config.toml").to_str().expect("utf-8"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    for key in [
        "[storage]",
        "[dhcp]",
        "[[subnet]]",
        "[[reservation]]",
        "[gateway]",
        "[[route]]",
        "[memory]",
        "[tui]",
    ] {
        assert!(printed.contains(key), "missing {key}");
    }
    assert!(printed.contains("initial_stream_window = \"64KiB\""));
}

#[test]
fn missing_config_file_is_a_usage_error() {
    let out = vpcbox(&["check", "--config", "/nonexistent/vpcbox.toml"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/vpcbox.toml: cannot be read")
    );
}

#[test]
fn bad_usage_exits_64() {
    let out = vpcbox(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(64));
}
