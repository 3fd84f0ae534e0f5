//! TLS with ALPN: curl negotiates h2 and http/1.1 against a self-signed
//! certificate made by openssl (the test fails if either tool is missing;
//! scripts/test installs both).

use std::process::Command;

use super::support::*;
use crate::cert::self_signed;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new(tool)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_alpn_h2_and_http1() {
    for tool in ["openssl", "curl"] {
        assert!(
            have(tool),
            "the TLS test needs {tool}: scripts/test installs it (apt-get install openssl curl)"
        );
    }
    let _s = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let tls = format!(
        "[gateway.tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        key.display()
    );
    let gw = TestGateway::start(config("", &tls)).await;
    let url = format!("https://{}/healthz", gw.addr);
    let (h2, h1) =
        tokio::task::spawn_blocking(move || (curl(&["--http2", &url]), curl(&["--http1.1", &url])))
            .await
            .unwrap();
    assert_eq!(h2, "2 200");
    assert_eq!(h1, "1.1 200");
}
