//! Outbound sessions: an inside endpoint's first packet towards a destination, its NAT
//! address and port (the mapping), and the port allocator.
//!
//! With endpoint-independent mapping (the default, RFC 4787 REQ-1, RFC 5382 REQ-1) an inside
//! address:port keeps one NAT address:port towards every destination. The mapping is itself
//! a pair in the shared table, keyed with a wildcard remote end:
//!
//! ```text
//! ORG (proto, inside A:p -> 0.0.0.0:0)   <->   REV (proto, 0.0.0.0:0 -> NAT N:P)
//! ```
//!
//! The table's guarantee that a REV key has one owner is what makes N:P belong to one inside
//! endpoint. Sessions of that endpoint are ordinary pairs translated to N:P; each refreshes
//! the mapping when it refreshes both its halves (once per refresh epoch of traffic, see
//! [`Hit::refreshed`](crate::table::Hit::refreshed)). The mapping is a table *anchor*
//! ([`Table::insert_anchor`](crate::table::Table::insert_anchor)) whose idle time counts
//! one epoch less, so that this lag never lets it end before a session. A TCP session that
//! becomes established promotes the mapping to the established class, so the mapping lives
//! as long as its longest-lived session. 0.0.0.0 and port 0 never come from the wire (see
//! `is_martian`), so no packet can match these keys. With address-dependent filtering a
//! third kind of pair, `(A:p -> R:0) <-> (R:0 -> N:P)`, records the remote addresses the
//! endpoint has sent to.
//!
//! Port choice: the inside port itself when free (port preservation), else random ports of
//! the same parity (RFC 4787 REQ-4), then a scan, bounded. Port forwards' external ports
//! are never handed out.

use crate::config::{Filtering, Mapping};
use crate::table::{ConnState, Dir, Hit, InsertError, InsertKind, Probe, Session, Tuple};

use super::tcp::state_for;
use super::{BlockRefusal, Engine, NatDrop, PortBlocks, Refused};
use crate::packet::Parsed;

/// The table key of the mapping of inside endpoint `addr:port` for `proto`.
#[inline]
pub fn mapping_key(proto: u8, addr: u32, port: u16) -> Tuple {
    Tuple {
        src: addr,
        dst: 0,
        sport: port,
        dport: 0,
        proto,
    }
}

/// The translation of a mapping to NAT address `addr:port` for `proto` (its ORG half's).
#[inline]
fn mapping_xlate(proto: u8, addr: u32, port: u16) -> Tuple {
    Tuple {
        src: addr,
        sport: port,
        dst: 0,
        dport: 0,
        proto,
    }
}

/// The table key of the reply half of a mapping to NAT address `addr:port` for `proto`.
#[inline]
pub(super) fn mapping_reply_key(proto: u8, addr: u32, port: u16) -> Tuple {
    mapping_xlate(proto, addr, port).reversed()
}

/// Whether a session listed by the table is a mapping or filter entry (wildcard remote
/// address or port) rather than a connection.
#[inline]
pub fn is_mapping(s: &Session) -> bool {
    is_wildcard_key(&s.org)
}

/// Whether `org` is the key of a mapping or filter entry: a wildcard remote address, or a
/// wildcard remote port outside ICMP. No packet carries such a tuple (see `is_martian`).
#[inline]
fn is_wildcard_key(org: &Tuple) -> bool {
    org.dst == 0 || (org.proto != 1 && org.dport == 0)
}

impl Engine {
    /// An outbound session for `t` (from the inside, to a destination outside).
    /// `probe`: the pipeline's probe of `t`, if any (see [`Engine::session_to`]).
    pub(super) fn create_snat(
        &mut self,
        t: &Tuple,
        p: &Parsed,
        probe: Option<&Probe>,
    ) -> Result<Hit, Refused> {
        if !self.quota.allows(t.src) {
            let limit = self.quota.limit();
            self.report(crate::logging::EventKind::QuotaExceeded {
                inside: t.src,
                limit,
            });
            return Err(Refused::Nat(NatDrop::QuotaExceeded));
        }
        let state = state_for(t.proto, p.tcp_flags());
        let hit = match self.rules.mapping {
            Mapping::EndpointDependent => {
                self.allocate_per_destination(t, t.dst, t.dport, state)?
            }
            Mapping::EndpointIndependent => {
                let (addr, port) = self.mapping_for(t, state)?;
                self.session_to(t, probe, addr, port, t.dst, t.dport, state)?
            }
        };
        // The table's observer counts it against the quota (`Census`).
        Ok(hit)
    }

    /// A session `t` translated to source `addr:port` and destination `dst:dport`; with
    /// address-dependent filtering also the filter entry for the destination's address.
    /// A conflict on the reply tuple (a stale session of an expired mapping) falls back to a
    /// port chosen for this destination alone. `probe`: a [`Probe`] of `t` made already
    /// (the batch pipeline's), saving the insert a hash of it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn session_to(
        &mut self,
        t: &Tuple,
        probe: Option<&Probe>,
        addr: u32,
        port: u16,
        dst: u32,
        dport: u16,
        state: ConnState,
    ) -> Result<Hit, Refused> {
        let icmp = t.proto == 1;
        let x = Tuple {
            src: addr,
            sport: port,
            dst,
            dport: if icmp { port } else { dport },
            proto: t.proto,
        };
        // `t` has just missed (a session is created only then).
        let hit = match self.table.insert_counted_as(
            t,
            probe,
            &x,
            state,
            self.now,
            InsertKind::PairMissed,
            &mut self.counts,
        ) {
            Ok(h) | Err(InsertError::Exists(h)) => h,
            Err(InsertError::RevTaken) | Err(InsertError::Invalid) => {
                return self.allocate_per_destination(t, dst, dport, state)
            }
            Err(InsertError::Full) | Err(InsertError::Busy) => {
                return Err(Refused::Nat(NatDrop::TableFull))
            }
        };
        if self.rules.filtering == Filtering::AddressDependent && !icmp {
            let fk = Tuple { dport: 0, ..*t };
            let fx = Tuple { dport: 0, ..x };
            // Best effort: without it only this exact peer can answer.
            let _ = self.table.insert_counted_as(
                &fk,
                None,
                &fx,
                state,
                self.now,
                InsertKind::Anchor,
                &mut self.counts,
            );
        }
        Ok(hit)
    }

    /// The NAT address and port of the inside endpoint `t.src:t.sport`: its live mapping,
    /// or a new one.
    pub(super) fn mapping_for(
        &mut self,
        t: &Tuple,
        state: ConnState,
    ) -> Result<(u32, u16), Refused> {
        let key = mapping_key(t.proto, t.src, t.sport);
        // Probed once: the lookup and every port try of the insert use its hash.
        let probe = self.table.probe(&key);
        if let Some(h) = self
            .table
            .lookup_probe_counted(&probe, self.now, &mut self.counts)
        {
            if h.dir == Dir::Org {
                return Ok((h.xlate.src, h.xlate.sport));
            }
        }
        let proto = t.proto;
        let make = move |addr: u32, port: u16| mapping_xlate(proto, addr, port);
        let h = self.allocate_for(&key, Some(&probe), t.sport, state, make)?;
        Ok((h.xlate.src, h.xlate.sport))
    }

    /// Inserts the pair `org` <-> `make(addr, port)` for a NAT address and port of the
    /// inside host `org.src`: from its port blocks when they are on, else from its paired
    /// pool address's range.
    fn allocate_for(
        &mut self,
        org: &Tuple,
        probe: Option<&Probe>,
        preferred: u16,
        state: ConnState,
        make: impl Fn(u32, u16) -> Tuple,
    ) -> Result<Hit, Refused> {
        // Taken out for the call and put back, not cloned: an `Arc` clone is two atomic
        // adds on a line that every worker's new connections would share.
        if let Some(blocks) = self.blocks.take() {
            let r = self.allocate_in_blocks(&blocks, org, probe, preferred, state, make);
            self.blocks = Some(blocks);
            return r;
        }
        let Some((addr, lo, hi)) = self.rules.pool_for(org.src) else {
            return Err(Refused::Nat(NatDrop::NoSnatRule));
        };
        let r = self.allocate(org, probe, preferred, lo, hi, state, |port| {
            make(addr, port)
        });
        if r == Err(Refused::Nat(NatDrop::PortsExhausted)) {
            self.report(crate::logging::EventKind::PortsExhausted { nat: addr });
        }
        r
    }

    /// [`Engine::allocate_for`] with port blocks: a port in one of the subscriber's
    /// blocks (newest first), or in a new block when they are all full.
    fn allocate_in_blocks(
        &mut self,
        blocks: &PortBlocks,
        org: &Tuple,
        probe: Option<&Probe>,
        preferred: u16,
        state: ConnState,
        make: impl Fn(u32, u16) -> Tuple,
    ) -> Result<Hit, Refused> {
        let inside = org.src;
        let paired = self.rules.pool_for(inside).map(|p| p.0);
        let mut ranges = std::mem::take(&mut self.block_ranges);
        let got = blocks.ranges(inside, paired, self.now, &mut ranges);
        let mut result = Err(Refused::Nat(NatDrop::PortsExhausted));
        if let Ok(nat) = got {
            for &(lo, hi) in &ranges {
                result =
                    self.allocate(org, probe, preferred, lo, hi, state, |port| make(nat, port));
                if result != Err(Refused::Nat(NatDrop::PortsExhausted)) {
                    break;
                }
            }
        }
        self.block_ranges = ranges;
        if result != Err(Refused::Nat(NatDrop::PortsExhausted)) {
            return result;
        }
        // Every block full (or none to be had): one more block.
        let refusal = match got.and_then(|_| blocks.grow(inside, self.now)) {
            Ok((nat, lo, hi)) => {
                return self.allocate(org, probe, preferred, lo, hi, state, |port| make(nat, port))
            }
            Err(r) => r,
        };
        match refusal {
            BlockRefusal::SubscriberLimit => {
                let c = blocks.config();
                self.report(crate::logging::EventKind::QuotaExceeded {
                    inside,
                    limit: u32::from(c.size) * u32::from(c.max_per_subscriber),
                });
                Err(Refused::Nat(NatDrop::PortBlockLimit))
            }
            BlockRefusal::PoolExhausted => {
                if let Some(nat) = paired {
                    self.report(crate::logging::EventKind::PortsExhausted { nat });
                }
                Err(Refused::Nat(NatDrop::PortsExhausted))
            }
            BlockRefusal::NoPool => Err(Refused::Nat(NatDrop::NoSnatRule)),
        }
    }

    /// The inside endpoint a packet of tuple `t` concerns, found in its session's half of
    /// direction `dir` and translation `xlate`: the sender of an outbound packet, the
    /// receiver of an inbound one.
    #[inline]
    pub(super) fn inside_endpoint(t: &Tuple, dir: Dir, xlate: &Tuple) -> (u32, u16) {
        match dir {
            Dir::Org => (t.src, t.sport),
            Dir::Rev => (xlate.dst, xlate.dport),
        }
    }

    /// Keeps the mapping (and, with address-dependent filtering, the filter entry) of a
    /// session's inside endpoint alive: called when a hit refreshed both halves of the
    /// session (once per refresh epoch of its traffic).
    pub(super) fn refresh_mapping(&mut self, t: &Tuple, hit: &Hit) {
        let (a, p) = Self::inside_endpoint(t, hit.dir, &hit.xlate);
        let _ = self
            .table
            .lookup_counted(&mapping_key(t.proto, a, p), self.now, &mut self.counts);
        if self.rules.filtering == Filtering::AddressDependent && t.proto != 1 {
            let remote = match hit.dir {
                Dir::Org => t.dst,
                Dir::Rev => t.src,
            };
            let fk = Tuple {
                src: a,
                sport: p,
                dst: remote,
                dport: 0,
                proto: t.proto,
            };
            let _ = self.table.lookup_counted(&fk, self.now, &mut self.counts);
        }
    }

    /// Raises the mapping of a session's inside endpoint to `state`'s eviction class and
    /// timeout.
    pub(super) fn promote_mapping(&self, t: &Tuple, hit: &Hit, state: ConnState) {
        let (a, p) = Self::inside_endpoint(t, hit.dir, &hit.xlate);
        if let Some(h) = self.table.lookup(&mapping_key(t.proto, a, p), self.now) {
            if h.state != state {
                self.table.set_state_hit(&h, state);
            }
        }
    }

    /// A session whose NAT port is chosen for this destination only (endpoint-dependent
    /// mapping): the same NAT port may serve other inside endpoints towards other
    /// destinations.
    pub(super) fn allocate_per_destination(
        &mut self,
        t: &Tuple,
        dst: u32,
        dport: u16,
        state: ConnState,
    ) -> Result<Hit, Refused> {
        let icmp = t.proto == 1;
        let proto = t.proto;
        self.allocate_for(t, None, t.sport, state, move |addr, port| Tuple {
            src: addr,
            sport: port,
            dst,
            dport: if icmp { port } else { dport },
            proto,
        })
    }

    /// Inserts the pair `org` <-> `make(port)` for a port in `lo..=hi` whose reply tuple is
    /// free: `preferred` when it is in range (port preservation), else random ports of the
    /// same parity, then a deterministic scan so that a nearly full range is still found.
    /// `org` is a key the caller has just looked up and missed (a new session's tuple, or a
    /// mapping's key after `mapping_for`'s lookup): each try is a port try
    /// ([`Table::insert_pair_port_try`]), which does not look for `org` again when the
    /// port is taken, and a pair of `org` made meanwhile is reported by the try that finds
    /// a free port, or by a last lookup when none is left. `org` is hashed once for all the
    /// tries, or not at all with `probe`, the caller's [`Probe`] of it.
    ///
    /// [`Table::insert_pair_port_try`]: crate::table::Table::insert_pair_port_try
    #[allow(clippy::too_many_arguments)]
    pub(super) fn allocate(
        &mut self,
        org: &Tuple,
        probe: Option<&Probe>,
        preferred: u16,
        lo: u16,
        hi: u16,
        state: ConnState,
        make: impl Fn(u16) -> Tuple,
    ) -> Result<Hit, Refused> {
        const RANDOM_TRIES: u32 = 32;
        let span = u32::from(hi) - u32::from(lo) + 1;
        let pick = |r: u64| lo + (r % u64::from(span)) as u16;
        let same_parity = |c: u16| {
            let c2 = c ^ 1;
            if (c ^ preferred) & 1 == 0 || !(lo..=hi).contains(&c2) {
                c
            } else {
                c2
            }
        };
        let mut candidate = if (lo..=hi).contains(&preferred) {
            preferred
        } else {
            same_parity(pick(self.rand()))
        };
        let scan_start = pick(self.rand());
        let mut tries = 0u32;
        let probe = match probe {
            Some(p) if p.is_for(org) => *p,
            _ => self.table.probe(org),
        };
        // A mapping: its sessions keep it alive (see `refresh_mapping`).
        let kind = if is_wildcard_key(org) {
            InsertKind::AnchorPortTry
        } else {
            InsertKind::PairPortTry
        };
        loop {
            let x = make(candidate);
            let outcome = if self.rules.is_forwarded(org.proto, x.src, x.sport) {
                // A port forward's external port: never a dynamic mapping.
                Err(InsertError::RevTaken)
            } else {
                self.table.insert_counted_as(
                    org,
                    Some(&probe),
                    &x,
                    state,
                    self.now,
                    kind,
                    &mut self.counts,
                )
            };
            match outcome {
                Ok(h) | Err(InsertError::Exists(h)) => return Ok(h),
                Err(InsertError::RevTaken) | Err(InsertError::Invalid) => {}
                Err(InsertError::Full) | Err(InsertError::Busy) => {
                    return Err(Refused::Nat(NatDrop::TableFull))
                }
            }
            tries += 1;
            if tries >= RANDOM_TRIES + span.min(1024) || tries >= span + RANDOM_TRIES {
                // A port try reports a taken port without looking for `org` (the caller
                // has just missed it): a pair of it made meanwhile is found here.
                return match self
                    .table
                    .lookup_probe_counted(&probe, self.now, &mut self.counts)
                {
                    Some(h) if h.dir == Dir::Org => Ok(h),
                    _ => Err(Refused::Nat(NatDrop::PortsExhausted)),
                };
            }
            candidate = if tries < RANDOM_TRIES {
                same_parity(pick(self.rand()))
            } else {
                let off = (u32::from(scan_start - lo) + tries - RANDOM_TRIES) % span;
                lo + off as u16
            };
        }
    }

    /// Inserts the pair `org` <-> `x` as it is (a port forward without SNAT).
    pub(super) fn insert(
        &mut self,
        org: &Tuple,
        x: &Tuple,
        state: ConnState,
    ) -> Result<Hit, Refused> {
        // `org` has just missed (a session is created only then).
        match self.table.insert_counted_as(
            org,
            None,
            x,
            state,
            self.now,
            InsertKind::PairMissed,
            &mut self.counts,
        ) {
            Ok(h) | Err(InsertError::Exists(h)) => Ok(h),
            Err(InsertError::RevTaken) | Err(InsertError::Invalid) => {
                Err(Refused::Nat(NatDrop::PortsExhausted))
            }
            Err(InsertError::Full) | Err(InsertError::Busy) => {
                Err(Refused::Nat(NatDrop::TableFull))
            }
        }
    }
}
