//! SIGHUP: re-read the config and apply what can change live, or refuse the
//! new config with one clear log line and keep the old one.
//!
//! Live: the keys on [`crate::config::diff::LIVE`] (rates, the gateway's
//! body budget, routes, subnets/reservations, memory marks); services that
//! support it watch `Shared::updates`. Every other key needs a restart: the
//! reload log line names each such key that differs from the config the
//! process started with, so the log never claims more than was done.

use std::path::Path;
use std::sync::Arc;

use crate::config::{diff, Config};
use crate::events::EventKind;

use crate::shared::Shared;

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied {
        live: Vec<String>,
        restart_needed: Vec<String>,
    },
    Unchanged,
    Refused(String),
}

/// Re-reads `path` and publishes the new config on `shared.updates`.
pub fn reload(shared: &Shared, path: Option<&Path>) -> Outcome {
    let Some(path) = path else {
        let msg = "config reload refused: running on the embedded defaults (no file to re-read)"
            .to_owned();
        tracing::warn!("{msg}");
        return Outcome::Refused(msg);
    };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("config reload refused, keeping the old config: {e}");
            tracing::error!("{msg}");
            shared.events.push(EventKind::ConfigReload, msg.clone());
            return Outcome::Refused(msg);
        }
    };
    let old = shared.updates.borrow().clone();
    if *old == new {
        tracing::info!(path = %path.display(), "config reload: nothing changed");
        return Outcome::Unchanged;
    }
    let live: Vec<String> = diff::changes(&old.raw, &new.raw)
        .into_iter()
        .filter(|c| c.live)
        .map(|c| c.key)
        .collect();
    // Against the start-up config: a restart-only key changed by an earlier
    // reload is still not in effect, and is named again.
    let restart_needed = diff::restart_only(&shared.config.raw, &new.raw);
    shared.updates.send_replace(Arc::new(new));
    let msg = summary(path, &live, &restart_needed);
    if restart_needed.is_empty() {
        tracing::info!("{msg}");
    } else {
        tracing::warn!("{msg}");
    }
    shared.events.push(EventKind::ConfigReload, msg);
    Outcome::Applied {
        live,
        restart_needed,
    }
}

/// The one reload line: what was applied, and what waits for a restart.
fn summary(path: &Path, live: &[String], restart_needed: &[String]) -> String {
    let mut msg = format!("config reloaded from {}", path.display());
    msg.push_str(&match live {
        [] => "; applied live: nothing".to_owned(),
        keys => format!("; applied live: {}", keys.join(", ")),
    });
    if !restart_needed.is_empty() {
        msg.push_str(&format!(
            "; NOT applied, need a restart (old values kept): {}",
            restart_needed.join(", ")
        ));
    }
    msg
}

/// Applies reloaded subnets and reservations to the store (the other
/// services watch `updates` themselves). Cancel-safe.
pub async fn apply_to_store(
    ipam: Arc<crate::ipam::Ipam>,
    mut updates: tokio::sync::watch::Receiver<Arc<Config>>,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                let config = updates.borrow_and_update().clone();
                let now = std::time::SystemTime::now();
                ipam.set_port_cap6(config.dhcp.max_leases_per_port);
                match ipam.apply_config(&config.subnets, &config.reservations, now) {
                    Ok(()) => tracing::info!(subnets = config.subnets.len(), "subnets and reservations reloaded"),
                    Err(e) => tracing::error!(error = %e, "reloaded subnets/reservations refused by the store; the store keeps its own"),
                }
                // The DHCPv6 server serves the IPAM's v6 subnets (config and API ones).
                if config.cluster.is_none() {
                    if let Err(e) = ipam.apply_config6(&config.subnets6) {
                        tracing::error!(error = %e, "reloaded subnet6 refused by the store; the store keeps its own");
                    }
                }
            }
        }
    }
}
