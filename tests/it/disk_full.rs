//! A full disk under a running vpcbox: its store on a small tmpfs that the
//! test fills. While full, no allocation is answered 201 unless it is on
//! disk and `/readyz` says why it is degraded; once the filler is deleted,
//! new allocations succeed without a restart; after a restart every lease
//! answered 201 is there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{eventually, write_config, Running};

const TOKEN: &str = "disk-full-test-token";

const SUBNET: &str = r#"
[[subnet]]
id = "lab"
cidr = "10.0.0.0/16"
pools = ["10.0.1.0-10.0.200.255"]
lease_time = "1h"
"#;

/// Unmounts the tmpfs when the test ends, however it ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// One HTTP/1.1 request with the admin token; (status, body), (0, "") if nothing answers.
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    crate::support::http_request(to, Some(TOKEN), method, path, body, Duration::from_secs(10))
}

fn client(n: u32) -> String {
    let b = n.to_be_bytes();
    format!(
        "mac:02:00:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3]
    )
}

/// POSTs an allocation; the address if answered 201.
fn allocate(port: u16, n: u32) -> Option<String> {
    let body = serde_json::json!({ "client": client(n) }).to_string();
    let (status, text) = http(port, "POST", "/v1/subnets/lab/allocations", &body);
    (status == 201).then(|| {
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        v["ip"].as_str().expect("ip").to_owned()
    })
}

fn start(cfg: &Path, port: u16) -> Running {
    let mut vb = Running::start(cfg);
    let up = eventually(Duration::from_secs(15), || {
        http(port, "GET", "/readyz", "").0 == 200
    });
    assert!(up, "vpcbox never became ready: {}", vb.stderr());
    vb
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_refuses_writes_and_serves_again_once_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    let Some(_tmpfs) = Tmpfs::mount(&mnt, "24m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    std::fs::create_dir_all(mnt.join("data")).unwrap();
    crate::support::write_token(&mnt.join("data/admin.token"), TOKEN);
    let (cfg, _, port) = write_config(&mnt, SUBNET);
    let mut vb = start(&cfg, port);

    let mut acked: Vec<(u32, String)> = Vec::new();
    for n in 0..10 {
        acked.push((
            n,
            allocate(port, n).expect("allocation before the disk fills"),
        ));
    }
    let filler = mnt.join("filler");
    fill(&filler);

    // While full: whatever is answered 201 must survive (checked below);
    // the store's first failure makes vpcbox refuse writes and say why.
    let mut refused = 0;
    let mut full_acks = 0;
    for n in 100..140 {
        match allocate(port, n) {
            Some(ip) => {
                full_acks += 1;
                acked.push((n, ip));
            }
            None => refused += 1,
        }
    }
    assert!(refused > 0, "every allocation succeeded on a full disk");
    let (ready, why) = http(port, "GET", "/readyz", "");
    assert_eq!(ready, 503, "{why}");
    assert!(why.contains("degraded"), "{why}");
    let metrics = eventually(Duration::from_secs(5), || {
        let m = http(port, "GET", "/metrics", "").1;
        m.contains("vpcbox_storage_degraded 1") && !m.contains("vpcbox_storage_errors_total 0")
    });
    assert!(metrics, "{}", http(port, "GET", "/metrics", "").1);
    // Reads still answer.
    let (st, _) = http(port, "GET", &format!("/v1/leases?client={}", client(0)), "");
    assert_eq!(st, 200);

    std::fs::remove_file(&filler).expect("rm filler");
    let back = eventually(Duration::from_secs(10), || {
        http(port, "GET", "/readyz", "").0 == 200
    });
    assert!(
        back,
        "not ready again after space returned: {}",
        vb.stderr()
    );
    for n in 200..205 {
        acked.push((
            n,
            allocate(port, n).expect("allocation after space returned"),
        ));
    }
    eprintln!("while full: {full_acks} answered 201, {refused} refused");

    vb.signal("TERM");
    assert_eq!(vb.wait(Duration::from_secs(15)), Some(0), "{}", vb.stderr());
    let vb = start(&cfg, port);
    let (st, text) = http(port, "GET", "/v1/leases", "");
    assert_eq!(st, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let leases = v["leases"].as_array().expect("leases");
    for (n, ip) in &acked {
        let found = leases
            .iter()
            .find(|l| l["ip"] == ip.as_str())
            .unwrap_or_else(|| panic!("lease {ip} of client {n} answered 201 is gone"));
        assert_eq!(found["client"], client(*n).as_str(), "{found}");
    }
    drop(vb);
}
