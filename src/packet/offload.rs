//! Completing TCP/UDP checksums left partial by checksum offload.
//!
//! A host sending through an interface with transmit checksum offload (every veth, container
//! and Kubernetes pod by default) hands the frame on with only the folded pseudo-header sum in
//! the TCP or UDP checksum field (the kernel's `CHECKSUM_PARTIAL`): the device is expected to
//! finish the sum over the segment. The kernel's own forwarding keeps that state and completes
//! the sum on egress; AF_XDP (copy mode in particular) hands xnat only the bytes, so the
//! partial sum would leave the gateway as it is and the receiver would drop the segment.
//!
//! [`complete_partial`] recognises such a frame (its checksum field equals the folded
//! pseudo-header sum) and writes the full checksum. Recomputing over the whole segment always
//! yields the true checksum, so completing a frame that only looks partial is harmless: a
//! correct checksum that happens to equal the pseudo-header sum is rewritten with itself.
//! The check itself is a handful of additions over header words already in cache; the full
//! sum over the payload is paid only by frames that need it.

use super::checksum::{l4_checksum, pseudo_header_sum};
use super::ipv4::{PROTO_TCP, PROTO_UDP};
use super::l4::{TCP_CHECKSUM, TCP_MIN_HEADER_LEN, UDP_CHECKSUM, UDP_HEADER_LEN, UDP_LEN};
use super::{L4Kind, Parsed};

/// Whether the frame's TCP/UDP checksum is a partial (pseudo-header only) sum; `None` for
/// frames without one (other protocols, fragments, UDP without checksum, short frames).
///
/// Every packet of a worker passes here, so it reads only what the parse left undecided:
/// the fragment flag, the offsets and the addresses come from `p`, and the frame is read
/// for the checksum field (and UDP's length field) alone.
#[inline(always)]
fn partial_segment(frame: &[u8], p: &Parsed) -> Option<(usize, usize, usize)> {
    let udp = match p.kind() {
        L4Kind::Tcp => false,
        L4Kind::Udp => true,
        _ => return None,
    };
    // A first fragment: the sum covers the whole datagram, which one fragment does not
    // hold (later fragments fail the parse and never come here).
    if p.is_first_fragment() {
        return None;
    }
    let l4 = p.l4();
    let (proto, csum_off, csum, seg_len) = if udp {
        let h = frame.get(l4..)?.first_chunk::<UDP_HEADER_LEN>()?;
        let csum = u16::from_be_bytes([h[UDP_CHECKSUM], h[UDP_CHECKSUM + 1]]);
        if csum == 0 {
            return None;
        }
        let len = u16::from_be_bytes([h[UDP_LEN], h[UDP_LEN + 1]]);
        (PROTO_UDP, UDP_CHECKSUM, csum, len)
    } else {
        let h = frame.get(l4..)?.first_chunk::<TCP_MIN_HEADER_LEN>()?;
        let csum = u16::from_be_bytes([h[TCP_CHECKSUM], h[TCP_CHECKSUM + 1]]);
        // The segment is what follows the transport header's offset in the IP packet.
        let len = u16::try_from(p.end().checked_sub(l4)?).ok()?;
        (PROTO_TCP, TCP_CHECKSUM, csum, len)
    };
    let t = p.tuple();
    let ps = pseudo_header_sum(t.src, t.dst, proto, seg_len);
    // The pseudo-header sum is never 0 (its protocol word is not), but it may be 0xFFFF,
    // the same one's complement number as a TCP checksum field of 0 (UDP's 0 means "none"
    // and left above).
    if csum != ps && !(csum == 0 && ps == 0xffff) {
        return None;
    }
    Some((l4, usize::from(seg_len), csum_off))
}

/// If the TCP/UDP checksum of the parsed frame holds only the pseudo-header sum (see the
/// module docs), replaces it with the full checksum and returns `true`; otherwise leaves the
/// frame untouched and returns `false`.
///
/// Call it on the frame as received, before any rewrite (the pseudo-header sum is the one of
/// the addresses the sender used). Never panics.
#[inline]
pub fn complete_partial(frame: &mut [u8], p: &Parsed) -> bool {
    let Some((l4, seg_len, csum_off)) = partial_segment(frame, p) else {
        return false;
    };
    let Some(seg) = frame.get_mut(l4..l4 + seg_len) else {
        return false;
    };
    let Some(field) = seg.get_mut(csum_off..csum_off + 2) else {
        return false;
    };
    field.copy_from_slice(&[0, 0]);
    let t = p.tuple();
    let mut c = l4_checksum(t.src, t.dst, t.proto, seg);
    if t.proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    if let Some(field) = seg.get_mut(csum_off..csum_off + 2) {
        field.copy_from_slice(&c.to_be_bytes());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::builder::{build_icmp_echo, build_tcp_syn, build_udp, EchoKind, FrameSpec};
    use crate::packet::checksum::verify;
    use crate::packet::parse;

    const SRC: u32 = 0xC612_0002;
    const DST: u32 = 0xC613_0002;

    fn spec(payload: usize) -> FrameSpec {
        let mut s = FrameSpec::new([2; 6], [4; 6], SRC, DST);
        s.payload_len = payload;
        s
    }

    /// Checks the TCP/UDP checksum of `frame` with the receiver's rule.
    fn l4_ok(frame: &[u8]) -> bool {
        let p = parse(frame).unwrap();
        let t = p.tuple();
        let seg = &frame[p.l4()..p.end()];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&t.src.to_be_bytes());
        pseudo.extend_from_slice(&t.dst.to_be_bytes());
        pseudo.extend_from_slice(&[0, t.proto]);
        pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(seg);
        verify(&pseudo)
    }

    /// Makes `frame` look as an offloading sender hands it on: the checksum field holds the
    /// pseudo-header sum only.
    fn make_partial(frame: &mut [u8], csum_off: usize) {
        let p = parse(frame).unwrap();
        let t = p.tuple();
        let len = (p.end() - p.l4()) as u16;
        let ps = pseudo_header_sum(t.src, t.dst, t.proto, len);
        let o = p.l4() + csum_off;
        frame[o..o + 2].copy_from_slice(&ps.to_be_bytes());
    }

    /// Sets the IPv4 header word at `off` (an offset into the header) and fixes the header
    /// checksum.
    fn set_ip_word(frame: &mut [u8], off: usize, v: u16) {
        frame[14 + off..14 + off + 2].copy_from_slice(&v.to_be_bytes());
        frame[24..26].copy_from_slice(&[0, 0]);
        let c = crate::packet::checksum::checksum(&frame[14..34]);
        frame[24..26].copy_from_slice(&c.to_be_bytes());
    }

    /// A TCP pseudo-header sum of 0xFFFF is the same one's complement number as a checksum
    /// field of 0: a sender's partial sum may be written either way.
    #[test]
    fn a_pseudo_header_sum_of_all_ones_matches_a_zero_field() {
        // The segment length as the builder makes it; then the low word of the source that
        // brings the sum to 0xFFFF (198.18.x.y: the high word is SRC's).
        let mut b = [0u8; 100];
        let n = build_tcp_syn(&mut b, &spec(0), 40000, 80, 1).unwrap();
        let p = parse(&b[..n]).unwrap();
        let len = u16::try_from(p.end() - p.l4()).unwrap();
        let partial = pseudo_header_sum(SRC & 0xffff_0000, DST, PROTO_TCP, len);
        let src = (SRC & 0xffff_0000) | u32::from(0xffff - partial);
        assert_eq!(pseudo_header_sum(src, DST, PROTO_TCP, len), 0xffff);
        for field in [0u16, 0xffff] {
            let mut b = [0u8; 100];
            let mut sp = spec(0);
            sp.src_ip = src;
            let n = build_tcp_syn(&mut b, &sp, 40000, 80, 1).unwrap();
            let f = &mut b[..n];
            f[34 + TCP_CHECKSUM..34 + TCP_CHECKSUM + 2].copy_from_slice(&field.to_be_bytes());
            let p = parse(f).unwrap();
            assert!(complete_partial(f, &p), "field {field:#06x}");
            assert!(l4_ok(f), "field {field:#06x}");
        }
    }

    #[test]
    fn completes_partial_udp_and_tcp() {
        for payload in [0usize, 1, 17, 1000, 1472] {
            let mut b = vec![0u8; 1600];
            let n = build_udp(&mut b, &spec(payload), 40000, 53).unwrap();
            let f = &mut b[..n];
            for (i, x) in f[42..].iter_mut().enumerate() {
                *x = (i * 7 + 3) as u8;
            }
            make_partial(f, UDP_CHECKSUM);
            assert!(!l4_ok(f), "a partial sum does not verify");
            let p = parse(f).unwrap();
            assert!(complete_partial(f, &p), "udp payload {payload}");
            assert!(l4_ok(f), "udp payload {payload}");
            assert!(!complete_partial(f, &p), "a complete sum is left alone");

            let mut b = vec![0u8; 1600];
            let n = build_tcp_syn(&mut b, &spec(payload), 40000, 80, 1).unwrap();
            let f = &mut b[..n];
            make_partial(f, TCP_CHECKSUM);
            assert!(!l4_ok(f));
            let p = parse(f).unwrap();
            assert!(complete_partial(f, &p), "tcp payload {payload}");
            assert!(l4_ok(f), "tcp payload {payload}");
        }
    }

    #[test]
    fn leaves_correct_sums_zero_udp_icmp_and_fragments_alone() {
        let mut b = [0u8; 200];
        let n = build_udp(&mut b, &spec(30), 1, 2).unwrap();
        let before = b;
        let p = parse(&b[..n]).unwrap();
        assert!(!complete_partial(&mut b[..n], &p));
        assert_eq!(b, before);

        // UDP without a checksum stays without one.
        b[40..42].copy_from_slice(&[0, 0]);
        let p = parse(&b[..n]).unwrap();
        assert!(!complete_partial(&mut b[..n], &p));
        assert_eq!(&b[40..42], &[0, 0]);

        let n = build_icmp_echo(&mut b, &spec(30), EchoKind::Request, 7, 1).unwrap();
        let p = parse(&b[..n]).unwrap();
        assert!(!complete_partial(&mut b[..n], &p));

        // A first fragment's checksum covers the whole datagram: left alone, even when it
        // equals the fragment's pseudo-header sum.
        let n = build_udp(&mut b, &spec(30), 1, 2).unwrap();
        make_partial(&mut b[..n], UDP_CHECKSUM);
        set_ip_word(
            &mut b[..n],
            crate::packet::ipv4::IPV4_FRAG,
            crate::packet::ipv4::IPV4_FLAG_MF,
        );
        let before = b;
        let p = parse(&b[..n]).unwrap();
        assert!(p.is_first_fragment());
        assert!(!complete_partial(&mut b[..n], &p));
        assert_eq!(b, before);

        // A frame that is not the one parsed (shorter) is not touched and does not panic.
        let n = build_udp(&mut b, &spec(30), 1, 2).unwrap();
        make_partial(&mut b[..n], UDP_CHECKSUM);
        let p = parse(&b[..n]).unwrap();
        assert!(!complete_partial(&mut b[..30], &p));
    }
}
