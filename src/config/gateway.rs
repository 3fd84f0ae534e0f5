//! The `[gateway]` section and the `[[route]]` tables.

use super::check::{dur, fail, non_empty_path, range_check, rate, size_in, sock, within, R};
use super::raw;
use super::{ConfigError, GatewayConfig, RouteConfig, TlsConfig};

/// HTTP/2's legal flow-control window range (RFC 9113 §6.9.1).
const WINDOW_MIN: u64 = 65_535;
const WINDOW_MAX: u64 = (1 << 31) - 1;
/// HTTP/2's legal SETTINGS_MAX_FRAME_SIZE range (RFC 9113 §6.5.2).
const FRAME_MIN: u64 = 16_384;
const FRAME_MAX: u64 = (1 << 24) - 1;
/// Largest `gateway.max_quota_clients`: keeps the quota map a small part
/// of the memory budget.
const MAX_QUOTA_CLIENTS: usize = 1 << 18;
/// Largest `gateway.max_event_streams`: each stream may hold a send buffer
/// of its own, so a few hundred at most fit the memory budget.
const MAX_EVENT_STREAMS: usize = 256;
/// Paths the gateway serves itself; routes may not shadow them.
const RESERVED_PREFIXES: [&str; 6] = [
    "/v1/",
    "/metrics",
    "/healthz",
    "/readyz",
    "/openapi.yaml",
    "/ui",
];

pub fn gateway(g: &raw::Gateway) -> R<GatewayConfig> {
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
        return fail(
            "gateway.body_budget",
            &g.body_budget,
            "must be at least gateway.max_body",
        );
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
        return fail(
            "gateway.response_budget",
            &g.response_budget,
            "must be at least 4 x gateway.max_frame_size",
        );
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
        max_concurrent_streams: within!("gateway", g.max_concurrent_streams, 1, 10_000)?,
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
        max_pending_accept_reset_streams: within!(
            "gateway",
            g.max_pending_accept_reset_streams,
            1,
            10_000
        )?,
        max_local_error_reset_streams: within!(
            "gateway",
            g.max_local_error_reset_streams,
            1,
            100_000
        )?,
        keepalive_interval: dur("gateway.keepalive_interval", &g.keepalive_interval)?,
        keepalive_timeout: dur("gateway.keepalive_timeout", &g.keepalive_timeout)?,
        header_read_timeout: dur("gateway.header_read_timeout", &g.header_read_timeout)?,
        idle_timeout: dur("gateway.idle_timeout", &g.idle_timeout)?,
        request_timeout: dur("gateway.request_timeout", &g.request_timeout)?,
        max_connections: within!("gateway", g.max_connections, 1, 1_000_000)?,
        max_connections_per_client: within!("gateway", g.max_connections_per_client, 1, 1_000_000)?,
        per_client_rate: rate("gateway.per_client_rate", &g.per_client_rate)?,
        per_client_burst: within!("gateway", g.per_client_burst, 1, 1_000_000)?,
        max_quota_clients: within!("gateway", g.max_quota_clients, 1, MAX_QUOTA_CLIENTS)?,
        body_budget,
        max_body,
        response_budget,
        send_stall_timeout: dur("gateway.send_stall_timeout", &g.send_stall_timeout)?,
        socket_buffer: u32size("gateway.socket_buffer", &g.socket_buffer, 4096, 1 << 26)?,
        threads: within!("gateway", g.threads, 0, 64)?,
        public_client_metrics: g.public_client_metrics,
        max_event_streams: within!("gateway", g.max_event_streams, 1, MAX_EVENT_STREAMS)?,
    })
}

pub fn routes(raw: &[raw::Route]) -> R<Vec<RouteConfig>> {
    let mut out: Vec<RouteConfig> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let k = |f: &str| format!("route[{i}].{f}");
        if !r.prefix.starts_with('/') {
            return fail(k("prefix"), &r.prefix, "must start with '/'");
        }
        if RESERVED_PREFIXES
            .iter()
            .any(|p| r.prefix.starts_with(p) || p.starts_with(r.prefix.as_str()))
        {
            return fail(
                k("prefix"),
                &r.prefix,
                "collides with the gateway's own endpoints",
            );
        }
        if out.iter().any(|o| o.prefix == r.prefix) {
            return fail(k("prefix"), &r.prefix, "is used by another route");
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
            return fail(k("name"), &name, "is used by another route");
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
