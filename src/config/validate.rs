//! `RawConfig` → `Config`: each section's checks, each error naming its key.

use std::time::Duration;

use super::check::{
    at, dur, fail, ip, min_dur, non_empty_path, range_check, rate, size_in, sock, within, R,
};
use super::cluster::cluster;
use super::dhcp6::{dhcp6, subnets6};
use super::gateway::{gateway, routes};
use super::parse;
use super::raw::{self, RawConfig};
use super::subnets::{reservations, subnets};
use super::{
    Config, ConfigError, DhcpConfig, MemoryConfig, ProcessConfig, StatsConfig, StorageConfig,
    TuiConfig,
};

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> R<Self> {
        let subnets = subnets(&raw.subnets)?;
        let reservations = reservations(&raw.reservations, &subnets)?;
        let dhcp = dhcp(&raw.dhcp)?;
        if dhcp.enabled && !subnets.is_empty() && dhcp.server_id.is_none() {
            return fail("dhcp.server_id", "", "is required when subnets are served");
        }
        let cluster = raw
            .cluster
            .as_ref()
            .map(|c| cluster(c, &subnets))
            .transpose()?;
        Ok(Self {
            storage: StorageConfig {
                path: non_empty_path("storage.path", &raw.storage.path)?,
                cache: size_in("storage.cache", &raw.storage.cache, 1 << 20, 1 << 40)?,
                commit_interval: commit_interval(&raw.storage.commit_interval)?,
            },
            dhcp,
            dhcp6: dhcp6(&raw.dhcp6)?,
            subnets6: subnets6(&raw.subnets6, &subnets)?,
            subnets,
            reservations,
            gateway: gateway(&raw.gateway)?,
            routes: routes(&raw.routes)?,
            memory: memory(&raw.memory)?,
            tui: TuiConfig {
                refresh: min_dur("tui.refresh", &raw.tui.refresh, Duration::from_millis(50))?,
            },
            stats: StatsConfig {
                tracked_clients: range_check(
                    "stats.tracked_clients",
                    raw.stats.tracked_clients,
                    16,
                    65_536,
                )?,
                publish_interval: min_dur(
                    "stats.publish_interval",
                    &raw.stats.publish_interval,
                    Duration::from_millis(50),
                )?,
            },
            process: ProcessConfig {
                shutdown_grace: dur("process.shutdown_grace", &raw.process.shutdown_grace)?,
            },
            cluster,
            raw,
        })
    }
}

/// 0 (flush as soon as the previous flush ends) to 100ms (an ACK waits at
/// most that much longer).
fn commit_interval(v: &str) -> R<Duration> {
    const KEY: &str = "storage.commit_interval";
    let d = at(KEY, v, parse::duration(v))?;
    if d > Duration::from_millis(100) {
        return fail(KEY, v, "must be at most 100ms");
    }
    Ok(d)
}

fn dhcp(d: &raw::Dhcp) -> R<DhcpConfig> {
    if !(0.0..1.0).contains(&d.cache_threshold) {
        return Err(ConfigError::invalid(
            "dhcp.cache_threshold",
            d.cache_threshold,
            "must be in [0, 1)",
        ));
    }
    for (i, name) in d.interfaces.iter().enumerate() {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            return fail(
                format!("dhcp.interfaces[{i}]"),
                name,
                "is not an interface name",
            );
        }
    }
    Ok(DhcpConfig {
        enabled: d.enabled,
        listen: sock("dhcp.listen", &d.listen)?,
        interfaces: d.interfaces.clone(),
        server_id: d
            .server_id
            .as_deref()
            .map(|s| ip("dhcp.server_id", s))
            .transpose()?,
        per_client_rate: rate("dhcp.per_client_rate", &d.per_client_rate)?,
        per_client_burst: within!("dhcp", d.per_client_burst, 1, 1_000_000)?,
        max_client_quotas: within!("dhcp", d.max_client_quotas, 1, 10_000_000)?,
        global_rate: rate("dhcp.global_rate", &d.global_rate)?,
        queue: within!("dhcp", d.queue, 1, 1_000_000)?,
        workers: within!("dhcp", d.workers, 1, 64)?,
        deadline: dur("dhcp.deadline", &d.deadline)?,
        cache_threshold: d.cache_threshold,
        offer_hold: dur("dhcp.offer_hold", &d.offer_hold)?,
        decline_quarantine: dur("dhcp.decline_quarantine", &d.decline_quarantine)?,
        new_lease_rate: rate("dhcp.new_lease_rate", &d.new_lease_rate)?,
        max_leases_per_port: within!("dhcp", d.max_leases_per_port, 0, 1_000_000)?,
        rapid_commit: d.rapid_commit,
        authoritative: d.authoritative,
    })
}

fn memory(m: &raw::Memory) -> R<MemoryConfig> {
    let budget = size_in("memory.budget", &m.budget, 16 << 20, 1 << 40)?;
    if !(m.shrink_at > 0.0 && m.shrink_at < 1.0) {
        return fail("memory.shrink_at", m.shrink_at, "must be in (0, 1)");
    }
    if !(m.shed_at > m.shrink_at && m.shed_at <= 1.0) {
        return fail(
            "memory.shed_at",
            m.shed_at,
            "must be above memory.shrink_at and at most 1",
        );
    }
    if !(m.hysteresis >= 0.0 && m.hysteresis < m.shrink_at) {
        return Err(ConfigError::invalid(
            "memory.hysteresis",
            m.hysteresis,
            "must be in [0, memory.shrink_at)",
        ));
    }
    Ok(MemoryConfig {
        budget,
        shrink_at: m.shrink_at,
        shed_at: m.shed_at,
        hysteresis: m.hysteresis,
        shrink_interval: dur("memory.shrink_interval", &m.shrink_interval)?,
        sample_interval: min_dur(
            "memory.sample_interval",
            &m.sample_interval,
            Duration::from_millis(10),
        )?,
    })
}
