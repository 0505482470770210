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
//! a plausible RST from a spoofed one; the receiving endpoint can, and the NAT asks it:
//!
//! - An endpoint that refuses an RST whose sequence number is in its window but not the
//!   expected one answers with a challenge ACK (RFC 5961 3.2, Linux by default).
//! - An RST entirely outside the window is dropped without a word (RFC 793). So when an
//!   RST resets a live connection (established or half-closed), the gateway sends its
//!   receiver, 1 to 2 s later, a probe: the translated RST turned into an ACK half the
//!   sequence space away, outside any window ([`crate::packet::make_rst_probe`]). A live
//!   endpoint answers it with an ACK (RFC 793 3.9); the delay puts it past Linux's rate
//!   limit on such answers (`net.ipv4.tcp_invalid_ratelimit`, 500 ms), which a challenge
//!   ACK just sent would otherwise trip.
//!
//! Either ACK crosses the NAT from the receiver's side and puts the session back to
//! established. Only the receiver's traffic counts: a spoofer can follow its RST with
//! anything from the sender's side, the session stays reset. An endpoint that took the RST
//! (sequence number exactly the expected one) has no connection left: it answers the probe
//! with an RST, the session stays reset and goes after the hold. Stray segments the
//! receiver had in flight when a real RST arrived restore the session too, but the closed
//! end answers them with RSTs, which reset it again.
//!
//! Limits: at most [`crate::router::hold::TIMED_SLOTS`] probes wait per worker (more RSTs
//! within 2 s get none); a transitory timeout shorter than the probe's delay (only below
//! the RFC minimum, with `allow_below_rfc`) expires the session first; an endpoint that
//! answers neither the probe nor a challenge ACK keeps the RFC 7857 behaviour (the
//! session goes after the hold unless it sends something).

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
    pub(super) fn track_tcp(&mut self, t: &Tuple, hit: &Hit, flags: u8) {
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
            // A live connection reset: ask its receiver whether it took the RST.
            self.rst_probe = matches!(next, TcpResetOrg | TcpResetRev)
                && matches!(hit.state, TcpEstablished | TcpFinOrg | TcpFinRev);
            self.table.set_state_hit(hit, next);
            if next == ConnState::TcpEstablished
                && self.rules.mapping == Mapping::EndpointIndependent
            {
                // The mapping lives as long as its longest-lived session.
                self.promote_mapping(t, hit, next);
            }
        }
    }

    /// Whether the segment just translated was an RST that moved a live connection
    /// (established or half-closed) to reset: the caller then sends the RST's receiver,
    /// a moment later, the probe [`crate::packet::make_rst_probe`] makes of the translated
    /// RST. Cleared by the next translation.
    #[inline]
    pub fn take_rst_probe(&mut self) -> bool {
        std::mem::take(&mut self.rst_probe)
    }
}
