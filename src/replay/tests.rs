//! The whole replay pipeline against the test doubles in `fake`: phases,
//! loads, sampler, verdict and `--out` files, without the real appliance.

use super::*;
use crate::replay::phases::{Kind, Phase};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_replay_against_a_healthy_fake_passes_and_writes_its_files() {
    let (http, stop_http, body_bytes) = fake::http_target().await;
    let (dhcp, stop_dhcp) = fake::toy_dhcp().await;
    let out = std::env::temp_dir().join(format!("vpcbox-replay-test-{}", std::process::id()));
    let mut args = ReplayArgs::parse_from([
        "--phase-secs",
        "1",
        "--tail-secs",
        "1",
        "--api-rate",
        "200",
        "--upstream-rate",
        "100",
        "--flood",
        "500",
        "--flood-duration",
        "200ms",
        "--legit-dhcp-rate",
        "20",
        "--finale-connections",
        "2",
        "--finale-streams",
        "5",
        "--finale-body",
        "64KiB",
    ])
    .unwrap();
    args.target = Some(format!("http://{http}"));
    args.dhcp = Some(dhcp);
    args.out = Some(out.clone());
    let outcome = replay(args).await.unwrap();
    stop_http.cancel();
    stop_dhcp.cancel();
    let failed: Vec<_> = outcome.lines.iter().filter(|l| !l.pass).collect();
    assert!(
        failed.is_empty(),
        "{}",
        report::render_verdict(&outcome.lines)
    );
    assert_eq!(outcome.peak_rss, Some(50 << 20));
    // The finale's bodies really flow: 2 connections x 5 streams x 64 KiB.
    let got = body_bytes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(got >= 10 * (64 << 10), "{got}");
    let csv = std::fs::read_to_string(out.join("timeline.csv")).unwrap();
    // Every phase is sampled (how often depends on how busy the machine is).
    for phase in [
        "idle",
        "steady",
        "slow-upstream",
        "dhcp-flood",
        "finale",
        "tail",
    ] {
        let n = csv.matches(&format!(",{phase},")).count();
        assert!(n >= 2, "{n} samples of {phase}:\n{csv}");
    }
    assert!(std::fs::read_to_string(out.join("timeline.svg"))
        .unwrap()
        .starts_with("<svg"));
    if std::env::var_os("REPLAY_KEEP_OUT").is_none() {
        let _ = std::fs::remove_dir_all(out);
    }
}

#[test]
fn args_parse_with_defaults_and_reject_zero_phases() {
    let a = ReplayArgs::parse_from(["--no-protections"]).unwrap();
    assert_eq!(a.phase_secs, 10);
    assert_eq!(a.api_rate, 2000);
    assert_eq!(a.upstream_rate, 4000);
    assert_eq!(a.upstream_delay, Duration::from_millis(500));
    assert_eq!(a.flood, 100_000);
    assert_eq!(a.legit_dhcp_rate, 20);
    assert_eq!(a.finale_body, 1 << 20);
    assert_eq!(a.rss_cap, 1 << 30);
    assert!(a.no_protections);
    assert!(ReplayArgs::parse_from(["--rss-cap", "lots"]).is_err());
    let zero = ReplayArgs::parse_from(["--phase-secs", "0"]).unwrap();
    assert_eq!(run(zero).unwrap_err().code, crate::exit::USAGE);
    let _ = (Kind::Api, Phase::Idle);
}
