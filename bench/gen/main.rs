//! `xnat-gen`: an AF_XDP traffic generator and sink for benchmarking xnat (and the kernel)
//! side by side in the lab (bench/lab.sh, bench/run.sh) or on real NICs.
//!
//! * `send` transmits pre-built UDP (or TCP SYN) frames on one or more queues of an
//!   interface through AF_XDP (zero-copy where the driver supports it, else copy mode). No
//!   XDP program is loaded for sending. Every frame carries an 18-byte *probe* at the start
//!   of its transport payload: magic, flow id, per-flow sequence number and a
//!   CLOCK_MONOTONIC timestamp (see [`probe`]).
//! * `sink` attaches a tiny XDP program of its own (through a bpf_link, so the kernel detaches
//!   it when the process exits, however it exits) that redirects IPv4 UDP/TCP frames to AF_XDP
//!   sockets, and counts per flow: received, loss by sequence gaps, reordering and one-way
//!   latency (both ends on one machine share CLOCK_MONOTONIC).
//!
//! Frame size convention (RFC 2544): `--size` is the Ethernet frame *including* the 4-byte
//! FCS, 64..=1518; the frame in memory is 4 bytes shorter (60..=1514), because the NIC appends
//! and strips the FCS. Gbit/s figures count the frame with its FCS (`gbps`); `gbps_wire` adds
//! the 20 bytes of preamble, start delimiter and inter-frame gap each frame occupies on a
//! real link.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod hist;
mod probe;
mod send;
mod sink;
mod sock;
mod xdp;

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use xnat::packet::ether::MacAddr;

/// AF_XDP traffic generator and sink for the xnat benchmarks.
#[derive(Debug, Parser)]
#[command(name = "xnat-gen", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Transmit generated traffic through AF_XDP.
    Send(Box<SendArgs>),
    /// Receive traffic through AF_XDP and report rate, loss, reordering and latency.
    Sink(SinkArgs),
}

/// Transport of the generated frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    /// UDP datagrams (the probe is the payload).
    Udp,
    /// TCP SYNs carrying the probe as data (needs --size >= 76).
    TcpSyn,
}

/// AF_XDP zero-copy request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ZeroCopy {
    /// Zero-copy where the driver supports it, else copy mode.
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

/// XDP attach mode of the sink's program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XdpMode {
    /// Native (driver) mode if available, else generic.
    Auto,
    /// Native (driver) mode or fail.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// Arguments of `send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Interface to transmit on.
    #[arg(long)]
    pub iface: String,
    /// First queue to transmit on.
    #[arg(long, default_value_t = 0)]
    pub queue: u32,
    /// Number of queues (queue..queue+N), one thread and socket each; flows and rate are
    /// split evenly between them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub queues: u32,
    /// Destination MAC address (the next hop). Default: resolved from the kernel's route and
    /// neighbour tables for --dst-ip (after one ping to the next hop).
    #[arg(long, value_parser = parse_mac)]
    pub dst_mac: Option<MacAddr>,
    /// Source MAC address. Default: the interface's own.
    #[arg(long, value_parser = parse_mac)]
    pub src_mac: Option<MacAddr>,
    /// First source address.
    #[arg(long)]
    pub src_ip: Ipv4Addr,
    /// Number of consecutive source addresses, starting at --src-ip. Flow i uses address
    /// i mod N and port LO + i div N of --sport-range.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1 << 24))]
    pub src_ips: u32,
    /// Destination address.
    #[arg(long)]
    pub dst_ip: Ipv4Addr,
    /// Source port range LO-HI.
    #[arg(long, default_value = "1024-65535", value_parser = parse_range)]
    pub sport_range: (u16, u16),
    /// Destination port.
    #[arg(long, default_value_t = 9)]
    pub dport: u16,
    /// Number of flows (at most --src-ips x the size of --sport-range); sent round-robin.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1 << 26))]
    pub flows: u32,
    /// Ethernet frame size including the 4-byte FCS, 64..=1518.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(64..=1518))]
    pub size: u16,
    /// Transport protocol.
    #[arg(long, value_enum, default_value_t = Proto::Udp)]
    pub proto: Proto,
    /// Packets per second over all queues, or "max".
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    pub rate: Rate,
    /// Stop after this many packets (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Stop after this many seconds (0: no limit; with --count 0 as well, until SIGINT).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// AF_XDP zero-copy.
    #[arg(long, value_enum, default_value_t = ZeroCopy::Auto)]
    pub zero_copy: ZeroCopy,
    /// Frames produced per TX ring submission.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch: u32,
    /// Most frames queued for transmission and not yet completed, per queue (0: auto, 2 x
    /// --batch in copy mode, the ring size in zero-copy mode). The probe's timestamp is taken
    /// when a frame is queued, so a deep queue adds the generator's own queueing to the
    /// measured latency.
    #[arg(long, default_value_t = 0)]
    pub inflight: u32,
    /// UMEM frames per queue (2 KiB each; a power of two).
    #[arg(long, default_value_t = 4096)]
    pub frames: u32,
    /// Descriptors per TX/completion ring (a power of two).
    #[arg(long, default_value_t = 2048)]
    pub ring_size: u32,
    /// Pin thread i to the i-th core of this list (cycling).
    #[arg(long, value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `sink`.
#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Interface to receive on.
    #[arg(long)]
    pub iface: String,
    /// First queue to receive on.
    #[arg(long, default_value_t = 0)]
    pub queue: u32,
    /// Number of queues (queue..queue+N), one thread and socket each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub queues: u32,
    /// Stop after this many seconds (0: until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Also stop once traffic has been seen and none arrived for this many seconds (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub idle_exit: f64,
    /// Create this file once the sockets are bound and the XDP program is attached.
    #[arg(long)]
    pub ready_file: Option<std::path::PathBuf>,
    /// XDP attach mode of the redirect program.
    #[arg(long, value_enum, default_value_t = XdpMode::Auto)]
    pub xdp_mode: XdpMode,
    /// AF_XDP zero-copy.
    #[arg(long, value_enum, default_value_t = ZeroCopy::Auto)]
    pub zero_copy: ZeroCopy,
    /// Frames consumed per RX batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch: u32,
    /// UMEM frames per queue (2 KiB each; a power of two).
    #[arg(long, default_value_t = 8192)]
    pub frames: u32,
    /// Descriptors per RX/fill ring (a power of two).
    #[arg(long, default_value_t = 4096)]
    pub ring_size: u32,
    /// Flow ids tracked individually: 0..N (16 bytes of memory per flow id up to the highest
    /// seen, per queue); frames of higher ids are counted as `untracked_flow`.
    #[arg(long, default_value_t = 1 << 24)]
    pub max_flows: u32,
    /// Spin instead of sleeping in poll(2) when idle.
    #[arg(long)]
    pub busy_poll: bool,
    /// Pin thread i to the i-th core of this list (cycling).
    #[arg(long, value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// A packet rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// As fast as possible.
    Max,
    /// Packets per second.
    Pps(f64),
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        Some((i, 'g' | 'G')) => (&t[..i], 1e9),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is neither \"max\" nor a packet rate like 500000 or 1.5M"))?;
    let pps = v * mult;
    if pps.is_finite() && pps > 0.0 {
        Ok(Rate::Pps(pps))
    } else {
        Err(format!("rate '{s}' must be positive"))
    }
}

fn parse_mac(s: &str) -> Result<MacAddr, String> {
    let mut m = [0u8; 6];
    let mut parts = s.trim().split([':', '-']);
    for b in m.iter_mut() {
        let p = parts
            .next()
            .ok_or_else(|| format!("'{s}' is not a MAC address like 02:00:00:00:00:01"))?;
        *b = u8::from_str_radix(p, 16)
            .map_err(|_| format!("'{s}' is not a MAC address like 02:00:00:00:00:01"))?;
    }
    if parts.next().is_some() {
        return Err(format!("'{s}' has more than 6 bytes"));
    }
    Ok(m)
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("'{s}' is not a port range LO-HI (1-65535)");
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Formats a MAC address.
pub fn mac_str(m: &MacAddr) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// CLOCK_MONOTONIC in nanoseconds.
#[inline]
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Pins the calling thread to `cores[i % len]`, if any cores were given.
pub fn pin(cores: &[usize], i: usize) {
    if cores.is_empty() {
        return;
    }
    let id = cores[i % cores.len()];
    if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
        eprintln!("xnat-gen: could not pin thread {i} to core {id}");
    }
}

/// Raises RLIMIT_MEMLOCK as far as allowed (UMEMs are pinned memory; root with
/// CAP_IPC_LOCK is exempt anyway).
pub fn raise_memlock() {
    let r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `r` is a valid rlimit read by the call; failure is harmless.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `cur` is a valid rlimit for getrlimit to fill and setrlimit to read.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) == 0 {
                cur.rlim_cur = cur.rlim_max;
                libc::setrlimit(libc::RLIMIT_MEMLOCK, &cur);
            }
        }
    }
}

/// A flag set by SIGINT/SIGTERM.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// Whether `f` is set.
#[inline]
pub fn is_set(f: &AtomicBool) -> bool {
    f.load(Ordering::Relaxed)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Send(a) => send::run(&a),
        Command::Sink(a) => sink::run(&a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xnat-gen: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_macs_ranges() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("1.5M"), Ok(Rate::Pps(1.5e6)));
        assert_eq!(parse_rate("2000"), Ok(Rate::Pps(2000.0)));
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_mac("02:00:0a:ff:00:01"), Ok([2, 0, 10, 255, 0, 1]));
        assert!(parse_mac("02:00:0a:ff:00").is_err());
        assert!(parse_mac("02:00:0a:ff:00:01:02").is_err());
        assert!(parse_mac("zz:00:0a:ff:00:01").is_err());
        assert_eq!(parse_range("1024-2047"), Ok((1024, 2047)));
        assert_eq!(parse_range("53"), Ok((53, 53)));
        assert!(parse_range("2-1").is_err());
        assert!(parse_range("0-5").is_err());
    }
}
