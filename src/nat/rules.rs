//! The rule set shared by all workers: SNAT pools (and masquerade), port forwards, and the
//! table built from the NAT configuration.

use std::collections::HashMap;

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

/// The immutable rule set shared by all workers.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Every SNAT address of every pool with its port range, for address selection.
    pub(super) snat_addrs: Vec<(u32, u16, u16)>,
    pub(super) dnat: HashMap<(u8, u32, u16), DnatRt>,
    /// Port range for SNAT of port-forwarded traffic (on the inside address).
    pub(super) dnat_snat_ports: (u16, u16),
    /// The inside address, when port forwards with SNAT use it.
    pub(super) dnat_snat_addr: Option<u32>,
    /// Every NAT pool address and port-forward address: what an inside host reaches by
    /// hairpinning (sorted).
    pub(super) hairpin_addrs: Vec<u32>,
    /// Mapping behaviour.
    pub(super) mapping: Mapping,
    /// Filtering behaviour.
    pub(super) filtering: Filtering,
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
        let mut hairpin_addrs: Vec<u32> = snat_addrs
            .iter()
            .map(|&(a, _, _)| a)
            .chain(dnat.keys().map(|&(_, a, _)| a))
            .collect();
        hairpin_addrs.sort_unstable();
        hairpin_addrs.dedup();
        Ok(Rules {
            hairpin_addrs,
            mapping: cfg.mapping,
            filtering: cfg.filtering,
            snat_addrs,
            dnat,
            dnat_snat_ports: DNAT_SNAT_PORTS,
            dnat_snat_addr,
        })
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
        self.hairpin_addrs.binary_search(&addr).is_ok()
    }

    /// Whether the gateway translates traffic to `addr`: a hairpin destination, or the
    /// inside address that port forwards with SNAT use.
    #[inline]
    pub fn is_nat_dst(&self, addr: u32) -> bool {
        self.is_hairpin_dst(addr) || self.dnat_snat_addr == Some(addr)
    }

    /// Whether `addr` is a SNAT pool (or masquerade) address.
    #[inline]
    pub fn is_pool_addr(&self, addr: u32) -> bool {
        self.snat_addrs.iter().any(|&(a, _, _)| a == addr)
    }

    /// Whether `addr` is the inside address port forwards with SNAT translate to.
    #[inline]
    pub(super) fn is_dnat_snat_addr(&self, addr: u32) -> bool {
        self.dnat_snat_addr == Some(addr)
    }

    /// The pool address (and its port range) an inside host always gets (paired pooling,
    /// RFC 4787 REQ-2); `None` without pools.
    #[inline]
    pub(super) fn pool_for(&self, src: u32) -> Option<(u32, u16, u16)> {
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

/// Builds the shared table from the NAT configuration: in memory, or in the state file
/// (then also says whether the previous process's connections were taken over).
pub fn make_table(cfg: &NatConfig) -> Result<(Table, bool), String> {
    let t = cfg.timeouts;
    let mut tc = TableConfig::new(cfg.table_size);
    tc.evict_protected = cfg.evict_established;
    tc.timeouts = crate::table::Timeouts {
        tcp_syn: t.tcp_syn,
        tcp_established: t.tcp_established,
        tcp_closing: t.tcp_closing,
        udp: t.udp,
        icmp: t.icmp,
        other: t.udp,
    };
    match &cfg.state_file {
        None => Table::new(tc).map(|t| (t, false)),
        Some(p) => Table::with_state_file(tc, p),
    }
    .map_err(|e| match e {
        // It names the file and what went wrong with it.
        crate::table::TableError::StateFile { .. } => e.to_string(),
        e => format!("--table-size {}: {e}", cfg.table_size),
    })
}
