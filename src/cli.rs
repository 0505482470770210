//! Command-line types (clap derive only; no logic).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::dataplane::{ChecksumCompletion, PollMode, XdpMode, ZeroCopy};

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
    Run(Box<RunArgs>),
    /// Validate a configuration file without touching any interface.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Show counters of a running gateway: totals, per worker, drops, table, XDP.
    Stats {
        /// Control socket of the gateway.
        #[arg(long, value_name = "PATH", default_value = crate::control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// One machine-readable JSON document.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Refresh every SECS seconds (default 1) with rates, like top; Ctrl-C to quit.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1")]
        watch: Option<f64>,
    },
    /// List translations (NAT mode).
    Sessions {
        /// Control socket of the gateway.
        #[arg(long, value_name = "PATH", default_value = crate::control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// Session filters.
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove translations (both halves): those matching the filter, or all with --all.
    Flush {
        /// Control socket of the gateway.
        #[arg(long, value_name = "PATH", default_value = crate::control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// Session filters.
        #[command(flatten)]
        filter: FilterArgs,
        /// Remove every session.
        #[arg(long)]
        all: bool,
    },
    /// Re-read the configuration file of the running gateway (`xnat run --config FILE`) and
    /// apply port forwards, SNAT pools, the per-source quota and the filtering without a
    /// restart (also done on SIGHUP). Flags given to `xnat run` still win over the file. An
    /// invalid file is refused (exit 2) and the running configuration stays; changed
    /// settings that need a restart are listed.
    Reload {
        /// Control socket of the gateway.
        #[arg(long, value_name = "PATH", default_value = crate::control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// The gateway's JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Who had a NAT address:port under deterministic NAT (`--deterministic`): the inside
    /// address, computed from the configuration alone (no running gateway needed); or,
    /// with --inside ADDR, the NAT address and port range of an inside address. Without a
    /// configuration (port blocks): asks the running gateway (--control) which inside
    /// address holds that port's block now. Exit 0 when found, 1 when the endpoint belongs
    /// to no inside address, 2 on bad input.
    Lookup(LookupArgs),
    /// Debugging aids.
    Debug {
        /// Control socket of the gateway.
        #[arg(long, value_name = "PATH", default_value = crate::control::DEFAULT_SOCKET, global = true)]
        control: PathBuf,
        /// What to do.
        #[command(subcommand)]
        what: DebugCommand,
    },
}

/// Arguments of `xnat lookup`: what to look up and the NAT settings of the gateway (the
/// same file and flags as `xnat run`; flags win over the file).
#[derive(Clone, Debug, Args)]
pub struct LookupArgs {
    /// NAT ADDR:PORT to find the inside address of.
    #[arg(required_unless_present = "inside", conflicts_with = "inside")]
    pub endpoint: Option<std::net::SocketAddrV4>,
    /// Instead: the inside ADDR whose NAT address and port range to print.
    #[arg(long, value_name = "ADDR")]
    pub inside: Option<std::net::Ipv4Addr>,
    /// The gateway's TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// As `xnat run --deterministic`.
    #[arg(long, value_name = "PREFIX")]
    pub deterministic: Option<String>,
    /// As `xnat run --snat` (repeatable).
    #[arg(long, value_name = "POOL")]
    pub snat: Vec<String>,
    /// As `xnat run --ports`.
    #[arg(long, value_name = "LO-HI")]
    pub ports: Option<String>,
    /// As `xnat run --dnat` (repeatable): port forwards take their ports out of the ranges.
    #[arg(long, value_name = "RULE")]
    pub dnat: Vec<String>,
    /// As `xnat run --masquerade` (refused: deterministic NAT needs SNAT pools).
    #[arg(long)]
    pub masquerade: bool,
    /// One JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
    /// Without deterministic NAT: the control socket of the running gateway, asked which
    /// subscriber holds the port block of ADDR:PORT now (port blocks).
    #[arg(long, value_name = "PATH", default_value = crate::control::DEFAULT_SOCKET)]
    pub control: PathBuf,
}

/// Session filters.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only this protocol.
    #[arg(long, value_parser = ["tcp", "udp", "icmp"])]
    pub proto: Option<String>,
    /// Only sessions with this address at either end (inside, NAT or remote).
    #[arg(long)]
    pub addr: Option<std::net::Ipv4Addr>,
    /// Only sessions with this port at either end.
    #[arg(long)]
    pub port: Option<u16>,
}

/// `xnat debug ...`.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Remove one half of a connection's pair, keyed as a packet of that direction
    /// carries it, to watch the gateway restore it from the other half.
    RemoveHalf {
        /// tcp, udp or icmp.
        #[arg(value_parser = ["tcp", "udp", "icmp"])]
        proto: String,
        /// Source ADDR:PORT of the key.
        src: std::net::SocketAddrV4,
        /// Destination ADDR:PORT of the key.
        dst: std::net::SocketAddrV4,
    },
}

/// Gateway mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Source/destination NAT for TCP, UDP and ICMP.
    Nat,
    /// Plain two-port IPv4 router (TTL, checksum, MACs): the baseline.
    Forward,
}

/// Arguments of `xnat run`. Flags override the configuration file.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file (see deploy/xnat.toml); flags given here win over it, also
    /// when `xnat reload` or SIGHUP reads it again.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Inside (private) interface.
    #[arg(long, value_name = "IFACE")]
    pub inside: Option<String>,
    /// Outside (public) interface.
    #[arg(long, value_name = "IFACE")]
    pub outside: Option<String>,
    /// Gateway mode [default: nat].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,

    /// Source-NAT to the outside interface's own IPv4 address(es), followed when they
    /// change (DHCP, PPPoE).
    #[arg(long, help_heading = "NAT")]
    pub masquerade: bool,
    /// SNAT pool: ADDR or ADDR-ADDR, optionally :LO-HI for its own ports (repeatable).
    #[arg(long, value_name = "POOL", help_heading = "NAT")]
    pub snat: Vec<String>,
    /// NAT port range LO-HI [default: 1024-65535 for --snat pools; 1024-32767 with
    /// --masquerade, clear of the kernel's own ephemeral ports on that shared address].
    #[arg(long, value_name = "LO-HI", help_heading = "NAT")]
    pub ports: Option<String>,
    /// Port forward PROTO:EXT_ADDR:PORT=INT_ADDR:PORT, with ",snat" to also source-NAT to the
    /// gateway's inside address (repeatable).
    #[arg(long, value_name = "RULE", help_heading = "NAT")]
    pub dnat: Vec<String>,
    /// Translation table capacity in connections [default: 1048576].
    #[arg(long, value_name = "N", help_heading = "NAT")]
    pub table_size: Option<u64>,
    /// When the table is full, evict established connections (oldest idle first) instead of
    /// refusing new connections (the default, as conntrack and VPP do).
    #[arg(long, help_heading = "NAT")]
    pub evict_established: bool,
    /// Keep the translation table in this file, on a tmpfs: a gateway restarted with the
    /// same file and table size takes over every live connection; with another size, or a
    /// file of the previous format, they are carried into the new table (as many as fit); a
    /// file from before a reboot or of an unknown format is logged and the table starts
    /// empty. One gateway per file (it is locked) [default: /run/xnat/table].
    #[arg(long, value_name = "PATH", help_heading = "NAT")]
    pub state_file: Option<PathBuf>,
    /// Keep the translation table in process memory only: a restart starts empty.
    #[arg(long, conflicts_with = "state_file", help_heading = "NAT")]
    pub no_state_file: bool,
    /// Port block allocation (carrier-grade NAT): each inside address gets blocks of N
    /// consecutive ports on one NAT address on demand, logged once per block
    /// [default: off].
    #[arg(long, value_name = "N", help_heading = "NAT")]
    pub port_block_size: Option<u32>,
    /// Most port blocks one inside address holds at once [default: 4].
    #[arg(long, value_name = "K", help_heading = "NAT")]
    pub port_blocks_per_subscriber: Option<u32>,
    /// Most live outbound sessions one inside address may hold; further new connections
    /// from it are dropped and counted (quota_exceeded) [default: 0 = unlimited].
    #[arg(long, value_name = "N", help_heading = "NAT")]
    pub max_sessions_per_source: Option<u32>,
    /// Mapping behaviour: endpoint-independent keeps one NAT address:port for an inside
    /// address:port towards every destination (RFC 4787 REQ-1; needed by WebRTC, games,
    /// VoIP); endpoint-dependent picks a NAT port per destination (more connections per NAT
    /// address, breaks NAT traversal) [default: endpoint-independent].
    #[arg(long, value_name = "MODE", help_heading = "NAT")]
    pub mapping: Option<String>,
    /// Inbound filtering: address-and-port-dependent (only the peer the inside endpoint
    /// sent to), address-dependent (any port of that peer's address) or
    /// endpoint-independent (anyone, once the mapping exists) [default:
    /// address-and-port-dependent].
    #[arg(long, value_name = "MODE", help_heading = "NAT")]
    pub filtering: Option<String>,
    /// Deterministic NAT (RFC 7422): every address of the inside PREFIX (e.g.
    /// 198.18.0.0/24) gets a fixed address of the --snat pools and a fixed range of
    /// --ports, so `xnat lookup ADDR:PORT` names the inside address from the configuration
    /// alone; sources outside the prefix are not translated (no_snat_rule).
    #[arg(long, value_name = "PREFIX", help_heading = "NAT")]
    pub deterministic: Option<String>,

    /// Number of queues to serve (queues 0..N of both interfaces), one worker each [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=128), help_heading = "Dataplane")]
    pub queues: Option<u32>,
    /// Cores to pin the workers to, comma-separated (worker i gets the i-th, cycling). Default: no pinning.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "CORE,...",
        help_heading = "Dataplane"
    )]
    pub cores: Vec<usize>,
    /// XDP attach mode: auto prefers native (driver) mode and falls back to generic [default: auto].
    #[arg(long, value_enum, help_heading = "Dataplane")]
    pub xdp_mode: Option<XdpMode>,
    /// AF_XDP zero-copy: auto uses it where the driver supports it (veth does not) [default: auto].
    #[arg(long, value_enum, help_heading = "Dataplane")]
    pub zero_copy: Option<ZeroCopy>,
    /// Which ports' frames are checked for TCP/UDP checksums a local sender left partial
    /// (checksum offload), and completed: auto skips ports whose frames come from a wire
    /// (a NIC whose driver is not paravirtual) [default: auto].
    #[arg(long, value_enum, help_heading = "Dataplane")]
    pub checksum_completion: Option<ChecksumCompletion>,
    /// UMEM frames per queue (4 KiB each; a power of two) [default: 8192].
    #[arg(long, help_heading = "Dataplane")]
    pub frames: Option<u32>,
    /// Descriptors per RX/TX/fill/completion ring (a power of two) [default: 2048].
    #[arg(long, help_heading = "Dataplane")]
    pub ring_size: Option<u32>,
    /// Frames handled per batch [default: 64].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024), help_heading = "Dataplane")]
    pub batch: Option<u32>,
    /// Idle behaviour of the workers [default: adaptive].
    #[arg(long, value_enum, help_heading = "Dataplane")]
    pub poll: Option<PollMode>,
    /// Steer every IPv4 frame arriving on the outside interface to the workers, not only NAT
    /// traffic (always on in forward mode).
    #[arg(long, help_heading = "Dataplane")]
    pub route_all: bool,
    /// Lower the MSS that TCP SYNs announce: auto = the smaller interface MTU minus 40
    /// (IPv4 + TCP headers), N = at most N bytes, off [default: off].
    #[arg(long, value_name = "auto|N|off", help_heading = "Router")]
    pub clamp_mss: Option<String>,
    /// Seconds between full re-reads of the kernel's routes and neighbours. Changes are
    /// followed at once through rtnetlink notifications; the periodic re-read is then a
    /// safety net (at least 10 s), and the only way when notifications are unavailable.
    #[arg(long, default_value_t = 1.0, help_heading = "Dataplane")]
    pub neighbour_refresh: f64,

    /// Seconds between statistics lines in the log (0: none) [default: 1].
    #[arg(long)]
    pub stats_interval: Option<f64>,
    /// Also write the statistics as JSON to this file at every interval and at exit.
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
    /// Stop after this many seconds (0: run until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0.0)]
    pub duration: f64,
    /// Control socket path (mode 0600) for `xnat stats|sessions|flush|reload` [default: /run/xnat/xnat.sock].
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (e.g. 127.0.0.1:9469). Default: off.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Translation logs (CGN): `ipfix` or `syslog` (the other keys are in `[logging]` of
    /// the file) [default: off].
    #[arg(long, value_name = "FORMAT", help_heading = "Translation logs")]
    pub log_format: Option<String>,
    /// Where translation logs go: the collector's ADDR:PORT (UDP).
    #[arg(long, value_name = "ADDR:PORT", help_heading = "Translation logs")]
    pub log_collector: Option<String>,
}

impl RunArgs {
    /// Arguments with nothing given (every setting from the file or its default).
    pub fn empty() -> RunArgs {
        RunArgs {
            config: None,
            inside: None,
            outside: None,
            mode: None,
            masquerade: false,
            snat: Vec::new(),
            ports: None,
            dnat: Vec::new(),
            table_size: None,
            evict_established: false,
            state_file: None,
            no_state_file: false,
            port_block_size: None,
            port_blocks_per_subscriber: None,
            max_sessions_per_source: None,
            mapping: None,
            filtering: None,
            log_format: None,
            log_collector: None,
            deterministic: None,
            queues: None,
            cores: Vec::new(),
            xdp_mode: None,
            zero_copy: None,
            checksum_completion: None,
            frames: None,
            ring_size: None,
            batch: None,
            poll: None,
            route_all: false,
            clamp_mss: None,
            neighbour_refresh: 1.0,
            stats_interval: None,
            stats_file: None,
            duration: 0.0,
            control: None,
            metrics_listen: None,
        }
    }
}
