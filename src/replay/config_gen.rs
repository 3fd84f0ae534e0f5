//! The config `--spawn` runs the target with: the base file's protections
//! (gateway, DHCP admission, memory) with the replay's own addresses,
//! storage, subnet and route; `--no-protections` overlays
//! `bench/no-protections.toml` on top.
//!
//! How DHCP replies reach the replay on loopback: the target answers a
//! relayed packet at `giaddr`:<its own port>. Its DHCP socket is bound to
//! 127.0.0.1:P, so the replay can bind 127.0.0.2:P (legit clients' relay)
//! and 127.0.0.3:P (the flooder's relay) — other addresses, same port —
//! and the subnet lists both as `relays` so either giaddr selects it.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context as _;

use crate::config::{parse_raw, raw, Config};

/// Relay address (giaddr) of the legit DHCP clients.
pub const LEGIT_RELAY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Relay address (giaddr) of the flooding MAC.
pub const FLOOD_RELAY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The subnet the replay creates when it spawns the target.
pub const SUBNET: &str = "replay";
/// The slow route's prefix.
pub const ROUTE_PREFIX: &str = "/replay-slow/";
/// The overlay `--no-protections` applies.
pub const NO_PROTECTIONS: &str = include_str!("../../bench/no-protections.toml");

/// What the generated config needs to know.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// Directory for the target's data.
    pub dir: &'a Path,
    pub dhcp_port: u16,
    pub http_port: u16,
    pub upstream_port: u16,
    pub no_protections: bool,
}

/// Base config text → the config to spawn, validated by [`Config::parse`].
/// Returns the TOML text and the parsed config.
pub fn generate(base: &str, origin: &str, plan: &Plan<'_>) -> anyhow::Result<(String, Config)> {
    let mut raw = parse_raw(base, origin).with_context(|| format!("base config {origin}"))?;
    let data = plan.dir.join("data");
    raw.storage.path = data.display().to_string();
    raw.dhcp.enabled = true;
    raw.dhcp.listen = format!("127.0.0.1:{}", plan.dhcp_port);
    raw.dhcp.interfaces.clear();
    raw.dhcp.server_id = Some("10.200.0.1".into());
    raw.gateway.enabled = true;
    raw.gateway.listen = format!("127.0.0.1:{}", plan.http_port);
    raw.gateway.tls = None;
    raw.gateway.admin_token_file = data.join("admin.token").display().to_string();
    // A /16 so neither the legit DHCP clients nor the API allocations run
    // the pool dry during a long replay.
    raw.subnets = vec![toml::from_str::<raw::Subnet>(&format!(
        r#"id = "{SUBNET}"
cidr = "10.200.0.0/16"
pools = ["10.200.1.0-10.200.255.254"]
gateway = "10.200.0.1"
dns = ["10.200.0.1"]
lease_time = "1h"
relays = ["{LEGIT_RELAY}", "{FLOOD_RELAY}"]"#
    ))
    .context("replay subnet")?];
    raw.reservations.clear();
    let (max_pending, timeout) = raw.routes.first().map_or((1024, "5s".to_owned()), |r| {
        (r.max_pending, r.timeout.clone())
    });
    raw.routes = vec![raw::Route {
        name: Some("replay_slow".into()),
        prefix: ROUTE_PREFIX.into(),
        upstream: format!("http://127.0.0.1:{}", plan.upstream_port),
        max_pending,
        timeout,
        strip_prefix: false,
    }];
    if plan.no_protections {
        for r in &mut raw.routes {
            r.max_pending = 1_000_000;
            r.timeout = "1h".into();
        }
    }
    let mut doc = toml::Table::try_from(&raw).context("rendering the config")?;
    if plan.no_protections {
        let overlay: toml::Table =
            toml::from_str(NO_PROTECTIONS).context("no-protections overlay")?;
        merge(&mut doc, overlay);
    }
    let text = toml::to_string(&doc).context("rendering the config")?;
    let config = Config::parse(&text, "<replay config>")
        .map_err(|e| anyhow::anyhow!("generated config is invalid: {e}"))?;
    Ok((text, config))
}

/// Deep merge: tables merge key by key, anything else is replaced.
fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EMBEDDED;

    fn plan(dir: &Path, no_protections: bool) -> Plan<'_> {
        Plan {
            dir,
            dhcp_port: 40067,
            http_port: 40080,
            upstream_port: 40090,
            no_protections,
        }
    }

    #[test]
    fn spawn_config_keeps_protections_and_sets_addresses() {
        let dir = Path::new("/tmp/replay-x");
        let (_, c) = generate(EMBEDDED, "embedded", &plan(dir, false)).expect("valid");
        assert_eq!(c.dhcp.listen.to_string(), "127.0.0.1:40067");
        assert_eq!(c.gateway.listen.to_string(), "127.0.0.1:40080");
        assert_eq!(c.storage.path, dir.join("data"));
        assert_eq!(c.subnets.len(), 1);
        assert_eq!(c.subnets[0].relays, [LEGIT_RELAY, FLOOD_RELAY]);
        assert_eq!(c.routes[0].prefix, ROUTE_PREFIX);
        assert_eq!(c.routes[0].upstream.to_string(), "http://127.0.0.1:40090/");
        assert_eq!(c.routes[0].max_pending, 1024);
        // protections as shipped
        assert_eq!(c.gateway.initial_stream_window, 64 << 10);
        assert_eq!(c.memory.budget, 128 << 20);
        assert_eq!(c.dhcp.per_client_burst, 20);
    }

    #[test]
    fn no_protections_turns_everything_off_and_still_validates() {
        let dir = Path::new("/tmp/replay-y");
        let (text, c) = generate(EMBEDDED, "embedded", &plan(dir, true)).expect("valid");
        assert_eq!(c.gateway.initial_stream_window, 256 << 20);
        assert_eq!(c.gateway.initial_connection_window, 256 << 20);
        assert_eq!(c.gateway.max_concurrent_streams, 10_000);
        assert!(c.gateway.per_client_rate.per_second() >= 1e6);
        assert!(c.dhcp.per_client_rate.per_second() >= 1e6);
        assert_eq!(c.dhcp.queue, 1_000_000);
        assert_eq!(c.routes[0].max_pending, 1_000_000);
        assert_eq!(c.memory.budget, 64 << 30);
        assert_eq!(c.memory.shed_at, 1.0);
        assert!(c.memory.shrink_interval.as_secs() >= 3_600_000);
        // addresses survive the overlay
        assert_eq!(c.gateway.listen.to_string(), "127.0.0.1:40080");
        assert!(Config::parse(&text, "again").is_ok());
    }

    #[test]
    fn a_user_base_config_keeps_its_own_limits() {
        let base = "[gateway]\nper_client_rate = \"50/s\"\n[memory]\nbudget = \"96MiB\"\n\
                    [[route]]\nprefix = \"/x/\"\nupstream = \"http://127.0.0.1:1\"\nmax_pending = 7\n";
        let (_, c) = generate(base, "base", &plan(Path::new("/tmp/z"), false)).expect("valid");
        assert_eq!(c.memory.budget, 96 << 20);
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].max_pending, 7);
        assert_eq!(c.gateway.per_client_rate.count, 50);
    }

    #[test]
    fn a_broken_base_config_is_an_error() {
        let err = generate(
            "[gateway]\nbogus = 1\n",
            "base",
            &plan(Path::new("/tmp/z"), false),
        );
        assert!(err.is_err());
    }
}
