//! TCP state as the engine tracks it, to pick the idle timeout (RFC 7857 section 2, after
//! the state machine of RFC 6146 3.5.2.2):
//!
//! - SYN seen → established once the reply direction acknowledges (7440 s);
//! - a FIN from one end → half-closed: still the established timeout, the other end may go
//!   on sending (RFC 7857 2.1); the FIN of the other end → closing (240 s, no way back);
//! - an RST → reset: 240 s (RFC 7857 2.2), and back to established if anything but an RST
//!   follows, so a stray or spoofed RST cannot end a connection that goes on;
//! - a SYN without ACK on a closing or reset session starts it over.
//!
//! (Sequence numbers are not tracked: an RST is not checked against the window, so a
//! spoofed one shortens an *idle* connection's life to 240 s; traffic within that time
//! restores it.)

use crate::config::Mapping;
use crate::packet::l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::table::{ConnState, Dir, Hit, Tuple};

use super::Engine;

/// The state a new session starts in.
#[inline]
pub(super) fn state_for(proto: u8, flags: u8) -> ConnState {
    match proto {
        6 if flags & TCP_RST != 0 => ConnState::TcpReset,
        6 if flags & TCP_FIN != 0 => ConnState::TcpClosing,
        6 => ConnState::TcpSyn,
        17 => ConnState::Udp,
        1 => ConnState::Icmp,
        _ => ConnState::Other,
    }
}

impl Engine {
    /// Moves a TCP session along with the flags of one of its segments (`t` is the
    /// segment's tuple before translation, `hit` its table hit).
    #[inline]
    pub(super) fn track_tcp(&self, t: &Tuple, hit: &Hit, flags: u8) {
        let (fin, rst) = (flags & TCP_FIN != 0, flags & TCP_RST != 0);
        let syn_only = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        let from_org = hit.dir == Dir::Org;
        use ConnState::*;
        let next = match hit.state {
            _ if rst => TcpReset,
            TcpSyn if fin => TcpClosing,
            TcpSyn if !from_org && flags & TCP_ACK != 0 => TcpEstablished,
            TcpEstablished if fin => {
                if from_org {
                    TcpFinOrg
                } else {
                    TcpFinRev
                }
            }
            TcpFinOrg if fin && !from_org => TcpClosing,
            TcpFinRev if fin && from_org => TcpClosing,
            TcpClosing | TcpReset if syn_only => TcpSyn,
            TcpReset => TcpEstablished,
            s => s,
        };
        if next != hit.state {
            self.table.set_state_hit(hit, next);
            if next == ConnState::TcpEstablished
                && self.rules.mapping == Mapping::EndpointIndependent
            {
                // The mapping lives as long as its longest-lived session.
                self.promote_mapping(t, hit, next);
            }
        }
    }
}
