//! Outcome counters, striped per thread so that counting never becomes a contention point.
//!
//! Each thread is assigned one of [`STRIPES`] cache-line-padded stripes the first time it counts;
//! increments are relaxed `fetch_add`s on that stripe only (uncontended unless more than
//! `STRIPES` threads share a table). [`TableStats`] sums the stripes; the sum is not a consistent
//! snapshot across counters, which is fine for monitoring.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Number of counter stripes (power of two).
pub(crate) const STRIPES: usize = 16;

/// Counter indices.
#[derive(Clone, Copy, Debug)]
#[repr(usize)]
pub(crate) enum Ctr {
    Hit,
    Miss,
    Insert,
    Refresh,
    Evict,
    Expire,
    Restore,
    Full,
    RaceLost,
    RevTaken,
    Exists,
    Orphan,
    Remove,
    Busy,
    Relocate,
    /// Signed delta of live halves (wrapping add of two's complement).
    Halves,
}

/// Outcome counters, then one signed delta of live connections per state code.
pub(crate) const NOUTCOMES: usize = 16;
/// State codes with a gauge (every code the table stores is below this).
pub(crate) const NSTATES: usize = 16;
pub(crate) const NCTR: usize = NOUTCOMES + NSTATES;

/// One stripe: 32 counters (256 bytes), then its threads' debt of failed cuckoo steps
/// (see [`Counters::cuckoo_step`]); aligned to 128 (two lines: adjacent-line prefetch).
#[repr(C, align(128))]
pub(crate) struct Stripe(
    [AtomicU64; NCTR],
    /// Failed cuckoo steps' debt (see [`Counters::cuckoo_step`]).
    AtomicU32,
);

impl Stripe {
    fn new() -> Stripe {
        Stripe(
            std::array::from_fn(|_| AtomicU64::new(0)),
            AtomicU32::new(0),
        )
    }
}

/// What a failed cuckoo step adds to its stripe's debt (a success or a skip takes one off):
/// claims skip the step while failures exceed one in `STEP_FAIL_COST + 1` tries.
const STEP_FAIL_COST: u32 = 8;
/// The debt at which claims start skipping the step.
const STEP_DEBT_LIMIT: u32 = 64;

/// A local tally of the outcome counters, flushed once per public operation (one batch =
/// one flush); `mask` marks the counters touched, so a flush costs one atomic add per
/// counter actually used. (The state gauges change rarely, on inserts, removals and state
/// changes: they go straight to the stripe, see [`Counters::add_state`], which keeps the
/// tally small on the lookup path.)
#[derive(Default, Clone, Copy)]
pub(crate) struct Tally {
    v: [u64; NOUTCOMES],
    mask: u32,
}

impl Tally {
    #[inline(always)]
    pub(crate) fn inc(&mut self, c: Ctr) {
        self.v[c as usize] = self.v[c as usize].wrapping_add(1);
        self.mask |= 1 << c as u32;
    }

    #[inline(always)]
    pub(crate) fn add_halves(&mut self, delta: i64) {
        let i = Ctr::Halves as usize;
        self.v[i] = self.v[i].wrapping_add(delta as u64);
        self.mask |= 1 << i;
    }
}

/// Outcome counts of table operations that a caller gathers over many of them (a worker's
/// batch) and adds to the table's counters at once ([`Table::flush_counts`](super::Table::flush_counts)),
/// one atomic add per counter used instead of one per operation. Counts not yet flushed
/// are not in [`TableStats`].
#[derive(Default, Clone, Copy)]
pub struct OpCounts(pub(crate) Tally);

impl OpCounts {
    /// Whether nothing was counted since the last flush.
    pub fn is_empty(&self) -> bool {
        self.0.mask == 0
    }
}

/// The striped counters of a table.
pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
}

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The stripe of the calling thread (`0..STRIPES`), assigned round robin the first time a
/// thread counts; other per-thread striped counts (the NAT's census) use the same index.
#[inline(always)]
pub(crate) fn my_stripe() -> usize {
    MY_STRIPE.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            v
        } else {
            let n = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(n);
            n
        }
    })
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            stripes: (0..STRIPES).map(|_| Stripe::new()).collect(),
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of::<Stripe>() * self.stripes.len()
    }

    #[inline]
    pub(crate) fn flush(&self, t: &Tally) {
        let mut m = t.mask;
        if m == 0 {
            return;
        }
        let s = &self.stripes[my_stripe()];
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            s.0[i].fetch_add(t.v[i], Ordering::Relaxed);
            m &= m - 1;
        }
    }

    /// Adds `delta` to the live connections in state `code` (the gauge of ORG halves per
    /// state: +1 when an ORG half is written, -1 when one is removed, -1/+1 on a change).
    #[inline]
    pub(crate) fn add_state(&self, code: u8, delta: i64) {
        let i = NOUTCOMES + (code as usize & (NSTATES - 1));
        self.stripes[my_stripe()].0[i].fetch_add(delta as u64, Ordering::Relaxed);
    }

    /// Runs `step`, a claim's cuckoo step into a free way (tried when both of the new
    /// half's buckets are full, before it evicts), unless this stripe's recent steps failed
    /// too often; `None` if skipped or failed.
    ///
    /// While the table has room the step almost always finds a way and saves a live
    /// connection (3 failures in 5828 tries at 90–93 % fill, `xnat-engine-count 100000
    /// 2000 new90`). In a full table every new pair evicts one anyway (pairs out = pairs
    /// in): there steps fail about half the time, each after reading a dozen halves and
    /// their other buckets' control lines, and only hold the fill a point higher, at
    /// 1.4 times the cost of a new connection (a SYN flood's). So each stripe keeps a debt:
    /// a failed step adds [`STEP_FAIL_COST`], a success or a skipped step takes one off,
    /// and from [`STEP_DEBT_LIMIT`] on claims skip the step; at a failure rate `p` above
    /// `1 / (STEP_FAIL_COST + 1)` about one claim in `(STEP_FAIL_COST + 1) × p` tries it.
    /// Relaxed and unlocked: threads sharing a stripe may lose each other's updates, which
    /// shifts a heuristic, never a result.
    #[inline(always)]
    pub(crate) fn cuckoo_step<T>(&self, step: impl FnOnce() -> Option<T>) -> Option<T> {
        let debt = &self.stripes[my_stripe()].1;
        let d = debt.load(Ordering::Relaxed);
        if d >= STEP_DEBT_LIMIT {
            debt.store(d - 1, Ordering::Relaxed);
            return None;
        }
        let got = step();
        if got.is_none() {
            debt.store(d.saturating_add(STEP_FAIL_COST), Ordering::Relaxed);
        } else if d != 0 {
            debt.store(d - 1, Ordering::Relaxed);
        }
        got
    }

    /// Whether the calling thread's claims meet a full table, where every new pair evicts
    /// one: recent cuckoo steps failed too often (see [`Counters::cuckoo_step`]). Told
    /// from half the debt limit on: in a full table the debt hovers at the limit, a skip
    /// taking it just below, a failed step back above, a run of successful ones a few
    /// below, all claims of the same full table; a table with room keeps it near 0.
    #[inline]
    pub(crate) fn table_full(&self) -> bool {
        self.stripes[my_stripe()].1.load(Ordering::Relaxed) >= STEP_DEBT_LIMIT / 2
    }

    /// Clears the calling thread's record of failed cuckoo steps: its next claims try the
    /// step again and, until failures take the record back to half the limit, score whole
    /// buckets for a victim (see [`Counters::table_full`]). For a table's carry-over (not
    /// modelled under loom).
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn forget_failed_steps(&self) {
        self.stripes[my_stripe()].1.store(0, Ordering::Relaxed);
    }

    fn sum(&self, c: Ctr) -> u64 {
        self.sum_at(c as usize)
    }

    fn sum_at(&self, i: usize) -> u64 {
        self.stripes
            .iter()
            .fold(0u64, |a, s| a.wrapping_add(s.0[i].load(Ordering::Relaxed)))
    }

    /// Live connections per state code (ORG halves in the table, expired ones included
    /// until they are reaped or evicted). Each is a sum of signed deltas: 0 if a transient
    /// sum is negative.
    pub(crate) fn by_state(&self) -> [u64; NSTATES] {
        std::array::from_fn(|c| (self.sum_at(NOUTCOMES + c) as i64).max(0) as u64)
    }

    pub(crate) fn live_halves(&self) -> u64 {
        let v = self.sum(Ctr::Halves) as i64;
        v.max(0) as u64
    }

    pub(crate) fn snapshot(&self) -> TableStats {
        TableStats {
            hit: self.sum(Ctr::Hit),
            miss: self.sum(Ctr::Miss),
            insert: self.sum(Ctr::Insert),
            refresh: self.sum(Ctr::Refresh),
            evict: self.sum(Ctr::Evict),
            expire: self.sum(Ctr::Expire),
            restore: self.sum(Ctr::Restore),
            full: self.sum(Ctr::Full),
            race_lost: self.sum(Ctr::RaceLost),
            rev_taken: self.sum(Ctr::RevTaken),
            exists: self.sum(Ctr::Exists),
            orphan: self.sum(Ctr::Orphan),
            remove: self.sum(Ctr::Remove),
            busy: self.sum(Ctr::Busy),
            relocate: self.sum(Ctr::Relocate),
            live_halves: self.live_halves(),
        }
    }
}

/// Totals of every table outcome since creation (monotonic, except `live_halves`).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct TableStats {
    /// Lookups that returned a translation.
    pub hit: u64,
    /// Lookups that found nothing usable (absent, expired, orphaned or contended).
    pub miss: u64,
    /// Pairs inserted.
    pub insert: u64,
    /// Pair refreshes (both halves' last-seen advanced; at most one per half per second).
    pub refresh: u64,
    /// Live pairs evicted to make room.
    pub evict: u64,
    /// Expired pairs reclaimed (on lookup, insert, or as eviction victims).
    pub expire: u64,
    /// Missing halves recreated from their surviving partner.
    pub restore: u64,
    /// Inserts (or restores) that found no slot under the eviction policy.
    pub full: u64,
    /// Inserts/restores that aborted because a concurrent writer claimed the same key.
    pub race_lost: u64,
    /// Inserts refused because the REV tuple belongs to another live pair.
    pub rev_taken: u64,
    /// Inserts refused because the ORG key is already live.
    pub exists: u64,
    /// Lone halves dropped because their partner key now belongs to another connection.
    pub orphan: u64,
    /// Pairs (or halves) removed by `remove`, `remove_half` or `flush`.
    pub remove: u64,
    /// Operations that gave up after their retry budget on a BUSY slot.
    pub busy: u64,
    /// Halves moved to their alternate bucket to make room without evicting a protected pair.
    pub relocate: u64,
    /// Live halves right now (approximate under concurrent updates).
    pub live_halves: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` claims' steps whose outcome is `ok`; how many actually ran.
    fn steps(c: &Counters, n: u32, ok: bool) -> u32 {
        let mut ran = 0;
        for _ in 0..n {
            let _ = c.cuckoo_step(|| {
                ran += 1;
                ok.then_some(())
            });
        }
        ran
    }

    #[test]
    fn cuckoo_steps_that_keep_failing_are_mostly_skipped() {
        let c = Counters::new();
        // Failures up to the debt limit are all tried; then claims skip until the debt is
        // below it again, and while steps succeed every claim tries (each pays one off).
        let tries = STEP_DEBT_LIMIT / STEP_FAIL_COST;
        assert_eq!(steps(&c, tries, false), tries);
        assert_eq!(steps(&c, 1, false), 0);
        assert_eq!(steps(&c, 1000, false), 1000u32.div_ceil(STEP_FAIL_COST + 1));
        let c = Counters::new();
        steps(&c, tries, false);
        assert_eq!(steps(&c, 1, true), 0);
        assert_eq!(steps(&c, 1, true), 1);
        assert_eq!(steps(&c, 100, true), 100);
        // At half failures (a full table's rate) about 1 / (9 × 0.5) of the claims try.
        // (Outcomes from a fixed xorshift: a strict alternation would line up with the
        // skips.)
        let c = Counters::new();
        let (mut ran, mut x) = (0, 0x9e37_79b9u32);
        for _ in 0..9000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ran += steps(&c, 1, x & 1 == 0);
        }
        assert!((1700..2300).contains(&ran), "{ran} of 9000 tried");
    }

    #[test]
    fn a_full_table_stays_full_across_the_skip_that_takes_the_debt_below_the_limit() {
        let c = Counters::new();
        assert!(!c.table_full());
        steps(&c, STEP_DEBT_LIMIT / STEP_FAIL_COST, false);
        assert!(c.table_full());
        // Skipped: the debt one below the limit, the next claim tries again.
        assert_eq!(steps(&c, 1, false), 0);
        assert!(c.table_full());
        // ... and at a full table's rate of failures it stays full, claim after claim.
        let mut x = 0x9e37_79b9u32;
        for i in 0..9000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            steps(&c, 1, x & 1 == 0);
            assert!(c.table_full(), "claim {i}");
        }
    }

    #[test]
    fn cuckoo_steps_that_rarely_fail_are_never_skipped() {
        // One failure in 50 tries (far above the 3 in 5828 of a table at 90 % fill).
        let c = Counters::new();
        let mut ran = 0;
        for i in 0..10_000u32 {
            ran += steps(&c, 1, i % 50 != 0);
            assert!(!c.table_full(), "claim {i}");
        }
        assert_eq!(ran, 10_000);
    }
}
