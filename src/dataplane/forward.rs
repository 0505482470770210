//! Forward mode: a plain two-port IPv4 router over AF_XDP.
//!
//! Every frame received on one port leaves through the other with its TTL
//! decremented, its IPv4 header checksum updated incrementally and its MAC
//! addresses set from the kernel's neighbour table. It is the baseline NAT mode
//! and the benchmarks are compared against.

use super::icmp_reply::TimeExceeded;
use super::nexthop::{Miss, NextHopView};
use super::worker::{Action, Handler, Port};

/// Drop reasons of the forwarder, indexed by [`Action::Drop`].
pub const DROP_REASONS: &[&str] = &[
    "malformed",
    "not_ipv4",
    "ttl_expired",
    "no_route",
    "neighbour_unresolved",
];
const MALFORMED: u16 = 0;
const NOT_IPV4: u16 = 1;
const TTL_EXPIRED: u16 = 2;
const NO_ROUTE: u16 = 3;
const UNRESOLVED: u16 = 4;

/// The forward-mode packet handler.
pub struct Forwarder {
    nh: NextHopView,
    ports: super::Ports,
    expired: TimeExceeded,
    now: u32,
}

impl Forwarder {
    /// A forwarder between the two ports (index 0 inside, 1 outside).
    pub fn new(nh: NextHopView, ports: super::Ports) -> Self {
        Forwarder {
            nh,
            ports,
            expired: TimeExceeded::default(),
            now: 0,
        }
    }
}

/// Resolves the next hop of `dst` out of `egress` and writes both MAC addresses.
#[inline]
pub fn set_next_hop(
    frame: &mut [u8],
    nh: &NextHopView,
    dst: u32,
    oif: u32,
    src_mac: [u8; 6],
) -> Result<(), Miss> {
    let dmac = nh.resolve(dst, oif)?;
    if let Some(h) = frame.get_mut(0..12) {
        h[0..6].copy_from_slice(&dmac);
        h[6..12].copy_from_slice(&src_mac);
    }
    Ok(())
}

/// Maps a next-hop miss to the forwarder's drop reason.
pub fn miss_reason(m: Miss) -> u16 {
    match m {
        Miss::NoRoute => NO_ROUTE,
        Miss::Unresolved(_) => UNRESOLVED,
    }
}

/// Decrements the TTL of the IPv4 header at offset 14 and patches its checksum (RFC 1624).
///
/// Forward mode is a plain router: it forwards every IPv4 packet, fragments and any
/// protocol included, so it does not go through [`crate::packet::parse`] (which refuses
/// what NAT cannot translate) and only touches the fixed IPv4 header.
#[inline]
fn decrement_ttl(frame: &mut [u8]) {
    let Some(ip) = frame.get_mut(14..34) else {
        return;
    };
    let old = u16::from_be_bytes([ip[8], ip[9]]);
    ip[8] = ip[8].wrapping_sub(1);
    let new = u16::from_be_bytes([ip[8], ip[9]]);
    let sum = u16::from_be_bytes([ip[10], ip[11]]);
    let sum = crate::packet::checksum::csum_replace2(sum, old, new);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
}

impl Handler for Forwarder {
    fn begin_batch(&mut self) {
        self.nh.refresh();
        self.now = crate::nat::coarse_now();
    }

    #[inline]
    fn handle(&mut self, frame: &mut [u8], ingress: Port) -> Action {
        let Some(hdr) = frame.get(12..34) else {
            return Action::Drop(MALFORMED);
        };
        if hdr[0..2] != [0x08, 0x00] {
            return Action::Drop(NOT_IPV4);
        }
        if hdr[2] >> 4 != 4 || hdr[2] & 0x0f < 5 {
            return Action::Drop(MALFORMED);
        }
        if hdr[10] <= 1 {
            let i = ingress as usize;
            if self
                .expired
                .build(frame, self.ports.mac[i], self.ports.addr[i], self.now)
            {
                return Action::Reply(ingress);
            }
            return Action::Drop(TTL_EXPIRED);
        }
        let dst = u32::from_be_bytes([hdr[18], hdr[19], hdr[20], hdr[21]]);
        let egress = ingress.other() as usize;
        if let Err(m) = set_next_hop(
            frame,
            &self.nh,
            dst,
            self.ports.ifindex[egress],
            self.ports.mac[egress],
        ) {
            return Action::Drop(miss_reason(m));
        }
        decrement_ttl(frame);
        Action::Transmit(ingress.other())
    }

    fn drop_reasons(&self) -> &'static [&'static str] {
        DROP_REASONS
    }

    fn reply(&self) -> &[u8] {
        self.expired.frame()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(h: &[u8]) -> u16 {
        let mut acc: u32 = h
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn ttl_decrement_keeps_header_checksum_valid() {
        for ttl in [2u8, 64, 128, 255] {
            let mut f = vec![0u8; 34];
            f[12] = 0x08;
            let ip = &mut f[14..34];
            ip.copy_from_slice(&[
                0x45, 0, 0, 20, 0x12, 0x34, 0x40, 0, ttl, 17, 0, 0, 198, 18, 0, 2, 198, 19, 0, 2,
            ]);
            let c = checksum(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            decrement_ttl(&mut f);
            assert_eq!(f[22], ttl - 1);
            assert_eq!(checksum(&f[14..34]), 0, "ttl {ttl}");
        }
    }
}
