//! NAT policy and translation: SNAT/masquerade pools, port forwards (DNAT, optionally
//! with SNAT), mappings and filtering (RFC 4787), and [`Engine::translate`], which rewrites
//! one frame in place using the shared paired table.
//!
//! Split by direction, as VPP's NAT44-ED is: `in2out` (outbound sessions, mappings, the
//! port allocator), `out2in` (inbound sessions: port forwards and filtering), `hairpin`
//! (inside to a NAT address), `icmp` (ICMP errors), `tcp` (TCP state), `fragments`
//! (shallow virtual reassembly), `restore` (a connection that lost a half); `rules` holds the rule set, `quota` the per-source
//! quota and `census` the counts kept as connections come and go.
//!
//! This module knows packets (through [`crate::packet`]) and the table (through
//! [`crate::table`]) but nothing of sockets: the dataplane calls [`NatHandler`], which
//! adds the next hop and hands the frame back.

mod blocks;
mod census;
pub mod deterministic;
mod fragments;
mod hairpin;
mod handler;
mod icmp;
mod in2out;
mod out2in;
mod quota;
mod restore;
mod rules;
mod tcp;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use blocks::{BlockConfig, BlockRefusal, BlockStats, PortBlocks};
pub use census::Census;
pub use handler::{coarse_now, NatHandler};
pub use in2out::{is_mapping, mapping_key};
pub use quota::Quota;
pub use rules::{make_table, table_timeouts, ForwardTarget, LiveRules, Rules, DNAT_SNAT_PORTS};

use crate::config::{Mapping, Proto};
use crate::packet::{self, L4Kind, Parsed};
use crate::table::{Foretold, Hit, OpCounts, Probe, Table, Tuple};

use crate::packet::l4::{TCP_ACK, TCP_RST, TCP_SYN};

/// Why the engine refused a frame (beyond malformed input, see [`packet::Drop`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum NatDrop {
    /// Inbound traffic to a NAT address with no session and no port-forward rule, or
    /// refused by the filtering behaviour.
    NoMapping = 0,
    /// A TCP segment other than a SYN with no session (not creating state for it).
    TcpNoSession,
    /// No free port on the chosen NAT address for this destination.
    PortsExhausted,
    /// The table refused a new pair (full under the eviction policy) or stayed contended.
    TableFull,
    /// An ICMP error quoting a packet of no known session.
    IcmpNoSession,
    /// Outbound traffic with no SNAT pool configured (DNAT-only gateway).
    NoSnatRule,
    /// An ICMP message from the inside that matches no session and is no query request
    /// (echo, timestamp, information, address mask: only those open a session).
    UnexpectedIcmp,
    /// The inside source already has `--max-sessions-per-source` live sessions.
    QuotaExceeded,
    /// Address 0.0.0.0 at either end, or TCP/UDP port 0.
    Martian,
    /// An ICMP message whose checksum does not verify (RFC 5508 REQ-3).
    BadIcmpChecksum,
    /// Port blocks: the inside address holds `--port-blocks-per-subscriber` blocks and
    /// every port of them is in use (other subscribers are not affected).
    PortBlockLimit,
}

impl NatDrop {
    /// Number of reasons.
    pub const COUNT: usize = 11;
    /// Names, indexed by discriminant.
    pub const NAMES: [&'static str; NatDrop::COUNT] = [
        "no_mapping",
        "tcp_no_session",
        "ports_exhausted",
        "table_full",
        "icmp_no_session",
        "no_snat_rule",
        "unexpected_icmp",
        "quota_exceeded",
        "martian",
        "bad_icmp_checksum",
        "port_block_limit",
    ];
}

/// Why a frame was not translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Malformed or not NAT-able.
    Packet(packet::Drop),
    /// Policy.
    Nat(NatDrop),
}

/// A frame parsed, and its table key hashed, ahead of its translation: what the first
/// stage of the batch pipeline keeps for each frame ([`Engine::prepare`]), and translates
/// it by ([`Engine::translate_prepared`]). Made only by [`Engine::prepare_into`], so that
/// its probe is always of its own parse's key, and only of a key that may be looked up
/// (no martian's, see `is_martian`): the translation trusts it without checking either.
#[derive(Clone, Copy, Debug)]
pub struct Prepared {
    parsed: Result<Parsed, packet::Drop>,
    probe: Option<Probe>,
}

impl Prepared {
    /// Nothing prepared yet: what [`Engine::prepare_into`] overwrites.
    pub const EMPTY: Prepared = Prepared {
        parsed: Err(packet::Drop::TooShortEth),
        probe: None,
    };

    /// The parse of the frame.
    #[inline(always)]
    pub fn parsed(&self) -> &Result<Parsed, packet::Drop> {
        &self.parsed
    }

    /// The table probe of the frame's key: none if it did not parse or is a martian's.
    /// An ICMP error's is of the session it quotes.
    #[inline]
    pub fn probe(&self) -> Option<&Probe> {
        self.probe.as_ref()
    }
}

/// Per-worker translation engine over the shared table and rules.
pub struct Engine {
    table: Arc<Table>,
    rules: Arc<Rules>,
    /// Where newer rules are published (`xnat reload`), and the generation in use.
    live: Option<(Arc<LiveRules>, u64)>,
    quota: Arc<Quota>,
    rng: u64,
    /// Coarse clock in seconds, set by the caller once per batch.
    pub now: u32,
    /// Translation logs (exhaustion and quota events; sessions are logged by the census).
    log: Option<Arc<crate::logging::EventLog>>,
    /// Exhaustion and quota events this worker may still log in second `log_second`.
    log_budget: u32,
    log_second: u32,
    /// Port block allocation (carrier-grade NAT), if on.
    blocks: Option<Arc<PortBlocks>>,
    /// Scratch: the port ranges of the subscriber at hand.
    block_ranges: Vec<(u16, u16)>,
    /// The segment just translated was an RST that ended a live TCP connection (see
    /// [`Engine::take_rst_probe`]).
    rst_probe: bool,
    /// The table's outcome counts of this worker's lookups, added to the table's counters
    /// once per batch ([`Engine::flush_counts`]).
    counts: OpCounts,
    /// Whether the pipeline prefetches for frames that may open a session
    /// (`Engine::prefetch_create`): only for a table larger than [`PREFETCH_CREATE_BYTES`].
    prefetch_creates: bool,
}

/// The table size from which the pipeline prefetches for new sessions: about one
/// last-level cache of a server CPU's core complex (16 MiB on the AMD EPYC this was measured
/// on). The ways of a smaller table mostly stay in the cache, where the prefetch's hashing
/// costs more than the waits it saves (4159 -> 4371 instructions per new connection at 10 k
/// connections, 0.90-1.02 times the rate); at 1 M connections it saves waits for memory
/// (1.01-1.14 times the rate).
pub const PREFETCH_CREATE_BYTES: usize = 16 << 20;

/// Most exhaustion and quota events one worker logs per second (a flood of refused
/// connections must not flood the collector; the drops are counted anyway).
const LOG_EVENTS_PER_SECOND: u32 = 64;

impl Engine {
    /// An engine for one worker; `seed` decorrelates the workers' port choices.
    pub fn new(table: Arc<Table>, rules: Arc<Rules>, seed: u64) -> Engine {
        Self::with_quota(table, rules, Arc::new(Quota::new(0)), seed)
    }

    /// An engine enforcing a per-source session quota.
    pub fn with_quota(
        table: Arc<Table>,
        rules: Arc<Rules>,
        quota: Arc<Quota>,
        seed: u64,
    ) -> Engine {
        let prefetch_creates = table.memory_bytes() > PREFETCH_CREATE_BYTES;
        Engine {
            table,
            rules,
            live: None,
            quota,
            rng: seed | 1,
            now: 0,
            log: None,
            log_budget: 0,
            log_second: u32::MAX,
            blocks: None,
            block_ranges: Vec::new(),
            rst_probe: false,
            counts: OpCounts::default(),
            prefetch_creates,
        }
    }

    /// Takes NAT ports from the subscribers' port blocks in `blocks`.
    pub fn set_port_blocks(&mut self, blocks: Arc<PortBlocks>) {
        self.blocks = Some(blocks);
    }

    /// Logs exhaustion and quota events to `log`.
    pub fn set_log(&mut self, log: Arc<crate::logging::EventLog>) {
        self.log = Some(log);
    }

    /// Logs an exhaustion or quota event, at most [`LOG_EVENTS_PER_SECOND`] a second.
    fn report(&mut self, kind: crate::logging::EventKind) {
        let Some(log) = &self.log else { return };
        if self.log_second != self.now {
            self.log_second = self.now;
            self.log_budget = LOG_EVENTS_PER_SECOND;
        }
        if self.log_budget > 0 {
            self.log_budget -= 1;
            log.emit(kind);
        }
    }

    /// An engine that translates with the rules published in `live`, picking up new ones
    /// when [`Engine::refresh_rules`] is called (once per batch).
    pub fn following(
        table: Arc<Table>,
        live: Arc<LiveRules>,
        quota: Arc<Quota>,
        seed: u64,
    ) -> Engine {
        let generation = live.generation();
        let mut e = Self::with_quota(table, live.current(), quota, seed);
        e.live = Some((live, generation));
        e
    }

    /// Takes newer rules if some were published; one atomic load when none were. Returns
    /// whether the rules changed.
    #[inline]
    pub fn refresh_rules(&mut self) -> bool {
        let Some((live, seen)) = &mut self.live else {
            return false;
        };
        let g = live.generation();
        if g == *seen {
            return false;
        }
        *seen = g;
        self.rules = live.current();
        true
    }

    /// The shared table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    #[inline]
    fn rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// First stage of the batch pipeline: parses `frame` once and hashes the table key it
    /// will be looked up by, starting to load both candidate buckets' tag words
    /// ([`Table::probe`]). Call it for every frame of a batch, then
    /// [`Engine::prefetch_data`] for each, then translate each with
    /// [`Engine::translate_prepared`].
    #[inline]
    pub fn prepare(&self, frame: &[u8]) -> Prepared {
        let mut p = Prepared::EMPTY;
        self.prepare_into(frame, &mut p);
        p
    }

    /// [`Engine::prepare`] into `out`, an entry of the caller's batch: the parse is written
    /// there directly rather than copied.
    #[inline(always)]
    pub fn prepare_into(&self, frame: &[u8], out: &mut Prepared) {
        // The common shape's tuple is hashed as the short parse left it in registers, not
        // read back from the entry (12 % of an established packet's instructions, with the
        // short parse itself).
        // A martian's key is not probed: the translation refuses it before any lookup, and
        // trusts a probe to be of a key it may look up (see `Prepared`).
        if let Some(p) = packet::parse_plain(frame) {
            let t = p.tuple();
            out.parsed = Ok(p);
            // `is_martian` for a TCP segment or UDP datagram (its ports count), without the
            // protocol test the short parse has made already.
            let martian = t.src == 0 || t.dst == 0 || t.sport == 0 || t.dport == 0;
            out.probe = (!martian).then(|| self.table.probe(&t));
            return;
        }
        out.parsed = packet::parse_general(frame);
        out.probe = out.parsed.as_ref().ok().and_then(|p| match p.embedded() {
            Some(e) => Some(self.table.probe(&e.tuple().reversed())),
            None => {
                let t = p.tuple();
                (!is_martian(&t)).then(|| self.table.probe(&t))
            }
        });
    }

    /// Second stage of the batch pipeline: starts loading the data of the table slot whose
    /// fingerprint matches the prepared frame's key ([`Table::probe_data`]).
    #[inline]
    pub fn prefetch_data(&self, p: &mut Prepared) {
        if let Some(probe) = &mut p.probe {
            self.table.probe_data(probe);
        }
    }

    /// Third stage of the batch pipeline, after [`Engine::prefetch_data`] for the whole
    /// batch: for a frame whose session will refresh its pair in this packet (once per
    /// refresh epoch of its traffic), starts loading the pair's other half
    /// ([`Table::probe_refresh`]) and, with endpoint-independent mapping, the way of the
    /// mapping that the packet's translation then looks up: its key is hashed and its tag
    /// words read here ([`Table::probe`], [`Table::probe_data`]), a wait of an L3 hit
    /// for one packet in several (the tag words of a table of millions fit there) rather
    /// than a wait for memory at translation.
    ///
    /// A frame whose key the second stage found absent may open a session instead: see
    /// `Engine::prefetch_create` (a table larger than [`PREFETCH_CREATE_BYTES`] only).
    #[inline(always)]
    pub fn prefetch_refresh(&self, p: &Prepared) {
        let Some(probe) = &p.probe else {
            return;
        };
        let (dir, xlate) = match self.table.probe_refresh(probe, self.now) {
            Foretold::Refresh(dir, xlate) => (dir, xlate),
            Foretold::Other => return,
            Foretold::Miss if self.prefetch_creates => return self.prefetch_create(p),
            Foretold::Miss => return,
        };
        let Ok(parsed) = &p.parsed else {
            return;
        };
        // An ICMP error's probe is of the session it quotes, not of its own tuple.
        if self.rules.mapping == Mapping::EndpointIndependent && parsed.kind() != L4Kind::IcmpError
        {
            let t = parsed.tuple();
            let (a, port) = Self::inside_endpoint(&t, dir, &xlate);
            let mut m = self.table.probe(&in2out::mapping_key(t.proto, a, port));
            self.table.probe_data(&mut m);
        }
    }

    /// The third stage for a frame whose key is absent from the table and that may open a
    /// session (a TCP SYN, UDP, an ICMP query): starts loading the way its session's insert
    /// will claim first ([`Table::probe_claim`]) and, with endpoint-independent mapping,
    /// the tag words of its mapping's key and of the reply key of the mapping it gets if
    /// its own port is free on its pool address (port preservation): the first reads of its
    /// creation, which otherwise wait for memory one after another (a table of millions).
    /// Only hints; a frame from outside that opens nothing costs a few hashes. Out of line:
    /// the established packets' loop stays as short as without it.
    #[inline(never)]
    fn prefetch_create(&self, p: &Prepared) {
        let (Ok(parsed), Some(probe)) = (&p.parsed, &p.probe) else {
            return;
        };
        let opens = match parsed.kind() {
            L4Kind::Tcp => opens_connection(parsed.tcp_flags()),
            L4Kind::Udp | L4Kind::IcmpQueryRequest => true,
            _ => false,
        };
        if !opens {
            return;
        }
        self.table.probe_claim(probe);
        if self.rules.mapping != Mapping::EndpointIndependent {
            return;
        }
        let t = parsed.tuple();
        // `Table::probe` starts loading the tag words.
        let _ = self
            .table
            .probe(&in2out::mapping_key(t.proto, t.src, t.sport));
        if self.blocks.is_none() {
            if let Some((addr, lo, hi)) = self.rules.pool_for(t.src) {
                if (lo..=hi).contains(&t.sport) {
                    let _ = self
                        .table
                        .probe(&in2out::mapping_reply_key(t.proto, addr, t.sport));
                }
            }
        }
    }

    /// Adds the counts of the table lookups made since the last call to the table's
    /// counters: once per batch, after [`Engine::translate_prepared`] and
    /// [`Engine::translate_batched`] (the other translate calls flush their own).
    #[inline]
    pub fn flush_counts(&mut self) {
        if !self.counts.is_empty() {
            self.table.flush_counts(&mut self.counts);
        }
    }

    /// Translates the frame in place. `from_inside` tells which side it arrived on.
    /// On success the frame's addresses, ports and checksums are rewritten (TTL and MACs
    /// are the caller's) and the parse result is returned for the caller's next-hop step.
    #[inline]
    pub fn translate(&mut self, frame: &mut [u8], from_inside: bool) -> Result<Parsed, Refused> {
        let p = packet::parse(frame).map_err(Refused::Packet)?;
        self.translate_parsed(frame, &p, from_inside)?;
        Ok(p)
    }

    /// [`Engine::translate`] of a frame the caller has parsed already (`p` is what
    /// [`packet::parse`] returned for `frame`).
    #[inline]
    pub fn translate_parsed(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        from_inside: bool,
    ) -> Result<(), Refused> {
        let r = self.translate_batched(frame, p, from_inside);
        self.flush_counts();
        r
    }

    /// [`Engine::translate_parsed`] whose table lookups' counts wait for
    /// [`Engine::flush_counts`], once per batch (a worker's frame that was not prepared).
    #[inline]
    pub fn translate_batched(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        from_inside: bool,
    ) -> Result<(), Refused> {
        self.translate_with(frame, p, None, from_inside)
    }

    /// Translates `frame` as [`Engine::prepare`] found it (`prep` was prepared from this
    /// frame, whose headers are still as they were then: a completed partial checksum is
    /// fine), with the table key it hashed then. The counts of its table
    /// lookups wait for [`Engine::flush_counts`], once per batch.
    #[inline]
    pub fn translate_prepared(
        &mut self,
        frame: &mut [u8],
        prep: &Prepared,
        from_inside: bool,
    ) -> Result<(), Refused> {
        match &prep.parsed {
            Ok(p) => self.translate_with(frame, p, prep.probe.as_ref(), from_inside),
            Err(d) => Err(Refused::Packet(*d)),
        }
    }

    /// The translation of parse `p` of `frame`; `probe`: the probe [`Engine::prepare_into`]
    /// made along with `p`, if any (see [`Prepared`]): of `p`'s key (of the session an ICMP
    /// error quotes), which is no martian's.
    #[inline(always)]
    fn translate_with(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        probe: Option<&Probe>,
        from_inside: bool,
    ) -> Result<(), Refused> {
        self.rst_probe = false;
        if p.proto() == 1 && !icmp::icmp_checksum_ok(frame, p) {
            return Err(Refused::Nat(NatDrop::BadIcmpChecksum));
        }
        if p.kind() == L4Kind::IcmpError {
            return self.translate_icmp_error(frame, p, from_inside);
        }
        let t = p.tuple();
        let found = match probe {
            Some(pr) => {
                debug_assert!(pr.is_for(&t) && !is_martian(&t), "a prepared probe");
                self.table
                    .lookup_probe_counted(pr, self.now, &mut self.counts)
            }
            None => {
                if is_martian(&t) {
                    return Err(Refused::Nat(NatDrop::Martian));
                }
                self.table.lookup_counted(&t, self.now, &mut self.counts)
            }
        };
        if let Some(hit) = &found {
            self.apply_hit(frame, p, &t, hit, false);
            return Ok(());
        }
        // A packet that cannot open a connection may have missed a lost half.
        let repairable = (t.proto == 17 && !from_inside)
            || (t.proto == 6 && (!from_inside || !opens_connection(p.tcp_flags())));
        match repairable
            .then(|| self.repair_lost_half(&t, from_inside))
            .flatten()
        {
            Some(h) => self.apply_hit(frame, p, &t, &h, false),
            None => {
                let h = self.create(p, from_inside, probe)?;
                self.apply_hit(frame, p, &t, &h, from_inside);
            }
        }
        Ok(())
    }

    /// Rewrites the frame (parse `p`, tuple `t`) as `hit` says, and keeps what the session
    /// depends on up to date: its mapping when the hit refreshed the pair (unless
    /// `created_outbound`: a session just opened from the inside has just looked up or
    /// made its mapping in `mapping_for`, and refreshing it again would be a second lookup
    /// of the same key in the same second), its TCP state. Called with the hit where it
    /// was found, so that the hit is not copied on the established packet's path.
    #[inline(always)]
    fn apply_hit(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        t: &Tuple,
        hit: &Hit,
        created_outbound: bool,
    ) {
        if hit.xlate.src != t.src || hit.xlate.sport != t.sport {
            packet::set_src(frame, p, hit.xlate.src, hit.xlate.sport);
        }
        if hit.xlate.dst != t.dst || hit.xlate.dport != t.dport {
            packet::set_dst(frame, p, hit.xlate.dst, hit.xlate.dport);
        }
        if hit.refreshed && !created_outbound && self.rules.mapping == Mapping::EndpointIndependent
        {
            // Only source-NATed sessions have a mapping behind them (not port forwards).
            let nat_end = match hit.dir {
                crate::table::Dir::Org => hit.xlate.src,
                crate::table::Dir::Rev => t.dst,
            };
            if self.rules.is_pool_addr(nat_end) {
                self.refresh_mapping(t, hit);
            }
        }
        if t.proto == 6 {
            self.track_tcp(t, hit, p.tcp_flags());
        }
    }

    /// A miss: create the session if policy allows. `probe`: the batch pipeline's probe of
    /// the packet's tuple, if any.
    fn create(
        &mut self,
        p: &Parsed,
        from_inside: bool,
        probe: Option<&Probe>,
    ) -> Result<Hit, Refused> {
        let t = p.tuple();
        if t.proto == 6 && !opens_connection(p.tcp_flags()) {
            return Err(Refused::Nat(if from_inside {
                NatDrop::TcpNoSession
            } else {
                NatDrop::NoMapping
            }));
        }
        if from_inside {
            if t.proto == 1 && p.kind() != L4Kind::IcmpQueryRequest {
                return Err(Refused::Nat(NatDrop::UnexpectedIcmp));
            }
            if self.rules.is_hairpin_dst(t.dst) {
                return self.hairpin(&t, p);
            }
            if self.rules.is_dnat_snat_addr(t.dst) {
                // Only replies of forwarded connections go there.
                return Err(Refused::Nat(NatDrop::NoMapping));
            }
            return self.create_snat(&t, p, probe);
        }
        self.create_inbound(&t, p)
    }
}

/// Whether a TCP segment with `flags` may open a connection: a SYN without ACK or RST (the
/// only segment a session is created for).
#[inline]
fn opens_connection(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
}

/// Addresses and ports no host uses: 0.0.0.0 at either end (RFC 1812 5.3.7) or TCP/UDP
/// port 0. Refused before any lookup, so that they can never match the wildcard keys of
/// the table's mapping entries.
#[inline]
fn is_martian(t: &Tuple) -> bool {
    t.src == 0 || t.dst == 0 || (t.proto != 1 && (t.sport == 0 || t.dport == 0))
}

/// Protocol name for display.
pub fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        _ => "other",
    }
}

impl From<Proto> for u8 {
    fn from(p: Proto) -> u8 {
        p.number()
    }
}
