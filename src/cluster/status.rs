//! `vpcbox cluster status`: what the cluster looks like in etcd, read
//! directly (no node needs to run): members and their lease TTL left, each
//! node's blocks per subnet, the addresses leased and free in them (a node
//! out of addresses while another holds free ones shows here), lease counts,
//! isolations, and each etcd endpoint's own status. Read-only.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use etcd_client::{Client, ConnectOptions, KeyValue};
use serde::Serialize;

use super::etcd::{Etcd, CALL_TIMEOUT};
use super::keys::{Keys, Parsed};
use super::replica::{BlockValue, NodeRates, NodeValue};
use crate::config::ClusterConfig;
use crate::ipam::{IpamError, SubnetSpec, TreeId};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterStatus {
    pub prefix: String,
    /// The etcd revision everything was read at.
    pub revision: i64,
    pub nodes: Vec<NodeStatus>,
    /// Blocks whose owner is not a registered node (they go with its lease).
    pub orphan_blocks: usize,
    pub subnets: Vec<String>,
    /// Stored leases by state (`bound`, `declined`, …).
    pub leases: BTreeMap<String, u64>,
    pub reservations: u64,
    pub isolations: Vec<String>,
    /// DHCPv6 subnets, and stored v6 bindings by kind and state (`na bound`, `pd declined`, …).
    pub subnets6: Vec<String>,
    pub leases6: BTreeMap<String, u64>,
    pub endpoints: Vec<EndpointStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeStatus {
    pub name: String,
    /// Its registration (the create revision of `nodes/<name>`).
    pub epoch: i64,
    pub lease: i64,
    /// Seconds left on its etcd lease (`None`: could not be read).
    pub ttl_left: Option<i64>,
    pub granted_ttl: Option<i64>,
    /// Subnet → its blocks there.
    pub blocks: BTreeMap<String, BlockCount>,
    /// What the node last published (`None`: nothing yet).
    pub rates: Option<NodeRates>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BlockCount {
    pub blocks: u64,
    /// Addresses with a stored lease (any state) inside those blocks.
    pub leased: u64,
    pub bound: u64,
    /// Pool addresses in those blocks with no bound or declined lease: what
    /// the node can still give (offers live in memory, not counted).
    pub free: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub healthy: bool,
    pub version: Option<String>,
    pub leader: bool,
    pub db_size: Option<i64>,
    pub error: Option<String>,
}

impl NodeStatus {
    /// Alive as etcd sees it: registered, with time left on its lease.
    pub fn healthy(&self) -> bool {
        self.ttl_left.is_some_and(|t| t > 0)
    }
}

/// Reads the status of the cluster `config` names. An etcd that does not
/// answer is a `Storage` error (the CLI's exit 69).
pub fn read(config: &ClusterConfig) -> Result<ClusterStatus, IpamError> {
    let etcd = Etcd::connect(&config.etcd, &config.prefix)?;
    let (kvs, revision) = etcd.load_all()?;
    let mut status = fold(&etcd.keys, config.block_size, &kvs);
    status.prefix = config.prefix.clone();
    status.revision = revision;
    for n in &mut status.nodes {
        let mut c = etcd.client();
        let lease = n.lease;
        if let Ok(r) = etcd.block(async move { c.lease_time_to_live(lease, None).await }) {
            n.ttl_left = Some(r.ttl());
            n.granted_ttl = Some(r.granted_ttl());
        }
    }
    status.endpoints = config.etcd.iter().map(|e| endpoint(&etcd, e)).collect();
    Ok(status)
}

/// One endpoint's own view, through a client that talks to it alone.
fn endpoint(etcd: &Etcd, url: &str) -> EndpointStatus {
    let endpoints = vec![url.to_owned()];
    let got = etcd.block(async move {
        let opts = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT);
        let mut c = Client::connect(endpoints, Some(opts)).await?;
        c.status().await
    });
    match got {
        Ok(s) => EndpointStatus {
            endpoint: url.to_owned(),
            healthy: s.errors().is_empty() && s.leader() != 0,
            version: Some(s.version().to_owned()),
            leader: s.header().is_some_and(|h| h.member_id() == s.leader()),
            db_size: Some(s.db_size()),
            error: (!s.errors().is_empty()).then(|| s.errors().join("; ")),
        },
        Err(e) => EndpointStatus {
            endpoint: url.to_owned(),
            error: Some(e.to_string()),
            ..Default::default()
        },
    }
}

/// The status as far as the keys tell it (no lease TTLs, no endpoints). Pure.
pub fn fold(keys: &Keys, block_size: u32, kvs: &[KeyValue]) -> ClusterStatus {
    let mut s = ClusterStatus::default();
    let mut nodes: BTreeMap<String, NodeStatus> = BTreeMap::new();
    let mut blocks: BTreeMap<(String, u32), String> = BTreeMap::new();
    let mut leases: Vec<(u32, String)> = Vec::new();
    let mut specs: HashMap<String, SubnetSpec> = HashMap::new();
    for kv in kvs {
        match keys.parse(kv.key()) {
            Some(Parsed::Node(name)) => {
                let n = NodeStatus {
                    name: name.clone(),
                    epoch: kv.create_revision(),
                    lease: kv.lease(),
                    rates: serde_json::from_slice::<NodeValue>(kv.value())
                        .ok()
                        .and_then(|v| v.rates),
                    ..Default::default()
                };
                nodes.insert(name, n);
            }
            Some(Parsed::Block(subnet, first)) => {
                if let Ok(b) = serde_json::from_slice::<BlockValue>(kv.value()) {
                    blocks.insert((subnet, first), b.node);
                }
            }
            Some(Parsed::Tree(TreeId::Subnets, id)) => {
                if let Ok(spec) = serde_json::from_slice::<SubnetSpec>(kv.value()) {
                    specs.insert(spec.id.clone(), spec);
                }
                s.subnets.push(text(&id));
            }
            Some(Parsed::Tree(TreeId::Reservations, _)) => s.reservations += 1,
            Some(Parsed::Tree(TreeId::Isolations, c)) => s.isolations.push(text(&c)),
            Some(Parsed::Tree(TreeId::Subnets6, id)) => s.subnets6.push(text(&id)),
            Some(Parsed::Tree(TreeId::Leases6, _)) => {
                let kind = json_field(kv.value(), "kind");
                let state = json_field(kv.value(), "state");
                *s.leases6.entry(format!("{kind} {state}")).or_default() += 1;
            }
            Some(Parsed::Tree(TreeId::Leases, ip)) => {
                let Ok(ip) = <[u8; 4]>::try_from(ip.as_slice()) else {
                    continue;
                };
                let state = lease_state(kv.value());
                *s.leases.entry(state.clone()).or_default() += 1;
                leases.push((u32::from_be_bytes(ip), state));
            }
            _ => {}
        }
    }
    let mask = !(block_size.max(1) - 1);
    for ((subnet, first), owner) in &blocks {
        let pool = specs.get(subnet).map_or(0, |spec| {
            (*first..=first.saturating_add(block_size.max(1) - 1))
                .filter(|ip| spec.is_dynamic(Ipv4Addr::from(*ip)))
                .count() as u64
        });
        match count_of(&mut nodes, subnet, owner) {
            Some(c) => {
                c.blocks += 1;
                c.free += pool;
            }
            None => s.orphan_blocks += 1,
        }
    }
    // Subnets never overlap: a block's first address names it alone.
    let by_first: HashMap<u32, (&String, &String)> =
        blocks.iter().map(|((s, f), o)| (*f, (s, o))).collect();
    for (ip, state) in &leases {
        if let Some((subnet, owner)) = by_first.get(&(ip & mask)) {
            if let Some(c) = count_of(&mut nodes, subnet, owner) {
                c.leased += 1;
                c.bound += u64::from(state == "bound");
                if state == "bound" || state == "declined" {
                    c.free = c.free.saturating_sub(1);
                }
            }
        }
    }
    s.nodes = nodes.into_values().collect();
    s
}

/// The counts of `owner`'s blocks in `subnet` (`None`: not a live node).
fn count_of<'a>(
    nodes: &'a mut BTreeMap<String, NodeStatus>,
    subnet: &str,
    owner: &str,
) -> Option<&'a mut BlockCount> {
    let n = nodes.get_mut(owner)?;
    Some(n.blocks.entry(subnet.to_owned()).or_default())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `state` of a lease's JSON value (`unreadable` if it has none).
fn lease_state(json: &[u8]) -> String {
    json_field(json, "state")
}

/// A text field of a JSON value (`unreadable` if it has none).
fn json_field(json: &[u8], field: &str) -> String {
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get(field)?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unreadable".into())
}

/// The status as an operator reads it.
pub fn render(s: &ClusterStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "cluster {} at etcd revision {}", s.prefix, s.revision);
    let _ = writeln!(out, "nodes ({}):", s.nodes.len());
    for n in &s.nodes {
        let ttl = match (n.ttl_left, n.granted_ttl) {
            (Some(t), Some(g)) => format!("lease ttl {t}s/{g}s"),
            _ => "lease ttl unknown".into(),
        };
        let health = if n.healthy() { "healthy" } else { "expiring" };
        let rates = n.rates.map_or(String::new(), |r| {
            format!(
                "  {} acks/s  {} api req/s",
                r.dhcp_acks_per_s, r.api_requests_per_s
            )
        });
        let _ = writeln!(
            out,
            "  {:<16} {health:<9} {ttl}  epoch {}{rates}",
            n.name, n.epoch
        );
        for (subnet, c) in &n.blocks {
            let _ = writeln!(
                out,
                "    {subnet}: {} blocks, {} leased ({} bound), {} free",
                c.blocks, c.leased, c.bound, c.free
            );
        }
    }
    if s.orphan_blocks > 0 {
        let _ = writeln!(out, "blocks without a live owner: {}", s.orphan_blocks);
    }
    let leases: Vec<String> = s.leases.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(out, "subnets: {}", s.subnets.join(", "));
    let _ = writeln!(
        out,
        "leases: {}",
        if leases.is_empty() {
            "none".into()
        } else {
            leases.join(", ")
        }
    );
    if !s.subnets6.is_empty() || !s.leases6.is_empty() {
        let leases6: Vec<String> = s.leases6.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "subnets6: {}", s.subnets6.join(", "));
        let _ = writeln!(out, "leases6: {}", leases6.join(", "));
    }
    let _ = writeln!(out, "reservations: {}", s.reservations);
    let _ = writeln!(out, "isolations: {}", s.isolations.len());
    let _ = writeln!(out, "etcd endpoints:");
    for e in &s.endpoints {
        let what = match (&e.version, &e.error) {
            (_, Some(err)) => format!("unreachable: {err}"),
            (Some(v), None) => format!(
                "{} v{v}{}, db {} bytes",
                if e.healthy { "healthy" } else { "no leader" },
                if e.leader { ", leader" } else { "" },
                e.db_size.unwrap_or(0)
            ),
            (None, None) => "unknown".into(),
        };
        let _ = writeln!(out, "  {} {what}", e.endpoint);
    }
    out
}
