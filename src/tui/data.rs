//! What the Subnets and Leases views show, as plain rows, and the trait the
//! composition root implements over the IPAM to provide them. The views
//! only ever see these rows, so they stay pure; the event loop calls the
//! source on a blocking thread, never on the draw path.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::SystemTime;

use crate::client::ClientKey;

/// Pool utilisation of one subnet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetRow {
    pub id: String,
    pub cidr: String,
    /// Addresses in the subnet's pools.
    pub size: u64,
    /// Offered + bound + declined + reserved.
    pub used: u64,
    /// `(state, count)`, e.g. `("bound", 12)`.
    pub by_state: Vec<(String, u64)>,
}

/// One DHCPv6 subnet: its slots by state and its pools' sizes (saturating).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subnet6Row {
    pub id: String,
    pub prefix: String,
    pub bound: u64,
    pub offered: u64,
    pub declined: u64,
    /// Addresses in the address pools.
    pub addresses: u64,
    /// Prefixes in the delegated-prefix pools, and those in use.
    pub prefixes: u64,
    pub delegated: u64,
}

/// One registered node: its blocks (all subnets) and the rates it last
/// published (`None` until it has).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterNodeRow {
    pub name: String,
    pub blocks: u64,
    /// (DHCP ACKs/s, API requests/s).
    pub rates: Option<(f64, f64)>,
}

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub ip: Ipv4Addr,
    pub subnet: String,
    pub client: ClientKey,
    pub state: String,
    pub expires_at: SystemTime,
}

/// One DHCPv6 binding or live offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease6Row {
    /// The address (IA_NA) or the delegated prefix (IA_PD).
    pub ip: String,
    pub subnet: String,
    pub client: ClientKey,
    /// "na" or "pd".
    pub kind: String,
    pub state: String,
    pub expires_at: SystemTime,
}

/// Cluster mode: this node and the cluster as the header shows them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterRow {
    pub node: String,
    /// Why this node may not write, if it may not.
    pub fenced: Option<String>,
    /// Registered (live) nodes.
    pub nodes: Vec<ClusterNodeRow>,
    /// The cluster could not be read (the rest is from the last read).
    pub error: Option<String>,
}

/// What the Leases view asks for: a case-insensitive substring of the
/// address, client, subnet or state (empty = everything), at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseQuery {
    pub search: String,
    pub limit: usize,
}

impl LeaseQuery {
    pub fn matches(&self, l: &LeaseRow) -> bool {
        if self.search.is_empty() {
            return true;
        }
        self.any_contains(&[
            l.ip.to_string(),
            l.client.to_string(),
            l.subnet.to_ascii_lowercase(),
            l.state.to_ascii_lowercase(),
        ])
    }

    /// As [`LeaseQuery::matches`], for a v6 binding (its kind too).
    pub fn matches6(&self, l: &Lease6Row) -> bool {
        self.search.is_empty()
            || self.any_contains(&[
                l.ip.to_ascii_lowercase(),
                l.client.to_string(),
                l.subnet.to_ascii_lowercase(),
                l.state.to_ascii_lowercase(),
                l.kind.clone(),
            ])
    }

    fn any_contains(&self, haystacks: &[String]) -> bool {
        let needle = self.search.to_ascii_lowercase();
        haystacks.iter().any(|h| h.contains(&needle))
    }
}

/// Subnets and leases for the dashboard. Implementations may block (store
/// reads, a std mutex): the dashboard calls them on a blocking thread, at
/// most once a second.
pub trait DataSource: Send + Sync + 'static {
    fn subnets(&self) -> Vec<SubnetRow>;
    fn leases(&self, query: &LeaseQuery) -> Vec<LeaseRow>;
    /// The address `client` currently holds or is offered, if any.
    fn lease_of(&self, client: &ClientKey) -> Option<Ipv4Addr>;
    /// The cluster, in cluster mode.
    fn cluster(&self) -> Option<ClusterRow> {
        None
    }
    /// DHCPv6 subnets (none without them).
    fn subnets6(&self) -> Vec<Subnet6Row> {
        Vec::new()
    }
    /// DHCPv6 bindings and live offers in address order.
    fn leases6(&self, _query: &LeaseQuery) -> Vec<Lease6Row> {
        Vec::new()
    }
}

/// No IPAM: empty views.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoData;

impl DataSource for NoData {
    fn subnets(&self) -> Vec<SubnetRow> {
        Vec::new()
    }
    fn leases(&self, _: &LeaseQuery) -> Vec<LeaseRow> {
        Vec::new()
    }
    fn lease_of(&self, _: &ClientKey) -> Option<Ipv4Addr> {
        None
    }
}

/// What one fetch should bring back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataRequest {
    pub subnets: bool,
    pub leases: Option<LeaseQuery>,
    /// Clients whose lease the Clients view shows.
    pub clients: Vec<ClientKey>,
    /// The cluster header line (every view).
    pub cluster: bool,
}

impl DataRequest {
    pub fn is_empty(&self) -> bool {
        !self.subnets && self.leases.is_none() && self.clients.is_empty() && !self.cluster
    }
}

/// The latest fetched data, as the views read it.
#[derive(Debug, Clone, Default)]
pub struct DataCache {
    pub subnets: Vec<SubnetRow>,
    pub subnets6: Vec<Subnet6Row>,
    pub leases: Vec<LeaseRow>,
    pub leases6: Vec<Lease6Row>,
    pub lease_of: HashMap<ClientKey, Ipv4Addr>,
}

/// What one fetch brought back; `None` parts were not asked for.
#[derive(Debug, Clone, Default)]
pub struct DataUpdate {
    pub subnets: Option<(Vec<SubnetRow>, Vec<Subnet6Row>)>,
    pub leases: Option<(Vec<LeaseRow>, Vec<Lease6Row>)>,
    pub lease_of: Option<HashMap<ClientKey, Ipv4Addr>>,
    pub cluster: Option<Option<ClusterRow>>,
}

impl DataCache {
    pub fn apply(&mut self, u: DataUpdate) {
        if let Some((v4, v6)) = u.subnets {
            (self.subnets, self.subnets6) = (v4, v6);
        }
        if let Some((v4, v6)) = u.leases {
            (self.leases, self.leases6) = (v4, v6);
        }
        if let Some(m) = u.lease_of {
            self.lease_of = m;
        }
    }
}

/// Runs one request against the source. Blocking.
pub fn fetch(source: &dyn DataSource, req: &DataRequest) -> DataUpdate {
    DataUpdate {
        subnets: req.subnets.then(|| (source.subnets(), source.subnets6())),
        leases: req.leases.as_ref().map(|q| leases(source, q)),
        lease_of: (!req.clients.is_empty()).then(|| {
            req.clients
                .iter()
                .filter_map(|c| source.lease_of(c).map(|ip| (c.clone(), ip)))
                .collect()
        }),
        cluster: req.cluster.then(|| source.cluster()),
    }
}

/// v4 leases, then v6 bindings up to the query's limit in all.
fn leases(source: &dyn DataSource, q: &LeaseQuery) -> (Vec<LeaseRow>, Vec<Lease6Row>) {
    let v4 = source.leases(q);
    let rest = LeaseQuery {
        limit: q.limit.saturating_sub(v4.len()),
        ..q.clone()
    };
    let v6 = if rest.limit == 0 {
        Vec::new()
    } else {
        source.leases6(&rest)
    };
    (v4, v6)
}
