//! The paired NAT table: shared by all workers without locks, non-blocking with bounded
//! retries (not lock-free in the strict sense: a thread stalled in the middle of a claim
//! hides that one slot, BUSY, until it resumes; lookups then report a miss after two short
//! spins), with class-based early drop over 16 ways as its eviction order (an LRU
//! approximation; see below).
//!
//! # What this module owns
//!
//! All translation state of xnat: a fixed-size, preallocated, concurrently shared table in which
//! every connection owns two *halves* — the **ORG** half, keyed by the 5-tuple of the first
//! packet as received, and the **REV** half, keyed by the reply tuple after translation
//! (`xlate.reversed()`). It knows nothing of packets, sockets or NAT rules: callers hand it
//! [`Tuple`]s and a coarse clock in seconds, and get back the tuple to rewrite *to*.
//!
//! The module owns: the memory layout ([`Table::new`] allocates everything; nothing allocates
//! afterwards), the concurrency protocol below, the eviction/expiry policy, pair restoration and
//! the outcome counters ([`TableStats`]).
//!
//! # Why pairs are first-class (the Cilium lesson)
//!
//! Cilium keeps the two directions of a SNAT connection as two unrelated entries of a kernel LRU
//! hash. The LRU may evict one half; the next packet then allocates a new port or is dropped and
//! a live connection dies (cilium#29305, #34833, #36572). xnat therefore:
//!
//! * keeps one idle timer per **pair**: a hit in either direction keeps both halves alive.
//!   The hit writes its own half's last-seen second (once a second) and its partner's once
//!   per refresh epoch of 8 s; the pair's last-seen second is the later of the two, and
//!   every decision that ends a pair (expiry on a hit, [`Table::reap`], eviction, the port
//!   allocator's [`Table::is_rev_taken`], [`Table::peek`]) reads both halves when the one
//!   it holds looks expired, so traffic in one direction only never lets the other half
//!   time out,
//! * evicts, expires and removes a **pair**, never one half (both slots are claimed before
//!   either is freed, so no reader ever observes "one half gone, the other still live" as a
//!   result of an eviction),
//! * restores a half found alone (only [`Table::remove_half`] can produce one), tolerating a
//!   concurrent restore or insert of the same key (cilium#40971) and never resurrecting an expired
//!   or removed connection (cilium#47425): a lone half is only restored while it is itself within
//!   its timeout, and its partner key must still be free — if another connection owns it, the
//!   lone half is an orphan and is dropped instead.
//!
//! # Layout
//!
//! The table is an array of *buckets* of 8 *ways*; a way holds a half: its control word
//! followed by its 5 data words, 48 B, so a bucket is 384 B (6 cache lines). Ways 0, 3, 4 and
//! 7 sit within one line and the other four straddle two. A session's half takes a bucket's
//! free ways in that order, an anchor's (a mapping or filter entry, read once per session or
//! refresh epoch) the straddling ones first, so that at the usual fill nearly every hit on
//! a session reads one line. Beside the
//! buckets, one *tag word* per bucket (a dense array, 8 B per bucket, 8 buckets per line)
//! holds a byte per way: the top byte of the way's fingerprint (never 0), or 0 for a free
//! way. One half = 48 B + 1 B tag, so a connection costs **98 B** (see
//! [`Table::bytes_per_connection`]). Every key has two candidate buckets: the first from a
//! keyed folded-multiply hash seeded at start, the second from the first and the key's tag
//! alone (partial-key cuckoo hashing: `(base[tag] - first) mod buckets`, its own inverse,
//! so the tag word tells where any half could move without reading its key). Inserts go
//! to the less loaded of the two (ties to
//! the first; when both are full, a cuckoo step or an eviction). A scan compares the 8 tags
//! of a bucket at once (SWAR: one XOR and a zero-byte test on the word) and reads only a way
//! whose tag matches: its control word, then its data if the 32-bit fingerprint matches too;
//! a claim finds free ways by the zero bytes. So a hit reads two tag words and its way (one
//! line, or two for a straddling way); a miss reads the two tag words (and a way per false
//! tag match, 1 in 255 ways). The batch pipeline ([`Table::probe`], [`Table::probe_data`],
//! and [`Table::lookup_batch`] over 16 keys) prefetches the tag words of every key, then the
//! way of each key's first matching tag, before reading any of them.
//!
//! ```text
//! ctrl word  = fingerprint:32 | seq:32           FREE: fp = 0, seq even
//!                                                BUSY: seq odd (being written / removed)
//!                                                LIVE: fp != 0, seq even
//! data[0]    = key.src | key.dst << 32
//! data[1]    = key.sport | key.dport << 16 | proto << 32 | dir << 40
//! data[2]    = xlate.src | xlate.dst << 32
//! data[3]    = xlate.sport | xlate.dport << 16 | partner slot << 32   (partner = hint)
//! data[4]    = last_seen:32 | state:8 << 32 | flags:8 << 40 | refreshes:8 << 48
//!              | generation:8 << 56                                   (meta)
//! ```
//!
//! # Concurrency protocol (why it is correct)
//!
//! Every field is an atomic word, so there is no undefined behaviour, only the question of which
//! combinations of words a reader can observe. No operation ever blocks waiting for another
//! thread; contended operations retry a bounded number of times and then report a counted
//! failure (`busy`/`race_lost`).
//!
//! * **Per-slot seqlock.** A writer *claims* a slot by a `SeqCst` CAS of its control word from an
//!   even value it observed (FREE or LIVE) to the next odd value, issues a release fence, writes
//!   the data words, and *publishes* with a release store of the next even value. A reader loads
//!   the control word (acquire), loads the data words, issues an acquire fence and reloads the
//!   control word; the snapshot is used only if both loads are equal and even. This is the
//!   standard fence-based seqlock (Boehm, "Can seqlocks get along with programming language
//!   memory models?", 2012): if the reader saw any word written after a claim, the fences make
//!   the claim visible to its second load, so a torn key/xlate is never accepted. A claim whose
//!   CAS fails is simply abandoned, so a claim can never be "waited on"; a stalled writer only
//!   hides its own slot. The 32-bit sequence wraps only after 2^31 rewrites of one slot between
//!   a reader's two loads of it, which cannot happen on any realistic schedule.
//! * **Words outside the seqlock.** `meta` (last-seen, state, flags) and the partner hint in
//!   `data[3]` are single words updated by CAS without a sequence bump. They can never be torn;
//!   a reader may see them one refresh late, which is harmless: the partner index is only ever a
//!   *hint* and is validated by content (the partner must be LIVE, its key must be our
//!   `xlate.reversed()` and its xlate our `key.reversed()`).
//! * **Writes through old slot indexes.** A refresh or state change acts on a slot index
//!   read earlier; the slot may have been freed and taken by another connection since. Every
//!   new occupant gets the next *generation* of its slot (meta bits 56..64), and every CAS on
//!   the meta word carries the generation of the snapshot it came from: a write meant for
//!   the old occupant fails instead of refreshing, assuring or re-stating the new one (the
//!   generation wraps after 256 occupants of one slot between a read and its write). A
//!   partner hint written to a reused slot is harmless: hints are checked by content.
//! * **Cuckoo moves and scans.** A lookup scans a key's first bucket, then its second; a
//!   move of the key from the second into the first in between would make it look absent.
//!   Every move is announced on a *stripe* of the table chosen by the key's bucket pair (256
//!   stripes): a counter of moves in flight and completed, raised before the moved half is
//!   claimed and lowered after its old slot is relabelled. A scan that finds nothing reads
//!   the stripe before and after (acquire loads) and trusts the answer only if no move was
//!   in flight and none completed meanwhile; otherwise it scans again (three times, then it
//!   reports BUSY). The insert's post-claim conflict scan does the same. Whoever saw the old
//!   slot relabelled sees the move's start; whoever saw the move's end sees its new copy.
//! * **Tag words.** A way's byte is written only by whoever holds the slot BUSY: set (a
//!   `SeqCst` XOR of the byte) after the claim's CAS or relabel gives the slot a new
//!   fingerprint, cleared just before the slot is stored FREE. So a LIVE half's tag is its
//!   fingerprint's from before it is published, and a claim's tag is written before its
//!   inserter's conflict-scan fence, where the claim's CAS is. A tag out of date only during
//!   a claim or a free in flight makes a scan skip a BUSY way (as a scan a moment earlier
//!   would have) or read a control word that does not match; a claim skips a way being
//!   freed, or loads a BUSY control word and passes on. Moves are covered by the stripes as
//!   before: the tag of the moved half's new way is set before it is published.
//! * **Uniqueness of keys (insert / restore).** Claims carry the fingerprint of the key being
//!   written. After claiming, an inserter issues a `SeqCst` fence and re-scans both candidate
//!   buckets of every key it is writing (Dekker style): of two concurrent inserters of the
//!   same key, at least the later one (in the single order of the two fences) sees the
//!   other's claim and its tag. (The fence replaced `SeqCst` loads, which give the same guarantee in the
//!   Rust/C++ memory model but which the loom model checker does not model.) On any conflict (a BUSY slot with the same fingerprint, or a LIVE slot with
//!   the same key) the inserter aborts *its own* claims and either reports the live winner
//!   ([`InsertError::Exists`] / [`InsertError::RevTaken`]) or retries after a backoff. Hence two
//!   LIVE slots never hold the same key, and in particular two live connections never share a
//!   REV tuple.
//! * **Pairs.** `insert_pair` publishes both halves after both are written, so no half is ever
//!   visible with a half-written partner. Removal/eviction of a pair claims both slots (in slot
//!   index order, CAS from the exact LIVE value that was validated, aborting on any failure),
//!   and only then frees them. A reader that finds a half alone therefore knows the partner is
//!   really gone (or BUSY, in which case it does nothing). A restore first claims the lone half
//!   itself (CAS from the validated value), so it cannot race with that half's removal: if the
//!   pair was removed meanwhile, the claim fails and nothing is resurrected.
//!
//! # How this is checked
//!
//! * Unit tests with test-only hooks that stop one operation at the exact point another
//!   must not interfere with (between a key's two bucket scans, between scoring and claiming
//!   a victim, between reading a half and refreshing it), each failing without its fix.
//! * A model-based property test against a simple reference, with [`Table::audit`] (every
//!   invariant over every slot) after each operation.
//! * Multi-threaded stress tests (`tests/table_stress.rs`) that pause for a full audit.
//! * A loom model check (`tests/loom_table.rs`, crate built with `--cfg loom`: loom's atomics,
//!   2 buckets of 2 ways): two inserts of one key, two connections on one reply tuple, a
//!   lookup against an insert, a removal against a restore, a lookup against a cuckoo move,
//!   an eviction against a refresh. It found that the conflict scan's `SeqCst` loads are
//!   outside what loom models (now a `SeqCst` fence, see above), and that the tag written by
//!   a claim must be a `SeqCst` write too (with a relaxed one, two inserts of one key both
//!   won under the model); under the model every
//!   `publish`/`free` also checks that nobody wrote the slot while it was claimed.
//!
//! # Eviction and expiry policy
//!
//! Halves expire when `now - last_seen > timeout(state)` ([`Timeouts`]). Expired pairs are
//! reclaimed lazily: by a lookup that hits them, by an insert whose key or candidate buckets
//! hold them, or by [`Table::flush`]. When an insert finds both candidate buckets (16 ways)
//! without a free slot, it evicts the pair of the best victim among them, by class (a
//! segmented LRU over 16 ways):
//!
//! 1. expired pairs (longest past their timeout first),
//! 2. pairs never *assured* (no packet seen in the reply direction — SYN floods, scans,
//!    unanswered UDP), longest idle first — Linux conntrack's `early_drop` rule,
//! 3. TCP pairs in [`ConnState::TcpClosing`] or a reset state (both FINs or an
//!    RST seen: lingering for stray retransmissions), longest idle first,
//! 4. *probationary* pairs: assured, not TCP-established (nor half-closed), and refreshed
//!    in fewer than two distinct seconds (one-shot DNS-style exchanges), longest idle first,
//! 5. *protected* pairs (TCP established or half-closed, or flows that proved themselves by
//!    traffic in several seconds), largest `idle / timeout` first.
//!
//! The search scores the key's first bucket, then its second (six more lines to read)
//! unless the first already holds a victim good enough: an expired pair (which ends no
//! connection); and in a full table, where every new pair evicts one (a SYN flood: this
//! thread's cuckoo steps fail, see [`TableStats::relocate`]), also a pair never assured.
//! So assured pairs are always compared across both buckets, and one is evicted only if
//! neither holds an expendable victim; the sampling changes only which expendable pair goes
//! (in a full table at 1 M connections, 30.5 -> 20.2 simulated LL misses per new connection;
//! `bench/results/tablesim.md` measures the effect on unanswered flows).
//!
//! Before evicting anything but an expired pair, the insert tries one *cuckoo step*: it moves
//! one half out of the two full buckets into a free way of that half's own alternate bucket
//! ([`TableStats::relocate`]; the candidates and their alternates come from the tag words,
//! and only the half moved is read), which ends no connection; so nothing live is evicted
//! while the table has room (none up to 90 % fill, against 1.2 % of the connections lost without the
//! step: test `a_table_at_ninety_percent_has_evicted_no_live_connection`). Before evicting a
//! protected pair (or refusing), a second cuckoo step may also take an expendable victim's
//! way in the alternate bucket. The moved half stays BUSY (same fingerprint) for the whole
//! move, so its key is never LIVE twice.
//!
//! Class 5 is evicted only if [`TableConfig::evict_protected`] is set (default, LRU
//! behaviour: a new connection always gets in); otherwise the insert fails with
//! [`InsertError::Full`], as conntrack and VPP do when nothing expendable is left. Victims are
//! sought only among the 16 ways of the new key's two buckets, so a protected pair can be
//! evicted while other buckets still hold expendable entries; the chance falls steeply with
//! head-room (`bench/results/tablesim.md` measures it).
//!
//! Expiry is lazy: an idle table keeps expired pairs (their ports, as far as
//! [`Table::is_rev_taken`] is concerned, are free) until a lookup, insert, [`Table::flush`] or
//! the gateway's background sweep ([`Table::reap`], the whole table every 10 s) meets them.
//!
//! Refreshes are written at most once per second per half (the clock is in seconds), which also
//! bounds write traffic on hot flows. The partner is visited (refreshed, verified, restored if
//! missing) only on the first hit of a new 16-second epoch, when the half looks expired, or
//! when a reply assures the pair: an established packet touches one half, not two (half the
//! cache lines and writes of a refresh). A lost half is therefore noticed by its partner
//! within one epoch of traffic (sooner when the caller knows both keys: a packet that missed
//! its half can ask [`Table::lookup_repair`] to check the other one), and a half's own
//! last-seen second (used to rank eviction candidates) may lag the pair's by up to one
//! epoch; a claimed victim is scored again on both halves.
//!
//! An *anchor* ([`Table::insert_anchor`]) is a pair that other pairs keep alive: they look it
//! up when a hit refreshes both their halves ([`Hit::refreshed`], once per epoch of traffic),
//! so its last-seen second lags theirs by less than an epoch. Its idle time counts one epoch
//! less, for expiry and for eviction, so it never ends before the pairs that keep it. The
//! NAT's endpoint-independent mappings and filter entries are anchors.
#![deny(unsafe_op_in_unsafe_fn)]

mod audit;
mod engine;
mod evict;
mod layout;
#[cfg(not(loom))]
mod migrate;
mod observe;
mod pair;
mod policy;
mod region;
mod search;
mod seqlock;
mod stats;
mod sync;
#[cfg(test)]
mod tests;

pub use audit::Audit;
pub use engine::{Foretold, Probe, Sessions, Table};
pub use observe::PairObserver;
pub use pair::InsertKind;
pub use region::PageUse;
pub(crate) use stats::{my_stripe, STRIPES};
pub use stats::{OpCounts, TableStats};

/// Seconds per partner refresh epoch: a hit refreshes its own half once a second and both
/// halves (and, through [`Hit::refreshed`], the anchors that depend on the pair) on its
/// first hit of a new epoch. An anchor's idle time counts one epoch less.
pub const PARTNER_EPOCH_SECS: u32 = 1 << layout::PARTNER_EPOCH_SHIFT;

use std::fmt;

/// A 5-tuple as seen on the wire, addresses as host-order u32.
///
/// For ICMP query messages put the identifier in both `sport` and `dport`, so that
/// [`Tuple::reversed`] maps a request to its reply.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct Tuple {
    /// Source address (host order).
    pub src: u32,
    /// Destination address (host order).
    pub dst: u32,
    /// Source port (or ICMP identifier).
    pub sport: u16,
    /// Destination port (or ICMP identifier).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
}

impl Tuple {
    /// Builds a tuple.
    pub const fn new(src: u32, sport: u16, dst: u32, dport: u16, proto: u8) -> Tuple {
        Tuple {
            src,
            dst,
            sport,
            dport,
            proto,
        }
    }

    /// The tuple of a packet travelling the other way.
    pub const fn reversed(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }
}

/// Which half of a pair a key hit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dir {
    /// The original direction (key = tuple of the connection's first packet).
    Org,
    /// The reply direction (key = reply tuple after translation).
    Rev,
}

impl Dir {
    /// The other half's direction.
    pub const fn flip(self) -> Dir {
        match self {
            Dir::Org => Dir::Rev,
            Dir::Rev => Dir::Org,
        }
    }
}

/// Coarse connection state, drives idle timeouts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConnState {
    /// TCP, handshake not complete.
    TcpSyn,
    /// TCP, established.
    TcpEstablished,
    /// TCP, FIN seen from both ends (or a FIN or RST before the handshake completed): the
    /// transitory timeout, no way back.
    TcpClosing,
    /// UDP.
    Udp,
    /// ICMP query (echo, timestamp…).
    Icmp,
    /// Any other protocol.
    Other,
    /// TCP half-closed: the initiator (ORG direction) sent a FIN, the responder may go on
    /// sending; kept for the established timeout until the other FIN (RFC 7857 2.1).
    TcpFinOrg,
    /// TCP half-closed by the responder (REV direction).
    TcpFinRev,
    /// TCP reset sent by the initiator (ORG direction): kept for the transitory timeout
    /// (RFC 7857 2.2), back to established if the receiver of the reset (the REV end) sends
    /// anything but a reset (RFC 6146 3.5.2.2), so a stray RST cannot end a connection that
    /// goes on. (Code 8 was a reset of either direction before the direction was recorded;
    /// a state file of that time reads it as this state.)
    TcpResetOrg,
    /// TCP reset sent by the responder (REV direction); the ORG end's traffic restores it.
    TcpResetRev,
}

impl ConnState {
    /// Every state, in code order.
    pub const ALL: [ConnState; 10] = [
        ConnState::TcpSyn,
        ConnState::TcpEstablished,
        ConnState::TcpClosing,
        ConnState::Udp,
        ConnState::Icmp,
        ConnState::Other,
        ConnState::TcpFinOrg,
        ConnState::TcpFinRev,
        ConnState::TcpResetOrg,
        ConnState::TcpResetRev,
    ];

    /// The state's name in listings, stats and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            ConnState::TcpSyn => "syn",
            ConnState::TcpEstablished => "established",
            ConnState::TcpClosing => "closing",
            ConnState::Udp => "udp",
            ConnState::Icmp => "icmp",
            ConnState::Other => "other",
            ConnState::TcpFinOrg => "half_closed_org",
            ConnState::TcpFinRev => "half_closed_rev",
            ConnState::TcpResetOrg => "reset_org",
            ConnState::TcpResetRev => "reset_rev",
        }
    }

    pub(crate) const fn code(self) -> u8 {
        match self {
            ConnState::TcpSyn => 0,
            ConnState::TcpEstablished => 1,
            ConnState::TcpClosing => 2,
            ConnState::Udp => 3,
            ConnState::Icmp => 4,
            ConnState::Other => 5,
            ConnState::TcpFinOrg => 6,
            ConnState::TcpFinRev => 7,
            ConnState::TcpResetOrg => 8,
            ConnState::TcpResetRev => 9,
        }
    }

    pub(crate) const fn from_code(c: u8) -> ConnState {
        match c {
            0 => ConnState::TcpSyn,
            1 => ConnState::TcpEstablished,
            2 => ConnState::TcpClosing,
            3 => ConnState::Udp,
            4 => ConnState::Icmp,
            6 => ConnState::TcpFinOrg,
            7 => ConnState::TcpFinRev,
            8 => ConnState::TcpResetOrg,
            9 => ConnState::TcpResetRev,
            _ => ConnState::Other,
        }
    }
}

/// Idle timeouts in seconds, per [`ConnState`].
///
/// The defaults are the minimums the IETF BEHAVE requirements set for NATs, so that a
/// conforming application never sees xnat forget a connection it still uses:
/// TCP established 7440 s (2 h 4 min, RFC 5382 REQ-5), TCP transitory — handshake or closing —
/// 240 s (RFC 5382 REQ-5), UDP 300 s (RFC 4787 REQ-5 recommends 5 min), ICMP query 60 s
/// (RFC 5508 REQ-1), other protocols 600 s (conntrack's generic timeout).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Timeouts {
    /// TCP before the handshake completes.
    pub tcp_syn: u32,
    /// TCP established.
    pub tcp_established: u32,
    /// TCP after FIN/RST.
    pub tcp_closing: u32,
    /// UDP.
    pub udp: u32,
    /// ICMP queries.
    pub icmp: u32,
    /// Anything else.
    pub other: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: 240,
            tcp_established: 7440,
            tcp_closing: 240,
            udp: 300,
            icmp: 60,
            other: 600,
        }
    }
}

impl Timeouts {
    /// The timeout that applies to `state`.
    pub const fn for_state(&self, state: ConnState) -> u32 {
        match state {
            ConnState::TcpSyn => self.tcp_syn,
            ConnState::TcpEstablished => self.tcp_established,
            ConnState::TcpClosing => self.tcp_closing,
            ConnState::Udp => self.udp,
            ConnState::Icmp => self.icmp,
            ConnState::Other => self.other,
            ConnState::TcpFinOrg | ConnState::TcpFinRev => self.tcp_established,
            ConnState::TcpResetOrg | ConnState::TcpResetRev => self.tcp_closing,
        }
    }
}

/// Table configuration, fixed for the table's life.
#[derive(Clone, Debug)]
pub struct TableConfig {
    /// Connections (pairs) the table must hold; rounded up to a whole number of buckets
    /// (4 connections per bucket). See [`Table::capacity`].
    pub connections: usize,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// When an insert finds no free, expired, never-assured, closing or probationary victim,
    /// evict the *protected* pair closest to its timeout (`true`, default: LRU behaviour, a
    /// new connection always gets in) or refuse the insert with [`InsertError::Full`]
    /// (`false`: conntrack/VPP behaviour, never breaks an open, proven flow).
    pub evict_protected: bool,
    /// Hash key. `None` (default) draws a random one, which an outside attacker cannot predict;
    /// set it only for reproducible tests and simulations.
    pub seed: Option<u64>,
}

impl TableConfig {
    /// A configuration with default timeouts and policy for `connections` connections.
    pub fn new(connections: usize) -> TableConfig {
        TableConfig {
            connections,
            timeouts: Timeouts::default(),
            evict_protected: true,
            seed: None,
        }
    }
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig::new(1 << 18)
    }
}

/// Result of a hit: the tuple the packet must be rewritten TO.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Hit {
    /// Which half matched.
    pub dir: Dir,
    /// The tuple the packet becomes.
    pub xlate: Tuple,
    /// Connection state when hit.
    pub state: ConnState,
    /// Opaque handle of the half that matched (for [`Table::set_state`]).
    pub slot: u32,
    /// The partner half was missing and this lookup recreated it.
    pub restored: bool,
    /// This lookup refreshed both halves of the pair (a partner refresh: at most once per
    /// epoch of [`PARTNER_EPOCH_SECS`] seconds of traffic, or when a half looked expired,
    /// became assured or was restored), or the pair was just created: the moment to refresh
    /// the anchors that depend on it (the NAT's endpoint-independent mapping, see
    /// [`Table::insert_anchor`]).
    pub refreshed: bool,
}

/// Why [`Table::insert_pair`] did not insert.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InsertError {
    /// The ORG key is already live (or a concurrent insert of it won): use the winner.
    Exists(Hit),
    /// The REV tuple is owned by another live pair: the allocator must pick another port.
    RevTaken,
    /// No slot could be obtained in the candidate buckets under the eviction policy.
    Full,
    /// Contention on the same keys did not settle within the retry budget; retry later.
    Busy,
    /// The request is malformed: `xlate.proto != org.proto`, or the REV key equals the ORG key.
    Invalid,
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::Exists(h) => write!(f, "connection already exists (-> {:?})", h.xlate),
            InsertError::RevTaken => f.write_str("reply tuple is owned by another connection"),
            InsertError::Full => f.write_str("table full"),
            InsertError::Busy => f.write_str("contended, retry"),
            InsertError::Invalid => {
                f.write_str("invalid pair: protocol changes or reply key equals original key")
            }
        }
    }
}

impl std::error::Error for InsertError {}

/// What [`Table::with_state_file`] found in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// No previous table (no file, or an empty one): a new, empty table.
    New,
    /// The previous table, taken over: every live translation continues.
    Resumed,
    /// A file that cannot be taken over, reset to an empty table.
    Reset {
        /// Why, for the log.
        reason: String,
    },
    /// A table of this boot of another size or of the previous format: the file was reset
    /// and the previous table's live connections inserted into the new one (those that did
    /// not fit were left out, as the eviction policy decided for each insert).
    Migrated {
        /// Why it could not be taken over as it was, for the log.
        reason: String,
        /// Live connections the previous table held.
        found: usize,
        /// Of those, the ones the new table holds.
        kept: usize,
    },
}

impl Resume {
    /// Whether the previous table was taken over.
    pub fn resumed(&self) -> bool {
        *self == Resume::Resumed
    }
}

/// Why a table could not be created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// `connections` was 0.
    ZeroCapacity,
    /// `connections` exceeds what 32-bit slot handles can address.
    TooLarge {
        /// The requested number.
        connections: usize,
    },
    /// The allocator refused the memory.
    OutOfMemory {
        /// Bytes requested.
        bytes: usize,
    },
    /// The state file could not be opened, sized or mapped.
    StateFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::ZeroCapacity => f.write_str("table size (connections) must be at least 1"),
            TableError::TooLarge { connections } => write!(
                f,
                "table size {connections} connections is too large (max {})",
                layout::MAX_CONNECTIONS
            ),
            TableError::OutOfMemory { bytes } => {
                write!(f, "cannot allocate {bytes} bytes for the NAT table")
            }
            TableError::StateFile { path, reason } => {
                write!(f, "table state file {path}: {reason}")
            }
        }
    }
}

impl std::error::Error for TableError {}

/// One connection as listed by [`Table::sessions`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Session {
    /// Tuple of the first packet as received.
    pub org: Tuple,
    /// What it becomes after NAT.
    pub xlate: Tuple,
    /// Connection state.
    pub state: ConnState,
    /// Seconds since the last packet in either direction.
    pub idle_secs: u32,
}
