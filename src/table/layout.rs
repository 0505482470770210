//! The memory layout of the table and the encodings of its words: buckets of 8 ways, the
//! control word (fingerprint and sequence), the key, translation and meta words of a slot,
//! the hash that places a key, and the snapshot types the protocol passes around.

use super::sync::AtomicU64;
use super::{ConnState, Dir, Tuple};

/// Ways (halves) per bucket.
#[cfg(not(loom))]
pub(crate) const WAYS: usize = 8;
/// Under the model checker: 2 ways, so that a tiny table fills and evicts in a few steps.
#[cfg(loom)]
pub(crate) const WAYS: usize = 2;
/// Data words per slot.
pub(super) const DW: usize = 5;
pub(super) const D_K0: usize = 0;
pub(super) const D_K1: usize = 1;
pub(super) const D_X0: usize = 2;
pub(super) const D_X1: usize = 3;
pub(super) const D_META: usize = 4;

/// Largest supported `TableConfig::connections` (slot handles are u32, `u32::MAX` is "none").
pub(crate) const MAX_CONNECTIONS: usize = (1usize << 31) - 64;
pub(super) const NO_SLOT: u32 = u32::MAX;

pub(super) const KEY1_MASK: u64 = (1 << 40) - 1;
pub(super) const DIR_REV_BIT: u64 = 1 << 40;
pub(super) const FLAG_ASSURED: u64 = 1 << 40;
/// Meta bit 41: the half belongs to an *anchor*, a pair that other pairs keep alive (a NAT
/// mapping or filter entry, refreshed by its sessions' partner refreshes, see
/// [`Table::insert_anchor`](super::Table::insert_anchor)). Its last-seen second counts
/// [`ANCHOR_SLACK`] seconds later for expiry and eviction (see [`m_seen`]).
pub(super) const FLAG_ANCHOR: u64 = 1 << 41;
const ANCHOR_SHIFT: u32 = 41;
pub(super) const STATE_MASK: u64 = 0xFF << 32;
/// Saturating count of refreshes (seconds with traffic after the first) in meta bits 48..56.
pub(super) const RCOUNT_SHIFT: u32 = 48;
pub(super) const RCOUNT_ONE: u64 = 1 << RCOUNT_SHIFT;
pub(super) const RCOUNT_MASK: u64 = 0xFF << RCOUNT_SHIFT;
/// Refreshes after which an assured non-TCP flow is *protected* (segmented LRU).
pub(super) const PROTECT_AFTER: u64 = 2;
/// Generation of the slot's occupant in meta bits 56..64: bumped whenever a new half is
/// written into the slot, checked by every CAS on the meta word (refresh, state), so that a
/// write through a slot index taken from an old snapshot cannot land on a new occupant.
pub(super) const GEN_SHIFT: u32 = 56;
pub(super) const GEN_MASK: u64 = 0xFF << GEN_SHIFT;
/// A hit refreshes its own half once a second, its partner only once per epoch of
/// `1 << PARTNER_EPOCH_SHIFT` seconds (when the hit's second is in a later epoch than the
/// half's last-seen second), or when the half looks expired or becomes assured. A half's
/// last-seen second may so lag the pair's by up to one epoch; every decision that ends a
/// pair (expiry, reaping, eviction) therefore reads both halves (see `merge_meta`), and a
/// lone half is found and restored within one epoch of traffic. 16 s rather than 8: at one
/// packet per flow per second (many slow flows, the bulk of a carrier-grade NAT's) the
/// refreshes of the partner and of the mapping, read half as often, cost an established
/// packet about 40 instructions and, at 1 M connections, a sixth of its simulated LL misses
/// less (1.55 -> 1.30); what it gives up: a mapping outlives its last session by up to 16 s
/// rather than 8 ([`ANCHOR_SLACK`]), so a table turned over at a given rate of new
/// connections is a little fuller (91.1 -> 92.4 % in the callgrind count's `new90`), and a
/// lone half waits up to 16 s of traffic for its partner (the record's thirteenth session).
pub(super) const PARTNER_EPOCH_SHIFT: u32 = 4;
/// How much later an anchor's last-seen second counts: one epoch. The pairs that keep an
/// anchor alive refresh it on their partner refreshes, at most one epoch apart, so an
/// anchor's last-seen second lags theirs by less than an epoch, and with this slack it
/// never ends before them.
pub(super) const ANCHOR_SLACK: u32 = 1 << PARTNER_EPOCH_SHIFT;
/// Eviction scores below this belong to protected pairs (class 1).
pub(super) const PROTECTED_MAX_SCORE: u64 = 2 << 40;
/// Eviction scores from this on belong to pairs that never carried a reply or have
/// expired (classes 4 and 5): in a full table, a victim search that finds one in a key's
/// first bucket takes it without scoring the second (see `Table::pick_victim`).
pub(super) const UNASSURED_MIN_SCORE: u64 = 4 << 40;
/// Eviction scores from this on belong to expired pairs (class 5): a victim search that
/// finds one in a key's first bucket takes it without scoring the second.
pub(super) const EXPIRED_MIN_SCORE: u64 = 5 << 40;
pub(super) const LOW32: u64 = 0xFFFF_FFFF;

/// One way of a bucket: the half's control word followed by its data, 48 B, so that a hit
/// reads one line for a way that sits within one (ways 0, 3, 4 and 7 of a bucket, taken
/// first by a session's claims, last by an anchor's: see `Placement`) and two for the
/// others, never a separate control line.
#[repr(C)]
pub(super) struct Way {
    pub(super) ctrl: AtomicU64,
    pub(super) data: [AtomicU64; DW],
}

/// One bucket: 8 ways of 48 B, 384 B, 6 lines.
#[repr(C, align(64))]
pub(super) struct Bucket {
    pub(super) ways: [Way; WAYS],
}

// A bucket is its ways and nothing else (`Table::ways` relies on it).
#[cfg(not(loom))]
const _: () = assert!(
    std::mem::size_of::<Way>() == 48
        && std::mem::size_of::<Bucket>() == 384
        && std::mem::size_of::<Bucket>() == WAYS * std::mem::size_of::<Way>()
        && std::mem::align_of::<Bucket>().is_multiple_of(std::mem::align_of::<Way>())
);

#[cfg(all(test, not(loom)))]
#[test]
fn an_empty_bucket_is_all_zero() {
    let b = Bucket::new();
    // SAFETY: Bucket is repr(C) and made of AtomicU64s: reading it as bytes is fine.
    let bytes: &[u8; 384] = unsafe { &*(&b as *const Bucket).cast() };
    assert!(bytes.iter().all(|&x| x == 0));
}

#[cfg(all(test, not(loom)))]
#[test]
fn tag_matches_finds_exactly_the_ways_with_the_tag() {
    let mut x = 0x1234_5678_u64;
    for round in 0..20_000 {
        let r = splitmix(&mut x);
        // Words with repeated bytes and zero bytes, not only random ones.
        let word = match round % 3 {
            0 => r,
            1 => r & 0x00FF_00FF_FF00_FF00,
            _ => ((r & 0xFF) * 0x0101_0101_0101_0101) ^ (((r >> 8) & 0xFF) << 24),
        };
        let tag = tag_of((splitmix(&mut x) as u32) | 1);
        let tag = if round % 4 == 0 { word as u8 | 1 } else { tag };
        let mut want = 0u64;
        for w in 0..WAYS {
            if (word >> (8 * w)) as u8 == tag {
                want |= 0x80 << (8 * w);
            }
        }
        assert_eq!(tag_matches(word, tag), want, "{word:#x} {tag:#x}");
        let mut ways = vec![];
        let mut m = tag_matches(word, tag);
        while m != 0 {
            let (w, rest) = next_way(m);
            ways.push(w);
            m = rest;
        }
        assert!(ways.iter().all(|&w| (word >> (8 * w)) as u8 == tag));
        assert_eq!(ways.len() as u32, want.count_ones());
        let w = round % WAYS;
        assert_eq!(((word ^ tag_flip(word, w, tag)) >> (8 * w)) as u8, tag);
        assert_eq!(
            (word ^ tag_flip(word, w, tag)) & !(0xFF << (8 * w)),
            word & !(0xFF << (8 * w))
        );
    }
    assert_ne!(tag_of(0x00FF_FFFF), 0);
    assert_eq!(tag_of(0xAB00_0001), 0xAB);
}

impl Bucket {
    /// An empty bucket: all zero, which is what [`Region::zeroed`] provides.
    #[cfg(any(test, loom))]
    pub(super) fn new() -> Bucket {
        Bucket {
            ways: std::array::from_fn(|_| Way {
                ctrl: AtomicU64::new(0),
                data: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
        }
    }
}

/// The tag of fingerprint `fp`: its top byte, never 0 (a way never claimed has tag 0 and
/// matches no key). Each bucket keeps its ways' tags in one word (see [`Table::tags`]), so
/// that a scan compares all 8 at once and reads the control word of a matching way only.
///
/// [`Table::tags`]: super::Table
#[inline(always)]
pub(super) const fn tag_of(fp: u32) -> u8 {
    let t = (fp >> 24) as u8;
    t | (t == 0) as u8
}

/// The high bit of each byte of a word, for [`tag_matches`].
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
const LOW_BITS: u64 = 0x7F7F_7F7F_7F7F_7F7F;
/// The high bits of the bytes of a tag word that belong to a way.
const WAY_BITS: u64 = if WAYS >= 8 {
    HIGH_BITS
} else {
    HIGH_BITS & ((1u64 << (8 * WAYS)) - 1)
};

/// The ways of a bucket whose tag (in tag word `word`, way `w` in byte `w`) is `tag`: the
/// high bit of byte `w` set for each (SWAR: one subtraction-free zero-byte test, exact, no
/// false positives). Iterate with [`next_way`].
#[inline(always)]
pub(super) const fn tag_matches(word: u64, tag: u8) -> u64 {
    let x = word ^ (0x0101_0101_0101_0101 * tag as u64);
    // A byte of `x` is zero iff neither its low 7 bits (carry into the high bit) nor its
    // high bit is set.
    !(((x & LOW_BITS) + LOW_BITS) | x | LOW_BITS) & WAY_BITS
}

/// The ways of a bucket whose tag in `word` is not 0 (taken), as a [`tag_matches`] mask.
#[inline(always)]
pub(super) const fn occupied(word: u64) -> u64 {
    !tag_matches(word, 0) & WAY_BITS
}

/// The first way in a [`tag_matches`] mask, and the mask without it.
#[inline(always)]
pub(super) const fn next_way(m: u64) -> (usize, u64) {
    ((m.trailing_zeros() / 8) as usize, m & m.wrapping_sub(1))
}

/// Tag word `word` with way `w`'s tag set to `tag`: the bits to XOR into it.
#[inline(always)]
pub(super) const fn tag_flip(word: u64, w: usize, tag: u8) -> u64 {
    let shift = 8 * w as u32;
    (((word >> shift) as u8 ^ tag) as u64) << shift
}

#[inline(always)]
pub(super) const fn c_seq(c: u64) -> u32 {
    c as u32
}

#[inline(always)]
pub(super) const fn c_fp(c: u64) -> u32 {
    (c >> 32) as u32
}

#[inline(always)]
pub(super) const fn c_busy(c: u64) -> bool {
    c & 1 == 1
}

/// The bits of a control word that are zero in a FREE one: the fingerprint and the BUSY bit.
const C_FREE_MASK: u64 = 0xFFFF_FFFF_0000_0001;

#[inline(always)]
pub(super) const fn c_free(c: u64) -> bool {
    c & C_FREE_MASK == 0
}

#[inline(always)]
pub(super) const fn c_live(c: u64) -> bool {
    c & 1 == 0 && c >> 32 != 0
}

#[inline(always)]
pub(super) const fn c_make(fp: u32, seq: u32) -> u64 {
    ((fp as u64) << 32) | seq as u64
}

/// Next sequence value with fingerprint `fp`.
#[inline(always)]
pub(super) const fn c_next(c: u64, fp: u32) -> u64 {
    c_make(fp, c_seq(c).wrapping_add(1))
}

#[inline(always)]
pub(super) fn pack(t: &Tuple) -> (u64, u64) {
    (
        t.src as u64 | ((t.dst as u64) << 32),
        t.sport as u64 | ((t.dport as u64) << 16) | ((t.proto as u64) << 32),
    )
}

#[inline(always)]
pub(super) const fn m_last(m: u64) -> u32 {
    m as u32
}

/// The second from which a half's idle time counts for expiry and eviction: its last-seen
/// second, [`ANCHOR_SLACK`] later for an anchor.
#[inline(always)]
pub(super) const fn m_seen(m: u64) -> u32 {
    m_last(m).saturating_add(((m >> ANCHOR_SHIFT) as u32 & 1) * ANCHOR_SLACK)
}

#[inline(always)]
pub(super) const fn m_state_code(m: u64) -> u8 {
    (m >> 32) as u8
}

#[inline(always)]
pub(super) const fn m_make(last: u32, state: ConnState) -> u64 {
    let flags = match state {
        ConnState::TcpEstablished => FLAG_ASSURED,
        _ => 0,
    };
    last as u64 | ((state.code() as u64) << 32) | flags
}

/// The generation bits of a meta word.
#[inline(always)]
pub(super) const fn m_gen(m: u64) -> u8 {
    (m >> GEN_SHIFT) as u8
}

/// `m` with generation `g`.
#[inline(always)]
pub(super) const fn m_with_gen(m: u64, g: u8) -> u64 {
    (m & !GEN_MASK) | ((g as u64) << GEN_SHIFT)
}

/// Whether a refresh at `now` of the half with control word `ctrl`, last seen at `last`,
/// must refresh its partner too (see [`PARTNER_EPOCH_SHIFT`]). Each key's epochs start at
/// its own phase (bits of its fingerprint), so that the partner refreshes of many flows
/// spread over the seconds of an epoch instead of all falling in its first. Seconds `last`
/// and `now` at least one epoch apart are always in different epochs.
#[inline(always)]
pub(super) const fn new_epoch(ctrl: u64, last: u32, now: u32) -> bool {
    epoch_of(ctrl, last) != epoch_of(ctrl, now)
}

/// The refresh epoch (see [`new_epoch`]) of second `second` for the key whose control word
/// is `ctrl`: epochs of later seconds are never smaller (short of the seconds wrapping).
#[inline(always)]
pub(super) const fn epoch_of(ctrl: u64, second: u32) -> u32 {
    second.wrapping_add(epoch_phase(ctrl)) >> PARTNER_EPOCH_SHIFT
}

/// The epoch phase of the key whose control word is `ctrl`: 0 to `(1 << PARTNER_EPOCH_SHIFT) - 1`.
#[inline(always)]
pub(super) const fn epoch_phase(ctrl: u64) -> u32 {
    (c_fp(ctrl) >> 1) & ((1 << PARTNER_EPOCH_SHIFT) - 1)
}

/// The meta word of a pair as its half `own` and its partner's `partner` tell it: `own`'s
/// state and generation, the later last-seen second and refresh count of the two, assured
/// if either is.
#[inline(always)]
pub(super) const fn merge_meta(own: u64, partner: u64) -> u64 {
    let last = if m_last(own) > m_last(partner) {
        m_last(own)
    } else {
        m_last(partner)
    };
    let rc = if own & RCOUNT_MASK > partner & RCOUNT_MASK {
        own & RCOUNT_MASK
    } else {
        partner & RCOUNT_MASK
    };
    (own & !(LOW32 | RCOUNT_MASK)) | rc | last as u64 | (partner & FLAG_ASSURED)
}

#[inline(always)]
pub(super) fn fold_mul(a: u64, b: u64) -> u64 {
    let m = (a as u128).wrapping_mul(b as u128);
    (m as u64) ^ ((m >> 64) as u64)
}

pub(super) fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5EED_u64)
}

/// Starts loading a way: its control word's line and, for a way that straddles two lines,
/// the line its last data word is on.
#[inline(always)]
pub(super) fn prefetch_way(way: &Way) {
    prefetch(&way.ctrl);
    prefetch(&way.data[DW - 1]);
}

/// Issues a cache prefetch hint for the line holding `p`.
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
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

/// A validated snapshot of a LIVE slot.
#[derive(Clone, Copy, Debug)]
pub(super) struct Snap {
    pub(super) ctrl: u64,
    pub(super) d: [u64; DW],
}

impl Snap {
    #[inline(always)]
    pub(super) fn key_is(&self, k0: u64, k1: u64) -> bool {
        self.d[D_K0] == k0 && self.d[D_K1] & KEY1_MASK == k1
    }
    #[inline(always)]
    pub(super) fn key(&self) -> Tuple {
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
    pub(super) fn dir(&self) -> Dir {
        if self.d[D_K1] & DIR_REV_BIT != 0 {
            Dir::Rev
        } else {
            Dir::Org
        }
    }
    #[inline(always)]
    pub(super) fn xlate(&self) -> Tuple {
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
    pub(super) fn xlate_is(&self, x: &Tuple) -> bool {
        self.d[D_X0] == x.src as u64 | ((x.dst as u64) << 32)
            && self.d[D_X1] & LOW32 == x.sport as u64 | ((x.dport as u64) << 16)
    }
    #[inline(always)]
    pub(super) fn partner(&self) -> u32 {
        (self.d[D_X1] >> 32) as u32
    }
    #[inline(always)]
    pub(super) fn meta(&self) -> u64 {
        self.d[D_META]
    }
}

#[derive(Clone, Copy, Default, Debug)]
pub(super) struct Loc {
    pub(super) b1: u32,
    pub(super) b2: u32,
    pub(super) fp: u32,
}

pub(super) enum Find {
    Found(u32, Snap),
    Busy,
    Absent,
}

pub(super) enum View {
    Free,
    Busy,
    Live(Snap),
}

pub(super) enum Partner {
    Ok(u32, Snap),
    Busy,
    Missing,
    Conflict,
}

pub(super) enum Claim {
    Got(u32, u64),
    Full,
    Busy,
}

pub(super) enum Victim {
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

/// What a cuckoo step may take in the moved half's other bucket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Room {
    /// Only a free way: the step ends no connection.
    Free,
    /// A free way or an expendable (non-protected) pair's, evicted.
    FreeOrExpendable,
}
