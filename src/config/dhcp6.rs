//! `[dhcp6]` and `[[subnet6]]` checked into [`Dhcp6Config`] and [`Subnet6Config`].
//! Every error names the key and quotes the value as written.

use std::net::Ipv6Addr;
use std::time::Duration;

use ipnet::Ipv6Net;

use super::check::{at, dur, fail, indexed, rate, sock, within, R};
use super::raw6::{Dhcp6, PdPool, Subnet6};
use super::types6::{Dhcp6Config, PdPool6, Pool6, Subnet6Config};
use crate::ipam::{dns_name, SubnetSpec as SubnetConfig};

/// SOL_MAX_RT / INF_MAX_RT bounds (RFC 9915 21.24, 21.25).
const MAX_RT: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(86_400));
/// Longest lifetime: 0xffffffff means "infinite" on the wire, so stay far below it.
const MAX_LIFETIME: Duration = Duration::from_secs(u32::MAX as u64 / 4);

pub fn dhcp6(d: &Dhcp6) -> R<Dhcp6Config> {
    let listen = sock("dhcp6.listen", &d.listen)?;
    if !listen.is_ipv6() {
        return fail(
            "dhcp6.listen",
            &d.listen,
            "is not an IPv6 socket address (e.g. \"[::]:547\")",
        );
    }
    for (i, name) in d.interfaces.iter().enumerate() {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            return fail(
                format!("dhcp6.interfaces[{i}]"),
                name,
                "is not an interface name",
            );
        }
    }
    let max_rt = |key: &str, v: &str| {
        let d = dur(key, v)?;
        if d < MAX_RT.0 || d > MAX_RT.1 {
            return fail(key, v, "must be between 1m and 1day");
        }
        Ok(d)
    };
    Ok(Dhcp6Config {
        enabled: d.enabled,
        listen,
        interfaces: d.interfaces.clone(),
        per_client_rate: rate("dhcp6.per_client_rate", &d.per_client_rate)?,
        per_client_burst: within!("dhcp6", d.per_client_burst, 1, 1_000_000)?,
        rapid_commit: d.rapid_commit,
        sol_max_rt: max_rt("dhcp6.sol_max_rt", &d.sol_max_rt)?,
        inf_max_rt: max_rt("dhcp6.inf_max_rt", &d.inf_max_rt)?,
    })
}

/// `[[subnet6]]` tables; ids must differ from each other and from the v4 ones.
pub fn subnets6(raw: &[Subnet6], v4: &[SubnetConfig]) -> R<Vec<Subnet6Config>> {
    let mut out: Vec<Subnet6Config> = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let k = |f: &str| format!("subnet6[{i}].{f}");
        let sub = subnet6(s, &k)?;
        if out.iter().any(|o| o.id == sub.id) || v4.iter().any(|o| o.id == sub.id) {
            return fail(k("id"), &s.id, "is used by another subnet");
        }
        if let Some(o) = out.iter().find(|o| nets_overlap(o.prefix, sub.prefix)) {
            let reason = format!("overlaps subnet6 '{}' ({})", o.id, o.prefix);
            return fail(k("prefix"), &s.prefix, reason);
        }
        for (j, pd) in sub.pd_pools.iter().enumerate() {
            let clash = out.iter().find(|o| {
                o.pd_pools.iter().any(|p| nets_overlap(p.prefix, pd.prefix))
                    || o.pools
                        .iter()
                        .any(|p| p.overlaps(pd.prefix.network(), pd.prefix.broadcast()))
            });
            if let Some(o) = clash {
                let reason = format!("overlaps a pool of subnet6 '{}'", o.id);
                return fail(
                    k(&format!("pd_pools[{j}].prefix")),
                    &s.pd_pools[j].prefix,
                    reason,
                );
            }
        }
        out.push(sub);
    }
    Ok(out)
}

fn subnet6(s: &Subnet6, k: &dyn Fn(&str) -> String) -> R<Subnet6Config> {
    if s.id.trim().is_empty() || s.id.len() > 64 {
        return fail(k("id"), &s.id, "must be 1 to 64 characters");
    }
    let prefix = at(&k("prefix"), &s.prefix, net6(&s.prefix))?;
    let pools = indexed(&s.pools, |j, p| {
        let key = k(&format!("pools[{j}]"));
        let (start, end) = at(&key, p, range6(p))?;
        if !prefix.contains(&start) || !prefix.contains(&end) {
            return fail(key, p, format!("must lie inside {prefix}"));
        }
        Ok(Pool6 { start, end })
    })?;
    for (j, p) in pools.iter().enumerate() {
        if pools[..j].iter().any(|q| q.overlaps(p.start, p.end)) {
            return fail(
                k(&format!("pools[{j}]")),
                &s.pools[j],
                "overlaps another pool",
            );
        }
    }
    let pd_pools = indexed(&s.pd_pools, |j, p| {
        pd_pool(p, &k(&format!("pd_pools[{j}]")), &pools)
    })?;
    for (j, p) in pd_pools.iter().enumerate() {
        if pd_pools[..j]
            .iter()
            .any(|q| nets_overlap(q.prefix, p.prefix))
        {
            let key = k(&format!("pd_pools[{j}].prefix"));
            return fail(key, &s.pd_pools[j].prefix, "overlaps another pd pool");
        }
    }
    let addrs =
        |key: &str, v: &[String]| indexed(v, |j, a| at(&k(&format!("{key}[{j}]")), a, ipv6(a)));
    let domain = s.domain.clone().filter(|d| !d.is_empty());
    if let Some(d) = &domain {
        if !dns_name(d) {
            return fail(k("domain"), d, "is not a DNS name");
        }
    }
    let lifetime = |key: &str, v: &str| {
        let d = dur(&k(key), v)?;
        if d > MAX_LIFETIME {
            return fail(k(key), v, "is too long");
        }
        Ok(d)
    };
    let preferred_lifetime = lifetime("preferred_lifetime", &s.preferred_lifetime)?;
    let valid_lifetime = lifetime("valid_lifetime", &s.valid_lifetime)?;
    if preferred_lifetime > valid_lifetime {
        return fail(
            k("preferred_lifetime"),
            &s.preferred_lifetime,
            "must not exceed valid_lifetime",
        );
    }
    Ok(Subnet6Config {
        id: s.id.clone(),
        prefix,
        pools,
        pd_pools,
        dns: addrs("dns", &s.dns)?,
        domain,
        preferred_lifetime,
        valid_lifetime,
        relays: addrs("relays", &s.relays)?,
    })
}

fn pd_pool(p: &PdPool, key: &str, pools: &[Pool6]) -> R<PdPool6> {
    let prefix = at(&format!("{key}.prefix"), &p.prefix, net6(&p.prefix))?;
    if p.delegated_len <= prefix.prefix_len() || p.delegated_len > 64 {
        let reason = format!("must be above {} and at most 64", prefix.prefix_len());
        return fail(format!("{key}.delegated_len"), p.delegated_len, reason);
    }
    if pools
        .iter()
        .any(|a| a.overlaps(prefix.network(), prefix.broadcast()))
    {
        return fail(
            format!("{key}.prefix"),
            &p.prefix,
            "overlaps an address pool",
        );
    }
    Ok(PdPool6 {
        prefix,
        delegated_len: p.delegated_len,
    })
}

fn nets_overlap(a: Ipv6Net, b: Ipv6Net) -> bool {
    a.contains(&b) || b.contains(&a)
}

fn ipv6(s: &str) -> Result<Ipv6Addr, &'static str> {
    s.trim().parse().map_err(|_| "is not an IPv6 address")
}

/// An IPv6 prefix without host bits: `fd00:77::/64`.
fn net6(s: &str) -> Result<Ipv6Net, &'static str> {
    let net: Ipv6Net = s
        .trim()
        .parse()
        .map_err(|_| "is not an IPv6 prefix (e.g. \"fd00:77::/64\")")?;
    if net.network() != net.addr() {
        return Err("has host bits set (use the network address)");
    }
    Ok(net)
}

/// `"fd00:77::100-fd00:77::1ff"` or a prefix `"fd00:77::100/120"` (all of it).
fn range6(s: &str) -> Result<(Ipv6Addr, Ipv6Addr), &'static str> {
    const BAD: &str = "is not an address range (e.g. \"fd00:77::100-fd00:77::1ff\")";
    if let Some((a, b)) = s.split_once('-') {
        let (a, b) = (ipv6(a).map_err(|_| BAD)?, ipv6(b).map_err(|_| BAD)?);
        if a > b {
            return Err("starts after it ends");
        }
        return Ok((a, b));
    }
    let net: Ipv6Net = s.trim().parse().map_err(|_| BAD)?;
    Ok((net.network(), net.broadcast()))
}
