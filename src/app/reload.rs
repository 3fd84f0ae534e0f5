//! SIGHUP: re-read the config and apply what can change live, or refuse the
//! new config with one clear log line and keep the old one.
//!
//! Live: rates, limits, routes, subnets/reservations, memory marks — services
//! that support it watch `Shared::updates`. Needs a restart: listen
//! addresses, interfaces, TLS, the storage path; those changes are logged and
//! ignored until then.

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::events::EventKind;

use super::Shared;

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied { restart_needed: Vec<&'static str> },
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
    let restart_needed = needs_restart(&old, &new);
    if !restart_needed.is_empty() {
        tracing::warn!(keys = ?restart_needed, "config reload: these keys only take effect after a restart");
    }
    shared.updates.send_replace(Arc::new(new));
    let msg = format!("config reloaded from {}", path.display());
    tracing::info!("{msg}");
    shared.events.push(EventKind::ConfigReload, msg);
    Outcome::Applied { restart_needed }
}

fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let checks: [(&'static str, bool); 6] = [
        ("storage.path", old.storage.path != new.storage.path),
        ("storage.cache", old.storage.cache != new.storage.cache),
        ("dhcp.listen", old.dhcp.listen != new.dhcp.listen),
        (
            "dhcp.interfaces",
            old.dhcp.interfaces != new.dhcp.interfaces,
        ),
        ("gateway.listen", old.gateway.listen != new.gateway.listen),
        ("gateway.tls", old.gateway.tls != new.gateway.tls),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(k, _)| k)
        .collect()
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
                match ipam.apply_config(&config.subnets, &config.reservations, now) {
                    Ok(()) => tracing::info!(subnets = config.subnets.len(), "subnets and reservations reloaded"),
                    Err(e) => tracing::error!(error = %e, "reloaded subnets/reservations refused by the store; the store keeps its own"),
                }
            }
        }
    }
}
