//! ICMP errors originated by the gateway itself: Time Exceeded for packets whose TTL would
//! reach zero here (RFC 1812 5.3.1), so that traceroute shows the gateway as a hop, and
//! Fragmentation Needed for packets with DF set that do not fit the egress MTU (RFC 1191,
//! RFC 4787 REQ-13), so that path MTU discovery works through the gateway.
//!
//! [`may_answer`] applies the origination rules of RFC 1812 4.3.2.7: never an error about an
//! ICMP error, a packet to a broadcast or multicast destination (link-layer or IP), a
//! non-first fragment, or a packet whose source is not a unicast host address. Messages are
//! built in a small buffer of the handler and written over the offending frame, which goes
//! back out of the interface it came in on; they are rate-limited per worker (RFC 1812
//! 4.3.2.8): above the limit the packet is only dropped and counted.

use crate::packet::builder::{build_icmp_error, FrameSpec};
use crate::packet::icmp::is_error_type;

/// ICMP errors a worker may originate per second.
pub const MAX_PER_SECOND: u32 = 100;

/// ICMP type "destination unreachable".
pub const DEST_UNREACHABLE: u8 = 3;
/// Destination unreachable code "fragmentation needed and DF set".
pub const FRAG_NEEDED: u8 = 4;
/// ICMP type "time exceeded".
pub const TIME_EXCEEDED: u8 = 11;
/// Destination unreachable code "host unreachable" (an unreachable route).
pub const HOST_UNREACHABLE: u8 = 1;
/// Destination unreachable code "communication administratively prohibited" (RFC 1812).
pub const ADMIN_PROHIBITED: u8 = 13;

/// Why no ICMP error was sent about a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suppressed {
    /// RFC 1812 4.3.2.7: the packet is itself an ICMP error.
    AboutIcmpError,
    /// RFC 1812 4.3.2.7: sent to a link-layer or IP broadcast address.
    Broadcast,
    /// RFC 1812 4.3.2.7: sent to a link-layer or IP multicast address.
    Multicast,
    /// RFC 1812 4.3.2.7: a fragment other than the first.
    NonFirstFragment,
    /// RFC 1812 4.3.2.7: the source is not a unicast host (0.0.0.0/8, loopback, multicast,
    /// reserved or broadcast).
    NotUnicastSource,
    /// The per-worker allowance of this second is used up (RFC 1812 4.3.2.8).
    RateLimited,
    /// The ingress interface has no IPv4 address to send from, or the frame cannot be
    /// quoted.
    Unsendable,
}

/// Whether RFC 1812 4.3.2.7 allows an ICMP error about `frame` (Ethernet + IPv4).
pub fn may_answer(frame: &[u8]) -> Result<(), Suppressed> {
    let (Some(eth_dst), Some(ip)) = (frame.first(), frame.get(14..)) else {
        return Err(Suppressed::Unsendable);
    };
    let Some(h) = ip.first_chunk::<20>() else {
        return Err(Suppressed::Unsendable);
    };
    if eth_dst & 1 != 0 {
        // The group bit: broadcast (ff:ff:ff:ff:ff:ff) or a multicast group.
        return Err(if frame.get(..6) == Some(&[0xff; 6]) {
            Suppressed::Broadcast
        } else {
            Suppressed::Multicast
        });
    }
    let dst = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
    if dst == u32::MAX {
        return Err(Suppressed::Broadcast);
    }
    if dst >> 28 == 0xe {
        return Err(Suppressed::Multicast);
    }
    let src = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
    let first = src >> 24;
    if first == 0 || first == 127 || src >> 28 >= 0xe {
        return Err(Suppressed::NotUnicastSource);
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if frag & 0x1fff != 0 {
        return Err(Suppressed::NonFirstFragment);
    }
    if h[9] == crate::packet::ipv4::PROTO_ICMP {
        let ihl = usize::from(h[0] & 0x0f) * 4;
        match ip.get(ihl) {
            Some(&t) if is_error_type(t) || t == 4 || t == 5 => {
                // 3, 11, 12, and source quench (4) and redirect (5), errors too.
                return Err(Suppressed::AboutIcmpError);
            }
            Some(_) => {}
            None => return Err(Suppressed::Unsendable),
        }
    }
    Ok(())
}

/// Builds the gateway's ICMP errors and rations them.
pub struct IcmpOrigin {
    buf: [u8; 128],
    len: usize,
    second: u32,
    left: u32,
}

impl Default for IcmpOrigin {
    fn default() -> Self {
        IcmpOrigin {
            buf: [0; 128],
            len: 0,
            second: u32::MAX,
            left: 0,
        }
    }
}

impl IcmpOrigin {
    /// Builds an ICMP error `(type, code, the 4 type-specific bytes)` about `frame` (an
    /// Ethernet + IPv4 frame as it arrived), sent from `our_mac`/`our_addr` back to the
    /// frame's sender; `now` is a seconds clock. The message is then in
    /// [`frame`](IcmpOrigin::frame).
    pub fn build(
        &mut self,
        frame: &[u8],
        (icmp_type, code, rest): (u8, u8, [u8; 4]),
        our_mac: [u8; 6],
        our_addr: u32,
        now: u32,
    ) -> Result<(), Suppressed> {
        if our_addr == 0 {
            return Err(Suppressed::Unsendable);
        }
        may_answer(frame)?;
        if now != self.second {
            self.second = now;
            self.left = MAX_PER_SECOND;
        }
        if self.left == 0 {
            return Err(Suppressed::RateLimited);
        }
        let Some(ip) = frame.get(14..) else {
            return Err(Suppressed::Unsendable);
        };
        let Some(&vihl) = ip.first() else {
            return Err(Suppressed::Unsendable);
        };
        let ihl = usize::from(vihl & 0x0f) * 4;
        // The quote: the offending IP header and the first 8 bytes of its payload.
        let Some(quoted) = ip.get(..ihl + 8).or_else(|| ip.get(..ihl)) else {
            return Err(Suppressed::Unsendable);
        };
        let (Some(src_mac), Some(src)) = (frame.get(6..12), ip.get(12..16)) else {
            return Err(Suppressed::Unsendable);
        };
        let mut dst_mac = [0u8; 6];
        dst_mac.copy_from_slice(src_mac);
        let sender = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let spec = FrameSpec::new(our_mac, dst_mac, our_addr, sender);
        match build_icmp_error(&mut self.buf, &spec, icmp_type, code, rest, quoted) {
            Ok(n) => {
                self.len = n;
                self.left -= 1;
                Ok(())
            }
            Err(_) => Err(Suppressed::Unsendable),
        }
    }

    /// Time Exceeded (TTL exceeded in transit) about `frame`.
    pub fn time_exceeded(
        &mut self,
        frame: &[u8],
        our_mac: [u8; 6],
        our_addr: u32,
        now: u32,
    ) -> Result<(), Suppressed> {
        self.build(frame, (TIME_EXCEEDED, 0, [0; 4]), our_mac, our_addr, now)
    }

    /// Fragmentation Needed with next-hop MTU `mtu` (RFC 1191) about `frame`.
    pub fn frag_needed(
        &mut self,
        frame: &[u8],
        mtu: u16,
        our_mac: [u8; 6],
        our_addr: u32,
        now: u32,
    ) -> Result<(), Suppressed> {
        let m = mtu.to_be_bytes();
        let msg = (DEST_UNREACHABLE, FRAG_NEEDED, [0, 0, m[0], m[1]]);
        self.build(frame, msg, our_mac, our_addr, now)
    }

    /// Destination Unreachable with `code` about `frame`.
    pub fn unreachable(
        &mut self,
        frame: &[u8],
        code: u8,
        our_mac: [u8; 6],
        our_addr: u32,
        now: u32,
    ) -> Result<(), Suppressed> {
        self.build(
            frame,
            (DEST_UNREACHABLE, code, [0; 4]),
            our_mac,
            our_addr,
            now,
        )
    }

    /// The last message built.
    pub fn frame(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::builder::{build_icmp_echo, build_udp, EchoKind};
    use crate::packet::{checksum, parse, L4Kind};

    const CLI: u32 = 0xC612_0002;
    const SRV: u32 = 0xC613_0002;
    const GW: u32 = 0xC612_0001;
    const CLI_MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];
    const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn udp(src: u32, dst: u32, dst_mac: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        let mut spec = FrameSpec::new(CLI_MAC, dst_mac, src, dst);
        spec.ttl = 1;
        let n = build_udp(&mut f, &spec, 40000, 33434).unwrap();
        f.truncate(n);
        f
    }

    /// Rewrites one IPv4 header field and fixes the header checksum.
    fn patch(f: &mut [u8], off: usize, bytes: &[u8]) {
        f[14 + off..14 + off + bytes.len()].copy_from_slice(bytes);
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn quotes_the_expired_packet_and_is_rate_limited() {
        let f = udp(CLI, SRV, GW_MAC);
        let mut t = IcmpOrigin::default();
        assert_eq!(t.time_exceeded(&f, GW_MAC, GW, 7), Ok(()));
        let reply = t.frame().to_vec();
        assert_eq!(&reply[0..6], &CLI_MAC, "back to the sender's MAC");
        let p = parse(&reply).expect("a valid ICMP error");
        assert_eq!(p.kind(), L4Kind::IcmpError);
        assert_eq!((p.tuple().src, p.tuple().dst), (GW, CLI));
        let e = p.embedded().unwrap();
        assert_eq!(
            (e.icmp_type(), e.tuple().sport, e.tuple().dport),
            (11, 40000, 33434)
        );
        for _ in 1..MAX_PER_SECOND {
            assert_eq!(t.time_exceeded(&f, GW_MAC, GW, 7), Ok(()));
        }
        assert_eq!(
            t.time_exceeded(&f, GW_MAC, GW, 7),
            Err(Suppressed::RateLimited),
            "the 101st in one second is refused"
        );
        assert_eq!(
            t.time_exceeded(&f, GW_MAC, GW, 8),
            Ok(()),
            "a new second, a new allowance"
        );
        assert_eq!(
            t.time_exceeded(&f, GW_MAC, 0, 9),
            Err(Suppressed::Unsendable),
            "no address to send from"
        );
        assert_eq!(
            t.time_exceeded(&f[..20], GW_MAC, GW, 9),
            Err(Suppressed::Unsendable),
            "nothing to quote"
        );
    }

    #[test]
    fn frag_needed_carries_the_next_hop_mtu() {
        let f = udp(CLI, SRV, GW_MAC);
        let mut t = IcmpOrigin::default();
        assert_eq!(t.frag_needed(&f, 1400, GW_MAC, GW, 1), Ok(()));
        let reply = t.frame();
        let p = parse(reply).unwrap();
        let e = p.embedded().unwrap();
        assert_eq!((e.icmp_type(), e.icmp_code()), (3, 4));
        let l4 = p.l4();
        assert_eq!(u16::from_be_bytes([reply[l4 + 6], reply[l4 + 7]]), 1400);
        assert!(checksum::verify(&reply[l4..p.end()]));
    }

    // RFC 1812 4.3.2.7, one test per exclusion.

    #[test]
    fn rfc1812_no_error_about_an_icmp_error() {
        let mut t = IcmpOrigin::default();
        // An ICMP error (the gateway's own Time Exceeded) arriving with TTL 1.
        let f = udp(CLI, SRV, GW_MAC);
        t.time_exceeded(&f, GW_MAC, GW, 1).unwrap();
        let err = t.frame().to_vec();
        assert_eq!(may_answer(&err), Err(Suppressed::AboutIcmpError));
        for ty in [3u8, 4, 5, 11, 12] {
            let mut e = err.clone();
            e[34] = ty;
            assert_eq!(may_answer(&e), Err(Suppressed::AboutIcmpError), "type {ty}");
        }
        // An ICMP query is answered.
        let mut b = [0u8; 64];
        let spec = FrameSpec::new(CLI_MAC, GW_MAC, CLI, SRV);
        let n = build_icmp_echo(&mut b, &spec, EchoKind::Request, 1, 1).unwrap();
        assert_eq!(may_answer(&b[..n]), Ok(()));
    }

    #[test]
    fn rfc1812_no_error_about_broadcast_or_multicast_destinations() {
        let f = udp(CLI, SRV, [0xff; 6]);
        assert_eq!(may_answer(&f), Err(Suppressed::Broadcast), "link broadcast");
        let f = udp(CLI, SRV, [0x01, 0, 0x5e, 0, 0, 1]);
        assert_eq!(may_answer(&f), Err(Suppressed::Multicast), "link multicast");
        let f = udp(CLI, u32::MAX, GW_MAC);
        assert_eq!(may_answer(&f), Err(Suppressed::Broadcast), "IP broadcast");
        let f = udp(CLI, 0xE000_00FB, GW_MAC);
        assert_eq!(may_answer(&f), Err(Suppressed::Multicast), "IP multicast");
        assert_eq!(may_answer(&udp(CLI, SRV, GW_MAC)), Ok(()));
    }

    #[test]
    fn rfc1812_no_error_about_non_first_fragments() {
        let mut f = udp(CLI, SRV, GW_MAC);
        patch(&mut f, 6, &[0x20, 0x00]); // MF, offset 0: the first fragment
        assert_eq!(may_answer(&f), Ok(()));
        patch(&mut f, 6, &[0x00, 0xb9]); // offset 185 * 8
        assert_eq!(may_answer(&f), Err(Suppressed::NonFirstFragment));
    }

    #[test]
    fn rfc1812_no_error_to_a_non_unicast_source() {
        for src in [
            0u32,
            0x0000_0001,
            0x7f00_0001,
            0xE000_0001,
            0xF000_0001,
            u32::MAX,
        ] {
            let f = udp(src, SRV, GW_MAC);
            assert_eq!(
                may_answer(&f),
                Err(Suppressed::NotUnicastSource),
                "source {src:#x}"
            );
            let mut t = IcmpOrigin::default();
            assert_eq!(
                t.time_exceeded(&f, GW_MAC, GW, 1),
                Err(Suppressed::NotUnicastSource)
            );
        }
    }
}
