//! Prometheus text exposition of a [`Snapshot`].
//!
//! `/metrics` reads the same published snapshot as the dashboard, so a
//! scrape never touches live counters and costs the services nothing. Each
//! render builds a small prometheus-client `Registry` of constant metrics
//! from the snapshot and runs the crate's Prometheus text (0.0.4) encoder.
//! Samples keep the snapshot's order (prometheus-client's `Family` is a hash
//! map, which would shuffle them between scrapes), and every metric appears
//! with its `# TYPE` line even before it has a sample.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{EncodeGaugeValue, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::clients::ClientRow;
use super::histogram::{HistogramSnapshot, BOUNDS};
use super::labels::{DhcpKind, DhcpOutcome, DropReason};
use super::snapshot::Snapshot;

/// The `Content-Type` to serve [`render`]'s output with.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Per-client series are limited to this many top clients, so a flood of
/// distinct clients cannot blow up the scrape or the TSDB's cardinality.
pub const TOP_CLIENTS: usize = 20;

type Labels = Vec<(&'static str, String)>;

/// Constant gauge samples of one family, in the order given.
#[derive(Debug)]
struct Gauges<V>(Vec<(Labels, V)>);

impl<V> Gauges<V> {
    fn single(v: V) -> Self {
        Self(vec![(Vec::new(), v)])
    }
}

impl<V: EncodeGaugeValue + std::fmt::Debug> EncodeMetric for Gauges<V> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, v) in &self.0 {
            encoder.encode_family(labels)?.encode_gauge(v)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// Constant counter samples of one family, in the order given. The
/// encoder appends `_total` to the name.
#[derive(Debug)]
struct Counters(Vec<(Labels, u64)>);

impl Counters {
    fn single(v: u64) -> Self {
        Self(vec![(Vec::new(), v)])
    }
}

impl EncodeMetric for Counters {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, v) in &self.0 {
            encoder
                .encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(v, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// A histogram from a [`HistogramSnapshot`] (cumulative counts per bound
/// of [`BOUNDS`]).
#[derive(Debug)]
struct ConstHistogram {
    /// `(upper bound, count in this bucket alone)`: the encoder cumulates.
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl ConstHistogram {
    fn new(h: &HistogramSnapshot) -> Self {
        let mut prev = 0;
        let buckets = BOUNDS
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let cum = h.cumulative.get(i).copied().unwrap_or(prev).max(prev);
                let n = cum - prev;
                prev = cum;
                (*b, n)
            })
            .collect();
        Self {
            buckets,
            sum: h.sum,
            count: h.count.max(prev),
        }
    }
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Renders `snap` in the Prometheus text format (version 0.0.4); the
/// per-client series only if `per_client`.
pub fn render(snap: &Snapshot, per_client: bool) -> String {
    let mut reg = Registry::with_prefix("vpcbox");
    dhcp(&mut reg, snap);
    ipam(&mut reg, snap);
    gateway(&mut reg, snap);
    memory(&mut reg, snap);
    clients(&mut reg, snap, per_client);
    let mut out = String::new();
    // Writing to a String cannot fail; only an encoder bug could, and a
    // partial page is then still the most useful answer.
    if let Err(e) = prometheus_text::encode(&mut out, &reg) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    out
}

fn dhcp(reg: &mut Registry, snap: &Snapshot) {
    // Every type and result, seen or not, so rate() has a series from the start.
    let packets = DhcpKind::ALL
        .iter()
        .flat_map(|k| DhcpOutcome::ALL.iter().map(move |o| (*k, *o)))
        .map(|(k, o)| {
            let n = snap
                .dhcp_packets
                .iter()
                .find(|(sk, so, _)| (*sk, *so) == (k, o))
                .map_or(0, |p| p.2);
            let labels = vec![
                ("type", k.as_str().to_owned()),
                ("result", o.as_str().to_owned()),
            ];
            (labels, n)
        })
        .collect();
    reg.register(
        "dhcp_packets",
        "DHCP packets received, by message type and what became of them",
        Counters(packets),
    );
    reg.register(
        "dhcp_queue_depth",
        "DHCP packets waiting in the bounded work queue",
        Gauges::single(snap.dhcp_queue_depth),
    );
    reg.register(
        "dhcp_queue_capacity",
        "Capacity of the DHCP work queue",
        Gauges::single(snap.dhcp_queue_capacity),
    );
    reg.register(
        "dhcp_tracked_clients",
        "Client keys with a DHCP quota of their own (at most dhcp.max_client_quotas)",
        Gauges::single(snap.dhcp_tracked_clients),
    );
}

fn ipam(reg: &mut Registry, snap: &Snapshot) {
    let leases = snap
        .ipam_leases
        .iter()
        .map(|l| {
            let labels = vec![("subnet", l.subnet.clone()), ("state", l.state.to_owned())];
            (labels, l.count)
        })
        .collect();
    reg.register("ipam_leases", "Leases by subnet and state", Gauges(leases));
    reg.register(
        "ipam_commit_seconds",
        "Seconds from a durable write's submission to its flush completing",
        ConstHistogram::new(&snap.ipam_commit_seconds),
    );
    reg.register(
        "ipam_commit_batch_size",
        "Operations per group commit",
        ConstHistogram::new(&snap.ipam_batch_size),
    );
    reg.register(
        "ipam_commits_waiting",
        "Writes waiting for a group commit",
        Gauges::single(snap.ipam_commits_waiting),
    );
    reg.register(
        "ipam_writes",
        "Durable IPAM writes",
        Counters::single(snap.ipam_writes_total),
    );
    reg.register(
        "storage_errors",
        "Store writes or flushes that failed",
        Counters::single(snap.storage_errors_total),
    );
    reg.register(
        "storage_degraded",
        "1 while the store refuses writes after a failure",
        Gauges::single(snap.storage_degraded),
    );
}

fn gateway(reg: &mut Registry, snap: &Snapshot) {
    let route = |name: &str| vec![("route", name.to_owned())];
    let requests = snap
        .routes
        .iter()
        .flat_map(|r| {
            r.codes.iter().map(|(code, n)| {
                let mut labels = route(&r.name);
                labels.push(("code", code.to_string()));
                (labels, *n)
            })
        })
        .collect();
    reg.register(
        "gateway_requests",
        "Gateway responses by route and status code",
        Counters(requests),
    );
    let pending = snap.routes.iter().map(|r| (route(&r.name), r.pending));
    reg.register(
        "gateway_pending",
        "Requests in flight per route",
        Gauges(pending.collect()),
    );
    let max_pending = snap.routes.iter().map(|r| (route(&r.name), r.max_pending));
    reg.register(
        "gateway_max_pending",
        "Configured pending cap per route; past it the gateway answers 503",
        Gauges(max_pending.collect()),
    );
    reg.register(
        "gateway_streams",
        "Open HTTP/2 streams",
        Gauges::single(snap.gateway_streams),
    );
    reg.register(
        "gateway_connections",
        "Open gateway connections",
        Gauges::single(snap.gateway_connections),
    );
    reg.register(
        "gateway_response_buffered_bytes",
        "Response bytes buffered for clients, not yet written to their sockets",
        Gauges::single(snap.gateway_response_buffered),
    );
    reg.register(
        "gateway_response_budget_bytes",
        "Configured response budget; upstream reads pause past it",
        Gauges::single(snap.gateway_response_budget),
    );
    let resets = ["stall", "budget", "shed"]
        .iter()
        .zip(snap.gateway_response_resets)
        .map(|(r, n)| (vec![("reason", (*r).to_owned())], n));
    reg.register(
        "gateway_response_resets",
        "Streams reset for the response bytes they held",
        Counters(resets.collect()),
    );
}

fn memory(reg: &mut Registry, snap: &Snapshot) {
    let m = &snap.memory;
    let gauges: [(&str, &str, u64); 7] = [
        (
            "memory_rss_bytes",
            "Resident set size of the process",
            m.rss_bytes,
        ),
        (
            "memory_budget_bytes",
            "Configured memory budget",
            m.budget_bytes,
        ),
        (
            "heap_allocated_bytes",
            "Bytes allocated by the application (jemalloc)",
            m.heap_allocated,
        ),
        (
            "heap_resident_bytes",
            "Bytes in physically resident heap pages (jemalloc)",
            m.heap_resident,
        ),
        (
            "heap_retained_bytes",
            "Bytes retained by jemalloc, not returned to the OS",
            m.heap_retained,
        ),
        (
            "heap_last_reclaim_bytes",
            "Bytes the last heap shrink gave back",
            m.last_reclaim_bytes,
        ),
        (
            "overload_state",
            "Memory governor state: 0 normal, 1 shrink, 2 shed",
            m.overload_state,
        ),
    ];
    for (name, help, v) in gauges {
        reg.register(name, help, Gauges::single(v));
    }
    reg.register(
        "heap_shrinks",
        "Heap purges that returned memory to the OS",
        Counters::single(m.heap_shrinks),
    );
    reg.register(
        "uptime_seconds",
        "Seconds since the process started",
        Gauges::single(snap.uptime.as_secs_f64()),
    );
}

fn clients(reg: &mut Registry, snap: &Snapshot, per_client: bool) {
    let drops = DropReason::ALL
        .iter()
        .map(|r| {
            let n = snap.drops.iter().find(|(d, _)| d == r).map_or(0, |d| d.1);
            (vec![("reason", r.as_str().to_owned())], n)
        })
        .collect();
    reg.register(
        "client_drops",
        "Refused packets, connections and requests, by reason",
        Counters(drops),
    );
    reg.register(
        "isolated_clients",
        "Clients isolated by the operator",
        Gauges::single(snap.isolated_clients),
    );
    if !per_client {
        return;
    }
    let top: Vec<_> = snap
        .clients
        .iter()
        .filter_map(|r| {
            r.client
                .as_ref()
                .map(|c| (vec![("client", c.to_string())], r))
        })
        .take(TOP_CLIENTS)
        .collect();
    reg.register(
        "client_rate",
        "Requests per second over the last second, top clients only",
        top_gauge(&top, |r| r.rate_1s),
    );
    reg.register(
        "client_served_rate",
        "Answers per second over the last second, top clients only",
        top_gauge(&top, |r| r.served_rate_1s),
    );
    reg.register(
        "client_pending",
        "Work in flight, top clients only",
        top_gauge(&top, |r| r.pending),
    );
}

fn top_gauge<V>(top: &[(Labels, &ClientRow)], f: impl Fn(&ClientRow) -> V) -> Gauges<V> {
    Gauges(top.iter().map(|(l, r)| (l.clone(), f(r))).collect())
}
