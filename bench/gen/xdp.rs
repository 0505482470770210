//! The sink's XDP program, written as raw BPF instructions (no compiler needed): IPv4 UDP
//! and TCP frames go to the AF_XDP socket of their RX queue (if there is one), everything
//! else (ARP above all, so the neighbour can still resolve us) is passed to the kernel.
//!
//! ```text
//!  0: r6 = r1                      ; ctx
//!  1: r2 = *(u32 *)(r1 + 0)        ; data
//!  2: r3 = *(u32 *)(r1 + 4)        ; data_end
//!  3: r4 = r2
//!  4: r4 += 34                     ; Ethernet + minimal IPv4 header
//!  5: if r4 > r3 goto pass
//!  6: r5 = *(u16 *)(r2 + 12)       ; EtherType
//!  7: if r5 != htons(0x0800) goto pass
//!  8: r5 = *(u8 *)(r2 + 23)        ; IPv4 protocol
//!  9: if r5 == 17 goto redirect
//! 10: if r5 != 6 goto pass
//! redirect:
//! 11: r2 = *(u32 *)(r6 + 16)       ; rx_queue_index
//! 12: r1 = map_fd (2 slots)
//! 14: r3 = XDP_PASS                ; action if no socket is on this queue
//! 15: call bpf_redirect_map
//! 16: exit
//! pass:
//! 17: r0 = XDP_PASS
//! 18: exit
//! ```
//!
//! The program is attached through a bpf_link: the kernel detaches it when the link's file
//! descriptor is closed, i.e. when the sink exits for any reason, SIGKILL included.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{anyhow, bail};

use crate::XdpMode;

/// One BPF instruction, laid out like `struct bpf_insn` on a little-endian machine
/// (`regs` = dst_reg in the low nibble, src_reg in the high one).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

#[cfg(target_endian = "big")]
compile_error!("the raw BPF encoding in bench/gen/xdp.rs assumes a little-endian machine");

const _: () = assert!(std::mem::size_of::<Insn>() == std::mem::size_of::<libbpf_sys::bpf_insn>());
const _: () = assert!(std::mem::align_of::<Insn>() == std::mem::align_of::<libbpf_sys::bpf_insn>());

const fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const LDX_B: u8 = 0x71;
const JGT_X: u8 = 0x2d;
const JEQ_K: u8 = 0x15;
const JNE_K: u8 = 0x55;
const LD_IMM64: u8 = 0x18;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const PSEUDO_MAP_FD: u8 = 1;
const XDP_PASS: i32 = 2;
const FN_REDIRECT_MAP: i32 = 51;

fn program(map_fd: i32) -> [Insn; 19] {
    let ethertype_ipv4 = u16::from_ne_bytes([0x08, 0x00]) as i32;
    [
        ins(MOV64_X, 6, 1, 0, 0),
        ins(LDX_W, 2, 1, 0, 0),
        ins(LDX_W, 3, 1, 4, 0),
        ins(MOV64_X, 4, 2, 0, 0),
        ins(ADD64_K, 4, 0, 0, 34),
        ins(JGT_X, 4, 3, 11, 0),
        ins(LDX_H, 5, 2, 12, 0),
        ins(JNE_K, 5, 0, 9, ethertype_ipv4),
        ins(LDX_B, 5, 2, 23, 0),
        ins(JEQ_K, 5, 0, 1, 17),
        ins(JNE_K, 5, 0, 6, 6),
        ins(LDX_W, 2, 6, 16, 0),
        ins(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd),
        ins(0, 0, 0, 0, 0),
        ins(MOV64_K, 3, 0, 0, XDP_PASS),
        ins(CALL, 0, 0, 0, FN_REDIRECT_MAP),
        ins(EXIT, 0, 0, 0, 0),
        ins(MOV64_K, 0, 0, 0, XDP_PASS),
        ins(EXIT, 0, 0, 0, 0),
    ]
}

/// The loaded program, its XSKMAP and the link attaching it. Dropping it detaches.
pub struct Redirect {
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    /// The mode it was attached in.
    pub mode: &'static str,
}

fn owned(fd: i32, what: &str) -> anyhow::Result<OwnedFd> {
    if fd < 0 {
        bail!("{what}: {}", std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: `fd` is a fresh descriptor returned by libbpf and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Redirect {
    /// Loads the program with an XSKMAP of `entries` slots and attaches it to `ifindex`.
    pub fn attach(
        ifname: &str,
        ifindex: u32,
        entries: u32,
        mode: XdpMode,
    ) -> anyhow::Result<Redirect> {
        // SAFETY: the name is a NUL-terminated literal, the options pointer may be NULL.
        let map_fd = unsafe {
            libbpf_sys::bpf_map_create(
                libbpf_sys::BPF_MAP_TYPE_XSKMAP,
                c"xnatgen_xsks".as_ptr(),
                4,
                4,
                entries,
                std::ptr::null(),
            )
        };
        let map = owned(map_fd, "creating the XSKMAP")?;
        let insns = program(map.as_raw_fd());
        let mut log = vec![0u8; 64 * 1024];
        let mut opts = libbpf_sys::bpf_prog_load_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_prog_load_opts>() as _,
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr().cast(),
            ..Default::default()
        };
        // SAFETY: `insns` has the layout of `bpf_insn` (checked at compile time above) and
        // lives across the call; the strings are NUL-terminated literals; `opts` is a
        // properly sized options struct whose log buffer is valid for `log_size` bytes.
        let prog_fd = unsafe {
            libbpf_sys::bpf_prog_load(
                libbpf_sys::BPF_PROG_TYPE_XDP,
                c"xnatgen_sink".as_ptr(),
                c"GPL".as_ptr(),
                insns.as_ptr().cast(),
                insns.len() as _,
                &mut opts,
            )
        };
        if prog_fd < 0 {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            bail!(
                "loading the sink's XDP program: {}\n{}",
                std::io::Error::from_raw_os_error(-prog_fd),
                String::from_utf8_lossy(&log[..end])
            );
        }
        let prog = owned(prog_fd, "loading the XDP program")?;
        let link = |flags: u32| -> anyhow::Result<OwnedFd> {
            let opts = libbpf_sys::bpf_link_create_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
                flags,
                ..Default::default()
            };
            // SAFETY: `prog` is a loaded XDP program; `opts` is a properly sized options
            // struct living across the call.
            let fd = unsafe {
                libbpf_sys::bpf_link_create(
                    prog.as_raw_fd(),
                    ifindex as i32,
                    libbpf_sys::BPF_XDP,
                    &opts,
                )
            };
            owned(fd, "attaching")
        };
        let drv = libbpf_sys::XDP_FLAGS_DRV_MODE;
        let skb = libbpf_sys::XDP_FLAGS_SKB_MODE;
        let (l, m) = match mode {
            XdpMode::Native => (link(drv), "native"),
            XdpMode::Generic => (link(skb), "generic"),
            XdpMode::Auto => match link(drv) {
                Ok(l) => (Ok(l), "native"),
                Err(_) => (link(skb), "generic"),
            },
        };
        let l = l.map_err(|e| {
            anyhow!("attaching the sink's XDP program to {ifname} ({m} mode): {e} (is another XDP program attached?)")
        })?;
        Ok(Redirect {
            map,
            _prog: prog,
            _link: l,
            mode: m,
        })
    }

    /// Puts the AF_XDP socket `fd` into slot `queue`.
    pub fn set_socket(&self, queue: u32, fd: i32) -> anyhow::Result<()> {
        let key = queue;
        let val = fd;
        // SAFETY: key and value are 4-byte values living across the call, matching the
        // map's key and value sizes.
        let rc = unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.map.as_raw_fd(),
                (&key as *const u32).cast(),
                (&val as *const i32).cast(),
                0,
            )
        };
        if rc < 0 {
            bail!(
                "adding the socket of queue {queue} to the XSKMAP: {}",
                std::io::Error::from_raw_os_error(-rc)
            );
        }
        Ok(())
    }
}
