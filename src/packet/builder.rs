//! Writers of complete, checksummed test frames, for tests and the traffic generator.
//!
//! Each builder writes one Ethernet II + IPv4 frame (no options, DF set, identification 0)
//! into the front of a caller-provided buffer, zero-fills the payload, pads the frame to the
//! 60-byte Ethernet minimum, and returns the frame length. Nothing is allocated, so a
//! generator can build straight into its UMEM frames; to vary the flow afterwards use
//! [`set_src`](super::set_src) / [`set_dst`](super::set_dst), which keep every checksum valid.

use super::checksum;
use super::ether::{MacAddr, ETHERTYPE_IPV4, ETH_HEADER_LEN, ETH_MIN_FRAME_LEN};
use super::icmp::{
    ICMP_CHECKSUM, ICMP_CODE, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_HEADER_LEN, ICMP_TYPE,
};
use super::ipv4::{IPV4_FLAG_DF, IPV4_MIN_HEADER_LEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use super::l4::{
    TCP_CHECKSUM, TCP_DATA_OFFSET, TCP_FLAGS, TCP_MIN_HEADER_LEN, TCP_SYN, UDP_CHECKSUM,
    UDP_HEADER_LEN,
};

/// Why a builder could not write a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The buffer is shorter than the frame.
    #[error("buffer of {have} bytes is too small for a {need}-byte frame")]
    BufferTooSmall {
        /// Frame length that was needed.
        need: usize,
        /// Buffer length that was given.
        have: usize,
    },
    /// The IPv4 total length would exceed 65535 bytes.
    #[error("IPv4 packet of {0} bytes exceeds the 65535-byte maximum")]
    TooLong(usize),
}

/// The Ethernet and IPv4 fields shared by every builder; addresses are host-order `u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    /// Source MAC address.
    pub src_mac: MacAddr,
    /// Destination MAC address.
    pub dst_mac: MacAddr,
    /// Source IPv4 address.
    pub src_ip: u32,
    /// Destination IPv4 address.
    pub dst_ip: u32,
    /// IPv4 time to live.
    pub ttl: u8,
    /// Transport payload length in bytes (zero-filled). A UDP frame is
    /// `42 + payload_len` bytes (at least 60): 18 for a 60-byte ("64 B" with FCS) frame,
    /// 1472 for a 1514-byte ("1518 B") one.
    pub payload_len: usize,
}

impl FrameSpec {
    /// A spec with TTL 64 and an empty payload.
    pub const fn new(src_mac: MacAddr, dst_mac: MacAddr, src_ip: u32, dst_ip: u32) -> Self {
        FrameSpec {
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            ttl: 64,
            payload_len: 0,
        }
    }
}

/// Kind of ICMP echo message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EchoKind {
    /// Echo request (type 8).
    Request,
    /// Echo reply (type 0).
    Reply,
}

/// Writes the Ethernet and IPv4 headers for an `l4_len`-byte transport segment, zeroes the
/// rest of the frame, and returns the frame (of its final, padded length) and the frame
/// offset of the transport header.
fn write_l2_l3<'a>(
    buf: &'a mut [u8],
    spec: &FrameSpec,
    proto: u8,
    l4_len: usize,
) -> Result<&'a mut [u8], BuildError> {
    let ip_len = IPV4_MIN_HEADER_LEN.saturating_add(l4_len);
    if ip_len > u16::MAX as usize {
        return Err(BuildError::TooLong(ip_len));
    }
    let frame_len = (ETH_HEADER_LEN + ip_len).max(ETH_MIN_FRAME_LEN);
    let have = buf.len();
    let Some(f) = buf.get_mut(..frame_len) else {
        return Err(BuildError::BufferTooSmall {
            need: frame_len,
            have,
        });
    };
    let Some((hdr, rest)) = f.split_first_chunk_mut::<{ ETH_HEADER_LEN + IPV4_MIN_HEADER_LEN }>()
    else {
        // frame_len >= 60 > 34, and the buffer holds frame_len bytes.
        return Err(BuildError::BufferTooSmall {
            need: frame_len,
            have,
        });
    };
    rest.fill(0);
    hdr[0..6].copy_from_slice(&spec.dst_mac);
    hdr[6..12].copy_from_slice(&spec.src_mac);
    hdr[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip = &mut hdr[ETH_HEADER_LEN..];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&[0, 0]);
    ip[6..8].copy_from_slice(&IPV4_FLAG_DF.to_be_bytes());
    ip[8] = spec.ttl;
    ip[9] = proto;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&spec.src_ip.to_be_bytes());
    ip[16..20].copy_from_slice(&spec.dst_ip.to_be_bytes());
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    Ok(f)
}

/// Offset of the transport header in a builder's frame.
const L4: usize = ETH_HEADER_LEN + IPV4_MIN_HEADER_LEN;

/// Copies `bytes` into `seg` at `off`, if they fit (they always do for the builders' own
/// header layouts, whose segments are at least a header long).
#[inline]
fn put(seg: &mut [u8], off: usize, bytes: &[u8]) {
    if let Some(d) = seg.get_mut(off..off + bytes.len()) {
        d.copy_from_slice(bytes);
    }
}

/// Writes a UDP frame from `spec` with ports `sport` → `dport` and a valid UDP checksum;
/// returns its length.
pub fn build_udp(
    buf: &mut [u8],
    spec: &FrameSpec,
    sport: u16,
    dport: u16,
) -> Result<usize, BuildError> {
    let l4_len = UDP_HEADER_LEN.saturating_add(spec.payload_len);
    let f = write_l2_l3(buf, spec, PROTO_UDP, l4_len)?;
    let n = f.len();
    let seg = f.get_mut(L4..).unwrap_or_default();
    let seg = seg.get_mut(..l4_len).unwrap_or_default();
    let mut h = [0u8; UDP_HEADER_LEN];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    put(seg, 0, &h);
    let c = checksum::udp_checksum(spec.src_ip, spec.dst_ip, seg);
    put(seg, UDP_CHECKSUM, &c.to_be_bytes());
    Ok(n)
}

/// Writes a TCP SYN frame (data offset 5, no options, window 65535, sequence number `seq`)
/// from `spec` with ports `sport` → `dport` and a valid TCP checksum; returns its length.
pub fn build_tcp_syn(
    buf: &mut [u8],
    spec: &FrameSpec,
    sport: u16,
    dport: u16,
    seq: u32,
) -> Result<usize, BuildError> {
    build_tcp(buf, spec, sport, dport, seq, TCP_SYN)
}

/// [`build_tcp_syn`] with the TCP flags `flags` (see `l4::TCP_*`) instead of a SYN's: a
/// SYN-ACK, an ACK of an established connection, a FIN, an RST.
pub fn build_tcp(
    buf: &mut [u8],
    spec: &FrameSpec,
    sport: u16,
    dport: u16,
    seq: u32,
    flags: u8,
) -> Result<usize, BuildError> {
    let l4_len = TCP_MIN_HEADER_LEN.saturating_add(spec.payload_len);
    let f = write_l2_l3(buf, spec, PROTO_TCP, l4_len)?;
    let n = f.len();
    let seg = f.get_mut(L4..).unwrap_or_default();
    let seg = seg.get_mut(..l4_len).unwrap_or_default();
    let mut h = [0u8; TCP_MIN_HEADER_LEN];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&seq.to_be_bytes());
    h[TCP_DATA_OFFSET] = ((TCP_MIN_HEADER_LEN / 4) as u8) << 4;
    h[TCP_FLAGS] = flags;
    h[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    put(seg, 0, &h);
    let c = checksum::l4_checksum(spec.src_ip, spec.dst_ip, PROTO_TCP, seg);
    put(seg, TCP_CHECKSUM, &c.to_be_bytes());
    Ok(n)
}

/// Writes an ICMP query or reply of type `icmp_type` (echo, timestamp, information, address
/// mask) from `spec` with identifier `ident`, sequence number `seq`, `spec.payload_len`
/// zero bytes after the header (12 for a timestamp message, 4 for an address mask) and a
/// valid ICMP checksum; returns its length.
pub fn build_icmp_query(
    buf: &mut [u8],
    spec: &FrameSpec,
    icmp_type: u8,
    ident: u16,
    seq: u16,
) -> Result<usize, BuildError> {
    let mut rest = [0u8; 4];
    rest[0..2].copy_from_slice(&ident.to_be_bytes());
    rest[2..4].copy_from_slice(&seq.to_be_bytes());
    let l4_len = ICMP_HEADER_LEN.saturating_add(spec.payload_len);
    write_icmp(buf, spec, icmp_type, 0, rest, l4_len, &[])
}

/// Writes an ICMP echo request or reply from `spec` with identifier `ident` and sequence
/// number `seq` and a valid ICMP checksum; returns its length.
pub fn build_icmp_echo(
    buf: &mut [u8],
    spec: &FrameSpec,
    kind: EchoKind,
    ident: u16,
    seq: u16,
) -> Result<usize, BuildError> {
    let ty = match kind {
        EchoKind::Request => ICMP_ECHO_REQUEST,
        EchoKind::Reply => ICMP_ECHO_REPLY,
    };
    build_icmp_query(buf, spec, ty, ident, seq)
}

/// Writes an ICMP error (`icmp_type`, `code`, the 4 type-specific bytes `rest`, e.g. the
/// next-hop MTU for "fragmentation needed") quoting `quoted` (the start of the offending IPv4
/// packet, as RFC 792/1812 prescribe) with a valid ICMP checksum; returns its length.
/// `spec.payload_len` is ignored: the payload is `quoted`.
pub fn build_icmp_error(
    buf: &mut [u8],
    spec: &FrameSpec,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Result<usize, BuildError> {
    let l4_len = ICMP_HEADER_LEN.saturating_add(quoted.len());
    write_icmp(buf, spec, icmp_type, code, rest, l4_len, quoted)
}

/// Writes an `l4_len`-byte ICMP message whose payload starts with `data` (zeros after it).
fn write_icmp(
    buf: &mut [u8],
    spec: &FrameSpec,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    l4_len: usize,
    data: &[u8],
) -> Result<usize, BuildError> {
    let f = write_l2_l3(buf, spec, PROTO_ICMP, l4_len)?;
    let n = f.len();
    let msg = f.get_mut(L4..).unwrap_or_default();
    let msg = msg.get_mut(..l4_len).unwrap_or_default();
    let mut h = [0u8; ICMP_HEADER_LEN];
    h[ICMP_TYPE] = icmp_type;
    h[ICMP_CODE] = code;
    h[4..8].copy_from_slice(&rest);
    put(msg, 0, &h);
    put(msg, ICMP_HEADER_LEN, data);
    let c = checksum::checksum(msg);
    put(msg, ICMP_CHECKSUM, &c.to_be_bytes());
    Ok(n)
}
