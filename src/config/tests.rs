use super::*;

#[test]
fn shipped_config_parses_and_matches_the_embedded_copy() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let c = Config::load(&path).unwrap();
    assert_eq!(c, Config::embedded().unwrap());
    assert_eq!(c.subnets.len(), 1);
    assert_eq!(c.gateway.initial_stream_window, 64 * 1024);
    assert_eq!(c.gateway.initial_connection_window, 1 << 20);
    assert_eq!(c.memory.budget, 128 << 20);
    assert!(
        c.dhcp.listen.port() > 1024,
        "shipped config must run unprivileged"
    );
    assert!(c.gateway.listen.port() > 1024);
}

#[test]
fn defaults_round_trip_through_toml() {
    let c = Config::embedded().unwrap();
    let again = Config::parse(&c.to_toml(), "printed").unwrap();
    assert_eq!(c, again);
    // An empty file is all defaults and valid (no subnets, nothing served).
    let empty = Config::parse("", "empty").unwrap();
    assert_eq!(empty.raw, RawConfig::default());
    assert_eq!(Config::parse(&empty.to_toml(), "printed").unwrap(), empty);
}

fn err(text: &str) -> String {
    Config::parse(text, "t.toml").unwrap_err().to_string()
}

const SUBNET: &str = r#"
[dhcp]
server_id = "10.0.0.1"
[[subnet]]
id = "a"
cidr = "10.0.0.0/24"
pools = ["10.0.0.100-10.0.0.199"]
"#;

#[test]
fn errors_name_the_key_and_quote_the_value() {
    assert_eq!(
        err("[dhcp]\nper_client_rate = \"0/s\""),
        "dhcp.per_client_rate: '0/s' must be at least 1/s"
    );
    assert_eq!(err("[dhcp]\nbogus = 1"), "dhcp.bogus: unknown key 'bogus'");
    assert_eq!(
        err("[memory]\nshrink_at = 0.95"),
        "memory.shed_at: '0.9' must be above memory.shrink_at and at most 1"
    );
    assert!(err(&format!("{SUBNET}\n[[reservation]]\nsubnet = \"a\"\nclient = \"mac:02:00:00:00:00:01\"\nip = \"10.0.1.5\""))
        .starts_with("reservation[0].ip: '10.0.1.5' is not a host address"));
    assert!(err(&SUBNET.replace("10.0.0.199", "10.0.1.5"))
        .starts_with("subnet[0].pools[0]: '10.0.0.100-10.0.1.5' must lie inside"));
    assert_eq!(
        err("[[subnet]]\nid = \"a\"\npools = []"),
        "subnet[0].cidr: is required"
    );
}

#[test]
fn overlapping_subnets_and_pools_are_refused() {
    let two = format!(
        "{SUBNET}\n[[subnet]]\nid = \"b\"\ncidr = \"10.0.0.0/16\"\npools = [\"10.0.5.1-10.0.5.9\"]"
    );
    assert!(err(&two).starts_with("subnet[1].cidr: '10.0.0.0/16' overlaps subnet 'a'"));
    let pools = SUBNET.replace(
        "[\"10.0.0.100-10.0.0.199\"]",
        "[\"10.0.0.100-10.0.0.150\", \"10.0.0.150-10.0.0.160\"]",
    );
    assert_eq!(
        err(&pools),
        "subnet[0].pools[1]: '10.0.0.150-10.0.0.160' overlaps another pool"
    );
}

const CLUSTER: &str = r#"
[dhcp]
server_id = "10.0.0.1"
[[subnet]]
id = "a"
cidr = "10.0.0.0/24"
pools = ["10.0.0.100-10.0.0.131"]
[cluster]
node = "a"
etcd = ["http://127.0.0.1:2379"]
"#;

#[test]
fn a_cluster_section_is_validated_key_by_key() {
    let with = |extra: &str| err(&format!("{CLUSTER}{extra}"));
    let node = CLUSTER.replace("node = \"a\"", "node = \"Node_1\"");
    assert_eq!(
        err(&node),
        "cluster.node: 'Node_1' must match [a-z0-9-]{1,32}"
    );
    let etcd = CLUSTER.replace("http://127.0.0.1:2379", "https://e:2379");
    assert!(err(&etcd).starts_with("cluster.etcd[0]: 'https://e:2379' is not an http URL"));
    assert_eq!(
        with("lease_ttl = \"1s\""),
        "cluster.lease_ttl: '1s' must be whole seconds from 2s to 60s"
    );
    assert_eq!(
        with("block_size = 24"),
        "cluster.block_size: '24' must be a power of two from 4 to 1024"
    );
    assert_eq!(
        with("block_size = 64"),
        "cluster.block_size: '64' must not exceed the smallest pool (32 addresses in subnet 'a')"
    );
    assert_eq!(
        with("prefix = \"vpcbox\""),
        "cluster.prefix: 'vpcbox' must be a key path such as \"/vpcbox/v1\""
    );
}

#[cfg(feature = "cluster")]
#[test]
fn a_valid_cluster_section_resolves_with_its_defaults() {
    let c = Config::parse(CLUSTER, "t.toml").unwrap();
    let cluster = c.cluster.clone().unwrap();
    assert_eq!(cluster.prefix, "/vpcbox/v1");
    assert_eq!(cluster.lease_ttl, std::time::Duration::from_secs(10));
    assert_eq!(cluster.block_size, 16);
    assert_eq!(Config::parse(&c.to_toml(), "printed").unwrap(), c);
}

/// A build without the feature refuses `[cluster]` instead of running alone.
#[cfg(not(feature = "cluster"))]
#[test]
fn a_build_without_the_feature_refuses_a_cluster_section() {
    assert!(err(CLUSTER).contains("needs a vpcbox built with the `cluster` feature"));
}

const SUBNET6: &str = r#"
[[subnet6]]
id = "lab6"
prefix = "fd00:77::/64"
pools = ["fd00:77::100-fd00:77::1ff"]
pd_pools = [{ prefix = "fd00:78::/48", delegated_len = 56 }]
dns = ["fd00:77::1"]
preferred_lifetime = "30m"
valid_lifetime = "1h"
relays = []
"#;

#[test]
fn dhcp6_is_off_without_its_section_and_parses_as_designed() {
    let c = Config::parse("", "empty").unwrap();
    assert!(!c.dhcp6.enabled);
    assert!(c.subnets6.is_empty());
    let c = Config::parse(&format!("[dhcp6]\nenabled = true\n{SUBNET6}"), "t").unwrap();
    assert!(c.dhcp6.enabled);
    let s = &c.subnets6[0];
    assert_eq!(s.prefix.to_string(), "fd00:77::/64");
    assert_eq!(s.pd_pools[0].delegated_len, 56);
    assert_eq!(s.preferred_lifetime, std::time::Duration::from_secs(1800));
    assert_eq!(Config::parse(&c.to_toml(), "printed").unwrap(), c);
}

#[test]
fn dhcp6_errors_name_the_key_and_quote_the_value() {
    let bad = |from: &str, to: &str| err(&SUBNET6.replace(from, to));
    assert_eq!(
        bad("fd00:77::/64", "fd00:77::1/64"),
        "subnet6[0].prefix: 'fd00:77::1/64' has host bits set (use the network address)"
    );
    assert_eq!(
        bad("fd00:77::/64", "10.0.0.0/24"),
        "subnet6[0].prefix: '10.0.0.0/24' is not an IPv6 prefix (e.g. \"fd00:77::/64\")"
    );
    assert_eq!(
        bad("fd00:77::1ff\"", "fd00:79::1\""),
        "subnet6[0].pools[0]: 'fd00:77::100-fd00:79::1' must lie inside fd00:77::/64"
    );
    assert_eq!(
        bad(
            "[\"fd00:77::100-fd00:77::1ff\"]",
            "[\"fd00:77::100-fd00:77::1ff\", \"fd00:77::1f0-fd00:77::2ff\"]"
        ),
        "subnet6[0].pools[1]: 'fd00:77::1f0-fd00:77::2ff' overlaps another pool"
    );
    assert_eq!(
        bad("delegated_len = 56", "delegated_len = 48"),
        "subnet6[0].pd_pools[0].delegated_len: '48' must be above 48 and at most 64"
    );
    assert_eq!(
        bad("delegated_len = 56", "delegated_len = 65"),
        "subnet6[0].pd_pools[0].delegated_len: '65' must be above 48 and at most 64"
    );
    assert_eq!(
        bad("fd00:78::/48", "fd00:77::/52"),
        "subnet6[0].pd_pools[0].prefix: 'fd00:77::/52' overlaps an address pool"
    );
    assert_eq!(
        bad(
            "preferred_lifetime = \"30m\"",
            "preferred_lifetime = \"2h\""
        ),
        "subnet6[0].preferred_lifetime: '2h' must not exceed valid_lifetime"
    );
    assert_eq!(
        bad("relays = []", "relays = [\"10.0.0.2\"]"),
        "subnet6[0].relays[0]: '10.0.0.2' is not an IPv6 address"
    );
    assert_eq!(
        bad("dns = [\"fd00:77::1\"]", "dns = [\"x\"]"),
        "subnet6[0].dns[0]: 'x' is not an IPv6 address"
    );
    assert_eq!(
        err("[dhcp6]\nlisten = \"0.0.0.0:547\""),
        "dhcp6.listen: '0.0.0.0:547' is not an IPv6 socket address (e.g. \"[::]:547\")"
    );
    assert_eq!(
        err("[dhcp6]\nsol_max_rt = \"5s\""),
        "dhcp6.sol_max_rt: '5s' must be between 1m and 1day"
    );
    assert_eq!(
        err("[dhcp6]\nper_client_rate = \"0/s\""),
        "dhcp6.per_client_rate: '0/s' must be at least 1/s"
    );
    assert_eq!(
        err("[dhcp6]\nbogus = 1"),
        "dhcp6.bogus: unknown key 'bogus'"
    );
}

#[test]
fn subnet6_ids_are_unique_across_v4_and_v6_and_prefixes_do_not_overlap() {
    assert_eq!(
        err(&format!("{SUBNET}{}", SUBNET6.replace("lab6", "a"))),
        "subnet6[0].id: 'a' is used by another subnet"
    );
    let second = SUBNET6
        .replace("lab6", "b")
        .replace("fd00:77::/64", "fd00:77::/48")
        .replace("fd00:78::/48", "fd00:79::/48");
    assert_eq!(
        err(&format!("{SUBNET6}{second}")),
        "subnet6[1].prefix: 'fd00:77::/48' overlaps subnet6 'lab6' (fd00:77::/64)"
    );
    let third = SUBNET6
        .replace("lab6", "c")
        .replace("fd00:77:", "fd00:90:")
        .replace("fd00:78::/48", "fd00:78:0:1000::/52");
    assert_eq!(
        err(&format!("{SUBNET6}{third}")),
        "subnet6[1].pd_pools[0].prefix: 'fd00:78:0:1000::/52' overlaps a pool of subnet6 'lab6'"
    );
}
