//! The IPv4 router around the NAT, shared by forward and NAT mode: what every packet the
//! gateway forwards goes through besides translation.
//!
//! - [`Router::complete_checksum`]: TCP/UDP checksums left partial by the sender's checksum
//!   offload are completed ([`crate::packet::offload`]).
//! - [`Router::fit`]: the egress MTU (read from the kernel, followed while running); a packet
//!   that does not fit gets ICMP Fragmentation Needed when DF is set, or is fragmented on
//!   egress ([`fragment`]) when it is not.
//! - [`Router::answer`]: ICMP errors originated by the gateway, under the rules of RFC 1812
//!   4.3.2.7 and a rate limit ([`icmp`]).
//! - [`Router::clamp_mss`]: optional TCP MSS clamping ([`mss`]).
//! - [`Router::route`]: the next hop's MAC addresses; a packet to a neighbour the kernel is
//!   still resolving is held ([`hold`]) and sent once it resolves, as the kernel's own
//!   unresolved queue does, instead of being dropped.
//!
//! It owns no socket: it reads and rewrites frames and tells the worker what to send, and
//! counts what it did in a [`Tally`].

pub mod fragment;
pub mod hold;
pub mod icmp;
pub mod mss;

use crate::dataplane::nexthop::{Fib, Miss, NextHopView};
use crate::dataplane::worker::{Event, Tally};
use crate::dataplane::{Action, Port, Ports};
use crate::packet::{self, Parsed};

use hold::{Hold, Release, Wait};
pub use icmp::{IcmpOrigin, Suppressed};
pub use mss::MssClamp;

/// Settings of the router shared by every worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterConfig {
    /// TCP MSS clamping.
    pub clamp_mss: MssClamp,
}

/// Whether a packet fits the egress link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// It does: send it as it is.
    Fits,
    /// It does not and DF is clear: fragment it to this MTU on egress.
    Fragment(u16),
    /// It does not and DF is set: answer Fragmentation Needed with this MTU.
    TooBig(u16),
}

/// The handler's drop reason indexes for what the router drops (in `handle`, or outside it
/// for held frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterDrops {
    /// The next hop is not resolved: too many packets wait for it, or a held one waited
    /// too long.
    pub unresolved: usize,
    /// A held fragment's first fragment never came.
    pub fragment_expired: usize,
    /// A released frame found no free frame to be sent in.
    pub hold_full: usize,
    /// No route out of one of the gateway's ports.
    pub no_route: usize,
    /// DF set, larger than the egress MTU, and Fragmentation Needed not sent.
    pub too_big: usize,
    /// A blackhole route.
    pub route_blackhole: usize,
    /// An unreachable or prohibit route, and Destination Unreachable not sent.
    pub route_unreachable: usize,
}

#[inline]
fn drop_action(reason: usize) -> Action {
    Action::Drop(u16::try_from(reason).unwrap_or(u16::MAX))
}

/// Where a packet goes, from the forwarding table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Out of `egress`, to next hop `hop`.
    Forward {
        /// The port.
        egress: Port,
        /// Next-hop address (host order).
        hop: u32,
    },
    /// A blackhole route: drop silently.
    Blackhole,
    /// An unreachable or prohibit route: drop, answering Destination Unreachable with
    /// this code.
    Unreachable(u8),
    /// No route, or one through an interface xnat does not serve.
    NoRoute,
}

/// A hash of a flow's addresses and ports, to spread flows over equal-cost paths (every
/// input bit reaches every output bit: the low bits pick the path).
#[inline]
pub fn flow_hash(t: &crate::table::Tuple) -> u32 {
    let ports = u32::from(t.sport) << 16 | u32::from(t.dport);
    let mut h = t.src.wrapping_mul(0x9E37_79B1)
        ^ t.dst.rotate_left(13)
        ^ ports.wrapping_mul(0x85EB_CA77)
        ^ u32::from(t.proto);
    // murmur3's finaliser.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_hash_spreads_flows_that_differ_in_one_port() {
        for paths in [2u32, 3, 4] {
            let mut n = vec![0u32; paths as usize];
            for sport in 41000..41400u16 {
                let t = crate::table::Tuple {
                    src: 0xC612_0002,
                    dst: 0xC613_0901,
                    sport,
                    dport: 9,
                    proto: 17,
                };
                n[(flow_hash(&t) % paths) as usize] += 1;
            }
            let fair = 400 / paths;
            assert!(n.iter().all(|&c| c > fair * 6 / 10), "{paths} paths: {n:?}");
        }
    }
}

/// What [`Router::route`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// MACs set: send the frame.
    Ready,
    /// The next hop is being resolved: a copy is held (recycle the frame).
    Held,
    /// The next hop is being resolved and no more packets may wait for it: drop.
    Unresolved,
    /// No route out of the egress interface: drop.
    NoRoute,
}

/// A worker's router state.
pub struct Router {
    ports: Ports,
    cfg: RouterConfig,
    drops: RouterDrops,
    /// Frames waiting for a neighbour, or (NAT) for their first fragment.
    pub hold: Hold,
    /// MTU of (inside, outside), refreshed when the next-hop snapshot changes.
    mtu: [u16; 2],
    mtu_read: bool,
    icmp: IcmpOrigin,
    now: u32,
    /// What was done (and dropped outside `handle`) since the worker last collected it.
    pub tally: Tally,
}

/// The MTU assumed while the kernel has not told one (the Ethernet default).
pub const DEFAULT_MTU: u16 = 1500;

impl Router {
    /// A router between `ports`.
    pub fn new(ports: Ports, cfg: RouterConfig, drops: RouterDrops) -> Router {
        Router {
            ports,
            cfg,
            drops,
            hold: Hold::default(),
            mtu: [DEFAULT_MTU; 2],
            mtu_read: false,
            icmp: IcmpOrigin::default(),
            now: 0,
            tally: Tally::default(),
        }
    }

    /// Picks up the clock and, when the next-hop snapshot changed (`changed`), the
    /// interfaces' MTUs and the neighbours that held packets wait for; drops held frames
    /// that waited too long (once per batch).
    #[inline]
    pub fn begin_batch(&mut self, nh: &NextHopView, now: u32, changed: bool) {
        self.now = now;
        if changed || !self.mtu_read {
            self.mtu_read = true;
            for i in 0..2 {
                if let Some(m) = nh.mtu(self.ports.ifindex[i]) {
                    self.mtu[i] = u16::try_from(m).unwrap_or(u16::MAX);
                }
            }
        }
        if self.hold.is_empty() {
            return;
        }
        // Frames whose time has come (wrapping: due at most a few seconds ahead).
        self.hold.release(
            |w| matches!(*w, Wait::Time { due, .. } if now.wrapping_sub(due) < 1 << 31),
            |_, w| match *w {
                Wait::Time { port, .. } => Release::Send(port),
                _ => Release::Keep,
            },
        );
        let e = self.hold.expire(now);
        self.tally.drops[self.drops.fragment_expired] += e.fragments as u64;
        self.tally.drops[self.drops.unresolved] += e.neighbours as u64;
        if changed && self.hold.has_neighbour_waits() {
            let ports = self.ports;
            self.hold.release(
                |w| matches!(w, Wait::Neighbour { .. }),
                |f, w| match *w {
                    Wait::Neighbour { nh: hop, oif } => match nh.neighbour(hop, oif) {
                        Some(mac) => {
                            let egress = port_of(&ports, oif);
                            packet::set_macs(f, mac, ports.mac[egress as usize]);
                            Release::Send(egress)
                        }
                        None => Release::Keep,
                    },
                    Wait::Fragment(_) | Wait::Time { .. } => Release::Keep,
                },
            );
        }
    }

    /// The forwarding decision for `dst` (see [`NextHopView::fib_with`]): the egress port
    /// and next hop when the route leaves through one of the gateway's ports. `flow_hash`
    /// is called only for a multipath route.
    #[inline(always)]
    pub fn decide(&self, nh: &NextHopView, dst: u32, flow_hash: impl FnOnce() -> u32) -> Decision {
        match nh.fib_with(dst, flow_hash) {
            Fib::Via { oif, nh }
                if oif == self.ports.ifindex[0] || oif == self.ports.ifindex[1] =>
            {
                Decision::Forward {
                    egress: port_of(&self.ports, oif),
                    hop: nh,
                }
            }
            Fib::Via { .. } | Fib::NoRoute => Decision::NoRoute,
            Fib::Blackhole => Decision::Blackhole,
            Fib::Unreachable => Decision::Unreachable(icmp::HOST_UNREACHABLE),
            Fib::Prohibit => Decision::Unreachable(icmp::ADMIN_PROHIBITED),
        }
    }

    /// Sets the MAC addresses of next hop `hop` out of `egress`, or holds a copy of the
    /// frame until the kernel has resolved it.
    #[inline]
    pub fn route(&mut self, frame: &mut [u8], nh: &NextHopView, hop: u32, egress: Port) -> Routed {
        let e = egress as usize;
        match nh.mac_of(hop, self.ports.ifindex[e]) {
            Ok(mac) => {
                packet::set_macs(frame, mac, self.ports.mac[e]);
                Routed::Ready
            }
            Err(Miss::NoRoute) => Routed::NoRoute,
            Err(Miss::Unresolved(hop)) => {
                let w = Wait::Neighbour {
                    nh: hop,
                    oif: self.ports.ifindex[e],
                };
                match self.hold.park(frame, w, self.now) {
                    Ok(()) => {
                        self.tally.events[Event::NeighbourHeld as usize] += 1;
                        Routed::Held
                    }
                    Err(_) => Routed::Unresolved,
                }
            }
        }
    }

    /// The action for a packet whose route forwards nothing, the frame dropped silently
    /// (no ICMP error: for a packet already translated, which would quote the wrong
    /// addresses).
    #[inline]
    pub fn drop_for(&self, d: Decision) -> Action {
        drop_action(match d {
            Decision::Blackhole => self.drops.route_blackhole,
            Decision::Unreachable(_) => self.drops.route_unreachable,
            Decision::NoRoute | Decision::Forward { .. } => self.drops.no_route,
        })
    }

    /// The action for a packet whose route forwards nothing, `frame` as it arrived on
    /// `ingress`: an unreachable or prohibit route answers Destination Unreachable.
    pub fn refuse(&mut self, frame: &[u8], ingress: Port, d: Decision) -> Action {
        if let Decision::Unreachable(code) = d {
            if self.answer(frame, ingress, IcmpKind::Unreachable(code)) {
                return Action::Reply(ingress);
            }
        }
        self.drop_for(d)
    }

    /// The action for a DF packet larger than the egress MTU `mtu`: Fragmentation Needed
    /// quoting `quote` (the start of the packet as its sender sent it), or a drop.
    pub fn too_big(&mut self, quote: &[u8], ingress: Port, mtu: u16) -> Action {
        if self.answer(quote, ingress, IcmpKind::FragNeeded(mtu)) {
            return Action::Reply(ingress);
        }
        drop_action(self.drops.too_big)
    }

    /// Routes a frame ready to leave (translated, TTL decremented) to next hop `hop` out of
    /// `egress` (see [`Router::route`]): transmit it (in fragments if `fit` says so), hold
    /// it, or drop it.
    #[inline]
    pub fn send(
        &mut self,
        frame: &mut [u8],
        nh: &NextHopView,
        hop: u32,
        egress: Port,
        fit: Fit,
    ) -> Action {
        match self.route(frame, nh, hop, egress) {
            Routed::Ready => match fit {
                Fit::Fragment(mtu) => Action::TransmitFragments(egress, mtu),
                _ => Action::Transmit(egress),
            },
            Routed::Held => Action::Consumed,
            Routed::Unresolved => drop_action(self.drops.unresolved),
            Routed::NoRoute => drop_action(self.drops.no_route),
        }
    }

    /// Sends the released held frames through `send` (see `Handler::emit_held`).
    pub fn emit_held(&mut self, send: &mut dyn FnMut(Port, &[u8]) -> bool) {
        let (sent, dropped) = self.hold.emit(send);
        self.tally.events[Event::HeldSent as usize] += sent as u64;
        self.tally.drops[self.drops.hold_full] += dropped as u64;
    }

    /// The ports this router serves.
    #[inline]
    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// Sets which ports' frames may carry partial checksums (see [`Ports::partial_csum`]).
    pub fn set_partial_csum(&mut self, on: [bool; 2]) {
        self.ports.partial_csum = on;
    }

    /// The smaller of the two interfaces' MTUs.
    #[inline]
    pub fn min_mtu(&self) -> u16 {
        self.mtu[0].min(self.mtu[1])
    }

    /// The MTU of `port`.
    #[inline]
    pub fn mtu(&self, port: Port) -> u16 {
        self.mtu[port as usize]
    }

    /// Completes a partial TCP/UDP checksum (see [`packet::offload`]), counted, on a port
    /// whose frames may carry one ([`Ports::partial_csum`]); frames that came from a wire
    /// are not looked at.
    #[inline]
    pub fn complete_checksum(&mut self, frame: &mut [u8], p: &Parsed, ingress: Port) {
        if self.ports.partial_csum[ingress as usize] && packet::offload::complete_partial(frame, p)
        {
            self.tally.events[Event::ChecksumCompleted as usize] += 1;
        }
    }

    /// Whether an IPv4 packet of `ip_len` bytes with the flags word `frag` fits `egress`.
    #[inline]
    pub fn fit(&self, ip_len: usize, frag: u16, egress: Port) -> Fit {
        let mtu = self.mtu(egress);
        if ip_len <= usize::from(mtu) {
            Fit::Fits
        } else if frag & packet::ipv4::IPV4_FLAG_DF != 0 {
            Fit::TooBig(mtu)
        } else {
            Fit::Fragment(mtu)
        }
    }

    /// The flags/fragment-offset word of the IPv4 header in `frame` (0 if absent).
    #[inline]
    pub fn frag_word(frame: &[u8]) -> u16 {
        let o = 14 + packet::ipv4::IPV4_FRAG;
        frame
            .get(o..o + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .unwrap_or(0)
    }

    /// Builds the ICMP error `kind` about `frame` (as it arrived on `ingress`), to be sent
    /// back out of `ingress` from that interface's address; `false` when RFC 1812 or the
    /// rate limit forbids it (counted). The message is then in [`Router::reply`].
    pub fn answer(&mut self, frame: &[u8], ingress: Port, kind: IcmpKind) -> bool {
        let i = ingress as usize;
        let (mac, addr) = (self.ports.mac[i], self.ports.addr[i]);
        let r = match kind {
            IcmpKind::TimeExceeded => self.icmp.time_exceeded(frame, mac, addr, self.now),
            IcmpKind::FragNeeded(mtu) => self.icmp.frag_needed(frame, mtu, mac, addr, self.now),
            IcmpKind::Unreachable(code) => self.icmp.unreachable(frame, code, mac, addr, self.now),
        };
        match r {
            Ok(()) => {
                if let IcmpKind::FragNeeded(_) = kind {
                    self.tally.events[Event::FragNeededSent as usize] += 1;
                }
                true
            }
            Err(Suppressed::RateLimited) => {
                self.tally.events[Event::IcmpRateLimited as usize] += 1;
                false
            }
            Err(Suppressed::Unsendable) => false,
            Err(_) => {
                self.tally.events[Event::IcmpSuppressed as usize] += 1;
                false
            }
        }
    }

    /// The last ICMP error built by [`Router::answer`].
    #[inline]
    pub fn reply(&self) -> &[u8] {
        self.icmp.frame()
    }

    /// Clamps the MSS of a SYN leaving through either port, if configured (counted).
    #[inline]
    pub fn clamp_mss(&mut self, frame: &mut [u8], p: &Parsed) {
        let max = match self.cfg.clamp_mss {
            MssClamp::Off => return,
            MssClamp::Auto => self.mtu[0].min(self.mtu[1]).saturating_sub(40),
            MssClamp::Fixed(v) => v,
        };
        if mss::clamp(frame, p, max) {
            self.tally.events[Event::MssClamped as usize] += 1;
        }
    }
}

/// The port whose interface index is `oif` (the outside one if it is neither).
#[inline]
pub fn port_of(ports: &Ports, oif: u32) -> Port {
    if ports.ifindex[0] == oif {
        Port::Inside
    } else {
        Port::Outside
    }
}

/// Which ICMP error to originate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpKind {
    /// Time Exceeded, TTL exceeded in transit.
    TimeExceeded,
    /// Destination Unreachable, fragmentation needed and DF set, with the next-hop MTU.
    FragNeeded(u16),
    /// Destination Unreachable with this code (an unreachable or prohibit route).
    Unreachable(u8),
}
