//! What the table tells others about connections coming and going: the state gauges (kept
//! in the striped counters) and an optional [`PairObserver`] (the NAT's per-address port
//! use and per-source quota), both kept up to date at the moment a connection's ORG half
//! is written or removed, so that nobody needs to walk the table to count.
//!
//! The rule: a connection is counted while its ORG half is LIVE. Every path that writes an
//! ORG half (insert, restore) adds it; every path that frees one (removal, eviction,
//! expiry, reaping, an orphaned lone half) retires it, once, in the thread that owns the
//! claim. A retired ORG half's meta word is sealed first (generation bumped by CAS), so a
//! state change racing the removal either lands before the seal (and is seen in the state
//! retired) or fails: the gauges cannot drift.

use std::sync::Arc;

use super::engine::*;
use super::layout::*;
use super::stats::{Ctr, Tally};
use super::sync::Ordering::Relaxed;
use super::{ConnState, Dir, Session};

/// Told of every connection that starts or stops being in the table. Called on the packet
/// path of the thread that inserts or evicts (keep it to a few atomic operations), never
/// twice for one connection, never under a lock of the table's.
pub trait PairObserver: Send + Sync {
    /// A connection's ORG half was written (a new connection, or a restored ORG half).
    fn inserted(&self, s: &Session);
    /// A connection's ORG half was removed (removal, eviction, expiry, reaping).
    fn removed(&self, s: &Session);
}

impl Table {
    /// Attaches the observer (once; later calls return `false`). Connections already in
    /// the table (a resumed state file) are reported to it as inserted, by one walk (none
    /// for an empty table): call this before the workers start.
    pub fn attach_observer(&self, o: Arc<dyn PairObserver>) -> bool {
        if !self.is_empty() {
            let now = self.clock.load(super::sync::Ordering::Relaxed);
            for s in self.sessions(now) {
                o.inserted(&s);
            }
        }
        self.observer.set(o).is_ok()
    }

    /// Counts the ORG half just written from `s`'s data (insert, restore).
    #[inline]
    pub(super) fn born(&self, s: &Session) {
        self.ctr.add_state(s.state.code(), 1);
        if let Some(o) = self.observer.get() {
            o.inserted(s);
        }
    }

    /// Retires the connection of the claimed LIVE half `slot` (snapshot `s`, taken before
    /// the claim) whose claimed partner is `partner`: called once both are ours, before
    /// they are freed or reused. Does nothing if neither half is the ORG half (a lone REV
    /// half: its connection was retired with its ORG half).
    pub(super) fn retire(&self, slot: u32, s: &Snap, partner: Option<(u32, u64)>) {
        let org = match (s.dir(), partner) {
            (Dir::Org, _) => slot,
            (Dir::Rev, Some((p, _))) => p,
            (Dir::Rev, None) => return,
        };
        let meta = self.seal(org);
        let code = m_state_code(meta);
        self.ctr.add_state(code, -1);
        if let Some(o) = self.observer.get() {
            let mut snap = *s;
            snap.d[D_META] = merge_meta(s.meta(), self.pair_meta(slot, partner));
            let mut sess = Self::session_of(&snap, self.clock.load(super::sync::Ordering::Relaxed));
            sess.state = ConnState::from_code(code);
            o.removed(&sess);
        }
    }

    /// Removes expired connections among the `max_slots` slots from `from` on (wrapping
    /// back to 0 at the end of the table): the background sweep that keeps the gauges (and
    /// the observer's counts) from holding connections that ended by timeout but were
    /// never evicted. Returns where to go on next time and how many it removed. A few
    /// thousand slots at a time keep it off the workers' caches.
    pub fn reap(&self, from: u32, max_slots: u32, now: u32) -> (u32, usize) {
        let mut t = Tally::default();
        let start = if from >= self.nslots { 0 } else { from };
        let end = start.saturating_add(max_slots).min(self.nslots);
        let mut n = 0;
        for slot in start..end {
            // Most halves are neither free nor expired: tell them by their control and meta
            // words alone, without the seqlock read of the whole slot. A word read while a
            // writer changes the slot only delays or hastens the full check below, which
            // decides.
            let c = self.ctrl(slot).load(Relaxed);
            if c_free(c)
                || (!c_busy(c) && !self.expired(self.data(slot)[D_META].load(Relaxed), now))
            {
                continue;
            }
            let View::Live(s) = self.read_slot(slot) else {
                continue;
            };
            if !self.pair_expired(slot, &s, now) {
                continue;
            }
            let Some((mine, partner)) = self.claim_pair(slot, &s) else {
                continue;
            };
            // Ours now: still expired? (A packet may have refreshed it meanwhile.)
            let meta = self.pair_meta(slot, partner);
            if !self.expired(meta, now) {
                self.publish(slot, mine);
                if let Some((p, pb)) = partner {
                    self.publish(p, pb);
                }
                continue;
            }
            self.retire(slot, &s, partner);
            if let Some((p, pb)) = partner {
                self.free(p, pb);
                t.add_halves(-1);
            }
            self.free(slot, mine);
            t.add_halves(-1);
            t.inc(Ctr::Expire);
            n += 1;
        }
        self.ctr.flush(&t);
        (if end >= self.nslots { 0 } else { end }, n)
    }

    /// Live connections per state (ORG halves in the table; expired ones count until they
    /// are reaped, evicted or replaced). Constant time: read from the gauges.
    pub fn by_state(&self) -> Vec<(ConnState, u64)> {
        let g = self.ctr.by_state();
        ConnState::ALL
            .iter()
            .map(|&st| (st, g[st.code() as usize & (g.len() - 1)]))
            .collect()
    }
}
