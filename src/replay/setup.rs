//! Where the load goes: a target the replay spawns (generated config,
//! `/readyz`), or one already running (addresses from flags or its config).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::args::ReplayArgs;
use super::target::{self, Spawned};
use super::{config_gen, http_load};
use crate::config::Config;
use crate::net::loopback_if_unspecified;

/// Where the load goes and what it is judged against.
pub struct Setup {
    pub base: String,
    pub dhcp: SocketAddr,
    pub budget: u64,
    pub subnet: String,
    /// Admin bearer token for the IPAM writes (allocations); without one the
    /// API load sends only reads.
    pub token: Option<Arc<str>>,
    /// Requests per second each legit HTTP client sends: half the target's
    /// per-IP quota as the protected config has it.
    pub per_client: u32,
    pub spawned: Option<Spawned>,
    pub scratch: Option<PathBuf>,
}

const DEFAULT_BUDGET: u64 = 128 << 20;

/// Generates the config, starts the target and waits for `/readyz`.
pub async fn spawn(args: &ReplayArgs, upstream_port: u16) -> anyhow::Result<Setup> {
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
    // The budget is judged, and the legit clients are laid out, as the
    // *protected* config has it, also when the run turns protections off:
    // that is the comparison the lab is about.
    let protected = Config::parse(&base, &origin).map_err(|e| anyhow::anyhow!("{e}"))?;
    let budget = protected.memory.budget;
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
        // The target creates it on first start, before it is ready.
        token: read_token(&config.gateway.admin_token_file),
        per_client: per_client(&protected),
        spawned: Some(child),
        scratch: Some(dir),
    })
}

/// A target that is already running: addresses from the flags or its config.
pub async fn attach(args: &ReplayArgs) -> anyhow::Result<Setup> {
    let config = args
        .config
        .as_deref()
        .map(Config::load)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let base = args.target.clone().unwrap_or_else(|| {
        config.as_ref().map_or("http://127.0.0.1:8080".into(), |c| {
            format!("http://{}", loopback_if_unspecified(c.gateway.listen))
        })
    });
    let dhcp = args.dhcp.unwrap_or_else(|| {
        config
            .as_ref()
            .map_or(SocketAddr::from(([127, 0, 0, 1], 6767)), |c| {
                loopback_if_unspecified(c.dhcp.listen)
            })
    });
    let base = base.trim_end_matches('/').to_owned();
    target::wait_healthy(&base, Duration::from_secs(5)).await?;
    Ok(Setup {
        base,
        dhcp,
        budget: args
            .budget
            .or(config.as_ref().map(|c| c.memory.budget))
            .unwrap_or(DEFAULT_BUDGET),
        subnet: args.subnet.clone().unwrap_or_else(|| "lab".into()),
        token: args
            .token_file
            .as_deref()
            .or(config
                .as_ref()
                .map(|c| c.gateway.admin_token_file.as_path()))
            .and_then(read_token),
        per_client: match &config {
            Some(c) => per_client(c),
            None => per_client(&Config::embedded().map_err(|e| anyhow::anyhow!("{e}"))?),
        },
        spawned: None,
        scratch: None,
    })
}

/// Half of `config`'s per-IP API quota (see [`http_load::per_client_rate`]).
fn per_client(config: &Config) -> u32 {
    http_load::per_client_rate(config.gateway.per_client_rate.per_second())
}

/// The admin token in `path`, trimmed; `None` when unreadable or empty.
fn read_token(path: &Path) -> Option<Arc<str>> {
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| Arc::from(t))
}
