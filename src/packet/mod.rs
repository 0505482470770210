//! Packet access for the fast path: zero-copy parsing of Ethernet/IPv4 frames into a flow
//! tuple, and in-place NAT rewrites with incremental checksum updates.
//!
//! This module owns the wire formats and nothing else: no I/O, no allocation, no NAT policy.
//! It works on the `&[u8]` / `&mut [u8]` of one frame (e.g. a UMEM frame) and never panics,
//! whatever the frame holds.
//!
//! The flow of one packet:
//!
//! 1. [`parse`] validates the frame and returns a [`Parsed`]: the [`Tuple`] (protocol,
//!    host-order addresses, ports; the identifier for ICMP queries), TCP flags, header offsets,
//!    and for an ICMP error the [`Embedded`] packet it quotes; or a [`Drop`] reason, whose
//!    [`Drop::is_not_for_us`] tells the frames to hand to the kernel.
//! 2. The NAT looks the tuple up and rewrites the frame with [`set_src`] / [`set_dst`] (and
//!    [`set_inner_src`] / [`set_inner_dst`] for ICMP errors): each updates the IPv4, TCP, UDP
//!    and ICMP checksums incrementally (RFC 1624), keeping a UDP checksum of 0 at 0.
//! 3. [`forward_hop`] decrements the TTL, [`set_macs`] writes the next hop's addresses.
//!
//! Layout constants live in [`ether`], [`ipv4`], [`l4`] and [`icmp`]; checksum arithmetic in
//! [`checksum`]; frame writers for tests and traffic generation in [`builder`].
//!
//! ```
//! use xnat::packet::{self, builder::{build_udp, FrameSpec}};
//!
//! let mut buf = [0u8; 128];
//! let spec = FrameSpec::new([2; 6], [4; 6], 0x0a00_0002, 0xc633_6407);
//! let n = build_udp(&mut buf, &spec, 40000, 53).unwrap();
//! let frame = &mut buf[..n];
//! let p = packet::parse(frame).unwrap();
//! assert_eq!(p.tuple().sport, 40000);
//! // Source NAT to 198.18.0.1:1024, then route.
//! packet::set_src(frame, &p, 0xc612_0001, 1024);
//! packet::forward_hop(frame, &p);
//! packet::set_macs(frame, [6; 6], [8; 6]);
//! assert_eq!(packet::parse(frame).unwrap().tuple().src, 0xc612_0001);
//! ```

pub mod builder;
pub mod checksum;
pub mod ether;
pub mod frag;
pub mod icmp;
pub mod ipv4;
pub mod l4;
pub mod offload;
mod parse;
mod rewrite;

#[cfg(test)]
mod tests;

pub use ether::set_macs;
pub use icmp::Embedded;
pub use ipv4::forward_hop;
pub use parse::{parse, parse_general, parse_plain, Drop, L4Kind, Parsed, Tuple};
pub use rewrite::{make_rst_probe, set_dst, set_inner_dst, set_inner_src, set_src};
