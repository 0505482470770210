//! One AF_XDP socket with a UMEM of its own (the generator and the sink never share UMEMs
//! between queues or interfaces).

use std::os::fd::AsRawFd;

use anyhow::{anyhow, bail, Context};
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::ZeroCopy;
use xnat::dataplane::xsk::is_zero_copy;

/// UMEM frame size: holds a 1514-byte frame after the 256-byte XDP headroom.
pub const FRAME_SIZE: u32 = 2048;

/// A bound socket and its UMEM.
pub struct Xsk {
    /// The UMEM.
    pub umem: Umem,
    /// All its frames, initially free.
    pub frames: Vec<FrameDesc>,
    /// TX ring.
    pub tx: TxQueue,
    /// RX ring.
    pub rx: RxQueue,
    /// Fill ring.
    pub fq: FillQueue,
    /// Completion ring.
    pub cq: CompQueue,
    /// Bound in zero-copy mode.
    pub zero_copy: bool,
}

fn qsize(what: &str, n: u32) -> anyhow::Result<QueueSize> {
    QueueSize::new(n).map_err(|_| anyhow!("{what} = {n} is not a power of two"))
}

/// Creates a UMEM of `frames` frames and binds a socket on (`ifname`, `queue`) to it.
/// `rx_ring`/`tx_ring` size the socket's rings, `fill_comp` the UMEM's.
pub fn open(
    ifname: &str,
    queue: u32,
    zc: ZeroCopy,
    frames: u32,
    rx_ring: u32,
    tx_ring: u32,
    fill_comp: u32,
) -> anyhow::Result<Xsk> {
    let iface: Interface = ifname
        .parse()
        .map_err(|_| anyhow!("bad interface name '{ifname}'"))?;
    let fc = qsize("ring size", fill_comp)?;
    let rxq = qsize("ring size", rx_ring)?;
    let txq = qsize("ring size", tx_ring)?;
    if !frames.is_power_of_two() {
        bail!("frames = {frames} is not a power of two");
    }
    let frame_count = std::num::NonZeroU32::new(frames).context("frames must not be 0")?;
    let cfg = UmemConfig::builder()
        .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| anyhow!("frame size: {e}"))?)
        .fill_queue_size(fc)
        .comp_queue_size(fc)
        .build()
        .map_err(|e| anyhow!("UMEM config: {e}"))?;
    let (umem, descs) = Umem::new(cfg, frame_count, false)
        .map_err(|e| anyhow!("creating a UMEM of {frames} frames for {ifname} queue {queue}: {e} (root, and enough locked memory?)"))?;
    let attempt = |mode: BindFlags| {
        let cfg = SocketConfig::builder()
            .rx_queue_size(rxq)
            .tx_queue_size(txq)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP | mode)
            .build();
        // SAFETY: the libxdp program load is inhibited (the sink attaches its own program,
        // the sender needs none), as xsk-rs requires; each ring holds a clone of `umem`,
        // so the UMEM outlives them.
        unsafe { Socket::new(cfg, &umem, &iface, queue) }
    };
    let res = match zc {
        ZeroCopy::On => attempt(BindFlags::XDP_ZEROCOPY),
        ZeroCopy::Off => attempt(BindFlags::XDP_COPY),
        ZeroCopy::Auto => match attempt(BindFlags::XDP_ZEROCOPY) {
            Ok(r) => Ok(r),
            Err(_) => attempt(BindFlags::XDP_COPY),
        },
    };
    let (tx, rx, fqcq) = res.map_err(|e| {
        anyhow!("binding an AF_XDP socket to {ifname} queue {queue}: {e} (does the interface exist, is it up, has it that many queues?)")
    })?;
    let (fq, cq) = fqcq.context("no fill/completion ring returned for a fresh UMEM")?;
    let zero_copy = is_zero_copy(rx.fd().as_raw_fd());
    Ok(Xsk {
        umem,
        frames: descs,
        tx,
        rx,
        fq,
        cq,
        zero_copy,
    })
}

/// Index of interface `name`.
pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| anyhow!("bad interface name '{name}'"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface '{name}' in this network namespace");
    }
    Ok(i)
}

/// The MAC address of interface `name`, from sysfs.
pub fn iface_mac(name: &str) -> anyhow::Result<xnat::packet::ether::MacAddr> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
        .with_context(|| format!("reading the MAC address of {name}"))?;
    crate::parse_mac(s.trim()).map_err(|e| anyhow!("MAC address of {name}: {e}"))
}
