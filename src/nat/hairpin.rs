//! Hairpinning (RFC 4787 REQ-9, RFC 5382 REQ-8, RFC 5508 REQ-7): an inside host sending to
//! a NAT address:port reaches the inside endpoint behind it, and sees the sender's own
//! external address:port as the source, without the packet leaving on the outside link.
//!
//! Behind a NAT endpoint there is a port forward's backend, or (when the filtering
//! behaviour lets the sender through, as it would from the outside) a mapped inside
//! endpoint. The session is an ordinary pair, both of whose halves are hit from the inside:
//!
//! ```text
//! ORG (B:q -> N:P)   <->   REV (A:p -> N:Q)      N:Q = B's own mapping
//! ```
//!
//! The handler sends the rewritten packet wherever the route to its new destination
//! points: back out of the inside interface.

use crate::config::Mapping;
use crate::table::{Hit, Tuple};

use super::tcp::state_for;
use super::{Engine, NatDrop, Refused};
use crate::packet::Parsed;

impl Engine {
    /// A hairpin session for `t` (from the inside, to a NAT address).
    pub(super) fn hairpin(&mut self, t: &Tuple, p: &Parsed) -> Result<Hit, Refused> {
        let state = state_for(t.proto, p.tcp_flags());
        // The sender's external endpoint, as the target will see it.
        let (src, sport) = match self.rules.mapping {
            Mapping::EndpointIndependent => self.mapping_for(t, state)?,
            Mapping::EndpointDependent => {
                let Some((addr, _, _)) = self.rules.pool_for(t.src) else {
                    return Err(Refused::Nat(NatDrop::NoSnatRule));
                };
                (addr, 0)
            }
        };
        // Who is behind the destination.
        let target = match self.rules.dnat.get(&(t.proto, t.dst, t.dport)).copied() {
            Some(rule) => Some((rule.int_addr, rule.int_port)),
            None if t.proto == 1 => None,
            None => self.filter_allows(src, t.dst, t.dport, t.proto),
        };
        let Some((dst, dport)) = target else {
            return Err(Refused::Nat(NatDrop::NoMapping));
        };
        if (dst, dport) == (t.src, t.sport) {
            // Its own mapping: nothing to translate to.
            return Err(Refused::Nat(NatDrop::NoMapping));
        }
        match self.rules.mapping {
            Mapping::EndpointIndependent => self.session_to(t, None, src, sport, dst, dport, state),
            Mapping::EndpointDependent => self.allocate_per_destination(t, dst, dport, state),
        }
    }
}
