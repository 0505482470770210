//! ICMPv4 message layout (RFC 792) and the embedded packet quoted by error messages.

use super::Tuple;

/// Length of the fixed ICMP header: type, code, checksum and 4 type-specific bytes.
pub const ICMP_HEADER_LEN: usize = 8;
/// Offset of the ICMP type.
pub const ICMP_TYPE: usize = 0;
/// Offset of the ICMP code.
pub const ICMP_CODE: usize = 1;
/// Offset of the ICMP checksum (over the whole ICMP message, no pseudo-header).
pub const ICMP_CHECKSUM: usize = 2;
/// Offset of the identifier of every query message (echo, timestamp, information, address
/// mask: RFC 792, RFC 950), which a NAPT translates like a port (RFC 5508 3.1).
pub const ICMP_QUERY_ID: usize = 4;
/// Offset of the sequence number of a query message.
pub const ICMP_ECHO_SEQ: usize = 6;
/// Offset of the next-hop MTU in a "fragmentation needed" message (RFC 1191).
pub const ICMP_NEXT_HOP_MTU: usize = 6;

/// ICMP type: echo reply.
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP type: destination unreachable.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP type: echo request.
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP type: time exceeded.
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP type: parameter problem.
pub const ICMP_PARAM_PROBLEM: u8 = 12;
/// ICMP type: timestamp request.
pub const ICMP_TIMESTAMP: u8 = 13;
/// ICMP type: timestamp reply.
pub const ICMP_TIMESTAMP_REPLY: u8 = 14;
/// ICMP type: information request (obsolete, RFC 6918).
pub const ICMP_INFO_REQUEST: u8 = 15;
/// ICMP type: information reply (obsolete).
pub const ICMP_INFO_REPLY: u8 = 16;
/// ICMP type: address mask request (RFC 950, obsolete).
pub const ICMP_MASK_REQUEST: u8 = 17;
/// ICMP type: address mask reply (obsolete).
pub const ICMP_MASK_REPLY: u8 = 18;

/// Destination unreachable code: port unreachable.
pub const ICMP_CODE_PORT_UNREACH: u8 = 3;
/// Destination unreachable code: fragmentation needed and DF set (path MTU discovery).
pub const ICMP_CODE_FRAG_NEEDED: u8 = 4;

/// Returns `true` for the ICMP error types whose embedded packet [`parse`](super::parse)
/// understands: destination unreachable, time exceeded and parameter problem.
#[inline]
pub const fn is_error_type(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAM_PROBLEM
    )
}

/// Returns `true` for the ICMP query requests: echo, timestamp, information and address
/// mask requests. All carry an identifier at [`ICMP_QUERY_ID`] that their reply copies.
#[inline]
pub const fn is_query_request(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_ECHO_REQUEST | ICMP_TIMESTAMP | ICMP_INFO_REQUEST | ICMP_MASK_REQUEST
    )
}

/// Returns `true` for the replies to the queries of [`is_query_request`].
#[inline]
pub const fn is_query_reply(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_ECHO_REPLY | ICMP_TIMESTAMP_REPLY | ICMP_INFO_REPLY | ICMP_MASK_REPLY
    )
}

/// The packet quoted by an ICMP error: its IPv4 header and at least the first 8 bytes of its
/// transport header, as [`parse`](super::parse) found them.
///
/// The quoted packet travelled in the *opposite* direction to the error: for a NATed
/// connection its tuple is the one the NAT wrote, so its [`Tuple::reversed`] is the key the
/// error belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Embedded {
    pub(super) icmp_type: u8,
    pub(super) icmp_code: u8,
    pub(super) kind: super::L4Kind,
    pub(super) tuple: Tuple,
    pub(super) l3: u16,
    pub(super) l4: u16,
}

impl Embedded {
    /// Type of the ICMP error message (3, 11 or 12).
    #[inline]
    pub const fn icmp_type(&self) -> u8 {
        self.icmp_type
    }

    /// Code of the ICMP error message (e.g. [`ICMP_CODE_FRAG_NEEDED`]).
    #[inline]
    pub const fn icmp_code(&self) -> u8 {
        self.icmp_code
    }

    /// Transport of the quoted packet: TCP, UDP, or an ICMP query or reply (never an
    /// error).
    #[inline]
    pub const fn kind(&self) -> super::L4Kind {
        self.kind
    }

    /// Tuple of the quoted packet (for a quoted query, both ports are its identifier).
    #[inline]
    pub const fn tuple(&self) -> Tuple {
        self.tuple
    }

    /// Frame offset of the quoted IPv4 header.
    #[inline]
    pub const fn l3(&self) -> usize {
        self.l3 as usize
    }

    /// Frame offset of the quoted transport header.
    #[inline]
    pub const fn l4(&self) -> usize {
        self.l4 as usize
    }
}
