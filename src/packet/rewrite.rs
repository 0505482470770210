//! In-place address/port translation with incremental (RFC 1624) checksum updates.
//!
//! Every function takes the frame and the [`Parsed`] that [`parse`](super::parse) returned for
//! it, reads the *current* value of each field it changes from the frame (so rewrites compose
//! in any order), and updates every checksum covering the changed words:
//!
//! | packet        | address change updates          | port change updates            |
//! |---------------|---------------------------------|--------------------------------|
//! | TCP           | IPv4 header, TCP (pseudo-header)| TCP                            |
//! | UDP           | IPv4 header, UDP unless 0       | UDP unless 0                   |
//! | ICMP query    | IPv4 header                     | ICMP (identifier)              |
//! | ICMP error    | outer IPv4 header only          | — (see [`set_inner_src`])      |
//!
//! A frame shorter than the `Parsed` describes (i.e. not the frame it was parsed from) is
//! left untouched; nothing here panics.

use super::checksum::Delta;
use super::icmp::{ICMP_CHECKSUM, ICMP_HEADER_LEN, ICMP_QUERY_ID};
use super::ipv4::{IPV4_CHECKSUM, IPV4_DST, IPV4_MIN_HEADER_LEN, IPV4_SRC};
use super::l4::{
    TCP_ACK, TCP_ACK_NUM, TCP_CHECKSUM, TCP_DPORT, TCP_FLAGS, TCP_MIN_HEADER_LEN, TCP_SEQ_NUM,
    TCP_SPORT, UDP_CHECKSUM, UDP_HEADER_LEN,
};
use super::{L4Kind, Parsed};

/// Writes `v` big-endian at `off` and returns the previous value.
#[inline(always)]
fn swap16(b: &mut [u8], off: usize, v: u16) -> Option<u16> {
    let a = b.get_mut(off..)?.first_chunk_mut::<2>()?;
    let old = u16::from_be_bytes(*a);
    *a = v.to_be_bytes();
    Some(old)
}

/// Writes `v` big-endian at `off` and returns the previous value.
#[inline(always)]
fn swap32(b: &mut [u8], off: usize, v: u32) -> Option<u32> {
    let a = b.get_mut(off..)?.first_chunk_mut::<4>()?;
    let old = u32::from_be_bytes(*a);
    *a = v.to_be_bytes();
    Some(old)
}

/// Applies `d` to the checksum at `off`; returns `(old, new)` checksum values.
#[inline(always)]
fn fix_csum(b: &mut [u8], off: usize, d: Delta) -> Option<(u16, u16)> {
    let a = b.get_mut(off..)?.first_chunk_mut::<2>()?;
    let old = u16::from_be_bytes(*a);
    let new = d.apply(old);
    *a = new.to_be_bytes();
    Some((old, new))
}

/// [`fix_csum`] with the UDP zero-checksum rule.
#[inline(always)]
fn fix_csum_udp(b: &mut [u8], off: usize, d: Delta) -> Option<(u16, u16)> {
    let a = b.get_mut(off..)?.first_chunk_mut::<2>()?;
    let old = u16::from_be_bytes(*a);
    let new = d.apply_udp(old);
    *a = new.to_be_bytes();
    Some((old, new))
}

/// Which end of a tuple a rewrite changes.
#[derive(Clone, Copy)]
enum End {
    Src,
    Dst,
}

impl End {
    #[inline(always)]
    const fn addr_off(self) -> usize {
        match self {
            End::Src => IPV4_SRC,
            End::Dst => IPV4_DST,
        }
    }

    /// Offset of the TCP/UDP port (same layout for both).
    #[inline(always)]
    const fn port_off(self) -> usize {
        match self {
            End::Src => TCP_SPORT,
            End::Dst => TCP_DPORT,
        }
    }
}

/// Replaces the `u16` at constant offset `off` of a fixed-size header with `v`, both in
/// native byte order (see [`set_outer`]), returning the old one (index checks resolve at
/// compile time once inlined).
#[inline(always)]
fn swap16_ne<const N: usize>(h: &mut [u8; N], off: usize, v: u16) -> u16 {
    let old = u16::from_ne_bytes([h[off], h[off + 1]]);
    h[off..off + 2].copy_from_slice(&v.to_ne_bytes());
    old
}

/// Applies `d` (of native-order words) to the checksum at constant offset `off` of a
/// fixed-size header, read and written in native order.
#[inline(always)]
fn fix_csum_ne<const N: usize>(h: &mut [u8; N], off: usize, d: Delta, udp: bool) {
    let old = u16::from_ne_bytes([h[off], h[off + 1]]);
    let new = if udp { d.apply_udp(old) } else { d.apply(old) };
    h[off..off + 2].copy_from_slice(&new.to_ne_bytes());
}

/// The outer rewrite. It computes in native byte order: every field is read and written
/// as the native-order number of its bytes, and the new values are converted once. The
/// one's complement sum is byte-order independent (RFC 1071 2(B)): the sum of byte-swapped
/// words is the byte-swapped sum, end-around carries included, so the checksums come out
/// as the network-order computation's, bit for bit (`0x0000` and `0xFFFF` are their own
/// swaps, so the UDP rule holds too); on a little-endian machine this saves a byte swap
/// per field read or written, eight on a TCP or UDP packet.
#[inline(always)]
fn set_outer(frame: &mut [u8], p: &Parsed, end: End, ip: u32, port: u16) -> Option<()> {
    let f = frame.get_mut(..p.end())?;
    let (hdr, l4) = f
        .get_mut(p.l3()..)?
        .split_at_mut_checked(p.l4().wrapping_sub(p.l3()))?;
    let hdr = hdr.first_chunk_mut::<IPV4_MIN_HEADER_LEN>()?;
    // Check the transport header before writing anything, so a mismatched frame is left
    // whole.
    let port_ok = match p.kind() {
        L4Kind::Tcp => l4.len() >= TCP_MIN_HEADER_LEN,
        L4Kind::Udp | L4Kind::IcmpQueryRequest | L4Kind::IcmpQueryReply => l4.len() >= 8,
        L4Kind::IcmpError => true,
    };
    if !port_ok {
        return None;
    }
    // The native-order numbers whose bytes are the network-order values.
    let (ip, port) = (ip.to_be(), port.to_be());

    let a = end.addr_off();
    let old_ip = u32::from_ne_bytes([hdr[a], hdr[a + 1], hdr[a + 2], hdr[a + 3]]);
    hdr[a..a + 4].copy_from_slice(&ip.to_ne_bytes());
    let d_ip = Delta::ZERO.dword(old_ip, ip);
    fix_csum_ne(hdr, IPV4_CHECKSUM, d_ip, false);

    match p.kind() {
        L4Kind::Tcp => {
            let t = l4.first_chunk_mut::<TCP_MIN_HEADER_LEN>()?;
            let old = swap16_ne(t, end.port_off(), port);
            fix_csum_ne(t, TCP_CHECKSUM, d_ip.word(old, port), false);
        }
        L4Kind::Udp => {
            let u = l4.first_chunk_mut::<UDP_HEADER_LEN>()?;
            let old = swap16_ne(u, end.port_off(), port);
            fix_csum_ne(u, UDP_CHECKSUM, d_ip.word(old, port), true);
        }
        L4Kind::IcmpQueryRequest | L4Kind::IcmpQueryReply => {
            // The ICMP checksum has no pseudo-header: only the identifier matters.
            let c = l4.first_chunk_mut::<ICMP_HEADER_LEN>()?;
            let old = swap16_ne(c, ICMP_QUERY_ID, port);
            fix_csum_ne(c, ICMP_CHECKSUM, Delta::ZERO.word(old, port), false);
        }
        L4Kind::IcmpError => {}
    }
    Some(())
}

/// Rewrites the source address to `ip` and the source port to `port` (host order), with all
/// checksums updated (see the module table).
///
/// For an ICMP query or reply `port` is written to the identifier (which is both "ports" of its
/// [`Tuple`](super::Tuple)); for an ICMP error only the outer source address changes and
/// `port` is ignored.
#[inline]
pub fn set_src(frame: &mut [u8], p: &Parsed, ip: u32, port: u16) {
    let _ = set_outer(frame, p, End::Src, ip, port);
}

/// Rewrites the destination address to `ip` and the destination port to `port` (host
/// order), with all checksums updated; see [`set_src`] for ICMP.
#[inline]
pub fn set_dst(frame: &mut [u8], p: &Parsed, ip: u32, port: u16) {
    let _ = set_outer(frame, p, End::Dst, ip, port);
}

#[inline(always)]
fn set_inner(frame: &mut [u8], p: &Parsed, end: End, ip: u32, port: u16) -> Option<()> {
    let e = p.embedded()?;
    let f = frame.get_mut(..p.end())?;
    let (il3, il4) = (e.l3(), e.l4());
    // Every word changed inside the ICMP message, for the outer ICMP checksum.
    let mut icmp = Delta::ZERO;

    let old_ip = swap32(f, il3 + end.addr_off(), ip)?;
    let d_ip = Delta::ZERO.dword(old_ip, ip);
    icmp = icmp.combine(d_ip);
    let (o, n) = fix_csum(f, il3 + IPV4_CHECKSUM, d_ip)?;
    icmp = icmp.word(o, n);

    match e.kind() {
        L4Kind::Tcp => {
            let old = swap16(f, il4 + end.port_off(), port)?;
            icmp = icmp.word(old, port);
            // The TCP checksum (bytes 16-17) is quoted only if the error carries more than
            // the 8 bytes RFC 792 guarantees.
            if let Some((o, n)) = fix_csum(f, il4 + TCP_CHECKSUM, d_ip.word(old, port)) {
                icmp = icmp.word(o, n);
            }
        }
        L4Kind::Udp => {
            let old = swap16(f, il4 + end.port_off(), port)?;
            icmp = icmp.word(old, port);
            let (o, n) = fix_csum_udp(f, il4 + UDP_CHECKSUM, d_ip.word(old, port))?;
            icmp = icmp.word(o, n);
        }
        L4Kind::IcmpQueryRequest | L4Kind::IcmpQueryReply => {
            let old = swap16(f, il4 + ICMP_QUERY_ID, port)?;
            icmp = icmp.word(old, port);
            let (o, n) = fix_csum(f, il4 + ICMP_CHECKSUM, Delta::ZERO.word(old, port))?;
            icmp = icmp.word(o, n);
        }
        L4Kind::IcmpError => {}
    }
    // The quoted header starts 8 bytes into the ICMP message and both IPv4 and transport
    // headers have even lengths, so every changed word is 16-bit aligned within the message.
    fix_csum(f, p.l4() + ICMP_CHECKSUM, icmp)?;
    Some(())
}

/// For an ICMP error, rewrites the *quoted* packet's source address and port (identifier for
/// a quoted query), updating the quoted IPv4 header checksum, the quoted TCP/UDP/ICMP checksum
/// when it lies within the quoted bytes (a quoted UDP checksum of 0 stays 0), and the outer
/// ICMP checksum for every word changed. Does nothing for other packets.
///
/// The quoted packet travelled the opposite way to the error, so translating an error that
/// comes back to a source-NATed host takes [`set_dst`] (outer destination: public address →
/// private address) plus `set_inner_src` (quoted source: public address and port → private
/// ones); an error travelling the forward direction (e.g. from a port-forwarded server
/// about a reply it could not deliver) takes [`set_src`] plus [`set_inner_dst`].
#[inline]
pub fn set_inner_src(frame: &mut [u8], p: &Parsed, ip: u32, port: u16) {
    let _ = set_inner(frame, p, End::Src, ip, port);
}

/// For an ICMP error, rewrites the quoted packet's destination address and port; see
/// [`set_inner_src`].
#[inline]
pub fn set_inner_dst(frame: &mut [u8], p: &Parsed, ip: u32, port: u16) {
    let _ = set_inner(frame, p, End::Dst, ip, port);
}

/// Turns a copy of a translated TCP segment (an RST; `p` is the parse of the frame it was
/// copied from, so the offsets hold) into the probe the NAT sends the RST's receiver (see
/// `nat::tcp`): an ACK whose sequence and acknowledgment numbers are half the sequence
/// space away from the segment's, so outside any window. A TCP endpoint answers such a
/// segment with an ACK while its connection lives (RFC 793 3.9: "If an incoming segment is
/// not acceptable, an acknowledgment should be sent in reply"), with an RST once it is
/// gone. The TCP checksum is computed anew. `None` (frame left as it was) if the frame is
/// not the whole TCP segment `p` describes.
pub fn make_rst_probe(frame: &mut [u8], p: &Parsed) -> Option<()> {
    // A first fragment holds part of the segment: its checksum cannot be made.
    if p.kind() != L4Kind::Tcp || p.is_first_fragment() {
        return None;
    }
    let f = frame.get_mut(..p.end())?;
    let (hdr, seg) = f
        .get_mut(p.l3()..)?
        .split_at_mut_checked(p.l4().wrapping_sub(p.l3()))?;
    let hdr = hdr.first_chunk::<IPV4_MIN_HEADER_LEN>()?;
    if seg.len() < TCP_MIN_HEADER_LEN {
        return None;
    }
    let rd = |h: &[u8], o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let (src, dst) = (rd(hdr, IPV4_SRC), rd(hdr, IPV4_DST));
    let half = 1u32 << 31;
    let seq = rd(seg, TCP_SEQ_NUM).wrapping_add(half);
    let ack = rd(seg, TCP_ACK_NUM).wrapping_add(half);
    seg[TCP_SEQ_NUM..TCP_SEQ_NUM + 4].copy_from_slice(&seq.to_be_bytes());
    seg[TCP_ACK_NUM..TCP_ACK_NUM + 4].copy_from_slice(&ack.to_be_bytes());
    seg[TCP_FLAGS] = TCP_ACK;
    seg[TCP_CHECKSUM..TCP_CHECKSUM + 2].copy_from_slice(&[0, 0]);
    let c = super::checksum::l4_checksum(src, dst, super::ipv4::PROTO_TCP, seg);
    seg[TCP_CHECKSUM..TCP_CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    Some(())
}
