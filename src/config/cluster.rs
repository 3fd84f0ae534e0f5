//! The `[cluster]` section: node name, etcd endpoints, key prefix, lease
//! TTL and block size, each checked and named on error.

use std::time::Duration;

use super::check::{at, fail, R};
use super::raw;
use super::{ClusterConfig, SubnetConfig};

/// Validates `[cluster]`; a build without the `cluster` feature refuses
/// a valid section rather than silently running alone.
pub fn cluster(c: &raw::Cluster, subnets: &[SubnetConfig]) -> R<ClusterConfig> {
    let node_ok = (1..=32).contains(&c.node.len())
        && c.node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !node_ok {
        return fail("cluster.node", &c.node, "must match [a-z0-9-]{1,32}");
    }
    if c.etcd.is_empty() {
        return fail("cluster.etcd", "[]", "must list at least one endpoint");
    }
    for (i, e) in c.etcd.iter().enumerate() {
        let ok = e
            .parse::<http::Uri>()
            .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
        if !ok {
            return fail(
                format!("cluster.etcd[{i}]"),
                e,
                "is not an http URL (e.g. \"http://127.0.0.1:2379\")",
            );
        }
    }
    let prefix = c.prefix.trim_end_matches('/');
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.contains("//") {
        return fail("cluster.prefix", &c.prefix, "must be a key path such as \"/vpcbox/v1\"");
    }
    let ttl = at("cluster.lease_ttl", &c.lease_ttl, super::parse::duration(&c.lease_ttl))?;
    if !(Duration::from_secs(2)..=Duration::from_secs(60)).contains(&ttl) || ttl.subsec_nanos() != 0 {
        return fail("cluster.lease_ttl", &c.lease_ttl, "must be whole seconds from 2s to 60s");
    }
    let b = c.block_size;
    if !(4..=1024).contains(&b) || !b.is_power_of_two() {
        return fail("cluster.block_size", b, "must be a power of two from 4 to 1024");
    }
    if let Some((id, size)) = smallest_pool(subnets).filter(|(_, size)| u64::from(b) > *size) {
        return fail(
            "cluster.block_size",
            b,
            format!("must not exceed the smallest pool ({size} addresses in subnet '{id}')"),
        );
    }
    if !cfg!(feature = "cluster") {
        return fail(
            "cluster.node",
            &c.node,
            "needs a vpcbox built with the `cluster` feature (cargo build --features cluster); this build lacks it",
        );
    }
    Ok(ClusterConfig {
        node: c.node.clone(),
        etcd: c.etcd.clone(),
        prefix: prefix.to_owned(),
        lease_ttl: ttl,
        block_size: b,
    })
}

fn smallest_pool(subnets: &[SubnetConfig]) -> Option<(&str, u64)> {
    subnets
        .iter()
        .flat_map(|s| s.pools.iter().map(move |p| (s.id.as_str(), p.len())))
        .min_by_key(|(_, n)| *n)
}
