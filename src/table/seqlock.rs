//! Per-slot seqlock: claiming, publishing and freeing a slot, validated snapshots, and the
//! single-word updates of the meta word (refresh, state) guarded by the slot generation;
//! the bounded backoff of contended operations.

use super::engine::*;
use super::layout::*;

use super::sync::fence;
#[cfg(not(loom))]
use super::sync::spin_loop;
use super::sync::AtomicU64;
use super::sync::Ordering::{Acquire, Relaxed, Release, SeqCst};
use super::{ConnState, Dir, Tuple};

thread_local! {
    static JITTER: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
thread_local! {
    /// Backoff rounds and yields of this thread (tests of the packet-path bounds).
    static BACKOFFS: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// Backoff rounds and yields this thread went through so far (tests only).
#[cfg(test)]
pub(crate) fn backoffs() -> (u32, u32) {
    BACKOFFS.with(|c| c.get())
}

/// Bounded, jittered backoff (jitter breaks the lock-step of two symmetric aborts). Rounds
/// below 6 spin; later ones (only inserts and removals get there) yield.
#[cold]
pub(super) fn backoff(round: u32) {
    #[cfg(loom)]
    {
        let _ = round;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    backoff_spin(round);
}

#[cfg(not(loom))]
fn backoff_spin(round: u32) {
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

impl Table {
    /// Reads the data of `slot` and validates it against the control value `c1` (loaded with
    /// acquire by the caller). `None` if the slot changed meanwhile.
    #[inline(always)]
    pub(super) fn read_live(&self, slot: u32, c1: u64) -> Option<Snap> {
        Self::read_way(self.way(slot), c1)
    }

    /// [`Table::read_live`] of a way already found: its data words, then its control word
    /// again after an acquire fence; the snapshot if that is still `c1`.
    #[inline(always)]
    pub(super) fn read_way(way: &Way, c1: u64) -> Option<Snap> {
        let d = &way.data;
        let d = [
            d[0].load(Relaxed),
            d[1].load(Relaxed),
            d[2].load(Relaxed),
            d[3].load(Relaxed),
            d[4].load(Relaxed),
        ];
        fence(Acquire);
        (way.ctrl.load(Relaxed) == c1).then_some(Snap { ctrl: c1, d })
    }

    pub(super) fn read_slot(&self, slot: u32) -> View {
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
    pub(super) fn try_claim(&self, slot: u32, expected: u64, fp: u32) -> bool {
        let ok = self
            .ctrl(slot)
            .compare_exchange(expected, c_next(expected, fp), SeqCst, Relaxed)
            .is_ok();
        if ok {
            // Orders the data stores that follow after the (odd) claim, for seqlock readers.
            fence(Release);
            if c_fp(expected) != fp {
                self.set_tag(slot, fp);
            }
        }
        ok
    }

    /// Sets the tag of `slot` (ours, BUSY, just given fingerprint `fp`) to `fp`'s (see
    /// [`Table::tags`]).
    #[inline(always)]
    pub(super) fn set_tag(&self, slot: u32, fp: u32) {
        self.put_tag(slot, tag_of(fp));
    }

    /// Writes `tag` into `slot`'s byte of its bucket's tag word. Only the slot's owner
    /// (holding it BUSY) writes its byte, so the byte read here stays ours until the XOR,
    /// which leaves the other ways' bytes as they are. Always a write, even of the same
    /// byte, and `SeqCst` like the claim's CAS: an inserter's conflict scan after its
    /// `SeqCst` fence then sees this tag as it sees the claim (the Dekker argument of
    /// [`Table::rescan`]), whatever the word held before. The model check
    /// (`tests/loom_table.rs`) finds two inserts of one key both succeeding with a relaxed
    /// XOR here; with `SeqCst` it finds none. On x86 both are the same locked XOR.
    #[inline(always)]
    fn put_tag(&self, slot: u32, tag: u8) {
        let word = &self.tags[slot as usize / WAYS];
        word.fetch_xor(
            tag_flip(word.load(Relaxed), slot as usize % WAYS, tag),
            SeqCst,
        );
    }

    /// BUSY -> LIVE with the same fingerprint (publish new data, or undo a claim).
    #[inline]
    pub(super) fn publish(&self, slot: u32, busy: u64) {
        self.check_owned(slot, busy);
        self.ctrl(slot).store(c_next(busy, c_fp(busy)), Release);
    }

    /// BUSY -> FREE, its tag cleared first.
    #[inline]
    pub(super) fn free(&self, slot: u32, busy: u64) {
        self.check_owned(slot, busy);
        self.clear_tag_of(slot);
        self.ctrl(slot).store(c_next(busy, 0), Release);
    }

    /// Clears the tag of `slot` (ours, BUSY, about to be freed): a FREE way's tag is 0, which
    /// is how a claim finds free ways by the tag word alone (see [`Table::tags`]).
    #[inline(always)]
    pub(super) fn clear_tag_of(&self, slot: u32) {
        self.put_tag(slot, 0);
    }

    /// Under the model checker: the slot still holds our claim `busy` (nobody else wrote it
    /// while we held it).
    #[inline(always)]
    pub(super) fn check_owned(&self, slot: u32, busy: u64) {
        #[cfg(loom)]
        {
            let now = self.ctrl(slot).load(Relaxed);
            assert_eq!(now, busy, "slot {slot} changed while claimed");
        }
        #[cfg(not(loom))]
        let _ = (slot, busy);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_half(
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
    pub(super) fn touch(&self, slot: u32, gen: u8, now: u32, assure: bool) {
        Self::touch_way(self.way(slot), gen, now, assure);
    }

    /// [`Table::touch`] of a way already found.
    #[inline]
    pub(super) fn touch_way(way: &Way, gen: u8, now: u32, assure: bool) {
        let _ = Self::update_meta_word(&way.data[D_META], gen, |cur| {
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
            new
        });
    }

    /// Sets the state in the meta word of `slot` if it still holds generation `gen`.
    /// Returns the state code it replaced, if it changed the state.
    pub(super) fn set_meta_state(&self, slot: u32, gen: u8, state: ConnState) -> Option<u8> {
        let old = self.update_meta(slot, gen, |cur| {
            let mut new = (cur & !STATE_MASK) | ((state.code() as u64) << 32);
            if state == ConnState::TcpEstablished {
                new |= FLAG_ASSURED;
            }
            new
        })?;
        let was = m_state_code(old);
        (was != state.code()).then_some(was)
    }

    /// Seals the meta word of the claimed slot `slot`: bumps its generation, so that no
    /// refresh or state change through an older slot index lands on it any more, and
    /// returns the word as it was (the occupant's final state, for the state gauges).
    pub(super) fn seal(&self, slot: u32) -> u64 {
        let m = &self.data(slot)[D_META];
        let mut cur = m.load(Relaxed);
        loop {
            let new = m_with_gen(cur, m_gen(cur).wrapping_add(1));
            match m.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => return cur,
                Err(x) => cur = x,
            }
        }
    }

    /// Replaces the meta word of `slot` by `f(word)` with a CAS loop, as long as the slot
    /// holds the occupant of generation `gen` (a write through an old slot index does
    /// nothing). Outside the seqlock: one word, never torn. Returns the word it replaced,
    /// if it changed it.
    #[inline(always)]
    fn update_meta(&self, slot: u32, gen: u8, f: impl Fn(u64) -> u64) -> Option<u64> {
        Self::update_meta_word(&self.data(slot)[D_META], gen, f)
    }

    /// [`Table::update_meta`] of a meta word already found.
    #[inline(always)]
    fn update_meta_word(m: &AtomicU64, gen: u8, f: impl Fn(u64) -> u64) -> Option<u64> {
        let mut cur = m.load(Relaxed);
        loop {
            if m_gen(cur) != gen {
                return None;
            }
            let new = f(cur);
            if new == cur {
                return None;
            }
            match m.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => return Some(cur),
                Err(x) => cur = x,
            }
        }
    }
}
