//! The NAT events xnat logs (RFC 8158 §4), as small `Copy` values a worker can push into
//! its ring without allocating.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::table::Tuple;

/// `natEvent` values (IANA "NAT Event Type", RFC 8158 §4.3) for the events xnat emits.
pub mod nat_event {
    /// NAT addresses exhausted (no free address in a pool).
    pub const ADDRESSES_EXHAUSTED: u8 = 3;
    /// NAT44 session create.
    pub const NAT44_SESSION_CREATE: u8 = 4;
    /// NAT44 session delete.
    pub const NAT44_SESSION_DELETE: u8 = 5;
    /// NAT ports exhausted (no free port on a NAT address).
    pub const PORTS_EXHAUSTED: u8 = 12;
    /// Quota exceeded (here always "maximum entries per user").
    pub const QUOTA_EXCEEDED: u8 = 13;
    /// Port block allocation.
    pub const PORT_BLOCK_ALLOCATION: u8 = 16;
    /// Port block de-allocation.
    pub const PORT_BLOCK_DEALLOCATION: u8 = 17;
}

/// `natQuotaExceededEvent` value "Maximum entries per user" (RFC 8158 §4.4).
pub const QUOTA_MAX_ENTRIES_PER_USER: u32 = 3;

/// One translation (both endpoints of the inside host, its NAT endpoint, and the
/// destination, which is only exported when configured). Addresses in host order, as in
/// [`Tuple`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// IP protocol number (6, 17, 1).
    pub proto: u8,
    /// Inside (pre-NAT) source address.
    pub inside: u32,
    /// Inside source port (or ICMP identifier).
    pub inside_port: u16,
    /// NAT (post-NAT) source address.
    pub nat: u32,
    /// NAT source port (or ICMP identifier).
    pub nat_port: u16,
    /// Destination address.
    pub dst: u32,
    /// Destination port.
    pub dst_port: u16,
}

impl Session {
    /// The session of an outbound translation: `orig` is the tuple the inside host sent,
    /// `xlated` the same packet after source NAT.
    pub fn from_tuples(orig: &Tuple, xlated: &Tuple) -> Session {
        Session {
            proto: orig.proto,
            inside: orig.src,
            inside_port: orig.sport,
            nat: xlated.src,
            nat_port: xlated.sport,
            dst: orig.dst,
            dst_port: orig.dport,
        }
    }
}

/// A block of NAT ports given to (or taken back from) one inside address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortBlock {
    /// Inside address (the subscriber).
    pub inside: u32,
    /// NAT address the block is on.
    pub nat: u32,
    /// First port of the block (`portRangeStart`).
    pub start: u16,
    /// Last port of the block (`portRangeEnd`).
    pub end: u16,
    /// Step between ports (`portRangeStepSize`, 1 for a contiguous block).
    pub step: u16,
    /// Number of ports (`portRangeNumPorts`).
    pub num_ports: u16,
}

impl PortBlock {
    /// A contiguous block `start..=end`; `None` if `end < start` or the block has more
    /// than 65535 ports (which would not fit `portRangeNumPorts`).
    pub fn contiguous(inside: u32, nat: u32, start: u16, end: u16) -> Option<PortBlock> {
        let n = end.checked_sub(start)?.checked_add(1)?;
        Some(PortBlock {
            inside,
            nat,
            start,
            end,
            step: 1,
            num_ports: n,
        })
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A NAT44 session was created.
    SessionCreate(Session),
    /// A NAT44 session was removed (expired, closed, flushed or evicted).
    SessionDelete(Session),
    /// No address of pool `pool_id` could be used.
    AddressesExhausted {
        /// `natPoolId`: the pool's index in the configuration.
        pool_id: u32,
    },
    /// No free port (or block) left on a NAT address.
    PortsExhausted {
        /// The NAT address whose ports ran out.
        nat: u32,
    },
    /// An inside address hit its per-user limit (sessions or port blocks).
    QuotaExceeded {
        /// The inside address.
        inside: u32,
        /// The limit it hit (`maxEntriesPerUser`).
        limit: u32,
    },
    /// A port block was allocated.
    PortBlockAlloc(PortBlock),
    /// A port block was released.
    PortBlockDealloc(PortBlock),
}

/// Number of event kinds (and of IPFIX templates).
pub const KINDS: usize = 7;

impl EventKind {
    /// Index of the kind, `0..KINDS` (also selects the template).
    pub fn index(&self) -> usize {
        match self {
            EventKind::SessionCreate(_) => 0,
            EventKind::SessionDelete(_) => 1,
            EventKind::AddressesExhausted { .. } => 2,
            EventKind::PortsExhausted { .. } => 3,
            EventKind::QuotaExceeded { .. } => 4,
            EventKind::PortBlockAlloc(_) => 5,
            EventKind::PortBlockDealloc(_) => 6,
        }
    }

    /// The RFC 8158 `natEvent` value.
    pub fn nat_event(&self) -> u8 {
        match self {
            EventKind::SessionCreate(_) => nat_event::NAT44_SESSION_CREATE,
            EventKind::SessionDelete(_) => nat_event::NAT44_SESSION_DELETE,
            EventKind::AddressesExhausted { .. } => nat_event::ADDRESSES_EXHAUSTED,
            EventKind::PortsExhausted { .. } => nat_event::PORTS_EXHAUSTED,
            EventKind::QuotaExceeded { .. } => nat_event::QUOTA_EXCEEDED,
            EventKind::PortBlockAlloc(_) => nat_event::PORT_BLOCK_ALLOCATION,
            EventKind::PortBlockDealloc(_) => nat_event::PORT_BLOCK_DEALLOCATION,
        }
    }

    /// Short name used in syslog lines (MSGID).
    pub fn short_name(&self) -> &'static str {
        match self {
            EventKind::SessionCreate(_) => "SESSION_CREATE",
            EventKind::SessionDelete(_) => "SESSION_DELETE",
            EventKind::AddressesExhausted { .. } => "ADDRESSES_EXHAUSTED",
            EventKind::PortsExhausted { .. } => "PORTS_EXHAUSTED",
            EventKind::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            EventKind::PortBlockAlloc(_) => "PORT_BLOCK_ALLOC",
            EventKind::PortBlockDealloc(_) => "PORT_BLOCK_RELEASE",
        }
    }
}

/// One NAT event with the time it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatEvent {
    /// Milliseconds since the Unix epoch (`observationTimeMilliseconds`); 0 lets the
    /// logger thread stamp it when it takes the event from the ring (a few milliseconds
    /// late at most while the logger keeps up), which spares the worker a clock read.
    pub time_ms: u64,
    /// What happened.
    pub kind: EventKind,
}

impl NatEvent {
    /// An event stamped by the logger thread (see [`NatEvent::time_ms`]).
    pub fn new(kind: EventKind) -> NatEvent {
        NatEvent { time_ms: 0, kind }
    }

    /// An event with an explicit time.
    pub fn at(time_ms: u64, kind: EventKind) -> NatEvent {
        NatEvent { time_ms, kind }
    }
}

/// Wall-clock time in milliseconds since the Unix epoch (0 if the clock is before 1970,
/// saturated if beyond `u64`).
pub fn now_ms() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        Err(_) => 0,
    }
}

impl fmt::Display for EventKind {
    /// The minimal `key=value` text of a syslog line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = Ipv4Addr::from;
        write!(f, "natEvent={}", self.nat_event())?;
        match self {
            EventKind::SessionCreate(s) | EventKind::SessionDelete(s) => write!(
                f,
                " proto={} src={}:{} nat={}:{}",
                s.proto,
                a(s.inside),
                s.inside_port,
                a(s.nat),
                s.nat_port
            ),
            EventKind::AddressesExhausted { pool_id } => write!(f, " pool={pool_id}"),
            EventKind::PortsExhausted { nat } => write!(f, " nat={}", a(*nat)),
            EventKind::QuotaExceeded { inside, limit } => {
                write!(f, " src={} limit={limit}", a(*inside))
            }
            EventKind::PortBlockAlloc(b) | EventKind::PortBlockDealloc(b) => write!(
                f,
                " src={} nat={} ports={}-{} step={} n={}",
                a(b.inside),
                a(b.nat),
                b.start,
                b.end,
                b.step,
                b.num_ports
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stay_small_for_the_rings() {
        // Each ring slot holds one event (plus the queue's own stamp word).
        assert!(
            std::mem::size_of::<NatEvent>() <= 32,
            "{}",
            std::mem::size_of::<NatEvent>()
        );
    }

    #[test]
    fn blocks_and_sessions_from_their_parts() {
        let b = PortBlock::contiguous(1, 2, 1024, 1535).unwrap();
        assert_eq!((b.step, b.num_ports), (1, 512));
        assert!(PortBlock::contiguous(1, 2, 10, 9).is_none());
        assert!(
            PortBlock::contiguous(1, 2, 0, 65535).is_none(),
            "65536 ports do not fit"
        );
        let orig = Tuple::new(0xC612_0002, 40000, 0xC613_0002, 80, 6);
        let xl = Tuple::new(0xC613_0001, 1100, 0xC613_0002, 80, 6);
        let s = Session::from_tuples(&orig, &xl);
        assert_eq!(
            (
                s.inside,
                s.inside_port,
                s.nat,
                s.nat_port,
                s.dst,
                s.dst_port,
                s.proto
            ),
            (0xC612_0002, 40000, 0xC613_0001, 1100, 0xC613_0002, 80, 6)
        );
    }
}
