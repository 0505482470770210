//! Loading the steering program, attaching it through bpf_link, and filling its maps.
//!
//! The program itself lives in `bpf/steer.bpf.c`; its map layouts in `bpf/steer.h`.
//! A bpf_link is owned by this process: when the process exits for any reason,
//! SIGKILL included, the kernel closes the link's file descriptor and detaches the
//! program, so nothing stays attached.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};

use super::DataplaneError;

#[allow(clippy::all, unused_imports, dead_code, missing_docs)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/steer.skel.rs"));
}
use skel::{SteerSkel, SteerSkelBuilder};

/// Queues per interface the XSKMAP has room for (`XNAT_MAX_QUEUES` in steer.h).
pub const MAX_QUEUES: u32 = 128;

/// Role of an interface, as the steering program sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Private side: every IPv4 frame not for the gateway itself goes to the workers.
    Inside,
    /// Public side: only frames for NAT addresses/ports (or everything with `route_all`).
    Outside,
}

/// How the XDP program should be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports it, otherwise generic.
    Auto,
    /// Driver mode only; fail if the driver has no XDP support.
    Native,
    /// Generic (SKB) mode: works everywhere, slowest.
    Generic,
}

/// The mode an attachment ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedMode {
    /// XDP in the driver.
    Native,
    /// XDP on the generic (skb) path.
    Generic,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        })
    }
}

/// Why the steering program passed frames to the kernel (`XNAT_CNT_PASS_*` in steer.h,
/// in the same order).
pub const PASS_REASONS: [&str; 9] = [
    "short",
    "no_role",
    "l2_group",
    "not_our_mac",
    "not_ipv4",
    "ip_group",
    "host",
    "local",
    "not_steered",
];

/// Counters of the steering program, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SteerCounters {
    /// Frames redirected into an AF_XDP socket.
    pub redirected: u64,
    /// Frames passed to the kernel.
    pub passed: u64,
    /// Frames for the workers whose queue had no socket (passed to the kernel instead).
    pub redirect_failed: u64,
    /// Passed frames by reason ([`PASS_REASONS`]; only non-zero ones).
    #[serde(default)]
    pub passed_by_reason: std::collections::BTreeMap<String, u64>,
}

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;

/// The loaded steering program and the links that attach it.
pub struct Steering {
    skel: SteerSkel<'static>,
    links: Vec<(u32, OwnedFd)>,
    counters: std::sync::Arc<CounterReader>,
}

/// Reads the steering program's per-CPU counters from any thread.
#[derive(Debug)]
pub struct CounterReader {
    map: libbpf_rs::MapHandle,
}

impl CounterReader {
    /// Reads the counters and sums them over CPUs.
    pub fn read(&self) -> SteerCounters {
        let read = |idx: u32| -> u64 {
            match self.map.lookup_percpu(&idx.to_ne_bytes(), MapFlags::ANY) {
                Ok(Some(per_cpu)) => per_cpu
                    .iter()
                    .filter_map(|v| {
                        v.get(..8)
                            .and_then(|b| b.try_into().ok())
                            .map(u64::from_ne_bytes)
                    })
                    .sum(),
                _ => 0,
            }
        };
        let passed_by_reason = PASS_REASONS
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let v = read(3 + i as u32);
                (v > 0).then(|| (name.to_string(), v))
            })
            .collect();
        SteerCounters {
            redirected: read(0),
            passed: read(1),
            redirect_failed: read(2),
            passed_by_reason,
        }
    }
}

/// Returns the id of the XDP program attached to `ifindex`, if any.
pub fn attached_prog_id(ifindex: u32) -> Result<Option<u32>, DataplaneError> {
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as _,
        ..Default::default()
    };
    // SAFETY: `opts` is a properly sized, initialised bpf_xdp_query_opts that lives
    // for the duration of the call; libbpf only writes into it.
    let rc = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut opts) };
    if rc < 0 {
        return Err(DataplaneError::Bpf(format!(
            "querying XDP state of ifindex {ifindex}: {}",
            std::io::Error::from_raw_os_error(-rc)
        )));
    }
    Ok((opts.prog_id != 0).then_some(opts.prog_id))
}

fn attached_mode(ifindex: u32) -> Option<AttachedMode> {
    let mut opts = libbpf_sys::bpf_xdp_query_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_xdp_query_opts>() as _,
        ..Default::default()
    };
    // SAFETY: as in `attached_prog_id`.
    let rc = unsafe { libbpf_sys::bpf_xdp_query(ifindex as i32, 0, &mut opts) };
    if rc < 0 {
        return None;
    }
    match opts.attach_mode {
        XDP_ATTACHED_DRV => Some(AttachedMode::Native),
        XDP_ATTACHED_SKB => Some(AttachedMode::Generic),
        _ => None,
    }
}

impl Steering {
    /// Loads the program and creates its maps. Nothing is attached yet.
    pub fn load() -> Result<Self, DataplaneError> {
        // The skeleton borrows its object storage for as long as it lives; the
        // program lives for the whole run, so the storage is leaked once per load.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let open = SteerSkelBuilder::default()
            .open(storage)
            .map_err(|e| DataplaneError::Bpf(format!("opening the steering program: {e}")))?;
        let skel = open.load().map_err(|e| {
            let msg = e.to_string();
            if msg.contains("Operation not permitted") || msg.contains("EPERM") {
                DataplaneError::Privileges(format!("loading the XDP program failed: {msg}"))
            } else {
                DataplaneError::Bpf(format!("loading the steering program: {msg}"))
            }
        })?;
        let map = libbpf_rs::MapHandle::try_from(&skel.maps.counters)
            .map_err(|e| DataplaneError::Bpf(format!("duplicating the counters map: {e}")))?;
        Ok(Steering {
            skel,
            links: Vec::new(),
            counters: std::sync::Arc::new(CounterReader { map }),
        })
    }

    /// Attaches the program to `ifindex` through a bpf_link in the requested mode.
    ///
    /// Refuses if another XDP program is attached already.
    pub fn attach(
        &mut self,
        ifname: &str,
        ifindex: u32,
        mode: XdpMode,
    ) -> Result<AttachedMode, DataplaneError> {
        if let Some(id) = attached_prog_id(ifindex)? {
            return Err(DataplaneError::XdpBusy {
                ifname: ifname.to_string(),
                prog_id: id,
            });
        }
        let try_mode = |flags: u32| -> Result<OwnedFd, std::io::Error> {
            let prog_fd = self.skel.progs.xnat_steer.as_fd().as_raw_fd();
            let opts = libbpf_sys::bpf_link_create_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
                flags,
                ..Default::default()
            };
            // SAFETY: `prog_fd` is a loaded program owned by `self.skel`; `opts` is a
            // properly sized options struct living across the call.
            let fd = unsafe {
                libbpf_sys::bpf_link_create(prog_fd, ifindex as i32, libbpf_sys::BPF_XDP, &opts)
            };
            if fd < 0 {
                return Err(std::io::Error::from_raw_os_error(-fd));
            }
            // SAFETY: `fd` is a fresh link descriptor returned by the kernel and
            // owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let (fd, got) = match mode {
            XdpMode::Native => (
                try_mode(XDP_FLAGS_DRV_MODE).map_err(|e| attach_err(ifname, "native", e))?,
                AttachedMode::Native,
            ),
            XdpMode::Generic => (
                try_mode(XDP_FLAGS_SKB_MODE).map_err(|e| attach_err(ifname, "generic", e))?,
                AttachedMode::Generic,
            ),
            XdpMode::Auto => match try_mode(XDP_FLAGS_DRV_MODE) {
                Ok(fd) => (fd, AttachedMode::Native),
                Err(native) => {
                    tracing::info!(%ifname, error = %native, "native XDP unavailable, trying generic");
                    (
                        try_mode(XDP_FLAGS_SKB_MODE)
                            .map_err(|e| attach_err(ifname, "generic", e))?,
                        AttachedMode::Generic,
                    )
                }
            },
        };
        self.links.push((ifindex, fd));
        Ok(attached_mode(ifindex).unwrap_or(got))
    }

    /// Declares the role of an interface, its MAC address (frames to other MACs are never
    /// steered) and where its queues' sockets live in the XSKMAP.
    pub fn set_interface(
        &mut self,
        ifindex: u32,
        role: Role,
        xsk_base: u32,
        route_all: bool,
        mac: [u8; 6],
    ) -> Result<(), DataplaneError> {
        let mut v = [0u8; 12];
        v[0..4].copy_from_slice(&xsk_base.to_ne_bytes());
        v[4] = match role {
            Role::Inside => 1,
            Role::Outside => 2,
        };
        v[5] = u8::from(route_all);
        v[6..12].copy_from_slice(&mac);
        update(&self.skel.maps.ifaces, &ifindex.to_ne_bytes(), &v, "ifaces")
    }

    /// Marks `addr` (host order) as a NAT address owning ports `lo..=hi`.
    pub fn add_nat_addr(&mut self, addr: u32, lo: u16, hi: u16) -> Result<(), DataplaneError> {
        let mut v = [0u8; 4];
        v[0..2].copy_from_slice(&lo.to_ne_bytes());
        v[2..4].copy_from_slice(&hi.to_ne_bytes());
        update(
            &self.skel.maps.nat_addrs,
            &addr.to_be_bytes(),
            &v,
            "nat_addrs",
        )
    }

    /// Makes sure `addr` (host order) is looked at by the NAT branch of the steering
    /// program, so its port-forward rules apply; an address already known keeps its range.
    pub fn add_forward_addr(&mut self, addr: u32) -> Result<(), DataplaneError> {
        let empty = [1u8, 0, 0, 0]; // port_lo 1 > port_hi 0: no NAT ports of its own
        match self
            .skel
            .maps
            .nat_addrs
            .update(&addr.to_be_bytes(), &empty, MapFlags::NO_EXIST)
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(DataplaneError::Bpf(format!(
                "updating BPF map nat_addrs: {e}"
            ))),
        }
    }

    /// Steers `proto` traffic to `addr:port` (host order) to the workers (port forwarding).
    pub fn add_forward_rule(
        &mut self,
        addr: u32,
        port: u16,
        proto: u8,
    ) -> Result<(), DataplaneError> {
        update(
            &self.skel.maps.fwd_rules,
            &fwd_key(addr, port, proto),
            &[1],
            "fwd_rules",
        )
    }

    /// Forgets NAT address `addr` (host order) and its range: its traffic goes to the kernel
    /// again (`xnat reload` once no connection uses it). Absent already is fine.
    pub fn remove_nat_addr(&mut self, addr: u32) -> Result<(), DataplaneError> {
        remove(&self.skel.maps.nat_addrs, &addr.to_be_bytes(), "nat_addrs")
    }

    /// Stops steering `proto` traffic to `addr:port` (host order) to the workers.
    pub fn remove_forward_rule(
        &mut self,
        addr: u32,
        port: u16,
        proto: u8,
    ) -> Result<(), DataplaneError> {
        remove(
            &self.skel.maps.fwd_rules,
            &fwd_key(addr, port, proto),
            "fwd_rules",
        )
    }

    /// Declares `addr` (host order) as one of the gateway's own addresses.
    pub fn add_local_addr(&mut self, addr: u32) -> Result<(), DataplaneError> {
        update(
            &self.skel.maps.local_addrs,
            &addr.to_be_bytes(),
            &[1],
            "local_addrs",
        )
    }

    /// Forgets `addr` (host order) as one of the gateway's own addresses (it was removed
    /// from its interface). Absent already is fine.
    pub fn remove_local_addr(&mut self, addr: u32) -> Result<(), DataplaneError> {
        remove(
            &self.skel.maps.local_addrs,
            &addr.to_be_bytes(),
            "local_addrs",
        )
    }

    /// Inserts an AF_XDP socket into XSKMAP slot `slot`.
    pub fn register_socket(&mut self, slot: u32, fd: i32) -> Result<(), DataplaneError> {
        update(
            &self.skel.maps.xsks,
            &slot.to_ne_bytes(),
            &fd.to_ne_bytes(),
            "xsks",
        )
    }

    /// A reader of the program's counters that can be sent to other threads.
    pub fn counters(&self) -> std::sync::Arc<CounterReader> {
        std::sync::Arc::clone(&self.counters)
    }

    /// Runs the program once on `frame` as if it arrived on queue 0 of `ifindex`
    /// (BPF_PROG_TEST_RUN: nothing is sent or redirected) and returns its XDP action. The
    /// decision shows in the counters: a redirect to a queue without socket counts as
    /// `redirect_failed`, a pass by its reason. For tests of the steering rules.
    pub fn test_run(&self, frame: &[u8], ifindex: u32) -> Result<u32, DataplaneError> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. For a test run data is the metadata length (none) and data_end
        // the frame's length.
        let len = u32::try_from(frame.len())
            .map_err(|_| DataplaneError::Bpf("test frame too long".into()))?;
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&len.to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; frame.len() + 256];
        let input = libbpf_rs::ProgramInput {
            context_in: Some(&mut ctx),
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        self.skel
            .progs
            .xnat_steer
            .test_run(input)
            .map(|o| o.return_value)
            .map_err(|e| DataplaneError::Bpf(format!("BPF_PROG_TEST_RUN: {e}")))
    }

    /// Detaches the program from every interface now (also happens on drop and on exit).
    pub fn detach_all(&mut self) {
        self.links.clear();
    }
}

/// Key of the `fwd_rules` map (bpf/steer.bpf.c): address in network order, port as the
/// program reads it from the packet, protocol, one byte of padding.
fn fwd_key(addr: u32, port: u16, proto: u8) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0..4].copy_from_slice(&addr.to_be_bytes());
    k[4..6].copy_from_slice(&port.to_ne_bytes());
    k[6] = proto;
    k
}

fn update(
    map: &libbpf_rs::MapMut<'_>,
    key: &[u8],
    value: &[u8],
    name: &str,
) -> Result<(), DataplaneError> {
    map.update(key, value, MapFlags::ANY)
        .map_err(|e| DataplaneError::Bpf(format!("updating BPF map {name}: {e}")))
}

fn remove(map: &libbpf_rs::MapMut<'_>, key: &[u8], name: &str) -> Result<(), DataplaneError> {
    match map.delete(key) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataplaneError::Bpf(format!(
            "deleting from BPF map {name}: {e}"
        ))),
    }
}

fn attach_err(ifname: &str, mode: &str, e: std::io::Error) -> DataplaneError {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            DataplaneError::Privileges(format!("attaching XDP to {ifname}: {e}"))
        }
        Some(libc::EBUSY) | Some(libc::EEXIST) => DataplaneError::XdpBusy {
            ifname: ifname.to_string(),
            prog_id: attached_prog_id_quiet(ifname),
        },
        _ => DataplaneError::Attach {
            ifname: ifname.to_string(),
            mode: mode.to_string(),
            reason: e.to_string(),
        },
    }
}

fn attached_prog_id_quiet(ifname: &str) -> u32 {
    super::iface::ifindex(ifname)
        .ok()
        .and_then(|i| attached_prog_id(i).ok().flatten())
        .unwrap_or(0)
}
