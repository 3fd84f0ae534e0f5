//! The bounds of the DHCPv6 wire and the one option walker every decoder
//! here uses: `code(2) len(2) value(len)` records, each checked to fit its
//! container, and every record counted against a per-message budget.

use super::error::Malformed6;

/// Largest datagram accepted: a relayed message through a few relays fits
/// with room; anything larger is refused before any decoding.
pub const MAX_DATAGRAM: usize = 4096;
/// Options (at every nesting level together) in one client message.
pub const MAX_OPTIONS: usize = 64;
/// Options in all the Relay-Forw headers of one datagram together.
pub const MAX_RELAY_OPTIONS: usize = 4 * HOP_COUNT_LIMIT;
/// IA_NA and IA_PD options in one message, together.
pub const MAX_IAS: usize = 8;
/// Requested addresses or prefixes in one IA.
pub const MAX_HINTS: usize = 4;
/// Option codes in one ORO.
pub const MAX_ORO: usize = 64;
/// Relay nesting (RFC 9915 7.6 HOP_COUNT_LIMIT).
pub const HOP_COUNT_LIMIT: usize = 32;

/// Options left to read in one message, shared by the walks of its nested
/// containers.
pub type Budget = std::cell::Cell<usize>;

/// Calls `visit(code, value)` for each option in `area`, spending one unit
/// of `budget` per option. Never panics: every length is checked.
pub fn walk<'a>(
    mut area: &'a [u8],
    budget: &Budget,
    mut visit: impl FnMut(u16, &'a [u8]) -> Result<(), Malformed6>,
) -> Result<(), Malformed6> {
    while !area.is_empty() {
        let [c0, c1, l0, l1, rest @ ..] = area else {
            return Err(Malformed6::TruncatedOption);
        };
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let (value, next) = rest
            .split_at_checked(len)
            .ok_or(Malformed6::OptionOverrun)?;
        budget.set(
            budget
                .get()
                .checked_sub(1)
                .ok_or(Malformed6::TooManyOptions)?,
        );
        visit(u16::from_be_bytes([*c0, *c1]), value)?;
        area = next;
    }
    Ok(())
}

/// A big-endian u32 at `at`, if the slice holds it.
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?.try_into().ok().map(u32::from_be_bytes)
}

/// 16 bytes at `at` as an address.
pub fn addr_at(b: &[u8], at: usize) -> Option<std::net::Ipv6Addr> {
    let o: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(o.into())
}

/// Appends one option record; `value` must be under 64 KiB (all ours are).
pub fn put(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(value.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(area: &[u8], budget: usize) -> Result<Vec<u16>, Malformed6> {
        let mut v = Vec::new();
        walk(area, &Budget::new(budget), |c, _| {
            v.push(c);
            Ok(())
        })?;
        Ok(v)
    }

    #[test]
    fn truncated_and_overrunning_options_are_refused() {
        assert_eq!(codes(&[], 1), Ok(vec![]));
        assert_eq!(codes(&[0, 8, 0, 2, 0, 1], 1), Ok(vec![8]));
        assert_eq!(codes(&[0, 8, 0], 1), Err(Malformed6::TruncatedOption));
        assert_eq!(
            codes(&[0, 8, 0, 2, 0, 1, 0], 4),
            Err(Malformed6::TruncatedOption)
        );
        assert_eq!(
            codes(&[0, 8, 0, 3, 0, 1], 1),
            Err(Malformed6::OptionOverrun)
        );
        assert_eq!(
            codes(&[0, 8, 0xff, 0xff], 1),
            Err(Malformed6::OptionOverrun)
        );
        assert_eq!(
            codes(&[0, 14, 0, 0, 0, 14, 0, 0], 1),
            Err(Malformed6::TooManyOptions)
        );
    }
}
