//! TCP state as the engine tracks it, to pick the idle timeout (RFC 7857 section 2, after
//! the state machine of RFC 6146 3.5.2.2):
//!
//! - SYN seen → established once the reply direction acknowledges (7440 s);
//! - a FIN from one end → half-closed: still the established timeout, the other end may go
//!   on sending (RFC 7857 2.1); the FIN of the other end → closing (240 s, no way back);
//! - an RST → reset, remembering which end sent it: 240 s (RFC 7857 2.2), and back to
//!   established if the *receiver* of the RST then sends an ACK segment (not an RST);
//! - a SYN without ACK on a closing session, or from the initiator on a reset one, starts
//!   it over.
//!
//! Sequence numbers are not tracked (a slot has no room for them), so the NAT cannot tell
//! a plausible RST from a spoofed one; the receiving endpoint can. An endpoint that accepts
//! an RST (sequence number exactly the next expected one) closes and sends nothing more
//! but RSTs, so the session stays reset and goes after the hold. One that refuses an RST
//! whose sequence number is in its window but not the expected one answers with a
//! challenge ACK (RFC 5961 3.2, Linux by default); that ACK crosses the NAT from the
//! receiver's side and puts the session back to established. Only the receiver's traffic
//! counts: a spoofer can follow its RST with anything from the sender's side, the session
//! stays reset. Stray segments the receiver had in flight when a real RST arrived restore
//! the session too, but the closed end answers them with RSTs, which reset it again.
//!
//! What this does not cover: an endpoint silently drops an RST entirely outside its window
//! (RFC 793, RFC 5961 3.2 — no challenge ACK), so such a spoofed RST still shortens an
//! *idle* connection's life to the transitory timeout; and Linux sends at most one
//! challenge ACK per connection every `net.ipv4.tcp_invalid_ratelimit` (500 ms), so a
//! second RST within that time is not answered. Any traffic of the receiver within the
//! hold restores the connection.

use crate::config::Mapping;
use crate::packet::l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::table::{ConnState, Dir, Hit, Tuple};

use super::Engine;

/// The state a new session starts in.
#[inline]
pub(super) fn state_for(proto: u8, flags: u8) -> ConnState {
    match proto {
        6 if flags & TCP_RST != 0 => ConnState::TcpResetOrg,
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
        let ack = flags & TCP_ACK != 0;
        let from_org = hit.dir == Dir::Org;
        use ConnState::*;
        let next = match hit.state {
            _ if rst => {
                if from_org {
                    TcpResetOrg
                } else {
                    TcpResetRev
                }
            }
            TcpSyn if fin => TcpClosing,
            TcpSyn if !from_org && ack => TcpEstablished,
            TcpEstablished if fin => {
                if from_org {
                    TcpFinOrg
                } else {
                    TcpFinRev
                }
            }
            TcpFinOrg if fin && !from_org => TcpClosing,
            TcpFinRev if fin && from_org => TcpClosing,
            TcpClosing if syn_only => TcpSyn,
            // A new connection on the same ports comes from the initiator.
            TcpResetOrg | TcpResetRev if syn_only && from_org => TcpSyn,
            // The receiver of the RST goes on (a challenge ACK, or data): it refused it.
            TcpResetOrg if !from_org && ack => TcpEstablished,
            TcpResetRev if from_org && ack => TcpEstablished,
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
