//! Live reconfiguration (`xnat reload`, SIGHUP): the configuration file is read again and
//! validated exactly as at start (flags given to `xnat run` still win); port forwards, SNAT
//! pools (and masquerade, ports), the per-source quota and the filtering behaviour are
//! applied without a restart (under deterministic NAT the prefix, pools and ports are
//! restart-only: they decide every mapping). Everything else is reported as needing a restart and keeps
//! its running value.
//!
//! Workers take the new rules at their next batch (see [`LiveRules`]); the steering
//! program's maps are changed in place, additions first. Existing connections keep their
//! translations: a removed forward or pool address stays steered to the workers (and its
//! address translated) while connections still use it, so they go on until their timeout
//! or `xnat flush`; its new connections find no rule. Once none is left it is removed from
//! the steering maps too ([`Reloader::drain`], right after `xnat flush` and every 30 s).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::app::{settings, Settings};
use crate::cli::RunArgs;
use crate::dataplane::{iface, DataplaneError, Steering};
use crate::nat::{LiveRules, Quota, Rules};
use crate::table::{Session, Table};

/// What the steering program's NAT maps hold: NAT addresses with their port range
/// (`(1, 0)`: an address with port forwards only) and port forwards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Steer {
    nat: BTreeMap<u32, (u16, u16)>,
    fwd: BTreeSet<(u32, u16, u8)>,
}

/// A forward or a NAT address range removed by a reload, steered until no connection
/// uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Retired {
    Forward { addr: u32, port: u16, proto: u8 },
    Range { addr: u32, lo: u16, hi: u16 },
}

impl Retired {
    fn addr(&self) -> u32 {
        match *self {
            Retired::Forward { addr, .. } | Retired::Range { addr, .. } => addr,
        }
    }

    fn used_by(&self, s: &Session) -> bool {
        let (o, x) = (&s.org, &s.xlate);
        match *self {
            Retired::Forward { addr, port, proto } => {
                o.proto == proto && o.dst == addr && o.dport == port
            }
            Retired::Range { addr, lo, hi } => [
                (o.src, o.sport),
                (o.dst, o.dport),
                (x.src, x.sport),
                (x.dst, x.dport),
            ]
            .iter()
            .any(|&(a, p)| a == addr && (lo..=hi).contains(&p)),
        }
    }

    fn describe(&self) -> String {
        match *self {
            Retired::Forward { addr, port, proto } => format!(
                "{} {}:{port}",
                crate::nat::proto_name(proto),
                Ipv4Addr::from(addr)
            ),
            Retired::Range { addr, lo, hi } => format!("{} ports {lo}-{hi}", Ipv4Addr::from(addr)),
        }
    }
}

/// What the steering maps must hold for `rules` plus what is still draining.
pub fn desired(
    rules: &Rules,
    retired_extra: &[(u32, u16, u16)],
    fwd_extra: &[(u32, u16, u8)],
) -> Steer {
    let mut s = Steer::default();
    let mut merge = |a: u32, lo: u16, hi: u16| {
        s.nat
            .entry(a)
            .and_modify(|r| {
                *r = if r.0 > r.1 {
                    (lo, hi)
                } else {
                    (r.0.min(lo), r.1.max(hi))
                }
            })
            .or_insert((lo, hi));
    };
    for (a, lo, hi) in rules.nat_addresses() {
        merge(a, lo, hi);
    }
    for &(a, lo, hi) in retired_extra {
        merge(a, lo, hi);
    }
    for (a, p, proto) in rules
        .forwards()
        .into_iter()
        .chain(fwd_extra.iter().copied())
    {
        s.fwd.insert((a, p, proto));
        s.nat.entry(a).or_insert((1, 0));
    }
    s
}

/// Changes the steering maps from `from` to `to`: additions and changes first, removals
/// last, so that nothing kept is ever missing in between.
pub fn apply(st: &mut Steering, from: &Steer, to: &Steer) -> Result<(), DataplaneError> {
    for (&a, &(lo, hi)) in &to.nat {
        if from.nat.get(&a) != Some(&(lo, hi)) {
            st.add_nat_addr(a, lo, hi)?;
        }
    }
    for &(a, p, proto) in to.fwd.difference(&from.fwd) {
        st.add_forward_rule(a, p, proto)?;
    }
    for &(a, p, proto) in from.fwd.difference(&to.fwd) {
        st.remove_forward_rule(a, p, proto)?;
    }
    for a in from.nat.keys().filter(|a| !to.nat.contains_key(a)) {
        st.remove_nat_addr(*a)?;
    }
    Ok(())
}

/// The settings that only a restart changes, as `(key, value)` for comparison.
fn restart_only(s: &Settings) -> Vec<(&'static str, String)> {
    let d = &s.dataplane;
    let mut v = vec![
        ("dataplane.mode", format!("{:?}", s.mode)),
        ("interfaces.inside", d.inside.clone()),
        ("interfaces.outside", d.outside.clone()),
        ("dataplane.queues", format!("{:?}", d.queues)),
        ("dataplane.cores", format!("{:?}", d.cores)),
        ("dataplane.xdp_mode", format!("{:?}", d.xdp_mode)),
        ("dataplane.zero_copy", format!("{:?}", d.zero_copy)),
        ("dataplane.frames", format!("{:?}", d.sizes.frames)),
        ("dataplane.ring_size", format!("{:?}", d.sizes.ring)),
        ("dataplane.batch", format!("{:?}", d.batch)),
        ("dataplane.poll", format!("{:?}", d.poll)),
        ("dataplane.clamp_mss", format!("{:?}", s.router)),
        ("control.socket", format!("{:?}", s.control)),
        ("control.metrics_listen", format!("{:?}", s.metrics_listen)),
        ("control.stats_interval", format!("{:?}", s.stats_interval)),
        ("logging", format!("{:?}", s.logging)),
    ];
    if let Some(n) = &s.nat {
        v.extend([
            ("nat.table_size", n.table_size.to_string()),
            ("nat.state_file", format!("{:?}", n.state_file)),
            ("nat.evict_established", n.evict_established.to_string()),
            ("nat.mapping", format!("{:?}", n.mapping)),
            ("nat.port_block_*", format!("{:?}", n.port_blocks)),
            ("nat.deterministic", deterministic_layout(n)),
        ]);
    }
    v
}

/// What decides every deterministic mapping: the prefix with the pools and their ports
/// ("off" without deterministic NAT, where pools change live).
fn deterministic_layout(n: &crate::config::NatConfig) -> String {
    match n.deterministic {
        None => "off".into(),
        Some(p) => format!("{p} over {:?}", n.pools),
    }
}

/// The NAT side of a running gateway that a reload changes.
pub struct NatParts {
    /// The rules the workers follow.
    pub live: Arc<LiveRules>,
    /// The per-source quota.
    pub quota: Arc<Quota>,
    /// The counts kept as connections come and go (new NAT addresses are declared to it
    /// before any connection can use them).
    pub census: Arc<crate::nat::Census>,
    /// The translation logger, if on (kept running for the gateway's life; the logging
    /// settings need a restart).
    pub logger: Option<crate::logging::Logger>,
    /// The port block allocator, if on (new pool addresses are given to it).
    pub blocks: Option<Arc<crate::nat::PortBlocks>>,
    /// The table (to see which removed rules are still in use).
    pub table: Arc<Table>,
    /// What the steering maps hold now.
    pub installed: Steer,
    /// The outside interface's addresses the rules were built with (sorted): with
    /// `--masquerade`, the NAT addresses.
    pub outside_addrs: Vec<u32>,
}

/// Re-reads and applies the configuration of a running gateway.
pub struct Reloader {
    args: RunArgs,
    /// The inside and outside interfaces.
    ifaces: [String; 2],
    started: Vec<(&'static str, String)>,
    nat: Option<NatParts>,
    running: Option<crate::config::NatConfig>,
    retired: Vec<Retired>,
}

impl Reloader {
    /// For a gateway started with `args` into `s`; `nat` in NAT mode.
    pub fn new(args: RunArgs, s: &Settings, nat: Option<NatParts>) -> Reloader {
        Reloader {
            args,
            ifaces: [s.dataplane.inside.clone(), s.dataplane.outside.clone()],
            started: restart_only(s),
            running: s.nat.clone(),
            nat,
            retired: Vec::new(),
        }
    }

    /// The NAT configuration in force (NAT mode).
    pub fn running(&self) -> Option<&crate::config::NatConfig> {
        self.running.as_ref()
    }

    /// Reads the configuration file again and applies what can be applied live. On an
    /// invalid file (the messages of `check-config`) nothing changes.
    pub fn reload(&mut self, st: &mut Steering) -> Result<serde_json::Value, String> {
        let Some(path) = &self.args.config else {
            return Err(
                "xnat run was started without --config: there is no configuration file to read again"
                    .into(),
            );
        };
        let fresh = settings(&self.args)?;
        let mut restart: Vec<String> = Vec::new();
        for ((k, old), (_, new)) in self.started.iter().zip(restart_only(&fresh)) {
            if *old != new {
                restart.push(k.to_string());
            }
        }
        // Keys only one of the two modes has.
        if self.started.len() != restart_only(&fresh).len()
            && !restart.iter().any(|k| k == "dataplane.mode")
        {
            restart.push("dataplane.mode".into());
        }
        let mut applied: Vec<String> = Vec::new();
        if let (Some(parts), Some(running), Some(new)) = (&mut self.nat, &self.running, &fresh.nat)
        {
            // Applied live: forwards, pools, quota, filtering; the rest keeps its running value.
            let mut want = new.clone();
            want.mapping = running.mapping;
            want.table_size = running.table_size;
            want.evict_established = running.evict_established;
            want.state_file = running.state_file.clone();
            want.port_blocks = running.port_blocks;
            if running.deterministic.is_some() || want.deterministic.is_some() {
                // Deterministic NAT: the prefix, the pools and their ports decide every
                // mapping (and what `xnat lookup` answers): restart only.
                want.deterministic = running.deterministic;
                want.pools = running.pools.clone();
                want.masquerade = running.masquerade;
                want.ports = running.ports;
            }
            let outside = addrs_of(&fresh.dataplane.outside);
            let inside = addrs_of(&fresh.dataplane.inside).first().copied();
            let rules = Rules::new(&want, &outside, inside)?;
            let mut applied_now = Vec::new();
            if running.pools != want.pools
                || running.masquerade != want.masquerade
                || running.ports != want.ports
            {
                applied_now.push(format!(
                    "NAT addresses: {}",
                    want.describe_pools()
                        .into_iter()
                        .filter(|l| !l.starts_with("reserved"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            if running.max_sessions_per_source != want.max_sessions_per_source {
                applied_now.push(format!(
                    "nat.max_sessions_per_source: {} -> {}",
                    running.max_sessions_per_source, want.max_sessions_per_source
                ));
            }
            if running.filtering != want.filtering {
                applied_now.push(format!(
                    "nat.filtering: {:?} -> {:?}",
                    running.filtering, want.filtering
                ));
            }
            if running.timeouts != want.timeouts {
                applied_now.push(format!(
                    "timeouts: {:?} -> {:?} (existing connections are judged by the new values)",
                    running.timeouts, want.timeouts
                ));
            }
            applied = install(parts, &mut self.retired, st, rules, outside)?;
            applied.extend(applied_now);
            parts.quota.set_limit(want.max_sessions_per_source);
            parts
                .table
                .set_timeouts(crate::nat::table_timeouts(&want.timeouts));
            self.running = Some(want);
        }
        let still: Vec<String> = self.retired.iter().map(Retired::describe).collect();
        Ok(serde_json::json!({
            "config": path.display().to_string(),
            "applied": applied,
            "restart_needed": restart,
            "draining": still,
        }))
    }

    /// With `--masquerade`, follows the outside interface's addresses (an address change
    /// by DHCP, PPPoE or an administrator: call after an address notification): when they
    /// differ from the NAT addresses in force, the rules are rebuilt with the new ones and
    /// swapped in, the steering maps updated, and the connections translated to a removed
    /// address are ended, as the kernel's MASQUERADE does: replies to that address no
    /// longer arrive, and a flow that keeps sending (UDP, a VPN's keepalives) would
    /// otherwise keep the dead address for ever; its next packet makes a new connection
    /// on a current address. Without any address left, new outbound connections find no
    /// NAT address (dropped, `no_snat_rule`) until one is assigned.
    pub fn follow_outside_addresses(
        &mut self,
        st: &mut Steering,
    ) -> Result<Option<AddressChange>, String> {
        let (Some(parts), Some(running)) = (&mut self.nat, &self.running) else {
            return Ok(None);
        };
        if !running.masquerade {
            return Ok(None);
        }
        let outside = addrs_of(&self.ifaces[1]);
        if outside == parts.outside_addrs {
            return Ok(None);
        }
        let inside = addrs_of(&self.ifaces[0]).first().copied();
        let mut cfg = running.clone();
        // No address at all: no masquerade pool (its new connections are dropped).
        cfg.masquerade = !outside.is_empty();
        let rules = Rules::new(&cfg, &outside, inside)?;
        let before = parts.outside_addrs.clone();
        install(parts, &mut self.retired, st, rules, outside.clone())?;
        let gone: Vec<u32> = before
            .iter()
            .copied()
            .filter(|a| !outside.contains(a))
            .collect();
        let ended = if gone.is_empty() {
            0
        } else {
            parts.table.flush(|s| gone.contains(&s.xlate.src))
        };
        // Their ranges were retired by `install`; nothing uses them now.
        self.drain(st);
        Ok(Some(AddressChange {
            before,
            after: outside,
            ended,
        }))
    }

    /// Forgets removed forwards and NAT ranges that no connection uses any more: their
    /// packets go to the kernel again. Walks the table only while something is draining
    /// (called every 30 s and after a flush).
    pub fn drain(&mut self, st: &mut Steering) {
        let Some(parts) = &mut self.nat else { return };
        if self.retired.is_empty() {
            return;
        }
        let now = crate::nat::coarse_now();
        let mut used = vec![false; self.retired.len()];
        for s in parts.table.sessions(now) {
            for (u, r) in used.iter_mut().zip(&self.retired) {
                *u = *u || r.used_by(&s);
            }
            if used.iter().all(|&u| u) {
                return;
            }
        }
        let (keep, gone): (Vec<_>, Vec<_>) = self.retired.iter().zip(&used).partition(|(_, &u)| u);
        let keep: Vec<Retired> = keep.into_iter().map(|(r, _)| *r).collect();
        let rules = parts.live.current();
        let (ranges, fwds) = extras(&keep);
        // The rules' own steering is what the current rules (with draining cleared) need.
        let base = Rules::clone(&rules).with_draining(Vec::new());
        let target = desired(&base, &ranges, &fwds);
        if let Err(e) = apply(st, &parts.installed, &target) {
            tracing::warn!(error = %e, "could not update the steering maps after draining");
            return;
        }
        for (r, _) in gone {
            tracing::info!(rule = %r.describe(), "no connection uses the removed rule any more: its traffic goes to the kernel again");
        }
        parts.installed = target;
        parts.live.publish(Arc::new(
            base.with_draining(keep.iter().map(Retired::addr).collect()),
        ));
        self.retired = keep;
    }
}

/// A change of the masquerade addresses ([`Reloader::follow_outside_addresses`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressChange {
    /// The NAT addresses before (host order, sorted).
    pub before: Vec<u32>,
    /// The NAT addresses now.
    pub after: Vec<u32>,
    /// Connections ended because their NAT address was removed.
    pub ended: usize,
}

/// The IPv4 addresses of interface `name` (host order, sorted).
pub fn addrs_of(name: &str) -> Vec<u32> {
    let mut v: Vec<u32> = iface::ipv4_addrs(name).into_iter().map(u32::from).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Swaps in `rules` (built with the outside addresses `outside`): what the old rules
/// steered that the new ones do not is retired (kept steered and translated until no
/// connection uses it), the steering maps are updated, then the workers get the rules.
/// Returns what changed among the port forwards; on an error nothing changed.
fn install(
    parts: &mut NatParts,
    retired_now: &mut Vec<Retired>,
    st: &mut Steering,
    rules: Rules,
    outside: Vec<u32>,
) -> Result<Vec<String>, String> {
    let old_rules = parts.live.current();
    let new_fwd: BTreeSet<_> = rules.forwards().into_iter().collect();
    let new_nat: BTreeSet<_> = rules.nat_addresses().into_iter().collect();
    let mut retired = retired_now.clone();
    for (addr, port, proto) in old_rules.forwards() {
        if !new_fwd.contains(&(addr, port, proto)) {
            retired.push(Retired::Forward { addr, port, proto });
        }
    }
    for (addr, lo, hi) in old_rules.nat_addresses() {
        if !new_nat.contains(&(addr, lo, hi)) {
            retired.push(Retired::Range { addr, lo, hi });
        }
    }
    retired.sort_unstable();
    retired.dedup();

    let mut applied = Vec::new();
    let old_t = old_rules.forward_targets();
    let new_t = rules.forward_targets();
    let show = |((proto, a, p), (ia, ip)): &crate::nat::ForwardTarget| {
        format!(
            "{} {}:{p} -> {}:{ip}",
            crate::nat::proto_name(*proto),
            Ipv4Addr::from(*a),
            Ipv4Addr::from(*ia)
        )
    };
    for f in new_t.iter().filter(|f| !old_t.contains(f)) {
        applied.push(format!("port forward added: {}", show(f)));
    }
    for f in old_t.iter().filter(|f| !new_t.contains(f)) {
        applied.push(format!(
            "port forward removed: {} (its connections go on until they time out or are flushed)",
            show(f)
        ));
    }

    let (ranges, fwds) = extras(&retired);
    let target = desired(&rules, &ranges, &fwds);
    let rules = Arc::new(rules.with_draining(retired.iter().map(Retired::addr).collect()));
    // Steering first (a new forward's packets reach workers that may not have its
    // rule for one batch: dropped, the sender retransmits), then the rules.
    if let Err(e) = apply(st, &parts.installed, &target) {
        // Put back what was there; the running configuration stays.
        let _ = apply(st, &target, &parts.installed);
        return Err(format!("could not update the steering maps: {e}"));
    }
    parts.installed = target;
    // The allocator and the counts learn new NAT addresses before any connection uses them.
    if let Some(b) = &parts.blocks {
        b.set_pools(&rules.pool_addresses());
    }
    let addrs: Vec<u32> = rules.nat_addresses().iter().map(|a| a.0).collect();
    if parts.census.declare(&addrs) > 0 {
        tracing::warn!("more NAT addresses than at start: port use of the new ones is not counted (restart to count them)");
    }
    parts.live.publish(rules);
    parts.outside_addrs = outside;
    *retired_now = retired;
    Ok(applied)
}

/// NAT address ranges `(address, first, last)` and forwards `(address, port, protocol)`.
type Extras = (Vec<(u32, u16, u16)>, Vec<(u32, u16, u8)>);

fn extras(retired: &[Retired]) -> Extras {
    let mut ranges = Vec::new();
    let mut fwds = Vec::new();
    for r in retired {
        match *r {
            Retired::Forward { addr, port, proto } => fwds.push((addr, port, proto)),
            Retired::Range { addr, lo, hi } => ranges.push((addr, lo, hi)),
        }
    }
    (ranges, fwds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{nat_config, FileConfig, NatFlags};
    use crate::table::{ConnState, Tuple};

    fn rules(snat: &[&str], dnat: &[&str]) -> Rules {
        let flags = NatFlags {
            snat: snat.iter().map(|s| s.to_string()).collect(),
            dnat: dnat.iter().map(|s| s.to_string()).collect(),
            no_state_file: true,
            ..Default::default()
        };
        let c = nat_config(&FileConfig::default(), &flags).expect("config");
        Rules::new(&c, &[], None).expect("rules")
    }

    const POOL: u32 = 0xC613_0201; // 198.19.2.1
    const FWD: u32 = 0xC613_0001; // 198.19.0.1

    #[test]
    fn the_steering_holds_the_rules_and_what_still_drains() {
        let r = rules(
            &["198.19.2.1:2000-2999"],
            &["tcp:198.19.0.1:80=198.18.0.2:8080"],
        );
        let s = desired(&r, &[], &[]);
        assert_eq!(s.nat.get(&POOL), Some(&(2000, 2999)));
        assert_eq!(s.nat.get(&FWD), Some(&(1, 0)), "a forward-only address");
        assert!(s.fwd.contains(&(FWD, 80, 6)));
        // A draining range on the pool address widens it; one on the forward address
        // replaces its empty range; a draining forward stays steered.
        let d = desired(
            &r,
            &[(POOL, 1024, 1999), (FWD, 3000, 3999)],
            &[(FWD, 443, 6)],
        );
        assert_eq!(d.nat.get(&POOL), Some(&(1024, 2999)));
        assert_eq!(d.nat.get(&FWD), Some(&(3000, 3999)));
        assert!(d.fwd.contains(&(FWD, 443, 6)) && d.fwd.contains(&(FWD, 80, 6)));
    }

    #[test]
    fn a_removed_rule_is_in_use_while_a_session_names_it() {
        let session = |org: Tuple, xlate: Tuple| Session {
            org,
            xlate,
            state: ConnState::TcpEstablished,
            idle_secs: 0,
        };
        // Inbound through forward 198.19.0.1:80 -> 198.18.0.2:8080.
        let fwd = session(
            Tuple::new(0xC613_0002, 5000, FWD, 80, 6),
            Tuple::new(0xC613_0002, 5000, 0xC612_0002, 8080, 6),
        );
        // Outbound through pool address 198.19.2.1, NAT port 2500.
        let out = session(
            Tuple::new(0xC612_0002, 40000, 0xC613_0002, 443, 6),
            Tuple::new(POOL, 2500, 0xC613_0002, 443, 6),
        );
        let f = Retired::Forward {
            addr: FWD,
            port: 80,
            proto: 6,
        };
        assert!(f.used_by(&fwd) && !f.used_by(&out));
        let udp = Retired::Forward {
            addr: FWD,
            port: 80,
            proto: 17,
        };
        assert!(!udp.used_by(&fwd));
        let r = Retired::Range {
            addr: POOL,
            lo: 2000,
            hi: 2999,
        };
        assert!(r.used_by(&out) && !r.used_by(&fwd));
        let other = Retired::Range {
            addr: POOL,
            lo: 3000,
            hi: 3999,
        };
        assert!(!other.used_by(&out));
    }
}
