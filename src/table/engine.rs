//! The table proper: layout, seqlock slots, pair protocol, eviction. See the module docs in
//! `mod.rs` for the protocol and its correctness argument.

use super::region::Region;
use super::stats::{Counters, Ctr, Tally};
use super::{
    ConnState, Dir, Hit, InsertError, Session, TableConfig, TableError, TableStats, Timeouts, Tuple,
};
use std::hint::spin_loop;
use std::sync::atomic::Ordering::{self, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicU32, AtomicU64};

/// Ways (halves) per bucket.
pub(crate) const WAYS: usize = 8;
/// Data words per slot.
const DW: usize = 5;
const D_K0: usize = 0;
const D_K1: usize = 1;
const D_X0: usize = 2;
const D_X1: usize = 3;
const D_META: usize = 4;

/// Largest supported `TableConfig::connections` (slot handles are u32, `u32::MAX` is "none").
pub(crate) const MAX_CONNECTIONS: usize = (1usize << 31) - 64;
const NO_SLOT: u32 = u32::MAX;

const KEY1_MASK: u64 = (1 << 40) - 1;
const DIR_REV_BIT: u64 = 1 << 40;
const FLAG_ASSURED: u64 = 1 << 40;
const STATE_MASK: u64 = 0xFF << 32;
/// Saturating count of refreshes (seconds with traffic after the first) in meta bits 48..56.
const RCOUNT_SHIFT: u32 = 48;
const RCOUNT_ONE: u64 = 1 << RCOUNT_SHIFT;
const RCOUNT_MASK: u64 = 0xFF << RCOUNT_SHIFT;
/// Refreshes after which an assured non-TCP flow is *protected* (segmented LRU).
const PROTECT_AFTER: u64 = 2;
/// Generation of the slot's occupant in meta bits 56..64: bumped whenever a new half is
/// written into the slot, checked by every CAS on the meta word (refresh, state), so that a
/// write through a slot index taken from an old snapshot cannot land on a new occupant.
const GEN_SHIFT: u32 = 56;
const GEN_MASK: u64 = 0xFF << GEN_SHIFT;
/// Eviction scores below this belong to protected pairs (class 1).
const PROTECTED_MAX_SCORE: u64 = 2 << 40;
const LOW32: u64 = 0xFFFF_FFFF;

/// Rounds a lookup on the packet path waits for a BUSY slot (a claim in flight takes a few
/// hundred nanoseconds): short spins only, never a yield of the pinned worker; after them
/// the lookup reports a miss (counted as `busy`).
const LOOKUP_RETRIES: u32 = 2;
/// Times a scan that found nothing is repeated because a cuckoo move was in flight on the
/// key's stripe (see [`Table::moves`]); after them the scan reports BUSY.
const MOVE_RESCANS: u32 = 3;
/// Relocation stripes: a move of a key is announced on the stripe of its bucket pair.
const MOVE_STRIPES: usize = 256;
/// The low half of a stripe word counts moves in flight, the high half moves completed.
const MOVE_START: u64 = 1;
const MOVE_END: u64 = (1 << 32) - 1;
const INSERT_ATTEMPTS: u32 = 16;
const CLAIM_ATTEMPTS: u32 = 4;
const REMOVE_ATTEMPTS: u32 = 8;

/// One bucket: a line of control words, then the data of its 8 ways. 384 B, 6 lines.
#[repr(C, align(64))]
struct Bucket {
    ctrl: [AtomicU64; WAYS],
    data: [[AtomicU64; DW]; WAYS],
}

const _: () = assert!(std::mem::size_of::<Bucket>() == 384);

#[cfg(test)]
#[test]
fn an_empty_bucket_is_all_zero() {
    let b = Bucket::new();
    // SAFETY: Bucket is repr(C) and made of AtomicU64s: reading it as bytes is fine.
    let bytes: &[u8; 384] = unsafe { &*(&b as *const Bucket).cast() };
    assert!(bytes.iter().all(|&x| x == 0));
}

impl Bucket {
    /// An empty bucket: all zero, which is what [`Region::zeroed`] provides.
    #[cfg(test)]
    fn new() -> Bucket {
        Bucket {
            ctrl: std::array::from_fn(|_| AtomicU64::new(0)),
            data: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

// ---- control word -------------------------------------------------------------------------

#[inline(always)]
const fn c_seq(c: u64) -> u32 {
    c as u32
}
#[inline(always)]
const fn c_fp(c: u64) -> u32 {
    (c >> 32) as u32
}
#[inline(always)]
const fn c_busy(c: u64) -> bool {
    c & 1 == 1
}
#[inline(always)]
const fn c_free(c: u64) -> bool {
    c & 1 == 0 && c >> 32 == 0
}
#[inline(always)]
const fn c_live(c: u64) -> bool {
    c & 1 == 0 && c >> 32 != 0
}
#[inline(always)]
const fn c_make(fp: u32, seq: u32) -> u64 {
    ((fp as u64) << 32) | seq as u64
}
/// Next sequence value with fingerprint `fp`.
#[inline(always)]
const fn c_next(c: u64, fp: u32) -> u64 {
    c_make(fp, c_seq(c).wrapping_add(1))
}

// ---- keys, meta -----------------------------------------------------------------------------

#[inline(always)]
fn pack(t: &Tuple) -> (u64, u64) {
    (
        t.src as u64 | ((t.dst as u64) << 32),
        t.sport as u64 | ((t.dport as u64) << 16) | ((t.proto as u64) << 32),
    )
}

#[inline(always)]
const fn m_last(m: u64) -> u32 {
    m as u32
}
#[inline(always)]
const fn m_state_code(m: u64) -> u8 {
    (m >> 32) as u8
}
#[inline(always)]
const fn m_make(last: u32, state: ConnState) -> u64 {
    let flags = match state {
        ConnState::TcpEstablished => FLAG_ASSURED,
        _ => 0,
    };
    last as u64 | ((state.code() as u64) << 32) | flags
}

/// The generation bits of a meta word.
#[inline(always)]
const fn m_gen(m: u64) -> u8 {
    (m >> GEN_SHIFT) as u8
}
/// `m` with generation `g`.
#[inline(always)]
const fn m_with_gen(m: u64, g: u8) -> u64 {
    (m & !GEN_MASK) | ((g as u64) << GEN_SHIFT)
}

#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let m = (a as u128).wrapping_mul(b as u128);
    (m as u64) ^ ((m >> 64) as u64)
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5EED_u64)
}

/// Issues a cache prefetch hint for the line holding `p`.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `_mm_prefetch` is only a hint to the cache hierarchy: it does not dereference
        // the pointer architecturally and cannot fault for any address. SSE is part of the
        // x86_64 baseline, so the instruction always exists.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = p;
    }
}

thread_local! {
    static JITTER: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
thread_local! {
    /// Backoff rounds and yields of this thread (tests of the packet-path bounds).
    static BACKOFFS: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
}

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

/// Backoff rounds and yields this thread went through so far (tests only).
#[cfg(test)]
pub(crate) fn backoffs() -> (u32, u32) {
    BACKOFFS.with(|c| c.get())
}

/// Bounded, jittered backoff (jitter breaks the lock-step of two symmetric aborts). Rounds
/// below 6 spin; later ones (only inserts and removals get there) yield.
#[cold]
fn backoff(round: u32) {
    #[cfg(test)]
    BACKOFFS.with(|c| {
        let (b, y) = c.get();
        c.set((b + 1, y + u32::from(round >= 6)));
    });
    if round < 6 {
        let j = JITTER.with(|c| {
            let mut x = c.get();
            if x == 0 {
                x = (c as *const _ as usize as u32) | 1;
            }
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            c.set(x);
            x
        });
        let n = (8u32 << round) + (j & ((8u32 << round) - 1));
        for _ in 0..n {
            spin_loop();
        }
    } else {
        std::thread::yield_now();
    }
}

/// A validated snapshot of a LIVE slot.
#[derive(Clone, Copy, Debug)]
struct Snap {
    ctrl: u64,
    d: [u64; DW],
}

impl Snap {
    #[inline(always)]
    fn key_is(&self, k0: u64, k1: u64) -> bool {
        self.d[D_K0] == k0 && self.d[D_K1] & KEY1_MASK == k1
    }
    #[inline(always)]
    fn key(&self) -> Tuple {
        let (a, b) = (self.d[D_K0], self.d[D_K1]);
        Tuple {
            src: a as u32,
            dst: (a >> 32) as u32,
            sport: b as u16,
            dport: (b >> 16) as u16,
            proto: (b >> 32) as u8,
        }
    }
    #[inline(always)]
    fn dir(&self) -> Dir {
        if self.d[D_K1] & DIR_REV_BIT != 0 {
            Dir::Rev
        } else {
            Dir::Org
        }
    }
    #[inline(always)]
    fn xlate(&self) -> Tuple {
        let (a, b) = (self.d[D_X0], self.d[D_X1]);
        Tuple {
            src: a as u32,
            dst: (a >> 32) as u32,
            sport: b as u16,
            dport: (b >> 16) as u16,
            proto: (self.d[D_K1] >> 32) as u8,
        }
    }
    #[inline(always)]
    fn xlate_is(&self, x: &Tuple) -> bool {
        self.d[D_X0] == x.src as u64 | ((x.dst as u64) << 32)
            && self.d[D_X1] & LOW32 == x.sport as u64 | ((x.dport as u64) << 16)
    }
    #[inline(always)]
    fn partner(&self) -> u32 {
        (self.d[D_X1] >> 32) as u32
    }
    #[inline(always)]
    fn meta(&self) -> u64 {
        self.d[D_META]
    }
}

#[derive(Clone, Copy, Default, Debug)]
struct Loc {
    b1: u32,
    b2: u32,
    fp: u32,
}

enum Find {
    Found(u32, Snap),
    Busy,
    Absent,
}

enum View {
    Free,
    Busy,
    Live(Snap),
}

enum Partner {
    Ok(u32, Snap),
    Busy,
    Missing,
    Conflict,
}

enum Claim {
    Got(u32, u64),
    Full,
    Busy,
}

enum Victim {
    /// The best victim found: its slot, the control word it was scored under, its score
    /// (scored again once claimed).
    Some {
        /// The victim's slot.
        slot: u32,
        /// Its control word when scored.
        ctrl: u64,
        /// Its eviction score (higher: evict first).
        score: u64,
    },
    AllBusy,
    None,
}

/// The paired NAT table (see the module docs). Share it between workers with `Arc<Table>`.
pub struct Table {
    buckets: Region<Bucket>,
    nb: u64,
    nslots: u32,
    seed: [u64; 3],
    tmo: [u32; 16],
    timeouts: Timeouts,
    evict_protected: bool,
    /// Largest `now` seen (for `flush`'s idle figures); written at most once per second.
    clock: AtomicU32,
    /// Cuckoo moves announced per stripe of bucket pairs (moves in flight in the low 32
    /// bits, moves completed in the high 32 bits). A scan that finds nothing re-reads its
    /// key's stripe afterwards and trusts the answer only if no move started, ran or ended
    /// meanwhile (the relocation race between a key's two bucket scans).
    moves: [AtomicU64; MOVE_STRIPES],
    ctr: Counters,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("timeouts", &self.timeouts)
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
        let buckets = Region::<Bucket>::zeroed(nb).ok_or(TableError::OutOfMemory { bytes })?;
        let mut s = cfg.seed.unwrap_or_else(random_seed);
        let seed = [splitmix(&mut s), splitmix(&mut s), splitmix(&mut s)];
        Ok(Self::assemble(cfg, buckets, nb, seed))
    }

    /// Like [`Table::new`], but the table lives in the state file at `path` (put it on a
    /// tmpfs such as /run or /dev/shm). If the file holds a table of the same size made
    /// since the last boot, its connections are taken over (`true` is returned with the
    /// table): a gateway restarted with the same file keeps every live translation.
    /// Otherwise the file is reset to an empty table.
    ///
    /// Only one process may use a state file at a time; the gateway guarantees this by
    /// owning the interfaces' XDP attachment before it opens the file.
    pub fn with_state_file(
        cfg: TableConfig,
        path: &std::path::Path,
    ) -> Result<(Table, bool), TableError> {
        let nb = Self::buckets_for(&cfg)?;
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        // The hash seed is derived from the header so that a table re-opened with the same
        // header finds its entries in the same buckets.
        let mut header = Vec::with_capacity(128);
        header.extend_from_slice(b"XNATTBL1");
        header.extend_from_slice(&(nb as u64).to_le_bytes());
        header.extend_from_slice(&(std::mem::size_of::<Bucket>() as u64).to_le_bytes());
        header.extend_from_slice(&(WAYS as u64).to_le_bytes());
        let mut b = [0u8; 36];
        let bl = boot.trim().len().min(36);
        b[..bl].copy_from_slice(&boot.trim().as_bytes()[..bl]);
        header.extend_from_slice(&b);
        let fresh_seed = cfg.seed.unwrap_or_else(random_seed);
        // The seed itself is part of the header only when the file is (re)created: read it
        // back from an existing file with a matching prefix.
        let prefix_len = header.len();
        // Only the header is read (the file holds ~96 MB per million connections).
        let existing = (|| {
            use std::io::Read;
            let mut f = std::fs::File::open(path).ok()?;
            let mut h = vec![0u8; prefix_len + 8];
            f.read_exact(&mut h).ok()?;
            (h[..prefix_len] == header[..]).then(|| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&h[prefix_len..prefix_len + 8]);
                u64::from_le_bytes(w)
            })
        })();
        let seed_word = existing.unwrap_or(fresh_seed);
        header.extend_from_slice(&seed_word.to_le_bytes());
        let (buckets, resumed) =
            Region::<Bucket>::state_file(path, nb, &header).map_err(|reason| {
                TableError::StateFile {
                    path: path.display().to_string(),
                    reason,
                }
            })?;
        let mut s = seed_word;
        let seed = [splitmix(&mut s), splitmix(&mut s), splitmix(&mut s)];
        let t = Self::assemble(cfg, buckets, nb, seed);
        if resumed {
            // Still single-threaded: a slot left BUSY by a process killed mid-claim would
            // stay BUSY forever (its key could never be looked up or inserted again). Free
            // it; if it held one half of a live pair, the partner restores it on its next
            // hit.
            for slot in 0..t.nslots {
                let c = t.ctrl(slot).load(Acquire);
                if c_busy(c) {
                    t.ctrl(slot)
                        .store(c_make(0, c_seq(c).wrapping_add(1)), Release);
                }
            }
            // The occupancy counter starts at zero: count the halves taken over.
            let live = (0..t.nslots)
                .filter(|&slot| matches!(t.read_slot(slot), View::Live(_)))
                .count();
            let mut tally = Tally::default();
            tally.add_halves(live as i64);
            t.ctr.flush(&tally);
        }
        Ok((t, resumed))
    }

    fn buckets_for(cfg: &TableConfig) -> Result<usize, TableError> {
        if cfg.connections == 0 {
            return Err(TableError::ZeroCapacity);
        }
        if cfg.connections > MAX_CONNECTIONS {
            return Err(TableError::TooLarge {
                connections: cfg.connections,
            });
        }
        Ok((cfg.connections * 2).div_ceil(WAYS).max(2))
    }

    fn assemble(cfg: TableConfig, buckets: Region<Bucket>, nb: usize, seed: [u64; 3]) -> Table {
        let t = cfg.timeouts;
        let mut tmo = [t.other; 16];
        for st in [
            ConnState::TcpSyn,
            ConnState::TcpEstablished,
            ConnState::TcpClosing,
            ConnState::Udp,
            ConnState::Icmp,
            ConnState::Other,
            ConnState::TcpFinOrg,
            ConnState::TcpFinRev,
            ConnState::TcpReset,
        ] {
            tmo[st.code() as usize] = t.for_state(st);
        }
        Table {
            buckets,
            nb: nb as u64,
            nslots: (nb * WAYS) as u32,
            seed,
            tmo,
            timeouts: t,
            evict_protected: cfg.evict_protected,
            clock: AtomicU32::new(0),
            moves: std::array::from_fn(|_| AtomicU64::new(0)),
            ctr: Counters::new(),
        }
    }

    // ---- addressing ---------------------------------------------------------------------

    #[inline(always)]
    fn locate(&self, k0: u64, k1: u64) -> Loc {
        let h = fold_mul(k0 ^ self.seed[0], k1 ^ self.seed[1]);
        let g = fold_mul(h ^ self.seed[2], 0x9E37_79B9_7F4A_7C15);
        let fp = ((g >> 32) as u32) | 1;
        let b1 = ((g & LOW32) * self.nb) >> 32;
        let mut b2 = ((h & LOW32) * self.nb) >> 32;
        if b2 == b1 {
            b2 = if b1 + 1 == self.nb { 0 } else { b1 + 1 };
        }
        Loc {
            b1: b1 as u32,
            b2: b2 as u32,
            fp,
        }
    }

    #[inline(always)]
    fn ctrl(&self, slot: u32) -> &AtomicU64 {
        &self.buckets[slot as usize / WAYS].ctrl[slot as usize % WAYS]
    }

    #[inline(always)]
    fn data(&self, slot: u32) -> &[AtomicU64; DW] {
        &self.buckets[slot as usize / WAYS].data[slot as usize % WAYS]
    }

    #[inline(always)]
    fn timeout_of(&self, meta: u64) -> u32 {
        self.tmo[(m_state_code(meta) & 15) as usize]
    }

    #[inline(always)]
    fn expired(&self, meta: u64, now: u32) -> bool {
        now.saturating_sub(m_last(meta)) > self.timeout_of(meta)
    }

    #[inline(always)]
    fn advance_clock(&self, now: u32) {
        if self.clock.load(Relaxed) < now {
            self.clock.fetch_max(now, Relaxed);
        }
    }

    // ---- seqlock primitives --------------------------------------------------------------

    /// Reads the data of `slot` and validates it against the control value `c1` (loaded with
    /// acquire by the caller). `None` if the slot changed meanwhile.
    #[inline(always)]
    fn read_live(&self, slot: u32, c1: u64) -> Option<Snap> {
        let d = self.data(slot);
        let v = [
            d[0].load(Relaxed),
            d[1].load(Relaxed),
            d[2].load(Relaxed),
            d[3].load(Relaxed),
            d[4].load(Relaxed),
        ];
        fence(Acquire);
        let c2 = self.ctrl(slot).load(Relaxed);
        (c1 == c2).then_some(Snap { ctrl: c1, d: v })
    }

    fn read_slot(&self, slot: u32) -> View {
        for _ in 0..4 {
            let c = self.ctrl(slot).load(Acquire);
            if c_busy(c) {
                return View::Busy;
            }
            if c_free(c) {
                return View::Free;
            }
            if let Some(s) = self.read_live(slot, c) {
                return View::Live(s);
            }
        }
        View::Busy
    }

    /// CAS `expected` (even) -> next odd value carrying fingerprint `fp`.
    #[inline]
    fn try_claim(&self, slot: u32, expected: u64, fp: u32) -> bool {
        let ok = self
            .ctrl(slot)
            .compare_exchange(expected, c_next(expected, fp), SeqCst, Relaxed)
            .is_ok();
        if ok {
            // Orders the data stores that follow after the (odd) claim, for seqlock readers.
            fence(Release);
        }
        ok
    }

    /// BUSY -> LIVE with the same fingerprint (publish new data, or undo a claim).
    #[inline]
    fn publish(&self, slot: u32, busy: u64) {
        self.ctrl(slot).store(c_next(busy, c_fp(busy)), Release);
    }

    /// BUSY -> FREE.
    #[inline]
    fn free(&self, slot: u32, busy: u64) {
        self.ctrl(slot).store(c_next(busy, 0), Release);
    }

    #[allow(clippy::too_many_arguments)]
    fn write_half(
        &self,
        slot: u32,
        k0: u64,
        k1: u64,
        dir: Dir,
        x: &Tuple,
        partner: u32,
        meta: u64,
    ) {
        let d = self.data(slot);
        let dirbit = if dir == Dir::Rev { DIR_REV_BIT } else { 0 };
        d[D_K0].store(k0, Relaxed);
        d[D_K1].store(k1 | dirbit, Relaxed);
        d[D_X0].store(x.src as u64 | ((x.dst as u64) << 32), Relaxed);
        d[D_X1].store(
            x.sport as u64 | ((x.dport as u64) << 16) | ((partner as u64) << 32),
            Relaxed,
        );
        // A new occupant: the next generation of this slot (see `GEN_SHIFT`).
        let g = m_gen(d[D_META].load(Relaxed)).wrapping_add(1);
        d[D_META].store(m_with_gen(meta, g), Relaxed);
    }

    /// Advances last-seen to `now` (never backwards) and optionally sets the assured flag,
    /// if the slot still holds the occupant of generation `gen` (else does nothing).
    #[inline]
    fn touch(&self, slot: u32, gen: u8, now: u32, assure: bool) {
        let m = &self.data(slot)[D_META];
        let mut cur = m.load(Relaxed);
        loop {
            if m_gen(cur) != gen {
                return;
            }
            let mut new = cur;
            if now > m_last(cur) {
                new = (cur & !LOW32) | now as u64;
                if new & RCOUNT_MASK != RCOUNT_MASK {
                    new += RCOUNT_ONE;
                }
            }
            if assure {
                new |= FLAG_ASSURED;
            }
            if new == cur {
                return;
            }
            match m.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(x) => cur = x,
            }
        }
    }

    /// Sets the state in the meta word of `slot` if it still holds generation `gen`.
    fn set_meta_state(&self, slot: u32, gen: u8, state: ConnState) {
        let m = &self.data(slot)[D_META];
        let mut cur = m.load(Relaxed);
        loop {
            if m_gen(cur) != gen {
                return;
            }
            let mut new = (cur & !STATE_MASK) | ((state.code() as u64) << 32);
            if state == ConnState::TcpEstablished {
                new |= FLAG_ASSURED;
            }
            if new == cur {
                return;
            }
            match m.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(x) => cur = x,
            }
        }
    }

    // ---- search ---------------------------------------------------------------------------

    /// The move stripe of a key (the same for both of its buckets, see [`Table::moves`]).
    #[inline(always)]
    fn stripe(&self, loc: &Loc) -> &AtomicU64 {
        &self.moves[(loc.b1 ^ loc.b2) as usize % MOVE_STRIPES]
    }

    /// Finds the LIVE half keyed by `(k0, k1)` (acquire loads).
    #[inline]
    fn find(&self, loc: &Loc, k0: u64, k1: u64) -> Find {
        self.scan_stable(loc, k0, k1, Acquire, [NO_SLOT; 2])
    }

    /// Post-claim conflict scan (`SeqCst` loads, see module docs), skipping our own claims.
    fn rescan(&self, loc: &Loc, k0: u64, k1: u64, mine: [u32; 2]) -> Find {
        self.scan_stable(loc, k0, k1, SeqCst, mine)
    }

    /// Scans both buckets of a key; an `Absent` answer is trusted only if no cuckoo move of
    /// a key of this bucket pair was in flight or completed during the scan (a key moved from
    /// the second bucket into the first between the two scans would otherwise look absent).
    /// The scan is repeated a few times, then reported as BUSY.
    #[inline]
    fn scan_stable(&self, loc: &Loc, k0: u64, k1: u64, ord: Ordering, mine: [u32; 2]) -> Find {
        let stripe = self.stripe(loc);
        for _ in 0..MOVE_RESCANS {
            let m1 = stripe.load(Acquire);
            match self.scan(loc, k0, k1, ord, mine) {
                Find::Absent => {}
                other => return other,
            }
            // The bucket loads above are acquire (or SeqCst) loads, so this load cannot be
            // performed before them.
            let m2 = stripe.load(Acquire);
            if m1 == m2 && m1 as u32 == 0 {
                return Find::Absent;
            }
            spin_loop();
        }
        Find::Busy
    }

    #[inline(always)]
    fn scan(&self, loc: &Loc, k0: u64, k1: u64, ord: Ordering, mine: [u32; 2]) -> Find {
        let mut busy = false;
        for b in [loc.b1, loc.b2] {
            let bk = &self.buckets[b as usize];
            for (w, cw) in bk.ctrl.iter().enumerate() {
                let c = cw.load(ord);
                if c_fp(c) != loc.fp {
                    continue;
                }
                let slot = b * WAYS as u32 + w as u32;
                if mine.contains(&slot) {
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
    fn partner_of(&self, slot: u32, s: &Snap) -> Partner {
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

    /// Claims the LIVE half `slot` and its partner (if present), in slot order. Returns the
    /// BUSY control values, or `None` (nothing claimed) if anything changed meanwhile.
    fn claim_pair(&self, slot: u32, s: &Snap) -> Option<(u64, Option<(u32, u64)>)> {
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
    fn remove_pair_snap(&self, slot: u32, s: &Snap, t: &mut Tally) -> bool {
        match self.claim_pair(slot, s) {
            Some((mine, partner)) => {
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

    // ---- slot allocation and eviction -----------------------------------------------------

    fn free_ways(&self, b: u32) -> usize {
        self.buckets[b as usize]
            .ctrl
            .iter()
            .filter(|c| c_free(c.load(Relaxed)))
            .count()
    }

    /// Eviction score (higher = evict first); `None` = not evictable under the policy.
    /// Classes, best victim first: expired; never assured; TCP closing; assured but not yet
    /// proven (probationary); protected (TCP established, or refreshed in
    /// `PROTECT_AFTER` distinct seconds) — the last only if `evict_protected`.
    #[inline]
    fn victim_score(&self, meta: u64, now: u32) -> Option<(u64, bool)> {
        let to = self.timeout_of(meta);
        let idle = now.saturating_sub(m_last(meta));
        let state = m_state_code(meta);
        if idle > to {
            Some(((5 << 40) | (idle - to) as u64, true))
        } else if meta & FLAG_ASSURED == 0 {
            Some(((4 << 40) | idle as u64, false))
        } else if state == ConnState::TcpClosing.code() || state == ConnState::TcpReset.code() {
            Some(((3 << 40) | idle as u64, false))
        } else if state != ConnState::TcpEstablished.code()
            && state != ConnState::TcpFinOrg.code()
            && state != ConnState::TcpFinRev.code()
            && (meta & RCOUNT_MASK) >> RCOUNT_SHIFT < PROTECT_AFTER
        {
            Some(((2 << 40) | idle as u64, false))
        } else if self.evict_protected {
            Some((
                (1 << 40) | (((idle as u64) << 16) / (to.max(1) as u64)),
                false,
            ))
        } else {
            None
        }
    }

    fn pick_victim(&self, loc: &Loc, now: u32, exclude: u32) -> Victim {
        let mut best: Option<(u64, u32, u64, bool)> = None;
        let mut busy = false;
        for b in [loc.b1, loc.b2] {
            let bk = &self.buckets[b as usize];
            for (w, cw) in bk.ctrl.iter().enumerate() {
                let slot = b * WAYS as u32 + w as u32;
                if slot == exclude {
                    continue;
                }
                let c = cw.load(Acquire);
                if c_busy(c) {
                    busy = true;
                    continue;
                }
                if !c_live(c) {
                    continue;
                }
                let meta = bk.data[w][D_META].load(Relaxed);
                if let Some((score, exp)) = self.victim_score(meta, now) {
                    if best.is_none_or(|(bs, ..)| score > bs) {
                        best = Some((score, slot, c, exp));
                    }
                }
            }
        }
        match best {
            Some((score, slot, c, _)) => Victim::Some {
                slot,
                ctrl: c,
                score,
            },
            None if busy => Victim::AllBusy,
            None => Victim::None,
        }
    }

    /// Obtains a BUSY slot carrying `loc.fp` in one of `loc`'s buckets: a free way, or the
    /// way of an evicted pair. Never touches `exclude`.
    fn claim_slot(&self, loc: &Loc, now: u32, exclude: u32, t: &mut Tally) -> Claim {
        for round in 0..CLAIM_ATTEMPTS {
            if round > 0 {
                backoff(round);
            }
            // The less loaded bucket, ties to the first (balanced allocation: keeps buckets
            // from filling up long before the table does; at low load most keys sit in b1).
            let order = if self.free_ways(loc.b2) > self.free_ways(loc.b1) {
                [loc.b2, loc.b1]
            } else {
                [loc.b1, loc.b2]
            };
            for b in order {
                let bk = &self.buckets[b as usize];
                for (w, cw) in bk.ctrl.iter().enumerate() {
                    let c = cw.load(Relaxed);
                    let slot = b * WAYS as u32 + w as u32;
                    if c_free(c) && slot != exclude && self.try_claim(slot, c, loc.fp) {
                        return Claim::Got(slot, c_next(c, loc.fp));
                    }
                }
            }
            match self.pick_victim(loc, now, exclude) {
                Victim::None => {
                    // Nothing evictable under the policy: a cuckoo step may still make room.
                    return match self.relocate(loc, now, t) {
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
                        // Only protected pairs here: first try to make room by moving one of
                        // them to its other bucket (one cuckoo step), evicting nothing live.
                        if let Some(got) = self.relocate(loc, now, t) {
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
                    if let Some((p, pb)) = partner {
                        self.free(p, pb);
                        t.add_halves(-1);
                    }
                    t.add_halves(-1);
                    t.inc(if expired { Ctr::Expire } else { Ctr::Evict });
                    // Re-label our claim with the new key's fingerprint (stays odd = BUSY).
                    let nb = c_make(loc.fp, c_seq(mine).wrapping_add(2));
                    self.ctrl(v).store(nb, SeqCst);
                    return Claim::Got(v, nb);
                }
            }
        }
        Claim::Busy
    }

    /// Scores the claimed victim `v` again (both halves BUSY, ours): `Some(expired)` if it may
    /// still be evicted with a score of at least `min_score`; otherwise releases both claims
    /// unchanged and returns `None`.
    fn rescore(
        &self,
        v: u32,
        mine: u64,
        partner: Option<(u32, u64)>,
        now: u32,
        min_score: u64,
    ) -> Option<bool> {
        let meta = self.data(v)[D_META].load(Acquire);
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

    /// Claims a slot in bucket `b` for fingerprint `fp`: a free way, or the way of an
    /// expendable (non-protected) pair, evicted. One attempt, no retries.
    fn claim_in_bucket(&self, b: u32, fp: u32, now: u32, t: &mut Tally) -> Option<(u32, u64)> {
        let bk = &self.buckets[b as usize];
        let mut best: Option<(u64, u32, u64, bool)> = None;
        for (w, cw) in bk.ctrl.iter().enumerate() {
            let slot = b * WAYS as u32 + w as u32;
            let c = cw.load(Acquire);
            if c_free(c) {
                if self.try_claim(slot, c, fp) {
                    return Some((slot, c_next(c, fp)));
                }
                continue;
            }
            if !c_live(c) {
                continue;
            }
            let meta = bk.data[w][D_META].load(Relaxed);
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
        if let Some((p, pb)) = partner {
            self.free(p, pb);
            t.add_halves(-1);
        }
        t.add_halves(-1);
        t.inc(if expired { Ctr::Expire } else { Ctr::Evict });
        let nb = c_make(fp, c_seq(mine).wrapping_add(2));
        self.ctrl(v).store(nb, SeqCst);
        Some((v, nb))
    }

    /// One cuckoo step: moves a LIVE half out of `loc`'s buckets into its alternate bucket
    /// (free way or expendable victim there) and returns its old slot, claimed for `loc.fp`.
    ///
    /// The half is claimed (BUSY, same fingerprint) for the whole move, so no reader or writer
    /// ever sees two LIVE copies of its key: lookups of it wait on BUSY and then find the new
    /// copy; its partner's hint goes stale and is repaired by content on the next visit.
    fn relocate(&self, loc: &Loc, now: u32, t: &mut Tally) -> Option<(u32, u64)> {
        for b in [loc.b1, loc.b2] {
            for w in 0..WAYS {
                let slot = b * WAYS as u32 + w as u32;
                let c = self.ctrl(slot).load(Acquire);
                if !c_live(c) {
                    continue;
                }
                let Some(s) = self.read_live(slot, c) else {
                    continue;
                };
                let l2 = self.locate(s.d[D_K0], s.d[D_K1] & KEY1_MASK);
                let alt = if l2.b1 == b { l2.b2 } else { l2.b1 };
                if alt == loc.b1 || alt == loc.b2 || !self.has_room(alt, now) {
                    continue;
                }
                if let Some(nb) = self.move_half(slot, c, &l2, alt, loc.fp, now, t) {
                    return Some((slot, nb));
                }
            }
        }
        None
    }

    /// Moves the LIVE half at `slot` (control word `c`, key located at `l2`) into bucket
    /// `alt`, its other candidate bucket (a free way there, or an expendable pair evicted).
    /// Its old slot is then claimed for fingerprint `then_fp` (BUSY, returned), or freed if
    /// `then_fp` is 0. `None` if the half changed meanwhile or `alt` had no room.
    ///
    /// The half stays BUSY with its own fingerprint for the whole move, so its key is never
    /// LIVE twice; the move is announced on the key's stripe from before the claim until
    /// after its old slot is relabelled, so that a scan of the key running across the move
    /// does not trust an empty answer (see [`Table::moves`]).
    #[allow(clippy::too_many_arguments)]
    fn move_half(
        &self,
        slot: u32,
        c: u64,
        l2: &Loc,
        alt: u32,
        then_fp: u32,
        now: u32,
        t: &mut Tally,
    ) -> Option<u64> {
        let stripe = self.stripe(l2);
        stripe.fetch_add(MOVE_START, SeqCst);
        let r = (|| {
            if !self.try_claim(slot, c, c_fp(c)) {
                return None;
            }
            let sb = c_next(c, c_fp(c));
            let Some((d, db)) = self.claim_in_bucket(alt, l2.fp, now, t) else {
                self.publish(slot, sb);
                return None;
            };
            let (src, dst) = (self.data(slot), self.data(d));
            for i in 0..D_META {
                dst[i].store(src[i].load(Relaxed), Relaxed);
            }
            // The moved half is a new occupant of `d`: next generation of that slot.
            let meta = src[D_META].load(Relaxed);
            dst[D_META].store(
                m_with_gen(meta, m_gen(dst[D_META].load(Relaxed)).wrapping_add(1)),
                Relaxed,
            );
            self.publish(d, db);
            let nb = if then_fp == 0 {
                c_next(sb, 0)
            } else {
                c_make(then_fp, c_seq(sb).wrapping_add(2))
            };
            self.ctrl(slot).store(nb, SeqCst);
            t.inc(Ctr::Relocate);
            Some(nb)
        })();
        stripe.fetch_add(MOVE_END, Release);
        r
    }

    /// Whether bucket `b` has a free way or an expendable (non-protected) pair.
    fn has_room(&self, b: u32, now: u32) -> bool {
        let bk = &self.buckets[b as usize];
        bk.ctrl.iter().enumerate().any(|(w, cw)| {
            let c = cw.load(Relaxed);
            c_free(c)
                || (c_live(c)
                    && self
                        .victim_score(bk.data[w][D_META].load(Relaxed), now)
                        .is_some_and(|(sc, _)| sc >= PROTECTED_MAX_SCORE))
        })
    }

    // ---- hit handling, restore -------------------------------------------------------------

    #[inline(always)]
    fn hit_of(&self, slot: u32, s: &Snap, restored: bool) -> Hit {
        Hit {
            dir: s.dir(),
            xlate: s.xlate(),
            state: ConnState::from_code(m_state_code(s.meta())),
            slot,
            restored,
            refreshed: false,
        }
    }

    /// Applies a hit on the LIVE half `slot`: expiry, refresh of both halves, partner check.
    #[inline]
    fn on_hit(&self, slot: u32, s: &Snap, now: u32, t: &mut Tally) -> Option<Hit> {
        let meta = s.meta();
        if self.expired(meta, now) {
            if self.remove_pair_snap(slot, s, t) {
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
        if cold {
            self.refresh_cold(slot, s, now, assure, t, &mut restored)?;
        }
        let mut h = self.hit_of(slot, s, restored);
        h.refreshed = cold;
        Some(h)
    }

    /// The once-per-second part of a hit: refresh both halves, verify/restore the partner.
    /// `None` if the half turned out to be an orphan and was dropped.
    fn refresh_cold(
        &self,
        slot: u32,
        s: &Snap,
        now: u32,
        assure: bool,
        t: &mut Tally,
        restored: &mut bool,
    ) -> Option<()> {
        self.touch(slot, m_gen(s.meta()), now, assure);
        match self.partner_of(slot, s) {
            Partner::Ok(p, ps) => {
                self.touch(p, m_gen(ps.meta()), now, assure);
                t.inc(Ctr::Refresh);
            }
            Partner::Busy => {}
            Partner::Missing => match self.restore(slot, s, now, t) {
                RestoreOutcome::Done => *restored = true,
                RestoreOutcome::Orphan => return None,
                RestoreOutcome::Other => {}
            },
            Partner::Conflict => {
                if self.try_claim(slot, s.ctrl, c_fp(s.ctrl)) {
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
    fn restore(&self, slot: u32, s: &Snap, now: u32, t: &mut Tally) -> RestoreOutcome {
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
        let (p, pb) = match self.claim_slot(&loc, now, slot, t) {
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
        self.publish(p, pb);
        self.publish(slot, hb);
        t.add_halves(1);
        t.inc(Ctr::Restore);
        RestoreOutcome::Done
    }

    #[inline]
    fn lookup_at(&self, loc: &Loc, k0: u64, k1: u64, now: u32, t: &mut Tally) -> Option<Hit> {
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

    fn session_of(s: &Snap, now: u32) -> Session {
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

    // ---- public API ----------------------------------------------------------------------

    /// Looks `key` up in either direction. A hit refreshes both halves (at most once per
    /// second) and restores a missing partner; an expired pair is reclaimed and reported as a
    /// miss.
    pub fn lookup(&self, key: &Tuple, now: u32) -> Option<Hit> {
        let mut t = Tally::default();
        self.advance_clock(now);
        let (k0, k1) = pack(key);
        let loc = self.locate(k0, k1);
        let r = self.lookup_at(&loc, k0, k1, now, &mut t);
        self.ctr.flush(&t);
        r
    }

    /// Test hook: marks the slot holding `key` BUSY, as a process killed in the middle of a
    /// claim leaves it. Returns whether the key was found.
    #[cfg(test)]
    pub(crate) fn force_busy(&self, key: &Tuple) -> bool {
        let (k0, k1) = pack(key);
        let loc = self.locate(k0, k1);
        match self.find(&loc, k0, k1) {
            Find::Found(slot, s) => {
                self.ctrl(slot).store(s.ctrl | 1, Release);
                true
            }
            _ => false,
        }
    }

    /// Test hook: moves the half keyed by `key` into its other candidate bucket with the
    /// cuckoo move of the insert path (its old slot is freed). Returns the new slot.
    #[cfg(test)]
    pub(crate) fn force_move(&self, key: &Tuple, now: u32) -> Option<u32> {
        let (k0, k1) = pack(key);
        let loc = self.locate(k0, k1);
        let Find::Found(slot, s) = self.find(&loc, k0, k1) else {
            return None;
        };
        let b = slot / WAYS as u32;
        let alt = if b == loc.b1 { loc.b2 } else { loc.b1 };
        let mut t = Tally::default();
        self.move_half(slot, s.ctrl, &loc, alt, 0, now, &mut t)?;
        self.ctr.flush(&t);
        match self.find(&loc, k0, k1) {
            Find::Found(d, _) => Some(d),
            _ => None,
        }
    }

    /// Test hook: the two candidate buckets of `key` (scanned in this order).
    #[cfg(test)]
    pub(crate) fn buckets_of(&self, key: &Tuple) -> (u32, u32) {
        let (k0, k1) = pack(key);
        let l = self.locate(k0, k1);
        (l.b1, l.b2)
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
                    if self.expired(s.meta(), now) {
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

    /// Starts loading the buckets `key` may live in into the cache, so that a lookup a
    /// little later does not wait for memory (call it for a batch of packets, then look
    /// them up). Only a hint: it reads nothing and changes nothing.
    #[inline]
    pub fn prefetch(&self, key: &Tuple) {
        let (k0, k1) = pack(key);
        let l = self.locate(k0, k1);
        if let Some(b) = self.buckets.get(l.b1 as usize) {
            prefetch(&b.ctrl);
            for way in b.data.iter().step_by(4) {
                prefetch(way.as_ptr());
            }
        }
        if let Some(b) = self.buckets.get(l.b2 as usize) {
            prefetch(&b.ctrl);
        }
    }

    /// Looks up `keys` into `out` (same semantics as [`Table::lookup`]), overlapping the cache
    /// misses of up to 16 keys at a time with software prefetches. Processes
    /// `min(keys.len(), out.len())` keys.
    pub fn lookup_batch(&self, keys: &[Tuple], now: u32, out: &mut [Option<Hit>]) {
        const B: usize = 16;
        let n = keys.len().min(out.len());
        let mut t = Tally::default();
        self.advance_clock(now);
        for (kc, oc) in keys[..n].chunks(B).zip(out[..n].chunks_mut(B)) {
            let m = kc.len();
            let mut ks = [(0u64, 0u64); B];
            let mut locs = [Loc::default(); B];
            for i in 0..m {
                let k = pack(&kc[i]);
                let l = self.locate(k.0, k.1);
                ks[i] = k;
                locs[i] = l;
                prefetch(&self.buckets[l.b1 as usize].ctrl);
            }
            let mut cand = [NO_SLOT; B];
            let mut cc = [0u64; B];
            for i in 0..m {
                let l = locs[i];
                let bk = &self.buckets[l.b1 as usize];
                for (w, cw) in bk.ctrl.iter().enumerate() {
                    let c = cw.load(Acquire);
                    if c_fp(c) == l.fp && !c_busy(c) {
                        cand[i] = l.b1 * WAYS as u32 + w as u32;
                        cc[i] = c;
                        let p = bk.data[w].as_ptr();
                        prefetch(p);
                        prefetch(p.wrapping_add(DW - 1));
                        break;
                    }
                }
                if cand[i] == NO_SLOT {
                    prefetch(&self.buckets[l.b2 as usize].ctrl);
                }
            }
            for i in 0..m {
                let (k0, k1) = ks[i];
                oc[i] = match (cand[i] != NO_SLOT)
                    .then(|| self.read_live(cand[i], cc[i]))
                    .flatten()
                {
                    Some(s) if s.key_is(k0, k1) => {
                        let r = self.on_hit(cand[i], &s, now, &mut t);
                        t.inc(if r.is_some() { Ctr::Hit } else { Ctr::Miss });
                        r
                    }
                    _ => self.lookup_at(&locs[i], k0, k1, now, &mut t),
                };
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
        let mut t = Tally::default();
        self.advance_clock(now);
        let r = self.insert_inner(org, xlate, state, now, &mut t);
        t.inc(match &r {
            Ok(_) => Ctr::Insert,
            Err(InsertError::Exists(_)) => Ctr::Exists,
            Err(InsertError::RevTaken) => Ctr::RevTaken,
            Err(InsertError::Full) => Ctr::Full,
            Err(InsertError::Busy) | Err(InsertError::Invalid) => Ctr::Busy,
        });
        self.ctr.flush(&t);
        r
    }

    fn insert_inner(
        &self,
        org: &Tuple,
        xlate: &Tuple,
        state: ConnState,
        now: u32,
        t: &mut Tally,
    ) -> Result<Hit, InsertError> {
        let rev = xlate.reversed();
        if xlate.proto != org.proto || rev == *org {
            return Err(InsertError::Invalid);
        }
        let (o0, o1) = pack(org);
        let (r0, r1) = pack(&rev);
        let lo = self.locate(o0, o1);
        let lr = self.locate(r0, r1);
        let meta = m_make(now, state);
        for attempt in 0..INSERT_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt);
            }
            match self.find(&lo, o0, o1) {
                Find::Found(s, snap) => match self.on_hit(s, &snap, now, t) {
                    Some(h) => return Err(InsertError::Exists(h)),
                    None => continue,
                },
                Find::Busy => continue,
                Find::Absent => {}
            }
            match self.find(&lr, r0, r1) {
                Find::Found(s, snap) => {
                    if self.expired(snap.meta(), now) {
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
            let (so, bo) = match self.claim_slot(&lo, now, NO_SLOT, t) {
                Claim::Got(s, b) => (s, b),
                Claim::Full => return Err(InsertError::Full),
                Claim::Busy => continue,
            };
            let (sr, br) = match self.claim_slot(&lr, now, so, t) {
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
            let clear = matches!(self.rescan(&lo, o0, o1, [so, sr]), Find::Absent)
                && matches!(self.rescan(&lr, r0, r1, [so, sr]), Find::Absent);
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

    /// Whether `rev_key` is the key of a live, unexpired half (for the port allocator: a
    /// candidate translation `x` is usable only if `!is_rev_taken(&x.reversed(), now)`).
    pub fn is_rev_taken(&self, rev_key: &Tuple, now: u32) -> bool {
        let (k0, k1) = pack(rev_key);
        let loc = self.locate(k0, k1);
        for round in 0..LOOKUP_RETRIES {
            match self.find(&loc, k0, k1) {
                Find::Found(_, s) => return !self.expired(s.meta(), now),
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

    fn set_state_snap(&self, slot: u32, s: &Snap, state: ConnState) {
        self.set_meta_state(slot, m_gen(s.meta()), state);
        if let Partner::Ok(p, ps) = self.partner_of(slot, s) {
            self.set_meta_state(p, m_gen(ps.meta()), state);
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
            t.free(slot, c_next(s.ctrl, c_fp(s.ctrl)));
            tally.add_halves(-1);
            true
        })
    }

    /// Finds the half keyed by `key` and applies `op` to it, retrying (with backoff) while
    /// the slot is busy or `op` loses a race; counts a successful removal.
    fn remove_by(&self, key: &Tuple, op: impl Fn(&Self, u32, &Snap, &mut Tally) -> bool) -> bool {
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
        Sessions {
            table: self,
            next: 0,
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

    /// Total bytes the table occupies (buckets, counters, header).
    pub fn memory_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
            + self.ctr.bytes()
            + std::mem::size_of::<Table>()
    }

    /// [`Table::memory_bytes`] / [`Table::capacity`], rounded to nearest (96 for large tables).
    pub fn bytes_per_connection(&self) -> usize {
        let c = self.capacity();
        (self.memory_bytes() + c / 2) / c
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Sums of the outcome counters.
    pub fn stats(&self) -> TableStats {
        self.ctr.snapshot()
    }
}

/// What [`Table::audit`] found: the table's invariants, checked over every slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// LIVE halves found.
    pub live_halves: u64,
    /// What the occupancy counter says (must equal `live_halves` when nothing runs).
    pub counted_halves: u64,
    /// Slots left BUSY (a claim in flight; none when nothing runs).
    pub busy_slots: u64,
    /// Keys LIVE in more than one slot.
    pub duplicate_keys: u64,
    /// LIVE halves whose partner key is not LIVE.
    pub lone_halves: u64,
    /// LIVE halves whose partner key is LIVE but does not mirror them (other direction,
    /// translation back to this half's key).
    pub mismatched_partners: u64,
    /// Halves in neither of their key's two candidate buckets, or under another fingerprint.
    pub misplaced: u64,
    /// The first few problems, described.
    pub problems: Vec<String>,
}

impl Audit {
    /// No invariant is broken.
    pub fn is_sound(&self) -> bool {
        self.busy_slots == 0
            && self.duplicate_keys == 0
            && self.lone_halves == 0
            && self.mismatched_partners == 0
            && self.misplaced == 0
            && self.live_halves == self.counted_halves
    }

    fn note(&mut self, what: String) {
        if self.problems.len() < 8 {
            self.problems.push(what);
        }
    }
}

impl Table {
    /// Checks the table's invariants over every slot: each key LIVE once, in one of its two
    /// candidate buckets under its fingerprint; every LIVE half has its mirrored partner;
    /// no slot BUSY; the occupancy counter right. Meaningful only while no other thread
    /// uses the table (tests, diagnostics of a stopped gateway's state file); it reads the
    /// whole table and allocates.
    pub fn audit(&self) -> Audit {
        let mut a = Audit {
            counted_halves: self.ctr.live_halves(),
            ..Audit::default()
        };
        let mut live = std::collections::HashMap::new();
        for slot in 0..self.nslots {
            match self.read_slot(slot) {
                View::Free => {}
                View::Busy => {
                    a.busy_slots += 1;
                    a.note(format!("slot {slot} is BUSY"));
                }
                View::Live(s) => {
                    a.live_halves += 1;
                    let (k0, k1) = (s.d[D_K0], s.d[D_K1] & KEY1_MASK);
                    let l = self.locate(k0, k1);
                    let b = slot / WAYS as u32;
                    if (b != l.b1 && b != l.b2) || c_fp(s.ctrl) != l.fp {
                        a.misplaced += 1;
                        a.note(format!("{:?} misplaced in slot {slot}", s.key()));
                    }
                    if let Some(other) = live.insert((k0, k1), (slot, s)) {
                        a.duplicate_keys += 1;
                        a.note(format!(
                            "{:?} live in slots {} and {slot}",
                            s.key(),
                            other.0
                        ));
                    }
                }
            }
        }
        for (slot, s) in live.values() {
            let (p0, p1) = pack(&s.xlate().reversed());
            match live.get(&(p0, p1)) {
                None => {
                    a.lone_halves += 1;
                    a.note(format!("{:?} (slot {slot}) has no partner", s.key()));
                }
                Some((q, ps)) => {
                    if ps.dir() != s.dir().flip() || !ps.xlate_is(&s.key().reversed()) {
                        a.mismatched_partners += 1;
                        a.note(format!(
                            "{:?} (slot {slot}) and {:?} (slot {q}) do not mirror",
                            s.key(),
                            ps.key()
                        ));
                    }
                }
            }
        }
        a
    }
}

enum RestoreOutcome {
    Done,
    Orphan,
    Other,
}

/// Iterator returned by [`Table::sessions`].
pub struct Sessions<'a> {
    table: &'a Table,
    next: u32,
    now: u32,
}

impl Iterator for Sessions<'_> {
    type Item = Session;

    fn next(&mut self) -> Option<Session> {
        while self.next < self.table.nslots {
            let slot = self.next;
            self.next += 1;
            if let View::Live(s) = self.table.read_slot(slot) {
                if s.dir() == Dir::Org {
                    return Some(Table::session_of(&s, self.now));
                }
            }
        }
        None
    }
}
