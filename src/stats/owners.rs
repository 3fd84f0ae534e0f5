//! How RSS divides among the process's owners: the pure arithmetic over
//! what the governor measured (the owners' resident pages, jemalloc's page counts).

/// The measured figures one division starts from, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measured {
    pub rss: u64,
    /// jemalloc: its metadata (resident) and its dirty (freed, unpurged) pages.
    pub metadata: u64,
    pub dirty: u64,
    /// The resident pages each owner's arena has in use (`crate::heap`).
    pub store: u64,
    pub clients: u64,
    pub dhcp: u64,
    pub gateway: u64,
    /// The pages in use in jemalloc's automatic arenas (unowned).
    pub unowned: u64,
}

/// RSS by owner: `vpcbox_memory_bytes{owner}`. The seven parts add up to
/// RSS: each owner is the resident pages its arena has in use (pages
/// never written do not count), `allocator_retained` and
/// `allocator_dirty` the allocator's own, and `other` the rest (never
/// below 0: figures read at slightly different instants).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryByOwner {
    /// The IPAM: sled's page cache and allocations, the lease index.
    pub store: u64,
    /// The client table, the quota maps, the isolation set.
    pub clients: u64,
    /// The gateway's threads: buffered request and response bytes, its
    /// connections' h2 and TLS state, its upstream clients.
    pub gateway_buffers: u64,
    /// The DHCP server: queued packets, operations in flight and coalesced, replies.
    pub dhcp_queues: u64,
    /// jemalloc's metadata, resident.
    pub allocator_retained: u64,
    /// Freed heap pages jemalloc has not yet returned to the OS.
    pub allocator_dirty: u64,
    /// The rest of RSS: the unowned heap (`unowned_heap`), code, stacks, libc.
    pub other: u64,
    /// Of `other`, the pages in use in jemalloc's automatic arenas.
    pub unowned_heap: u64,
}

impl MemoryByOwner {
    /// The `owner` label values in order, as `/metrics` and `vpcbox status` show them.
    pub const LABELS: [&'static str; 7] = [
        "store",
        "clients",
        "gateway_buffers",
        "dhcp_queues",
        "allocator_retained",
        "allocator_dirty",
        "other",
    ];

    /// Divides `m.rss`.
    pub fn divide(m: &Measured) -> Self {
        let owned = m.store + m.clients + m.gateway + m.dhcp;
        Self {
            store: m.store,
            clients: m.clients,
            gateway_buffers: m.gateway,
            dhcp_queues: m.dhcp,
            allocator_retained: m.metadata,
            allocator_dirty: m.dirty,
            other: m.rss.saturating_sub(owned + m.metadata + m.dirty),
            unowned_heap: m.unowned,
        }
    }

    /// `(label, bytes)` in [`Self::LABELS`] order.
    pub fn labelled(&self) -> [(&'static str, u64); 7] {
        let v = [
            self.store,
            self.clients,
            self.gateway_buffers,
            self.dhcp_queues,
            self.allocator_retained,
            self.allocator_dirty,
            self.other,
        ];
        let mut out = [("", 0); 7];
        for (i, (l, b)) in Self::LABELS.iter().zip(v).enumerate() {
            out[i] = (l, b);
        }
        out
    }

    /// The parts that are jemalloc's heap: the owners, the allocator's
    /// own pages and the unowned heap.
    pub fn heap_total(&self) -> u64 {
        self.store
            + self.clients
            + self.gateway_buffers
            + self.dhcp_queues
            + self.allocator_retained
            + self.allocator_dirty
            + self.unowned_heap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn measured() -> Measured {
        Measured {
            rss: 100 * MIB,
            metadata: 4 * MIB,
            dirty: 8 * MIB,
            store: 20 * MIB,
            clients: 2 * MIB,
            dhcp: 3 * MIB,
            gateway: 10 * MIB,
            unowned: 15 * MIB,
        }
    }

    #[test]
    fn the_parts_add_up_to_rss() {
        let d = MemoryByOwner::divide(&measured());
        let sum: u64 = d.labelled().iter().map(|(_, b)| b).sum();
        assert_eq!(sum, 100 * MIB);
        assert_eq!(d.allocator_retained, 4 * MIB);
        assert_eq!(d.gateway_buffers, 10 * MIB);
        assert_eq!(
            d.other,
            100 * MIB - 20 * MIB - 2 * MIB - 10 * MIB - 3 * MIB - 12 * MIB
        );
        assert_eq!(
            d.heap_total(),
            20 * MIB + 2 * MIB + 10 * MIB + 3 * MIB + 12 * MIB + 15 * MIB
        );
    }

    #[test]
    fn figures_from_different_instants_never_go_negative() {
        let m = Measured {
            rss: 10 * MIB,
            ..measured()
        };
        let d = MemoryByOwner::divide(&m);
        assert_eq!(d.other, 0);
        assert_eq!(d.gateway_buffers, 10 * MIB);
    }

    #[test]
    fn labels_follow_the_documented_order() {
        let d = MemoryByOwner::divide(&measured());
        let labels: Vec<&str> = d.labelled().iter().map(|(l, _)| *l).collect();
        assert_eq!(labels, MemoryByOwner::LABELS);
        assert_eq!(d.labelled()[0].1, d.store);
    }
}
