//! DHCPv6 binding operations, through the v4 machinery: the state lock
//! and housekeeping, the queued writes and the group committer, the
//! answer settled only once its write is durable.

use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use ipnet::Ipv6Net;

use super::plan::{Ask, Change6, Plan6};
use super::record::{Key6, Record6};
use super::types::{Ia6Key, Ia6Op, Ia6Result, IaAsk};
use crate::ipam::commit::Ticket;
use crate::ipam::error::IpamError;
use crate::ipam::handle::Ipam;
use crate::ipam::model::{secs, Port};
use crate::ipam::state::State;
use crate::ipam::store::{Op, TreeId};

/// Live v6 offers at most: past it an Advertise names a free member
/// without holding it (the Request binds it if still free). Each offer
/// costs a slot and an IA key (~200 bytes), and a v6 pool, unlike a v4
/// one, does not bound how many clients ask.
pub const OFFER_CAP6: usize = 32_768;

/// What one message's IAs staged under the lock.
#[derive(Default)]
struct Staged {
    /// Keys written (to the store's queue, or without a committer to the
    /// store itself): the message waits for their ticket.
    keys: Vec<Key6>,
    /// A cached answer rests on a write not yet flushed.
    after_flush: bool,
}

/// Where the server's DUID is kept in the Meta tree.
pub const DUID_KEY: &[u8] = b"server_duid";

impl Ipam {
    /// One IA of one message: [`Ipam::ias6`] with one IA.
    pub async fn ia6(
        &self,
        subnet: &str,
        ia: &Ia6Key,
        op: Ia6Op,
        hints: &[Ipv6Net],
        port: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<Ia6Result, IpamError> {
        let mut all = self
            .ias6(subnet, &[IaAsk { ia, hints }], op, port, now)
            .await?;
        all.pop()
            .ok_or_else(|| IpamError::Storage("no answer for the IA".into()))
    }

    /// Every IA of one message, in order, under one lock and one group
    /// commit: an answer for each. `hints`: the addresses/prefixes the client
    /// put in the IA. `port`: the relay port identity (relay link-address
    /// and Interface-Id) for `max_leases_per_port` ([`Ipam::set_port_cap6`]).
    /// Commit/Extend/Release/Decline are durable on Ok; an error answers
    /// none (writes made for earlier IAs are still flushed). Cancel-safe:
    /// dropping it abandons the wait, never a write.
    pub async fn ias6(
        &self,
        subnet: &str,
        ias: &[IaAsk<'_>],
        op: Ia6Op,
        port: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<Vec<Ia6Result>, IpamError> {
        let cap = self.port_cap6.load(Relaxed);
        let port = port.map(|id| Port { id, cap });
        let now = secs(now);
        let mut out = Vec::with_capacity(ias.len());
        let (ticket, after_flush) = {
            let mut st = self.locked(now)?;
            let s = st
                .v6
                .subnet_ix(subnet)
                .ok_or_else(|| IpamError::UnknownSubnet(subnet.to_owned()))?;
            let mut staged = Staged::default();
            let planned: Result<(), IpamError> = ias.iter().try_for_each(|ask| {
                let a = Ask {
                    s,
                    ia: ask.ia,
                    hints: ask.hints,
                    port,
                    now,
                };
                let res = self.one6(&mut st, &a, op, &mut staged)?;
                out.push(res);
                Ok(())
            });
            // Writes staged before an error still go to the committer.
            let any = !staged.keys.is_empty();
            let ticket = any.then(|| self.submit6(&mut st, &staged.keys));
            if any {
                self.note_change(&st);
            }
            planned?;
            (ticket, staged.after_flush.then_some(st.epoch))
        };
        match ticket {
            Some(t) => self.wait(t).await?,
            None if after_flush.is_some() => self.flush().await?,
            None => {}
        }
        // A roll-back since may have taken a write a cached answer rests on.
        if after_flush.is_some_and(|epoch| self.lock().epoch != epoch) {
            return Err(IpamError::Storage("the lease's write was lost".into()));
        }
        Ok(out)
    }

    /// One IA under the lock: its answer; its writes staged in `staged`.
    fn one6(
        &self,
        st: &mut State,
        a: &Ask,
        op: Ia6Op,
        staged: &mut Staged,
    ) -> Result<Ia6Result, IpamError> {
        // A new IA past its client's cap: as if the pool were empty.
        if matches!(op, Ia6Op::Advertise | Ia6Op::Commit) && st.v6.over_ia_cap(a.ia) {
            return Ok(Ia6Result::Exhausted);
        }
        let view: &State = st;
        let read = |k| self.read6(view, k);
        let plan = match op {
            Ia6Op::Advertise => return self.advertise6(st, a),
            Ia6Op::Commit => view.plan_commit6(a, &read)?,
            Ia6Op::Extend => view.plan_extend6(a, &read)?,
            Ia6Op::Release => match view.plan_release6(a) {
                Some(changes) => Plan6::Write(changes, Ia6Result::Held(Vec::new())),
                None => {
                    let offered = st.v6.offer_of.get(a.ia).copied();
                    let Some(k) = offered else {
                        return Ok(Ia6Result::NoBinding);
                    };
                    st.v6.drop_offer(k);
                    self.note_change(st);
                    return Ok(Ia6Result::Held(Vec::new()));
                }
            },
            Ia6Op::Decline => match view.plan_decline6(a, &read)? {
                Some(c) => Plan6::Write(vec![c], Ia6Result::Held(Vec::new())),
                None => Plan6::Cached(Ia6Result::NoBinding, None),
            },
        };
        match plan {
            Plan6::Cached(res, key) => {
                let flushed = self.committer.flushed();
                let pending = key.and_then(|k| st.v6.pending.get(&k));
                staged.after_flush |= pending.is_some_and(|s| *s > flushed);
                Ok(res)
            }
            Plan6::Write(changes, res) => {
                self.stage6(st, &changes)?;
                staged.keys.extend(changes.iter().map(|c| c.key));
                Ok(res)
            }
        }
    }

    /// Solicit: the IA's live binding, else a free member held for
    /// `offer_hold` (memory only; not past [`OFFER_CAP6`] live offers).
    fn advertise6(&self, st: &mut State, a: &Ask) -> Result<Ia6Result, IpamError> {
        if let Some(k) = st.binding6(a.s, a.ia) {
            let t = st.v6.slot(k).map_or(0, |s| s.time);
            if t > a.now {
                return Ok(State::held6(k, t));
            }
        }
        let Some(k) = st.choose6(a) else {
            return Ok(Ia6Result::Exhausted);
        };
        // No offer that could not be bound: its Request needs a write.
        st.writable()?;
        let port = st.check_port6(a, k)?;
        let renewing = st.v6.offer_of.contains_key(a.ia);
        if renewing || st.v6.live_offers() < OFFER_CAP6 {
            let before = st.v6.next_deadline();
            let expires = a.now.saturating_add(st.tuning.offer_hold);
            st.v6.offer(k, a.ia, expires, a.now, port);
            if st.v6.next_deadline() < before {
                self.reaper_wake.notify_one();
            }
            self.note_change(st);
        }
        let valid = st.v6.subnets[a.s].spec.valid_secs();
        Ok(State::held6(k, a.now.saturating_add(valid)))
    }

    /// The stored binding on `k`, including writes still queued.
    pub(crate) fn read6(&self, st: &State, k: Key6) -> Result<Option<Record6>, IpamError> {
        let bytes = match st.v6.overlay.get(&k) {
            Some((_, queued)) => queued.clone(),
            None => self.store.get(TreeId::Leases6, &k.bytes())?,
        };
        bytes.map(|b| Record6::decode(&b)).transpose()
    }

    /// Writes v6 changes planned under the state lock as [`Ipam::write`]
    /// does v4 ones: store (queued) first, then memory, then a ticket.
    pub(crate) fn write6(
        &self,
        st: &mut State,
        changes: &[Change6],
        durable: bool,
    ) -> Result<Option<Ticket>, IpamError> {
        if changes.is_empty() {
            return Ok(None);
        }
        let queued = self.stage6(st, changes)?;
        if !(durable || queued) {
            return Ok(None);
        }
        let keys: Vec<Key6> = changes.iter().map(|c| c.key).collect();
        let ticket = self.submit6(st, &keys);
        Ok(durable.then_some(ticket))
    }

    /// Writes `changes` to the store (queued for the committer: true) and
    /// to the index; no ticket yet.
    fn stage6(&self, st: &mut State, changes: &[Change6]) -> Result<bool, IpamError> {
        if changes.is_empty() {
            return Ok(false);
        }
        st.writable()?;
        let queued = self.store_apply(st, State::ops6(changes))?;
        self.stats.ipam.writes_total.fetch_add(1, Relaxed);
        let before = st.v6.next_deadline();
        st.apply6(changes);
        if st.v6.next_deadline() < before {
            self.reaper_wake.notify_one();
        }
        Ok(queued)
    }

    /// A ticket for what is staged; `keys` are pending until it is flushed.
    fn submit6(&self, st: &mut State, keys: &[Key6]) -> Ticket {
        let ticket = self.committer.submit(st, &[], &self.stats);
        if st.v6.pending.len() > 4096 {
            let flushed = self.committer.flushed();
            st.v6.pending.retain(|_, s| *s > flushed);
        }
        let seq = st.seq;
        for k in keys {
            st.v6.pending.insert(*k, seq);
        }
        ticket
    }

    /// v6 housekeeping due at `now`: timed-out offers; ended bindings and
    /// quarantines removed (not waiting for a flush, as v4 expiry).
    pub(crate) fn maintain6(&self, st: &mut State, now: u32) -> Result<(), IpamError> {
        if st.v6.purge_offers(now) {
            self.note_change(st);
        }
        if now >= st.v6.next_expiry() && st.writable().is_ok() {
            let view: &State = st;
            let changes = view.plan_expiry6(now, &|k| self.read6(view, k))?;
            self.write6(st, &changes, false)?;
            self.note_change(st);
        }
        Ok(())
    }

    /// The most v6 bindings and offers one relay port (relay address +
    /// Interface-Id) may hold; 0: no cap. `[dhcp] max_leases_per_port`.
    pub fn set_port_cap6(&self, cap: u32) {
        self.port_cap6.store(cap, Relaxed);
    }

    /// The server's DUID: a DUID-UUID (RFC 6355) made once and kept in the
    /// store's Meta tree. Blocking (one flush the first time).
    pub fn server_duid(&self) -> Result<Vec<u8>, IpamError> {
        let (_applying, st) = self.lock_store();
        if let Some(d) = self.store.get(TreeId::Meta, DUID_KEY)? {
            return Ok(d);
        }
        st.writable()?;
        let mut uuid = [0u8; 16];
        getrandom::fill(&mut uuid)
            .map_err(|e| IpamError::Storage(format!("server DUID: getrandom: {e}")))?;
        // A version-4 (random) UUID.
        uuid[6] = (uuid[6] & 0x0f) | 0x40;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        let mut duid = vec![0, 4];
        duid.extend_from_slice(&uuid);
        self.store.apply(&[Op {
            tree: TreeId::Meta,
            key: DUID_KEY.to_vec(),
            value: Some(duid.clone()),
        }])?;
        self.store.flush()?;
        Ok(duid)
    }

    /// The text of a v6 binding's key: the address, or the prefix.
    pub fn key6_text(prefix: Ipv6Net) -> String {
        if prefix.prefix_len() == 128 {
            prefix.addr().to_string()
        } else {
            prefix.to_string()
        }
    }
}
