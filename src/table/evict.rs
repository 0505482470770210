//! Obtaining a slot for a new half: a free way, an evicted pair (victims scored by
//! `policy` and scored again once claimed), or a cuckoo move of a half to its other bucket.

use super::engine::*;
use super::layout::*;
use super::seqlock::backoff;
use super::stats::{Ctr, Tally};
use super::sync::Ordering::{Acquire, Relaxed, Release, SeqCst};

/// Where a claim puts a half in its bucket (see [`Placement::order`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(super) enum Placement {
    /// A half that packets look up, a session's: first the four ways that sit within one
    /// cache line (ways 0, 3, 4, 7: a way is 48 B, its control word then its data), then
    /// the four that straddle two, so that most hits read one line.
    Hot = 0,
    /// A half of an anchor (a mapping or filter entry, [`FLAG_ANCHOR`]), looked up when a
    /// session is made and when one refreshes its pair (once per refresh epoch), not by
    /// every packet: first the four ways that straddle two lines, leaving the single-line
    /// ones to sessions.
    Cold = 1,
}

impl Placement {
    /// The placement of a half whose meta word (or flags) is `meta`.
    #[inline(always)]
    pub(super) const fn of(meta: u64) -> Placement {
        if meta & FLAG_ANCHOR != 0 {
            Placement::Cold
        } else {
            Placement::Hot
        }
    }

    /// The order in which a bucket's free ways are taken.
    #[inline(always)]
    const fn order(self) -> &'static [usize; WAYS] {
        &ORDERS[self as usize]
    }

    /// For every mask of free ways (bit `w` for way `w`), the same ways in this order (bit
    /// `i` for way `order()[i]`).
    #[inline(always)]
    const fn in_order(self) -> &'static [u8; 256] {
        &IN_ORDERS[self as usize]
    }
}

#[cfg(not(loom))]
const HOT_ORDER: [usize; WAYS] = [0, 3, 4, 7, 1, 2, 5, 6];
#[cfg(not(loom))]
const COLD_ORDER: [usize; WAYS] = [1, 2, 5, 6, 0, 3, 4, 7];
#[cfg(loom)]
const HOT_ORDER: [usize; WAYS] = [0, 1];
#[cfg(loom)]
const COLD_ORDER: [usize; WAYS] = [1, 0];

// Each order is a permutation of the ways; the hot order's first four, and only those, lie
// within one line (a bucket starts on a line), and the cold order takes the others first.
#[cfg(not(loom))]
const _: () = {
    let size = std::mem::size_of::<Way>();
    let (mut hot, mut cold) = (0u32, 0u32);
    let mut i = 0;
    while i < WAYS {
        let (h, c) = (HOT_ORDER[i], COLD_ORDER[i]);
        hot |= 1 << h;
        cold |= 1 << c;
        assert!(((h * size) % 64 + size <= 64) == (i < 4));
        assert!(((c * size) % 64 + size <= 64) == (i >= 4));
        i += 1;
    }
    assert!(hot == (1 << WAYS) - 1 && cold == (1 << WAYS) - 1);
};

/// Set bits of every 8-bit mask (free ways of a bucket): without the `popcnt` instruction,
/// which the x86-64 baseline lacks, `count_ones` is a dozen instructions.
const FREE_COUNT: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u32).count_ones() as u8;
        i += 1;
    }
    t
};

const _: () = assert!(WAYS <= 8);

/// For every mask of free ways (bit `w` for way `w`), the same ways in `order` (bit `i`
/// for way `order[i]`).
const fn in_order(order: &[usize; WAYS]) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut m = 0;
    while m < 256 {
        let mut i = 0;
        while i < WAYS {
            if m & (1 << order[i]) != 0 {
                t[m] |= 1 << i;
            }
            i += 1;
        }
        m += 1;
    }
    t
}

/// Half a bucket's ways: in a full table a victim search scores one half of the first
/// bucket before the rest (see [`Table::pick_victim`]). Ways 0–3 lie on a bucket's first
/// three lines, ways 4–7 on its last three (48-byte ways, 64-byte lines).
const HALF: usize = WAYS / 2;
/// The fingerprint bit that picks which half a victim search samples first (not a bit of
/// the tag, bits 24–31, nor of the epoch phase, bits 1–3).
const SAMPLE_BIT: u32 = 1 << 4;

#[cfg(not(loom))]
const _: () = assert!(HALF * std::mem::size_of::<Way>() == 3 * 64);

/// The ways of its first bucket that a victim search for `loc` scores first in a full
/// table (see [`Table::pick_victim`]).
#[inline(always)]
pub(super) fn sampled_half(loc: &Loc) -> std::ops::Range<usize> {
    let first = if loc.fp & SAMPLE_BIT != 0 { HALF } else { 0 };
    first..first + HALF
}

/// The best victim of a search so far: a score is never 0 (its class is at least 1, see
/// `policy::score`), so 0 stands for none yet; `busy`: a way was skipped as BUSY.
struct Best {
    score: u64,
    slot: u32,
    ctrl: u64,
    busy: bool,
}

impl Best {
    const NONE: Best = Best {
        score: 0,
        slot: NO_SLOT,
        ctrl: 0,
        busy: false,
    };
}

/// Alternate buckets that the cuckoo step of a claim with nothing evictable in its two
/// buckets (under the default policy, which never evicts a protected pair) scores for an
/// expendable pair, six lines each, of the up to sixteen its candidates lead to; the
/// others are only checked for a free way (their tag word). Scoring every alternate made
/// each new connection that a table full of established ones refuses read about a
/// hundred lines, and a flood meets that path on every packet (the engine bench's
/// `new_refused_pipelined` at 1 M connections: 0.17–0.18 M SYNs/s scoring all, 0.38–0.42
/// with four). The `--evict-established` policy's step, which saves a protected pair
/// from eviction, scores them all.
pub(super) const EXPENDABLE_SCANS: u32 = 4;

#[cfg(test)]
thread_local! {
    /// Buckets this thread's cuckoo steps scored for an expendable pair (tests).
    pub(super) static EXPENDABLE_SCORED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The orders, indexed by [`Placement`].
const ORDERS: [[usize; WAYS]; 2] = [HOT_ORDER, COLD_ORDER];
const IN_ORDERS: [[u8; 256]; 2] = [in_order(&HOT_ORDER), in_order(&COLD_ORDER)];

impl Table {
    /// The free ways of bucket `b` as its tag word tells them (tag 0, see [`Table::tags`]),
    /// as a mask in `place`'s order: bit `i` set if way `place.order()[i]` looks free. Only
    /// the tag word is read: a claim loads the way's control word and checks it by its CAS.
    #[inline(always)]
    fn free_ways(&self, b: u32, place: Placement) -> u32 {
        // The high bit of each free way's byte, gathered into the low byte (bit `w` from
        // bit `8w + 7`).
        let z = tag_matches(self.tags[b as usize].load(Relaxed), 0) >> 7;
        place.in_order()[(z.wrapping_mul(0x0102_0408_1020_4080) >> 56) as usize] as u32
    }

    /// The way a claim for `loc` would try first for a half placed as `place`, as the tag
    /// words tell it now (see [`Table::claim_slot`]): the first free way, in `place`'s
    /// order, of the bucket with more free ways. `None` if both look full.
    #[inline]
    pub(super) fn first_claim(&self, loc: &Loc, place: Placement) -> Option<u32> {
        let (f1, f2) = (self.free_ways(loc.b1, place), self.free_ways(loc.b2, place));
        let (b, free) = if FREE_COUNT[f2 as usize] > FREE_COUNT[f1 as usize] {
            (loc.b2, f2)
        } else {
            (loc.b1, f1)
        };
        (free != 0).then(|| b * WAYS as u32 + place.order()[free.trailing_zeros() as usize] as u32)
    }

    /// Eviction score of a half under this table's timeouts and policy (see
    /// [`super::policy::score`]).
    #[inline]
    pub(super) fn victim_score(&self, meta: u64, now: u32) -> Option<(u64, bool)> {
        super::policy::score(meta, now, self.timeout_of(meta), self.evict_protected)
    }

    /// The victim for a claim of `loc` whose buckets are full: the best-scored pair with a
    /// half in either bucket (never `exclude`), unless a good enough one turns up first.
    ///
    /// - While the table has room (a cuckoo step failed for this key): the first bucket's
    ///   eight ways are scored, then the second's unless an expired pair turned up, which
    ///   ends no connection.
    /// - In a full table, where every new pair evicts one (a SYN flood): half of the first
    ///   bucket is scored first, four ways on three lines (ways 0–3 or 4–7, by a bit of the
    ///   new key's fingerprint), and its best is taken if it never carried a reply (or has
    ///   expired); otherwise the other half, then the second bucket, until one is found.
    ///   A sample rather than the whole bucket, as conntrack's early drop takes the first
    ///   unassured entry of a chain: the oldest never-assured pair of four ways instead of
    ///   eight, for three lines read instead of six (the misses that bound a flood's rate).
    ///
    /// Assured pairs are compared across both buckets as ever.
    pub(super) fn pick_victim(&self, loc: &Loc, now: u32, exclude: u32) -> Victim {
        let mut best = Best::NONE;
        if self.ctr.table_full() {
            let first = sampled_half(loc);
            let second = HALF - first.start;
            let stages = [
                (loc.b1, first),
                (loc.b1, second..second + HALF),
                (loc.b2, 0..WAYS),
            ];
            for (b, ways) in stages {
                self.score_ways(b, ways, now, exclude, &mut best);
                if best.score >= UNASSURED_MIN_SCORE {
                    break;
                }
            }
        } else {
            for b in [loc.b1, loc.b2] {
                self.score_ways(b, 0..WAYS, now, exclude, &mut best);
                if best.score >= EXPIRED_MIN_SCORE {
                    break;
                }
            }
        }
        if best.score != 0 {
            Victim::Some {
                slot: best.slot,
                ctrl: best.ctrl,
                score: best.score,
            }
        } else if best.busy {
            Victim::AllBusy
        } else {
            Victim::None
        }
    }

    /// Scores the ways `ways` of bucket `b` (never `exclude`) into `best`.
    #[inline(always)]
    fn score_ways(
        &self,
        b: u32,
        ways: std::ops::Range<usize>,
        now: u32,
        exclude: u32,
        best: &mut Best,
    ) {
        let bk = &self.buckets[b as usize];
        for w in ways {
            let Some(way) = bk.ways.get(w) else {
                continue;
            };
            let slot = b * WAYS as u32 + w as u32;
            if slot == exclude {
                continue;
            }
            let c = way.ctrl.load(Acquire);
            if c_busy(c) {
                best.busy = true;
                continue;
            }
            if !c_live(c) {
                continue;
            }
            let meta = way.data[D_META].load(Relaxed);
            if let Some((score, _)) = self.victim_score(meta, now) {
                if score > best.score {
                    (best.score, best.slot, best.ctrl) = (score, slot, c);
                }
            }
        }
    }

    /// Obtains a BUSY slot carrying `loc.fp` in one of `loc`'s buckets for a half placed as
    /// `place`: a free way, or the way of an evicted pair. Never touches `exclude`.
    #[inline(always)]
    pub(super) fn claim_slot(
        &self,
        loc: &Loc,
        place: Placement,
        now: u32,
        exclude: u32,
        t: &mut Tally,
    ) -> Claim {
        for round in 0..CLAIM_ATTEMPTS {
            if round > 0 {
                backoff(round);
            }
            // The less loaded bucket, ties to the first (balanced allocation: keeps buckets
            // from filling up long before the table does; at low load most keys sit in b1).
            // Each bucket's free ways are read once as a mask (from its tag word), counted,
            // then claimed from in claim order (a word that changed since fails its claim's
            // CAS).
            let (f1, f2) = (self.free_ways(loc.b1, place), self.free_ways(loc.b2, place));
            let order = if FREE_COUNT[f2 as usize] > FREE_COUNT[f1 as usize] {
                [(loc.b2, f2), (loc.b1, f1)]
            } else {
                [(loc.b1, f1), (loc.b2, f2)]
            };
            for (b, mut free) in order {
                while free != 0 {
                    let w = place.order()[free.trailing_zeros() as usize];
                    free &= free - 1;
                    let slot = b * WAYS as u32 + w as u32;
                    let c = self.ctrl(slot).load(Relaxed);
                    if slot != exclude && c_free(c) && self.try_claim(slot, c, loc.fp) {
                        return Claim::Got(slot, c_next(c, loc.fp));
                    }
                }
            }
            // Both buckets full: one cuckoo step into a free way of a moved half's other
            // bucket ends nothing, and costs less than scoring all 16 ways for a victim
            // (expired pairs left in place are the background sweep's, see `Table::reap`).
            // Unless recent steps failed too often (a full table, where every new pair
            // evicts one anyway): then only some claims try it (see `Counters::cuckoo_step`).
            if let Some(got) = self
                .ctr
                .cuckoo_step(|| self.relocate(loc, now, Room::Free, 0, t))
            {
                return Claim::Got(got.0, got.1);
            }
            match self.pick_victim(loc, now, exclude) {
                Victim::None => {
                    // Nothing evictable under the policy: a cuckoo step may still make room,
                    // into an alternate bucket with a free way or an expendable pair; the
                    // latter sought in a few alternates only (see `EXPENDABLE_SCANS`).
                    let scans = EXPENDABLE_SCANS;
                    return match self.relocate(loc, now, Room::FreeOrExpendable, scans, t) {
                        Some((slot, c)) => Claim::Got(slot, c),
                        None => Claim::Full,
                    };
                }
                Victim::AllBusy => continue,
                Victim::Some {
                    slot: v,
                    ctrl: c,
                    score,
                } => {
                    if score < PROTECTED_MAX_SCORE {
                        // Only protected pairs here: a cuckoo step may still make room by
                        // evicting an expendable pair in another bucket instead.
                        // Every alternate is scored: the step saves a protected pair.
                        let scans = u32::MAX;
                        let room = Room::FreeOrExpendable;
                        if let Some(got) = self.relocate(loc, now, room, scans, t) {
                            return Claim::Got(got.0, got.1);
                        }
                    }
                    let Some(s) = self.read_live(v, c) else {
                        continue;
                    };
                    #[cfg(test)]
                    if let Some(h) = BEFORE_CLAIM.with(|h| h.get()) {
                        h(self, v);
                    }
                    let Some((mine, partner)) = self.claim_pair(v, &s) else {
                        continue;
                    };
                    // Scored before the claim: the pair may have moved to a safer class since
                    // (become established, say). Both halves are ours now: score it again.
                    let Some(expired) = self.rescore(v, mine, partner, now, 0) else {
                        continue;
                    };
                    self.retire(v, &s, partner);
                    if let Some((p, pb)) = partner {
                        self.free(p, pb);
                        t.add_halves(-1);
                    }
                    t.add_halves(-1);
                    t.inc(if expired { Ctr::Expire } else { Ctr::Evict });
                    // Re-label our claim with the new key's fingerprint (stays odd = BUSY).
                    let nb = c_make(loc.fp, c_seq(mine).wrapping_add(2));
                    self.ctrl(v).store(nb, SeqCst);
                    self.set_tag(v, loc.fp);
                    return Claim::Got(v, nb);
                }
            }
        }
        Claim::Busy
    }

    /// Scores the claimed victim `v` again (both halves BUSY, ours): `Some(expired)` if it may
    /// still be evicted with a score of at least `min_score`; otherwise releases both claims
    /// unchanged and returns `None`.
    pub(super) fn rescore(
        &self,
        v: u32,
        mine: u64,
        partner: Option<(u32, u64)>,
        now: u32,
        min_score: u64,
    ) -> Option<bool> {
        let meta = self.pair_meta(v, partner);
        match self.victim_score(meta, now) {
            Some((score, exp)) if score >= min_score => Some(exp),
            _ => {
                self.publish(v, mine);
                if let Some((p, pb)) = partner {
                    self.publish(p, pb);
                }
                None
            }
        }
    }

    /// Claims a slot in bucket `b` for fingerprint `fp`, a half placed as `place`: a free
    /// way (found by the tag word), or (with [`Room::FreeOrExpendable`]) the way of an
    /// expendable (non-protected) pair, evicted. One attempt, no retries.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn claim_in_bucket(
        &self,
        b: u32,
        fp: u32,
        place: Placement,
        now: u32,
        room: Room,
        t: &mut Tally,
    ) -> Option<(u32, u64)> {
        let mut free = self.free_ways(b, place);
        while free != 0 {
            let w = place.order()[free.trailing_zeros() as usize];
            free &= free - 1;
            let slot = b * WAYS as u32 + w as u32;
            let c = self.ctrl(slot).load(Acquire);
            if c_free(c) && self.try_claim(slot, c, fp) {
                return Some((slot, c_next(c, fp)));
            }
        }
        if room == Room::Free {
            return None;
        }
        let bk = &self.buckets[b as usize];
        let mut best: Option<(u64, u32, u64, bool)> = None;
        for (w, way) in bk.ways.iter().enumerate() {
            let slot = b * WAYS as u32 + w as u32;
            let c = way.ctrl.load(Acquire);
            if !c_live(c) {
                continue;
            }
            let meta = way.data[D_META].load(Relaxed);
            if let Some((score, exp)) = self.victim_score(meta, now) {
                if score >= PROTECTED_MAX_SCORE && best.is_none_or(|(bs, ..)| score > bs) {
                    best = Some((score, slot, c, exp));
                }
            }
        }
        let (_, v, c, _) = best?;
        let s = self.read_live(v, c)?;
        #[cfg(test)]
        if let Some(h) = BEFORE_CLAIM.with(|h| h.get()) {
            h(self, v);
        }
        let (mine, partner) = self.claim_pair(v, &s)?;
        let expired = self.rescore(v, mine, partner, now, PROTECTED_MAX_SCORE)?;
        self.retire(v, &s, partner);
        if let Some((p, pb)) = partner {
            self.free(p, pb);
            t.add_halves(-1);
        }
        t.add_halves(-1);
        t.inc(if expired { Ctr::Expire } else { Ctr::Evict });
        let nb = c_make(fp, c_seq(mine).wrapping_add(2));
        self.ctrl(v).store(nb, SeqCst);
        self.set_tag(v, fp);
        Some((v, nb))
    }

    /// One cuckoo step: moves a LIVE half out of `loc`'s buckets into its alternate bucket
    /// (a free way there, or with [`Room::FreeOrExpendable`] an expendable victim's) and
    /// returns its old slot, claimed for `loc.fp`. A free way is told by an alternate's tag
    /// word; an expendable pair is sought in the first `scans` alternates without one
    /// (their ways' lines), the others passed over.
    ///
    /// The candidates come from the two tag words alone: a half's alternate bucket is a
    /// function of its bucket and its tag ([`Table::alt`]), so no key is read and no way
    /// of a half that cannot move: only the alternate's tag word, then the control word
    /// of the half chosen (checked against its tag).
    ///
    /// The half is claimed (BUSY, same fingerprint) for the whole move, so no reader or writer
    /// ever sees two LIVE copies of its key: lookups of it wait on BUSY and then find the new
    /// copy; its partner's hint goes stale and is repaired by content on the next visit.
    pub(super) fn relocate(
        &self,
        loc: &Loc,
        now: u32,
        room: Room,
        mut scans: u32,
        t: &mut Tally,
    ) -> Option<(u32, u64)> {
        for b in [loc.b1, loc.b2] {
            let Some(word) = self.tags.get(b as usize) else {
                continue;
            };
            let word = word.load(Relaxed);
            let mut m = occupied(word);
            while m != 0 {
                let (w, rest) = next_way(m);
                m = rest;
                let tag = (word >> (8 * w)) as u8;
                let alt = self.alt(b, tag);
                if alt == loc.b1 || alt == loc.b2 {
                    continue;
                }
                let room_there = self.has_free_way(alt)
                    || (room == Room::FreeOrExpendable && scans > 0 && {
                        scans -= 1;
                        self.has_expendable(alt, now)
                    });
                if !room_there {
                    continue;
                }
                let slot = b * WAYS as u32 + w as u32;
                let c = self.ctrl(slot).load(Acquire);
                // The tag word may be a moment old: the half there now must carry the tag.
                if !c_live(c) || tag_of(c_fp(c)) != tag {
                    continue;
                }
                let l2 = Loc {
                    b1: b,
                    b2: alt,
                    fp: c_fp(c),
                };
                if let Some(nb) = self.move_half(slot, c, &l2, alt, loc.fp, now, room, t) {
                    return Some((slot, nb));
                }
            }
        }
        None
    }

    /// Moves the LIVE half at `slot` (control word `c`, key located at `l2`) into bucket
    /// `alt`, its other candidate bucket (a free way there, or with
    /// [`Room::FreeOrExpendable`] an expendable pair's, evicted).
    /// Its old slot is then claimed for fingerprint `then_fp` (BUSY, returned), or freed if
    /// `then_fp` is 0. `None` if the half changed meanwhile or `alt` had no room.
    ///
    /// The half stays BUSY with its own fingerprint for the whole move, so its key is never
    /// LIVE twice; the move is announced on the key's stripe from before the claim until
    /// after its old slot is relabelled, so that a scan of the key running across the move
    /// does not trust an empty answer (see [`Table::moves`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn move_half(
        &self,
        slot: u32,
        c: u64,
        l2: &Loc,
        alt: u32,
        then_fp: u32,
        now: u32,
        room: Room,
        t: &mut Tally,
    ) -> Option<u64> {
        let stripe = self.stripe(l2);
        stripe.fetch_add(MOVE_START, SeqCst);
        let r = (|| {
            if !self.try_claim(slot, c, c_fp(c)) {
                return None;
            }
            let sb = c_next(c, c_fp(c));
            // Placed as a session's half whatever it is (its meta word is not read for
            // this: moves are rare below 90 % fill, where the placement matters most).
            let Some((d, db)) = self.claim_in_bucket(alt, l2.fp, Placement::Hot, now, room, t)
            else {
                self.publish(slot, sb);
                return None;
            };
            let (src, dst) = (self.data(slot), self.data(d));
            for i in 0..D_META {
                dst[i].store(src[i].load(Relaxed), Relaxed);
            }
            // The moved half is a new occupant of `d`: next generation of that slot. Sealed
            // in its old slot first: a state change through the old index fails instead of
            // being lost with the old copy (and miscounted in the state gauges).
            let meta = self.seal(slot);
            dst[D_META].store(
                m_with_gen(meta, m_gen(dst[D_META].load(Relaxed)).wrapping_add(1)),
                Relaxed,
            );
            self.publish(d, db);
            let nb = if then_fp == 0 {
                self.clear_tag_of(slot);
                c_next(sb, 0)
            } else {
                c_make(then_fp, c_seq(sb).wrapping_add(2))
            };
            self.ctrl(slot).store(nb, SeqCst);
            if then_fp != 0 {
                self.set_tag(slot, then_fp);
            }
            t.inc(Ctr::Relocate);
            Some(nb)
        })();
        stripe.fetch_add(MOVE_END, Release);
        r
    }

    /// Whether bucket `b` has a free way, told by its tag word alone: a bucket without one
    /// costs the cuckoo step one tag load, not its ways' lines.
    fn has_free_way(&self, b: u32) -> bool {
        self.tags
            .get(b as usize)
            .is_some_and(|w| tag_matches(w.load(Relaxed), 0) != 0)
    }

    /// Whether bucket `b` holds an expendable (non-protected) pair: its ways' control and
    /// meta words, six lines.
    fn has_expendable(&self, b: u32, now: u32) -> bool {
        #[cfg(test)]
        EXPENDABLE_SCORED.with(|n| n.set(n.get() + 1));
        let bk = &self.buckets[b as usize];
        bk.ways.iter().any(|way| {
            c_live(way.ctrl.load(Relaxed))
                && self
                    .victim_score(way.data[D_META].load(Relaxed), now)
                    .is_some_and(|(sc, _)| sc >= PROTECTED_MAX_SCORE)
        })
    }
}
