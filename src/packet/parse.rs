//! Validation of an Ethernet frame and extraction of its IPv4 flow tuple.

use super::ether::{
    ETHERTYPE_IPV4, ETHERTYPE_QINQ, ETHERTYPE_QINQ_OLD, ETHERTYPE_VLAN, ETH_HEADER_LEN, ETH_TYPE,
};
use super::icmp::{
    is_error_type, is_query_reply, is_query_request, Embedded, ICMP_HEADER_LEN, ICMP_QUERY_ID,
};
use super::ipv4::{
    IPV4_DST, IPV4_FRAG, IPV4_FRAG_OFFSET_MASK, IPV4_MIN_HEADER_LEN, IPV4_PROTO, IPV4_SRC,
    IPV4_TOTAL_LEN, IPV4_TTL, IPV4_VER_IHL, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
use super::l4::{TCP_DATA_OFFSET, TCP_FLAGS, TCP_MIN_HEADER_LEN, UDP_HEADER_LEN, UDP_LEN};

/// Why [`parse`] refused a frame.
///
/// The discriminants are dense from 0 to [`Drop::COUNT`]` - 1`, so a dataplane can keep one
/// counter per reason in a plain array indexed by [`Drop::index`].
///
/// Two reasons mean "not for NAT" rather than "malformed" ([`Drop::is_not_for_us`]): the
/// dataplane should hand those frames to the kernel (XDP_PASS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
#[repr(u8)]
pub enum Drop {
    /// The EtherType is not IPv4 (ARP, IPv6, LLDP, ...): not for us, pass to the kernel.
    #[error("not an IPv4 frame")]
    NotIpv4 = 0,
    /// The frame carries an 802.1Q/802.1ad VLAN tag: not handled by the fast path, pass to the
    /// kernel (which owns any VLAN sub-interface).
    #[error("VLAN-tagged frame")]
    VlanTagged,
    /// The frame is shorter than an Ethernet header.
    #[error("frame shorter than an Ethernet header")]
    TooShortEth,
    /// Fewer than 20 bytes follow the Ethernet header.
    #[error("frame too short for an IPv4 header")]
    TooShortIp,
    /// The EtherType says IPv4 but the version nibble is not 4.
    #[error("IP version is not 4")]
    BadIpVersion,
    /// The IHL is below 5 (20 bytes).
    #[error("IPv4 header length below 20 bytes")]
    BadIhl,
    /// The total length is smaller than the header or larger than the frame.
    #[error("IPv4 total length inconsistent with header or frame")]
    BadTotalLen,
    /// The IPv4 header checksum does not verify.
    #[error("bad IPv4 header checksum")]
    BadIpChecksum,
    /// A fragment other than the first (non-zero offset): it carries no transport header.
    /// The first fragment parses like a whole packet
    /// ([`Parsed::is_first_fragment`]); the others are read with
    /// [`parse_fragment`](super::frag::parse_fragment).
    #[error("IPv4 non-first fragment")]
    Fragment,
    /// TTL is 1 or 0: forwarding would take it to 0, which a router must not do (RFC 1812
    /// 5.3.1). A dataplane may pass these to the kernel instead, so that it answers with
    /// ICMP Time Exceeded (which keeps traceroute through the gateway working).
    #[error("TTL expired")]
    TtlExpired,
    /// The IPv4 protocol is none of TCP, UDP and ICMP.
    #[error("unsupported IP protocol")]
    UnsupportedProto,
    /// The IP payload is shorter than the minimal TCP (20), UDP (8) or ICMP (8) header.
    #[error("payload too short for the transport header")]
    TooShortL4,
    /// The TCP data offset is below 5 or points past the IP payload.
    #[error("bad TCP data offset")]
    BadTcpDataOffset,
    /// The UDP length is below 8 or larger than the IP payload.
    #[error("bad UDP length")]
    BadUdpLen,
    /// An ICMP type other than the queries (echo, timestamp, information, address mask),
    /// their replies, and the errors 3, 11 and 12.
    #[error("unsupported ICMP type")]
    IcmpUnsupportedType,
    /// An ICMP error whose quoted packet lacks its full IPv4 header or the first 8 bytes of
    /// its transport header.
    #[error("ICMP error quotes a truncated packet")]
    IcmpTruncatedInner,
    /// An ICMP error quoting something NAT cannot map: not IPv4, IHL below 5, a non-first
    /// fragment, a protocol other than TCP/UDP, or ICMP other than a query or its reply.
    #[error("ICMP error quotes an unsupported packet")]
    IcmpBadInner,
}

impl Drop {
    /// Number of drop reasons.
    pub const COUNT: usize = 17;

    /// Every reason, in discriminant order (`ALL[r.index()] == r`).
    pub const ALL: [Drop; Drop::COUNT] = [
        Drop::NotIpv4,
        Drop::VlanTagged,
        Drop::TooShortEth,
        Drop::TooShortIp,
        Drop::BadIpVersion,
        Drop::BadIhl,
        Drop::BadTotalLen,
        Drop::BadIpChecksum,
        Drop::Fragment,
        Drop::TtlExpired,
        Drop::UnsupportedProto,
        Drop::TooShortL4,
        Drop::BadTcpDataOffset,
        Drop::BadUdpLen,
        Drop::IcmpUnsupportedType,
        Drop::IcmpTruncatedInner,
        Drop::IcmpBadInner,
    ];

    /// Index of this reason in a counter array of length [`Drop::COUNT`].
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The reason with index `i`, if any.
    #[inline]
    pub const fn from_index(i: usize) -> Option<Drop> {
        if i < Drop::COUNT {
            Some(Drop::ALL[i])
        } else {
            None
        }
    }

    /// A stable snake_case name, for counters and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Drop::NotIpv4 => "not_ipv4",
            Drop::VlanTagged => "vlan_tagged",
            Drop::TooShortEth => "too_short_eth",
            Drop::TooShortIp => "too_short_ip",
            Drop::BadIpVersion => "bad_ip_version",
            Drop::BadIhl => "bad_ihl",
            Drop::BadTotalLen => "bad_total_len",
            Drop::BadIpChecksum => "bad_ip_checksum",
            Drop::Fragment => "fragment",
            Drop::TtlExpired => "ttl_expired",
            Drop::UnsupportedProto => "unsupported_proto",
            Drop::TooShortL4 => "too_short_l4",
            Drop::BadTcpDataOffset => "bad_tcp_data_offset",
            Drop::BadUdpLen => "bad_udp_len",
            Drop::IcmpUnsupportedType => "icmp_unsupported_type",
            Drop::IcmpTruncatedInner => "icmp_truncated_inner",
            Drop::IcmpBadInner => "icmp_bad_inner",
        }
    }

    /// `true` if the frame is simply not NAT traffic ([`Drop::NotIpv4`],
    /// [`Drop::VlanTagged`]) and belongs to the kernel; `false` if it is malformed or
    /// refused IPv4 traffic.
    #[inline]
    pub const fn is_not_for_us(self) -> bool {
        matches!(self, Drop::NotIpv4 | Drop::VlanTagged)
    }
}

/// The flow 5-tuple, shared with the translation table ([`crate::table::Tuple`]):
/// addresses are host-order `u32`. For ICMP queries and replies (echo, timestamp,
/// information, address mask), `sport` and `dport` are both the identifier, so that [`reversed`](Tuple::reversed) of a request's tuple is
/// its reply's tuple. For an ICMP error both ports are 0 (see [`Parsed::embedded`] for the
/// tuple it refers to).
pub use crate::table::Tuple;

/// What the transport layer of a parsed packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4Kind {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP query: echo (type 8), timestamp (13), information (15) or address mask (17)
    /// request; the identifier is the "port".
    IcmpQueryRequest,
    /// ICMP query reply: echo (0), timestamp (14), information (16) or address mask (18)
    /// reply; the identifier is the "port".
    IcmpQueryReply,
    /// ICMP destination unreachable, time exceeded or parameter problem, quoting a packet
    /// described by [`Parsed::embedded`].
    IcmpError,
}

/// A frame accepted by [`parse`]: its tuple and the offsets the rewrite functions use.
///
/// It is only produced by [`parse`] and describes the frame it was parsed from; the rewrite
/// functions read the current field values from the frame, so one `Parsed` stays valid across
/// any number of rewrites of the same frame (only its [`tuple`](Parsed::tuple) goes stale).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Parsed {
    tuple: Tuple,
    kind: L4Kind,
    tcp_flags: u8,
    ttl: u8,
    first_fragment: bool,
    ip_id: u16,
    l3: u16,
    l4: u16,
    ip_len: u16,
    embedded: Option<Embedded>,
}

impl Parsed {
    /// The flow tuple as parsed.
    #[inline]
    pub const fn tuple(&self) -> Tuple {
        self.tuple
    }

    /// What the transport layer is.
    #[inline]
    pub const fn kind(&self) -> L4Kind {
        self.kind
    }

    /// IP protocol number.
    #[inline]
    pub const fn proto(&self) -> u8 {
        self.tuple.proto
    }

    /// TCP flags byte (see `l4::TCP_*`), 0 for other protocols.
    #[inline]
    pub const fn tcp_flags(&self) -> u8 {
        self.tcp_flags
    }

    /// TTL as received (at least 2).
    #[inline]
    pub const fn ttl(&self) -> u8 {
        self.ttl
    }

    /// Whether this is the first fragment of a larger datagram (MF set, offset 0): it holds
    /// the transport header, the other fragments follow (see `packet::frag`).
    #[inline]
    pub const fn is_first_fragment(&self) -> bool {
        self.first_fragment
    }

    /// The IPv4 identification field.
    #[inline]
    pub const fn ip_id(&self) -> u16 {
        self.ip_id
    }

    /// Frame offset of the IPv4 header.
    #[inline]
    pub const fn l3(&self) -> usize {
        self.l3 as usize
    }

    /// Frame offset of the transport header (after any IPv4 options).
    #[inline]
    pub const fn l4(&self) -> usize {
        self.l4 as usize
    }

    /// IPv4 total length (header + payload).
    #[inline]
    pub const fn ip_total_len(&self) -> usize {
        self.ip_len as usize
    }

    /// Frame offset one past the IPv4 packet; bytes from here on are Ethernet padding.
    #[inline]
    pub const fn end(&self) -> usize {
        self.l3 as usize + self.ip_len as usize
    }

    /// For an ICMP error ([`L4Kind::IcmpError`]), the packet it quotes; `None` otherwise.
    #[inline]
    pub const fn embedded(&self) -> Option<&Embedded> {
        self.embedded.as_ref()
    }
}

/// Reads a big-endian `u16` at offset `off` of a fixed-size header; with the constant offsets
/// used here the index check is resolved at compile time.
#[inline(always)]
fn rd16<const N: usize>(h: &[u8; N], off: usize) -> u16 {
    u16::from_be_bytes([h[off], h[off + 1]])
}

/// Reads a big-endian `u32` at offset `off` of a fixed-size header.
#[inline(always)]
fn rd32<const N: usize>(h: &[u8; N], off: usize) -> u32 {
    u32::from_be_bytes([h[off], h[off + 1], h[off + 2], h[off + 3]])
}

/// Validates `frame` (an Ethernet II frame without FCS) and returns its IPv4 flow tuple and
/// header offsets, or the reason to refuse it.
///
/// Checks, in order: Ethernet header, EtherType (IPv4 only; VLAN tags refused), IPv4
/// version, IHL, total length (the IP packet may be followed by Ethernet padding, which is
/// ignored), header checksum, fragmentation, the transport header of TCP, UDP or ICMP, then
/// the TTL. IPv4 options are accepted and skipped using the IHL. For ICMP errors (types 3, 11,
/// 12) the quoted IPv4 header and first 8 transport bytes are validated and described in
/// [`Parsed::embedded`]. Transport checksums are not verified: the rewrites update them
/// incrementally, so a corrupt packet stays detectably corrupt for its receiver.
///
/// Never panics and never allocates, whatever `frame` holds.
///
/// The common shape (untagged, an IPv4 header without options, a whole TCP segment or UDP
/// datagram) is read by a short path inlined into the caller ([`parse_plain`]); every other
/// frame, well-formed or not, by the general one, which gives the same result for the
/// common shape.
#[inline(always)]
pub fn parse(frame: &[u8]) -> Result<Parsed, Drop> {
    match parse_plain(frame) {
        Some(p) => Ok(p),
        None => parse_general(frame),
    }
}

/// The short path of [`parse`]; `None` means "call [`parse_general`]", not "refused".
///
/// The frames most traffic is made of: an untagged Ethernet frame holding an IPv4 header
/// without options (`0x45`), not a fragment (MF clear, offset 0), a TTL above 1, a
/// verifying header checksum and a whole TCP segment (data offset within the packet) or
/// UDP datagram (length within the packet). Their [`Parsed`] is the general path's, read
/// with constant offsets and no branch for what they cannot be; `None` for any other frame
/// (then the general path decides, also why it is refused).
#[inline(always)]
pub fn parse_plain(frame: &[u8]) -> Option<Parsed> {
    const L3: usize = ETH_HEADER_LEN;
    const L4: usize = L3 + IPV4_MIN_HEADER_LEN;
    let (head, rest) = frame.split_first_chunk::<L4>()?;
    // The EtherType and the version and header length, in one comparison.
    if u32::from_be_bytes([
        head[ETH_TYPE],
        head[ETH_TYPE + 1],
        head[L3 + IPV4_VER_IHL],
        0,
    ]) != (u32::from(ETHERTYPE_IPV4) << 16) | 0x4500
    {
        return None;
    }
    let h = head.last_chunk::<IPV4_MIN_HEADER_LEN>()?;
    let ip_len = rd16(h, IPV4_TOTAL_LEN);
    let l4 = rest.get(..usize::from(ip_len).checked_sub(IPV4_MIN_HEADER_LEN)?)?;
    let frag = rd16(h, IPV4_FRAG);
    let ttl = h[IPV4_TTL];
    if frag & (IPV4_FRAG_OFFSET_MASK | super::ipv4::IPV4_FLAG_MF) != 0
        || ttl <= 1
        || !super::checksum::verify_ipv4_header20(h)
    {
        return None;
    }
    let proto = h[IPV4_PROTO];
    let (kind, tcp_flags, ports) = match proto {
        PROTO_TCP => {
            let t = l4.first_chunk::<TCP_MIN_HEADER_LEN>()?;
            let doff = usize::from(t[TCP_DATA_OFFSET] >> 4) * 4;
            if doff < TCP_MIN_HEADER_LEN || doff > l4.len() {
                return None;
            }
            (L4Kind::Tcp, t[TCP_FLAGS], rd32(t, 0))
        }
        PROTO_UDP => {
            let u = l4.first_chunk::<UDP_HEADER_LEN>()?;
            let ulen = usize::from(rd16(u, UDP_LEN));
            if ulen < UDP_HEADER_LEN || ulen > l4.len() {
                return None;
            }
            (L4Kind::Udp, 0, rd32(u, 0))
        }
        _ => return None,
    };
    Some(Parsed {
        tuple: Tuple {
            src: rd32(h, IPV4_SRC),
            dst: rd32(h, IPV4_DST),
            sport: (ports >> 16) as u16,
            dport: ports as u16,
            proto,
        },
        kind,
        tcp_flags,
        ttl,
        first_fragment: false,
        ip_id: rd16(h, super::ipv4::IPV4_ID),
        l3: L3 as u16,
        l4: L4 as u16,
        ip_len,
        embedded: None,
    })
}

/// [`parse`] of any frame, step by step (out of line: the callers inline the short path).
#[inline(never)]
pub fn parse_general(frame: &[u8]) -> Result<Parsed, Drop> {
    let Some((eth, rest)) = frame.split_first_chunk::<ETH_HEADER_LEN>() else {
        return Err(Drop::TooShortEth);
    };
    match rd16(eth, ETH_TYPE) {
        ETHERTYPE_IPV4 => {}
        ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => return Err(Drop::VlanTagged),
        _ => return Err(Drop::NotIpv4),
    }
    let l3 = ETH_HEADER_LEN;
    let Some(h) = rest.first_chunk::<IPV4_MIN_HEADER_LEN>() else {
        return Err(Drop::TooShortIp);
    };
    if h[IPV4_VER_IHL] >> 4 != 4 {
        return Err(Drop::BadIpVersion);
    }
    let ihl = ((h[IPV4_VER_IHL] & 0x0f) as usize) * 4;
    if ihl < IPV4_MIN_HEADER_LEN {
        return Err(Drop::BadIhl);
    }
    let ip_len = rd16(h, IPV4_TOTAL_LEN);
    let total = ip_len as usize;
    if total < ihl {
        return Err(Drop::BadTotalLen);
    }
    // `total >= ihl`, so a successful `get` also guarantees the whole header is present.
    let Some(ip) = rest.get(..total) else {
        return Err(Drop::BadTotalLen);
    };
    let Some((hdr, l4)) = ip.split_at_checked(ihl) else {
        return Err(Drop::BadTotalLen);
    };
    let csum_ok = if ihl == IPV4_MIN_HEADER_LEN {
        super::checksum::verify_ipv4_header20(h)
    } else {
        super::checksum::verify(hdr)
    };
    if !csum_ok {
        return Err(Drop::BadIpChecksum);
    }
    let frag = rd16(h, IPV4_FRAG);
    if frag & IPV4_FRAG_OFFSET_MASK != 0 {
        // No transport header here: see `packet::frag`.
        return Err(Drop::Fragment);
    }
    let first_fragment = frag & super::ipv4::IPV4_FLAG_MF != 0;
    let proto = h[IPV4_PROTO];
    let src = rd32(h, IPV4_SRC);
    let dst = rd32(h, IPV4_DST);
    let l4_off = l3 + ihl;

    let mut tcp_flags = 0;
    let mut embedded = None;
    let (kind, sport, dport) = match proto {
        PROTO_TCP => {
            let Some(t) = l4.first_chunk::<TCP_MIN_HEADER_LEN>() else {
                return Err(Drop::TooShortL4);
            };
            let doff = ((t[TCP_DATA_OFFSET] >> 4) as usize) * 4;
            if doff < TCP_MIN_HEADER_LEN || doff > l4.len() {
                return Err(Drop::BadTcpDataOffset);
            }
            tcp_flags = t[TCP_FLAGS];
            (L4Kind::Tcp, rd16(t, 0), rd16(t, 2))
        }
        PROTO_UDP => {
            let Some(u) = l4.first_chunk::<UDP_HEADER_LEN>() else {
                return Err(Drop::TooShortL4);
            };
            let ulen = rd16(u, UDP_LEN) as usize;
            // The first fragment of a datagram holds only part of what the length covers.
            if ulen < UDP_HEADER_LEN || (ulen > l4.len() && !first_fragment) {
                return Err(Drop::BadUdpLen);
            }
            (L4Kind::Udp, rd16(u, 0), rd16(u, 2))
        }
        PROTO_ICMP => {
            let Some(c) = l4.first_chunk::<ICMP_HEADER_LEN>() else {
                return Err(Drop::TooShortL4);
            };
            match c[0] {
                t if is_query_request(t) => {
                    let id = rd16(c, ICMP_QUERY_ID);
                    (L4Kind::IcmpQueryRequest, id, id)
                }
                t if is_query_reply(t) => {
                    let id = rd16(c, ICMP_QUERY_ID);
                    (L4Kind::IcmpQueryReply, id, id)
                }
                t if is_error_type(t) => {
                    embedded = Some(parse_embedded(l4, l4_off, t, c[1])?);
                    (L4Kind::IcmpError, 0, 0)
                }
                _ => return Err(Drop::IcmpUnsupportedType),
            }
        }
        _ => return Err(Drop::UnsupportedProto),
    };
    // Last, so that only a packet that is otherwise well-formed is reported as expired (and
    // may earn its sender a Time Exceeded).
    let ttl = h[IPV4_TTL];
    if ttl <= 1 {
        return Err(Drop::TtlExpired);
    }

    Ok(Parsed {
        tuple: Tuple {
            src,
            dst,
            sport,
            dport,
            proto,
        },
        kind,
        tcp_flags,
        ttl,
        first_fragment,
        ip_id: rd16(h, super::ipv4::IPV4_ID),
        l3: l3 as u16,
        l4: l4_off as u16,
        ip_len,
        embedded,
    })
}

/// Validates the packet quoted by an ICMP error. `icmp` is the whole ICMP message (at least
/// 8 bytes), found at frame offset `icmp_off`.
#[inline]
fn parse_embedded(
    icmp: &[u8],
    icmp_off: usize,
    icmp_type: u8,
    icmp_code: u8,
) -> Result<Embedded, Drop> {
    let inner = icmp.get(ICMP_HEADER_LEN..).unwrap_or(&[]);
    let Some(h) = inner.first_chunk::<IPV4_MIN_HEADER_LEN>() else {
        return Err(Drop::IcmpTruncatedInner);
    };
    if h[IPV4_VER_IHL] >> 4 != 4 {
        return Err(Drop::IcmpBadInner);
    }
    let ihl = ((h[IPV4_VER_IHL] & 0x0f) as usize) * 4;
    if ihl < IPV4_MIN_HEADER_LEN {
        return Err(Drop::IcmpBadInner);
    }
    let Some(t) = inner.get(ihl..).and_then(|s| s.first_chunk::<8>()) else {
        return Err(Drop::IcmpTruncatedInner);
    };
    if rd16(h, IPV4_FRAG) & IPV4_FRAG_OFFSET_MASK != 0 {
        // A non-first fragment quotes no transport header.
        return Err(Drop::IcmpBadInner);
    }
    let proto = h[IPV4_PROTO];
    let (kind, sport, dport) = match proto {
        PROTO_TCP => (L4Kind::Tcp, rd16(t, 0), rd16(t, 2)),
        PROTO_UDP => (L4Kind::Udp, rd16(t, 0), rd16(t, 2)),
        PROTO_ICMP => {
            let id = rd16(t, ICMP_QUERY_ID);
            match t[0] {
                q if is_query_request(q) => (L4Kind::IcmpQueryRequest, id, id),
                q if is_query_reply(q) => (L4Kind::IcmpQueryReply, id, id),
                _ => return Err(Drop::IcmpBadInner),
            }
        }
        _ => return Err(Drop::IcmpBadInner),
    };
    let l3 = icmp_off + ICMP_HEADER_LEN;
    Ok(Embedded {
        icmp_type,
        icmp_code,
        kind,
        tuple: Tuple {
            src: rd32(h, IPV4_SRC),
            dst: rd32(h, IPV4_DST),
            sport,
            dport,
            proto,
        },
        l3: l3 as u16,
        l4: (l3 + ihl) as u16,
    })
}
