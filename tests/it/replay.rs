//! `vpcbox replay --spawn` against the real binary: a short replay of the
//! incident with the shipped protections must end with the target alive,
//! its peak RSS under the configured budget and legit clients served.
//!
//! Until the `replay` subcommand is wired into the CLI this calls the
//! library's entry point in-process and points `--spawn` at the built
//! binary; it needs DHCP and the gateway served by `vpcbox run`, and fails
//! (does not skip) while they are not.

use std::time::Instant;

use vpcbox::replay::{replay, ReplayArgs};

use crate::support::{bin, repo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_replay_with_protections_keeps_memory_and_legit_clients() {
    let out = tempfile::tempdir().unwrap();
    let config = repo().join("config.toml");
    let mut args = ReplayArgs::parse_from([
        "--spawn",
        config.to_str().unwrap(),
        "--phase-secs",
        "2",
        "--tail-secs",
        "3",
        "--api-rate",
        "300",
        "--upstream-rate",
        "200",
        "--flood",
        "5000",
        "--flood-duration",
        "1s",
        "--legit-dhcp-rate",
        "20",
        "--finale-connections",
        "4",
        "--finale-streams",
        "50",
    ])
    .unwrap();
    args.vpcbox_bin = Some(bin());
    args.out = Some(out.path().to_owned());
    let t0 = Instant::now();
    let outcome = replay(args).await.expect("the replay runs");
    let table = vpcbox::replay::report::render_verdict(&outcome.lines);
    let line = |what: &str| {
        outcome
            .lines
            .iter()
            .find(|l| l.what.starts_with(what))
            .unwrap_or_else(|| panic!("no verdict line '{what}':\n{table}"))
    };
    assert!(line("target survived").pass, "crashed:\n{table}");
    assert!(line("peak RSS").pass, "over budget:\n{table}");
    for l in outcome.lines.iter().filter(|l| l.what.starts_with("legit")) {
        assert!(l.pass, "{} failed:\n{table}", l.what);
    }
    assert!(out.path().join("timeline.csv").exists());
    assert!(out.path().join("timeline.svg").exists());
    eprintln!("{table}replay took {:?}", t0.elapsed());
}
