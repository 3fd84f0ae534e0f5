//! The replay's entry: setup (spawn or attach), the phase schedule,
//! teardown and the report.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::args::ReplayArgs;
use super::config_gen::{FLOOD_RELAY, LEGIT_RELAY};
use super::phases::{Kind, Phase, Recorder};
use super::report::{self, Line, Targets};
use super::sampler::Sampler;
use super::setup::{self, Setup};
use super::upstream::{Delays, SlowUpstream};
use super::{dhcp_load, finale, http_load, plot};
use crate::exit::Exit;

/// What the replay found.
#[derive(Debug)]
pub struct Outcome {
    pub lines: Vec<Line>,
    pub peak_rss: Option<u64>,
}

/// Runs the replay on its own runtime and prints the report. Exit 0 when
/// every verdict passes, 1 when one fails (with `--no-protections` that is
/// the expected outcome), 64/69 when the replay itself cannot run.
pub fn run(args: ReplayArgs) -> Result<(), Exit> {
    if args.phase_secs == 0 || args.tail_secs == 0 {
        return Err(Exit::usage(
            "replay: --phase-secs and --tail-secs must be at least 1",
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vpcbox-replay")
        .build()
        .map_err(|e| Exit::unavailable(format!("cannot start the runtime: {e}")))?;
    let outcome = runtime
        .block_on(replay(args))
        .map_err(|e| Exit::unavailable(format!("replay: {e:#}")))?;
    let failed = outcome.lines.iter().filter(|l| !l.pass).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(Exit {
            code: 1,
            message: format!(
                "replay: {failed} of {} verdicts failed",
                outcome.lines.len()
            ),
        })
    }
}

/// Runs the whole replay; prints the report and writes `--out`.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<Outcome> {
    let cancel = CancellationToken::new();
    // Stops the slow upstream and every load on any early return.
    let _stop_all = cancel.clone().drop_guard();
    let upstream = SlowUpstream::start(
        args.upstream_port,
        Delays {
            delay: args.upstream_delay,
            hold: args.finale_upstream_delay,
        },
        cancel.clone(),
    )
    .await?;
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let mut setup = if args.spawn.is_some() || args.no_protections {
        setup::spawn(&args, upstream.addr.port()).await?
    } else {
        setup::attach(&args).await?
    };
    let result = drive(&args, &setup, &cancel).await;
    let stopped = match setup.spawned.as_mut() {
        Some(s) => Some(s.stop(Duration::from_secs(15)).await),
        None => None,
    };
    cancel.cancel();
    if let (Some(s), Some(out)) = (&setup.spawned, &args.out) {
        let _ = std::fs::copy(&s.log, out.join("target.log"));
    }
    if let Some(dir) = &setup.scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    let (samples, phases, fatal) = result?;
    let lines = report::verdict(
        &samples,
        &phases,
        &Targets {
            budget: setup.budget,
            legit_min: 0.99,
            recovery_max: Duration::from_secs(5),
        },
        fatal.as_deref(),
    );
    let text = format!(
        "vpcbox replay against {} (dhcp {}){}{}\n\n{}\n{}\n{}",
        setup.base,
        setup.dhcp,
        if args.no_protections {
            ", protections OFF"
        } else {
            ""
        },
        stopped.map_or(String::new(), |s| format!(", target stopped: {s}")),
        report::phase_table(&phases),
        report::summary(&samples),
        report::render_verdict(&lines),
    );
    println!("{text}");
    if let Some(out) = &args.out {
        write_out(out, &text, &samples, setup.budget)?;
    }
    Ok(Outcome {
        peak_rss: report::peak_rss(&samples),
        lines,
    })
}

fn write_out(
    out: &Path,
    text: &str,
    samples: &[report::Sample],
    budget: u64,
) -> anyhow::Result<()> {
    std::fs::write(out.join("verdict.txt"), text)?;
    std::fs::write(out.join("timeline.csv"), report::csv(samples))?;
    std::fs::write(out.join("timeline.svg"), plot::svg(samples, budget)?)?;
    println!(
        "wrote {}/timeline.csv, timeline.svg, verdict.txt",
        out.display()
    );
    Ok(())
}

type Run = (
    Vec<report::Sample>,
    Vec<super::phases::PhaseStats>,
    Option<String>,
);

/// Source address of the finale's flooding HTTP/2 client on a loopback
/// target: one address, as the incident's one misbehaving machine.
const FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 1);

/// Everything a phase needs to start its loads.
struct Loads<'a> {
    args: &'a ReplayArgs,
    setup: &'a Setup,
    rec: Arc<Recorder>,
    legit_sock: Arc<tokio::net::UdpSocket>,
    flood_sock: Arc<tokio::net::UdpSocket>,
    /// Stops every load (cancelled at the tail, or by `abort`).
    stop: CancellationToken,
    /// Stops what must outlive the loads (counting late flood answers).
    end: CancellationToken,
    /// The HTTP loads: each ends once its requests in flight have answered
    /// or timed out, so a slow answer is counted, not lost.
    http: TaskTracker,
}

impl Loads<'_> {
    /// Starts an HTTP load of `rate` requests/s from clients `first_ip`, ….
    fn spawn_http(&self, kind: Kind, rate: u32, first_ip: Ipv4Addr, timeout: Duration) {
        let load = http_load::Load {
            kind,
            base: self.setup.base.clone(),
            rate,
            per_client: self.setup.per_client,
            first_ip,
            timeout,
            subnet: self.setup.subnet.clone(),
            token: self.setup.token.clone(),
            prefix: self.args.upstream_prefix.clone(),
            max_in_flight: 16_384,
        };
        self.http
            .spawn(http_load::run(load, self.rec.clone(), self.stop.clone()));
    }

    /// Starts the loads that begin with `phase` (loads are cumulative).
    fn start(&self, phase: Phase) -> anyhow::Result<()> {
        let (a, dhcp, r, stop) = (
            self.args,
            self.setup.dhcp,
            self.rec.clone(),
            self.stop.clone(),
        );
        match phase {
            Phase::Idle => {}
            Phase::Steady => {
                let from = Ipv4Addr::new(127, 0, 0, 10);
                self.spawn_http(Kind::Api, a.api_rate, from, a.legit_timeout);
                let sock = self.legit_sock.clone();
                tokio::spawn(dhcp_load::legit(
                    sock,
                    dhcp,
                    LEGIT_RELAY,
                    a.legit_dhcp_rate,
                    r,
                    stop,
                ));
            }
            Phase::SlowUpstream => {
                let from = Ipv4Addr::new(127, 0, 1, 10);
                self.spawn_http(
                    Kind::Upstream,
                    a.upstream_rate,
                    from,
                    Duration::from_secs(10),
                );
            }
            Phase::Flood => {
                let sock = self.flood_sock.clone();
                // Counts late answers through the tail too.
                tokio::spawn(dhcp_load::count_replies(
                    sock.clone(),
                    r.clone(),
                    self.end.clone(),
                ));
                tokio::spawn(dhcp_load::flood(
                    sock,
                    dhcp,
                    FLOOD_RELAY,
                    a.flood,
                    a.flood_duration,
                    r,
                    stop,
                ));
            }
            Phase::Finale => {
                let target = authority(&self.setup.base)?;
                let f = finale::Finale {
                    target,
                    // One flooding client, on a loopback address of its own
                    // (legit clients use 127.0.0.10+ and 127.0.1.10+).
                    source: target.ip().is_loopback().then_some(FLOODER.into()),
                    path: format!("{}finale", a.upstream_prefix),
                    connections: a.finale_connections,
                    streams_per_connection: a.finale_streams,
                    body: usize::try_from(a.finale_body).unwrap_or(usize::MAX),
                };
                tokio::spawn(finale::run(f, r, stop));
            }
            Phase::Tail => self.stop.cancel(),
        }
        Ok(())
    }
}

/// The phase schedule. Loads start as their phase begins and stop at the
/// tail; a fatal sampler event (`abort`) ends every phase at once.
async fn drive(
    args: &ReplayArgs,
    setup: &Setup,
    cancel: &CancellationToken,
) -> anyhow::Result<Run> {
    let abort = cancel.child_token();
    let loads = Loads {
        args,
        setup,
        rec: Arc::new(Recorder::new()),
        legit_sock: dhcp_load::bind_relay(LEGIT_RELAY, setup.dhcp.port())?,
        flood_sock: dhcp_load::bind_relay(FLOOD_RELAY, setup.dhcp.port())?,
        stop: abort.child_token(),
        end: abort.clone(),
        http: TaskTracker::new(),
    };
    let sampler = Sampler {
        base: setup.base.clone(),
        pid: setup.spawned.as_ref().map(|s| s.pid),
        rss_cap: args.rss_cap,
    };
    let sampler_stop = CancellationToken::new();
    let rec = loads.rec.clone();
    let sampling = tokio::spawn(sampler.run(rec.clone(), sampler_stop.clone(), abort.clone()));
    let secs = Duration::from_secs(args.phase_secs);
    let schedule = [
        (Phase::Idle, Duration::from_secs(1)),
        (Phase::Steady, secs),
        (Phase::SlowUpstream, secs),
        (Phase::Flood, secs),
        (Phase::Finale, secs),
        (Phase::Tail, Duration::from_secs(args.tail_secs)),
    ];
    for (phase, length) in schedule {
        rec.set_phase(phase);
        loads.start(phase)?;
        tokio::select! {
            () = tokio::time::sleep(length) => {}
            () = abort.cancelled() => break,
        }
    }
    loads.stop.cancel();
    loads.http.close();
    loads.http.wait().await;
    sampler_stop.cancel();
    let (samples, fatal) = sampling.await.context("the sampler panicked")?;
    Ok((samples, rec.phases(), fatal))
}

/// `http://127.0.0.1:8080` → `127.0.0.1:8080`.
fn authority(base: &str) -> anyhow::Result<SocketAddr> {
    let hostport = base.trim_start_matches("http://").trim_end_matches('/');
    hostport
        .parse()
        .with_context(|| format!("--target '{base}' must be http://IP:PORT"))
}
