//! How many IAs each client holds, bound or offered, per type: a forged
//! DUID inventing IAID after IAID (hundreds per packet, or packet after
//! packet) gets no more than [`IA_CAP6`] of each.

use super::index::V6State;
use super::record::Key6;
use super::types::Ia6Key;

/// IAs of one type one client (DUID) may hold at once, bound or offered:
/// as many as one message may carry (`dhcp6::wire::MAX_IAS`).
pub const IA_CAP6: u32 = 8;

impl V6State {
    /// Whether `ia` holds a binding or a live offer.
    fn tracked(&self, ia: &Ia6Key) -> bool {
        self.ias.contains_key(ia) || self.offer_of.contains_key(ia)
    }

    /// Counts `ia` for its client if it started or stopped holding
    /// something (it held something: `was`).
    fn retrack(&mut self, ia: &Ia6Key, was: bool) {
        let now = self.tracked(ia);
        if now == was {
            return;
        }
        let kind = ia.kind as usize;
        if now {
            // The client key is cloned only for a client's first IA.
            match self.held_by.get_mut(&ia.client) {
                Some(n) => n[kind] += 1,
                None => {
                    let mut n = [0; 2];
                    n[kind] = 1;
                    self.held_by.insert(ia.client.clone(), n);
                }
            }
        } else if let Some(n) = self.held_by.get_mut(&ia.client) {
            n[kind] = n[kind].saturating_sub(1);
            if *n == [0, 0] {
                self.held_by.remove(&ia.client);
            }
        }
    }

    /// Records `ia`'s live offer on `k`.
    pub fn offer_ia(&mut self, ia: &Ia6Key, k: Key6) {
        let was = self.tracked(ia);
        self.offer_of.insert(ia.clone(), k);
        self.retrack(ia, was);
    }

    /// `ia` holds no offer any more.
    pub fn unoffer_ia(&mut self, ia: &Ia6Key) {
        let was = self.tracked(ia);
        self.offer_of.remove(ia);
        self.retrack(ia, was);
    }

    /// Whether a binding or offer for `ia` would put its client past
    /// [`IA_CAP6`] IAs of its type (one the IA holds already is not new).
    pub fn over_ia_cap(&self, ia: &Ia6Key) -> bool {
        !self.tracked(ia)
            && self
                .held_by
                .get(&ia.client)
                .is_some_and(|n| n[ia.kind as usize] >= IA_CAP6)
    }

    /// Records `ia` as holding the bound record `k`.
    pub fn bind_ia(&mut self, ia: &Ia6Key, k: Key6) {
        let was = self.tracked(ia);
        self.ias.insert(ia.clone(), k);
        self.retrack(ia, was);
    }

    /// `ia` holds no bound record any more.
    pub fn unbind_ia(&mut self, ia: &Ia6Key) {
        let was = self.tracked(ia);
        self.ias.remove(ia);
        self.retrack(ia, was);
    }
}
