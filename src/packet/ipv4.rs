//! IPv4 header layout (RFC 791) and the router's per-hop update.

use super::Parsed;

/// Length of an IPv4 header without options.
pub const IPV4_MIN_HEADER_LEN: usize = 20;
/// Length of an IPv4 header with the most options (IHL = 15).
pub const IPV4_MAX_HEADER_LEN: usize = 60;

/// Offset of the version (high nibble) and IHL (low nibble, in 32-bit words).
pub const IPV4_VER_IHL: usize = 0;
/// Offset of the total length (header + payload, in bytes).
pub const IPV4_TOTAL_LEN: usize = 2;
/// Offset of the identification field.
pub const IPV4_ID: usize = 4;
/// Offset of the flags (3 bits) and fragment offset (13 bits, in 8-byte units).
pub const IPV4_FRAG: usize = 6;
/// Offset of the time to live.
pub const IPV4_TTL: usize = 8;
/// Offset of the protocol number.
pub const IPV4_PROTO: usize = 9;
/// Offset of the header checksum.
pub const IPV4_CHECKSUM: usize = 10;
/// Offset of the source address.
pub const IPV4_SRC: usize = 12;
/// Offset of the destination address.
pub const IPV4_DST: usize = 16;

/// "Don't fragment" bit of the flags/fragment-offset word.
pub const IPV4_FLAG_DF: u16 = 0x4000;
/// "More fragments" bit of the flags/fragment-offset word.
pub const IPV4_FLAG_MF: u16 = 0x2000;
/// Fragment offset bits of the flags/fragment-offset word.
pub const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;

/// Protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// Protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// Protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Decrements the TTL of the IPv4 packet in `frame` and updates the header checksum
/// incrementally (RFC 1624), as a router does on every forwarded packet (RFC 1812 5.3.1).
///
/// [`parse`](super::parse) refuses packets whose TTL is 1 or less
/// ([`Drop::TtlExpired`](super::Drop::TtlExpired)), so the result is at least 1. A TTL of 0
/// is left as is, and a `frame` shorter than `p` describes is left untouched.
#[inline]
pub fn forward_hop(frame: &mut [u8], p: &Parsed) {
    if let Some(h) = frame
        .get_mut(p.l3()..p.end())
        .and_then(|s| s.first_chunk_mut::<IPV4_MIN_HEADER_LEN>())
    {
        decrement_header_ttl(h);
    }
}

/// [`forward_hop`] for the IPv4 header of an Ethernet frame (at offset 14) that
/// [`parse`](super::parse) does not describe: non-first fragments, and forward mode's
/// packets of any protocol. A TTL of 0 or a short frame is left as is.
#[inline]
pub fn decrement_ttl(frame: &mut [u8]) {
    if let Some(h) = frame
        .get_mut(super::ether::ETH_HEADER_LEN..)
        .and_then(|s| s.first_chunk_mut::<IPV4_MIN_HEADER_LEN>())
    {
        decrement_header_ttl(h);
    }
}

#[inline(always)]
fn decrement_header_ttl(h: &mut [u8; IPV4_MIN_HEADER_LEN]) {
    let ttl = h[IPV4_TTL];
    if ttl == 0 {
        return;
    }
    h[IPV4_TTL] = ttl - 1;
    let c = u16::from_be_bytes([h[IPV4_CHECKSUM], h[IPV4_CHECKSUM + 1]]);
    h[IPV4_CHECKSUM..IPV4_CHECKSUM + 2].copy_from_slice(&ttl_decremented_checksum(c).to_be_bytes());
}

/// The header checksum `c` after the TTL went down by one (as Linux's `ip_decrease_ttl`):
/// the TTL/protocol word drops by 0x0100, so the checksum, the complement of the sum, rises
/// by 0x0100 with an end-around carry. 0xFFFF, which a full recomputation never gives (the
/// header's version word is not zero), comes out as 0, the same one's complement number.
#[inline(always)]
const fn ttl_decremented_checksum(c: u16) -> u16 {
    let c = c as u32 + 0x0100;
    (c + (c >= 0xffff) as u32) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::builder::{build_udp, FrameSpec};
    use crate::packet::{checksum, parse};

    #[test]
    fn forward_hop_decrements_and_keeps_checksum_valid() {
        let mut buf = [0u8; 128];
        for ttl in [2u8, 3, 64, 128, 255] {
            let spec = FrameSpec {
                ttl,
                ..FrameSpec::new([2; 6], [4; 6], 0xc612_0001, 0xc613_0001)
            };
            let n = build_udp(&mut buf, &spec, 1000, 2000).unwrap();
            let f = &mut buf[..n];
            let p = parse(f).unwrap();
            forward_hop(f, &p);
            assert_eq!(f[14 + IPV4_TTL], ttl - 1);
            assert!(checksum::verify(&f[14..34]));
            assert_eq!(
                checksum::checksum(&{
                    let mut h = [0u8; 20];
                    h.copy_from_slice(&f[14..34]);
                    h[10] = 0;
                    h[11] = 0;
                    h
                }),
                u16::from_be_bytes([f[24], f[25]])
            );
        }
    }

    /// Every checksum value: the shortcut is the RFC 1624 update of the TTL/protocol word,
    /// as one's complement numbers, and never 0xFFFF.
    #[test]
    fn the_ttl_shortcut_is_the_rfc_1624_update() {
        let norm = |x: u16| if x == 0xffff { 0 } else { x };
        for c in 0..=u16::MAX {
            for (ttl, proto) in [(64u16, 6u16), (2, 17), (255, 1)] {
                let old = ttl << 8 | proto;
                let want = checksum::csum_replace2(c, old, old - 0x0100);
                let got = ttl_decremented_checksum(c);
                assert_eq!(norm(got), norm(want), "checksum {c:#06x}");
                assert_ne!(got, 0xffff);
            }
        }
    }

    #[test]
    fn forward_hop_ignores_short_frame_and_zero_ttl() {
        let mut buf = [0u8; 128];
        let spec = FrameSpec::new([2; 6], [4; 6], 0xc612_0001, 0xc613_0001);
        let n = build_udp(&mut buf, &spec, 1, 2).unwrap();
        let p = parse(&buf[..n]).unwrap();
        let mut short = [0u8; 20];
        forward_hop(&mut short, &p);
        assert_eq!(short, [0u8; 20]);
        buf[14 + IPV4_TTL] = 0;
        let before = buf;
        forward_hop(&mut buf[..n], &p);
        assert_eq!(buf, before);
    }
}
