//! Reply options: which ones, in what order, within what size. The
//! optional ones (mask, router, DNS, domain, MTU, routes, configured raw
//! options) go in the client's parameter-request-list order, all of them
//! without a list, while they fit its maximum message size.

use std::net::Ipv4Addr;

use dhcproto::v4::OptionCode as C;

use crate::ipam::SubnetSpec;

/// DHCP payload limit when the client sets no option 57 (RFC 2131: 576-byte
/// IP datagrams minus the IP and UDP headers).
pub const DEFAULT_MAX_PAYLOAD: usize = 576 - 28;
/// We never send more than fits an Ethernet MTU.
pub const MAX_PAYLOAD: usize = 1500 - 28;

/// The optional options the server generates, in their default order.
const GENERATED: [C; 6] = [
    C::SubnetMask,
    C::Router,
    C::DomainNameServer,
    C::DomainName,
    C::InterfaceMtu,
    C::ClasslessStaticRoute,
];

/// Codes the server sets itself besides [`GENERATED`]; configured raw
/// options with any of these codes are ignored, so a client never sees two
/// different values.
const RESERVED: [C; 11] = [
    C::RequestedIpAddress,
    C::AddressLeaseTime,
    C::OptionOverload,
    C::MessageType,
    C::ServerIdentifier,
    C::ParameterRequestList,
    C::MaxMessageSize,
    C::Renewal,
    C::Rebinding,
    C::ClientIdentifier,
    C::RelayAgentInformation,
];

/// Whether a configured raw option with `code` would clash with ours.
fn own(code: C) -> bool {
    GENERATED.contains(&code) || RESERVED.contains(&code)
}

/// The DHCP payload limit for a client that sent `max_size` (option 57).
pub fn payload_limit(max_size: Option<u16>) -> usize {
    match max_size {
        Some(n) => usize::from(n)
            .saturating_sub(28)
            .clamp(DEFAULT_MAX_PAYLOAD, MAX_PAYLOAD),
        None => DEFAULT_MAX_PAYLOAD,
    }
}

/// Appends one option; values over 255 bytes are split into several
/// instances of the same code (RFC 3396). Empty values are skipped.
pub fn put(out: &mut Vec<u8>, code: impl Into<u8>, value: &[u8]) {
    let code = code.into();
    for chunk in value.chunks(255) {
        out.push(code);
        out.push(chunk.len() as u8); // chunks(255): fits
        out.extend_from_slice(chunk);
    }
}

/// Encoded size of `put(code, value)`.
pub fn size(value: &[u8]) -> usize {
    value.len() + 2 * value.len().div_ceil(255)
}

fn addrs(list: &[Ipv4Addr]) -> Vec<u8> {
    list.iter().flat_map(|a| a.octets()).collect()
}

/// Option 121 (RFC 3442): width byte, significant destination octets, router.
pub fn classless_routes(subnet: &SubnetSpec) -> Vec<u8> {
    let mut v = Vec::new();
    for r in &subnet.routes {
        let width = r.dest.prefix_len();
        v.push(width);
        v.extend_from_slice(&r.dest.network().octets()[..usize::from(width.div_ceil(8))]);
        v.extend_from_slice(&r.via.octets());
    }
    v
}

/// The value of optional option `code` for `subnet`, if it has one.
/// Configured raw options may be empty (zero-length options exist).
pub fn optional(subnet: &SubnetSpec, code: u8) -> Option<Vec<u8>> {
    let v = match C::from(code) {
        C::SubnetMask => subnet.cidr.netmask().octets().to_vec(),
        C::Router => subnet.gateway.map(|g| g.octets().to_vec())?,
        C::DomainNameServer => addrs(&subnet.dns),
        C::DomainName => subnet.domain.as_ref().map(|d| d.as_bytes().to_vec())?,
        C::InterfaceMtu => subnet.mtu.map(|m| m.to_be_bytes().to_vec())?,
        C::ClasslessStaticRoute => classless_routes(subnet),
        c if own(c) => return None,
        _ => {
            let mut entries = subnet.options.iter().filter(|o| o.code == code).peekable();
            entries.peek()?;
            // Several entries with one code are concatenated (RFC 3396).
            return Some(entries.flat_map(|o| o.data.iter().copied()).collect());
        }
    };
    (!v.is_empty()).then_some(v)
}

/// Codes of optional options in the order they are offered when the client
/// sends no parameter request list.
pub fn all_codes(subnet: &SubnetSpec) -> Vec<u8> {
    let mut codes: Vec<u8> = GENERATED.iter().map(|&c| u8::from(c)).collect();
    for o in &subnet.options {
        let c = C::from(o.code);
        if !own(c) && !codes.contains(&o.code) && !matches!(c, C::Pad | C::End) {
            codes.push(o.code);
        }
    }
    codes
}

/// Appends the optional options for `prl` (or all) while they fit in
/// `budget` bytes. Returns the bytes used.
pub fn put_optional(
    out: &mut Vec<u8>,
    subnet: &SubnetSpec,
    prl: Option<&[u8]>,
    budget: usize,
) -> usize {
    let all;
    let codes: &[u8] = match prl {
        Some(p) => p,
        None => {
            all = all_codes(subnet);
            &all
        }
    };
    let mut used = 0;
    for (i, &code) in codes.iter().enumerate() {
        if matches!(C::from(code), C::Pad | C::End) || codes[..i].contains(&code) {
            continue;
        }
        let Some(v) = optional(subnet, code) else {
            continue;
        };
        let n = size(&v).max(2);
        if used + n > budget {
            continue; // a smaller one later may still fit
        }
        if v.is_empty() {
            out.extend_from_slice(&[code, 0]);
        } else {
            put(out, code, &v);
        }
        used += n;
    }
    used
}
