//! ICMP Time Exceeded originated by the gateway itself, for packets whose TTL would reach
//! zero here (RFC 1812 5.3.1), so that traceroute shows the gateway as a hop.
//!
//! The message is built in a small buffer of the handler and written over the expired
//! frame, which goes back out of the interface it came in on. Replies are rate-limited
//! per worker (RFC 1812 4.3.2.8); above the limit the packet is only dropped and counted.

use crate::packet::builder::{build_icmp_error, FrameSpec};

/// ICMP errors a worker may originate per second.
pub const MAX_PER_SECOND: u32 = 100;

/// Builds Time Exceeded messages and rations them.
pub struct TimeExceeded {
    buf: [u8; 128],
    len: usize,
    second: u32,
    left: u32,
}

impl Default for TimeExceeded {
    fn default() -> Self {
        TimeExceeded {
            buf: [0; 128],
            len: 0,
            second: u32::MAX,
            left: 0,
        }
    }
}

impl TimeExceeded {
    /// Builds the reply to `frame` (an Ethernet + IPv4 frame that expired here), sent from
    /// `our_mac`/`our_addr` back to the frame's sender. `false` if rate-limited or the frame
    /// cannot be quoted; `now` is a seconds clock.
    pub fn build(&mut self, frame: &[u8], our_mac: [u8; 6], our_addr: u32, now: u32) -> bool {
        if our_addr == 0 {
            return false;
        }
        if now != self.second {
            self.second = now;
            self.left = MAX_PER_SECOND;
        }
        if self.left == 0 {
            return false;
        }
        let Some(ip) = frame.get(14..) else {
            return false;
        };
        let Some(&vihl) = ip.first() else {
            return false;
        };
        let ihl = usize::from(vihl & 0x0f) * 4;
        // The quote: the offending IP header and the first 8 bytes of its payload.
        let Some(quoted) = ip.get(..ihl + 8).or_else(|| ip.get(..ihl)) else {
            return false;
        };
        let (Some(src_mac), Some(src)) = (frame.get(6..12), ip.get(12..16)) else {
            return false;
        };
        let mut dst_mac = [0u8; 6];
        dst_mac.copy_from_slice(src_mac);
        let sender = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        let spec = FrameSpec::new(our_mac, dst_mac, our_addr, sender);
        match build_icmp_error(&mut self.buf, &spec, 11, 0, [0; 4], quoted) {
            Ok(n) => {
                self.len = n;
                self.left -= 1;
                true
            }
            Err(_) => false,
        }
    }

    /// The last message built.
    pub fn frame(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::builder::build_udp;
    use crate::packet::{parse, L4Kind};

    #[test]
    fn quotes_the_expired_packet_and_is_rate_limited() {
        let mut f = [0u8; 64];
        let mut spec = FrameSpec::new(
            [2, 0, 0, 0, 0, 9],
            [2, 0, 0, 0, 0, 1],
            0xC612_0002,
            0xC613_0002,
        );
        spec.ttl = 1;
        let n = build_udp(&mut f, &spec, 40000, 33434).unwrap();
        let mut t = TimeExceeded::default();
        assert!(t.build(&f[..n], [2, 0, 0, 0, 0, 1], 0xC612_0001, 7));
        let reply = t.frame().to_vec();
        assert_eq!(
            &reply[0..6],
            &[2, 0, 0, 0, 0, 9],
            "back to the sender's MAC"
        );
        let p = parse(&reply).expect("a valid ICMP error");
        assert_eq!(p.kind(), L4Kind::IcmpError);
        assert_eq!((p.tuple().src, p.tuple().dst), (0xC612_0001, 0xC612_0002));
        let e = p.embedded().unwrap();
        assert_eq!(
            (e.icmp_type(), e.tuple().sport, e.tuple().dport),
            (11, 40000, 33434)
        );
        for _ in 1..MAX_PER_SECOND {
            assert!(t.build(&f[..n], [2; 6], 1, 7));
        }
        assert!(
            !t.build(&f[..n], [2; 6], 1, 7),
            "the 101st in one second is refused"
        );
        assert!(
            t.build(&f[..n], [2; 6], 1, 8),
            "a new second, a new allowance"
        );
        assert!(!t.build(&f[..n], [2; 6], 0, 9), "no address to send from");
        assert!(!t.build(&f[..20], [2; 6], 1, 9), "nothing to quote");
    }
}
