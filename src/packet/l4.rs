//! TCP (RFC 9293) and UDP (RFC 768) header layout.

/// Length of a TCP header without options.
pub const TCP_MIN_HEADER_LEN: usize = 20;
/// Offset of the TCP source port.
pub const TCP_SPORT: usize = 0;
/// Offset of the TCP destination port.
pub const TCP_DPORT: usize = 2;
/// Offset of the TCP sequence number.
pub const TCP_SEQ_NUM: usize = 4;
/// Offset of the TCP acknowledgment number.
pub const TCP_ACK_NUM: usize = 8;
/// Offset of the TCP data offset (high nibble, in 32-bit words).
pub const TCP_DATA_OFFSET: usize = 12;
/// Offset of the TCP flags byte.
pub const TCP_FLAGS: usize = 13;
/// Offset of the TCP window.
pub const TCP_WINDOW: usize = 14;
/// Offset of the TCP checksum.
pub const TCP_CHECKSUM: usize = 16;

/// TCP flag FIN: no more data from the sender.
pub const TCP_FIN: u8 = 0x01;
/// TCP flag SYN: synchronise sequence numbers.
pub const TCP_SYN: u8 = 0x02;
/// TCP flag RST: reset the connection.
pub const TCP_RST: u8 = 0x04;
/// TCP flag PSH: push function.
pub const TCP_PSH: u8 = 0x08;
/// TCP flag ACK: the acknowledgment field is significant.
pub const TCP_ACK: u8 = 0x10;
/// TCP flag URG: the urgent pointer is significant.
pub const TCP_URG: u8 = 0x20;
/// TCP flag ECE: ECN echo.
pub const TCP_ECE: u8 = 0x40;
/// TCP flag CWR: congestion window reduced.
pub const TCP_CWR: u8 = 0x80;

/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Offset of the UDP source port.
pub const UDP_SPORT: usize = 0;
/// Offset of the UDP destination port.
pub const UDP_DPORT: usize = 2;
/// Offset of the UDP length (header + payload).
pub const UDP_LEN: usize = 4;
/// Offset of the UDP checksum (0 means "no checksum").
pub const UDP_CHECKSUM: usize = 6;
