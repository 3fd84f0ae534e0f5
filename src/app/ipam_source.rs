//! The dashboard's [`DataSource`] over the real IPAM. Called on a blocking
//! thread about once a second; `Ipam::leases` scans the store without the
//! state lock, so a search never stalls the DHCP path.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::client::ClientKey;
use crate::config::Config;
use crate::ipam::{Binding6, Ipam, Lease, LeaseFilter, LeaseState};
use crate::tui::{ClusterRow, DataSource, Lease6Row, LeaseQuery, LeaseRow, Subnet6Row, SubnetRow};

/// Leases scanned for a free-text search (address or client substring).
pub const SEARCH_SCAN: usize = 20_000;

pub struct IpamSource {
    ipam: Arc<Ipam>,
    /// Subnet id → CIDR, for display.
    cidrs: HashMap<String, String>,
    /// Cluster mode: the header's cluster line.
    cluster: Option<ClusterFn>,
}

/// Reads the cluster line (blocking; the dashboard calls it off the draw path).
pub type ClusterFn = Box<dyn Fn() -> ClusterRow + Send + Sync>;

impl IpamSource {
    pub fn new(ipam: Arc<Ipam>, config: &Config) -> Self {
        let cidrs = config
            .subnets
            .iter()
            .map(|s| (s.id.clone(), s.cidr.to_string()))
            .collect();
        Self {
            ipam,
            cidrs,
            cluster: None,
        }
    }

    pub fn with_cluster(mut self, cluster: Option<ClusterFn>) -> Self {
        self.cluster = cluster;
        self
    }

    /// A v4 or v6 subnet's id.
    fn is_subnet(&self, id: &str) -> bool {
        self.cidrs.contains_key(id) || self.ipam.subnets6().iter().any(|s| s.id == id)
    }
}

fn row(l: Lease) -> LeaseRow {
    LeaseRow {
        ip: l.ip,
        subnet: l.subnet,
        client: l.client,
        state: l.state.as_str().to_owned(),
        expires_at: l.expires_at,
    }
}

fn row6(b: Binding6) -> Lease6Row {
    Lease6Row {
        ip: b.ip,
        subnet: b.subnet,
        client: b.client,
        kind: b.kind.as_str().to_owned(),
        state: b.state.as_str().to_owned(),
        expires_at: b.expires_at,
    }
}

/// Turns an exact search into an indexed filter: a client key, a state, or
/// a subnet id; anything else is a bounded scan filtered by substring.
fn filter_for(q: &LeaseQuery, is_subnet: impl Fn(&str) -> bool) -> LeaseFilter {
    let s = q.search.trim();
    let mut f = LeaseFilter::default();
    if let Ok(client) = s.parse::<ClientKey>() {
        f.client = Some(client);
    } else if let Some(state) = LeaseState::ALL.iter().find(|x| x.as_str() == s) {
        f.state = Some(*state);
    } else if is_subnet(s) {
        f.subnet = Some(s.to_owned());
    }
    let exact = s.is_empty() || f != LeaseFilter::default();
    f.limit = Some(if exact { q.limit } else { SEARCH_SCAN });
    f
}

impl DataSource for IpamSource {
    fn subnets(&self) -> Vec<SubnetRow> {
        self.ipam
            .utilisation()
            .into_iter()
            .map(|u| SubnetRow {
                cidr: self.cidrs.get(&u.subnet).cloned().unwrap_or_default(),
                id: u.subnet,
                size: u.size,
                used: u.used,
                by_state: u
                    .by_state
                    .into_iter()
                    .map(|(s, n)| (s.as_str().to_owned(), n))
                    .collect(),
            })
            .collect()
    }

    fn leases(&self, q: &LeaseQuery) -> Vec<LeaseRow> {
        self.ipam
            .leases(&filter_for(q, |s| self.is_subnet(s)))
            .into_iter()
            .map(row)
            .filter(|l| q.matches(l))
            .take(q.limit)
            .collect()
    }

    fn lease_of(&self, client: &ClientKey) -> Option<Ipv4Addr> {
        self.ipam.lease_of(client).map(|l| l.ip)
    }

    fn cluster(&self) -> Option<ClusterRow> {
        self.cluster.as_ref().map(|f| f())
    }

    fn subnets6(&self) -> Vec<Subnet6Row> {
        let prefixes: HashMap<String, String> = self
            .ipam
            .subnets6()
            .iter()
            .map(|s| (s.id.clone(), s.prefix.to_string()))
            .collect();
        self.ipam
            .usage6()
            .into_iter()
            .map(|u| Subnet6Row {
                prefix: prefixes.get(&u.subnet).cloned().unwrap_or_default(),
                id: u.subnet,
                bound: u.bound,
                offered: u.offered,
                declined: u.declined,
                addresses: u.addresses,
                prefixes: u.prefixes,
                delegated: u.delegated,
            })
            .collect()
    }

    fn leases6(&self, q: &LeaseQuery) -> Vec<Lease6Row> {
        let f = filter_for(q, |s| self.is_subnet(s));
        let limit = f.limit.unwrap_or(q.limit);
        self.ipam
            .bindings6(&f, None, limit, SEARCH_SCAN)
            .bindings
            .into_iter()
            .map(row6)
            .filter(|l| q.matches6(l))
            .take(q.limit)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ipam::{IpamOptions, PoolRange};
    use crate::stats::Stats;
    use std::time::SystemTime;

    #[tokio::test]
    async fn reads_utilisation_leases_and_lease_of_from_the_ipam() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), IpamOptions::default(), Stats::new(16)).unwrap();
        let mut config = Config::embedded().unwrap();
        config.subnets.truncate(1);
        let mut spec = config.subnets[0].clone();
        spec.pools = vec![PoolRange {
            start: "10.0.0.10".parse().unwrap(),
            end: "10.0.0.13".parse().unwrap(),
        }];
        let now = SystemTime::now();
        ipam.apply_config(&[spec], &[], now).unwrap();
        let (a, b): (ClientKey, ClientKey) = (
            "mac:02:00:00:00:00:01".parse().unwrap(),
            "mac:02:00:00:00:00:02".parse().unwrap(),
        );
        let offer = ipam.offer("lab", &a, None, now).unwrap();
        ipam.bind("lab", &a, offer.ip, None, now).await.unwrap();
        ipam.offer("lab", &b, None, now).unwrap();

        let src = IpamSource::new(ipam, &config);
        let subnets = src.subnets();
        assert_eq!(subnets.len(), 1);
        assert_eq!((subnets[0].size, subnets[0].used), (4, 2));
        assert_eq!(subnets[0].cidr, "10.0.0.0/24");
        assert!(subnets[0].by_state.contains(&("bound".to_owned(), 1)));
        let all = src.leases(&LeaseQuery {
            search: String::new(),
            limit: 10,
        });
        assert_eq!(all.len(), 2);
        let bound = src.leases(&LeaseQuery {
            search: "bound".into(),
            limit: 10,
        });
        assert_eq!(bound.len(), 1);
        assert_eq!(bound[0].client, a);
        let by_ip = src.leases(&LeaseQuery {
            search: ".0.11".into(),
            limit: 10,
        });
        assert_eq!(by_ip.len(), 1);
        assert_eq!(src.lease_of(&a), Some(offer.ip));
        assert_eq!(
            src.lease_of(&"mac:02:00:00:00:00:09".parse().unwrap()),
            None
        );
    }

    /// A v6 subnet (a /64 address pool, a /48 by /56 PD pool) with one
    /// client's IA_NA and IA_PD bound: rows as the views show them.
    #[tokio::test]
    async fn reads_v6_subnets_and_bindings_from_the_ipam() {
        use crate::ipam::{Ia6Key, Ia6Kind, Ia6Op, PdPoolSpec, Range6, Subnet6Spec};
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), IpamOptions::default(), Stats::new(16)).unwrap();
        let spec = Subnet6Spec {
            pools: vec![Range6 {
                start: "fd00:77::".parse().unwrap(),
                end: "fd00:77::ffff:ffff:ffff:ffff".parse().unwrap(),
            }],
            pd_pools: vec![PdPoolSpec {
                prefix: "fd00:78::/48".parse().unwrap(),
                delegated_len: 56,
            }],
            ..Subnet6Spec::new("lab6", "fd00:77::/64".parse().unwrap())
        };
        ipam.apply_config6(&[spec]).unwrap();
        let client: ClientKey = "duid:0003000102000001".parse().unwrap();
        for kind in [Ia6Kind::Na, Ia6Kind::Pd] {
            let ia = Ia6Key {
                client: client.clone(),
                kind,
                iaid: 1,
            };
            let now = SystemTime::now();
            ipam.ia6("lab6", &ia, Ia6Op::Commit, &[], None, now)
                .await
                .unwrap();
        }
        let mut config = Config::embedded().unwrap();
        config.subnets.clear();
        let src = IpamSource::new(ipam, &config);
        let subnets = src.subnets6();
        assert_eq!(subnets.len(), 1);
        let s = &subnets[0];
        assert_eq!((s.id.as_str(), s.prefix.as_str()), ("lab6", "fd00:77::/64"));
        assert_eq!((s.bound, s.offered, s.declined), (2, 0, 0));
        assert_eq!((s.addresses, s.prefixes, s.delegated), (u64::MAX, 256, 1));
        let q = |search: &str| LeaseQuery {
            search: search.into(),
            limit: 10,
        };
        let all = src.leases6(&q(""));
        let kinds: Vec<&str> = all.iter().map(|l| l.kind.as_str()).collect();
        assert_eq!(kinds, ["na", "pd"]);
        assert!(all.iter().all(|l| l.client == client && l.state == "bound"));
        assert!(all[1].ip.starts_with("fd00:78:") && all[1].ip.ends_with("/56"));
        assert_eq!(src.leases6(&q("lab6")).len(), 2);
        assert_eq!(src.leases6(&q("/56")).len(), 1);
        assert_eq!(src.leases6(&q("duid:0003000102000002")).len(), 0);
        assert_eq!(src.leases6(&q("lab")).len(), 2, "substring of lab6");
    }

    #[test]
    fn exact_searches_use_the_index() {
        let subnets: HashMap<String, String> =
            [("lab".to_owned(), "10.0.0.0/24".to_owned())].into();
        let q = |s: &str| LeaseQuery {
            search: s.into(),
            limit: 50,
        };
        let f = filter_for(&q("mac:02:00:00:00:00:01"), |s| subnets.contains_key(s));
        assert!(f.client.is_some() && f.limit == Some(50));
        assert_eq!(
            filter_for(&q("bound"), |s| subnets.contains_key(s)).state,
            Some(LeaseState::Bound)
        );
        assert_eq!(
            filter_for(&q("lab"), |s| subnets.contains_key(s))
                .subnet
                .as_deref(),
            Some("lab")
        );
        assert_eq!(
            filter_for(&q(""), |s| subnets.contains_key(s)).limit,
            Some(50)
        );
        assert_eq!(
            filter_for(&q("10.0.0.1"), |s| subnets.contains_key(s)).limit,
            Some(SEARCH_SCAN)
        );
    }
}
