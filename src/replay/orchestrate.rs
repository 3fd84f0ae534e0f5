//! Setup (spawn or attach), the phase schedule, teardown and the report.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::config_gen::{self, FLOOD_RELAY, LEGIT_RELAY};
use super::phases::{Kind, Phase, Recorder};
use super::report::{self, Line, Targets};
use super::sampler::Sampler;
use super::target::{self, Spawned};
use super::upstream::SlowUpstream;
use super::{dhcp_load, finale, http_load, plot, ReplayArgs};
use crate::config::Config;

/// What the replay found.
#[derive(Debug)]
pub struct Outcome {
    pub lines: Vec<Line>,
    pub peak_rss: Option<u64>,
}

/// Where the load goes and what it is judged against.
struct Setup {
    base: String,
    dhcp: SocketAddr,
    budget: u64,
    subnet: String,
    spawned: Option<Spawned>,
    scratch: Option<PathBuf>,
}

const DEFAULT_BUDGET: u64 = 128 << 20;

/// Runs the whole replay; prints the report and writes `--out`.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<Outcome> {
    let cancel = CancellationToken::new();
    // Stops the slow upstream and every load on any early return.
    let _stop_all = cancel.clone().drop_guard();
    let upstream =
        SlowUpstream::start(args.upstream_port, args.upstream_delay, cancel.clone()).await?;
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let mut setup = if args.spawn.is_some() || args.no_protections {
        spawn(&args, upstream.addr.port()).await?
    } else {
        attach(&args)?
    };
    let result = drive(&args, &setup, &upstream, &cancel).await;
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

/// Generates the config, starts the target and waits for `/readyz`.
async fn spawn(args: &ReplayArgs, upstream_port: u16) -> anyhow::Result<Setup> {
    let (base, origin) = match &args.spawn {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            crate::config::EMBEDDED.to_owned(),
            "embedded config.toml".into(),
        ),
    };
    // The budget is judged as the *protected* config has it, also when the
    // run turns protections off: that is the comparison the lab is about.
    let budget = Config::parse(&base, &origin)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .memory
        .budget;
    let dir = target::scratch_dir()?;
    let plan = config_gen::Plan {
        dir: &dir,
        dhcp_port: target::free_port()?,
        http_port: target::free_port()?,
        upstream_port,
        no_protections: args.no_protections,
    };
    let (text, config) = config_gen::generate(&base, &origin, &plan)?;
    let path = dir.join("config.toml");
    std::fs::write(&path, &text)?;
    if let Some(out) = &args.out {
        std::fs::write(out.join("target-config.toml"), &text)?;
    }
    let bin = match (&args.vpcbox_bin, std::env::var_os("VPCBOX_BIN")) {
        (Some(b), _) => b.clone(),
        (None, Some(b)) => PathBuf::from(b),
        (None, None) => std::env::current_exe().context("locating the vpcbox binary")?,
    };
    let mut child = Spawned::start(&bin, &path, &dir.join("target.log"))?;
    let base_url = format!("http://{}", config.gateway.listen);
    if let Err(e) = child.wait_ready(&base_url, Duration::from_secs(30)).await {
        if let Some(out) = &args.out {
            let _ = std::fs::copy(&child.log, out.join("target.log"));
        }
        drop(child); // killed on drop
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(Setup {
        base: base_url,
        dhcp: config.dhcp.listen,
        budget: args.budget.unwrap_or(budget),
        subnet: args
            .subnet
            .clone()
            .unwrap_or_else(|| config_gen::SUBNET.into()),
        spawned: Some(child),
        scratch: Some(dir),
    })
}

/// A target that is already running: addresses from the flags or its config.
fn attach(args: &ReplayArgs) -> anyhow::Result<Setup> {
    let config = args
        .config
        .as_deref()
        .map(Config::load)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let loopback = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::from((Ipv4Addr::LOCALHOST, a.port())),
        _ => a,
    };
    let base = args.target.clone().unwrap_or_else(|| {
        config.as_ref().map_or("http://127.0.0.1:8080".into(), |c| {
            format!("http://{}", loopback(c.gateway.listen))
        })
    });
    let dhcp = args.dhcp.unwrap_or_else(|| {
        config
            .as_ref()
            .map_or(SocketAddr::from(([127, 0, 0, 1], 6767)), |c| {
                loopback(c.dhcp.listen)
            })
    });
    Ok(Setup {
        base: base.trim_end_matches('/').to_owned(),
        dhcp,
        budget: args
            .budget
            .or(config.as_ref().map(|c| c.memory.budget))
            .unwrap_or(DEFAULT_BUDGET),
        subnet: args.subnet.clone().unwrap_or_else(|| "lab".into()),
        spawned: None,
        scratch: None,
    })
}

type Run = (
    Vec<report::Sample>,
    Vec<super::phases::PhaseStats>,
    Option<String>,
);

/// The phase schedule. Loads are started as their phase begins and stopped
/// at the tail; a fatal sampler event (`abort`) ends every phase at once.
async fn drive(
    args: &ReplayArgs,
    setup: &Setup,
    upstream: &SlowUpstream,
    cancel: &CancellationToken,
) -> anyhow::Result<Run> {
    let port = setup.dhcp.port();
    let legit_sock = dhcp_load::bind_relay(LEGIT_RELAY, port)?;
    let flood_sock = dhcp_load::bind_relay(FLOOD_RELAY, port)?;
    let rec = Arc::new(Recorder::new());
    let abort = cancel.child_token();
    let sampler = Sampler {
        base: setup.base.clone(),
        pid: setup.spawned.as_ref().map(|s| s.pid),
        rss_cap: args.rss_cap,
    };
    let sampler_stop = CancellationToken::new();
    let sampling = tokio::spawn(sampler.run(rec.clone(), sampler_stop.clone(), abort.clone()));
    let load_stop = abort.child_token();
    let http = |kind, rate, first_ip, timeout| http_load::Load {
        kind,
        base: setup.base.clone(),
        rate,
        first_ip,
        timeout,
        subnet: setup.subnet.clone(),
        prefix: args.upstream_prefix.clone(),
        max_in_flight: 16_384,
    };
    let secs = Duration::from_secs(args.phase_secs);
    let schedule = [
        (Phase::Idle, Duration::from_secs(1)),
        (Phase::Steady, secs),
        (Phase::SlowUpstream, secs),
        (Phase::Flood, secs),
        (Phase::Finale, secs),
        (Phase::Tail, Duration::from_secs(args.tail_secs)),
    ];
    tracing::debug!(upstream = %upstream.addr, "replay starting");
    for (phase, length) in schedule {
        rec.set_phase(phase);
        let (r, stop) = (rec.clone(), load_stop.clone());
        match phase {
            Phase::Idle => {}
            Phase::Steady => {
                let api = http(
                    Kind::Api,
                    args.api_rate,
                    Ipv4Addr::new(127, 0, 0, 10),
                    Duration::from_secs(2),
                );
                tokio::spawn(http_load::run(api, r.clone(), stop.clone()));
                let (sock, rate) = (legit_sock.clone(), args.legit_dhcp_rate);
                tokio::spawn(dhcp_load::legit(
                    sock,
                    setup.dhcp,
                    LEGIT_RELAY,
                    rate,
                    r,
                    stop,
                ));
            }
            Phase::SlowUpstream => {
                let up = http(
                    Kind::Upstream,
                    args.upstream_rate,
                    Ipv4Addr::new(127, 0, 1, 10),
                    Duration::from_secs(10),
                );
                tokio::spawn(http_load::run(up, r, stop));
            }
            Phase::Flood => {
                tokio::spawn(dhcp_load::count_replies(
                    flood_sock.clone(),
                    r.clone(),
                    abort.clone(),
                ));
                let (sock, n, over) = (flood_sock.clone(), args.flood, args.flood_duration);
                tokio::spawn(dhcp_load::flood(
                    sock,
                    setup.dhcp,
                    FLOOD_RELAY,
                    n,
                    over,
                    r,
                    stop,
                ));
            }
            Phase::Finale => {
                let f = finale::Finale {
                    target: authority(&setup.base)?,
                    path: format!("{}finale", args.upstream_prefix),
                    connections: args.finale_connections,
                    streams_per_connection: args.finale_streams,
                    body: usize::try_from(args.finale_body).unwrap_or(usize::MAX),
                };
                tokio::spawn(finale::run(f, r, stop));
            }
            Phase::Tail => load_stop.cancel(),
        }
        tokio::select! {
            () = tokio::time::sleep(length) => {}
            () = abort.cancelled() => break,
        }
    }
    load_stop.cancel();
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
