//! The API and the admin CLI against the real `vpcbox run --headless`:
//! schemathesis over the whole stack (gateway admission included), and
//! every admin command as a user runs it, with its exit codes.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::support::{eventually, http_status, vpcbox, write_config, Running};

const TOKEN: &str = "binary-test-token";

const SUBNET: &str = r#"
[[subnet]]
id = "lab"
cidr = "10.0.0.0/24"
pools = ["10.0.0.100-10.0.0.199"]
gateway = "10.0.0.1"
lease_time = "1h"

[[subnet6]]
id = "lab6"
prefix = "fd00:77::/64"
pools = ["fd00:77::100-fd00:77::1ff"]
pd_pools = [{ prefix = "fd00:78::/48", delegated_len = 56 }]
"#;

/// A running headless vpcbox with a known token; returns (process, port, config).
fn start(dir: &Path) -> (Running, u16, std::path::PathBuf) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    crate::support::write_token(&dir.join("data/admin.token"), TOKEN);
    let (cfg, _, port) = write_config(dir, SUBNET);
    let mut vb = Running::start(&cfg);
    let up = eventually(Duration::from_secs(10), || {
        http_status(port, "/readyz") == 200
    });
    assert!(up, "vpcbox never became ready: {}", vb.stderr());
    (vb, port, cfg)
}

fn cli(args: &[&str], cfg: &Path) -> Output {
    let mut all = args.to_vec();
    all.extend(["--config", cfg.to_str().unwrap()]);
    vpcbox(&all)
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn openapi_spec_holds_against_vpcbox_run() {
    let Some(st) = crate::api_schemathesis::schemathesis() else {
        eprintln!("SKIPPED (VPCBOX_SKIP_EXTERNAL=1): schemathesis");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_vb, port, _) = start(dir.path());
    crate::api_schemathesis::check_spec(&st, &format!("http://127.0.0.1:{port}"), TOKEN);
}

#[test]
fn admin_cli_against_vpcbox_run() {
    let dir = tempfile::tempdir().unwrap();
    let (mut vb, port, cfg) = start(dir.path());

    let o = cli(&["subnets"], &cfg);
    assert!(
        o.status.success() && text(&o).contains("10.0.0.100-10.0.0.199"),
        "{}",
        text(&o)
    );
    let o = cli(&["subnets", "--json"], &cfg);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["subnets"][0]["id"], "lab");
    // The [[subnet6]] of the config, loaded into the IPAM at start.
    assert_eq!(
        (
            v["subnets"][1]["id"].as_str(),
            v["subnets"][1]["family"].as_u64()
        ),
        (Some("lab6"), Some(6))
    );
    assert!(text(&cli(&["subnets"], &cfg)).contains("fd00:78::/48 by /56"));

    let o = cli(&["isolate", "mac:02:00:00:00:00:99"], &cfg);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "isolated mac:02:00:00:00:00:99\n",
        "{}",
        text(&o)
    );
    let o = cli(&["clients"], &cfg);
    assert!(o.status.success(), "{}", text(&o));
    let o = cli(&["release", "mac:02:00:00:00:00:99"], &cfg);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "released mac:02:00:00:00:00:99\n",
        "{}",
        text(&o)
    );
    let o = cli(&["release", "mac:02:00:00:00:00:99"], &cfg);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let o = cli(&["leases", "--subnet", "lab"], &cfg);
    assert!(o.status.success(), "{}", text(&o));

    // Wrong token: 77 and one clear line; the API gave no data.
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "nope").unwrap();
    let o = cli(&["clients", "--token-file", wrong.to_str().unwrap()], &cfg);
    assert_eq!(o.status.code(), Some(77), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "vpcbox: the admin token was refused (401)\n"
    );
    assert_eq!(http_status(port, "/v1/clients"), 401);

    // Not running: 69 and says where it looked.
    vb.signal("TERM");
    assert_eq!(vb.wait(Duration::from_secs(6)), Some(0), "{}", vb.stderr());
    let o = cli(&["subnets"], &cfg);
    assert_eq!(o.status.code(), Some(69), "{}", text(&o));
    let want =
        format!("vpcbox: vpcbox is not running at http://127.0.0.1:{port} (connection refused)\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), want);
}
