//! The NAT packet handler a dataplane worker runs: parse, the router's checks (partial
//! checksums, MTU), translate, then route (TTL, MSS clamping, MACs, fragmentation). Non-first
//! fragments take the translation of their datagram's first fragment ([`super::fragments`]).

use crate::dataplane::nexthop::NextHopView;
use crate::dataplane::worker::{Event, Tally};
use crate::dataplane::{Action, Handler, Port, Ports};
use crate::packet::frag::{self, FragKey};
use crate::packet::{self, ipv4};
use crate::router::hold::{Release, Wait};

/// Largest RST frame copied into a probe (headers with options and a little data).
const PROBE_MAX: usize = 256;
/// Coarse seconds after the RST that its probe leaves: 1 to 2 s, past the endpoint's own
/// answer to the RST (a challenge ACK) and its rate limit on such answers (Linux:
/// `net.ipv4.tcp_invalid_ratelimit`, 500 ms), so that the probe is answered too.
const PROBE_DELAY: u32 = 2;
use crate::router::{flow_hash, Decision, Fit, IcmpKind, Router, RouterConfig, RouterDrops};

use super::fragments::{self, FragCache, FragXlate};
use super::{Engine, NatDrop, Prepared, Refused};

const PKT: usize = packet::Drop::COUNT;
const NAT: usize = NatDrop::COUNT;
const NO_ROUTE: usize = PKT + NAT;
const UNRESOLVED: usize = PKT + NAT + 1;
const TOO_BIG: usize = PKT + NAT + 2;
const FRAG_HOLD_FULL: usize = PKT + NAT + 3;
const FRAG_EXPIRED: usize = PKT + NAT + 4;
const HOLD_NO_FRAME: usize = PKT + NAT + 5;
const ROUTE_BLACKHOLE: usize = PKT + NAT + 6;
const ROUTE_UNREACHABLE: usize = PKT + NAT + 7;
const REASONS: usize = PKT + NAT + 8;

const fn reason_names() -> [&'static str; REASONS] {
    let mut a = [""; REASONS];
    let mut i = 0;
    while i < PKT {
        a[i] = packet::Drop::ALL[i].name();
        i += 1;
    }
    let mut j = 0;
    while j < NAT {
        a[PKT + j] = NatDrop::NAMES[j];
        j += 1;
    }
    a[NO_ROUTE] = "no_route";
    a[UNRESOLVED] = "neighbour_unresolved";
    a[TOO_BIG] = "frag_needed_df";
    a[FRAG_HOLD_FULL] = "fragment_hold_full";
    a[FRAG_EXPIRED] = "fragment_expired";
    a[HOLD_NO_FRAME] = "held_no_frame";
    a[ROUTE_BLACKHOLE] = "route_blackhole";
    a[ROUTE_UNREACHABLE] = "route_unreachable";
    a
}

// Every reason must fit the worker's counter array.
const _: () = assert!(REASONS <= crate::dataplane::worker::MAX_DROP_REASONS);

/// Names of every drop reason of NAT mode, indexed by [`Action::Drop`].
pub static DROP_REASONS: [&str; REASONS] = reason_names();

/// Reads the coarse monotonic clock in whole seconds.
#[inline]
pub fn coarse_now() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u32
}

/// NAT mode's per-worker handler.
pub struct NatHandler {
    engine: Engine,
    nh: NextHopView,
    router: Router,
    frags: FragCache,
    /// The start of a frame as it arrived, kept while translating a packet larger than the
    /// smallest MTU, to quote in Fragmentation Needed.
    saved: [u8; SAVED],
    /// The batch pipeline's first stage for the frames of the batch at hand (see
    /// [`Handler::prepare`]): its first `prep_len` entries, written in place batch after
    /// batch (the list only grows, for a batch larger than any before); and the next to be
    /// handled.
    prep: Vec<PrepSlot>,
    prep_len: usize,
    prep_next: usize,
    /// This worker's translation-log ring, bound to its thread at the first batch.
    log_ring: Option<std::sync::Arc<crate::logging::WorkerLog>>,
    /// The clock read once per batch: [`coarse_now`] (see [`NatHandler::with_clock`]).
    clock: fn() -> u32,
}

/// A prepared frame of the batch at hand: where it lies (to match it to the frame
/// handled) and its parse and table probe.
#[derive(Clone, Copy)]
struct PrepSlot {
    addr: usize,
    len: usize,
    prep: Prepared,
}

impl PrepSlot {
    const EMPTY: PrepSlot = PrepSlot {
        addr: 0,
        len: 0,
        prep: Prepared::EMPTY,
    };
}

/// Frames of a batch prepared without growing the list (a larger batch grows it once).
const PREP_CAPACITY: usize = 256;

/// Bytes of a frame kept for an ICMP quote: Ethernet, the longest IPv4 header, 8 bytes.
const SAVED: usize = 14 + 60 + 8;

#[inline]
fn drop(reason: usize) -> Action {
    Action::Drop(reason as u16)
}

impl NatHandler {
    /// A handler translating with `engine` and routing with `nh`.
    pub fn new(engine: Engine, nh: NextHopView, ports: Ports, router: RouterConfig) -> Self {
        let drops = RouterDrops {
            unresolved: UNRESOLVED,
            fragment_expired: FRAG_EXPIRED,
            hold_full: HOLD_NO_FRAME,
            no_route: NO_ROUTE,
            too_big: TOO_BIG,
            route_blackhole: ROUTE_BLACKHOLE,
            route_unreachable: ROUTE_UNREACHABLE,
        };
        NatHandler {
            engine,
            nh,
            router: Router::new(ports, router, drops),
            frags: FragCache::default(),
            saved: [0; SAVED],
            prep: vec![PrepSlot::EMPTY; PREP_CAPACITY],
            prep_len: 0,
            prep_next: 0,
            log_ring: None,
            clock: coarse_now,
        }
    }

    /// The handler reading its seconds from `clock` instead of the monotonic clock: for
    /// benchmarks that advance a simulated clock as traffic does.
    pub fn with_clock(mut self, clock: fn() -> u32) -> Self {
        self.clock = clock;
        self
    }

    /// The handler with `on` (inside, outside) as its ports' [`Ports::partial_csum`]: a
    /// port whose frames come from a wire is `false`.
    pub fn with_partial_checksums(mut self, on: [bool; 2]) -> Self {
        self.router.set_partial_csum(on);
        self
    }

    /// A handler over `engine` with a fixed next-hop table and the clock `clock`, for the
    /// benchmarks and tests that drive a worker without the kernel's tables: 198.19.0.0/16
    /// (remotes, NAT addresses) out of the outside port (interface 2) through the gateway
    /// 198.19.254.254, 198.18.0.0/16 (inside hosts) out of the inside port (interface 1)
    /// through 198.18.255.254, both resolved; MTU 1500.
    pub fn with_lab_routes(engine: Engine, clock: fn() -> u32) -> Self {
        use crate::dataplane::nexthop::{NextHops, Route, Snapshot};
        let (gw_out, gw_in) = (0xC613_FEFE_u32, 0xC612_FFFE_u32);
        let snap = Snapshot::new(
            vec![
                Route::via(0xC613_0000, 16, Some(gw_out), 2),
                Route::via(0xC612_0000, 16, Some(gw_in), 1),
            ],
            std::collections::HashMap::from([
                ((2, gw_out), [2, 0, 0, 0, 0, 9]),
                ((1, gw_in), [2, 0, 0, 0, 0, 8]),
            ]),
        )
        .with_mtus([(1, 1500), (2, 1500)]);
        let ports = Ports {
            ifindex: [1, 2],
            mac: [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 3]],
            addr: [0xC612_FFFD, 0xC613_FEFD],
            // veth ports, as in the lab.
            partial_csum: [true, true],
        };
        NatHandler::new(
            engine,
            NextHops::fixed(snap).view(),
            ports,
            RouterConfig::default(),
        )
        .with_clock(clock)
    }

    /// Events noticed on this worker's thread (sessions ending by eviction, exhaustion)
    /// go to `ring`.
    pub fn with_log_ring(mut self, ring: std::sync::Arc<crate::logging::WorkerLog>) -> Self {
        self.log_ring = Some(ring);
        self
    }

    /// Routes a translated frame (TTL already decremented) to next hop `hop` out of
    /// `egress`.
    #[inline]
    fn send(&mut self, frame: &mut [u8], hop: u32, egress: Port, fit: Fit) -> Action {
        self.router.send(frame, &self.nh, hop, egress, fit)
    }

    /// A first fragment was translated: remember what was done to it for the fragments
    /// that follow, and release those that came before it.
    fn first_fragment(&mut self, frame: &[u8], key: FragKey, egress: Port, hop: u32) {
        let Some(ip) = frame.get(14..34) else {
            return;
        };
        let rd = |o: usize| u32::from_be_bytes([ip[o], ip[o + 1], ip[o + 2], ip[o + 3]]);
        let x = FragXlate {
            src: rd(ipv4::IPV4_SRC),
            dst: rd(ipv4::IPV4_DST),
            egress,
            hop,
        };
        self.frags.record(key, x, self.engine.now);
        let mtu = usize::from(self.router.mtu(egress));
        let (nh, ports) = (&self.nh, self.router.ports());
        let oif = ports.ifindex[egress as usize];
        let (sent, dropped) = self.router.hold.release(
            |w| *w == Wait::Fragment(key),
            |f, _| {
                let len = frag::parse_fragment(f).map_or(usize::MAX, |f| f.ip_len);
                if len > mtu || !fragments::apply(f, &x) {
                    return Release::Drop;
                }
                match nh.mac_of(x.hop, oif) {
                    Ok(mac) => {
                        packet::set_macs(f, mac, ports.mac[egress as usize]);
                        Release::Send(egress)
                    }
                    Err(crate::dataplane::nexthop::Miss::Unresolved(hop)) => {
                        Release::Wait(Wait::Neighbour { nh: hop, oif })
                    }
                    Err(_) => Release::Drop,
                }
            },
        );
        let t = &mut self.router.tally;
        t.events[Event::FragmentsTranslated as usize] += sent as u64;
        t.drops[TOO_BIG] += dropped as u64;
    }

    /// Queues the probe of an RST that reset a live connection (`frame`, translated and
    /// addressed, leaving out of `port`): see `nat::tcp`. Without a free slot, no probe.
    fn queue_rst_probe(&mut self, frame: &[u8], p: &packet::Parsed, port: Port) {
        let mut probe = [0u8; PROBE_MAX];
        let Some(copy) = probe.get_mut(..frame.len()) else {
            return;
        };
        copy.copy_from_slice(frame);
        if packet::make_rst_probe(copy, p).is_none() {
            return;
        }
        let now = self.engine.now;
        let wait = Wait::Time {
            due: now.wrapping_add(PROBE_DELAY),
            port,
        };
        if self.router.hold.park(copy, wait, now).is_ok() {
            self.router.tally.events[Event::RstProbes as usize] += 1;
        }
    }

    /// A fragment other than the first: translated as its first fragment was, or held
    /// until that arrives.
    fn later_fragment(&mut self, frame: &mut [u8], ingress: Port) -> Action {
        let f = match frag::parse_fragment(frame) {
            Ok(f) => f,
            Err(d) => return drop(d.index()),
        };
        if f.ttl <= 1 {
            // No Time Exceeded about a non-first fragment (RFC 1812 4.3.2.7).
            return drop(packet::Drop::TtlExpired.index());
        }
        let now = self.engine.now;
        let Some(x) = self.frags.lookup(&f.key, now) else {
            return match self.router.hold.park(frame, Wait::Fragment(f.key), now) {
                Ok(()) => {
                    self.router.tally.events[Event::FragmentsHeld as usize] += 1;
                    Action::Consumed
                }
                Err(_) => drop(FRAG_HOLD_FULL),
            };
        };
        if x.egress == ingress || !fragments::apply(frame, &x) {
            return drop(packet::Drop::TtlExpired.index());
        }
        self.router.tally.events[Event::FragmentsTranslated as usize] += 1;
        let fit = self
            .router
            .fit(f.ip_len, Router::frag_word(frame), x.egress);
        if let Fit::TooBig(_) = fit {
            return drop(TOO_BIG);
        }
        self.send(frame, x.hop, x.egress, fit)
    }
}

impl NatHandler {
    /// Where in `prep` the first stage of the batch pipeline kept what it found for
    /// `frame`, if it was the next frame prepared (frames are handled in the order they
    /// were prepared). An index, not a copy: the handler reads the parse and the probe
    /// from there.
    #[inline]
    fn take_prepared(&mut self, frame: &[u8]) -> Option<usize> {
        let i = self.prep_next;
        let s = self.prep.get(i).filter(|_| i < self.prep_len)?;
        if s.addr != frame.as_ptr() as usize || s.len != frame.len() {
            return None;
        }
        self.prep_next += 1;
        Some(i)
    }

    /// Forwards a packet from the inside to a destination routed back inside, untranslated.
    fn route_only(
        &mut self,
        frame: &mut [u8],
        p: &packet::Parsed,
        ingress: Port,
        hop: u32,
    ) -> Action {
        let fit = self
            .router
            .fit(p.ip_total_len(), Router::frag_word(frame), ingress);
        if let Fit::TooBig(mtu) = fit {
            return self.router.too_big(frame, ingress, mtu);
        }
        packet::forward_hop(frame, p);
        self.send(frame, hop, ingress, fit)
    }
}

impl Handler for NatHandler {
    fn begin_batch(&mut self) {
        if let Some(ring) = self.log_ring.take() {
            // On the worker's own thread, once.
            crate::logging::EventLog::bind_thread(ring);
        }
        self.engine.refresh_rules();
        let changed = self.nh.refresh();
        self.engine.now = (self.clock)();
        self.router.begin_batch(&self.nh, self.engine.now, changed);
        self.prep_len = 0;
        self.prep_next = 0;
    }

    #[inline]
    fn preparing(&self) -> bool {
        true
    }

    #[inline]
    fn prepare(&mut self, index: usize, frame: &[u8]) {
        if index == 0 {
            self.prep_len = 0;
            self.prep_next = 0;
        }
        if self.prep_len == self.prep.len() {
            self.prep.push(PrepSlot::EMPTY);
        }
        // `prepare_into` writes the parse and the probe whole: nothing to clear first.
        if let Some(s) = self.prep.get_mut(self.prep_len) {
            s.addr = frame.as_ptr() as usize;
            s.len = frame.len();
            self.engine.prepare_into(frame, &mut s.prep);
            self.prep_len += 1;
        }
    }

    #[inline]
    fn prepared(&mut self, _count: usize) {
        let n = self.prep_len.min(self.prep.len());
        let batch = &mut self.prep[..n];
        for s in batch.iter_mut() {
            self.engine.prefetch_data(&mut s.prep);
        }
        for s in batch.iter() {
            self.engine.prefetch_refresh(&s.prep);
        }
    }

    #[inline]
    fn handle(&mut self, frame: &mut [u8], ingress: Port) -> Action {
        let slot = self.take_prepared(frame);
        // The parse kept for the frame is read where it lies; only the parse itself is
        // copied out (the handler's own calls need `self` whole).
        let fresh;
        let parsed = match slot.and_then(|i| self.prep.get(i)) {
            Some(s) => s.prep.parsed(),
            None => {
                fresh = packet::parse(frame);
                &fresh
            }
        };
        let p = match *parsed {
            Ok(p) => p,
            Err(packet::Drop::TtlExpired) => {
                // Expired here: tell the sender (the frame is still as it arrived).
                if self.router.answer(frame, ingress, IcmpKind::TimeExceeded) {
                    return Action::Reply(ingress);
                }
                return drop(packet::Drop::TtlExpired.index());
            }
            Err(packet::Drop::Fragment) => return self.later_fragment(frame, ingress),
            Err(d) => return drop(d.index()),
        };
        self.router.complete_checksum(frame, &p, ingress);
        let t = p.tuple();
        // For a multipath route only (see `NextHopView::fib_with`).
        let hash = || flow_hash(&t);
        // The route to the destination as sent: one that forwards nothing is answered
        // before any state is made (a NAT address's own route means nothing here).
        let before = if self.engine.rules().is_nat_dst(t.dst) {
            None
        } else {
            match self.router.decide(&self.nh, t.dst, hash) {
                Decision::Forward { egress, hop } => {
                    if ingress == Port::Inside && egress == Port::Inside {
                        // Routed back inside, to no NAT address: routed, not translated.
                        return self.route_only(frame, &p, ingress, hop);
                    }
                    Some((egress, hop))
                }
                d => return self.router.refuse(frame, ingress, d),
            }
        };
        let big = p.ip_total_len() > usize::from(self.router.min_mtu());
        if big {
            let n = frame.len().min(SAVED);
            self.saved[..n].copy_from_slice(&frame[..n]);
        }
        let inside = ingress == Port::Inside;
        let translated = match slot.and_then(|i| self.prep.get(i)) {
            Some(s) => self.engine.translate_prepared(frame, &s.prep, inside),
            None => self.engine.translate_batched(frame, &p, inside),
        };
        match translated {
            Ok(()) => {}
            Err(Refused::Packet(d)) => return drop(d.index()),
            Err(Refused::Nat(n)) => return drop(PKT + n as usize),
        }
        self.router.clamp_mss(frame, &p);
        // The destination after translation, read back from the rewritten header; the
        // route to it picks the egress (a hairpinned packet goes back inside).
        let dst_off = p.l3() + ipv4::IPV4_DST;
        let Some(d) = frame.get(dst_off..dst_off + 4) else {
            return drop(packet::Drop::TooShortIp.index());
        };
        let dst = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        let (egress, hop) = match before {
            Some(r) if dst == t.dst => r,
            _ => match self.router.decide(&self.nh, dst, hash) {
                Decision::Forward { egress, hop } => (egress, hop),
                d => return self.router.drop_for(d),
            },
        };
        let fit = self
            .router
            .fit(p.ip_total_len(), Router::frag_word(frame), egress);
        if let Fit::TooBig(mtu) = fit {
            // The error quotes the packet as its sender sent it: larger than this MTU, so
            // larger than the smallest one, its start was saved.
            debug_assert!(big);
            let n = frame.len().min(SAVED);
            return self.router.too_big(&self.saved[..n], ingress, mtu);
        }
        packet::forward_hop(frame, &p);
        if p.is_first_fragment() {
            // The datagram as it arrived (`t`, read before the translation), for the
            // fragments that follow.
            let key = FragKey {
                src: t.src,
                dst: t.dst,
                proto: t.proto,
                id: p.ip_id(),
            };
            self.first_fragment(frame, key, egress, hop);
        }
        let action = self.send(frame, hop, egress, fit);
        if self.engine.take_rst_probe() {
            if let Action::Transmit(port) = action {
                self.queue_rst_probe(frame, &p, port);
            }
        }
        action
    }

    fn drop_reasons(&self) -> &'static [&'static str] {
        &DROP_REASONS
    }

    fn reply(&self) -> &[u8] {
        self.router.reply()
    }

    fn end_batch(&mut self) {
        self.engine.flush_counts();
    }

    fn tally(&mut self) -> Option<&mut Tally> {
        Some(&mut self.router.tally)
    }

    fn emit_held(&mut self, send: &mut dyn FnMut(Port, &[u8]) -> bool) {
        self.router.emit_held(send);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_complete_and_unique() {
        let mut v: Vec<&str> = DROP_REASONS.to_vec();
        assert!(v.iter().all(|s| !s.is_empty()));
        v.sort();
        v.dedup();
        assert_eq!(v.len(), REASONS);
    }
}
