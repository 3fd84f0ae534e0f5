//! `vpcbox db export|import`: the store as JSON, for backup and restore.
//! Opens the store itself, so it refuses (exit 69) while vpcbox runs; the
//! dump format and its checks are [`crate::ipam::Dump`]'s.

use std::path::Path;

use crate::config::Config;
use crate::exit::Exit;
use crate::ipam::{Dump, IpamError};
use crate::stats::Stats;

/// The store in `[storage] path` as pretty JSON, newline-terminated.
/// With `[cluster]`, everything under the cluster's prefix instead.
pub fn export(config: &Config) -> Result<String, Exit> {
    let failed = |e: &dyn std::fmt::Display| Exit::software(format!("export failed: {e}"));
    let dump = match &config.cluster {
        Some(c) => super::cluster::export(c)?,
        None => {
            let (ipam, _cluster) = super::store::open(config, Stats::new(16))?;
            ipam.export().map_err(|e| failed(&e))?
        }
    };
    let json = serde_json::to_string_pretty(&dump).map_err(|e| failed(&e))?;
    Ok(json + "\n")
}

/// Replaces the store's content with the export in `file` (an empty store
/// unless `force`), then flushes it. With `[cluster]`, writes it into the
/// cluster's prefix, which must be empty (`force` is refused: a cluster's
/// keys are never overwritten).
pub fn import(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    file: &Path,
    force: bool,
) -> Result<(), Exit> {
    let text = std::fs::read(file)
        .map_err(|e| Exit::usage(format!("{}: cannot be read: {e}", file.display())))?;
    // Bytes, not a String: invalid UTF-8 is reported with its line.
    let dump: Dump = serde_json::from_slice(&text)
        .map_err(|e| Exit::usage(format!("{}: not a vpcbox export: {e}", file.display())))?;
    if let Some(c) = &config.cluster {
        if force {
            return Err(Exit::usage(
                "--force: a cluster's keys are never overwritten; import into an empty cluster.prefix",
            ));
        }
        eprint!(
            "vpcbox: {}",
            super::cluster::import(runtime, c, dump, file)?
        );
        return Ok(());
    }
    let (ipam, _cluster) = super::store::open(config, Stats::new(16))?;
    runtime.block_on(async {
        ipam.import(dump, force).await.map_err(|e| match e {
            IpamError::NotEmpty => Exit::usage("the store is not empty; use --force to replace it"),
            e @ (IpamError::Storage(_)
            | IpamError::Degraded(_)
            | IpamError::Cluster(_)
            | IpamError::Conflict(_)) => {
                Exit::unavailable(format!("import failed, nothing written: {e}"))
            }
            other => Exit::usage(format!("{}: {other}", file.display())),
        })?;
        ipam.flush()
            .await
            .map_err(|e| Exit::software(format!("flush failed: {e}")))
    })?;
    eprintln!("vpcbox: imported {}", file.display());
    Ok(())
}
