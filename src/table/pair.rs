//! The pair protocol: a hit and its refresh of both halves, restoring a lost half, inserting
//! and removing a pair as a unit.

use super::engine::*;
use super::evict::Placement;
use super::layout::*;
use super::seqlock::backoff;
use super::stats::{Ctr, Tally};
use super::sync::Ordering::Relaxed;
use super::{ConnState, Dir, Hit, InsertError, Session, Tuple};

impl Table {
    /// Claims the LIVE half `slot` and its partner (if present), in slot order. Returns the
    /// BUSY control values, or `None` (nothing claimed) if anything changed meanwhile.
    pub(super) fn claim_pair(&self, slot: u32, s: &Snap) -> Option<(u64, Option<(u32, u64)>)> {
        let partner = match self.partner_of(slot, s) {
            Partner::Ok(p, ps) => Some((p, ps.ctrl)),
            Partner::Busy => return None,
            Partner::Missing | Partner::Conflict => None,
        };
        match partner {
            None => self
                .try_claim(slot, s.ctrl, c_fp(s.ctrl))
                .then(|| (c_next(s.ctrl, c_fp(s.ctrl)), None)),
            Some((p, pc)) => {
                let (first, fc, second, sc) = if p < slot {
                    (p, pc, slot, s.ctrl)
                } else {
                    (slot, s.ctrl, p, pc)
                };
                if !self.try_claim(first, fc, c_fp(fc)) {
                    return None;
                }
                let fb = c_next(fc, c_fp(fc));
                if !self.try_claim(second, sc, c_fp(sc)) {
                    self.publish(first, fb);
                    return None;
                }
                let sb = c_next(sc, c_fp(sc));
                let (mine, theirs) = if first == slot { (fb, sb) } else { (sb, fb) };
                Some((mine, Some((p, theirs))))
            }
        }
    }

    /// Removes the pair of the LIVE half `slot`. `false` if it changed meanwhile.
    pub(super) fn remove_pair_snap(&self, slot: u32, s: &Snap, t: &mut Tally) -> bool {
        match self.claim_pair(slot, s) {
            Some((mine, partner)) => {
                self.retire(slot, s, partner);
                if let Some((p, pb)) = partner {
                    self.free(p, pb);
                    t.add_halves(-1);
                }
                self.free(slot, mine);
                t.add_halves(-1);
                true
            }
            None => false,
        }
    }

    #[inline(always)]
    pub(super) fn hit_of(&self, slot: u32, s: &Snap, restored: bool) -> Hit {
        Hit {
            dir: s.dir(),
            xlate: s.xlate(),
            state: ConnState::from_code(m_state_code(s.meta())),
            slot,
            restored,
            refreshed: false,
        }
    }

    /// Applies a hit on the LIVE half `slot`: expiry, refresh of its own half once a second
    /// and of its partner (with the partner check) once per epoch (see
    /// [`PARTNER_EPOCH_SHIFT`]).
    #[inline]
    pub(super) fn on_hit(&self, slot: u32, s: &Snap, now: u32, t: &mut Tally) -> Option<Hit> {
        self.on_hit_with(slot, self.way(slot), s, now, t, false)
    }

    /// [`Table::on_hit`]; with `check_partner` the partner is refreshed and checked (restored
    /// if missing) whatever the epoch. `way` is `slot`'s, found by the caller.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn on_hit_with(
        &self,
        slot: u32,
        way: &Way,
        s: &Snap,
        now: u32,
        t: &mut Tally,
        check_partner: bool,
    ) -> Option<Hit> {
        let meta = s.meta();
        let stale = self.expired(meta, now);
        // The out-of-line calls below take the snapshot by value: a copy made on their
        // (rare) paths, so that the hit's own path keeps it in registers rather than in
        // memory whose address escapes.
        if stale && !self.partner_fresh(slot, *s, now) {
            if self.remove_pair_snap(slot, &{ *s }, t) {
                t.inc(Ctr::Expire);
            }
            return None;
        }
        let assure = s.dir() == Dir::Rev && meta & FLAG_ASSURED == 0;
        let mut restored = false;
        let cold = m_last(meta) < now || assure;
        #[cfg(test)]
        if let Some(h) = BEFORE_REFRESH.with(|h| h.borrow_mut().take()) {
            h(self);
        }
        let mut pair_refreshed = false;
        if cold || check_partner {
            if assure || stale || check_partner || new_epoch(s.ctrl, m_last(meta), now) {
                self.refresh_cold(slot, *s, now, assure, t, &mut restored)?;
                pair_refreshed = true;
            } else {
                Self::touch_way(way, m_gen(meta), now, false);
            }
        }
        let mut h = self.hit_of(slot, s, restored);
        h.refreshed = pair_refreshed;
        Some(h)
    }

    /// Whether the pair of the LIVE half `slot` (snapshot `s`) has ended by timeout: the half
    /// looks expired and so does its partner (or it has none). A half's last-seen second
    /// may lag its partner's by an epoch, so one that looks expired is alive while its
    /// partner is not.
    #[inline]
    pub(super) fn pair_expired(&self, slot: u32, s: &Snap, now: u32) -> bool {
        self.expired(s.meta(), now) && !self.partner_fresh(slot, *s, now)
    }

    /// The meta word of the claimed half `slot` merged with that of its claimed partner, if
    /// any (see [`merge_meta`]): both are BUSY and ours, so neither changes meanwhile.
    pub(super) fn pair_meta(&self, slot: u32, partner: Option<(u32, u64)>) -> u64 {
        let own = self.data(slot)[D_META].load(super::sync::Ordering::Acquire);
        match partner {
            Some((p, _)) => merge_meta(
                own,
                self.data(p)[D_META].load(super::sync::Ordering::Acquire),
            ),
            None => own,
        }
    }

    /// Whether the partner of the LIVE half `slot` is present and not expired.
    #[cold]
    #[inline(never)]
    pub(super) fn partner_fresh(&self, slot: u32, s: Snap, now: u32) -> bool {
        matches!(self.partner_of(slot, &s), Partner::Ok(_, ps) if !self.expired(ps.meta(), now))
    }

    /// The refresh of a hit that reaches the partner (once per epoch, see
    /// [`PARTNER_EPOCH_SHIFT`]): refresh both halves, verify/restore the partner.
    /// `None` if the half turned out to be an orphan and was dropped.
    pub(super) fn refresh_cold(
        &self,
        slot: u32,
        s: Snap,
        now: u32,
        assure: bool,
        t: &mut Tally,
        restored: &mut bool,
    ) -> Option<()> {
        self.touch(slot, m_gen(s.meta()), now, assure);
        match self.partner_of(slot, &s) {
            Partner::Ok(p, ps) => {
                self.touch(p, m_gen(ps.meta()), now, assure);
                t.inc(Ctr::Refresh);
            }
            Partner::Busy => {}
            Partner::Missing => match self.restore(slot, &s, now, t) {
                RestoreOutcome::Done => *restored = true,
                RestoreOutcome::Orphan => return None,
                RestoreOutcome::Other => {}
            },
            Partner::Conflict => {
                if self.try_claim(slot, s.ctrl, c_fp(s.ctrl)) {
                    self.retire(slot, &s, None);
                    self.free(slot, c_next(s.ctrl, c_fp(s.ctrl)));
                    t.add_halves(-1);
                    t.inc(Ctr::Orphan);
                }
                return None;
            }
        }
        Some(())
    }

    /// Recreates the missing partner of the lone LIVE half `slot`.
    pub(super) fn restore(&self, slot: u32, s: &Snap, now: u32, t: &mut Tally) -> RestoreOutcome {
        let pk = s.xlate().reversed();
        let px = s.key().reversed();
        let pdir = s.dir().flip();
        let (p0, p1) = pack(&pk);
        let loc = self.locate(p0, p1);
        // Own the lone half first: if it was removed or rewritten since `s` was read, stop —
        // this is what keeps a removed connection from being resurrected.
        if !self.try_claim(slot, s.ctrl, c_fp(s.ctrl)) {
            return RestoreOutcome::Other;
        }
        let hb = c_next(s.ctrl, c_fp(s.ctrl));
        let (p, pb) = match self.claim_slot(&loc, Placement::of(s.meta()), now, slot, t) {
            Claim::Got(p, pb) => (p, pb),
            Claim::Full => {
                t.inc(Ctr::Full);
                self.publish(slot, hb);
                return RestoreOutcome::Other;
            }
            Claim::Busy => {
                t.inc(Ctr::Busy);
                self.publish(slot, hb);
                return RestoreOutcome::Other;
            }
        };
        match self.rescan(&loc, p0, p1, [p, slot]) {
            Find::Absent => {}
            Find::Found(q, qs) => {
                self.free(p, pb);
                if qs.dir() == pdir && qs.xlate_is(&px) {
                    // Someone else recreated it first (cilium#40971): adopt it.
                    let old = s.d[D_X1];
                    self.data(slot)[D_X1].store((old & LOW32) | ((q as u64) << 32), Relaxed);
                    self.publish(slot, hb);
                    t.inc(Ctr::RaceLost);
                    return RestoreOutcome::Other;
                }
                // The partner key belongs to another connection now: we are an orphan.
                self.retire(slot, s, None);
                self.free(slot, hb);
                t.add_halves(-1);
                t.inc(Ctr::Orphan);
                return RestoreOutcome::Orphan;
            }
            Find::Busy => {
                self.free(p, pb);
                self.publish(slot, hb);
                t.inc(Ctr::RaceLost);
                return RestoreOutcome::Other;
            }
        }
        let cur = self.data(slot)[D_META].load(Relaxed);
        let meta = (cur & !LOW32) | m_last(cur).max(now) as u64;
        self.write_half(p, p0, p1, pdir, &px, slot, meta);
        let old = s.d[D_X1];
        self.data(slot)[D_X1].store((old & LOW32) | ((p as u64) << 32), Relaxed);
        self.touch(slot, m_gen(s.meta()), now, false);
        if pdir == Dir::Org {
            let mut sess = Self::session_of(s, now);
            sess.state = ConnState::from_code(m_state_code(meta));
            self.born(&sess);
        }
        self.publish(p, pb);
        self.publish(slot, hb);
        t.add_halves(1);
        t.inc(Ctr::Restore);
        RestoreOutcome::Done
    }

    #[inline]
    pub(super) fn lookup_at(
        &self,
        loc: &Loc,
        k0: u64,
        k1: u64,
        now: u32,
        t: &mut Tally,
    ) -> Option<Hit> {
        let mut round = 0;
        loop {
            match self.find(loc, k0, k1) {
                Find::Found(slot, s) => {
                    let r = self.on_hit(slot, &s, now, t);
                    t.inc(if r.is_some() { Ctr::Hit } else { Ctr::Miss });
                    return r;
                }
                Find::Absent => {
                    t.inc(Ctr::Miss);
                    return None;
                }
                Find::Busy => {
                    if round >= LOOKUP_RETRIES {
                        t.inc(Ctr::Busy);
                        t.inc(Ctr::Miss);
                        return None;
                    }
                    backoff(round);
                    round += 1;
                }
            }
        }
    }

    pub(super) fn session_of(s: &Snap, now: u32) -> Session {
        let (org, xlate) = match s.dir() {
            Dir::Org => (s.key(), s.xlate()),
            Dir::Rev => (s.xlate().reversed(), s.key().reversed()),
        };
        Session {
            org,
            xlate,
            state: ConnState::from_code(m_state_code(s.meta())),
            idle_secs: now.saturating_sub(m_last(s.meta())),
        }
    }

    /// The pre-check of an insert's ORG key: a live pair of it is reported (and
    /// refreshed), an expired one reclaimed (then `Retry`).
    #[inline(always)]
    fn precheck_org(&self, lo: &Loc, o0: u64, o1: u64, now: u32, t: &mut Tally) -> PreCheck {
        match self.find(lo, o0, o1) {
            Find::Found(s, snap) => match self.on_hit(s, &snap, now, t) {
                Some(h) => PreCheck::Exists(h),
                None => PreCheck::Retry,
            },
            Find::Busy => PreCheck::Retry,
            Find::Absent => PreCheck::Clear,
        }
    }

    /// Inserts the pair `org` <-> `xlate` (see [`Table::insert_pair`]); `org` packed and
    /// located as `(o0, o1, lo)`; `flags` go into both meta words; `hint`: what the caller
    /// knows of `org`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_inner(
        &self,
        org: &Tuple,
        (o0, o1, lo): (u64, u64, Loc),
        xlate: &Tuple,
        state: ConnState,
        now: u32,
        flags: u64,
        hint: OrgHint,
        t: &mut Tally,
    ) -> Result<Hit, InsertError> {
        let org_missed = hint != OrgHint::Unknown;
        let rev = xlate.reversed();
        let (r0, r1) = pack(&rev);
        // `pack` is one-to-one: the packed words compare as the tuples do.
        if xlate.proto != org.proto || (r0, r1) == (o0, o1) {
            return Err(InsertError::Invalid);
        }
        let lr = self.locate(r0, r1);
        let meta = m_make(now, state) | flags;
        let place = Placement::of(flags);
        for attempt in 0..INSERT_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt);
            }
            // The pre-check of `org`, unless the caller has just missed it (first round):
            // the conflict scan after the claims is what excludes a duplicate either way.
            let org_checked = !(org_missed && attempt == 0);
            if org_checked {
                match self.precheck_org(&lo, o0, o1, now, t) {
                    PreCheck::Exists(h) => return Err(InsertError::Exists(h)),
                    PreCheck::Retry => continue,
                    PreCheck::Clear => {}
                }
            }
            match self.find(&lr, r0, r1) {
                Find::Found(s, snap) => {
                    if !org_checked && hint == OrgHint::Missed {
                        // The skipped pre-check, now: whatever holds the reply tuple, a pair
                        // of `org` is reported first, as without the hint (a port try moves
                        // on to another reply tuple instead, see `OrgHint::PortTry`).
                        match self.precheck_org(&lo, o0, o1, now, t) {
                            PreCheck::Exists(h) => return Err(InsertError::Exists(h)),
                            PreCheck::Retry => continue,
                            PreCheck::Clear => {}
                        }
                    }
                    if self.pair_expired(s, &snap, now) {
                        if self.remove_pair_snap(s, &snap, t) {
                            t.inc(Ctr::Expire);
                        }
                        continue;
                    }
                    if snap.dir() == Dir::Rev && snap.xlate_is(&org.reversed()) {
                        // The REV half of the very connection being inserted: a concurrent
                        // insert of it is publishing its ORG half, or the ORG half is missing
                        // and is restored here. Either way the next round reports `Exists`.
                        match self.partner_of(s, &snap) {
                            Partner::Ok(p, ps) => match self.on_hit(p, &ps, now, t) {
                                Some(h) => return Err(InsertError::Exists(h)),
                                None => continue,
                            },
                            Partner::Missing => {
                                self.restore(s, &snap, now, t);
                                continue;
                            }
                            Partner::Busy | Partner::Conflict => continue,
                        }
                    }
                    return Err(InsertError::RevTaken);
                }
                Find::Busy => continue,
                Find::Absent => {}
            }
            let (so, bo) = match self.claim_slot(&lo, place, now, NO_SLOT, t) {
                Claim::Got(s, b) => (s, b),
                Claim::Full => return Err(InsertError::Full),
                Claim::Busy => continue,
            };
            let (sr, br) = match self.claim_slot(&lr, place, now, so, t) {
                Claim::Got(s, b) => (s, b),
                Claim::Full => {
                    self.free(so, bo);
                    return Err(InsertError::Full);
                }
                Claim::Busy => {
                    self.free(so, bo);
                    continue;
                }
            };
            let clear = self.rescan_clear((&lo, o0, o1), (&lr, r0, r1), [so, sr]);
            if !clear {
                // A concurrent writer claimed one of our keys: back off; the next round's
                // pre-checks report the winner (Exists / RevTaken) once it is published.
                self.free(sr, br);
                self.free(so, bo);
                t.inc(Ctr::RaceLost);
                continue;
            }
            self.write_half(so, o0, o1, Dir::Org, xlate, sr, meta);
            self.write_half(sr, r0, r1, Dir::Rev, &org.reversed(), so, meta);
            // Counted while both halves are still ours: nobody can remove (and report) the
            // connection before it is reported born.
            self.born(&Session {
                org: *org,
                xlate: *xlate,
                state,
                idle_secs: 0,
            });
            self.publish(sr, br);
            self.publish(so, bo);
            t.add_halves(2);
            return Ok(Hit {
                dir: Dir::Org,
                xlate: *xlate,
                state,
                slot: so,
                restored: false,
                refreshed: true,
            });
        }
        Err(InsertError::Busy)
    }

    /// Sets the state of both halves; the state gauges follow the ORG half's change.
    pub(super) fn set_state_snap(&self, slot: u32, s: &Snap, state: ConnState) {
        let count = |was: Option<u8>| {
            if let Some(was) = was {
                self.ctr.add_state(was, -1);
                self.ctr.add_state(state.code(), 1);
            }
        };
        let was = self.set_meta_state(slot, m_gen(s.meta()), state);
        if s.dir() == Dir::Org {
            count(was);
        }
        if let Partner::Ok(p, ps) = self.partner_of(slot, s) {
            let was = self.set_meta_state(p, m_gen(ps.meta()), state);
            if ps.dir() == Dir::Org {
                count(was);
            }
        }
    }

    /// Finds the half keyed by `key` and applies `op` to it, retrying (with backoff) while
    /// the slot is busy or `op` loses a race; counts a successful removal.
    pub(super) fn remove_by(
        &self,
        key: &Tuple,
        op: impl Fn(&Self, u32, &Snap, &mut Tally) -> bool,
    ) -> bool {
        let (k0, k1) = pack(key);
        let loc = self.locate(k0, k1);
        let mut t = Tally::default();
        let mut done = false;
        for round in 0..REMOVE_ATTEMPTS {
            match self.find(&loc, k0, k1) {
                Find::Found(slot, s) => {
                    if op(self, slot, &s, &mut t) {
                        t.inc(Ctr::Remove);
                        done = true;
                        break;
                    }
                }
                Find::Absent => break,
                Find::Busy => {}
            }
            backoff(round);
        }
        self.ctr.flush(&t);
        done
    }
}

/// The kinds of insert, as the `insert_*` methods of [`Table`] name them, for
/// [`Table::insert_counted_as`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InsertKind {
    /// [`Table::insert_pair`].
    Pair,
    /// [`Table::insert_pair_missed`].
    PairMissed,
    /// [`Table::insert_pair_port_try`].
    PairPortTry,
    /// [`Table::insert_anchor`].
    Anchor,
    /// [`Table::insert_anchor_missed`].
    AnchorMissed,
    /// [`Table::insert_anchor_port_try`].
    AnchorPortTry,
}

impl InsertKind {
    /// The meta flags of the pair and what the insert knows of its ORG key.
    #[inline(always)]
    pub(super) fn flags_and_hint(self) -> (u64, OrgHint) {
        match self {
            InsertKind::Pair => (0, OrgHint::Unknown),
            InsertKind::PairMissed => (0, OrgHint::Missed),
            InsertKind::PairPortTry => (0, OrgHint::PortTry),
            InsertKind::Anchor => (FLAG_ANCHOR, OrgHint::Unknown),
            InsertKind::AnchorMissed => (FLAG_ANCHOR, OrgHint::Missed),
            InsertKind::AnchorPortTry => (FLAG_ANCHOR, OrgHint::PortTry),
        }
    }
}

/// What the caller of an insert knows of its ORG key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum OrgHint {
    /// Nothing: every round checks it first.
    Unknown,
    /// It has just been looked up and missed: the first round skips the pre-check,
    /// unless the reply tuple turns out to be taken (then a pair of `org` is reported
    /// first, the plain insert's answer).
    Missed,
    /// Missed, and the insert is one try of a port allocator: a taken reply tuple is
    /// reported as such without looking for `org` (the allocator tries another port;
    /// the insert that finds a free one sees a pair of `org` published meanwhile in its
    /// conflict scan, and reports it).
    PortTry,
}

/// What an insert's pre-check of its ORG key found.
enum PreCheck {
    /// No pair of the key.
    Clear,
    /// A live pair: the insert reports it.
    Exists(Hit),
    /// Busy, or an expired pair reclaimed: the next round.
    Retry,
}

pub(super) enum RestoreOutcome {
    Done,
    Orphan,
    Other,
}
