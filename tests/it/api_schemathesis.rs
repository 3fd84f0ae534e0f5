//! The OpenAPI spec checked against a live server with schemathesis:
//! every operation, positive and negative data, all checks (status codes,
//! content types, response schemas, auth enforcement, 405s, no 5xx).
//!
//! Needs `SCHEMATHESIS` pointing at the `schemathesis` executable
//! (`scripts/test` installs it into a venv and sets it); without it the
//! test fails unless `VPCBOX_SKIP_EXTERNAL=1` is set.
//! `VPCBOX_API_URL` + `VPCBOX_API_TOKEN` aim it at a running vpcbox
//! instead of the in-process server (e.g. `vpcbox run --headless`).

use std::process::Command;

use crate::api_server::ApiServer;
use crate::api_support::{subnet_json, TOKEN};

/// The schemathesis executable `scripts/test` installed. Missing, the
/// test fails (never a silent pass) unless `VPCBOX_SKIP_EXTERNAL=1` says the
/// developer chose to run without the external tools.
pub fn schemathesis() -> Option<String> {
    let st = std::env::var("SCHEMATHESIS").ok().filter(|s| !s.is_empty());
    if st.is_none() && std::env::var_os("VPCBOX_SKIP_EXTERNAL").is_none() {
        panic!("SCHEMATHESIS is not set: run ./scripts/test (it installs schemathesis), or set VPCBOX_SKIP_EXTERNAL=1");
    }
    st
}

/// Cross-field rules a JSON schema cannot state (pools inside the CIDR, a
/// reservation inside its subnet) make some schema-valid bodies 422.
const CONFIG: &str = r#"
[[operations]]
include-name = "POST /v1/subnets"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "409", "422", "429"]

[[operations]]
include-name = "POST /v1/reservations"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "409", "422", "429"]
"#;

/// Runs schemathesis against `url` with `token`; panics with its report.
pub fn check_spec(st: &str, url: &str, token: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = Command::new(st)
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{url}/openapi.yaml"), "--url", url])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--max-examples", "40", "--seed", "1"])
        // A stream that never ends cannot be read to its end; its own
        // tests (ui_stream, ui_browser) read it as a browser does.
        .args(["--exclude-path", "/v1/events/stream"])
        // One worker: with two, schemathesis builds hypothesis strategies on
        // two threads, and CPython 3.11's `ast` module is not thread-safe
        // there ("AST constructor recursion depth mismatch", CPython
        // gh-106905): the tool itself crashed 1 run in 4.
        .args(["--workers", "1", "--request-timeout", "10"])
        // Below the shipped per-client-IP quota (200/s): on an idle machine
        // schemathesis sends faster, and the quota rightly answers 429
        // before authentication looks at a request.
        .args(["--rate-limit", "150/s"])
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .expect("run schemathesis");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    eprintln!("{report}");
}

#[test]
fn openapi_spec_holds_against_the_server() {
    let Some(st) = schemathesis() else {
        eprintln!("SKIPPED (VPCBOX_SKIP_EXTERNAL=1): schemathesis");
        return;
    };
    if let (Ok(url), Ok(token)) = (
        std::env::var("VPCBOX_API_URL"),
        std::env::var("VPCBOX_API_TOKEN"),
    ) {
        check_spec(&st, url.trim_end_matches('/'), &token);
        return;
    }
    let server = ApiServer::start();
    // Something for the reads to find.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spec: vpcbox::ipam::SubnetSpec = serde_json::from_str(&subnet_json(
            "lab",
            "10.0.0.0/24",
            "10.0.0.100",
            "10.0.0.199",
        ))
        .unwrap();
        server.ctx.ipam.add_subnet(spec).await.unwrap();
        // DHCPv6 subnets and bindings, for the responses that list them.
        crate::api_support::lab6(&server.ctx.ipam, 2).await;
    });
    check_spec(&st, &server.url(), TOKEN);
}
