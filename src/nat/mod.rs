//! NAT policy and translation: SNAT/masquerade pools, port forwards (DNAT, optionally
//! with SNAT), the port allocator, and [`Engine::translate`], which rewrites one frame in
//! place using the shared paired table.
//!
//! This module knows packets (through [`crate::packet`]) and the table (through
//! [`crate::table`]) but nothing of sockets: the dataplane calls [`NatHandler`], which
//! adds the next hop and hands the frame back.

mod fragments;
mod handler;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

pub use handler::{coarse_now, NatHandler};

use crate::config::{NatConfig, Proto};
use crate::packet::{self, L4Kind, Parsed};
use crate::table::{ConnState, Dir, InsertError, Table, TableConfig, Tuple};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Why the engine refused a frame (beyond malformed input, see [`packet::Drop`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum NatDrop {
    /// Inbound traffic to a NAT address with no session and no port-forward rule.
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
    /// An ICMP query other than echo arriving from outside, or an echo request to a NAT
    /// address (the gateway's own kernel answers those; they are never steered here).
    UnexpectedIcmp,
    /// The inside source already has `--max-sessions-per-source` live sessions.
    QuotaExceeded,
}

impl NatDrop {
    /// Number of reasons.
    pub const COUNT: usize = 8;
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

/// A SNAT pool at run time.
#[derive(Clone, Debug)]
struct PoolRt {
    addrs: Vec<u32>,
    lo: u16,
    hi: u16,
}

/// A port forward at run time.
#[derive(Clone, Copy, Debug)]
struct DnatRt {
    int_addr: u32,
    int_port: u16,
    /// Source address to use towards the backend (the gateway's inside address).
    snat_src: Option<u32>,
}

/// The immutable rule set shared by all workers.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Every SNAT address of every pool with its port range, for address selection.
    snat_addrs: Vec<(u32, u16, u16)>,
    dnat: HashMap<(u8, u32, u16), DnatRt>,
    /// Port range for SNAT of port-forwarded traffic (on the inside address).
    dnat_snat_ports: (u16, u16),
    /// The inside address, when port forwards with SNAT use it.
    dnat_snat_addr: Option<u32>,
}

/// Source ports used on the gateway's inside address for port forwards with SNAT. That
/// address is shared with the gateway's own kernel, so xnat stays below the kernel's
/// ephemeral range (32768-60999).
pub const DNAT_SNAT_PORTS: (u16, u16) = (1024, 32767);

impl Rules {
    /// Builds the rules. `masquerade_addrs` are the outside interface's addresses (used when
    /// `cfg.masquerade`), `inside_addr` the gateway's inside address (for DNAT with SNAT).
    pub fn new(
        cfg: &NatConfig,
        masquerade_addrs: &[u32],
        inside_addr: Option<u32>,
    ) -> Result<Rules, String> {
        let mut pools: Vec<PoolRt> = cfg
            .pools
            .iter()
            .map(|p| PoolRt {
                addrs: p.addrs.iter().map(|a| u32::from(*a)).collect(),
                lo: p.ports.lo,
                hi: p.ports.hi,
            })
            .collect();
        if cfg.masquerade {
            if masquerade_addrs.is_empty() {
                return Err("--masquerade: the outside interface has no IPv4 address".into());
            }
            pools.push(PoolRt {
                addrs: masquerade_addrs.to_vec(),
                lo: cfg.ports.lo,
                hi: cfg.ports.hi,
            });
        }
        let mut dnat = HashMap::new();
        for r in &cfg.dnat {
            let ext = u32::from(*r.external.ip());
            let snat_src = if r.snat {
                Some(
                    inside_addr
                        .ok_or("--dnat ...,snat: the inside interface has no IPv4 address")?,
                )
            } else {
                None
            };
            dnat.insert(
                (r.proto.number(), ext, r.external.port()),
                DnatRt {
                    int_addr: u32::from(*r.internal.ip()),
                    int_port: r.internal.port(),
                    snat_src,
                },
            );
        }
        let dnat_snat_addr = dnat.values().find_map(|d: &DnatRt| d.snat_src);
        let snat_addrs = pools
            .iter()
            .flat_map(|p| p.addrs.iter().map(move |&a| (a, p.lo, p.hi)))
            .collect();
        Ok(Rules {
            snat_addrs,
            dnat,
            dnat_snat_ports: DNAT_SNAT_PORTS,
            dnat_snat_addr,
        })
    }

    /// `(address, first port, last port)` of every NAT address, for the steering program.
    pub fn nat_addresses(&self) -> Vec<(u32, u16, u16)> {
        let (lo, hi) = self.dnat_snat_ports;
        self.snat_addrs
            .iter()
            .copied()
            .chain(self.dnat_snat_addr.map(|a| (a, lo, hi)))
            .collect()
    }

    /// Whether `port` of `addr` is the external end of a port forward for `proto`: the
    /// allocator never hands it out, even inside a pool's range (a forward inside a pool
    /// takes its port out of the pool).
    #[inline]
    pub fn is_forwarded(&self, proto: u8, addr: u32, port: u16) -> bool {
        !self.dnat.is_empty() && self.dnat.contains_key(&(proto, addr, port))
    }

    /// The port forwards whose external port lies inside a NAT pool's range of the same
    /// address: `(protocol, address, port)`, reserved out of the pool.
    pub fn reservations(&self) -> Vec<(u8, u32, u16)> {
        let mut v: Vec<(u8, u32, u16)> = self
            .dnat
            .keys()
            .copied()
            .filter(|&(_, a, p)| {
                self.snat_addrs
                    .iter()
                    .any(|&(sa, lo, hi)| sa == a && (lo..=hi).contains(&p))
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// `(address, first port, last port)` of every SNAT pool address.
    pub fn pool_addresses(&self) -> &[(u32, u16, u16)] {
        &self.snat_addrs
    }

    /// `(address, port, protocol)` of every port forward.
    pub fn forwards(&self) -> Vec<(u32, u16, u8)> {
        self.dnat
            .keys()
            .map(|&(proto, a, p)| (a, p, proto))
            .collect()
    }
}

/// Builds the shared table from the NAT configuration: in memory, or in the state file
/// (then also says whether the previous process's connections were taken over).
pub fn make_table(cfg: &NatConfig) -> Result<(Table, bool), String> {
    let t = cfg.timeouts;
    let mut tc = TableConfig::new(cfg.table_size);
    tc.evict_protected = cfg.evict_established;
    tc.timeouts = crate::table::Timeouts {
        tcp_syn: t.tcp_syn,
        tcp_established: t.tcp_established,
        tcp_closing: t.tcp_closing,
        udp: t.udp,
        icmp: t.icmp,
        other: t.udp,
    };
    match &cfg.state_file {
        None => Table::new(tc).map(|t| (t, false)),
        Some(p) => Table::with_state_file(tc, p),
    }
    .map_err(|e| format!("--table-size {}: {e}", cfg.table_size))
}

/// Per-source session quota: live outbound sessions counted per inside source address
/// (hashed into a fixed array, so two sources may rarely share a count). Inserts add to the
/// count at once; [`Quota::recount`], run about once a second, rebuilds it from the table
/// so that ended sessions give their share back.
pub struct Quota {
    limit: u32,
    counts: Box<[std::sync::atomic::AtomicU32]>,
}

const QUOTA_SLOTS: usize = 1 << 16;

impl Quota {
    /// A quota of `limit` sessions per source (0: unlimited).
    pub fn new(limit: u32) -> Quota {
        let n = if limit == 0 { 1 } else { QUOTA_SLOTS };
        Quota {
            limit,
            counts: (0..n)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
        }
    }

    #[inline]
    fn slot(&self, src: u32) -> &std::sync::atomic::AtomicU32 {
        let i = (src.wrapping_mul(0x9E37_79B1) >> 16) as usize & (self.counts.len() - 1);
        &self.counts[i]
    }

    #[inline]
    fn allows(&self, src: u32) -> bool {
        self.limit == 0 || self.slot(src).load(std::sync::atomic::Ordering::Relaxed) < self.limit
    }

    #[inline]
    fn charge(&self, src: u32) {
        if self.limit != 0 {
            self.slot(src)
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Rebuilds the counts from the live outbound (source-NAT) sessions of `table`.
    pub fn recount(&self, table: &Table, now: u32) {
        if self.limit == 0 {
            return;
        }
        let mut fresh = vec![0u32; self.counts.len()];
        for s in table.sessions(now) {
            if s.xlate.src != s.org.src && s.xlate.dst == s.org.dst {
                let i = (s.org.src.wrapping_mul(0x9E37_79B1) >> 16) as usize & (fresh.len() - 1);
                fresh[i] = fresh[i].saturating_add(1);
            }
        }
        for (c, f) in self.counts.iter().zip(fresh) {
            c.store(f, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Per-worker translation engine over the shared table and rules.
pub struct Engine {
    table: Arc<Table>,
    rules: Arc<Rules>,
    quota: Arc<Quota>,
    rng: u64,
    /// Coarse clock in seconds, set by the caller once per batch.
    pub now: u32,
}

#[inline]
fn state_for(proto: u8, flags: u8) -> ConnState {
    match proto {
        6 if flags & (TCP_FIN | TCP_RST) != 0 => ConnState::TcpClosing,
        6 => ConnState::TcpSyn,
        17 => ConnState::Udp,
        1 => ConnState::Icmp,
        _ => ConnState::Other,
    }
}

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
        Engine {
            table,
            rules,
            quota,
            rng: seed | 1,
            now: 0,
        }
    }

    /// The shared table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    #[inline]
    fn rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Starts loading the table entries `frame` will need (see [`Table::prefetch`]); call
    /// it for a batch of frames before translating them.
    #[inline]
    pub fn prefetch(&self, frame: &[u8]) {
        if let Ok(p) = packet::parse(frame) {
            match p.embedded() {
                Some(e) => self.table.prefetch(&e.tuple().reversed()),
                None => self.table.prefetch(&p.tuple()),
            }
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
        if p.kind() == L4Kind::IcmpError {
            return self.translate_icmp_error(frame, p);
        }
        let t = p.tuple();
        let hit = match self.table.lookup(&t, self.now) {
            Some(h) => h,
            None => self.create(p, from_inside)?,
        };
        if hit.xlate.src != t.src || hit.xlate.sport != t.sport {
            packet::set_src(frame, p, hit.xlate.src, hit.xlate.sport);
        }
        if hit.xlate.dst != t.dst || hit.xlate.dport != t.dport {
            packet::set_dst(frame, p, hit.xlate.dst, hit.xlate.dport);
        }
        if t.proto == 6 {
            self.track_tcp(&hit, p.tcp_flags());
        }
        Ok(())
    }

    #[inline]
    fn track_tcp(&self, hit: &crate::table::Hit, flags: u8) {
        let next = match hit.state {
            _ if flags & (TCP_FIN | TCP_RST) != 0 => ConnState::TcpClosing,
            ConnState::TcpSyn if hit.dir == Dir::Rev && flags & TCP_ACK != 0 => {
                ConnState::TcpEstablished
            }
            ConnState::TcpClosing if flags & (TCP_SYN | TCP_ACK) == TCP_SYN => ConnState::TcpSyn,
            s => s,
        };
        if next != hit.state {
            self.table.set_state_hit(hit, next);
        }
    }

    /// A miss: create the pair if policy allows.
    fn create(&mut self, p: &Parsed, from_inside: bool) -> Result<crate::table::Hit, Refused> {
        let t = p.tuple();
        if t.proto == 6 && p.tcp_flags() & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN {
            return Err(Refused::Nat(if from_inside {
                NatDrop::TcpNoSession
            } else {
                NatDrop::NoMapping
            }));
        }
        if from_inside {
            if t.proto == 1 && p.kind() != L4Kind::IcmpEchoRequest {
                return Err(Refused::Nat(NatDrop::UnexpectedIcmp));
            }
            return self.create_snat(&t, p);
        }
        // From outside: only port forwards create state.
        if t.proto == 1 {
            return Err(Refused::Nat(NatDrop::NoMapping));
        }
        let Some(rule) = self.rules.dnat.get(&(t.proto, t.dst, t.dport)).copied() else {
            return Err(Refused::Nat(NatDrop::NoMapping));
        };
        let state = state_for(t.proto, p.tcp_flags());
        match rule.snat_src {
            None => {
                let x = Tuple {
                    dst: rule.int_addr,
                    dport: rule.int_port,
                    ..t
                };
                self.insert(&t, &x, state)
            }
            Some(src) => {
                let (lo, hi) = self.rules.dnat_snat_ports;
                let base = Tuple {
                    src,
                    dst: rule.int_addr,
                    sport: 0,
                    dport: rule.int_port,
                    proto: t.proto,
                };
                self.allocate(&t, base, lo, hi, state)
            }
        }
    }

    fn create_snat(&mut self, t: &Tuple, p: &Parsed) -> Result<crate::table::Hit, Refused> {
        let rules = Arc::clone(&self.rules);
        if rules.snat_addrs.is_empty() {
            return Err(Refused::Nat(NatDrop::NoSnatRule));
        }
        if !self.quota.allows(t.src) {
            return Err(Refused::Nat(NatDrop::QuotaExceeded));
        }
        // Paired pooling: an inside host always gets the same public address.
        let h = t.src.wrapping_mul(0x9E37_79B1) >> 7;
        let (addr, lo, hi) = rules.snat_addrs[(h as usize) % rules.snat_addrs.len()];
        let base = Tuple {
            src: addr,
            dst: t.dst,
            sport: 0,
            dport: t.dport,
            proto: t.proto,
        };
        let hit = self.allocate(t, base, lo, hi, state_for(t.proto, p.tcp_flags()))?;
        self.quota.charge(t.src);
        Ok(hit)
    }

    /// Picks a source port in `lo..=hi` whose reply tuple is free and inserts the pair.
    /// Keeps the original port when it is free (port preservation), else tries random
    /// ports a bounded number of times, then scans a window.
    fn allocate(
        &mut self,
        t: &Tuple,
        base: Tuple,
        lo: u16,
        hi: u16,
        state: ConnState,
    ) -> Result<crate::table::Hit, Refused> {
        let span = u32::from(hi) - u32::from(lo) + 1;
        let icmp = t.proto == 1;
        let make = |port: u16| Tuple {
            sport: port,
            dport: if icmp { port } else { base.dport },
            ..base
        };
        let mut tries = 0u32;
        let rules = Arc::clone(&self.rules);
        let mut candidate = if (lo..=hi).contains(&t.sport) {
            t.sport
        } else {
            lo + (self.rand() % u64::from(span)) as u16
        };
        const RANDOM_TRIES: u32 = 32;
        let scan_start = lo + (self.rand() % u64::from(span)) as u16;
        loop {
            let x = make(candidate);
            let outcome = if rules.is_forwarded(t.proto, x.src, x.sport) {
                // A port forward's external port: never a dynamic mapping.
                Err(InsertError::RevTaken)
            } else {
                self.table.insert_pair(t, &x, state, self.now)
            };
            match outcome {
                Ok(h) => return Ok(h),
                Err(InsertError::Exists(h)) => return Ok(h),
                Err(InsertError::RevTaken) | Err(InsertError::Invalid) => {}
                Err(InsertError::Full) | Err(InsertError::Busy) => {
                    return Err(Refused::Nat(NatDrop::TableFull))
                }
            }
            tries += 1;
            if tries >= RANDOM_TRIES + span.min(1024) || tries >= span + RANDOM_TRIES {
                return Err(Refused::Nat(NatDrop::PortsExhausted));
            }
            candidate = if tries < RANDOM_TRIES {
                lo + (self.rand() % u64::from(span)) as u16
            } else {
                // Deterministic scan so a nearly full range is still found.
                let off = (u32::from(scan_start - lo) + tries - RANDOM_TRIES) % span;
                lo + off as u16
            };
        }
    }

    fn insert(
        &mut self,
        org: &Tuple,
        x: &Tuple,
        state: ConnState,
    ) -> Result<crate::table::Hit, Refused> {
        match self.table.insert_pair(org, x, state, self.now) {
            Ok(h) | Err(InsertError::Exists(h)) => Ok(h),
            Err(InsertError::RevTaken) | Err(InsertError::Invalid) => {
                Err(Refused::Nat(NatDrop::PortsExhausted))
            }
            Err(InsertError::Full) | Err(InsertError::Busy) => {
                Err(Refused::Nat(NatDrop::TableFull))
            }
        }
    }

    /// Translates an ICMP error about a known session: the quoted packet travelled the
    /// other way, so its reversed tuple is the key; the quoted packet is restored to what
    /// that side knows and the outer header is addressed to the original sender.
    fn translate_icmp_error(&mut self, frame: &mut [u8], p: &Parsed) -> Result<(), Refused> {
        let Some(e) = p.embedded() else {
            return Err(Refused::Packet(packet::Drop::IcmpBadInner));
        };
        let quoted = e.tuple();
        // A peek: an ICMP error never creates, refreshes or restores a session (RFC 5508).
        let Some(hit) = self.table.peek(&quoted.reversed(), self.now) else {
            return Err(Refused::Nat(NatDrop::IcmpNoSession));
        };
        // What the quoted packet looked like on this side of the gateway.
        let orig = hit.xlate.reversed();
        let outer = p.tuple();
        if outer.src == quoted.dst {
            packet::set_src(frame, p, orig.dst, 0);
        }
        packet::set_dst(frame, p, orig.src, 0);
        if orig.src != quoted.src || orig.sport != quoted.sport {
            packet::set_inner_src(frame, p, orig.src, orig.sport);
        }
        if orig.dst != quoted.dst || orig.dport != quoted.dport {
            packet::set_inner_dst(frame, p, orig.dst, orig.dport);
        }
        Ok(())
    }
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
