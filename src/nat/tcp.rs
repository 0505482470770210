//! TCP state as the engine tracks it, enough to pick the idle timeout: SYN seen,
//! established (a reply seen), closing (FIN or RST).

use crate::config::Mapping;
use crate::packet::l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::table::{ConnState, Dir, Hit, Tuple};

use super::Engine;

/// The state a new session starts in.
#[inline]
pub(super) fn state_for(proto: u8, flags: u8) -> ConnState {
    match proto {
        6 if flags & (TCP_FIN | TCP_RST) != 0 => ConnState::TcpClosing,
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
        let next = match hit.state {
            _ if flags & (TCP_FIN | TCP_RST) != 0 => ConnState::TcpClosing,
            ConnState::TcpSyn if hit.dir == Dir::Rev && flags & TCP_ACK != 0 => {
                ConnState::TcpEstablished
            }
            ConnState::TcpClosing if flags & (TCP_SYN | TCP_ACK) == TCP_SYN => ConnState::TcpSyn,
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
