//! Non-first IPv4 fragments: the view the NAT's shallow virtual reassembly needs.
//!
//! A fragment other than the first carries no transport header, so [`parse`](super::parse)
//! refuses it ([`Drop::Fragment`]). [`parse_fragment`] validates its IPv4 header and returns
//! the key that ties it to its datagram (source, destination, protocol, identification), and
//! [`set_addrs`] rewrites its addresses as the first fragment's translation says. The first
//! fragment itself goes through [`parse`](super::parse) like any packet
//! ([`Parsed::is_first_fragment`](super::Parsed::is_first_fragment)).

use super::checksum::Delta;
use super::ether::{ETHERTYPE_IPV4, ETH_HEADER_LEN, ETH_TYPE};
use super::ipv4::{
    IPV4_CHECKSUM, IPV4_DST, IPV4_FLAG_MF, IPV4_FRAG, IPV4_FRAG_OFFSET_MASK, IPV4_ID,
    IPV4_MIN_HEADER_LEN, IPV4_PROTO, IPV4_SRC, IPV4_TOTAL_LEN, IPV4_TTL,
};
use super::Drop;

/// What ties a fragment to its datagram (RFC 791): addresses host-order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragKey {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// IP protocol.
    pub proto: u8,
    /// IP identification.
    pub id: u16,
}

/// A validated non-first fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Its datagram.
    pub key: FragKey,
    /// Offset of its payload in the datagram, in bytes.
    pub offset: usize,
    /// Whether more fragments follow.
    pub more: bool,
    /// TTL as received.
    pub ttl: u8,
    /// IPv4 total length of the fragment.
    pub ip_len: usize,
}

/// Validates a non-first fragment (Ethernet + IPv4 with a non-zero fragment offset):
/// EtherType, version, IHL, total length, header checksum. Other frames are refused with
/// the reason [`parse`](super::parse) would give, or [`Drop::Fragment`] for an IPv4 packet
/// that is not a non-first fragment. Never panics.
pub fn parse_fragment(frame: &[u8]) -> Result<Fragment, Drop> {
    let Some((eth, rest)) = frame.split_first_chunk::<ETH_HEADER_LEN>() else {
        return Err(Drop::TooShortEth);
    };
    if u16::from_be_bytes([eth[ETH_TYPE], eth[ETH_TYPE + 1]]) != ETHERTYPE_IPV4 {
        return Err(Drop::NotIpv4);
    }
    let Some(h) = rest.first_chunk::<IPV4_MIN_HEADER_LEN>() else {
        return Err(Drop::TooShortIp);
    };
    if h[0] >> 4 != 4 {
        return Err(Drop::BadIpVersion);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < IPV4_MIN_HEADER_LEN {
        return Err(Drop::BadIhl);
    }
    let rd = |o: usize| u16::from_be_bytes([h[o], h[o + 1]]);
    let total = usize::from(rd(IPV4_TOTAL_LEN));
    if total < ihl || total > rest.len() {
        return Err(Drop::BadTotalLen);
    }
    let Some(hdr) = rest.get(..ihl) else {
        return Err(Drop::BadTotalLen);
    };
    if !super::checksum::verify(hdr) {
        return Err(Drop::BadIpChecksum);
    }
    let frag = rd(IPV4_FRAG);
    let offset = usize::from(frag & IPV4_FRAG_OFFSET_MASK) * 8;
    if offset == 0 {
        return Err(Drop::Fragment);
    }
    let rd32 = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    Ok(Fragment {
        key: FragKey {
            src: rd32(IPV4_SRC),
            dst: rd32(IPV4_DST),
            proto: h[IPV4_PROTO],
            id: rd(IPV4_ID),
        },
        offset,
        more: frag & IPV4_FLAG_MF != 0,
        ttl: h[IPV4_TTL],
        ip_len: total,
    })
}

/// Rewrites the source and destination address of the IPv4 header in `frame` and updates
/// the header checksum incrementally (a fragment has no transport checksum to update: the
/// first fragment carries it). A frame too short is left untouched.
pub fn set_addrs(frame: &mut [u8], src: u32, dst: u32) {
    let Some(h) = frame
        .get_mut(ETH_HEADER_LEN..)
        .and_then(|s| s.first_chunk_mut::<IPV4_MIN_HEADER_LEN>())
    else {
        return;
    };
    let mut d = Delta::ZERO;
    for (off, v) in [(IPV4_SRC, src), (IPV4_DST, dst)] {
        let old = u32::from_be_bytes([h[off], h[off + 1], h[off + 2], h[off + 3]]);
        h[off..off + 4].copy_from_slice(&v.to_be_bytes());
        d = d.dword(old, v);
    }
    let c = u16::from_be_bytes([h[IPV4_CHECKSUM], h[IPV4_CHECKSUM + 1]]);
    h[IPV4_CHECKSUM..IPV4_CHECKSUM + 2].copy_from_slice(&d.apply(c).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::builder::{build_udp, FrameSpec};
    use crate::packet::checksum::{checksum, verify};

    /// A non-first fragment: a UDP frame's header patched to offset `units` * 8.
    fn frag(units: u16, mf: bool) -> Vec<u8> {
        let mut b = vec![0u8; 200];
        let mut s = FrameSpec::new([2; 6], [4; 6], 0xC612_0002, 0xC613_0002);
        s.payload_len = 100;
        let n = build_udp(&mut b, &s, 1, 2).unwrap();
        b.truncate(n);
        b[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
        let w = units | if mf { IPV4_FLAG_MF } else { 0 };
        b[20..22].copy_from_slice(&w.to_be_bytes());
        b[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&b[14..34]);
        b[24..26].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn parses_non_first_fragments_only() {
        let f = parse_fragment(&frag(185, true)).unwrap();
        assert_eq!(
            f.key,
            FragKey {
                src: 0xC612_0002,
                dst: 0xC613_0002,
                proto: 17,
                id: 0x1234
            }
        );
        assert_eq!((f.offset, f.more, f.ttl), (1480, true, 64));
        assert!(!parse_fragment(&frag(3, false)).unwrap().more);
        assert_eq!(parse_fragment(&frag(0, true)), Err(Drop::Fragment));
        let mut bad = frag(185, true);
        bad[26] ^= 1;
        assert_eq!(parse_fragment(&bad), Err(Drop::BadIpChecksum));
        assert_eq!(parse_fragment(&bad[..20]), Err(Drop::TooShortIp));
        for n in 0..40 {
            let _ = parse_fragment(&frag(185, true)[..n]);
        }
    }

    #[test]
    fn address_rewrite_and_ttl_keep_the_header_checksum() {
        let mut f = frag(185, false);
        set_addrs(&mut f, 0xC613_0001, 0xC613_0002);
        assert!(verify(&f[14..34]));
        assert_eq!(parse_fragment(&f).unwrap().key.src, 0xC613_0001);
        crate::packet::ipv4::decrement_ttl(&mut f);
        assert!(verify(&f[14..34]));
        assert_eq!(f[22], 63);
        let mut short = [0u8; 20];
        set_addrs(&mut short, 1, 2);
        crate::packet::ipv4::decrement_ttl(&mut short);
        assert_eq!(short, [0u8; 20]);
    }
}
