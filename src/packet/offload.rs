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
use super::ipv4::{IPV4_FLAG_MF, IPV4_FRAG, IPV4_FRAG_OFFSET_MASK, PROTO_TCP, PROTO_UDP};
use super::l4::{TCP_CHECKSUM, UDP_CHECKSUM, UDP_LEN};
use super::{L4Kind, Parsed};

/// Whether the frame's TCP/UDP checksum is a partial (pseudo-header only) sum; `None` for
/// frames without one (other protocols, fragments, UDP without checksum, short frames).
#[inline]
fn partial_segment(frame: &[u8], p: &Parsed) -> Option<(usize, usize, usize)> {
    let (proto, csum_off) = match p.kind() {
        L4Kind::Tcp => (PROTO_TCP, TCP_CHECKSUM),
        L4Kind::Udp => (PROTO_UDP, UDP_CHECKSUM),
        _ => return None,
    };
    let l3 = p.l3();
    let frag = frame.get(l3 + IPV4_FRAG..l3 + IPV4_FRAG + 2)?;
    if u16::from_be_bytes([frag[0], frag[1]]) & (IPV4_FLAG_MF | IPV4_FRAG_OFFSET_MASK) != 0 {
        // The sum covers the whole datagram, which one fragment does not hold.
        return None;
    }
    let l4 = p.l4();
    let seg_len = if proto == PROTO_UDP {
        let u = frame.get(l4 + UDP_LEN..l4 + UDP_LEN + 2)?;
        usize::from(u16::from_be_bytes([u[0], u[1]]))
    } else {
        p.end().checked_sub(l4)?
    };
    let c = frame.get(l4 + csum_off..l4 + csum_off + 2)?;
    let csum = u16::from_be_bytes([c[0], c[1]]);
    if proto == PROTO_UDP && csum == 0 {
        return None;
    }
    let t = p.tuple();
    let ps = pseudo_header_sum(t.src, t.dst, proto, u16::try_from(seg_len).ok()?);
    // 0x0000 and 0xFFFF are the same one's complement number.
    let norm = |x: u16| if x == 0xffff { 0 } else { x };
    if norm(csum) != norm(ps) {
        return None;
    }
    Some((l4, seg_len, csum_off))
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

        // A frame that is not the one parsed (shorter) is not touched and does not panic.
        let n = build_udp(&mut b, &spec(30), 1, 2).unwrap();
        make_partial(&mut b[..n], UDP_CHECKSUM);
        let p = parse(&b[..n]).unwrap();
        assert!(!complete_partial(&mut b[..30], &p));
    }
}
