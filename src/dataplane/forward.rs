//! Forward mode: a plain two-port IPv4 router over AF_XDP.
//!
//! Every frame received on one port leaves through the other with its TTL
//! decremented, its IPv4 header checksum updated incrementally and its MAC
//! addresses set from the kernel's neighbour table. It is the baseline NAT mode
//! and the benchmarks are compared against.

use super::nexthop::NextHopView;
use super::worker::{Action, Handler, Port, Tally};
use crate::router::{Decision, Fit, IcmpKind, Router, RouterConfig, RouterDrops};

/// Drop reasons of the forwarder, indexed by [`Action::Drop`].
pub const DROP_REASONS: &[&str] = &[
    "malformed",
    "not_ipv4",
    "ttl_expired",
    "no_route",
    "neighbour_unresolved",
    "frag_needed_df",
    "held_no_frame",
    "route_blackhole",
    "route_unreachable",
];
const MALFORMED: u16 = 0;
const NOT_IPV4: u16 = 1;
const TTL_EXPIRED: u16 = 2;
const NO_ROUTE: u16 = 3;
const UNRESOLVED: u16 = 4;
const TOO_BIG: u16 = 5;
const HOLD_NO_FRAME: u16 = 6;
const ROUTE_BLACKHOLE: u16 = 7;
const ROUTE_UNREACHABLE: u16 = 8;

/// The forward-mode packet handler.
pub struct Forwarder {
    nh: NextHopView,
    router: Router,
}

impl Forwarder {
    /// A forwarder between the two ports (index 0 inside, 1 outside).
    pub fn new(nh: NextHopView, ports: super::Ports, router: RouterConfig) -> Self {
        Forwarder {
            nh,
            router: Router::new(
                ports,
                router,
                RouterDrops {
                    unresolved: usize::from(UNRESOLVED),
                    // Forward mode holds no fragments.
                    fragment_expired: usize::from(UNRESOLVED),
                    hold_full: usize::from(HOLD_NO_FRAME),
                    no_route: usize::from(NO_ROUTE),
                    too_big: usize::from(TOO_BIG),
                    route_blackhole: usize::from(ROUTE_BLACKHOLE),
                    route_unreachable: usize::from(ROUTE_UNREACHABLE),
                },
            ),
        }
    }
}

impl Handler for Forwarder {
    fn begin_batch(&mut self) {
        let changed = self.nh.refresh();
        self.router
            .begin_batch(&self.nh, crate::nat::coarse_now(), changed);
    }

    #[inline]
    fn handle(&mut self, frame: &mut [u8], ingress: Port) -> Action {
        let Some(hdr) = frame.get(12..34) else {
            return Action::Drop(MALFORMED);
        };
        if hdr[0..2] != [0x08, 0x00] {
            return Action::Drop(NOT_IPV4);
        }
        if hdr[2] >> 4 != 4 || hdr[2] & 0x0f < 5 {
            return Action::Drop(MALFORMED);
        }
        if hdr[10] <= 1 {
            if self.router.answer(frame, ingress, IcmpKind::TimeExceeded) {
                return Action::Reply(ingress);
            }
            return Action::Drop(TTL_EXPIRED);
        }
        let src = u32::from_be_bytes([hdr[14], hdr[15], hdr[16], hdr[17]]);
        let dst = u32::from_be_bytes([hdr[18], hdr[19], hdr[20], hdr[21]]);
        let ip_len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
        // Per-flow path choice on addresses only: fragments of a datagram stay together.
        let proto = hdr[11];
        let hash = || {
            crate::router::flow_hash(&crate::table::Tuple {
                src,
                dst,
                sport: 0,
                dport: 0,
                proto,
            })
        };
        let (egress, hop) = match self.router.decide(&self.nh, dst, hash) {
            Decision::Forward { egress, hop } => (egress, hop),
            d => return self.router.refuse(frame, ingress, d),
        };
        let fit = self.router.fit(ip_len, Router::frag_word(frame), egress);
        if let Fit::TooBig(mtu) = fit {
            return self.router.too_big(frame, ingress, mtu);
        }
        // Whatever the NAT could parse may carry a partial checksum; the rest (fragments,
        // other protocols) is forwarded as it is.
        if let Ok(p) = crate::packet::parse(frame) {
            self.router.complete_checksum(frame, &p, ingress);
            self.router.clamp_mss(frame, &p);
        }
        crate::packet::ipv4::decrement_ttl(frame);
        self.router.send(frame, &self.nh, hop, egress, fit)
    }

    fn drop_reasons(&self) -> &'static [&'static str] {
        DROP_REASONS
    }

    fn reply(&self) -> &[u8] {
        self.router.reply()
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
    fn checksum(h: &[u8]) -> u16 {
        let mut acc: u32 = h
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn ttl_decrement_keeps_header_checksum_valid() {
        for ttl in [2u8, 64, 128, 255] {
            let mut f = vec![0u8; 34];
            f[12] = 0x08;
            let ip = &mut f[14..34];
            ip.copy_from_slice(&[
                0x45, 0, 0, 20, 0x12, 0x34, 0x40, 0, ttl, 17, 0, 0, 198, 18, 0, 2, 198, 19, 0, 2,
            ]);
            let c = checksum(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            crate::packet::ipv4::decrement_ttl(&mut f);
            assert_eq!(f[22], ttl - 1);
            assert_eq!(checksum(&f[14..34]), 0, "ttl {ttl}");
        }
    }
}
