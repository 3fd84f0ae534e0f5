//! `RawConfig` → `Config`: every check, each error naming its key.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::parse::{self, Rate};
use super::raw::{self, RawConfig};
use super::*;
use crate::client::ClientKey;
use crate::ipam::{SpecError, SubnetField};

/// HTTP/2's legal flow-control window range (RFC 9113 §6.9.1).
const WINDOW_MIN: u64 = 65_535;
const WINDOW_MAX: u64 = (1 << 31) - 1;
/// HTTP/2's legal SETTINGS_MAX_FRAME_SIZE range (RFC 9113 §6.5.2).
const FRAME_MIN: u64 = 16_384;
const FRAME_MAX: u64 = (1 << 24) - 1;
/// Largest `gateway.max_quota_clients`: an entry costs ~40–75 bytes, so the
/// quota map stays within ~20 MiB of the memory budget.
const MAX_QUOTA_CLIENTS: usize = 1 << 18;
/// Paths the gateway serves itself; routes may not shadow them.
const RESERVED_PREFIXES: [&str; 5] = ["/v1/", "/metrics", "/healthz", "/readyz", "/openapi.yaml"];

type R<T> = Result<T, ConfigError>;

fn at<T>(key: &str, value: &str, r: Result<T, &'static str>) -> R<T> {
    r.map_err(|reason| ConfigError::invalid(key, value, reason))
}

fn dur(key: &str, v: &str) -> R<Duration> {
    let d = at(key, v, parse::duration(v))?;
    if d.is_zero() {
        return Err(ConfigError::invalid(key, v, "must be longer than 0s"));
    }
    Ok(d)
}

/// 0 (flush as soon as the previous flush ends) to 100ms (an ACK waits at
/// most that much longer).
fn commit_interval(v: &str) -> R<Duration> {
    const KEY: &str = "storage.commit_interval";
    let d = at(KEY, v, parse::duration(v))?;
    if d > Duration::from_millis(100) {
        return Err(ConfigError::invalid(KEY, v, "must be at most 100ms"));
    }
    Ok(d)
}

fn size(key: &str, v: &str) -> R<u64> {
    at(key, v, parse::size(v))
}

fn size_in(key: &str, v: &str, lo: u64, hi: u64) -> R<u64> {
    let n = size(key, v)?;
    if !(lo..=hi).contains(&n) {
        return Err(ConfigError::invalid(
            key,
            v,
            format!("must be between {lo} and {hi} bytes"),
        ));
    }
    Ok(n)
}

fn rate(key: &str, v: &str) -> R<Rate> {
    at(key, v, parse::rate(v))
}

fn ip(key: &str, v: &str) -> R<Ipv4Addr> {
    at(key, v, parse::ipv4(v))
}

fn sock(key: &str, v: &str) -> R<SocketAddr> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError::invalid(key, v, "is not a socket address (e.g. \"0.0.0.0:67\")"))
}

fn range_check<T: PartialOrd + std::fmt::Display>(key: &str, v: T, lo: T, hi: T) -> R<T> {
    if v < lo || v > hi {
        let reason = format!("must be between {lo} and {hi}");
        return Err(ConfigError::invalid(key, v, reason));
    }
    Ok(v)
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> R<Self> {
        let subnets = subnets(&raw.subnets)?;
        let reservations = reservations(&raw.reservations, &subnets)?;
        let dhcp = dhcp(&raw.dhcp)?;
        if dhcp.enabled && !subnets.is_empty() && dhcp.server_id.is_none() {
            return Err(ConfigError::invalid(
                "dhcp.server_id",
                "",
                "is required when subnets are served",
            ));
        }
        Ok(Self {
            storage: StorageConfig {
                path: non_empty_path("storage.path", &raw.storage.path)?,
                cache: size_in("storage.cache", &raw.storage.cache, 1 << 20, 1 << 40)?,
                commit_interval: commit_interval(&raw.storage.commit_interval)?,
            },
            dhcp,
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
            raw,
        })
    }
}

fn min_dur(key: &str, v: &str, min: Duration) -> R<Duration> {
    let d = dur(key, v)?;
    if d < min {
        let reason = format!("must be at least {}", parse::fmt_duration(min));
        return Err(ConfigError::invalid(key, v, reason));
    }
    Ok(d)
}

fn non_empty_path(key: &str, v: &str) -> R<PathBuf> {
    if v.trim().is_empty() {
        return Err(ConfigError::invalid(key, v, "must not be empty"));
    }
    Ok(PathBuf::from(v))
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
            return Err(ConfigError::invalid(
                format!("dhcp.interfaces[{i}]"),
                name,
                "is not an interface name",
            ));
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
        per_client_burst: range_check("dhcp.per_client_burst", d.per_client_burst, 1, 1_000_000)?,
        max_client_quotas: range_check(
            "dhcp.max_client_quotas",
            d.max_client_quotas,
            1,
            10_000_000,
        )?,
        global_rate: rate("dhcp.global_rate", &d.global_rate)?,
        queue: range_check("dhcp.queue", d.queue, 1, 1_000_000)?,
        workers: range_check("dhcp.workers", d.workers, 1, 64)?,
        deadline: dur("dhcp.deadline", &d.deadline)?,
        cache_threshold: d.cache_threshold,
        offer_hold: dur("dhcp.offer_hold", &d.offer_hold)?,
        decline_quarantine: dur("dhcp.decline_quarantine", &d.decline_quarantine)?,
        new_lease_rate: rate("dhcp.new_lease_rate", &d.new_lease_rate)?,
        max_leases_per_port: range_check(
            "dhcp.max_leases_per_port",
            d.max_leases_per_port,
            0,
            1_000_000,
        )?,
        rapid_commit: d.rapid_commit,
        authoritative: d.authoritative,
    })
}

fn subnets(raw: &[raw::Subnet]) -> R<Vec<SubnetConfig>> {
    let mut out: Vec<SubnetConfig> = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let k = |f: &str| format!("subnet[{i}].{f}");
        let sub = subnet(s, &k)?;
        if let Some(other) = out.iter().find(|o| o.id == sub.id) {
            return Err(ConfigError::invalid(
                k("id"),
                &other.id,
                "is used by another subnet",
            ));
        }
        if let Some(other) = out
            .iter()
            .find(|o| o.cidr.contains(&sub.cidr) || sub.cidr.contains(&o.cidr))
        {
            let reason = format!("overlaps subnet '{}' ({})", other.id, other.cidr);
            return Err(ConfigError::invalid(k("cidr"), &s.cidr, reason));
        }
        out.push(sub);
    }
    Ok(out)
}

/// Parses a `[[subnet]]` table into the spec, then runs the spec's one
/// validation ([`SubnetConfig::check`]), quoting the value as written.
fn subnet(s: &raw::Subnet, k: &dyn Fn(&str) -> String) -> R<SubnetConfig> {
    let cidr = at(&k("cidr"), &s.cidr, parse::cidr(&s.cidr))?;
    let pools = indexed(&s.pools, |j, p| {
        let (start, end) = at(&k(&format!("pools[{j}]")), p, parse::range(p))?;
        Ok(PoolRange { start, end })
    })?;
    let opt_dur = |key: &str, v: &Option<String>| v.as_deref().map(|v| dur(&k(key), v)).transpose();
    let opt_ip = |key: &str, v: &Option<String>| v.as_deref().map(|v| ip(&k(key), v)).transpose();
    let ips = |key: &str, v: &[String]| indexed(v, |j, v| ip(&k(&format!("{key}[{j}]")), v));
    let spec = SubnetConfig {
        id: s.id.clone(),
        cidr,
        pools,
        exclude: ips("exclude", &s.exclude)?,
        gateway: opt_ip("gateway", &s.gateway)?,
        dns: ips("dns", &s.dns)?,
        domain: s.domain.clone().filter(|d| !d.is_empty()),
        lease_time: dur(&k("lease_time"), &s.lease_time)?,
        renew_time: opt_dur("renew_time", &s.renew_time)?,
        rebind_time: opt_dur("rebind_time", &s.rebind_time)?,
        mtu: s.mtu,
        routes: indexed(&s.routes, |j, r| {
            let key = k(&format!("routes[{j}]"));
            Ok(StaticRoute {
                dest: at(&format!("{key}.dest"), &r.dest, parse::cidr(&r.dest))?,
                via: ip(&format!("{key}.via"), &r.via)?,
            })
        })?,
        options: indexed(&s.options, |j, o| {
            let key = format!("{}.hex", k(&format!("options[{j}]")));
            let data = at(&key, &o.hex, parse::hex(&o.hex))?;
            Ok(DhcpOption { code: o.code, data })
        })?,
        relays: ips("relays", &s.relays)?,
    };
    spec.check()
        .map_err(|e| ConfigError::invalid(k(&e.field.to_string()), as_written(s, &e), e.reason))?;
    Ok(spec)
}

/// The value a spec error is about, as the config file writes it.
fn as_written(s: &raw::Subnet, e: &SpecError) -> String {
    use SubnetField as F;
    let text = match e.field {
        F::Id => Some(&s.id),
        F::Cidr => Some(&s.cidr),
        F::Pool(j) => s.pools.get(j),
        F::Exclude(j) => s.exclude.get(j),
        F::Gateway => s.gateway.as_ref(),
        F::LeaseTime => Some(&s.lease_time),
        F::RenewTime => s.renew_time.as_ref(),
        F::RebindTime => s.rebind_time.as_ref(),
        F::Times => s.rebind_time.as_ref().or(s.renew_time.as_ref()),
        F::OptionHex(j) => s.options.get(j).map(|o| &o.hex),
        F::Pools | F::Mtu | F::OptionCode(_) => None,
    };
    text.cloned().unwrap_or_else(|| e.value.clone())
}

fn indexed<T, U>(items: &[T], f: impl Fn(usize, &T) -> R<U>) -> R<Vec<U>> {
    items.iter().enumerate().map(|(j, v)| f(j, v)).collect()
}

fn reservations(raw: &[raw::Reservation], subnets: &[SubnetConfig]) -> R<Vec<ReservationConfig>> {
    let mut out: Vec<ReservationConfig> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let k = |f: &str| format!("reservation[{i}].{f}");
        let Some(sub) = subnets.iter().find(|s| s.id == r.subnet) else {
            return Err(ConfigError::invalid(
                k("subnet"),
                &r.subnet,
                "names no configured subnet",
            ));
        };
        let client: ClientKey = r.client.parse().map_err(|_| {
            ConfigError::invalid(
                k("client"),
                &r.client,
                "is not a client key (mac:… or id:…)",
            )
        })?;
        if !client.is_dhcp() {
            return Err(ConfigError::invalid(
                k("client"),
                &r.client,
                "must be a DHCP client (mac:… or id:…)",
            ));
        }
        let addr = ip(&k("ip"), &r.ip)?;
        if !sub.cidr.contains(&addr) || addr == sub.cidr.network() || addr == sub.cidr.broadcast() {
            return Err(ConfigError::invalid(
                k("ip"),
                &r.ip,
                format!("is not a host address of {}", sub.cidr),
            ));
        }
        if sub.gateway == Some(addr) || sub.exclude.contains(&addr) {
            return Err(ConfigError::invalid(
                k("ip"),
                &r.ip,
                "is the subnet's gateway or an excluded address",
            ));
        }
        if out.iter().any(|o| o.ip == addr) {
            return Err(ConfigError::invalid(
                k("ip"),
                &r.ip,
                "is reserved for another client",
            ));
        }
        if out
            .iter()
            .any(|o| o.subnet == r.subnet && o.client == client)
        {
            return Err(ConfigError::invalid(
                k("client"),
                &r.client,
                "already has a reservation in this subnet",
            ));
        }
        out.push(ReservationConfig {
            subnet: r.subnet.clone(),
            client,
            ip: addr,
            hostname: r.hostname.clone(),
        });
    }
    Ok(out)
}

fn gateway(g: &raw::Gateway) -> R<GatewayConfig> {
    let window = |key: &str, v: &str| -> R<u32> {
        let n = size_in(key, v, WINDOW_MIN, WINDOW_MAX)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    };
    let u32size = |key: &str, v: &str, lo: u64, hi: u64| -> R<u32> {
        Ok(u32::try_from(size_in(key, v, lo, hi)?).unwrap_or(u32::MAX))
    };
    let max_body = size_in("gateway.max_body", &g.max_body, 1, 1 << 32)?;
    let body_budget = size_in("gateway.body_budget", &g.body_budget, 1 << 16, 1 << 36)?;
    if body_budget < max_body {
        return Err(ConfigError::invalid(
            "gateway.body_budget",
            &g.body_budget,
            "must be at least gateway.max_body",
        ));
    }
    let max_frame_size = u32size(
        "gateway.max_frame_size",
        &g.max_frame_size,
        FRAME_MIN,
        FRAME_MAX,
    )?;
    // Room for several of the largest chunks a body reserves at a time.
    let response_budget = size_in(
        "gateway.response_budget",
        &g.response_budget,
        1 << 20,
        1 << 36,
    )?;
    if response_budget < 4 * u64::from(max_frame_size) {
        return Err(ConfigError::invalid(
            "gateway.response_budget",
            &g.response_budget,
            "must be at least 4 x gateway.max_frame_size",
        ));
    }
    let tls = g
        .tls
        .as_ref()
        .map(|t| -> R<TlsConfig> {
            Ok(TlsConfig {
                cert: non_empty_path("gateway.tls.cert", &t.cert)?,
                key: non_empty_path("gateway.tls.key", &t.key)?,
            })
        })
        .transpose()?;
    Ok(GatewayConfig {
        enabled: g.enabled,
        listen: sock("gateway.listen", &g.listen)?,
        tls,
        admin_token_file: non_empty_path("gateway.admin_token_file", &g.admin_token_file)?,
        initial_stream_window: window("gateway.initial_stream_window", &g.initial_stream_window)?,
        initial_connection_window: window(
            "gateway.initial_connection_window",
            &g.initial_connection_window,
        )?,
        max_concurrent_streams: range_check(
            "gateway.max_concurrent_streams",
            g.max_concurrent_streams,
            1,
            10_000,
        )?,
        max_header_list_size: u32size(
            "gateway.max_header_list_size",
            &g.max_header_list_size,
            1024,
            1 << 20,
        )?,
        max_frame_size,
        max_send_buffer: usize::try_from(size_in(
            "gateway.max_send_buffer",
            &g.max_send_buffer,
            1024,
            1 << 24,
        )?)
        .unwrap_or(usize::MAX),
        max_pending_accept_reset_streams: range_check(
            "gateway.max_pending_accept_reset_streams",
            g.max_pending_accept_reset_streams,
            1,
            10_000,
        )?,
        max_local_error_reset_streams: range_check(
            "gateway.max_local_error_reset_streams",
            g.max_local_error_reset_streams,
            1,
            100_000,
        )?,
        keepalive_interval: dur("gateway.keepalive_interval", &g.keepalive_interval)?,
        keepalive_timeout: dur("gateway.keepalive_timeout", &g.keepalive_timeout)?,
        header_read_timeout: dur("gateway.header_read_timeout", &g.header_read_timeout)?,
        idle_timeout: dur("gateway.idle_timeout", &g.idle_timeout)?,
        request_timeout: dur("gateway.request_timeout", &g.request_timeout)?,
        max_connections: range_check("gateway.max_connections", g.max_connections, 1, 1_000_000)?,
        max_connections_per_client: range_check(
            "gateway.max_connections_per_client",
            g.max_connections_per_client,
            1,
            1_000_000,
        )?,
        per_client_rate: rate("gateway.per_client_rate", &g.per_client_rate)?,
        per_client_burst: range_check(
            "gateway.per_client_burst",
            g.per_client_burst,
            1,
            1_000_000,
        )?,
        max_quota_clients: range_check(
            "gateway.max_quota_clients",
            g.max_quota_clients,
            1,
            MAX_QUOTA_CLIENTS,
        )?,
        body_budget,
        max_body,
        response_budget,
        send_stall_timeout: dur("gateway.send_stall_timeout", &g.send_stall_timeout)?,
        socket_buffer: u32size("gateway.socket_buffer", &g.socket_buffer, 4096, 1 << 26)?,
        threads: range_check("gateway.threads", g.threads, 0, 64)?,
        public_client_metrics: g.public_client_metrics,
    })
}

fn routes(raw: &[raw::Route]) -> R<Vec<RouteConfig>> {
    let mut out: Vec<RouteConfig> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let k = |f: &str| format!("route[{i}].{f}");
        if !r.prefix.starts_with('/') {
            return Err(ConfigError::invalid(
                k("prefix"),
                &r.prefix,
                "must start with '/'",
            ));
        }
        if RESERVED_PREFIXES
            .iter()
            .any(|p| r.prefix.starts_with(p) || p.starts_with(r.prefix.as_str()))
        {
            return Err(ConfigError::invalid(
                k("prefix"),
                &r.prefix,
                "collides with the gateway's own endpoints",
            ));
        }
        if out.iter().any(|o| o.prefix == r.prefix) {
            return Err(ConfigError::invalid(
                k("prefix"),
                &r.prefix,
                "is used by another route",
            ));
        }
        let upstream: http::Uri = r
            .upstream
            .parse()
            .ok()
            .filter(|u: &http::Uri| {
                matches!(u.scheme_str(), Some("http" | "h2c")) && u.authority().is_some()
            })
            .ok_or_else(|| {
                ConfigError::invalid(
                    k("upstream"),
                    &r.upstream,
                    "is not an http://host[:port] (HTTP/1.1) or h2c://host[:port] (HTTP/2) URL",
                )
            })?;
        let name = r.name.clone().unwrap_or_else(|| {
            let n = r.prefix.trim_matches('/').replace('/', "_");
            if n.is_empty() {
                format!("route{i}")
            } else {
                n
            }
        });
        if out.iter().any(|o| o.name == name) {
            return Err(ConfigError::invalid(
                k("name"),
                &name,
                "is used by another route",
            ));
        }
        out.push(RouteConfig {
            name,
            prefix: r.prefix.clone(),
            upstream,
            max_pending: range_check(&k("max_pending"), r.max_pending, 1, 1_000_000)?,
            timeout: dur(&k("timeout"), &r.timeout)?,
            strip_prefix: r.strip_prefix,
        });
    }
    Ok(out)
}

fn memory(m: &raw::Memory) -> R<MemoryConfig> {
    let budget = size_in("memory.budget", &m.budget, 16 << 20, 1 << 40)?;
    if !(m.shrink_at > 0.0 && m.shrink_at < 1.0) {
        return Err(ConfigError::invalid(
            "memory.shrink_at",
            m.shrink_at,
            "must be in (0, 1)",
        ));
    }
    if !(m.shed_at > m.shrink_at && m.shed_at <= 1.0) {
        return Err(ConfigError::invalid(
            "memory.shed_at",
            m.shed_at,
            "must be above memory.shrink_at and at most 1",
        ));
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
