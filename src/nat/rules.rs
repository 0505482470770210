//! The rule set shared by all workers: SNAT pools (and masquerade), port forwards, and the
//! table built from the NAT configuration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{Filtering, Mapping, NatConfig};
use crate::table::{Table, TableConfig};

/// A SNAT pool at run time.
#[derive(Clone, Debug)]
struct PoolRt {
    addrs: Vec<u32>,
    lo: u16,
    hi: u16,
}

/// A port forward at run time.
#[derive(Clone, Copy, Debug)]
pub(super) struct DnatRt {
    pub(super) int_addr: u32,
    pub(super) int_port: u16,
    /// Source address to use towards the backend (the gateway's inside address).
    pub(super) snat_src: Option<u32>,
}

/// A set of addresses, asked on every packet (is this a NAT address?): sorted for a binary
/// search, behind a check of its lowest and highest address, and a set that fills its range
/// (a pool given as a range) needs nothing else. Most destinations are no NAT address and
/// fall outside the range: 2 comparisons instead of a search of every pool address
/// (7 steps for 128 of them).
#[derive(Clone, Debug, Default)]
pub(super) struct AddrSet {
    sorted: Vec<u32>,
    lo: u32,
    hi: u32,
    /// Every address from `lo` to `hi` is in the set.
    dense: bool,
}

impl AddrSet {
    /// The set of `addrs` (any order, repeats allowed).
    pub(super) fn new(mut addrs: Vec<u32>) -> AddrSet {
        addrs.sort_unstable();
        addrs.dedup();
        let (lo, hi) = match (addrs.first(), addrs.last()) {
            (Some(&lo), Some(&hi)) => (lo, hi),
            // Empty: a range no address falls in, so `contains` needs no other check.
            _ => (1, 0),
        };
        let dense = !addrs.is_empty() && u64::from(hi - lo) + 1 == addrs.len() as u64;
        AddrSet {
            sorted: addrs,
            lo,
            hi,
            dense,
        }
    }

    #[inline]
    pub(super) fn contains(&self, addr: u32) -> bool {
        if addr < self.lo || addr > self.hi {
            return false;
        }
        self.dense || self.sorted.binary_search(&addr).is_ok()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

/// The immutable rule set shared by all workers.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Every SNAT address of every pool with its port range, for address selection.
    pub(super) snat_addrs: Vec<(u32, u16, u16)>,
    /// The SNAT addresses alone, for [`Rules::is_pool_addr`] (once an epoch per session: a
    /// range check or a binary search, not a walk of a CGN pool of thousands).
    pool_addrs: AddrSet,
    pub(super) dnat: HashMap<(u8, u32, u16), DnatRt>,
    /// Port range for SNAT of port-forwarded traffic (on the inside address).
    pub(super) dnat_snat_ports: (u16, u16),
    /// The inside address, when port forwards with SNAT use it.
    pub(super) dnat_snat_addr: Option<u32>,
    /// Every NAT pool address and port-forward address: what an inside host reaches by
    /// hairpinning.
    pub(super) hairpin_addrs: AddrSet,
    /// Mapping behaviour.
    pub(super) mapping: Mapping,
    /// Filtering behaviour.
    pub(super) filtering: Filtering,
    /// Addresses of port forwards and pools removed by a reload whose connections still
    /// live: their packets are still the gateway's to translate.
    draining: AddrSet,
    /// Deterministic NAT: each inside address of the prefix has a fixed NAT address and
    /// port range (RFC 7422); other sources are not translated.
    deterministic: Option<super::deterministic::Layout>,
}

/// Source ports used on the gateway's inside address for port forwards with SNAT. That
/// address is shared with the gateway's own kernel, so xnat stays below the kernel's
/// ephemeral range (32768-60999).
pub const DNAT_SNAT_PORTS: (u16, u16) = (1024, 32767);

impl Rules {
    /// Builds the rules. `masquerade_addrs` are the outside interface's addresses (used when
    /// `cfg.masquerade`), `inside_addr` the gateway's inside address (for DNAT with SNAT).
    pub fn new(
        cfg: &NatConfig,
        masquerade_addrs: &[u32],
        inside_addr: Option<u32>,
    ) -> Result<Rules, String> {
        let mut pools: Vec<PoolRt> = cfg
            .pools
            .iter()
            .map(|p| PoolRt {
                addrs: p.addrs.iter().map(|a| u32::from(*a)).collect(),
                lo: p.ports.lo,
                hi: p.ports.hi,
            })
            .collect();
        if cfg.masquerade {
            if masquerade_addrs.is_empty() {
                return Err("--masquerade: the outside interface has no IPv4 address".into());
            }
            pools.push(PoolRt {
                addrs: masquerade_addrs.to_vec(),
                lo: cfg.ports.lo,
                hi: cfg.ports.hi,
            });
        }
        let mut dnat = HashMap::new();
        for r in &cfg.dnat {
            let ext = u32::from(*r.external.ip());
            let snat_src = if r.snat {
                Some(
                    inside_addr
                        .ok_or("--dnat ...,snat: the inside interface has no IPv4 address")?,
                )
            } else {
                None
            };
            dnat.insert(
                (r.proto.number(), ext, r.external.port()),
                DnatRt {
                    int_addr: u32::from(*r.internal.ip()),
                    int_port: r.internal.port(),
                    snat_src,
                },
            );
        }
        let dnat_snat_addr = dnat.values().find_map(|d: &DnatRt| d.snat_src);
        let snat_addrs: Vec<(u32, u16, u16)> = pools
            .iter()
            .flat_map(|p| p.addrs.iter().map(move |&a| (a, p.lo, p.hi)))
            .collect();
        let hairpin_addrs = AddrSet::new(
            snat_addrs
                .iter()
                .map(|&(a, _, _)| a)
                .chain(dnat.keys().map(|&(_, a, _)| a))
                .collect(),
        );
        let pool_addrs = AddrSet::new(snat_addrs.iter().map(|&(a, _, _)| a).collect());
        let deterministic = match cfg.deterministic {
            None => None,
            Some(p) if cfg.masquerade => {
                return Err(format!(
                    "--deterministic {p}: deterministic NAT needs SNAT pools, not masquerade"
                ))
            }
            Some(p) => Some(
                super::deterministic::Layout::new(p, &cfg.pools)
                    .map_err(|e| format!("--deterministic {p}: {e}"))?,
            ),
        };
        Ok(Rules {
            deterministic,
            draining: AddrSet::default(),
            hairpin_addrs,
            mapping: cfg.mapping,
            filtering: cfg.filtering,
            snat_addrs,
            pool_addrs,
            dnat,
            dnat_snat_ports: DNAT_SNAT_PORTS,
            dnat_snat_addr,
        })
    }

    /// `(address, first port, last port)` of every SNAT pool address (masquerade included).
    pub fn pool_addresses(&self) -> Vec<(u32, u16, u16)> {
        self.snat_addrs.clone()
    }

    /// `(address, first port, last port)` of every NAT address, for the steering program.
    pub fn nat_addresses(&self) -> Vec<(u32, u16, u16)> {
        let (lo, hi) = self.dnat_snat_ports;
        self.snat_addrs
            .iter()
            .copied()
            .chain(self.dnat_snat_addr.map(|a| (a, lo, hi)))
            .collect()
    }

    /// Whether `port` of `addr` is the external end of a port forward for `proto`: the
    /// allocator never hands it out, even inside a pool's range (a forward inside a pool
    /// takes its port out of the pool).
    #[inline]
    pub fn is_forwarded(&self, proto: u8, addr: u32, port: u16) -> bool {
        !self.dnat.is_empty() && self.dnat.contains_key(&(proto, addr, port))
    }

    /// Whether `addr` is a NAT pool address or a port-forward address: traffic from the
    /// inside to it is hairpinned.
    #[inline]
    pub fn is_hairpin_dst(&self, addr: u32) -> bool {
        self.hairpin_addrs.contains(addr)
    }

    /// Whether the gateway translates traffic to `addr`: a hairpin destination, or the
    /// inside address that port forwards with SNAT use.
    #[inline]
    pub fn is_nat_dst(&self, addr: u32) -> bool {
        self.is_hairpin_dst(addr)
            || self.dnat_snat_addr == Some(addr)
            || self.draining.contains(addr)
    }

    /// The same rules, also treating `addrs` (of removed forwards and pools whose
    /// connections still live) as addresses to translate.
    pub fn with_draining(mut self, addrs: Vec<u32>) -> Rules {
        self.draining = AddrSet::new(addrs);
        self
    }

    /// `(protocol, external address, external port)` of every port forward with its
    /// inside end, for reload reports.
    pub fn forward_targets(&self) -> Vec<ForwardTarget> {
        let mut v: Vec<_> = self
            .dnat
            .iter()
            .map(|(&k, d)| (k, (d.int_addr, d.int_port)))
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether `addr` is a SNAT pool (or masquerade) address.
    #[inline]
    pub fn is_pool_addr(&self, addr: u32) -> bool {
        self.pool_addrs.contains(addr)
    }

    /// Whether `addr` is the inside address port forwards with SNAT translate to.
    #[inline]
    pub(super) fn is_dnat_snat_addr(&self, addr: u32) -> bool {
        self.dnat_snat_addr == Some(addr)
    }

    /// The pool address (and its port range) an inside host always gets (paired pooling,
    /// RFC 4787 REQ-2); `None` without pools. Under deterministic NAT the inside address's
    /// own address and range, `None` outside the prefix.
    #[inline]
    pub(super) fn pool_for(&self, src: u32) -> Option<(u32, u16, u16)> {
        if let Some(d) = &self.deterministic {
            return d.range_of(src);
        }
        if self.snat_addrs.is_empty() {
            return None;
        }
        let h = src.wrapping_mul(0x9E37_79B1) >> 7;
        self.snat_addrs
            .get((h as usize) % self.snat_addrs.len())
            .copied()
    }

    /// `(address, port, protocol)` of every port forward.
    pub fn forwards(&self) -> Vec<(u32, u16, u8)> {
        self.dnat
            .keys()
            .map(|&(proto, a, p)| (a, p, proto))
            .collect()
    }
}

/// A port forward as `((protocol, external address, port), (inside address, port))`.
pub type ForwardTarget = ((u8, u32, u16), (u32, u16));

/// The rule set the workers translate with, replaceable while they run (`xnat reload`):
/// a new set is published under a mutex off the packet path, and each worker compares a
/// generation counter once per batch, taking the mutex only when it changed (as next-hop
/// snapshots are published, see [`crate::dataplane::nexthop`]).
pub struct LiveRules {
    current: Mutex<Arc<Rules>>,
    generation: AtomicU64,
}

impl LiveRules {
    /// Starts with `rules`.
    pub fn new(rules: Arc<Rules>) -> Arc<LiveRules> {
        Arc::new(LiveRules {
            current: Mutex::new(rules),
            generation: AtomicU64::new(0),
        })
    }

    /// The rules in force.
    pub fn current(&self) -> Arc<Rules> {
        match self.current.lock() {
            Ok(c) => Arc::clone(&c),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Replaces the rules; workers pick them up at their next batch.
    pub fn publish(&self, rules: Arc<Rules>) {
        match self.current.lock() {
            Ok(mut c) => *c = rules,
            Err(p) => *p.into_inner() = rules,
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Changes with every publication.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// The table's timeouts for configured ones (other protocols take the UDP timeout).
pub fn table_timeouts(t: &crate::config::Timeouts) -> crate::table::Timeouts {
    crate::table::Timeouts {
        tcp_syn: t.tcp_syn,
        tcp_established: t.tcp_established,
        tcp_closing: t.tcp_closing,
        udp: t.udp,
        icmp: t.icmp,
        other: t.udp,
    }
}

/// Builds the shared table from the NAT configuration: in memory, or in the state file
/// (then also says whether the previous process's connections were taken over).
pub fn make_table(cfg: &NatConfig) -> Result<(Table, crate::table::Resume), String> {
    let mut tc = TableConfig::new(cfg.table_size);
    tc.evict_protected = cfg.evict_established;
    tc.timeouts = table_timeouts(&cfg.timeouts);
    match &cfg.state_file {
        None => Table::new(tc).map(|t| (t, crate::table::Resume::New)),
        Some(p) => Table::with_state_file(tc, p),
    }
    .map_err(|e| match e {
        // It names the file and what went wrong with it.
        crate::table::TableError::StateFile { .. } => e.to_string(),
        e => format!("--table-size {}: {e}", cfg.table_size),
    })
}

#[cfg(test)]
mod tests {
    use super::AddrSet;

    /// What the set answers for every address near its members and its ends, against a
    /// plain search of the addresses it was made of.
    fn agrees(addrs: &[u32]) {
        let set = AddrSet::new(addrs.to_vec());
        let mut probes: Vec<u32> = vec![0, 1, u32::MAX - 1, u32::MAX];
        for &a in addrs {
            probes.extend([a.wrapping_sub(1), a, a.wrapping_add(1)]);
        }
        for p in probes {
            assert_eq!(set.contains(p), addrs.contains(&p), "{p:#x} in {addrs:x?}");
        }
        assert_eq!(set.is_empty(), addrs.is_empty());
    }

    #[test]
    fn an_address_set_answers_as_a_search_of_its_addresses() {
        // 198.19.255.1. Empty, one address, a full range, a range with a hole, repeats,
        // scattered, the ends of the address space.
        let pool = 0xC613_FF01_u32;
        agrees(&[]);
        agrees(&[pool]);
        agrees(&(pool..pool + 128).collect::<Vec<_>>());
        agrees(
            &(pool..pool + 128)
                .filter(|&a| a != pool + 77)
                .collect::<Vec<_>>(),
        );
        agrees(&[pool + 3, pool, pool + 3, pool + 1, pool + 2]);
        agrees(&[0xC612_0001, 0xC613_0001, 0xC613_FF80]);
        agrees(&[0, 1, 2]);
        agrees(&[u32::MAX - 1, u32::MAX]);
        agrees(&[0, u32::MAX]);
        // A range with a hole is not taken for a full one.
        let holed = AddrSet::new(vec![pool, pool + 2]);
        assert!(!holed.contains(pool + 1));
    }
}
