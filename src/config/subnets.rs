//! `[[subnet]]` and `[[reservation]]` tables: parsed here, then checked by
//! the subnet model's one validation ([`SubnetConfig::check`]).

use super::check::{at, dur, fail, indexed, ip, R};
use super::parse;
use super::raw;
use super::{ConfigError, DhcpOption, PoolRange, ReservationConfig, StaticRoute, SubnetConfig};
use crate::client::ClientKey;
use crate::ipam::{SpecError, SubnetField};

pub fn subnets(raw: &[raw::Subnet]) -> R<Vec<SubnetConfig>> {
    let mut out: Vec<SubnetConfig> = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let k = |f: &str| format!("subnet[{i}].{f}");
        let sub = subnet(s, &k)?;
        if let Some(other) = out.iter().find(|o| o.id == sub.id) {
            return fail(k("id"), &other.id, "is used by another subnet");
        }
        if let Some(other) = out
            .iter()
            .find(|o| o.cidr.contains(&sub.cidr) || sub.cidr.contains(&o.cidr))
        {
            let reason = format!("overlaps subnet '{}' ({})", other.id, other.cidr);
            return fail(k("cidr"), &s.cidr, reason);
        }
        out.push(sub);
    }
    Ok(out)
}

/// Parses a `[[subnet]]` table into the spec, then runs the spec's one
/// validation ([`SubnetConfig::check`]), quoting the value as written.
fn subnet(s: &raw::Subnet, k: &dyn Fn(&str) -> String) -> R<SubnetConfig> {
    let cidr = at(&k("cidr"), &s.cidr, parse::cidr(&s.cidr))?;
    let pools = indexed(&s.pools, |j, p| {
        let (start, end) = at(&k(&format!("pools[{j}]")), p, parse::range(p))?;
        Ok(PoolRange { start, end })
    })?;
    let opt_dur = |key: &str, v: &Option<String>| v.as_deref().map(|v| dur(&k(key), v)).transpose();
    let opt_ip = |key: &str, v: &Option<String>| v.as_deref().map(|v| ip(&k(key), v)).transpose();
    let ips = |key: &str, v: &[String]| indexed(v, |j, v| ip(&k(&format!("{key}[{j}]")), v));
    let spec = SubnetConfig {
        id: s.id.clone(),
        cidr,
        pools,
        exclude: ips("exclude", &s.exclude)?,
        gateway: opt_ip("gateway", &s.gateway)?,
        dns: ips("dns", &s.dns)?,
        domain: s.domain.clone().filter(|d| !d.is_empty()),
        lease_time: dur(&k("lease_time"), &s.lease_time)?,
        renew_time: opt_dur("renew_time", &s.renew_time)?,
        rebind_time: opt_dur("rebind_time", &s.rebind_time)?,
        mtu: s.mtu,
        routes: indexed(&s.routes, |j, r| {
            let key = k(&format!("routes[{j}]"));
            Ok(StaticRoute {
                dest: at(&format!("{key}.dest"), &r.dest, parse::cidr(&r.dest))?,
                via: ip(&format!("{key}.via"), &r.via)?,
            })
        })?,
        options: indexed(&s.options, |j, o| {
            let key = format!("{}.hex", k(&format!("options[{j}]")));
            let data = at(&key, &o.hex, parse::hex(&o.hex))?;
            Ok(DhcpOption { code: o.code, data })
        })?,
        relays: ips("relays", &s.relays)?,
    };
    spec.check()
        .map_err(|e| ConfigError::invalid(k(&e.field.to_string()), as_written(s, &e), e.reason))?;
    Ok(spec)
}

/// The value a spec error is about, as the config file writes it.
fn as_written(s: &raw::Subnet, e: &SpecError) -> String {
    use SubnetField as F;
    let text = match e.field {
        F::Id => Some(&s.id),
        F::Cidr => Some(&s.cidr),
        F::Pool(j) => s.pools.get(j),
        F::Exclude(j) => s.exclude.get(j),
        F::Gateway => s.gateway.as_ref(),
        F::Domain => s.domain.as_ref(),
        F::LeaseTime => Some(&s.lease_time),
        F::RenewTime => s.renew_time.as_ref(),
        F::RebindTime => s.rebind_time.as_ref(),
        F::Times => s.rebind_time.as_ref().or(s.renew_time.as_ref()),
        F::OptionHex(j) => s.options.get(j).map(|o| &o.hex),
        F::Pools | F::Mtu | F::OptionCode(_) => None,
    };
    text.cloned().unwrap_or_else(|| e.value.clone())
}

pub fn reservations(
    raw: &[raw::Reservation],
    subnets: &[SubnetConfig],
) -> R<Vec<ReservationConfig>> {
    let mut out: Vec<ReservationConfig> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let k = |f: &str| format!("reservation[{i}].{f}");
        let Some(sub) = subnets.iter().find(|s| s.id == r.subnet) else {
            return fail(k("subnet"), &r.subnet, "names no configured subnet");
        };
        let client: ClientKey = r.client.parse().map_err(|_| {
            ConfigError::invalid(
                k("client"),
                &r.client,
                "is not a client key (mac:… or id:…)",
            )
        })?;
        if !client.is_dhcp() {
            return fail(
                k("client"),
                &r.client,
                "must be a DHCP client (mac:… or id:…)",
            );
        }
        let addr = ip(&k("ip"), &r.ip)?;
        if !sub.cidr.contains(&addr) || addr == sub.cidr.network() || addr == sub.cidr.broadcast() {
            return fail(
                k("ip"),
                &r.ip,
                format!("is not a host address of {}", sub.cidr),
            );
        }
        if sub.gateway == Some(addr) || sub.exclude.contains(&addr) {
            return fail(
                k("ip"),
                &r.ip,
                "is the subnet's gateway or an excluded address",
            );
        }
        if out.iter().any(|o| o.ip == addr) {
            return fail(k("ip"), &r.ip, "is reserved for another client");
        }
        if out
            .iter()
            .any(|o| o.subnet == r.subnet && o.client == client)
        {
            return fail(
                k("client"),
                &r.client,
                "already has a reservation in this subnet",
            );
        }
        out.push(ReservationConfig {
            subnet: r.subnet.clone(),
            client,
            ip: addr,
            hostname: r.hostname.clone(),
        });
    }
    Ok(out)
}
