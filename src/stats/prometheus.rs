//! Prometheus text exposition of a [`Snapshot`]: `/metrics` reads the
//! published snapshot, never live counters. Samples keep the snapshot's
//! order (prometheus-client's `Family` would shuffle them) and every metric
//! has its `# TYPE` line even before its first sample.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{EncodeGaugeValue, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::clients::ClientRow;
use super::histogram::{HistogramSnapshot, BOUNDS};
use super::labels::{DhcpKind, DhcpOutcome, DropReason};
use super::snapshot::{LeaseCount, RouteSnapshot, Snapshot};

/// The `Content-Type` to serve [`render`]'s output with.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Per-client series are limited to this many top clients, so a flood of
/// distinct clients cannot blow up the scrape or the TSDB's cardinality.
pub const TOP_CLIENTS: usize = 20;

type Labels = Vec<(&'static str, String)>;

/// Constant gauge samples of one family, in the order given.
#[derive(Debug)]
struct Gauges<V>(Vec<(Labels, V)>);

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

/// Registers one family per line, in order: `kind "name", "help" => value;`
/// where `kind` builds the metric (`gauge`/`counter` for one sample,
/// `Gauges`/`Counters` for labelled samples, `histogram`).
macro_rules! families {
    ($reg:expr; $($kind:ident $name:literal, $help:literal => $v:expr;)+) => {
        $( $reg.register($name, $help, $kind($v)); )+
    };
}

fn gauge<V>(v: V) -> Gauges<V> {
    Gauges(vec![(Vec::new(), v)])
}

fn counter(v: u64) -> Counters {
    Counters(vec![(Vec::new(), v)])
}

fn histogram(h: &HistogramSnapshot) -> ConstHistogram {
    ConstHistogram::new(h)
}

/// One sample per label value, in `values`' order.
fn by<T, V>(
    key: &'static str,
    values: &[T],
    name: impl Fn(&T) -> String,
    v: impl Fn(&T) -> V,
) -> Vec<(Labels, V)> {
    values
        .iter()
        .map(|x| (vec![(key, name(x))], v(x)))
        .collect()
}

fn dhcp(reg: &mut Registry, snap: &Snapshot) {
    families! { reg;
        Counters "dhcp_packets", "DHCP packets received, by message type and what became of them" => dhcp_packets(snap);
        gauge "dhcp_queue_depth", "DHCP packets waiting in the bounded work queue" => snap.dhcp_queue_depth;
        gauge "dhcp_queue_capacity", "Capacity of the DHCP work queue" => snap.dhcp_queue_capacity;
        gauge "dhcp_tracked_clients", "Client keys with a DHCP quota of their own (at most dhcp.max_client_quotas)" => snap.dhcp_tracked_clients;
        Counters "dhcp6_malformed", "DHCPv6 datagrams refused on the wire, by what was wrong" => snap.dhcp6_malformed.iter().map(|(r, n)| (vec![("reason", (*r).to_owned())], *n)).collect();
        Counters "dhcp6_relayed_packets", "DHCPv6 messages that came inside a Relay-Forw (counted in dhcp_packets too), by the client message's type and what became of them" => snap.dhcp6_relayed.iter().map(|(k, o, n)| (type_result(*k, *o), *n)).collect();
    }
}

fn ipam(reg: &mut Registry, snap: &Snapshot) {
    families! { reg;
        Gauges "ipam_leases", "Leases by subnet and state" => snap.ipam_leases.iter().map(lease_labels).collect();
        histogram "ipam_commit_seconds", "Seconds from a durable write's submission to its flush completing" => &snap.ipam_commit_seconds;
        histogram "ipam_commit_batch_size", "Operations per group commit" => &snap.ipam_batch_size;
        gauge "ipam_commits_waiting", "Writes waiting for a group commit" => snap.ipam_commits_waiting;
        counter "ipam_writes", "Durable IPAM writes" => snap.ipam_writes_total;
        counter "storage_errors", "Store writes or flushes that failed" => snap.storage_errors_total;
        gauge "storage_degraded", "1 while the store refuses writes after a failure" => snap.storage_degraded;
        gauge "cluster_fenced", "1 while this cluster node may not write (etcd unreachable or its lease lost)" => snap.cluster_fenced;
        gauge "cluster_nodes", "Live cluster members seen in etcd (0 outside a cluster)" => snap.cluster_nodes;
    }
}

fn gateway(reg: &mut Registry, snap: &Snapshot) {
    let route = |r: &RouteSnapshot| r.name.clone();
    let resets = ["stall", "budget", "shed"]
        .into_iter()
        .zip(snap.gateway_response_resets);
    families! { reg;
        Counters "gateway_requests", "Gateway responses by route and status code" => route_codes(snap);
        Gauges "gateway_pending", "Requests in flight per route" => by("route", &snap.routes, route, |r| r.pending);
        Gauges "gateway_max_pending", "Configured pending cap per route; past it the gateway answers 503" => by("route", &snap.routes, route, |r| r.max_pending);
        gauge "gateway_streams", "Open HTTP/2 streams" => snap.gateway_streams;
        gauge "gateway_connections", "Open gateway connections" => snap.gateway_connections;
        gauge "gateway_response_buffered_bytes", "Response bytes buffered for clients, not yet written to their sockets" => snap.gateway_response_buffered;
        gauge "gateway_response_budget_bytes", "Configured response budget; upstream reads pause past it" => snap.gateway_response_budget;
        Counters "gateway_response_resets", "Streams reset for the response bytes they held" => resets.map(|(r, n)| (vec![("reason", r.to_owned())], n)).collect();
    }
}

fn memory(reg: &mut Registry, snap: &Snapshot) {
    let m = &snap.memory;
    families! { reg;
        gauge "memory_rss_bytes", "Resident set size of the process" => m.rss_bytes;
        gauge "memory_budget_bytes", "Configured memory budget" => m.budget_bytes;
        gauge "heap_allocated_bytes", "Bytes allocated by the application (jemalloc)" => m.heap_allocated;
        gauge "heap_resident_bytes", "Bytes in physically resident heap pages (jemalloc)" => m.heap_resident;
        gauge "heap_retained_bytes", "Bytes retained by jemalloc, not returned to the OS" => m.heap_retained;
        gauge "heap_last_reclaim_bytes", "Bytes the last heap shrink gave back" => m.last_reclaim_bytes;
        gauge "overload_state", "Memory governor state: 0 normal, 1 shrink, 2 shed" => m.overload_state;
        counter "heap_shrinks", "Heap purges that returned memory to the OS" => m.heap_shrinks;
        gauge "uptime_seconds", "Seconds since the process started" => snap.uptime.as_secs_f64();
        Gauges "memory_bytes", "Memory by owner, adding up to RSS: the resident pages each owner's heap arena has in use, allocator_retained (jemalloc metadata), allocator_dirty (freed pages not yet returned), and other, the rest (unowned heap, code, stacks)" => m.by_owner.labelled().iter().map(|(o, b)| (vec![("owner", (*o).to_owned())], *b)).collect();
    }
}

fn clients(reg: &mut Registry, snap: &Snapshot, per_client: bool) {
    let drops = |r: &DropReason| snap.drops.iter().find(|(d, _)| d == r).map_or(0, |d| d.1);
    families! { reg;
        Counters "client_drops", "Refused packets, connections and requests, by reason" => by("reason", &DropReason::ALL, |r| r.as_str().to_owned(), drops);
        gauge "isolated_clients", "Clients isolated by the operator" => snap.isolated_clients;
    }
    if !per_client {
        return;
    }
    let top: Vec<&ClientRow> = snap
        .clients
        .iter()
        .filter(|r| r.client.is_some())
        .take(TOP_CLIENTS)
        .collect();
    let client = |r: &&ClientRow| {
        r.client
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    families! { reg;
        Gauges "client_rate", "Requests per second over the last second, top clients only" => by("client", &top, client, |r| r.rate_1s);
        Gauges "client_served_rate", "Answers per second over the last second, top clients only" => by("client", &top, client, |r| r.served_rate_1s);
        Gauges "client_pending", "Work in flight, top clients only" => by("client", &top, client, |r| r.pending);
    }
}

/// Every type and result, seen or not, so rate() has a series from the start.
fn dhcp_packets(snap: &Snapshot) -> Vec<(Labels, u64)> {
    DhcpKind::ALL
        .iter()
        .flat_map(|k| DhcpOutcome::ALL.iter().map(move |o| (*k, *o)))
        .map(|(k, o)| {
            let n = snap
                .dhcp_packets
                .iter()
                .find(|(sk, so, _)| (*sk, *so) == (k, o))
                .map_or(0, |p| p.2);
            (type_result(k, o), n)
        })
        .collect()
}

fn type_result(k: DhcpKind, o: DhcpOutcome) -> Labels {
    vec![
        ("type", k.as_str().to_owned()),
        ("result", o.as_str().to_owned()),
    ]
}

fn lease_labels(l: &LeaseCount) -> (Labels, u64) {
    let labels = vec![("subnet", l.subnet.clone()), ("state", l.state.to_owned())];
    (labels, l.count)
}

fn route_codes(snap: &Snapshot) -> Vec<(Labels, u64)> {
    let mut out = Vec::new();
    for r in &snap.routes {
        for (code, n) in &r.codes {
            out.push((
                vec![("route", r.name.clone()), ("code", code.to_string())],
                *n,
            ));
        }
    }
    out
}
