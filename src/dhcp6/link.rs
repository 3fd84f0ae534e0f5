//! Which `[[subnet6]]` serves a client: by the relay's link-address
//! (trusted only when configured) or by the receiving interface's prefix.

use std::net::Ipv6Addr;

use super::relay::RelayChain;
use crate::config::Subnet6Config;
use crate::stats::DropReason;

/// The subnet of a relayed client. The innermost relay's link-address must
/// be one of a subnet's `relays`, and the datagram's source one of any
/// subnet's (a relay is trusted by its address, as in v4).
pub fn for_relay<'a>(
    subnets: &'a [Subnet6Config],
    chain: &RelayChain,
    from: Ipv6Addr,
) -> Result<&'a Subnet6Config, DropReason> {
    let link = chain.innermost().ok_or(DropReason::NoSubnet)?.link;
    if !subnets.iter().any(|s| s.relays.contains(&from)) {
        return Err(DropReason::UntrustedRelay);
    }
    subnets
        .iter()
        .find(|s| s.relays.contains(&link))
        .ok_or(DropReason::UntrustedRelay)
}

/// The subnet of a directly attached client: the one whose prefix holds an
/// address of the interface the message came in on.
pub fn for_interface<'a>(
    subnets: &'a [Subnet6Config],
    iface_addrs: &[Ipv6Addr],
) -> Option<&'a Subnet6Config> {
    subnets
        .iter()
        .find(|s| iface_addrs.iter().any(|a| s.prefix.contains(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp6::relay::RelayLevel;

    fn subnet(id: &str, prefix: &str, relays: &[&str]) -> Subnet6Config {
        Subnet6Config {
            relays: relays.iter().map(|r| r.parse().unwrap()).collect(),
            ..Subnet6Config::new(id, prefix.parse().unwrap())
        }
    }

    #[test]
    fn relayed_clients_need_a_configured_relay_and_link() {
        let subnets = [
            subnet("a", "fd00:1::/64", &["fd00:1::1"]),
            subnet("b", "fd00:2::/64", &["fd00:2::1", "fd00:ff::9"]),
        ];
        let chain = |links: &[&str]| RelayChain {
            levels: links
                .iter()
                .map(|l| RelayLevel {
                    hop_count: 0,
                    link: l.parse().unwrap(),
                    peer: "fe80::1".parse().unwrap(),
                    interface_id: None,
                    lladdr: None,
                })
                .collect(),
        };
        let ip = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let pick = |c, from| for_relay(&subnets, &c, ip(from)).map(|s| s.id.as_str());
        assert_eq!(pick(chain(&["fd00:2::1"]), "fd00:2::1"), Ok("b"));
        // Two relays: the one nearest the client names the link.
        assert_eq!(
            pick(chain(&["fd00:ff::9", "fd00:1::1"]), "fd00:ff::9"),
            Ok("a")
        );
        assert_eq!(
            pick(chain(&["fd00:2::1"]), "fd00:9::9"),
            Err(DropReason::UntrustedRelay)
        );
        assert_eq!(
            pick(chain(&["fd00:2::7"]), "fd00:2::1"),
            Err(DropReason::UntrustedRelay)
        );
        assert_eq!(pick(chain(&[]), "fd00:2::1"), Err(DropReason::NoSubnet));
        let direct = for_interface(&subnets, &[ip("fe80::1"), ip("fd00:2::5")]);
        assert_eq!(direct.map(|s| s.id.as_str()), Some("b"));
        assert!(for_interface(&subnets, &[ip("fe80::1")]).is_none());
    }
}
