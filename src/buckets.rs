//! The 4,096 buckets a MAC address falls into, by a hash simple enough for a
//! classic BPF socket filter (32-bit multiplies and shifts): a cluster node
//! answers the MAC-keyed clients of the buckets it holds, and its kernel
//! drops the other nodes' before they are queued or copied. A leaf: it
//! imports nothing of the crate.

/// Bits of a bucket number: enough buckets that a few nodes holding them
/// by rendezvous get shares within a few percent of each other.
pub const BITS: u32 = 12;
/// Buckets in all.
pub const COUNT: usize = 1 << BITS;
/// Words of a [`Buckets`] set.
pub const WORDS: usize = COUNT / 32;

/// Multipliers of the bucket hash (odd, well-mixed 32-bit constants).
pub const K1: u32 = 0x9e37_79b1;
pub const K2: u32 = 0x85eb_ca6b;

/// The bucket of `mac`: its first four bytes times [`K1`], xor its last two,
/// times [`K2`], top [`BITS`] bits. The socket filter computes the same.
pub fn bucket(mac: [u8; 6]) -> u16 {
    let head = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let tail = u32::from(u16::from_be_bytes([mac[4], mac[5]]));
    ((head.wrapping_mul(K1) ^ tail).wrapping_mul(K2) >> (32 - BITS)) as u16
}

/// A set of buckets: bucket `b` is bit `b % 32` of word `b / 32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets(pub [u32; WORDS]);

impl Buckets {
    pub const ALL: Self = Self([u32::MAX; WORDS]);
    pub const NONE: Self = Self([0; WORDS]);

    pub fn insert(&mut self, b: u16) {
        self.0[usize::from(b >> 5) % WORDS] |= 1 << (b & 31);
    }

    pub fn contains(&self, b: u16) -> bool {
        self.0[usize::from(b >> 5) % WORDS] >> (b & 31) & 1 == 1
    }

    pub fn holds(&self, mac: [u8; 6]) -> bool {
        self.contains(bucket(mac))
    }

    pub fn is_all(&self) -> bool {
        *self == Self::ALL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sequential MACs (as a load generator or one vendor's NICs make them)
    /// spread evenly over the buckets.
    #[test]
    fn sequential_macs_spread_evenly() {
        let mut count = vec![0u32; COUNT];
        for i in 0..COUNT as u32 * 64 {
            let b = i.to_be_bytes();
            count[usize::from(bucket([2, 0, b[0], b[1], b[2], b[3]]))] += 1;
        }
        let (min, max) = (count.iter().min(), count.iter().max());
        assert!(min >= Some(&32) && max <= Some(&96), "{min:?}..{max:?}");
    }

    #[test]
    fn a_set_holds_what_was_inserted() {
        let mut s = Buckets::NONE;
        s.insert(0);
        s.insert(37);
        s.insert(4095);
        assert!(s.contains(0) && s.contains(37) && s.contains(4095));
        assert!(!s.contains(1) && !s.contains(36) && !s.contains(4094));
        assert!(Buckets::ALL.is_all() && !s.is_all());
    }
}
