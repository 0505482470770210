//! Deterministic NAT (RFC 7422): every inside address of a configured prefix owns a fixed
//! NAT address and a fixed contiguous port range, computed from the configuration alone,
//! so the owner of a NAT address:port is known without any translation log.
//!
//! With `N` inside addresses (every address of the prefix, network and broadcast
//! addresses included) and `A` NAT slots (each pool address with its port range, sorted
//! by address then first port), each slot serves `per_addr = ceil(N / A)` subscribers and
//! every subscriber gets `ports_each = floor(L / per_addr)` ports, `L` being the length of
//! the smallest slot range. Inside address at offset `i` of the prefix gets slot
//! `i / per_addr` and ports `lo + (i % per_addr) * ports_each` onwards. Ports beyond the
//! last subscriber's range of a slot are never handed out.

use std::fmt;
use std::net::Ipv4Addr;

use crate::config::Pool;

/// The fewest ports a subscriber may get: fewer are refused at configuration time.
pub const MIN_PORTS: u32 = 64;

/// An IPv4 prefix `ADDR/LEN` without host bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Prefix {
    /// The first address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Prefix {
    /// Parses `ADDR/LEN`; the error says what is wrong (the caller names key and value).
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let (a, l) = s
            .trim()
            .split_once('/')
            .ok_or("expected an IPv4 prefix ADDR/LEN such as 198.18.0.0/24")?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("'{a}' is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|&n| n <= 32)
            .ok_or_else(|| format!("'{l}' is not a prefix length 0..32"))?;
        let p = Prefix { addr, len };
        if u32::from(addr) != p.base() {
            return Err(format!(
                "host bits are set (the prefix starts at {}/{len})",
                Ipv4Addr::from(p.base())
            ));
        }
        Ok(p)
    }

    /// Network mask as a number.
    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0)
    }

    /// The first address as a number.
    pub fn base(&self) -> u32 {
        u32::from(self.addr) & self.mask()
    }

    /// Number of addresses in the prefix (1..=2^32).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// Offset of `a` in the prefix, if it is in it.
    #[inline]
    pub fn offset(&self, a: u32) -> Option<u32> {
        (a & self.mask() == self.base()).then(|| a - self.base())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why a layout cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// No SNAT pool address.
    NoPool,
    /// Fewer than [`MIN_PORTS`] ports per subscriber.
    TooFewPorts {
        /// Inside addresses.
        subscribers: u64,
        /// NAT slots (pool addresses with their ranges).
        slots: usize,
        /// Subscribers per slot.
        per_addr: u64,
        /// Ports in the smallest slot range.
        smallest: u32,
        /// What each subscriber would get.
        ports_each: u64,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::NoPool => write!(f, "deterministic NAT needs at least one SNAT pool address"),
            LayoutError::TooFewPorts {
                subscribers,
                slots,
                per_addr,
                smallest,
                ports_each,
            } => write!(
                f,
                "{subscribers} inside addresses over {slots} NAT address(es) is {per_addr} per address, \
                 {ports_each} port(s) each out of {smallest}; at least {MIN_PORTS} are needed \
                 (use a longer prefix, more pool addresses or a wider port range)"
            ),
        }
    }
}

/// What a NAT address:port is under the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The port is in the range of this inside address.
    Subscriber {
        /// The inside address.
        inside: u32,
        /// Its NAT address.
        addr: u32,
        /// Its first port.
        lo: u16,
        /// Its last port.
        hi: u16,
    },
    /// A port of a NAT address's range that no subscriber owns (past the last subscriber
    /// of that address).
    Unassigned,
    /// Not a NAT address, or a port outside its range.
    NotNat,
}

/// The deterministic layout: inside prefix over NAT slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    prefix: Prefix,
    /// `(address, first port, last port)`, sorted.
    slots: Vec<(u32, u16, u16)>,
    per_addr: u32,
    ports_each: u32,
}

impl Layout {
    /// The layout of `prefix` over every address of `pools`.
    pub fn new(prefix: Prefix, pools: &[Pool]) -> Result<Layout, LayoutError> {
        let mut slots: Vec<(u32, u16, u16)> = pools
            .iter()
            .flat_map(|p| {
                p.addrs
                    .iter()
                    .map(move |a| (u32::from(*a), p.ports.lo, p.ports.hi))
            })
            .collect();
        slots.sort_unstable();
        slots.dedup();
        let smallest = pools.iter().map(|p| p.ports.len()).min().unwrap_or(0);
        let Ok(a) = u64::try_from(slots.len()) else {
            return Err(LayoutError::NoPool);
        };
        if a == 0 {
            return Err(LayoutError::NoPool);
        }
        let n = prefix.size();
        let per_addr = n.div_ceil(a);
        let ports_each = u64::from(smallest) / per_addr;
        let too_few = || LayoutError::TooFewPorts {
            subscribers: n,
            slots: slots.len(),
            per_addr,
            smallest,
            ports_each,
        };
        if ports_each < u64::from(MIN_PORTS) {
            return Err(too_few());
        }
        // Both are at most 65535 here (ports_each >= 1 and per_addr * ports_each <= 65535).
        let (Ok(per_addr), Ok(ports_each)) = (u32::try_from(per_addr), u32::try_from(ports_each))
        else {
            return Err(too_few());
        };
        Ok(Layout {
            prefix,
            slots,
            per_addr,
            ports_each,
        })
    }

    /// The inside prefix.
    pub fn prefix(&self) -> Prefix {
        self.prefix
    }

    /// Subscribers per NAT address.
    pub fn per_addr(&self) -> u32 {
        self.per_addr
    }

    /// Ports each subscriber gets.
    pub fn ports_each(&self) -> u32 {
        self.ports_each
    }

    /// The NAT address and port range `(address, first, last)` of inside address
    /// `inside`; `None` outside the prefix.
    #[inline]
    pub fn range_of(&self, inside: u32) -> Option<(u32, u16, u16)> {
        let i = self.prefix.offset(inside)?;
        let &(addr, lo, _) = self.slots.get(usize::try_from(i / self.per_addr).ok()?)?;
        let start = u32::from(lo) + (i % self.per_addr) * self.ports_each;
        let end = start + (self.ports_each - 1);
        Some((addr, u16::try_from(start).ok()?, u16::try_from(end).ok()?))
    }

    /// Who owns NAT `addr:port`.
    pub fn owner(&self, addr: u32, port: u16) -> Owner {
        let Some((s, &(_, lo, _))) = self
            .slots
            .iter()
            .enumerate()
            .find(|(_, &(a, lo, hi))| a == addr && (lo..=hi).contains(&port))
        else {
            return Owner::NotNat;
        };
        let k = u32::from(port - lo) / self.ports_each;
        if k >= self.per_addr {
            return Owner::Unassigned;
        }
        let i = u64::try_from(s)
            .ok()
            .and_then(|s| s.checked_mul(u64::from(self.per_addr)))
            .and_then(|v| v.checked_add(u64::from(k)));
        match i {
            Some(i) if i < self.prefix.size() => {
                // i < 2^32 here.
                let Ok(i) = u32::try_from(i) else {
                    return Owner::Unassigned;
                };
                let inside = self.prefix.base().wrapping_add(i);
                match self.range_of(inside) {
                    Some((addr, lo, hi)) => Owner::Subscriber {
                        inside,
                        addr,
                        lo,
                        hi,
                    },
                    None => Owner::Unassigned,
                }
            }
            _ => Owner::Unassigned,
        }
    }

    /// The layout in words, for `check-config`.
    pub fn describe(&self) -> Vec<String> {
        let n = self.prefix.size();
        let mut out = vec![format!(
            "deterministic {}: {n} inside address(es) over {} NAT address(es), {} per address, {} ports each",
            self.prefix,
            self.slots.len(),
            self.per_addr,
            self.ports_each
        )];
        let show = |label: &str, inside: u32| {
            self.range_of(inside).map(|(a, lo, hi)| {
                format!(
                    "  {label}: {} -> {} ports {lo}-{hi}",
                    Ipv4Addr::from(inside),
                    Ipv4Addr::from(a)
                )
            })
        };
        let first = self.prefix.base();
        let last = u32::try_from(n - 1).map_or(u32::MAX, |x| first.wrapping_add(x));
        out.extend(show("first", first));
        out.extend(show("last", last));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortRange;

    fn pool(addrs: &[&str], lo: u16, hi: u16) -> Pool {
        Pool {
            addrs: addrs.iter().map(|a| a.parse().expect("address")).collect(),
            ports: PortRange { lo, hi },
        }
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().expect("address"))
    }

    #[test]
    fn prefixes_parse_and_refuse_host_bits() {
        let p = Prefix::parse("198.18.0.0/24").expect("prefix");
        assert_eq!((p.base(), p.size()), (ip("198.18.0.0"), 256));
        assert_eq!(p.offset(ip("198.18.0.7")), Some(7));
        assert_eq!(p.offset(ip("198.18.1.7")), None);
        assert_eq!(p.to_string(), "198.18.0.0/24");
        let all = Prefix::parse("0.0.0.0/0").expect("prefix");
        assert_eq!(all.size(), 1 << 32);
        assert_eq!(all.offset(u32::MAX), Some(u32::MAX));
        let one = Prefix::parse("198.18.0.9/32").expect("prefix");
        assert_eq!((one.size(), one.offset(ip("198.18.0.9"))), (1, Some(0)));
        assert_eq!(one.offset(ip("198.18.0.8")), None);
        for bad in [
            "198.18.0.0",
            "198.18.0.0/33",
            "198.18.0.0/x",
            "198.18.0/24",
            "/24",
            "",
        ] {
            assert!(Prefix::parse(bad).is_err(), "{bad}");
        }
        let e = Prefix::parse("198.18.0.1/24").unwrap_err();
        assert!(e.contains("198.18.0.0/24"), "{e}");
    }

    #[test]
    fn every_address_of_a_slash_24_over_two_pool_addresses_round_trips() {
        let l = Layout::new(
            Prefix::parse("198.18.0.0/24").expect("prefix"),
            &[pool(&["198.19.2.1", "198.19.2.2"], 1024, 65535)],
        )
        .expect("layout");
        assert_eq!((l.per_addr(), l.ports_each()), (128, 504));
        let mut seen = std::collections::HashSet::new();
        for i in 0..256u32 {
            let inside = ip("198.18.0.0") + i;
            let (a, lo, hi) = l.range_of(inside).expect("in the prefix");
            assert_eq!(u32::from(hi - lo) + 1, 504);
            assert_eq!(
                a,
                if i < 128 {
                    ip("198.19.2.1")
                } else {
                    ip("198.19.2.2")
                }
            );
            assert_eq!(u32::from(lo), 1024 + (i % 128) * 504);
            for port in [lo, lo + 1, lo + (hi - lo) / 2, hi] {
                assert_eq!(
                    l.owner(a, port),
                    Owner::Subscriber {
                        inside,
                        addr: a,
                        lo,
                        hi
                    }
                );
                assert!(seen.insert((a, port)), "{a} {port} twice");
            }
        }
        // Edges: the first and last subscriber, the last port, a port outside the range,
        // another address.
        assert_eq!(
            l.range_of(ip("198.18.0.0")),
            Some((ip("198.19.2.1"), 1024, 1527))
        );
        assert_eq!(
            l.range_of(ip("198.18.0.255")),
            Some((ip("198.19.2.2"), 65032, 65535))
        );
        assert_eq!(l.range_of(ip("198.18.1.0")), None);
        assert_eq!(l.range_of(ip("198.17.255.255")), None);
        assert!(matches!(
            l.owner(ip("198.19.2.1"), 65535),
            Owner::Subscriber { inside, .. } if inside == ip("198.18.0.127")
        ));
        assert_eq!(l.owner(ip("198.19.2.1"), 1023), Owner::NotNat);
        assert_eq!(l.owner(ip("198.19.2.3"), 2000), Owner::NotNat);
        assert_eq!(l.describe().len(), 3);
        assert!(l.describe()[2].contains("198.18.0.255 -> 198.19.2.2"));
    }

    #[test]
    fn an_address_with_fewer_subscribers_leaves_the_rest_unassigned() {
        // 10 inside addresses over 3 addresses: 4, 4, 2.
        let l = Layout::new(
            Prefix::parse("198.18.0.0/29").expect("prefix"),
            &[pool(
                &["198.19.2.3", "198.19.2.1", "198.19.2.2"],
                2000,
                2999,
            )],
        )
        .expect("layout");
        assert_eq!((l.per_addr(), l.ports_each()), (3, 333));
        // Sorted by address, whatever the order written.
        assert_eq!(
            l.range_of(ip("198.18.0.0")),
            Some((ip("198.19.2.1"), 2000, 2332))
        );
        assert_eq!(
            l.range_of(ip("198.18.0.7")),
            Some((ip("198.19.2.3"), 2333, 2665))
        );
        assert!(matches!(
            l.owner(ip("198.19.2.3"), 2333),
            Owner::Subscriber { inside, .. } if inside == ip("198.18.0.7")
        ));
        // Slot 2 has subscribers 6 and 7 only; its third range is nobody's.
        assert_eq!(l.owner(ip("198.19.2.3"), 2666), Owner::Unassigned);
        assert_eq!(l.owner(ip("198.19.2.3"), 2999), Owner::Unassigned);
    }

    #[test]
    fn pools_with_their_own_ranges_share_the_smallest_length() {
        let l = Layout::new(
            Prefix::parse("198.18.0.0/31").expect("prefix"),
            &[
                pool(&["198.19.2.1"], 1024, 65535),
                pool(&["198.19.2.1"], 100, 227),
            ],
        )
        .expect("layout");
        assert_eq!((l.per_addr(), l.ports_each()), (1, 128));
        assert_eq!(
            l.range_of(ip("198.18.0.0")),
            Some((ip("198.19.2.1"), 100, 227))
        );
        assert_eq!(
            l.range_of(ip("198.18.0.1")),
            Some((ip("198.19.2.1"), 1024, 1151))
        );
        assert_eq!(l.owner(ip("198.19.2.1"), 1152), Owner::Unassigned);
    }

    #[test]
    fn too_few_ports_or_no_pool_is_refused() {
        let e = Layout::new(
            Prefix::parse("198.18.0.0/16").expect("prefix"),
            &[pool(&["198.19.2.1", "198.19.2.2"], 1024, 65535)],
        )
        .unwrap_err();
        assert_eq!(
            e,
            LayoutError::TooFewPorts {
                subscribers: 65536,
                slots: 2,
                per_addr: 32768,
                smallest: 64512,
                ports_each: 1
            }
        );
        assert!(e.to_string().contains("at least 64"), "{e}");
        // Exactly 64 ports each is fine, 63 is not.
        let ok = Layout::new(
            Prefix::parse("198.18.0.0/26").expect("prefix"),
            &[pool(&["198.19.2.1"], 1024, 1024 + 64 * 64 - 1)],
        )
        .expect("64 each");
        assert_eq!(ok.ports_each(), 64);
        assert!(Layout::new(
            Prefix::parse("198.18.0.0/26").expect("prefix"),
            &[pool(&["198.19.2.1"], 1024, 1024 + 64 * 64 - 2)],
        )
        .is_err());
        assert_eq!(
            Layout::new(Prefix::parse("198.18.0.0/24").expect("prefix"), &[]),
            Err(LayoutError::NoPool)
        );
        // The whole address space never fits.
        assert!(Layout::new(
            Prefix::parse("0.0.0.0/0").expect("prefix"),
            &[pool(&["198.19.2.1"], 1, 65535)]
        )
        .is_err());
    }
}
