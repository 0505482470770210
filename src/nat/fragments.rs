//! Shallow virtual reassembly of IPv4 fragments (RFC 4787 REQ-14), as VPP's NAT44-ED does.
//!
//! The first fragment of a datagram carries the ports: it is translated like any packet,
//! and what the translation did to its IPv4 header (new source and destination, egress
//! port) is remembered per (source, destination, protocol, identification) of
//! the datagram *as it arrived*. The fragments that follow carry no ports: they get the same
//! addresses and go out of the same port (to the same next hop), one by one, never reassembled (the
//! transport checksum, in the first fragment, was updated there for the whole datagram).
//! Fragments that arrive before their first are held in the worker's bounded [`Hold`] pool
//! and sent when it arrives, or dropped and counted when the pool is full or they wait too
//! long.
//!
//! The cache is per worker (fragments of one datagram share their addresses, so RSS sends
//! them to one queue), direct-mapped and fixed in size: a new datagram may take the entry
//! of an older one, whose later fragments are then held and expire.
//!
//! [`Hold`]: crate::router::hold::Hold

use crate::dataplane::Port;
use crate::packet::frag::{self, FragKey};

/// Entries of a worker's cache.
pub const ENTRIES: usize = 1024;
/// Seconds an entry lives after the last fragment that used it.
pub const ENTRY_SECS: u32 = 5;

/// What the first fragment's translation did, for the fragments that follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragXlate {
    /// Source address after translation.
    pub src: u32,
    /// Destination address after translation.
    pub dst: u32,
    /// Port the datagram leaves through.
    pub egress: Port,
    /// Its next hop there.
    pub hop: u32,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: FragKey,
    x: FragXlate,
    expires: u32,
}

/// A worker's fragment translation cache.
pub struct FragCache {
    entries: Box<[Option<Entry>]>,
}

impl Default for FragCache {
    fn default() -> Self {
        FragCache {
            entries: vec![None; ENTRIES].into_boxed_slice(),
        }
    }
}

#[inline]
fn slot(k: &FragKey) -> usize {
    let h = (u64::from(k.src) << 32 | u64::from(k.dst))
        ^ (u64::from(k.id) << 8 | u64::from(k.proto)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h.wrapping_mul(0xFF51_AFD7_ED55_8CCD) >> 54) as usize & (ENTRIES - 1)
}

impl FragCache {
    /// Remembers the translation of datagram `key`.
    pub fn record(&mut self, key: FragKey, x: FragXlate, now: u32) {
        self.entries[slot(&key)] = Some(Entry {
            key,
            x,
            expires: now.wrapping_add(ENTRY_SECS),
        });
    }

    /// The translation of datagram `key`, if its first fragment was seen lately; extends
    /// the entry's life.
    pub fn lookup(&mut self, key: &FragKey, now: u32) -> Option<FragXlate> {
        let e = self.entries[slot(key)].as_mut()?;
        if e.key != *key || (e.expires.wrapping_sub(now) as i32) < 0 {
            return None;
        }
        e.expires = now.wrapping_add(ENTRY_SECS);
        Some(e.x)
    }
}

/// Applies `x` to a non-first fragment in `frame`: addresses and TTL. `false` if its
/// TTL does not allow forwarding (it is then to be dropped; no ICMP error is sent about a
/// non-first fragment, RFC 1812 4.3.2.7).
pub fn apply(frame: &mut [u8], x: &FragXlate) -> bool {
    match frame.get(14 + crate::packet::ipv4::IPV4_TTL) {
        Some(&ttl) if ttl > 1 => {}
        _ => return false,
    }
    frag::set_addrs(frame, x.src, x.dst);
    crate::packet::ipv4::decrement_ttl(frame);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u16) -> FragKey {
        FragKey {
            src: 0xC612_0002,
            dst: 0xC613_0002,
            proto: 17,
            id,
        }
    }

    const X: FragXlate = FragXlate {
        src: 0xC613_0001,
        dst: 0xC613_0002,
        egress: Port::Outside,
        hop: 0xC613_0002,
    };

    #[test]
    fn remembers_until_idle_for_the_entry_lifetime() {
        let mut c = FragCache::default();
        assert_eq!(c.lookup(&key(1), 100), None);
        c.record(key(1), X, 100);
        assert_eq!(c.lookup(&key(1), 100), Some(X));
        assert_eq!(c.lookup(&key(2), 100), None, "another datagram");
        assert_eq!(c.lookup(&key(1), 100 + ENTRY_SECS), Some(X), "refreshed");
        assert_eq!(c.lookup(&key(1), 101 + 2 * ENTRY_SECS), None, "expired");
    }

    #[test]
    fn a_full_cache_stays_bounded_and_keeps_recent_datagrams() {
        let mut c = FragCache::default();
        for id in 0..=u16::MAX {
            c.record(key(id), X, 5);
        }
        let live = (0..=u16::MAX)
            .filter(|&id| c.lookup(&key(id), 5).is_some())
            .count();
        assert!(live <= ENTRIES, "{live}");
        assert!(live > ENTRIES / 2, "{live}");
        assert_eq!(c.lookup(&key(u16::MAX), 5), Some(X), "the newest is there");
    }

    #[test]
    fn apply_rewrites_and_refuses_expiring_ttl() {
        use crate::packet::builder::{build_udp, FrameSpec};
        let mut b = [0u8; 100];
        let n = build_udp(&mut b, &FrameSpec::new([1; 6], [2; 6], 1, 2), 1, 2).unwrap();
        let f = &mut b[..n];
        assert!(apply(f, &X));
        assert_eq!(&f[26..30], &0xC613_0001u32.to_be_bytes());
        assert_eq!(f[22], 63);
        assert!(crate::packet::checksum::verify(&f[14..34]));
        f[22] = 1;
        assert!(!apply(f, &X));
        assert!(!apply(&mut [0u8; 10], &X));
    }
}
