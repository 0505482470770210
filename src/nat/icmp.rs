//! ICMP (RFC 5508): checksums verified (REQ-3), and errors about known sessions translated.
//! The quoted packet of an error travelled the other way, so its reversed tuple is the key;
//! the quoted packet is restored to what the receiving side knows and the outer header is
//! addressed to the original sender. An error from the inside (the host itself or a router
//! on the inside) leaves from the NAT address, so no private address reaches the outside.
//! An error never creates, refreshes or restores a session (a
//! [`Table::peek`](crate::table::Table::peek)).

use crate::packet::{self, Parsed};

use super::{Engine, NatDrop, Refused};

impl Engine {
    /// Translates an ICMP error in place, or refuses it.
    pub(super) fn translate_icmp_error(
        &mut self,
        frame: &mut [u8],
        p: &Parsed,
        from_inside: bool,
    ) -> Result<(), Refused> {
        let Some(e) = p.embedded() else {
            return Err(Refused::Packet(packet::Drop::IcmpBadInner));
        };
        let quoted = e.tuple();
        let Some(hit) = self.table.peek(&quoted.reversed(), self.now) else {
            return Err(Refused::Nat(NatDrop::IcmpNoSession));
        };
        // What the quoted packet looked like on this side of the gateway.
        let orig = hit.xlate.reversed();
        let outer = p.tuple();
        if outer.src == quoted.dst || from_inside {
            packet::set_src(frame, p, orig.dst, 0);
        }
        packet::set_dst(frame, p, orig.src, 0);
        if orig.src != quoted.src || orig.sport != quoted.sport {
            packet::set_inner_src(frame, p, orig.src, orig.sport);
        }
        if orig.dst != quoted.dst || orig.dport != quoted.dport {
            packet::set_inner_dst(frame, p, orig.dst, orig.dport);
        }
        Ok(())
    }
}

/// Whether the ICMP message of `p` (echo or error) has a valid checksum. The first fragment
/// of a larger message cannot be checked and passes.
#[inline]
pub(super) fn icmp_checksum_ok(frame: &[u8], p: &Parsed) -> bool {
    if p.is_first_fragment() {
        return true;
    }
    frame
        .get(p.l4()..p.end())
        .is_some_and(packet::checksum::verify)
}
