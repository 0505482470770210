//! The table itself: construction, addressing and the public API. The protocol lives in
//! the sibling modules (`layout`: bucket and word encodings; `seqlock`: slot claims and
//! snapshots; `search`: finding a key; `evict`: free slots, victims and cuckoo moves;
//! `pair`: hits, refreshes, restores, inserts and removals of pairs; `policy`: the eviction
//! order; `audit`: the invariant check). See the module docs in `mod.rs` for the protocol
//! and its correctness argument.

use super::evict::Placement;
use super::layout::*;
use super::pair::InsertKind;
use super::region::Region;
use super::seqlock::backoff;
use super::stats::{Counters, Ctr, OpCounts, Tally};
use super::sync::Ordering::{Acquire, Relaxed};
use super::sync::{AtomicU32, AtomicU64};
use super::{
    ConnState, Dir, Hit, InsertError, Resume, Session, TableConfig, TableError, TableStats,
    Timeouts, Tuple,
};

/// Rounds a lookup on the packet path waits for a BUSY slot (a claim in flight takes a few
/// hundred nanoseconds): short spins only, never a yield of the pinned worker; after them
/// the lookup reports a miss (counted as `busy`).
pub(super) const LOOKUP_RETRIES: u32 = 2;
/// Times a scan that found nothing is repeated because a cuckoo move was in flight on the
/// key's stripe (see [`Table::moves`]); after them the scan reports BUSY.
pub(super) const MOVE_RESCANS: u32 = 3;
/// Relocation stripes: a move of a key is announced on the stripe of its bucket pair.
#[cfg(not(loom))]
pub(super) const MOVE_STRIPES: usize = 256;
#[cfg(loom)]
pub(super) const MOVE_STRIPES: usize = 2;
/// The low half of a stripe word counts moves in flight, the high half moves completed.
pub(super) const MOVE_START: u64 = 1;
pub(super) const MOVE_END: u64 = (1 << 32) - 1;
pub(super) const INSERT_ATTEMPTS: u32 = 16;
pub(super) const CLAIM_ATTEMPTS: u32 = 4;
pub(super) const REMOVE_ATTEMPTS: u32 = 8;

/// A test hook: called with the victim's slot between scoring a victim and claiming it.
#[cfg(test)]
pub(crate) type ClaimHook = fn(&Table, u32);

#[cfg(test)]
thread_local! {
    /// The hook of this thread, if any (tests of the race between scoring and claiming).
    pub(crate) static BEFORE_CLAIM: std::cell::Cell<Option<ClaimHook>> =
        const { std::cell::Cell::new(None) };
}

/// A test hook run by `find` between its scans of a key's first and second bucket (taken
/// out of its cell before it runs, so it runs once).
#[cfg(test)]
pub(crate) type TestHook = Box<dyn FnOnce(&Table)>;

#[cfg(test)]
thread_local! {
    /// The hook of this thread, if any (tests of the relocation race between the scans).
    pub(crate) static BETWEEN_SCANS: std::cell::RefCell<Option<TestHook>> =
        const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
thread_local! {
    /// A hook run by a hit between reading the half and refreshing it (tests of writes
    /// through stale slot indexes).
    pub(crate) static BEFORE_REFRESH: std::cell::RefCell<Option<TestHook>> =
        const { std::cell::RefCell::new(None) };
}

/// The paired NAT table (see the module docs). Share it between workers with `Arc<Table>`.
pub struct Table {
    pub(super) buckets: Region<Bucket>,
    /// One word per bucket: the tags of its ways' fingerprints, way `w` in byte `w` (see
    /// [`tag_of`], never 0), or 0 for a free way; a scan compares all 8 at once
    /// ([`tag_matches`]) and reads the control word of a matching way only, a claim finds
    /// free ways by the zero bytes. Written only by a slot's owner while it holds the slot
    /// BUSY: set when the slot takes a fingerprint (after the control word), so before the
    /// slot is published and before an inserter's conflict-scan fence; cleared just before
    /// the slot is stored FREE. So every LIVE way's tag is its fingerprint's, and a claim
    /// whose conflict scan must see another's sees its tag. A tag out of date (a claim or
    /// free in flight) only sends a scan or a claim to a control word that does not
    /// match, or keeps it from one that was just freed, as a control word read a moment
    /// earlier would. Not in the state file: rebuilt from the control words when a table
    /// is taken over.
    pub(super) tags: Region<AtomicU64>,
    pub(super) nb: u64,
    pub(super) nslots: u32,
    pub(super) seed: [u64; 3],
    /// Partial-key cuckoo placement: a key's second bucket is `alt(b1, tag)`,
    /// `(alt_base[tag] - b1) mod nb`, a function of its first bucket and its tag alone, and
    /// its own inverse, so a half's other bucket is known from the bucket it is in and its
    /// tag (see [`Table::alt`]): a cuckoo step picks a half to move from the tag word, without
    /// reading any key. Each entry is odd and the bucket count even, so a key's two buckets
    /// always differ.
    pub(super) alt_base: [u32; 256],
    /// Timeout of each state code, seconds (changed live by [`Table::set_timeouts`]).
    pub(super) tmo: [std::sync::atomic::AtomicU32; 16],
    pub(super) timeouts: std::sync::Mutex<Timeouts>,
    pub(super) evict_protected: bool,
    /// Largest `now` seen (for `flush`'s idle figures); written at most once per second.
    pub(super) clock: AtomicU32,
    /// Cuckoo moves announced per stripe of bucket pairs (moves in flight in the low 32
    /// bits, moves completed in the high 32 bits). A scan that finds nothing re-reads its
    /// key's stripe afterwards and trusts the answer only if no move started, ran or ended
    /// meanwhile (the relocation race between a key's two bucket scans).
    pub(super) moves: [AtomicU64; MOVE_STRIPES],
    pub(super) ctr: Counters,
    /// Told of connections coming and going (see [`Table::attach_observer`]).
    pub(super) observer: std::sync::OnceLock<std::sync::Arc<dyn super::PairObserver>>,
    /// The buckets' pages when last measured ([`Table::page_use`]).
    pub(super) pages: std::sync::Mutex<Option<super::region::PageUse>>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("timeouts", &self.timeouts())
            .field("evict_protected", &self.evict_protected)
            .finish()
    }
}

impl Table {
    /// Allocates the whole table. Nothing is allocated afterwards.
    pub fn new(cfg: TableConfig) -> Result<Table, TableError> {
        let nb = Self::buckets_for(&cfg)?;
        let bytes = nb * std::mem::size_of::<Bucket>();
        // All-zero buckets are empty (see `Bucket::new`), so fresh zeroed pages need no
        // initialisation.
        #[cfg(not(loom))]
        let buckets = Region::<Bucket>::zeroed(nb).ok_or(TableError::OutOfMemory { bytes })?;
        #[cfg(loom)]
        let buckets = {
            let _ = bytes;
            Region::from_fn(nb, Bucket::new)
        };
        let mut s = cfg.seed.unwrap_or_else(random_seed);
        let seed = [splitmix(&mut s), splitmix(&mut s), splitmix(&mut s)];
        Self::assemble(cfg, buckets, nb, seed)
    }

    /// Like [`Table::new`], but the table lives in the state file at `path` (put it on a
    /// tmpfs such as /run or /dev/shm). If the file holds a table of the same size made
    /// since the last boot, its connections are taken over ([`Resume::Resumed`]): a gateway
    /// restarted with the same file keeps every live translation. Otherwise the outcome
    /// says whether there was no table or why it could not be taken over.
    /// Otherwise the file is reset to an empty table.
    ///
    /// Only one process may use a state file at a time; the gateway guarantees this by
    /// owning the interfaces' XDP attachment before it opens the file.
    #[cfg(loom)]
    pub fn with_state_file(
        _cfg: TableConfig,
        path: &std::path::Path,
    ) -> Result<(Table, Resume), TableError> {
        Err(TableError::StateFile {
            path: path.display().to_string(),
            reason: "no state files under the model checker".into(),
        })
    }

    /// Like [`Table::new`], but the table lives in the state file at `path` (see above).
    #[cfg(not(loom))]
    pub fn with_state_file(
        cfg: TableConfig,
        path: &std::path::Path,
    ) -> Result<(Table, Resume), TableError> {
        let nb = Self::buckets_for(&cfg)?;
        let fresh_seed = cfg.seed.unwrap_or_else(random_seed);
        // Read before `open_state` resets the file (see `Region::previous`).
        let previous = Region::<Bucket>::previous(path, nb, WAYS as u64);
        let (buckets, mut resume, seed_word) =
            Region::<Bucket>::open_state(path, nb, WAYS as u64, fresh_seed).map_err(|reason| {
                TableError::StateFile {
                    path: path.display().to_string(),
                    reason,
                }
            })?;
        let mut s = seed_word;
        let seed = [splitmix(&mut s), splitmix(&mut s), splitmix(&mut s)];
        let t = Self::assemble(cfg, buckets, nb, seed)?;
        if resume.resumed() {
            // Still single-threaded, one pass over the control words: a slot left BUSY by a
            // process killed mid-claim would stay BUSY forever (its key could never be
            // looked up or inserted again): free it; if it held one half of a live pair, the
            // partner restores it on its next hit. The occupancy counter starts at zero:
            // count the halves taken over.
            // The state gauges too: the ORG halves per state.
            let mut live = 0usize;
            let mut tally = Tally::default();
            for slot in 0..t.nslots {
                let c = t.ctrl(slot).load(Acquire);
                if c_busy(c) {
                    t.ctrl(slot).store(
                        c_make(0, c_seq(c).wrapping_add(1)),
                        super::sync::Ordering::Release,
                    );
                } else if c_live(c) {
                    live += 1;
                    t.set_tag(slot, c_fp(c));
                    let d = t.data(slot);
                    if d[D_K1].load(Relaxed) & DIR_REV_BIT == 0 {
                        t.ctr.add_state(m_state_code(d[D_META].load(Relaxed)), 1);
                    }
                }
            }
            tally.add_halves(live as i64);
            t.ctr.flush(&tally);
        } else if let (Some(old), Resume::Reset { reason }) = (previous, &resume) {
            let (found, kept) = t.carry_over(&old);
            resume = Resume::Migrated {
                reason: reason.clone(),
                found,
                kept,
            };
        }
        Ok((t, resume))
    }

    pub(super) fn buckets_for(cfg: &TableConfig) -> Result<usize, TableError> {
        if cfg.connections == 0 {
            return Err(TableError::ZeroCapacity);
        }
        if cfg.connections > MAX_CONNECTIONS {
            return Err(TableError::TooLarge {
                connections: cfg.connections,
            });
        }
        // An even count: see `Table::alt_base`.
        let nb = (cfg.connections * 2).div_ceil(WAYS).max(2);
        Ok(nb + (nb & 1))
    }

    pub(super) fn assemble(
        cfg: TableConfig,
        buckets: Region<Bucket>,
        nb: usize,
        seed: [u64; 3],
    ) -> Result<Table, TableError> {
        #[cfg(not(loom))]
        let tags = Region::<AtomicU64>::zeroed(nb).ok_or(TableError::OutOfMemory {
            bytes: nb * std::mem::size_of::<AtomicU64>(),
        })?;
        #[cfg(loom)]
        let tags = Region::from_fn(nb, || AtomicU64::new(0));
        let t = cfg.timeouts;
        let tmo = Self::timeout_codes(&t).map(std::sync::atomic::AtomicU32::new);
        Ok(Table {
            buckets,
            tags,
            nb: nb as u64,
            nslots: (nb * WAYS) as u32,
            alt_base: {
                let mut x = seed[2] ^ 0xA076_1D64_78BD_642F;
                std::array::from_fn(|_| {
                    ((((splitmix(&mut x) & LOW32) * nb as u64) >> 32) as u32) | 1
                })
            },
            seed,
            tmo,
            timeouts: std::sync::Mutex::new(t),
            evict_protected: cfg.evict_protected,
            clock: AtomicU32::new(0),
            moves: std::array::from_fn(|_| AtomicU64::new(0)),
            ctr: Counters::new(),
            observer: std::sync::OnceLock::new(),
            pages: std::sync::Mutex::new(None),
        })
    }

    // ---- addressing ---------------------------------------------------------------------

    #[inline(always)]
    pub(super) fn locate(&self, k0: u64, k1: u64) -> Loc {
        let h = fold_mul(k0 ^ self.seed[0], k1 ^ self.seed[1]);
        let g = fold_mul(h ^ self.seed[2], 0x9E37_79B9_7F4A_7C15);
        let fp = ((g >> 32) as u32) | 1;
        let b1 = (((g & LOW32) * self.nb) >> 32) as u32;
        Loc {
            b1,
            b2: self.alt(b1, tag_of(fp)),
            fp,
        }
    }

    /// The other candidate bucket of a half with tag `tag` in bucket `b` (either of its
    /// two): `(alt_base[tag] - b) mod nb`, so `alt(alt(b, t), t) == b`, and never `b` itself
    /// (an odd base, an even bucket count).
    #[inline(always)]
    pub(super) fn alt(&self, b: u32, tag: u8) -> u32 {
        let nb = self.nb as u32;
        let s = self.alt_base[tag as usize] + (nb - b);
        if s >= nb {
            s - nb
        } else {
            s
        }
    }

    /// Every way of the table in one slice, slot `s` at index `s`: a bucket is its `WAYS`
    /// ways and nothing else, so a way is reached by one bounds check and one multiply
    /// (rather than a bucket's and then a way's offset).
    #[cfg(not(loom))]
    #[inline(always)]
    fn ways(&self) -> &[Way] {
        let b: &[Bucket] = &self.buckets;
        // SAFETY: `Bucket` is `repr(C)` and holds only `[Way; WAYS]`, with no padding (its
        // size is `WAYS` ways, asserted at compile time in `layout`), so `b.len()` buckets
        // are `b.len() * WAYS` initialised, consecutive `Way`s at `b`'s address, which is
        // aligned for `Way` (a bucket's alignment, 64, is a multiple of a way's); the
        // slice borrows `self`, as `b` does, and the table only reads or writes its words
        // through atomics.
        unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<Way>(), b.len() * WAYS) }
    }

    /// The way `slot` names (panics past the table: slot handles come from the table).
    #[inline(always)]
    pub(super) fn way(&self, slot: u32) -> &Way {
        #[cfg(not(loom))]
        return &self.ways()[slot as usize];
        #[cfg(loom)]
        return &self.buckets[slot as usize / WAYS].ways[slot as usize % WAYS];
    }

    /// The way `slot` names, if it is in the table: `None` for [`NO_SLOT`] (an unmatched
    /// probe's hint) and any other handle past the last bucket. One bounds check, after
    /// which the way's words are reached without another.
    #[inline(always)]
    pub(super) fn way_at(&self, slot: u32) -> Option<&Way> {
        #[cfg(not(loom))]
        return self.ways().get(slot as usize);
        #[cfg(loom)]
        return self
            .buckets
            .get(slot as usize / WAYS)
            .map(|b| &b.ways[slot as usize % WAYS]);
    }

    #[inline(always)]
    pub(super) fn ctrl(&self, slot: u32) -> &AtomicU64 {
        &self.way(slot).ctrl
    }

    #[inline(always)]
    pub(super) fn data(&self, slot: u32) -> &[AtomicU64; DW] {
        &self.way(slot).data
    }

    #[inline(always)]
    pub(super) fn timeout_of(&self, meta: u64) -> u32 {
        self.tmo[(m_state_code(meta) & 15) as usize].load(std::sync::atomic::Ordering::Relaxed)
    }

    #[inline(always)]
    pub(super) fn expired(&self, meta: u64, now: u32) -> bool {
        now.saturating_sub(m_seen(meta)) > self.timeout_of(meta)
    }

    #[inline(always)]
    pub(super) fn advance_clock(&self, now: u32) {
        if self.clock.load(Relaxed) < now {
            self.clock.fetch_max(now, Relaxed);
        }
    }

    // ---- seqlock primitives --------------------------------------------------------------

    // ---- search ---------------------------------------------------------------------------

    // ---- slot allocation and eviction -----------------------------------------------------

    // ---- hit handling, restore -------------------------------------------------------------

    // ---- public API ----------------------------------------------------------------------

    /// Looks `key` up in either direction. A hit refreshes the pair (its own half at most
    /// once per second, the partner once per refresh epoch, see the module docs) and
    /// restores a missing partner; an expired pair is reclaimed and reported as a miss.
    pub fn lookup(&self, key: &Tuple, now: u32) -> Option<Hit> {
        let (k0, k1) = pack(key);
        self.lookup_probe(
            &Probe {
                k0,
                k1,
                loc: self.locate(k0, k1),
                hint: NO_SLOT,
            },
            now,
        )
    }

    /// [`Table::lookup`] that also checks the partner of the half it finds, whatever its
    /// refresh epoch, and restores it if it is missing: for a packet that missed its own
    /// half, when the caller knows the key of the other (a lone half is otherwise noticed
    /// within one epoch of its traffic).
    pub fn lookup_repair(&self, key: &Tuple, now: u32) -> Option<Hit> {
        let mut t = Tally::default();
        self.advance_clock(now);
        let (k0, k1) = pack(key);
        let r = match self.find(&self.locate(k0, k1), k0, k1) {
            Find::Found(slot, s) => self.on_hit_with(slot, self.way(slot), &s, now, &mut t, true),
            Find::Absent | Find::Busy => None,
        };
        self.ctr.flush(&t);
        r
    }

    /// First stage of the batch pipeline: hashes `key` once and starts loading the tag
    /// words of both its candidate buckets into the cache. Call it for every key of a batch,
    /// then [`Table::probe_data`] for each, then [`Table::lookup_probe`].
    #[inline]
    pub fn probe(&self, key: &Tuple) -> Probe {
        let (k0, k1) = pack(key);
        let loc = self.locate(k0, k1);
        if let Some(w) = self.tags.get(loc.b1 as usize) {
            prefetch(w);
        }
        if let Some(w) = self.tags.get(loc.b2 as usize) {
            prefetch(w);
        }
        Probe {
            k0,
            k1,
            loc,
            hint: NO_SLOT,
        }
    }

    /// Second stage of the batch pipeline: with the tag words (ideally) in the cache, finds
    /// the first way whose tag matches the probed key's, starts loading it (control word and
    /// data: one line, or both lines of a way that straddles two) and notes the slot in the
    /// probe, where [`Table::lookup_probe`] tries it first. Only a hint: it changes nothing
    /// in the table.
    #[inline]
    pub fn probe_data(&self, p: &mut Probe) {
        let tag = tag_of(p.loc.fp);
        let (Some(w1), Some(w2)) = (
            self.tags.get(p.loc.b1 as usize),
            self.tags.get(p.loc.b2 as usize),
        ) else {
            return;
        };
        let (m1, m2) = (
            tag_matches(w1.load(Relaxed), tag),
            tag_matches(w2.load(Relaxed), tag),
        );
        // Which bucket holds the key is a coin toss from packet to packet: chosen without a
        // branch (a mispredicted one cost more than both words' tests): the first bucket's
        // matches if it has any, else the second's.
        let second = u64::from(m1 == 0).wrapping_neg();
        let m = m1 | (m2 & second);
        let b = p.loc.b1 ^ ((p.loc.b1 ^ p.loc.b2) & second as u32);
        if m != 0 {
            let slot = b * WAYS as u32 + next_way(m).0 as u32;
            if let Some(way) = self.way_at(slot) {
                p.hint = slot;
                prefetch_way(way);
            }
        }
    }

    /// Third stage of the batch pipeline: with the way [`Table::probe_data`] noted (ideally)
    /// in the cache, if the half there will refresh its pair at `now` (its first packet in a
    /// new refresh epoch, see [`Hit::refreshed`]), starts loading its partner's way and
    /// returns the half's direction and translation, from which the caller can start
    /// loading what it refreshes along with the pair (the NAT: the mapping, with
    /// [`Table::probe`] and [`Table::probe_data`]). Without it, that packet's lookup waits
    /// for the partner's line, and the mapping's lookup for its own, one after another.
    /// Only a hint: the words are read without the seqlock's check, and nothing changes.
    /// A probe that matched no way ([`Probe::matched`]) is told apart: [`Foretold::Miss`].
    #[inline]
    pub fn probe_refresh(&self, p: &Probe, now: u32) -> Foretold {
        // `NO_SLOT / WAYS` is past the last bucket of the largest table (`MAX_CONNECTIONS`):
        // an unmatched probe is told by this lookup.
        let Some(way) = self.way_at(p.hint) else {
            return Foretold::Miss;
        };
        let c = way.ctrl.load(Relaxed);
        if c_fp(c) != p.loc.fp || c_busy(c) {
            return Foretold::Other;
        }
        let last = m_last(way.data[D_META].load(Relaxed));
        // A later epoch than the half's last-seen second's (so a later second too, see
        // `new_epoch`), told by one comparison: whether the half was seen this second is a
        // coin toss at one packet per flow per second, and a branch on it alone was
        // mispredicted on a third of the packets. (A hint: seconds that wrap around are of
        // no concern here.)
        if epoch_of(c, last) >= epoch_of(c, now) {
            return Foretold::Other;
        }
        let mut s = Snap {
            ctrl: c,
            d: [0; DW],
        };
        for (d, w) in s.d.iter_mut().zip(&way.data) {
            *d = w.load(Relaxed);
        }
        if let Some(pw) = self.way_at(s.partner()) {
            prefetch_way(pw);
        }
        Foretold::Refresh(s.dir(), s.xlate())
    }

    /// For a probed key that is likely to be inserted next (its probe found no way with
    /// its tag, [`Probe::matched`]): starts loading the way its insert would claim first,
    /// as the bucket's tag word (loaded by [`Table::probe_data`]) tells it. Without it the
    /// claim's CAS waits for that line. Only a hint: it changes nothing in the table.
    #[inline]
    pub fn probe_claim(&self, p: &Probe) {
        if let Some(w) = self
            .first_claim(&p.loc, Placement::Hot)
            .and_then(|slot| self.way_at(slot))
        {
            prefetch_way(w);
        }
    }

    /// [`Table::lookup`] of a probed key (the last stage of the batch pipeline), without
    /// hashing it again.
    #[inline]
    pub fn lookup_probe(&self, p: &Probe, now: u32) -> Option<Hit> {
        let mut t = Tally::default();
        self.advance_clock(now);
        let r = self.lookup_hinted(p, now, &mut t);
        self.ctr.flush(&t);
        r
    }

    /// The lookup of a probed key: the slot [`Table::probe_data`] noted first, if it holds
    /// the key LIVE, else the scan of both buckets. A key is never LIVE in two slots (a
    /// cuckoo move keeps it BUSY throughout), so a LIVE match at the hint is the answer the
    /// scan would give; only an absent answer needs the scan's check against moves.
    #[inline(always)]
    fn lookup_hinted(&self, p: &Probe, now: u32, t: &mut Tally) -> Option<Hit> {
        if let Some(way) = self.way_at(p.hint) {
            let c = way.ctrl.load(Acquire);
            if c_fp(c) == p.loc.fp && !c_busy(c) {
                if let Some(s) = Self::read_way(way, c).filter(|s| s.key_is(p.k0, p.k1)) {
                    let r = self.on_hit_with(p.hint, way, &s, now, t, false);
                    t.inc(if r.is_some() { Ctr::Hit } else { Ctr::Miss });
                    return r;
                }
            }
        } else if self.absent_by_tags(&p.loc) {
            // No way noted: most often a key still absent (a new connection's), told here
            // by its tag words alone, without the scan's call.
            t.inc(Ctr::Miss);
            return None;
        }
        self.lookup_at(&p.loc, p.k0, p.k1, now, t)
    }

    /// [`Table::lookup_probe`] that adds its outcome counts to `counts` instead of the
    /// table's counters: a worker gathers a whole batch's and adds them with one
    /// [`Table::flush_counts`] (until then [`Table::stats`] does not show them).
    #[inline]
    pub fn lookup_probe_counted(&self, p: &Probe, now: u32, counts: &mut OpCounts) -> Option<Hit> {
        self.advance_clock(now);
        self.lookup_hinted(p, now, &mut counts.0)
    }

    /// [`Table::lookup`] counting into `counts` (see [`Table::lookup_probe_counted`]).
    #[inline]
    pub fn lookup_counted(&self, key: &Tuple, now: u32, counts: &mut OpCounts) -> Option<Hit> {
        let (k0, k1) = pack(key);
        self.advance_clock(now);
        self.lookup_at(&self.locate(k0, k1), k0, k1, now, &mut counts.0)
    }

    /// Adds `counts` to the table's counters and zeroes it.
    #[inline]
    pub fn flush_counts(&self, counts: &mut OpCounts) {
        self.ctr.flush(&counts.0);
        counts.0 = Tally::default();
    }

    /// Test hook: marks the slot holding `key` BUSY, as a process killed in the middle of a
    /// claim leaves it. Returns whether the key was found.
    #[cfg(test)]
    pub(crate) fn force_busy(&self, key: &Tuple) -> bool {
        let (k0, k1) = pack(key);
        let loc = self.locate(k0, k1);
        match self.find(&loc, k0, k1) {
            Find::Found(slot, s) => {
                self.ctrl(slot)
                    .store(s.ctrl | 1, super::sync::Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// Test hook: zeroes the tag of the slot holding `key` (as if its claim had not set
    /// it). Returns whether the key was found.
    #[cfg(test)]
    pub(crate) fn clear_tag(&self, key: &Tuple) -> bool {
        let (k0, k1) = pack(key);
        match self.find(&self.locate(k0, k1), k0, k1) {
            Find::Found(slot, _) => {
                let word = &self.tags[slot as usize / WAYS];
                word.fetch_and(!(0xFF << (8 * (slot as usize % WAYS))), Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Test hook: moves the half keyed by `key` into its other candidate bucket with the
    /// cuckoo move of the insert path (its old slot is freed). Returns the new slot.
    #[cfg(any(test, loom))]
    #[doc(hidden)]
    pub fn force_move(&self, key: &Tuple, now: u32) -> Option<u32> {
        let (k0, k1) = pack(key);
        let loc = self.locate(k0, k1);
        let Find::Found(slot, s) = self.find(&loc, k0, k1) else {
            return None;
        };
        let b = slot / WAYS as u32;
        let alt = if b == loc.b1 { loc.b2 } else { loc.b1 };
        let mut t = Tally::default();
        self.move_half(
            slot,
            s.ctrl,
            &loc,
            alt,
            0,
            now,
            Room::FreeOrExpendable,
            &mut t,
        )?;
        self.ctr.flush(&t);
        match self.find(&loc, k0, k1) {
            Find::Found(d, _) => Some(d),
            _ => None,
        }
    }

    /// Test hook: the two candidate buckets of `key` (scanned in this order).
    #[cfg(any(test, loom))]
    #[doc(hidden)]
    pub fn buckets_of(&self, key: &Tuple) -> (u32, u32) {
        let (k0, k1) = pack(key);
        let l = self.locate(k0, k1);
        (l.b1, l.b2)
    }

    /// Test hook: the second of its refresh epoch that `key`'s half starts an epoch at
    /// (its partner is refreshed by the first hit at a second `s` with
    /// `(s + phase) >> PARTNER_EPOCH_SHIFT` past that of its last-seen second).
    #[cfg(test)]
    pub(crate) fn epoch_phase(&self, key: &Tuple) -> u32 {
        let (k0, k1) = pack(key);
        epoch_phase(c_make(self.locate(k0, k1).fp, 0))
    }

    /// Test hook: whether the half keyed by `key` is assured, and its last-seen second.
    #[cfg(test)]
    pub(crate) fn assured_of(&self, key: &Tuple) -> Option<(bool, u32)> {
        let (k0, k1) = pack(key);
        match self.find(&self.locate(k0, k1), k0, k1) {
            Find::Found(_, s) => Some((s.meta() & FLAG_ASSURED != 0, m_last(s.meta()))),
            _ => None,
        }
    }

    /// Looks `key` up in either direction without refreshing, assuring or restoring
    /// anything: for ICMP errors, which must never keep a session alive (RFC 5508 REQ-2).
    /// An expired pair is a miss (and left for the next real lookup to reclaim).
    pub fn peek(&self, key: &Tuple, now: u32) -> Option<Hit> {
        let (k0, k1) = pack(key);
        let loc = self.locate(k0, k1);
        let mut round = 0;
        loop {
            match self.find(&loc, k0, k1) {
                Find::Found(slot, s) => {
                    if self.pair_expired(slot, &s, now) {
                        return None;
                    }
                    return Some(self.hit_of(slot, &s, false));
                }
                Find::Absent => return None,
                Find::Busy => {
                    if round >= LOOKUP_RETRIES {
                        return None;
                    }
                    backoff(round);
                    round += 1;
                }
            }
        }
    }

    /// Looks up `keys` into `out` (same semantics as [`Table::lookup`]), overlapping the cache
    /// misses of up to 16 keys at a time with software prefetches: the pipeline of
    /// [`Table::probe`], [`Table::probe_data`] and [`Table::lookup_probe`] over each 16.
    /// Processes `min(keys.len(), out.len())` keys.
    pub fn lookup_batch(&self, keys: &[Tuple], now: u32, out: &mut [Option<Hit>]) {
        const B: usize = 16;
        let n = keys.len().min(out.len());
        let mut t = Tally::default();
        self.advance_clock(now);
        for (kc, oc) in keys[..n].chunks(B).zip(out[..n].chunks_mut(B)) {
            let mut probes = [Probe::default(); B];
            for (p, k) in probes.iter_mut().zip(kc) {
                *p = self.probe(k);
            }
            for p in probes.iter_mut().take(kc.len()) {
                self.probe_data(p);
            }
            for (p, o) in probes.iter().zip(oc.iter_mut()) {
                *o = self.lookup_hinted(p, now, &mut t);
            }
        }
        self.ctr.flush(&t);
    }

    /// Inserts a connection: ORG half keyed by `org` translating to `xlate`, REV half keyed by
    /// `xlate.reversed()` translating to `org.reversed()`. Both become visible together.
    pub fn insert_pair(
        &self,
        org: &Tuple,
        xlate: &Tuple,
        state: ConnState,
        now: u32,
    ) -> Result<Hit, InsertError> {
        self.insert_counted(org, xlate, state, now, InsertKind::Pair)
    }

    /// [`Table::insert_pair`] for an `org` the caller has just looked up and not found (a
    /// new connection's first packet): the first round skips the pre-check of `org`. The
    /// conflict scan after the claims still finds a pair of `org` published meanwhile; the
    /// claims are then released and the next round, with the pre-check, reports
    /// [`InsertError::Exists`]. Only a hint: a wrong one costs a round, never a duplicate.
    pub fn insert_pair_missed(
        &self,
        org: &Tuple,
        xlate: &Tuple,
        state: ConnState,
        now: u32,
    ) -> Result<Hit, InsertError> {
        self.insert_counted(org, xlate, state, now, InsertKind::PairMissed)
    }

    /// [`Table::insert_pair_missed`] as one try of a port allocator: when the reply tuple
    /// (`xlate` reversed) is taken, the answer is [`InsertError::RevTaken`] without looking
    /// for `org` again, where the other inserts report a pair of `org` first. The allocator
    /// tries another port; the insert that finds one free sees a pair of `org` published
    /// meanwhile in its conflict scan and reports [`InsertError::Exists`]. Only if every
    /// port is taken must the allocator look `org` up itself before it gives up. Saves the
    /// allocator a scan of `org`'s buckets per taken port.
    pub fn insert_pair_port_try(
        &self,
        org: &Tuple,
        xlate: &Tuple,
        state: ConnState,
        now: u32,
    ) -> Result<Hit, InsertError> {
        self.insert_counted(org, xlate, state, now, InsertKind::PairPortTry)
    }

    /// [`Table::insert_pair`] for an *anchor*: a pair that other pairs keep alive by
    /// looking it up when they refresh both their halves, which they do once per epoch (see
    /// [`Hit::refreshed`]). Its idle time counts one epoch less, for expiry and eviction, so
    /// that it never ends before the pairs that keep it. The NAT's endpoint-independent
    /// mappings and address-dependent filter entries are anchors.
    pub fn insert_anchor(
        &self,
        org: &Tuple,
        xlate: &Tuple,
        state: ConnState,
        now: u32,
    ) -> Result<Hit, InsertError> {
        self.insert_counted(org, xlate, state, now, InsertKind::Anchor)
    }

    /// [`Table::insert_anchor`] for an `org` the caller has just looked up and not found
    /// (see [`Table::insert_pair_missed`]).
    pub fn insert_anchor_missed(
        &self,
        org: &Tuple,
        xlate: &Tuple,
        state: ConnState,
        now: u32,
    ) -> Result<Hit, InsertError> {
        self.insert_counted(org, xlate, state, now, InsertKind::AnchorMissed)
    }

    /// [`Table::insert_anchor`] as one try of a port allocator (see
    /// [`Table::insert_pair_port_try`]).
    pub fn insert_anchor_port_try(
        &self,
        org: &Tuple,
        xlate: &Tuple,
        state: ConnState,
        now: u32,
    ) -> Result<Hit, InsertError> {
        self.insert_counted(org, xlate, state, now, InsertKind::AnchorPortTry)
    }

    /// The public inserts: [`Table::insert_counted_as`], its outcome counts added to the
    /// table's counters at once.
    #[inline(always)]
    fn insert_counted(
        &self,
        org: &Tuple,
        xlate: &Tuple,
        state: ConnState,
        now: u32,
        kind: InsertKind,
    ) -> Result<Hit, InsertError> {
        let mut counts = OpCounts::default();
        let r = self.insert_counted_as(org, None, xlate, state, now, kind, &mut counts);
        self.ctr.flush(&counts.0);
        r
    }

    /// An insert of one of the kinds of the `insert_*` methods ([`InsertKind`]) whose
    /// outcome counts go to `counts`, as those of [`Table::lookup_probe_counted`] do, for
    /// one [`Table::flush_counts`] a batch. With `probe`, the caller's [`Table::probe`] of
    /// `org`, the key is not hashed again (a port allocator tries several translations for
    /// one key; the NAT probes a key to look it up, then inserts it). A probe made for
    /// another key is not used: `org` is then hashed here.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn insert_counted_as(
        &self,
        org: &Tuple,
        probe: Option<&Probe>,
        xlate: &Tuple,
        state: ConnState,
        now: u32,
        kind: InsertKind,
        counts: &mut OpCounts,
    ) -> Result<Hit, InsertError> {
        let (flags, hint) = kind.flags_and_hint();
        self.advance_clock(now);
        let (o0, o1) = pack(org);
        let loc = match probe {
            Some(p) if (o0, o1) == (p.k0, p.k1) => p.loc,
            _ => self.locate(o0, o1),
        };
        let t = &mut counts.0;
        let r = self.insert_inner(org, (o0, o1, loc), xlate, state, now, flags, hint, t);
        Self::count_insert(&r, t);
        r
    }

    #[inline]
    fn count_insert(r: &Result<Hit, InsertError>, t: &mut Tally) {
        t.inc(match r {
            Ok(_) => Ctr::Insert,
            Err(InsertError::Exists(_)) => Ctr::Exists,
            Err(InsertError::RevTaken) => Ctr::RevTaken,
            Err(InsertError::Full) => Ctr::Full,
            Err(InsertError::Busy) | Err(InsertError::Invalid) => Ctr::Busy,
        });
    }

    /// Whether `rev_key` is the key of a live, unexpired half (for the port allocator: a
    /// candidate translation `x` is usable only if `!is_rev_taken(&x.reversed(), now)`).
    pub fn is_rev_taken(&self, rev_key: &Tuple, now: u32) -> bool {
        let (k0, k1) = pack(rev_key);
        let loc = self.locate(k0, k1);
        for round in 0..LOOKUP_RETRIES {
            match self.find(&loc, k0, k1) {
                Find::Found(slot, s) => return !self.pair_expired(slot, &s, now),
                Find::Absent => return false,
                Find::Busy => backoff(round),
            }
        }
        true
    }

    /// Sets the state of the half `slot` and of its partner (TCP transitions). A stale handle
    /// (slot freed meanwhile) is ignored, but a slot reused by another connection (after an
    /// eviction or a cuckoo move) would get the state: prefer [`Table::set_state_hit`].
    pub fn set_state(&self, slot: u32, state: ConnState) {
        if slot >= self.nslots {
            return;
        }
        if let View::Live(s) = self.read_slot(slot) {
            self.set_state_snap(slot, &s, state);
        }
    }

    /// Like [`Table::set_state`], but only if the slot still holds the half `hit` came from
    /// (same direction and translation). Returns whether it applied.
    pub fn set_state_hit(&self, hit: &Hit, state: ConnState) -> bool {
        if hit.slot >= self.nslots {
            return false;
        }
        match self.read_slot(hit.slot) {
            View::Live(s) if s.dir() == hit.dir && s.xlate() == hit.xlate => {
                self.set_state_snap(hit.slot, &s, state);
                true
            }
            _ => false,
        }
    }

    /// Removes the connection `key` belongs to (both halves). `false` if absent.
    pub fn remove(&self, key: &Tuple) -> bool {
        self.remove_by(key, |t, slot, s, tally| t.remove_pair_snap(slot, s, tally))
    }

    /// Removes ONLY the half keyed by `key`, leaving its partner alone (for tests and demos of
    /// restoration; the packet path never does this). `false` if absent.
    pub fn remove_half(&self, key: &Tuple) -> bool {
        self.remove_by(key, |t, slot, s, tally| {
            if !t.try_claim(slot, s.ctrl, c_fp(s.ctrl)) {
                return false;
            }
            t.retire(slot, s, None);
            t.free(slot, c_next(s.ctrl, c_fp(s.ctrl)));
            tally.add_halves(-1);
            true
        })
    }

    /// Removes every connection for which `pred` is true; returns how many. Lone halves are
    /// presented as their connection too. `idle_secs` is relative to the largest `now` the
    /// table has seen.
    pub fn flush(&self, pred: impl Fn(&Session) -> bool) -> usize {
        let now = self.clock.load(Relaxed);
        let mut t = Tally::default();
        let mut n = 0;
        for slot in 0..self.nslots {
            if let View::Live(s) = self.read_slot(slot) {
                if pred(&Self::session_of(&s, now)) && self.remove_pair_snap(slot, &s, &mut t) {
                    t.inc(Ctr::Remove);
                    n += 1;
                }
            }
        }
        self.ctr.flush(&t);
        n
    }

    /// Iterates over live connections (one item per ORG half). Entries being written are
    /// skipped, never shown half-written. Not a snapshot: concurrent changes may or may not
    /// be seen.
    pub fn sessions(&self, now: u32) -> Sessions<'_> {
        self.sessions_in(0, u32::MAX, now)
    }

    /// Like [`Table::sessions`], over the `max_slots` slots from slot `from` on only: one
    /// page of a listing (bounded work per request however sparse the table);
    /// [`Sessions::next_slot`] says where the next page starts.
    pub fn sessions_in(&self, from: u32, max_slots: u32, now: u32) -> Sessions<'_> {
        let next = from.min(self.nslots);
        Sessions {
            table: self,
            next,
            end: next.saturating_add(max_slots).min(self.nslots),
            now,
        }
    }

    /// Live connections (live halves / 2, rounded up; approximate under concurrency).
    pub fn len(&self) -> usize {
        self.ctr.live_halves().div_ceil(2) as usize
    }

    /// `true` if no half is live.
    pub fn is_empty(&self) -> bool {
        self.ctr.live_halves() == 0
    }

    /// Connections the table can hold (≥ `TableConfig::connections`).
    pub fn capacity(&self) -> usize {
        self.nslots as usize / 2
    }

    /// Faults the table's memory in now, before traffic. Without it the pages are
    /// allocated and zeroed at their first write, by the worker that makes it: a fresh
    /// table's first connections each land on pages not yet touched, and with huge pages
    /// each of those costs the worker milliseconds (about 1.3 ms per 2 MiB page in the
    /// lab VM, where a worker meeting tens of them stalled long enough for its socket's
    /// fill ring to run dry and frames to be dropped). Also makes the table's memory
    /// resident up front, as its size promised. An error (a kernel before 5.14, or no
    /// memory left) leaves the table as it was: usable, faulted in as it is written.
    pub fn prefault(&self) -> std::io::Result<()> {
        #[cfg(not(loom))]
        {
            self.buckets.populate()?;
            self.tags.populate()?;
        }
        Ok(())
    }

    /// How the table's buckets are backed, resident bytes and those on huge pages
    /// (`/proc/self/smaps`, read once: call it after [`Table::prefault`]); `None` where
    /// that cannot be read. A large table on 4 KiB pages (a state file on a tmpfs mounted
    /// without `huge=`, or transparent huge pages off) costs a TLB miss on most lookups:
    /// at 1 M connections about a fifth of the established packets a core translates
    /// (`XNAT_BENCH_STATE_DIR`, the record's fourteenth session).
    /// The measure is kept for [`Table::measured_pages`].
    pub fn page_use(&self) -> Option<super::region::PageUse> {
        #[cfg(not(loom))]
        let pages = self.buckets.page_use();
        #[cfg(loom)]
        let pages = None;
        if let (Some(p), Ok(mut kept)) = (pages, self.pages.lock()) {
            *kept = Some(p);
        }
        pages
    }

    /// What the last [`Table::page_use`] measured, without measuring again (for the
    /// stats, taken every interval).
    pub fn measured_pages(&self) -> Option<super::region::PageUse> {
        self.pages.lock().ok().and_then(|p| *p)
    }

    /// Total bytes the table occupies (buckets, counters, header).
    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
            + self.tags.len() * std::mem::size_of::<AtomicU64>()
            + self.ctr.bytes()
            + std::mem::size_of::<Table>()
    }

    /// [`Table::memory_bytes`] / [`Table::capacity`], rounded to nearest (98 for large tables).
    pub fn bytes_per_connection(&self) -> usize {
        let c = self.capacity();
        (self.memory_bytes() + c / 2) / c
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> Timeouts {
        match self.timeouts.lock() {
            Ok(t) => *t,
            Err(p) => *p.into_inner(),
        }
    }

    /// Changes the timeouts of a running table (a configuration reload). Every half is
    /// judged by the new values from its next visit on: a shorter timeout can expire
    /// connections idle for longer than it at once, a longer one keeps them.
    pub fn set_timeouts(&self, t: Timeouts) {
        for (slot, v) in self.tmo.iter().zip(Self::timeout_codes(&t)) {
            slot.store(v, std::sync::atomic::Ordering::Relaxed);
        }
        match self.timeouts.lock() {
            Ok(mut g) => *g = t,
            Err(p) => *p.into_inner() = t,
        }
    }

    /// The timeout of every state code (unused codes: the "other" timeout).
    fn timeout_codes(t: &Timeouts) -> [u32; 16] {
        let mut tmo = [t.other; 16];
        for st in ConnState::ALL {
            tmo[st.code() as usize] = t.for_state(st);
        }
        tmo
    }

    /// Sums of the outcome counters.
    pub fn stats(&self) -> TableStats {
        self.ctr.snapshot()
    }
}

// An unmatched probe's hint (`NO_SLOT`) names no bucket of any table (see
// `Table::probe_refresh`).
const _: () = assert!((MAX_CONNECTIONS * 2).div_ceil(WAYS) <= NO_SLOT as usize / WAYS);

/// What the third stage of the batch pipeline foretells of a probed key's lookup
/// ([`Table::probe_refresh`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foretold {
    /// The lookup will refresh the pair (see [`Hit::refreshed`]): the direction and
    /// translation of the half it finds.
    Refresh(Dir, Tuple),
    /// A lookup that refreshes no more than its own half, or one not foretold (a busy way,
    /// a tag that another key's way carries).
    Other,
    /// The probe matched no way ([`Probe::matched`]): the key is absent, the lookup misses.
    Miss,
}

/// A key hashed once, for the batch pipeline ([`Table::probe`]): its packed words and its
/// two candidate buckets and fingerprint.
#[derive(Clone, Copy, Debug, Default)]
pub struct Probe {
    k0: u64,
    k1: u64,
    pub(super) loc: Loc,
    /// The slot whose fingerprint matched ([`Table::probe_data`]), or `NO_SLOT`.
    hint: u32,
}

impl Probe {
    /// Whether [`Table::probe_data`] found a way carrying the key's tag: `false` means the
    /// key was absent when its tag words were read (a key's way always carries its tag),
    /// so that a lookup of it misses unless it was inserted since.
    #[inline]
    pub fn matched(&self) -> bool {
        self.hint != NO_SLOT
    }

    /// Whether this probe was made for `key`.
    #[inline]
    pub fn is_for(&self, key: &Tuple) -> bool {
        pack(key) == (self.k0, self.k1)
    }
}

/// Iterator returned by [`Table::sessions`].
pub struct Sessions<'a> {
    table: &'a Table,
    next: u32,
    end: u32,
    now: u32,
}

impl Sessions<'_> {
    /// The slot the iteration goes on from; `None` once the whole table is behind it.
    pub fn next_slot(&self) -> Option<u32> {
        (self.next < self.table.nslots).then_some(self.next)
    }
}

impl Iterator for Sessions<'_> {
    type Item = Session;

    fn next(&mut self) -> Option<Session> {
        while self.next < self.end {
            let slot = self.next;
            self.next += 1;
            if let View::Live(s) = self.table.read_slot(slot) {
                if s.dir() == Dir::Org {
                    // The pair's idle time: its REV half may have been seen later.
                    let mut pair = s;
                    if let Partner::Ok(_, ps) = self.table.partner_of(slot, &s) {
                        pair.d[D_META] = merge_meta(s.meta(), ps.meta());
                    }
                    return Some(Table::session_of(&pair, self.now));
                }
            }
        }
        None
    }
}
