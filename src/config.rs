//! Configuration: the TOML file and the command-line flags, merged (flags win) and
//! validated into a [`NatConfig`]. Every error names the key or flag and the value.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use serde::Deserialize;

/// A configuration error: which key, which value, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {key} = {value:?}: {reason}")]
pub struct ConfigError {
    /// TOML key (`nat.ports`) or flag (`--ports`).
    pub key: String,
    /// The offending value as written.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

fn err(key: &str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Protocols a port-forward rule can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

impl PortRange {
    /// Whether `p` is in the range.
    pub fn contains(&self, p: u16) -> bool {
        (self.lo..=self.hi).contains(&p)
    }
    /// Number of ports.
    pub fn len(&self) -> u32 {
        u32::from(self.hi) - u32::from(self.lo) + 1
    }
    /// Never empty once validated.
    pub fn is_empty(&self) -> bool {
        false
    }
    fn overlaps(&self, o: &PortRange) -> bool {
        self.lo <= o.hi && o.lo <= self.hi
    }
}

/// Parses `LO-HI` (or a single port) for `key`.
pub fn parse_port_range(key: &str, s: &str) -> Result<PortRange, ConfigError> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let p = |x: &str| -> Result<u16, ConfigError> {
        x.trim()
            .parse::<u16>()
            .map_err(|_| err(key, s, "expected LO-HI with ports 1..65535"))
    };
    let (lo, hi) = (p(a)?, p(b)?);
    if lo == 0 {
        return Err(err(key, s, "port 0 cannot be used"));
    }
    if lo > hi {
        return Err(err(key, s, "empty range: the first port is above the last"));
    }
    Ok(PortRange { lo, hi })
}

fn parse_addr(key: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| err(key, s, "not an IPv4 address"))
}

/// Parses `ADDR` or `ADDR-ADDR` into the list of addresses.
pub fn parse_addr_range(key: &str, s: &str) -> Result<Vec<Ipv4Addr>, ConfigError> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b) = (
        u32::from(parse_addr(key, a)?),
        u32::from(parse_addr(key, b)?),
    );
    if a > b {
        return Err(err(
            key,
            s,
            "empty range: the first address is above the last",
        ));
    }
    if b - a >= 1024 {
        return Err(err(key, s, "more than 1024 addresses in one pool"));
    }
    Ok((a..=b).map(Ipv4Addr::from).collect())
}

/// A port-forward rule: traffic to `external` is sent to `internal`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DnatRule {
    /// Protocol.
    pub proto: Proto,
    /// Address and port on the outside.
    pub external: SocketAddrV4,
    /// Address and port on the inside.
    pub internal: SocketAddrV4,
    /// Also source-NAT the forwarded traffic to the gateway's inside address, so the
    /// backend replies through the gateway whatever its routes (the NodePort case).
    pub snat: bool,
}

/// Parses `PROTO:EXT_ADDR:EXT_PORT=INT_ADDR:INT_PORT[,snat]`.
pub fn parse_dnat(key: &str, s: &str) -> Result<DnatRule, ConfigError> {
    let (body, snat) = match s.strip_suffix(",snat") {
        Some(b) => (b, true),
        None => (s, false),
    };
    let (proto, rest) = body.split_once(':').ok_or_else(|| {
        err(
            key,
            s,
            "expected tcp|udp:EXT_ADDR:PORT=INT_ADDR:PORT[,snat]",
        )
    })?;
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => {
            return Err(err(
                key,
                s,
                format!("unknown protocol '{proto}' (tcp or udp)"),
            ))
        }
    };
    let (ext, int) = rest
        .split_once('=')
        .ok_or_else(|| err(key, s, "expected EXT_ADDR:PORT=INT_ADDR:PORT"))?;
    let sock = |x: &str| -> Result<SocketAddrV4, ConfigError> {
        let a: SocketAddrV4 = x
            .parse()
            .map_err(|_| err(key, s, format!("'{x}' is not ADDR:PORT")))?;
        if a.port() == 0 {
            return Err(err(key, s, "port 0 cannot be used"));
        }
        Ok(a)
    };
    Ok(DnatRule {
        proto,
        external: sock(ext)?,
        internal: sock(int)?,
        snat,
    })
}

/// Idle timeouts in seconds. The defaults are the values the NAT behaviour RFCs ask for;
/// a smaller value is refused unless `allow_below_rfc` is set (see [`RFC_MINIMUMS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP before the handshake completes.
    pub tcp_syn: u32,
    /// TCP established.
    pub tcp_established: u32,
    /// TCP after FIN or RST.
    pub tcp_closing: u32,
    /// UDP.
    pub udp: u32,
    /// ICMP queries (echo, timestamp, information, address mask).
    pub icmp: u32,
    /// Accept values below the RFC minimums (for operators who knowingly trade
    /// conformance for table space).
    pub allow_below_rfc: bool,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: 240,
            tcp_established: 7440,
            tcp_closing: 240,
            udp: 300,
            icmp: 60,
            allow_below_rfc: false,
        }
    }
}

/// The smallest timeout each key may have without `allow_below_rfc`, and the requirement
/// that sets it: TCP transitory (handshake, closing) 4 min and established 2 h 4 min
/// (RFC 5382 REQ-5), UDP 2 min (RFC 4787 REQ-5), ICMP query 60 s (RFC 5508 REQ-1).
pub const RFC_MINIMUMS: [(&str, u32, &str); 5] = [
    ("timeouts.tcp_syn", 240, "RFC 5382 REQ-5"),
    ("timeouts.tcp_established", 7440, "RFC 5382 REQ-5"),
    ("timeouts.tcp_closing", 240, "RFC 5382 REQ-5"),
    ("timeouts.udp", 120, "RFC 4787 REQ-5"),
    ("timeouts.icmp", 60, "RFC 5508 REQ-1"),
];

/// The `[nat]` section as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatFile {
    /// Translate to the outside interface's own address(es).
    pub masquerade: Option<bool>,
    /// SNAT pools: `ADDR` or `ADDR-ADDR`, optionally `:LO-HI`.
    pub snat: Option<Vec<String>>,
    /// Default NAT port range.
    pub ports: Option<String>,
    /// Table capacity in connections.
    pub table_size: Option<u64>,
    /// Port forwards.
    #[serde(default)]
    pub dnat: Vec<String>,
    /// When the table is full: also evict established connections (`true`, LRU-like) or
    /// refuse new connections instead (`false`, default, like conntrack and VPP).
    pub evict_established: Option<bool>,
    /// Where the table is kept so that a restarted gateway takes over: a path (on a
    /// tmpfs), or `false` for a table in process memory only. Default
    /// [`DEFAULT_STATE_FILE`].
    pub state_file: Option<toml::Value>,
    /// Port block allocation: ports per block (absent or 0: off).
    pub port_block_size: Option<u32>,
    /// Most blocks one subscriber (inside address) holds at once.
    pub port_blocks_per_subscriber: Option<u32>,
    /// Seconds a block stays with its subscriber after its last connection ended.
    pub port_block_hold_secs: Option<u32>,
    /// Most live outbound sessions one inside address may hold (0: unlimited).
    pub max_sessions_per_source: Option<u32>,
    /// `endpoint-independent` (default) or `endpoint-dependent`.
    pub mapping: Option<String>,
    /// `address-and-port-dependent` (default), `address-dependent` or
    /// `endpoint-independent`.
    pub filtering: Option<String>,
    /// Deterministic NAT (RFC 7422): the inside prefix `ADDR/LEN` whose addresses get
    /// fixed NAT addresses and port ranges of the SNAT pools.
    pub deterministic: Option<String>,
}

/// The `[interfaces]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfacesFile {
    /// Inside interface.
    pub inside: Option<String>,
    /// Outside interface.
    pub outside: Option<String>,
}

/// The `[dataplane]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneFile {
    /// `nat` or `forward`.
    pub mode: Option<String>,
    /// Queues to serve.
    pub queues: Option<u32>,
    /// Cores to pin workers to.
    pub cores: Option<Vec<usize>>,
    /// `auto`, `native`, `generic`.
    pub xdp_mode: Option<String>,
    /// `auto`, `on`, `off`.
    pub zero_copy: Option<String>,
    /// `auto`, `always`.
    pub checksum_completion: Option<String>,
    /// UMEM frames per queue.
    pub frames: Option<u32>,
    /// Ring size.
    pub ring_size: Option<u32>,
    /// Batch size.
    pub batch: Option<u32>,
    /// `busy` or `adaptive`.
    pub poll: Option<String>,
    /// TCP MSS clamping: `off`, `auto` or a segment size.
    pub clamp_mss: Option<String>,
}

/// The `[control]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlFile {
    /// Unix socket path.
    pub socket: Option<String>,
    /// Prometheus listen address.
    pub metrics_listen: Option<String>,
    /// Seconds between stats log lines.
    pub stats_interval: Option<f64>,
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Interfaces.
    #[serde(default)]
    pub interfaces: InterfacesFile,
    /// Dataplane.
    #[serde(default)]
    pub dataplane: DataplaneFile,
    /// NAT.
    #[serde(default)]
    pub nat: NatFile,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    /// Control plane.
    #[serde(default)]
    pub control: ControlFile,
    /// Translation logs (CGN).
    #[serde(default)]
    pub logging: LoggingFile,
}

/// The `[logging]` section: translation logs to an IPFIX or syslog collector (see
/// [`crate::logging::settings`] for the defaults and ranges).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingFile {
    /// `ipfix` or `syslog`; absent: no translation logs.
    pub format: Option<String>,
    /// `ADDR:PORT` of the collector.
    pub collector: Option<String>,
    /// Local `ADDR:PORT` to send from.
    pub source: Option<String>,
    /// Add destination address and port to session events.
    pub destinations: Option<bool>,
    /// What is logged: `sessions` (one record per session created and deleted) or
    /// `none` (only exhaustion and quota events).
    pub events: Option<String>,
    /// Events each worker's ring holds.
    pub ring_size: Option<u64>,
    /// Largest IPFIX message, bytes.
    pub mtu: Option<u64>,
    /// Longest wait of a record in a partial message, milliseconds.
    pub flush_interval_ms: Option<u64>,
    /// Templates resent at least this often, seconds.
    pub template_refresh_secs: Option<u64>,
    /// And after this many messages.
    pub template_refresh_messages: Option<u64>,
    /// IPFIX observation domain ID.
    pub observation_domain: Option<u64>,
    /// Syslog facility (0..=23).
    pub syslog_facility: Option<u64>,
    /// Syslog HOSTNAME.
    pub hostname: Option<String>,
}

impl FileConfig {
    /// Reads and parses a TOML file; syntax errors and unknown keys name the place.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("--config", path.display(), format!("cannot read: {e}")))?;
        Self::parse(&text).map_err(|mut e| {
            e.key = format!("{} ({})", e.key, path.display());
            e
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let span = e.span().and_then(|s| text.get(s)).unwrap_or("").to_string();
            err("config", span, e.message().trim())
        })
    }
}

/// A SNAT pool after validation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Pool {
    /// Addresses.
    pub addrs: Vec<Ipv4Addr>,
    /// Ports used on each address.
    pub ports: PortRange,
}

/// Validated NAT settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NatConfig {
    /// Use the outside interface's addresses (resolved at start).
    pub masquerade: bool,
    /// Explicit SNAT pools.
    pub pools: Vec<Pool>,
    /// Default port range.
    pub ports: PortRange,
    /// Port forwards.
    pub dnat: Vec<DnatRule>,
    /// Capacity in connections.
    pub table_size: usize,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Evict established connections when the table is full (else refuse new ones).
    pub evict_established: bool,
    /// Table state file (restarts keep the translations).
    pub state_file: Option<std::path::PathBuf>,
    /// Port block allocation (off: `None`).
    pub port_blocks: Option<crate::nat::BlockConfig>,
    /// Per-source session limit (0: none).
    pub max_sessions_per_source: u32,
    /// Mapping behaviour.
    pub mapping: Mapping,
    /// Filtering behaviour.
    pub filtering: Filtering,
    /// Deterministic NAT: the inside prefix spread over the SNAT pools (RFC 7422).
    pub deterministic: Option<crate::nat::deterministic::Prefix>,
}

impl NatConfig {
    /// The deterministic layout, when `deterministic` is set (validated by [`nat_config`]).
    pub fn layout(&self) -> Option<crate::nat::deterministic::Layout> {
        self.deterministic
            .and_then(|p| crate::nat::deterministic::Layout::new(p, &self.pools).ok())
    }

    /// The effective NAT pools and the ports port forwards reserve out of them, one line
    /// each, for `check-config`.
    pub fn describe_pools(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut ranges: Vec<(Option<Ipv4Addr>, PortRange)> = Vec::new();
        for p in &self.pools {
            let first = p.addrs.first().map(|a| a.to_string()).unwrap_or_default();
            let last = p.addrs.last().map(|a| a.to_string()).unwrap_or_default();
            let addrs = if p.addrs.len() > 1 {
                format!("{first}-{last}")
            } else {
                first
            };
            out.push(format!(
                "pool {addrs}: ports {}-{} ({} address(es))",
                p.ports.lo,
                p.ports.hi,
                p.addrs.len()
            ));
            ranges.extend(p.addrs.iter().map(|a| (Some(*a), p.ports)));
        }
        if self.masquerade {
            out.push(format!(
                "masquerade: the outside interface's addresses, ports {}-{}",
                self.ports.lo, self.ports.hi
            ));
            ranges.push((None, self.ports));
        }
        out.extend(self.layout().iter().flat_map(|l| l.describe()));
        for r in &self.dnat {
            let (a, port) = (*r.external.ip(), r.external.port());
            let inside = ranges
                .iter()
                .any(|(addr, pr)| addr.is_none_or(|x| x == a) && (pr.lo..=pr.hi).contains(&port));
            if inside {
                let proto = match r.proto {
                    Proto::Tcp => "tcp",
                    Proto::Udp => "udp",
                };
                out.push(format!(
                    "reserved: {proto} {a}:{port} (port forward to {}) is taken out of the pool",
                    r.internal
                ));
            }
        }
        out
    }
}

/// NAT-related flags (already parsed by clap, still unvalidated).
#[derive(Clone, Debug, Default)]
pub struct NatFlags {
    /// `--masquerade`.
    pub masquerade: bool,
    /// `--snat` (repeatable).
    pub snat: Vec<String>,
    /// `--ports`.
    pub ports: Option<String>,
    /// `--dnat` (repeatable).
    pub dnat: Vec<String>,
    /// `--table-size`.
    pub table_size: Option<u64>,
    /// `--evict-established`.
    pub evict_established: bool,
    /// `--state-file`.
    pub state_file: Option<std::path::PathBuf>,
    /// `--no-state-file`.
    pub no_state_file: bool,
    /// `--port-block-size`.
    pub port_block_size: Option<u32>,
    /// `--port-blocks-per-subscriber`.
    pub port_blocks_per_subscriber: Option<u32>,
    /// `--max-sessions-per-source`.
    pub max_sessions_per_source: Option<u32>,
    /// `--mapping`.
    pub mapping: Option<String>,
    /// `--filtering`.
    pub filtering: Option<String>,
    /// `--deterministic`.
    pub deterministic: Option<String>,
}

/// How inside endpoints are mapped to NAT addresses and ports (RFC 4787 section 4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// One NAT address:port for an inside address:port towards every destination while any
    /// of its sessions lives (RFC 4787 REQ-1, RFC 5382 REQ-1): what WebRTC, games and VoIP
    /// need. The default.
    #[default]
    EndpointIndependent,
    /// A NAT port chosen per destination: the same NAT port may serve several inside
    /// endpoints towards different destinations (more connections per NAT address), but an
    /// inside endpoint looks different to each peer, which breaks NAT traversal.
    EndpointDependent,
}

/// Which inbound packets may reach an inside endpoint through its mapping (RFC 4787
/// section 5, REQ-8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    /// From any address and port once the mapping exists (full-cone; P2P friendly).
    EndpointIndependent,
    /// From any port of an address the inside endpoint has sent to.
    AddressDependent,
    /// Only from the address and port the inside endpoint has sent to. The default.
    #[default]
    AddressAndPortDependent,
}

impl std::str::FromStr for Mapping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "endpoint-independent" => Ok(Mapping::EndpointIndependent),
            "endpoint-dependent" => Ok(Mapping::EndpointDependent),
            _ => Err("expected endpoint-independent or endpoint-dependent".into()),
        }
    }
}

impl std::str::FromStr for Filtering {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "endpoint-independent" => Ok(Filtering::EndpointIndependent),
            "address-dependent" => Ok(Filtering::AddressDependent),
            "address-and-port-dependent" => Ok(Filtering::AddressAndPortDependent),
            _ => Err(
                "expected endpoint-independent, address-dependent or address-and-port-dependent"
                    .into(),
            ),
        }
    }
}

/// The default NAT port range. A masqueraded address is shared with the gateway's own
/// kernel, whose outgoing connections use the ephemeral range 32768-60999: xnat then keeps
/// below it so that replies to the host's own connections still reach the host.
pub fn default_ports(masquerade: bool) -> &'static str {
    if masquerade {
        "1024-32767"
    } else {
        "1024-65535"
    }
}

/// Where `xnat run` keeps the translation table by default (on the tmpfs `/run`): a
/// restarted gateway takes over every live translation from it.
pub const DEFAULT_STATE_FILE: &str = "/run/xnat/table";

/// The state file from the flags (`--state-file PATH` or `--no-state-file` win) or the file
/// (`nat.state_file = "PATH"`, or `false` for none); [`DEFAULT_STATE_FILE`] otherwise.
fn state_file(
    file: &FileConfig,
    flags: &NatFlags,
) -> Result<Option<std::path::PathBuf>, ConfigError> {
    if flags.no_state_file {
        return Ok(None);
    }
    if let Some(p) = &flags.state_file {
        if p.as_os_str().is_empty() {
            return Err(err(
                "--state-file",
                "",
                "expected a path (use --no-state-file for none)",
            ));
        }
        return Ok(Some(p.clone()));
    }
    match &file.nat.state_file {
        None | Some(toml::Value::Boolean(true)) => {
            Ok(Some(std::path::PathBuf::from(DEFAULT_STATE_FILE)))
        }
        Some(toml::Value::Boolean(false)) => Ok(None),
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(Some(std::path::PathBuf::from(s))),
        Some(v) => Err(err(
            "nat.state_file",
            v,
            "expected a path such as \"/run/xnat/table\", or false to keep the table in memory only",
        )),
    }
}

/// The deterministic prefix from `--deterministic` or `nat.deterministic`, checked against
/// the pools: SNAT pools (not masquerade) with at least
/// [`MIN_PORTS`](crate::nat::deterministic::MIN_PORTS) ports per inside address.
fn deterministic(
    file: &FileConfig,
    flags: &NatFlags,
    masquerade: bool,
    pools: &[Pool],
    (snat_key, snat): (&str, &[String]),
    (ports_key, ports): (&str, &str),
) -> Result<Option<crate::nat::deterministic::Prefix>, ConfigError> {
    use crate::nat::deterministic::{Layout, LayoutError, Prefix};
    let (key, value) = match (&flags.deterministic, &file.nat.deterministic) {
        (Some(v), _) => ("--deterministic", v),
        (None, Some(v)) => ("nat.deterministic", v),
        (None, None) => return Ok(None),
    };
    let prefix = Prefix::parse(value).map_err(|e| err(key, value, e))?;
    if masquerade {
        return Err(err(
            key,
            value,
            "deterministic NAT needs SNAT pools (--snat / nat.snat), not masquerade (--masquerade / nat.masquerade = true): \
             the outside interface's addresses are only known at run time",
        ));
    }
    match Layout::new(prefix, pools) {
        Ok(_) => Ok(Some(prefix)),
        Err(LayoutError::NoPool) => Err(err(
            key,
            value,
            "deterministic NAT needs at least one SNAT pool address (--snat / nat.snat)",
        )),
        Err(e) => Err(err(
            key,
            value,
            format!(
                "with {snat_key} = {:?} and {ports_key} = {ports:?}: {e}",
                snat.join(",")
            ),
        )),
    }
}

/// Merges file and flags (flags win; repeatable rules from both are combined) and validates.
pub fn nat_config(file: &FileConfig, flags: &NatFlags) -> Result<NatConfig, ConfigError> {
    let (snat_key, snat): (&str, Vec<String>) = if !flags.snat.is_empty() {
        ("--snat", flags.snat.clone())
    } else {
        ("nat.snat", file.nat.snat.clone().unwrap_or_default())
    };
    let masquerade = flags.masquerade || file.nat.masquerade.unwrap_or(false);
    let (ports_key, ports_s) = match (&flags.ports, &file.nat.ports) {
        (Some(p), _) => ("--ports", p.clone()),
        (None, Some(p)) => ("nat.ports", p.clone()),
        (None, None) => ("--ports", default_ports(masquerade).to_string()),
    };
    let ports = parse_port_range(ports_key, &ports_s)?;
    if masquerade && !snat.is_empty() {
        return Err(err(
            snat_key,
            snat.join(","),
            "masquerade and explicit SNAT pools exclude each other",
        ));
    }
    let mut pools = Vec::new();
    for s in &snat {
        let (addrs, prange) = match s.split_once(':') {
            Some((a, p)) => (a, parse_port_range(snat_key, p)?),
            None => (s.as_str(), ports),
        };
        pools.push(Pool {
            addrs: parse_addr_range(snat_key, addrs)?,
            ports: prange,
        });
    }
    // The same address in two pools with overlapping ports would hand out a port twice.
    let mut seen: HashMap<Ipv4Addr, PortRange> = HashMap::new();
    for (p, s) in pools.iter().zip(&snat) {
        for a in &p.addrs {
            if let Some(prev) = seen.get(a) {
                if prev.overlaps(&p.ports) {
                    return Err(err(
                        snat_key,
                        s,
                        format!(
                            "{a} ports {}-{} overlap another pool",
                            p.ports.lo, p.ports.hi
                        ),
                    ));
                }
            }
            seen.insert(*a, p.ports);
        }
    }

    let mut dnat = Vec::new();
    for (key, list) in [("nat.dnat", &file.nat.dnat), ("--dnat", &flags.dnat)] {
        for s in list {
            let r = parse_dnat(key, s)?;
            if let Some(prev) = dnat
                .iter()
                .find(|d: &&DnatRule| d.proto == r.proto && d.external == r.external)
            {
                if *prev == r {
                    return Err(err(key, s, "duplicate port-forward rule"));
                }
                return Err(err(
                    key,
                    s,
                    format!(
                        "{:?} {} is already forwarded to {}",
                        r.proto, r.external, prev.internal
                    ),
                ));
            }
            // A forward inside a pool's range is fine: its port is reserved out of the
            // pool (see `Rules::is_forwarded`).
            dnat.push(r);
        }
    }
    let deterministic = deterministic(
        file,
        flags,
        masquerade,
        &pools,
        (snat_key, &snat),
        (ports_key, &ports_s),
    )?;
    if !masquerade && pools.is_empty() && dnat.is_empty() {
        return Err(err(
            "--snat",
            "",
            "NAT mode needs --masquerade, --snat ADDR or at least one --dnat rule",
        ));
    }

    let (tkey, table_size) = match (flags.table_size, file.nat.table_size) {
        (Some(t), _) => ("--table-size", t),
        (None, Some(t)) => ("nat.table_size", t),
        (None, None) => ("--table-size", 1 << 20),
    };
    if !(16..=(1u64 << 28)).contains(&table_size) {
        return Err(err(
            tkey,
            table_size,
            "must be between 16 and 268435456 connections",
        ));
    }
    let timeouts = file.timeouts.unwrap_or_default();
    let values = [
        timeouts.tcp_syn,
        timeouts.tcp_established,
        timeouts.tcp_closing,
        timeouts.udp,
        timeouts.icmp,
    ];
    for (&(k, min, rfc), v) in RFC_MINIMUMS.iter().zip(values) {
        if v == 0 || v > 7 * 24 * 3600 {
            return Err(err(k, v, "must be between 1 and 604800 seconds"));
        }
        if v < min && !timeouts.allow_below_rfc {
            return Err(err(
                k,
                v,
                format!("is below the minimum of {min} seconds that {rfc} requires (set timeouts.allow_below_rfc = true to accept it)"),
            ));
        }
    }
    let mapping = match (&flags.mapping, &file.nat.mapping) {
        (Some(v), _) => v.parse().map_err(|e: String| err("--mapping", v, e))?,
        (None, Some(v)) => v.parse().map_err(|e: String| err("nat.mapping", v, e))?,
        (None, None) => Mapping::default(),
    };
    let filtering = match (&flags.filtering, &file.nat.filtering) {
        (Some(v), _) => v.parse().map_err(|e: String| err("--filtering", v, e))?,
        (None, Some(v)) => v.parse().map_err(|e: String| err("nat.filtering", v, e))?,
        (None, None) => Filtering::default(),
    };
    let port_blocks = port_blocks(file, flags, &pools, ports, masquerade, &timeouts)?;
    if let (Some(b), Some(d)) = (port_blocks, deterministic) {
        return Err(err(
            "nat.deterministic",
            d,
            format!(
                "deterministic NAT gives each inside address fixed ports: it cannot be combined with port blocks (nat.port_block_size = {})",
                b.size
            ),
        ));
    }
    Ok(NatConfig {
        port_blocks,
        deterministic,
        mapping,
        filtering,
        masquerade,
        pools,
        ports,
        dnat,
        table_size: table_size as usize,
        timeouts,
        evict_established: flags.evict_established || file.nat.evict_established.unwrap_or(false),
        max_sessions_per_source: flags
            .max_sessions_per_source
            .or(file.nat.max_sessions_per_source)
            .unwrap_or(0),
        state_file: state_file(file, flags)?,
    })
}

/// Port block settings: off unless a block size is given; every block must fit the
/// smallest port range; the hold time at least RFC 6888's 120 s unless
/// `timeouts.allow_below_rfc`.
fn port_blocks(
    file: &FileConfig,
    flags: &NatFlags,
    pools: &[Pool],
    ports: PortRange,
    masquerade: bool,
    timeouts: &Timeouts,
) -> Result<Option<crate::nat::BlockConfig>, ConfigError> {
    let (size_key, size) = match (flags.port_block_size, file.nat.port_block_size) {
        (Some(v), _) => ("--port-block-size", v),
        (None, Some(v)) => ("nat.port_block_size", v),
        (None, None) => return Ok(None),
    };
    if size == 0 {
        return Ok(None);
    }
    let smallest = pools
        .iter()
        .map(|p| p.ports.len())
        .chain(masquerade.then(|| ports.len()))
        .min()
        .unwrap_or(0);
    if smallest == 0 {
        return Err(err(
            size_key,
            size,
            "port blocks need a SNAT pool or --masquerade",
        ));
    }
    if !(8..=smallest).contains(&size) {
        return Err(err(
            size_key,
            size,
            format!("must be within 8..={smallest} (the smallest NAT port range)"),
        ));
    }
    let (per_key, per) = match (
        flags.port_blocks_per_subscriber,
        file.nat.port_blocks_per_subscriber,
    ) {
        (Some(v), _) => ("--port-blocks-per-subscriber", v),
        (None, Some(v)) => ("nat.port_blocks_per_subscriber", v),
        (None, None) => ("nat.port_blocks_per_subscriber", 4),
    };
    if !(1..=1024).contains(&per) {
        return Err(err(per_key, per, "must be within 1..=1024"));
    }
    let hold = file.nat.port_block_hold_secs.unwrap_or(120);
    if hold == 0 || hold > 86_400 {
        return Err(err(
            "nat.port_block_hold_secs",
            hold,
            "must be within 1..=86400",
        ));
    }
    if hold < 120 && !timeouts.allow_below_rfc {
        return Err(err(
            "nat.port_block_hold_secs",
            hold,
            "is below the 120 seconds RFC 6888 asks before a port is reused (set timeouts.allow_below_rfc = true to accept it)",
        ));
    }
    Ok(Some(crate::nat::BlockConfig {
        size: u16::try_from(size).map_err(|_| err(size_key, size, "too large"))?,
        max_per_subscriber: u16::try_from(per).map_err(|_| err(per_key, per, "too large"))?,
        hold_secs: hold,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> NatFlags {
        NatFlags {
            masquerade: true,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_with_masquerade() {
        let c = nat_config(&FileConfig::default(), &flags()).unwrap();
        assert_eq!(
            c.ports,
            PortRange {
                lo: 1024,
                hi: 32767
            }
        );
        assert!(c.masquerade);
        let f = NatFlags {
            snat: vec!["198.19.0.9".into()],
            ..Default::default()
        };
        assert_eq!(
            nat_config(&FileConfig::default(), &f).unwrap().ports.hi,
            65535
        );
        assert_eq!(c.table_size, 1 << 20);
    }

    #[test]
    fn port_ranges() {
        assert_eq!(
            parse_port_range("--ports", "2000-3000").unwrap().len(),
            1001
        );
        assert_eq!(
            parse_port_range("--ports", "80").unwrap(),
            PortRange { lo: 80, hi: 80 }
        );
        for bad in ["3000-2000", "0-10", "1-70000", "a-b", "", "-"] {
            let e = parse_port_range("--ports", bad).unwrap_err();
            assert_eq!(e.key, "--ports");
            assert_eq!(e.value, bad);
        }
        let e = parse_port_range("--ports", "3000-2000").unwrap_err();
        assert!(e.to_string().contains("empty range"), "{e}");
    }

    #[test]
    fn snat_pools_and_overlap() {
        let f = NatFlags {
            snat: vec![
                "198.19.0.1-198.19.0.3".into(),
                "198.19.0.3:2000-2100".into(),
            ],
            ..Default::default()
        };
        let e = nat_config(&FileConfig::default(), &f).unwrap_err();
        assert_eq!(e.key, "--snat");
        assert!(e.to_string().contains("overlap"), "{e}");
        let f = NatFlags {
            snat: vec![
                "198.19.0.1-198.19.0.3:1024-1999".into(),
                "198.19.0.3:2000-2100".into(),
            ],
            ..Default::default()
        };
        let c = nat_config(&FileConfig::default(), &f).unwrap();
        assert_eq!(c.pools[0].addrs.len(), 3);
        for bad in [
            "198.19.0.300",
            "198.19.0.5-198.19.0.1",
            "198.19.0.1-198.20.0.1",
        ] {
            let f = NatFlags {
                snat: vec![bad.into()],
                ..Default::default()
            };
            let e = nat_config(&FileConfig::default(), &f).unwrap_err();
            assert_eq!((e.key.as_str(), e.value.as_str()), ("--snat", bad), "{e}");
        }
    }

    #[test]
    fn dnat_rules() {
        let r = parse_dnat("--dnat", "tcp:198.19.0.1:8080=198.18.0.2:80").unwrap();
        assert_eq!(r.proto, Proto::Tcp);
        assert_eq!(r.internal.port(), 80);
        assert!(!r.snat);
        assert!(
            parse_dnat("--dnat", "udp:198.19.0.1:53=198.18.0.2:53,snat")
                .unwrap()
                .snat
        );
        for bad in [
            "sctp:198.19.0.1:1=198.18.0.2:1",
            "tcp:198.19.0.1:8080",
            "tcp:198.19.0.1=198.18.0.2:80",
            "tcp:198.19.0.1:0=198.18.0.2:80",
            "tcp198.19.0.1:1=198.18.0.2:1",
        ] {
            let e = parse_dnat("--dnat", bad).unwrap_err();
            assert_eq!(e.value, bad);
        }
    }

    #[test]
    fn dnat_inside_snat_range_is_reserved_and_duplicates_are_refused() {
        let f = NatFlags {
            snat: vec!["198.19.0.1".into()],
            dnat: vec!["tcp:198.19.0.1:8080=198.18.0.2:80".into()],
            ..Default::default()
        };
        let c = nat_config(&FileConfig::default(), &f).expect("a forward inside the pool");
        let lines = c.describe_pools();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("reserved: tcp 198.19.0.1:8080")),
            "{lines:?}"
        );
        let f = NatFlags {
            snat: vec!["198.19.0.1".into()],
            ports: Some("10000-20000".into()),
            dnat: vec![
                "tcp:198.19.0.1:8080=198.18.0.2:80".into(),
                "tcp:198.19.0.1:8080=198.18.0.2:80".into(),
            ],
            ..Default::default()
        };
        let e = nat_config(&FileConfig::default(), &f).unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
    }

    #[test]
    fn file_parsing_names_unknown_keys_and_bad_values() {
        let e = FileConfig::parse("[nat]\nmasquerad = true\n").unwrap_err();
        assert!(e.to_string().contains("masquerad"), "{e}");
        let e = FileConfig::parse("[nat]\nports = 5\n").unwrap_err();
        assert!(
            e.to_string().contains("ports") || e.value.contains('5'),
            "{e}"
        );
        let f =
            FileConfig::parse("[nat]\nsnat = [\"198.19.0.1\"]\nports = \"9000-8000\"\n").unwrap();
        let e = nat_config(&f, &NatFlags::default()).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.value.as_str()),
            ("nat.ports", "9000-8000")
        );
        // Flags win over the file.
        let c = nat_config(
            &f,
            &NatFlags {
                ports: Some("2000-3000".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.ports.lo, 2000);
        let e = FileConfig::parse("[timeouts]\nudp = 0\n").map(|f| nat_config(&f, &flags()));
        assert!(matches!(e, Ok(Err(ConfigError { ref key, .. })) if key == "timeouts.udp"));
    }

    #[test]
    fn timeouts_default_to_the_rfc_values_and_refuse_less() {
        let c = nat_config(&FileConfig::default(), &flags()).unwrap();
        let t = c.timeouts;
        assert_eq!(
            (t.tcp_syn, t.tcp_established, t.tcp_closing, t.udp, t.icmp),
            (240, 7440, 240, 300, 60)
        );
        for (key, min, rfc) in RFC_MINIMUMS {
            let name = key.trim_start_matches("timeouts.");
            let toml = format!("[timeouts]\n{name} = {}\n", min - 1);
            let e = nat_config(&FileConfig::parse(&toml).unwrap(), &flags()).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.key, key);
            assert!(
                msg.contains(&(min - 1).to_string())
                    && msg.contains(&format!("minimum of {min} seconds"))
                    && msg.contains(rfc)
                    && msg.contains("allow_below_rfc"),
                "{msg}"
            );
            let ok = format!("[timeouts]\n{name} = {}\nallow_below_rfc = true\n", min - 1);
            let c = nat_config(&FileConfig::parse(&ok).unwrap(), &flags()).unwrap();
            assert!(c.timeouts.allow_below_rfc);
            let at = format!("[timeouts]\n{name} = {min}\n");
            assert!(nat_config(&FileConfig::parse(&at).unwrap(), &flags()).is_ok());
        }
    }

    #[test]
    fn the_state_file_is_on_by_default_and_can_be_moved_or_turned_off() {
        let path = |toml: &str, f: NatFlags| {
            nat_config(&FileConfig::parse(toml).unwrap(), &f).map(|c| c.state_file)
        };
        let on = Some(std::path::PathBuf::from(DEFAULT_STATE_FILE));
        assert_eq!(path("", flags()), Ok(on.clone()));
        assert_eq!(path("[nat]\nstate_file = true\n", flags()), Ok(on));
        assert_eq!(path("[nat]\nstate_file = false\n", flags()), Ok(None));
        assert_eq!(
            path("[nat]\nstate_file = \"/run/x/t\"\n", flags()),
            Ok(Some("/run/x/t".into()))
        );
        // Flags win over the file.
        let no = NatFlags {
            no_state_file: true,
            ..flags()
        };
        assert_eq!(path("[nat]\nstate_file = \"/run/x/t\"\n", no), Ok(None));
        let other = NatFlags {
            state_file: Some("/tmp/t".into()),
            ..flags()
        };
        assert_eq!(
            path("[nat]\nstate_file = false\n", other),
            Ok(Some("/tmp/t".into()))
        );
        for bad in ["\"\"", "3", "[\"/a\"]"] {
            let e = path(&format!("[nat]\nstate_file = {bad}\n"), flags()).unwrap_err();
            assert_eq!(e.key, "nat.state_file", "{e}");
            assert!(e.to_string().contains("or false"), "{e}");
        }
    }

    #[test]
    fn deterministic_nat_needs_pools_with_enough_ports_and_names_the_keys() {
        let f = NatFlags {
            snat: vec!["198.19.2.1-198.19.2.2".into()],
            deterministic: Some("198.18.0.0/24".into()),
            ..Default::default()
        };
        let c = nat_config(&FileConfig::default(), &f).expect("a /24 over two addresses");
        assert_eq!(
            c.deterministic.map(|p| p.to_string()).as_deref(),
            Some("198.18.0.0/24")
        );
        let lines = c.describe_pools();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("128 per address, 504 ports each")),
            "{lines:?}"
        );
        // From the file, with the file's keys in the messages.
        let file = FileConfig::parse(
            "[nat]\nsnat = [\"198.19.2.1\"]\nports = \"1024-2047\"\ndeterministic = \"198.18.0.0/24\"\n",
        )
        .unwrap();
        let e = nat_config(&file, &NatFlags::default()).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.value.as_str()),
            ("nat.deterministic", "198.18.0.0/24")
        );
        let msg = e.to_string();
        assert!(
            msg.contains("nat.snat")
                && msg.contains("nat.ports")
                && msg.contains("1024-2047")
                && msg.contains("4 port(s) each")
                && msg.contains("at least 64"),
            "{msg}"
        );
        // The flag wins over the file.
        let longer = NatFlags {
            deterministic: Some("198.18.0.0/28".into()),
            ..Default::default()
        };
        assert!(nat_config(&file, &longer).is_ok());
        for (bad, why) in [
            ("198.18.0.1/24", "host bits"),
            ("198.18.0.0/33", "prefix length"),
            ("198.18.0.0", "ADDR/LEN"),
        ] {
            let f = NatFlags {
                deterministic: Some(bad.into()),
                ..f.clone()
            };
            let e = nat_config(&FileConfig::default(), &f).unwrap_err();
            assert_eq!((e.key.as_str(), e.value.as_str()), ("--deterministic", bad));
            assert!(e.to_string().contains(why), "{e}");
        }
        let m = NatFlags {
            masquerade: true,
            deterministic: Some("198.18.0.0/24".into()),
            ..Default::default()
        };
        let e = nat_config(&FileConfig::default(), &m).unwrap_err();
        assert_eq!(e.key, "--deterministic");
        assert!(e.to_string().contains("masquerade"), "{e}");
        // Fixed ports per inside address and port blocks exclude each other.
        let both = NatFlags {
            snat: vec!["198.19.2.1".into()],
            deterministic: Some("198.18.0.0/28".into()),
            port_block_size: Some(64),
            ..Default::default()
        };
        let e = nat_config(&FileConfig::default(), &both).unwrap_err();
        assert!(e.to_string().contains("port_block_size = 64"), "{e}");
        let none = NatFlags {
            dnat: vec!["tcp:198.19.0.1:80=198.18.0.2:80".into()],
            deterministic: Some("198.18.0.0/24".into()),
            ..Default::default()
        };
        let e = nat_config(&FileConfig::default(), &none).unwrap_err();
        assert!(e.to_string().contains("at least one SNAT pool"), "{e}");
    }

    #[test]
    fn nat_needs_something_to_do() {
        let e = nat_config(&FileConfig::default(), &NatFlags::default()).unwrap_err();
        assert!(e.to_string().contains("--masquerade"), "{e}");
    }
}
