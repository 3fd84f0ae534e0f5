//! `[dhcp6]` and `[[subnet6]]` checked into [`Dhcp6Config`] and [`Subnet6Config`].
//! Every error names the key and quotes the value as written.

use std::net::Ipv6Addr;
use std::time::Duration;

use ipnet::Ipv6Net;

use super::check::{at, dur, fail, indexed, rate, sock, within, R};
use super::raw6::{Dhcp6, Subnet6};
use super::types6::{Dhcp6Config, PdPool6, Pool6, Subnet6Config};
use super::ConfigError;
use crate::ipam::{Spec6Error, SubnetSpec as SubnetConfig};

/// SOL_MAX_RT / INF_MAX_RT bounds (RFC 9915 21.24, 21.25).
const MAX_RT: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(86_400));

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

/// Parses a `[[subnet6]]` table into the spec, then runs the spec's one
/// validation ([`Subnet6Config::check`]), quoting the value as written.
fn subnet6(s: &Subnet6, k: &dyn Fn(&str) -> String) -> R<Subnet6Config> {
    let addrs =
        |key: &str, v: &[String]| indexed(v, |j, a| at(&k(&format!("{key}[{j}]")), a, ipv6(a)));
    let spec = Subnet6Config {
        id: s.id.clone(),
        prefix: at(&k("prefix"), &s.prefix, net6(&s.prefix))?,
        pools: indexed(&s.pools, |j, p| {
            let (start, end) = at(&k(&format!("pools[{j}]")), p, range6(p))?;
            Ok(Pool6 { start, end })
        })?,
        pd_pools: indexed(&s.pd_pools, |j, p| {
            let key = k(&format!("pd_pools[{j}].prefix"));
            Ok(PdPool6 {
                prefix: at(&key, &p.prefix, net6(&p.prefix))?,
                delegated_len: p.delegated_len,
            })
        })?,
        dns: addrs("dns", &s.dns)?,
        domain: s.domain.clone().filter(|d| !d.is_empty()),
        preferred_lifetime: dur(&k("preferred_lifetime"), &s.preferred_lifetime)?,
        valid_lifetime: dur(&k("valid_lifetime"), &s.valid_lifetime)?,
        relays: addrs("relays", &s.relays)?,
    };
    spec.check()
        .map_err(|e| ConfigError::invalid(k(&e.field), as_written(s, &e), e.reason))?;
    Ok(spec)
}

/// The value a spec error is about, as the config file writes it.
fn as_written(s: &Subnet6, e: &Spec6Error) -> String {
    let index = |rest: &str| rest.split(']').next().and_then(|j| j.parse::<usize>().ok());
    let text = match e.field.as_str() {
        "id" => Some(&s.id),
        "prefix" => Some(&s.prefix),
        "domain" => s.domain.as_ref(),
        "preferred_lifetime" => Some(&s.preferred_lifetime),
        "valid_lifetime" => Some(&s.valid_lifetime),
        f => match (f.strip_prefix("pools["), f.strip_prefix("pd_pools[")) {
            (Some(rest), _) => index(rest).and_then(|j| s.pools.get(j)),
            (_, Some(rest)) if f.ends_with(".prefix") => index(rest)
                .and_then(|j| s.pd_pools.get(j))
                .map(|p| &p.prefix),
            _ => None,
        },
    };
    text.cloned().unwrap_or_else(|| e.value.clone())
}

fn nets_overlap(a: Ipv6Net, b: Ipv6Net) -> bool {
    a.contains(&b) || b.contains(&a)
}

fn ipv6(s: &str) -> Result<Ipv6Addr, &'static str> {
    s.trim().parse().map_err(|_| "is not an IPv6 address")
}

/// An IPv6 prefix: `fd00:77::/64` (the spec refuses host bits).
fn net6(s: &str) -> Result<Ipv6Net, &'static str> {
    s.trim()
        .parse()
        .map_err(|_| "is not an IPv6 prefix (e.g. \"fd00:77::/64\")")
}

/// `"fd00:77::100-fd00:77::1ff"` or a prefix `"fd00:77::100/120"` (all of it).
fn range6(s: &str) -> Result<(Ipv6Addr, Ipv6Addr), &'static str> {
    const BAD: &str = "is not an address range (e.g. \"fd00:77::100-fd00:77::1ff\")";
    if let Some((a, b)) = s.split_once('-') {
        return Ok((ipv6(a).map_err(|_| BAD)?, ipv6(b).map_err(|_| BAD)?));
    }
    let net: Ipv6Net = s.trim().parse().map_err(|_| BAD)?;
    Ok((net.network(), net.broadcast()))
}
