//! AF_XDP sockets of one queue: an inside and an outside socket sharing one UMEM.
//!
//! Because both sockets of a queue are bound to the same UMEM, a frame received
//! on one interface is transmitted on the other by handing its descriptor to the
//! other socket's TX ring: the payload is never copied by xnat. (In copy mode the
//! kernel copies between its skb and the UMEM; in zero-copy mode the NIC DMAs
//! straight into and out of the UMEM.)

use std::os::fd::AsRawFd;

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::DataplaneError;

/// Requested zero-copy behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ZeroCopy {
    /// Zero-copy if the driver supports it, else copy mode.
    Auto,
    /// Zero-copy or fail.
    On,
    /// Always copy mode.
    Off,
}

/// Sizes of the per-queue UMEM and rings.
#[derive(Clone, Copy, Debug)]
pub struct RingSizes {
    /// UMEM frames per queue (both interfaces together).
    pub frames: u32,
    /// Descriptors per RX/TX/fill/completion ring.
    pub ring: u32,
}

impl Default for RingSizes {
    fn default() -> Self {
        RingSizes {
            frames: 8192,
            ring: 2048,
        }
    }
}

/// UMEM frame size in bytes.
pub const FRAME_SIZE: u32 = 4096;

/// The four rings of one socket.
pub struct Rings {
    /// Transmit ring.
    pub tx: TxQueue,
    /// Receive ring.
    pub rx: RxQueue,
    /// Fill ring (frames handed to the kernel for receiving).
    pub fq: FillQueue,
    /// Completion ring (frames the kernel has finished sending).
    pub cq: CompQueue,
    /// Whether the socket is bound in zero-copy mode.
    pub zero_copy: bool,
    /// Descriptors in each of its rings.
    pub ring_size: u32,
}

/// Both sockets of one queue and their shared UMEM.
pub struct QueueSockets {
    /// The shared UMEM.
    pub umem: Umem,
    /// Every frame of the UMEM, initially all free.
    pub frames: Vec<FrameDesc>,
    /// Socket on the inside interface.
    pub inside: Rings,
    /// Socket on the outside interface.
    pub outside: Rings,
}

const SOL_XDP: libc::c_int = 283;
const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;

const XDP_STATISTICS: libc::c_int = 7;

// Socket options of busy polling (asm-generic/socket.h; the values of x86_64 and arm64, which
// the libc crate does not export for every target).
const SO_BUSY_POLL: libc::c_int = 46;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// Microseconds a busy poll of the socket's NAPI context may spin (`SO_BUSY_POLL`) in
/// `--poll prefer-busy`.
pub const BUSY_POLL_USECS: u32 = 20;

/// Preferred busy polling of an AF_XDP socket (the kernel's AF_XDP documentation, "Preferred
/// busy polling"): the application drives the NIC's NAPI context from its own loop
/// (`recvfrom`/`sendto`), and with `napi_defer_hard_irqs` and `gro_flush_timeout` set on the
/// device the interrupts stay off while it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusyPoll {
    /// `SO_BUSY_POLL`: microseconds one busy poll may spin.
    pub usecs: u32,
    /// `SO_BUSY_POLL_BUDGET`: packets one busy poll may process.
    pub budget: u32,
}

/// The busy-poll options the kernel reads back from a socket (it has no getsockopt for
/// `SO_BUSY_POLL_BUDGET`: ENOPROTOOPT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusyPollOptions {
    /// `SO_PREFER_BUSY_POLL` (0 or 1).
    pub prefer: i32,
    /// `SO_BUSY_POLL` in microseconds.
    pub usecs: i32,
}

fn sockopt_int(fd: i32, name: libc::c_int) -> std::io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v`/`len` are valid for writes of the sizes given; the kernel writes at most
    // `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(v)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads `SO_PREFER_BUSY_POLL` and `SO_BUSY_POLL` of socket `fd`.
pub fn busy_poll_options(fd: i32) -> std::io::Result<BusyPollOptions> {
    Ok(BusyPollOptions {
        prefer: sockopt_int(fd, SO_PREFER_BUSY_POLL)?,
        usecs: sockopt_int(fd, SO_BUSY_POLL)?,
    })
}

/// Sets the busy-poll options of `bp` on socket `fd`; on failure the name of the option
/// that failed and the kernel's error.
pub fn set_busy_poll(fd: i32, bp: BusyPoll) -> Result<(), (&'static str, std::io::Error)> {
    let too_big = |name: &'static str| (name, std::io::Error::from_raw_os_error(libc::EINVAL));
    let usecs = libc::c_int::try_from(bp.usecs).map_err(|_| too_big("SO_BUSY_POLL"))?;
    let budget = libc::c_int::try_from(bp.budget).map_err(|_| too_big("SO_BUSY_POLL_BUDGET"))?;
    for (name, opt, val) in [
        ("SO_PREFER_BUSY_POLL", SO_PREFER_BUSY_POLL, 1),
        ("SO_BUSY_POLL", SO_BUSY_POLL, usecs),
        ("SO_BUSY_POLL_BUDGET", SO_BUSY_POLL_BUDGET, budget),
    ] {
        // SAFETY: `val` lives for the call and the length given is its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err((name, std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The kernel's counters of one AF_XDP socket (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Frames dropped for other reasons (e.g. larger than a UMEM frame).
    pub rx_dropped: u64,
    /// Frames dropped because the RX ring was full (the worker did not keep up).
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived (no buffer to receive into).
    pub rx_fill_ring_empty: u64,
}

/// Reads the kernel's statistics of AF_XDP socket `fd`.
pub fn socket_stats(fd: i32) -> Option<XskStats> {
    let mut v = [0u64; 6];
    let mut len = std::mem::size_of_val(&v) as libc::socklen_t;
    // SAFETY: `v`/`len` are valid for writes of the given size; the kernel writes at most
    // `len` bytes of struct xdp_statistics (six u64) and updates `len`.
    let rc =
        unsafe { libc::getsockopt(fd, SOL_XDP, XDP_STATISTICS, v.as_mut_ptr().cast(), &mut len) };
    // Layout: rx_dropped, rx_invalid_descs, tx_invalid_descs, rx_ring_full,
    // rx_fill_ring_empty_descs, tx_ring_empty_descs.
    (rc == 0).then_some(XskStats {
        rx_dropped: v[0],
        rx_ring_full: v[3],
        rx_fill_ring_empty: v[4],
    })
}

/// Reads XDP_OPTIONS of a bound AF_XDP socket and reports whether it is zero-copy.
pub fn is_zero_copy(fd: i32) -> bool {
    let mut opts: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `opts`/`len` are valid for writes of the sizes given; `fd` is an AF_XDP socket.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_OPTIONS,
            (&mut opts as *mut u32).cast(),
            &mut len,
        )
    };
    rc == 0 && opts & XDP_OPTIONS_ZEROCOPY != 0
}

fn bind(
    umem: &Umem,
    ifname: &str,
    queue: u32,
    zc: ZeroCopy,
    ring: QueueSize,
    busy_poll: Option<BusyPoll>,
) -> Result<Rings, DataplaneError> {
    let iface: Interface = ifname
        .parse()
        .map_err(|_| DataplaneError::NoSuchInterface(ifname.to_string()))?;
    let attempt = |mode: BindFlags| {
        let cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP | mode)
            .build();
        // SAFETY: the libxdp program load is inhibited (xnat attaches its own), which
        // is what xsk-rs requires for sockets sharing a UMEM; `umem` outlives the rings
        // because each ring holds a clone of it.
        unsafe { Socket::new(cfg, umem, &iface, queue) }
    };
    let (res, wanted) = match zc {
        ZeroCopy::On => (attempt(BindFlags::XDP_ZEROCOPY), "zero-copy"),
        ZeroCopy::Off => (attempt(BindFlags::XDP_COPY), "copy"),
        ZeroCopy::Auto => match attempt(BindFlags::XDP_ZEROCOPY) {
            Ok(r) => (Ok(r), "zero-copy"),
            Err(e) => {
                tracing::debug!(%ifname, queue, error = %e, "zero-copy bind failed, using copy mode");
                (attempt(BindFlags::XDP_COPY), "copy")
            }
        },
    };
    let (tx, rx, fqcq) = res.map_err(|e| DataplaneError::Socket {
        ifname: ifname.to_string(),
        queue,
        mode: wanted,
        reason: format!("{e}"),
    })?;
    let (fq, cq) = fqcq.ok_or_else(|| DataplaneError::Socket {
        ifname: ifname.to_string(),
        queue,
        mode: wanted,
        reason: "no fill/completion ring returned for a new (interface, queue) pair".into(),
    })?;
    let zero_copy = is_zero_copy(rx.fd().as_raw_fd());
    if let Some(bp) = busy_poll {
        set_busy_poll(rx.fd().as_raw_fd(), bp).map_err(|(option, error)| {
            DataplaneError::SocketOption {
                ifname: ifname.to_string(),
                queue,
                option,
                error,
            }
        })?;
    }
    Ok(Rings {
        tx,
        rx,
        fq,
        cq,
        zero_copy,
        ring_size: ring.get(),
    })
}

/// Creates the UMEM of `queue` and binds one socket to it on each interface; with
/// `busy_poll`, sets the busy-poll options on both sockets.
pub fn open_queue(
    inside: &str,
    outside: &str,
    queue: u32,
    zc: ZeroCopy,
    sizes: RingSizes,
    busy_poll: Option<BusyPoll>,
) -> Result<QueueSockets, DataplaneError> {
    let bad =
        |what: &str, v: u32| DataplaneError::Config(format!("{what} = {v} is not a power of two"));
    let ring = QueueSize::new(sizes.ring).map_err(|_| bad("ring size", sizes.ring))?;
    let frame_count =
        std::num::NonZeroU32::new(sizes.frames).ok_or_else(|| bad("frames", sizes.frames))?;
    let umem_cfg = UmemConfig::builder()
        .frame_size(FrameSize::new(FRAME_SIZE).map_err(|_| bad("frame size", FRAME_SIZE))?)
        .fill_queue_size(ring)
        .comp_queue_size(ring)
        .build()
        .map_err(|e| DataplaneError::Config(format!("UMEM config: {e}")))?;
    let (umem, frames) = Umem::new(umem_cfg, frame_count, false).map_err(|e| {
        let s = e.to_string();
        if s.contains("Cannot allocate memory") || s.contains("Operation not permitted") {
            DataplaneError::Memlock(format!(
                "creating a {} MiB UMEM: {s}",
                (sizes.frames as u64 * FRAME_SIZE as u64) >> 20
            ))
        } else {
            DataplaneError::Socket {
                ifname: inside.to_string(),
                queue,
                mode: "umem",
                reason: s,
            }
        }
    })?;
    let inside_name = inside;
    let inside = bind(&umem, inside_name, queue, zc, ring, busy_poll)?;
    let outside = match bind(&umem, outside, queue, zc, ring, busy_poll) {
        Ok(o) => o,
        // Mixed NICs: the inside driver took the shared UMEM in zero-copy mode, the
        // outside one cannot use it so. Both sockets share one UMEM (a frame goes out of
        // the other interface by descriptor), so both fall back to copy mode.
        Err(e) if zc == ZeroCopy::Auto && inside.zero_copy => {
            tracing::warn!(
                queue,
                inside = inside_name,
                outside,
                error = %e,
                "the inside interface supports AF_XDP zero copy, the outside one not with a shared UMEM: both run in copy mode"
            );
            drop(inside);
            drop(frames);
            drop(umem);
            return open_queue(inside_name, outside, queue, ZeroCopy::Off, sizes, busy_poll);
        }
        Err(DataplaneError::Socket { reason, .. }) if inside.zero_copy => {
            return Err(DataplaneError::Socket {
                ifname: outside.to_string(),
                queue,
                mode: "zero-copy",
                reason: format!(
                    "{reason}; '{inside_name}' runs in zero copy and shares its UMEM with '{outside}', whose driver cannot: use --zero-copy auto (both in copy mode) or off"
                ),
            });
        }
        Err(e) => return Err(e),
    };
    Ok(QueueSockets {
        umem,
        frames,
        inside,
        outside,
    })
}
