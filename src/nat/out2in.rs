//! Inbound sessions: what a packet from the outside with no session may create.
//!
//! - A port forward: the session to its backend (optionally source-NATed to the gateway's
//!   inside address).
//! - Otherwise the filtering behaviour decides (RFC 4787 REQ-8): address-and-port-dependent
//!   (the default) creates nothing; endpoint-independent lets anyone reach a live mapping;
//!   address-dependent lets any port of an address the inside endpoint has sent to reach
//!   it. Refused traffic creates no state and is counted (`no_mapping`).

use crate::config::Filtering;
use crate::table::{Dir, Hit, Tuple};

use super::tcp::state_for;
use super::{Engine, NatDrop, Refused};
use crate::packet::Parsed;

impl Engine {
    /// An inbound session for `t` (from the outside), if a rule or the filter allows it.
    pub(super) fn create_inbound(&mut self, t: &Tuple, p: &Parsed) -> Result<Hit, Refused> {
        if t.proto == 1 {
            return Err(Refused::Nat(NatDrop::NoMapping));
        }
        let state = state_for(t.proto, p.tcp_flags());
        if let Some(rule) = self.rules.dnat.get(&(t.proto, t.dst, t.dport)).copied() {
            return match rule.snat_src {
                None => {
                    let x = Tuple {
                        dst: rule.int_addr,
                        dport: rule.int_port,
                        ..*t
                    };
                    self.insert(t, &x, state)
                }
                Some(src) => {
                    let (lo, hi) = self.rules.dnat_snat_ports;
                    let (dst, dport, proto) = (rule.int_addr, rule.int_port, t.proto);
                    self.allocate(t, None, t.sport, lo, hi, state, |port| Tuple {
                        src,
                        sport: port,
                        dst,
                        dport,
                        proto,
                    })
                }
            };
        }
        let Some((inside, iport)) = self.filter_allows(t.src, t.dst, t.dport, t.proto) else {
            return Err(Refused::Nat(NatDrop::NoMapping));
        };
        // The session as if the inside endpoint had opened it.
        let org = Tuple {
            src: inside,
            sport: iport,
            dst: t.src,
            dport: t.sport,
            proto: t.proto,
        };
        let x = Tuple {
            src: t.dst,
            sport: t.dport,
            dst: t.src,
            dport: t.sport,
            proto: t.proto,
        };
        self.insert(&org, &x, state)?;
        // The packet travels the reply direction: its own half.
        self.table
            .lookup(t, self.now)
            .ok_or(Refused::Nat(NatDrop::TableFull))
    }

    /// Whether the filtering behaviour lets a packet from `src` reach NAT endpoint `nat:nport`
    /// without a session; the inside endpoint behind it if so. Never refreshes anything.
    pub(super) fn filter_allows(
        &self,
        src: u32,
        nat: u32,
        nport: u16,
        proto: u8,
    ) -> Option<(u32, u16)> {
        let wildcard = |from: u32| Tuple {
            src: from,
            sport: 0,
            dst: nat,
            dport: nport,
            proto,
        };
        let inside_of = |h: Hit| (h.dir == Dir::Rev).then_some((h.xlate.dst, h.xlate.dport));
        match self.rules.filtering {
            Filtering::AddressAndPortDependent => None,
            Filtering::EndpointIndependent => {
                self.table.peek(&wildcard(0), self.now).and_then(inside_of)
            }
            Filtering::AddressDependent => self
                .table
                .peek(&wildcard(src), self.now)
                .and_then(inside_of),
        }
    }
}
