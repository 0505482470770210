//! Command-line types (clap derive only; no logic).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::dataplane::{PollMode, XdpMode, ZeroCopy};

/// xnat: a NAT gateway on AF_XDP.
#[derive(Debug, Parser)]
#[command(name = "xnat", version, about, long_about = None)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway on an inside and an outside interface.
    Run(RunArgs),
}

/// Gateway mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Plain two-port IPv4 router (TTL, checksum, MACs): the baseline.
    Forward,
}

/// Arguments of `xnat run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Inside (private) interface.
    #[arg(long, value_name = "IFACE")]
    pub inside: String,
    /// Outside (public) interface.
    #[arg(long, value_name = "IFACE")]
    pub outside: String,
    /// Gateway mode.
    #[arg(long, value_enum, default_value = "forward")]
    pub mode: Mode,
    /// Number of queues to serve (queues 0..N of both interfaces), one worker each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=128))]
    pub queues: u32,
    /// Cores to pin the workers to, comma-separated (worker i gets the i-th, cycling). Default: no pinning.
    #[arg(long, value_delimiter = ',', value_name = "CORE,...")]
    pub cores: Vec<usize>,
    /// XDP attach mode: auto prefers native (driver) mode and falls back to generic.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: XdpMode,
    /// AF_XDP zero-copy: auto uses it where the driver supports it (veth does not).
    #[arg(long, value_enum, default_value = "auto")]
    pub zero_copy: ZeroCopy,
    /// UMEM frames per queue (4 KiB each; a power of two).
    #[arg(long, default_value_t = 8192)]
    pub frames: u32,
    /// Descriptors per RX/TX/fill/completion ring (a power of two).
    #[arg(long, default_value_t = 2048)]
    pub ring_size: u32,
    /// Frames handled per batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch: u32,
    /// Idle behaviour of the workers.
    #[arg(long, value_enum, default_value = "adaptive")]
    pub poll: PollMode,
    /// Steer every IPv4 frame arriving on the outside interface to the workers, not only NAT traffic.
    #[arg(long)]
    pub route_all: bool,
    /// Seconds between statistics lines in the log (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub stats_interval: f64,
    /// Also write the statistics as JSON to this file at every interval and at exit.
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
    /// Stop after this many seconds (0: run until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0.0)]
    pub duration: f64,
    /// Seconds between re-reads of the kernel's routes and neighbours.
    #[arg(long, default_value_t = 1.0)]
    pub neighbour_refresh: f64,
}
