//! Finding a key: the scan of its two buckets (trusted only when no cuckoo move of its
//! bucket pair ran meanwhile) and the partner of a half.

use super::engine::*;
use super::layout::*;
use super::sync::Ordering::{Acquire, Relaxed, SeqCst};
use super::sync::{fence, spin_loop, AtomicU64};

impl Table {
    /// The move stripe of a key (the same for both of its buckets, see [`Table::moves`]).
    #[inline(always)]
    pub(super) fn stripe(&self, loc: &Loc) -> &AtomicU64 {
        &self.moves[(loc.b1 ^ loc.b2) as usize % MOVE_STRIPES]
    }

    /// Finds the LIVE half keyed by `(k0, k1)` (acquire loads).
    #[inline]
    pub(super) fn find(&self, loc: &Loc, k0: u64, k1: u64) -> Find {
        self.scan_stable(loc, k0, k1, [NO_SLOT; 2])
    }

    /// Post-claim conflict scan, skipping our own claims. The `SeqCst` fence between our
    /// claims (made before the call) and the scan's loads is what makes two inserters of one
    /// key see each other (Dekker): of two such fences one is first in the single total
    /// order, and the scan after the later one sees the claim before the earlier one.
    pub(super) fn rescan(&self, loc: &Loc, k0: u64, k1: u64, mine: [u32; 2]) -> Find {
        fence(SeqCst);
        self.scan_stable(loc, k0, k1, mine)
    }

    /// [`Table::rescan`] of an insert's two keys (`a` and `b`, each located and packed)
    /// with one fence: both claims were made before it, so each scan after it is ordered
    /// after both. Whether neither key is held by anyone else.
    pub(super) fn rescan_clear(
        &self,
        a: (&Loc, u64, u64),
        b: (&Loc, u64, u64),
        mine: [u32; 2],
    ) -> bool {
        fence(SeqCst);
        matches!(self.scan_stable(a.0, a.1, a.2, mine), Find::Absent)
            && matches!(self.scan_stable(b.0, b.1, b.2, mine), Find::Absent)
    }

    /// Scans both buckets of a key; an `Absent` answer is trusted only if no cuckoo move of
    /// a key of this bucket pair was in flight or completed during the scan (a key moved from
    /// the second bucket into the first between the two scans would otherwise look absent).
    /// Otherwise the scan is repeated a few times, then reported as BUSY.
    #[inline(always)]
    pub(super) fn scan_stable(&self, loc: &Loc, k0: u64, k1: u64, mine: [u32; 2]) -> Find {
        let m1 = self.stripe(loc).load(Acquire);
        match self.scan(loc, k0, k1, mine) {
            Find::Absent => {}
            other => return other,
        }
        if self.no_move_since(loc, m1) {
            Find::Absent
        } else {
            self.scan_after_move(loc, k0, k1, mine)
        }
    }

    /// Whether `loc`'s key is absent as [`Table::scan_stable`] would tell it when no way of
    /// either bucket carries the key's tag: no cuckoo move of its stripe in flight nor run
    /// across the two loads. `false` says nothing (a tag matched, or a move ran): scan.
    #[inline(always)]
    pub(super) fn absent_by_tags(&self, loc: &Loc) -> bool {
        let m1 = self.stripe(loc).load(Acquire);
        let tag = tag_of(loc.fp);
        let (Some(w1), Some(w2)) = (
            self.tags.get(loc.b1 as usize),
            self.tags.get(loc.b2 as usize),
        ) else {
            return false;
        };
        let m = tag_matches(w1.load(Acquire), tag);
        #[cfg(test)]
        if let Some(h) = BETWEEN_SCANS.with(|h| h.borrow_mut().take()) {
            h(self);
        }
        m | tag_matches(w2.load(Acquire), tag) == 0 && self.no_move_since(loc, m1)
    }

    /// Whether no move of `loc`'s stripe was in flight when it read `m1` nor started or
    /// ended since. The bucket loads before it are acquire (or SeqCst) loads, so this load
    /// cannot be performed before them.
    #[inline(always)]
    fn no_move_since(&self, loc: &Loc, m1: u64) -> bool {
        m1 as u32 == 0 && self.stripe(loc).load(Acquire) == m1
    }

    /// The rare path of [`Table::scan_stable`]: a move ran across the scan.
    #[cold]
    #[inline(never)]
    fn scan_after_move(&self, loc: &Loc, k0: u64, k1: u64, mine: [u32; 2]) -> Find {
        for _ in 1..MOVE_RESCANS {
            spin_loop();
            let m1 = self.stripe(loc).load(Acquire);
            match self.scan(loc, k0, k1, mine) {
                Find::Absent => {}
                other => return other,
            }
            if self.no_move_since(loc, m1) {
                return Find::Absent;
            }
        }
        Find::Busy
    }

    #[inline(always)]
    pub(super) fn scan(&self, loc: &Loc, k0: u64, k1: u64, mine: [u32; 2]) -> Find {
        let mut busy = false;
        let tag = tag_of(loc.fp);
        for b in [loc.b1, loc.b2] {
            // Only the ways whose tag matches: every way holding the key (or claimed for it
            // by an inserter whose claim this scan must see) carries its tag, see
            // `Table::tags`. A way is addressed only once its tag matched (most scans of a
            // key that is absent match none).
            let mut m = tag_matches(self.tags[b as usize].load(Acquire), tag);
            while m != 0 {
                let (w, rest) = next_way(m);
                m = rest;
                let slot = b * WAYS as u32 + w as u32;
                // The caller's own claims carry the tag too: passed over unread.
                if mine.contains(&slot) {
                    continue;
                }
                let c = self.way(slot).ctrl.load(Acquire);
                if c_fp(c) != loc.fp {
                    continue;
                }
                if c_busy(c) {
                    busy = true;
                    continue;
                }
                match self.read_live(slot, c) {
                    Some(s) if s.key_is(k0, k1) => return Find::Found(slot, s),
                    Some(_) => {}
                    None => busy = true,
                }
            }
            #[cfg(test)]
            if b == loc.b1 {
                if let Some(h) = BETWEEN_SCANS.with(|h| h.borrow_mut().take()) {
                    h(self);
                }
            }
        }
        if busy {
            Find::Busy
        } else {
            Find::Absent
        }
    }

    /// Locates the partner of the LIVE half `slot` (snapshot `s`), fixing a stale hint.
    pub(super) fn partner_of(&self, slot: u32, s: &Snap) -> Partner {
        let pk = s.xlate().reversed();
        let want_x = s.key().reversed();
        let pdir = s.dir().flip();
        let (p0, p1) = pack(&pk);
        let is_partner = |q: &Snap| q.key_is(p0, p1) && q.dir() == pdir && q.xlate_is(&want_x);
        let hint = s.partner();
        if hint < self.nslots && hint != slot {
            if let View::Live(q) = self.read_slot(hint) {
                if is_partner(&q) {
                    return Partner::Ok(hint, q);
                }
            }
        }
        match self.find(&self.locate(p0, p1), p0, p1) {
            Find::Found(q, qs) if q != slot && is_partner(&qs) => {
                // Repair the hint; if the word changed meanwhile, leave it (it is only a hint).
                let old = s.d[D_X1];
                let _ = self.data(slot)[D_X1].compare_exchange(
                    old,
                    (old & LOW32) | ((q as u64) << 32),
                    Relaxed,
                    Relaxed,
                );
                Partner::Ok(q, qs)
            }
            Find::Found(..) => Partner::Conflict,
            Find::Busy => Partner::Busy,
            Find::Absent => Partner::Missing,
        }
    }
}
