//! The AF_XDP dataplane: steering program, sockets, per-queue workers, next hops.
//!
//! This module owns everything that touches the kernel on the packet path. It
//! knows nothing of NAT rules: a worker calls a [`worker::Handler`] for every frame
//! and transmits it where the handler says.

pub mod bpf;
pub mod forward;
pub mod iface;
pub mod nexthop;
pub mod worker;
pub mod xsk;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

pub use bpf::{AttachedMode, Role, Steering, XdpMode};
pub use worker::{Action, Handler, PollMode, Port, WorkerStats};
pub use xsk::{BusyPoll, RingSizes, ZeroCopy};

/// Everything that can go wrong bringing the dataplane up.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The interface does not exist.
    #[error("interface '{0}' does not exist (list interfaces with `ip link`)")]
    NoSuchInterface(String),
    /// The interface exists but is down.
    #[error("interface '{0}' is down; bring it up with `ip link set {0} up`")]
    InterfaceDown(String),
    /// A queue number the interface does not have.
    #[error("queue {queue} is out of range for interface '{ifname}', which has {available} RX queue(s) (0..{available}); raise it with `ethtool -L {ifname} combined N` or use --queues {available}")]
    QueueOutOfRange {
        /// Interface name.
        ifname: String,
        /// Requested queue.
        queue: u32,
        /// Queues available.
        available: u32,
    },
    /// A core this machine does not have.
    #[error("core {core} is out of range: this process may run on cores {available}; choose --cores from those")]
    CoreOutOfRange {
        /// Requested core.
        core: usize,
        /// Cores available to this process.
        available: String,
    },
    /// The interface has RX queues no worker would serve.
    #[error("interface '{ifname}' has {have} RX queue(s) but --queues serves {served}: traffic on the others would bypass the NAT. Use --queues {have}, or reduce the queues with `ethtool -L {ifname} combined {served}`")]
    UnservedQueues {
        /// Interface name.
        ifname: String,
        /// RX queues it has.
        have: u32,
        /// Queues served.
        served: u32,
    },
    /// Not allowed to load BPF / create AF_XDP sockets.
    #[error("insufficient privileges: {0}; run as root or grant CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON and CAP_IPC_LOCK")]
    Privileges(String),
    /// The locked-memory limit is too low for the UMEM.
    #[error("locked-memory limit too low: {0}; raise it with `ulimit -l unlimited` (or LimitMEMLOCK=infinity in systemd), or use fewer --frames")]
    Memlock(String),
    /// Another XDP program is attached already.
    #[error("another XDP program (id {prog_id}) is already attached to '{ifname}'; xnat will not replace it. Detach it with `ip link set dev {ifname} xdp off` if it is not needed")]
    XdpBusy {
        /// Interface name.
        ifname: String,
        /// The attached program.
        prog_id: u32,
    },
    /// Attaching failed for another reason.
    #[error(
        "attaching XDP in {mode} mode to '{ifname}' failed: {reason} (try --xdp-mode generic)"
    )]
    Attach {
        /// Interface name.
        ifname: String,
        /// Requested mode.
        mode: String,
        /// Kernel's reason.
        reason: String,
    },
    /// AF_XDP socket creation failed.
    #[error("creating the AF_XDP socket ({mode}) on '{ifname}' queue {queue} failed: {reason}")]
    Socket {
        /// Interface name.
        ifname: String,
        /// Queue.
        queue: u32,
        /// What was attempted.
        mode: &'static str,
        /// Reason.
        reason: String,
    },
    /// Setting a socket option on an AF_XDP socket failed.
    #[error("setting {option} on the AF_XDP socket of '{ifname}' queue {queue} failed: {error} (--poll prefer-busy needs Linux 5.11 or later, and CAP_NET_ADMIN to raise the busy-poll time or budget)")]
    SocketOption {
        /// Interface name.
        ifname: String,
        /// Queue.
        queue: u32,
        /// The option (`SO_PREFER_BUSY_POLL`, ...).
        option: &'static str,
        /// The kernel's error.
        error: std::io::Error,
    },
    /// BPF object or map trouble.
    #[error("BPF: {0}")]
    Bpf(String),
    /// Invalid dataplane settings.
    #[error("invalid setting: {0}")]
    Config(String),
}

/// Settings of the dataplane.
#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    /// Inside (private) interface.
    pub inside: String,
    /// Outside (public) interface.
    pub outside: String,
    /// Queue ids to serve, one worker each.
    pub queues: Vec<u32>,
    /// Cores to pin workers to (worker i gets `cores[i % len]`); empty: no pinning.
    pub cores: Vec<usize>,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Zero-copy request.
    pub zero_copy: ZeroCopy,
    /// UMEM and ring sizes.
    pub sizes: RingSizes,
    /// RX batch size.
    pub batch: usize,
    /// Idle behaviour.
    pub poll: PollMode,
    /// Steer every outside IPv4 frame not for the gateway to the workers (router mode).
    pub outside_route_all: bool,
    /// How often routes and neighbours are re-read.
    pub neighbour_refresh: Duration,
    /// Which ports' frames are checked for partial TCP/UDP checksums.
    pub checksum_completion: ChecksumCompletion,
}

/// Which ports' received frames are checked for a partial TCP/UDP checksum, to be
/// completed (see `packet::offload`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ChecksumCompletion {
    /// Every port but those whose frames come from a wire (a bus device with a driver
    /// that is not paravirtual): no sender on a wire leaves a checksum partial.
    #[default]
    Auto,
    /// Every port.
    Always,
}

/// What a handler factory gets to know about the ports.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// Interface indexes (inside, outside).
    pub ifindex: [u32; 2],
    /// MAC addresses (inside, outside).
    pub mac: [[u8; 6]; 2],
    /// First IPv4 address of each interface (0: none), the source of ICMP errors.
    pub addr: [u32; 2],
    /// Whether frames received on each port may carry a partial TCP/UDP checksum, which
    /// the worker then looks for and completes (see [`ChecksumCompletion`]).
    pub partial_csum: [bool; 2],
}

/// Static facts of a running dataplane, for logs and stats.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct RunInfo {
    /// Inside interface.
    pub inside: String,
    /// Outside interface.
    pub outside: String,
    /// Queues served.
    pub queues: Vec<u32>,
    /// Core of each worker (None: not pinned).
    pub cores: Vec<Option<usize>>,
    /// XDP mode on (inside, outside).
    pub xdp_mode: [AttachedMode; 2],
    /// Whether every socket is zero-copy.
    pub zero_copy: bool,
    /// "zero-copy" or "copy".
    pub xsk_mode: String,
    /// Whether each port's frames are checked for partial checksums (inside, outside),
    /// and what the port is ("virtual", its driver), see [`ChecksumCompletion`].
    #[serde(default)]
    pub checksum_completion: [(bool, String); 2],
}

/// Checks everything that can be checked before touching the kernel.
pub fn validate(cfg: &DataplaneConfig) -> Result<Ports, DataplaneError> {
    if cfg.inside == cfg.outside {
        return Err(DataplaneError::Config(format!(
            "inside and outside interface are both '{}'",
            cfg.inside
        )));
    }
    let mut ifindex = [0u32; 2];
    let mut mac = [[0u8; 6]; 2];
    for (i, name) in [&cfg.inside, &cfg.outside].into_iter().enumerate() {
        ifindex[i] = iface::ifindex(name)?;
        if !iface::is_up(name)? {
            return Err(DataplaneError::InterfaceDown(name.clone()));
        }
        mac[i] = iface::mac(name)?;
        if let Ok(Some(prog_id)) = bpf::attached_prog_id(ifindex[i]) {
            return Err(DataplaneError::XdpBusy {
                ifname: name.clone(),
                prog_id,
            });
        }
        let have = iface::rx_queues(name)?;
        let available = have.min(bpf::MAX_QUEUES);
        if let Some(&q) = cfg.queues.iter().find(|&&q| q >= available) {
            return Err(DataplaneError::QueueOutOfRange {
                ifname: name.clone(),
                queue: q,
                available,
            });
        }
        // Every RX queue must be served: the NIC's RSS spreads flows over all of them, and
        // a frame on an unserved queue would otherwise reach the kernel untranslated.
        if (0..have).any(|q| !cfg.queues.contains(&q)) {
            return Err(DataplaneError::UnservedQueues {
                ifname: name.clone(),
                have,
                served: cfg.queues.len() as u32,
            });
        }
    }
    if cfg.queues.is_empty() {
        return Err(DataplaneError::Config("no queues to serve".into()));
    }
    // The cores this process may run on (its affinity mask: taskset, systemd CPUAffinity,
    // a container's cpuset), not merely how many the machine has.
    let allowed: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id)
        .collect();
    if let Some(&core) = cfg.cores.iter().find(|c| !allowed.contains(c)) {
        return Err(DataplaneError::CoreOutOfRange {
            core,
            available: allowed
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
        });
    }
    let caps_ok = iface::has_cap(iface::CAP_NET_ADMIN)
        && iface::has_cap(iface::CAP_NET_RAW)
        && ((iface::has_cap(iface::CAP_BPF) && iface::has_cap(iface::CAP_PERFMON))
            || iface::has_cap(iface::CAP_SYS_ADMIN));
    if !caps_ok {
        return Err(DataplaneError::Privileges(
            "loading XDP programs and creating AF_XDP sockets needs CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and CAP_PERFMON".into(),
        ));
    }
    if !iface::has_cap(iface::CAP_IPC_LOCK) {
        let ring_bytes = 4 * u64::from(cfg.sizes.ring) * 16 * 2;
        let need = cfg.queues.len() as u64
            * (u64::from(cfg.sizes.frames) * u64::from(xsk::FRAME_SIZE) + ring_bytes);
        let limit = raise_memlock(need);
        if limit < need {
            return Err(DataplaneError::Memlock(format!(
                "the UMEMs of {} queue(s) need {} KiB of locked memory, the limit is {} KiB and CAP_IPC_LOCK is missing",
                cfg.queues.len(),
                need >> 10,
                limit >> 10
            )));
        }
    }
    let addr = [&cfg.inside, &cfg.outside].map(|n| {
        iface::ipv4_addrs(n)
            .first()
            .map(|a| u32::from(*a))
            .unwrap_or(0)
    });
    let partial_csum = checksum_completion(cfg).map(|(on, _)| on);
    Ok(Ports {
        ifindex,
        mac,
        addr,
        partial_csum,
    })
}

/// Per port (inside, outside): whether its frames are checked for partial checksums, and
/// what the port is.
pub fn checksum_completion(cfg: &DataplaneConfig) -> [(bool, String); 2] {
    [&cfg.inside, &cfg.outside].map(|n| {
        let (possible, what) = iface::partial_checksums(n);
        (
            possible || cfg.checksum_completion == ChecksumCompletion::Always,
            what,
        )
    })
}

/// Raises the soft RLIMIT_MEMLOCK towards the hard limit; returns the resulting soft limit.
fn raise_memlock(need: u64) -> u64 {
    let cur = iface::memlock_limit();
    if cur >= need {
        return cur;
    }
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for getrlimit to fill and setrlimit to read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &r);
        }
    }
    iface::memlock_limit()
}

/// A running dataplane.
pub struct Dataplane {
    steering: Steering,
    workers: Vec<JoinHandle<()>>,
    resolver: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Per-worker counters, in queue order.
    pub stats: Vec<Arc<WorkerStats>>,
    /// Drop reason names of the handler.
    pub drop_reasons: &'static [&'static str],
    /// Static facts.
    pub info: RunInfo,
    /// Shared next-hop table.
    pub next_hops: Arc<nexthop::NextHops>,
    /// The steering program's counters.
    pub xdp_counters: Arc<bpf::CounterReader>,
    /// AF_XDP socket descriptors of each worker (inside, outside), for the kernel's socket
    /// statistics. Valid while the dataplane runs.
    pub xsk_fds: Vec<[i32; 2]>,
    /// The gateway's own addresses the steering program knows (host order).
    local_addrs: std::collections::BTreeSet<u32>,
    /// Names of the inside and outside interfaces.
    ports: [String; 2],
}

/// The IPv4 addresses (host order) of the gateway's two interfaces.
fn own_addrs(cfg: &DataplaneConfig) -> std::collections::BTreeSet<u32> {
    [&cfg.inside, &cfg.outside]
        .into_iter()
        .flat_map(|n| iface::ipv4_addrs(n))
        .map(u32::from)
        .collect()
}

impl Dataplane {
    /// Validates, loads and attaches the steering program, opens the sockets and
    /// starts one pinned worker per queue running the handler `make` builds.
    ///
    /// `steer` fills the steering program's NAT maps before anything is attached.
    /// On any error everything done so far is undone (links and sockets closed).
    pub fn start<H, S, M>(
        cfg: &DataplaneConfig,
        steer: S,
        mut make: M,
    ) -> Result<Dataplane, DataplaneError>
    where
        H: Handler + 'static,
        S: FnOnce(&mut Steering) -> Result<(), DataplaneError>,
        M: FnMut(u32, nexthop::NextHopView, Ports) -> H,
    {
        let ports = validate(cfg)?;
        let mut steering = Steering::load()?;
        steering.set_interface(ports.ifindex[0], Role::Inside, 0, false, ports.mac[0])?;
        steering.set_interface(
            ports.ifindex[1],
            Role::Outside,
            bpf::MAX_QUEUES,
            cfg.outside_route_all,
            ports.mac[1],
        )?;
        let local_addrs = own_addrs(cfg);
        for &a in &local_addrs {
            steering.add_local_addr(a)?;
        }
        steer(&mut steering)?;

        let mut sockets = Vec::with_capacity(cfg.queues.len());
        for &q in &cfg.queues {
            let s = xsk::open_queue(
                &cfg.inside,
                &cfg.outside,
                q,
                cfg.zero_copy,
                cfg.sizes,
                cfg.poll.busy_poll(cfg.batch),
            )?;
            use std::os::fd::AsRawFd;
            steering.register_socket(q, s.inside.rx.fd().as_raw_fd())?;
            steering.register_socket(bpf::MAX_QUEUES + q, s.outside.rx.fd().as_raw_fd())?;
            sockets.push(s);
        }
        let zero_copy = sockets
            .iter()
            .all(|s| s.inside.zero_copy && s.outside.zero_copy);
        let xsk_fds: Vec<[i32; 2]> = {
            use std::os::fd::AsRawFd;
            sockets
                .iter()
                .map(|s| [s.inside.rx.fd().as_raw_fd(), s.outside.rx.fd().as_raw_fd()])
                .collect()
        };
        let xdp_in = steering.attach(&cfg.inside, ports.ifindex[0], cfg.xdp_mode)?;
        let xdp_out = steering.attach(&cfg.outside, ports.ifindex[1], cfg.xdp_mode)?;

        let next_hops = nexthop::NextHops::new();
        if let Err(e) = next_hops.refresh() {
            tracing::warn!(error = %e, "initial route/neighbour dump failed");
        }
        next_hops.prime(&ports.ifindex);
        let stop = Arc::new(AtomicBool::new(false));
        let resolver = {
            let nh = Arc::clone(&next_hops);
            let stop = Arc::clone(&stop);
            let period = cfg.neighbour_refresh;
            std::thread::Builder::new()
                .name("xnat-nexthop".into())
                .spawn(move || nh.run_resolver(stop, period))
                .map_err(|e| DataplaneError::Config(format!("spawning the resolver thread: {e}")))?
        };

        let core_ids = core_affinity::get_core_ids().unwrap_or_default();
        let mut workers = Vec::new();
        let mut stats = Vec::new();
        let mut cores = Vec::new();
        let mut drop_reasons: &'static [&'static str] = &[];
        for (i, (s, &q)) in sockets.into_iter().zip(&cfg.queues).enumerate() {
            let handler = make(q, next_hops.view(), ports);
            drop_reasons = handler.drop_reasons();
            let st = Arc::new(WorkerStats::default());
            stats.push(Arc::clone(&st));
            let core = (!cfg.cores.is_empty()).then(|| cfg.cores[i % cfg.cores.len()]);
            cores.push(core);
            let core_id = core.and_then(|c| core_ids.iter().find(|id| id.id == c).copied());
            let stop = Arc::clone(&stop);
            let w = worker::Worker::new(q, s, handler, st, cfg.batch, cfg.poll);
            let h = std::thread::Builder::new()
                .name(format!("xnat-q{q}"))
                .spawn(move || {
                    if let Some(id) = core_id {
                        if !core_affinity::set_for_current(id) {
                            tracing::warn!(queue = q, core = id.id, "could not pin worker");
                        }
                    }
                    w.run(&stop);
                })
                .map_err(|e| DataplaneError::Config(format!("spawning worker {q}: {e}")))?;
            workers.push(h);
        }
        let info = RunInfo {
            inside: cfg.inside.clone(),
            outside: cfg.outside.clone(),
            queues: cfg.queues.clone(),
            cores,
            xdp_mode: [xdp_in, xdp_out],
            zero_copy,
            xsk_mode: if zero_copy { "zero-copy" } else { "copy" }.to_string(),
            checksum_completion: checksum_completion(cfg),
        };
        Ok(Dataplane {
            workers,
            resolver: Some(resolver),
            stop,
            stats,
            drop_reasons,
            info,
            next_hops,
            xdp_counters: steering.counters(),
            xsk_fds,
            steering,
            local_addrs,
            ports: [cfg.inside.clone(), cfg.outside.clone()],
        })
    }

    /// The queue of a worker that ended while the dataplane was not stopping (it
    /// panicked), if any.
    pub fn dead_worker(&self) -> Option<u32> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        self.workers
            .iter()
            .zip(&self.info.queues)
            .find(|(w, _)| w.is_finished())
            .map(|(_, &q)| q)
    }

    /// The steering program's maps, to change NAT addresses and port forwards while the
    /// workers run (`xnat reload`).
    pub fn steering_mut(&mut self) -> &mut Steering {
        &mut self.steering
    }

    /// Brings the steering program's list of the gateway's own addresses up to date with
    /// its interfaces (after an address notification: DHCP, PPPoE, an administrator):
    /// traffic to a new address reaches the host's kernel, a removed one is forgotten.
    pub fn sync_local_addrs(&mut self) -> Result<(), DataplaneError> {
        let now: std::collections::BTreeSet<u32> = self
            .ports
            .iter()
            .flat_map(|n| iface::ipv4_addrs(n))
            .map(u32::from)
            .collect();
        for &a in now.difference(&self.local_addrs) {
            self.steering.add_local_addr(a)?;
        }
        for &a in self.local_addrs.difference(&now) {
            self.steering.remove_local_addr(a)?;
        }
        self.local_addrs = now;
        Ok(())
    }

    /// The stop flag shared with the workers.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Stops the workers, joins them and detaches XDP.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(r) = self.resolver.take() {
            let _ = r.join();
        }
        self.steering.detach_all();
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
