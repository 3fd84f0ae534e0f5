//! Who answers a client: rendezvous (highest random weight) hashing of the
//! client key over the live nodes, in the spirit of RFC 3074's load
//! balancing: every node computes the same answer from the same member
//! list, and a node leaving moves only its own clients.

use crate::client::ClientKey;

/// A well-mixed 64-bit weight of `(node, client)`: FNV-1a, then the
/// splitmix64 finaliser (FNV alone mixes short keys poorly).
pub fn weight(node: &str, client: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0xff]).chain(client.iter().copied()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The member `client` maps to (`None`: no members).
pub fn owner<'a>(members: &'a [String], client: &ClientKey) -> Option<&'a str> {
    let mut text = Vec::with_capacity(32);
    client.write_text(&mut text);
    members
        .iter()
        .max_by_key(|m| (weight(m, &text), m.as_str()))
        .map(String::as_str)
}

/// Whether `me` answers `client` among `members`.
pub fn answers(members: &[String], me: &str, client: &ClientKey) -> bool {
    owner(members, client) == Some(me)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u32) -> ClientKey {
        let b = i.to_be_bytes();
        ClientKey::Mac([2, 0, b[0], b[1], b[2], b[3]])
    }

    /// Clients spread evenly, and a node leaving moves only its clients.
    #[test]
    fn spread_is_even_and_a_leaving_node_moves_only_its_own_clients() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let two: Vec<String> = ["a", "c"].map(String::from).to_vec();
        let mut count = [0u32; 3];
        for i in 0..3000 {
            let c = mac(i);
            let o = owner(&three, &c).unwrap();
            count[usize::from(o.as_bytes()[0] - b'a')] += 1;
            if o != "b" {
                assert_eq!(owner(&two, &c), Some(o), "client {i} moved");
            }
        }
        assert!(count.iter().all(|n| (800..1200).contains(n)), "{count:?}");
    }
}
