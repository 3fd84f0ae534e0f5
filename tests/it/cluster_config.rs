//! The config of a lab node (cluster_lab.rs): the shipped config.toml with
//! the node's addresses, ports and data dir, the lab's two subnets and,
//! for a cluster node, the `[cluster]` section of DESIGN.md "Cluster".

use std::net::Ipv4Addr;
use std::path::Path;

use crate::netns::tag;

/// Every node's API port (on its own address).
pub const API_PORT: u16 = 8080;

/// Node `i`'s address on the bridge, its server id.
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, 0, 11 + i as u8)
}

/// The relay addresses (giaddrs) of the driver, one per DHCP worker.
pub fn relay_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 21, 0, 1 + i as u8)
}

/// What differs between node configs.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The pool of subnet "direct" (10.20.0.0/24, the bridge's clients).
    pub direct_pool: (Ipv4Addr, Ipv4Addr),
    /// The pool of subnet "relayed" (10.21.0.0/16, behind the driver).
    pub relayed_pool: (Ipv4Addr, Ipv4Addr),
    /// The driver's relay addresses the node trusts.
    pub relays: usize,
    pub lease_time: String,
    pub cluster: Option<ClusterKeys>,
}

impl NodeOptions {
    /// Both pools whole, `relays` relays, 1 h leases, no cluster.
    pub fn standalone(relays: usize) -> Self {
        Self {
            direct_pool: (Ipv4Addr::new(10, 20, 0, 100), Ipv4Addr::new(10, 20, 0, 199)),
            relayed_pool: (Ipv4Addr::new(10, 21, 1, 0), Ipv4Addr::new(10, 21, 3, 255)),
            relays,
            lease_time: "1h".into(),
            cluster: None,
        }
    }
}

/// The `[cluster]` keys of DESIGN.md "Cluster".
#[derive(Clone, Debug)]
pub struct ClusterKeys {
    pub node: String,
    pub etcd: Vec<String>,
    pub prefix: String,
    pub lease_ttl: String,
    pub block_size: u32,
}

impl ClusterKeys {
    /// Node `name` on `etcd`, under a prefix unique to this test.
    pub fn new(name: &str, etcd: Vec<String>) -> Self {
        Self {
            node: name.into(),
            etcd,
            prefix: format!("/vpcbox-test/{}", tag()),
            lease_ttl: "3s".into(),
            block_size: 16,
        }
    }
}

/// A node's config: the shipped config.toml with the node's interface,
/// address (server id, API), data dir under `dir`, the lab's two subnets
/// and, if given, a `[cluster]` section.
pub fn node_config(ifname: &str, ip: Ipv4Addr, dir: &Path, o: &NodeOptions) -> String {
    use toml::{Table, Value};
    let shipped = std::fs::read_to_string(crate::support::repo().join("config.toml"))
        .expect("shipped config.toml");
    let mut t: Table = shipped.parse().expect("shipped config parses");
    let s = |v: &str| Value::String(v.to_owned());
    let strs = |v: &[String]| Value::Array(v.iter().map(|x| s(x)).collect());
    let sub = |t: &Table, key: &str| -> Table {
        t.get(key)
            .and_then(Value::as_table)
            .cloned()
            .unwrap_or_default()
    };
    let mut storage = sub(&t, "storage");
    storage.insert("path".into(), s(&dir.join("data").display().to_string()));
    let mut dhcp = sub(&t, "dhcp");
    dhcp.insert("listen".into(), s("0.0.0.0:67"));
    dhcp.insert("interfaces".into(), strs(&[ifname.to_owned()]));
    dhcp.insert("server_id".into(), s(&ip.to_string()));
    let mut gateway = sub(&t, "gateway");
    gateway.insert("listen".into(), s(&format!("{ip}:{API_PORT}")));
    gateway.insert(
        "admin_token_file".into(),
        s(&dir.join("data/admin.token").display().to_string()),
    );
    let shipped_subnet = t
        .get("subnet")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_table)
        .cloned()
        .unwrap_or_default();
    let subnet =
        |id: &str, cidr: &str, pool: (Ipv4Addr, Ipv4Addr), gw: &str, relays: Vec<String>| {
            let mut x = shipped_subnet.clone();
            x.insert("id".into(), s(id));
            x.insert("cidr".into(), s(cidr));
            x.insert("pools".into(), strs(&[format!("{}-{}", pool.0, pool.1)]));
            x.insert("gateway".into(), s(gw));
            x.insert("dns".into(), strs(&[]));
            x.insert("lease_time".into(), s(&o.lease_time));
            x.insert("relays".into(), strs(&relays));
            Value::Table(x)
        };
    let relays: Vec<String> = (0..o.relays).map(|r| relay_ip(r).to_string()).collect();
    t.insert("storage".into(), Value::Table(storage));
    t.insert("dhcp".into(), Value::Table(dhcp));
    t.insert("gateway".into(), Value::Table(gateway));
    t.insert(
        "subnet".into(),
        Value::Array(vec![
            subnet("direct", "10.20.0.0/24", o.direct_pool, "10.20.0.1", vec![]),
            subnet(
                "relayed",
                "10.21.0.0/16",
                o.relayed_pool,
                "10.21.0.1",
                relays,
            ),
        ]),
    );
    // The shipped reservation is in the shipped subnet, gone here.
    t.remove("reservation");
    if let Some(c) = &o.cluster {
        let mut cl = Table::new();
        cl.insert("node".into(), s(&c.node));
        cl.insert("etcd".into(), strs(&c.etcd));
        cl.insert("prefix".into(), s(&c.prefix));
        cl.insert("lease_ttl".into(), s(&c.lease_ttl));
        cl.insert("block_size".into(), Value::Integer(i64::from(c.block_size)));
        t.insert("cluster".into(), Value::Table(cl));
    }
    toml::to_string(&t).expect("config toml")
}
