//! The control plane: a versioned request/response protocol on a local unix socket,
//! served by a thread of `xnat run` and spoken by `xnat stats|sessions|flush|reload`.
//!
//! One request per line, one response per line, both JSON:
//!
//! ```text
//! -> {"version":1,"request":{"cmd":"sessions","filter":{"proto":"tcp"},"limit":10}}
//! <- {"version":1,"ok":true,"result":[...]}
//! <- {"version":1,"ok":false,"error":"unknown command ..."}
//! ```
//!
//! Requests are limited to [`MAX_REQUEST`] bytes; a malformed or oversized request gets an
//! error response. Handling a request reads counters and walks the table like any other
//! reader: the workers are never paused. The socket is created with mode 0600 (root only).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod metrics;

use crate::nat::proto_name;
use crate::stats::StatsSource;
use crate::table::{ConnState, Session, Tuple};

/// Version of the protocol spoken here.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest accepted request line.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Most clients served at once.
pub const MAX_CLIENTS: usize = 16;
/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/xnat/xnat.sock";

/// Which sessions a request is about. Every given field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// `tcp`, `udp` or `icmp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// An address appearing anywhere in the session (inside, NAT or remote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<Ipv4Addr>,
    /// A port appearing anywhere in the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Filter {
    /// Whether `s` matches.
    pub fn matches(&self, s: &Session) -> bool {
        let (o, x) = (&s.org, &s.xlate);
        self.proto
            .as_deref()
            .is_none_or(|p| p == proto_name(o.proto))
            && self.addr.is_none_or(|a| {
                let a = u32::from(a);
                [o.src, o.dst, x.src, x.dst].contains(&a)
            })
            && self
                .port
                .is_none_or(|p| [o.sport, o.dport, x.sport, x.dport].contains(&p))
    }
}

/// A 5-tuple in requests and listings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TupleJson {
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port (ICMP identifier).
    pub sport: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port (ICMP identifier).
    pub dport: u16,
}

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// All counters.
    Stats {},
    /// List translations.
    Sessions {
        /// Which ones.
        #[serde(default)]
        filter: Filter,
        /// At most this many.
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Remove translations (both halves).
    Flush {
        /// Which ones; an empty filter removes all.
        #[serde(default)]
        filter: Filter,
    },
    /// Remove only the half keyed by `key` (to exercise pair restoration).
    RemoveHalf {
        /// The key of the half, as a packet of that direction carries it.
        key: TupleJson,
    },
    /// Read the configuration file again and apply what can be applied live.
    Reload {},
}

/// Where the result of a reload goes.
pub type ReloadReply = crossbeam::channel::Sender<Result<serde_json::Value, String>>;

/// What the control server asks of the gateway's main thread (which owns the steering
/// maps).
#[derive(Debug)]
pub enum MainRequest {
    /// Reload the configuration; the result goes back through the sender.
    Reload(ReloadReply),
    /// Sessions were flushed: removed forwards may now be unused.
    Flushed,
}

/// The way to the gateway's main thread.
pub type ToMain = crossbeam::channel::Sender<MainRequest>;

/// The longest a reload request waits for the gateway.
const RELOAD_WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    version: u32,
    request: serde_json::Value,
}

/// A response.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version of the server.
    pub version: u32,
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result (when ok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The error (when not ok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One translation as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionJson {
    /// Protocol.
    pub proto: String,
    /// The first packet as received: `src:sport -> dst:dport`.
    pub original: String,
    /// What it became: `src:sport -> dst:dport`.
    pub translated: String,
    /// Connection state.
    pub state: String,
    /// Seconds since the last packet.
    pub idle_secs: u32,
}

fn ep(a: u32, p: u16) -> String {
    format!("{}:{p}", Ipv4Addr::from(a))
}

/// Displays a tuple as `src:sport -> dst:dport`.
pub fn tuple_text(t: &Tuple) -> String {
    format!("{} -> {}", ep(t.src, t.sport), ep(t.dst, t.dport))
}

fn state_name(s: ConnState) -> &'static str {
    match s {
        ConnState::TcpSyn => "syn",
        ConnState::TcpEstablished => "established",
        ConnState::TcpClosing => "closing",
        ConnState::Udp => "udp",
        ConnState::Icmp => "icmp",
        ConnState::Other => "other",
        ConnState::TcpFinOrg => "half_closed_org",
        ConnState::TcpFinRev => "half_closed_rev",
        ConnState::TcpResetOrg => "reset_org",
        ConnState::TcpResetRev => "reset_rev",
    }
}

impl From<&Session> for SessionJson {
    fn from(s: &Session) -> Self {
        SessionJson {
            proto: proto_name(s.org.proto).to_string(),
            original: tuple_text(&s.org),
            translated: tuple_text(&s.xlate),
            state: state_name(s.state).to_string(),
            idle_secs: s.idle_secs,
        }
    }
}

fn proto_number(p: &str) -> Option<u8> {
    match p {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        _ => None,
    }
}

/// Converts a request tuple to the table's key.
pub fn tuple_from_json(t: &TupleJson) -> Result<Tuple, String> {
    Ok(Tuple {
        src: u32::from(t.src),
        dst: u32::from(t.dst),
        sport: t.sport,
        dport: t.dport,
        proto: proto_number(&t.proto)
            .ok_or_else(|| format!("unknown protocol {:?} (tcp, udp, icmp)", t.proto))?,
    })
}

/// Parses one request line into a request, checking the protocol version.
pub fn parse_envelope(line: &str) -> Result<Request, String> {
    let env: Envelope =
        serde_json::from_str(line).map_err(|e| format!("malformed request: {e}"))?;
    if env.version != PROTOCOL_VERSION {
        return Err(format!(
            "unsupported protocol version {} (this gateway speaks {PROTOCOL_VERSION})",
            env.version
        ));
    }
    serde_json::from_value(env.request).map_err(|e| format!("bad request: {e}"))
}

/// Answers one request line; `reload` reaches the gateway's main thread (none: reloads are
/// refused).
pub fn handle_line(line: &str, src: &StatsSource, reload: Option<&ToMain>) -> Response {
    let fail = |e: String| Response {
        version: PROTOCOL_VERSION,
        ok: false,
        result: None,
        error: Some(e),
    };
    let req = match parse_envelope(line) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    match execute(&req, src, reload) {
        Ok(v) => Response {
            version: PROTOCOL_VERSION,
            ok: true,
            result: Some(v),
            error: None,
        },
        Err(e) => fail(e),
    }
}

fn execute(
    req: &Request,
    src: &StatsSource,
    reload: Option<&ToMain>,
) -> Result<serde_json::Value, String> {
    let table = || {
        src.table()
            .ok_or_else(|| "the gateway runs in forward mode: it has no sessions".to_string())
    };
    let now = crate::nat::coarse_now();
    match req {
        Request::Stats {} => to_value(&src.snapshot_with_ports()),
        Request::Sessions { filter, limit } => {
            let t = table()?;
            let list: Vec<SessionJson> = t
                .sessions(now)
                .filter(|s| !crate::nat::is_mapping(s) && filter.matches(s))
                .take(limit.unwrap_or(usize::MAX))
                .map(|s| SessionJson::from(&s))
                .collect();
            to_value(&list)
        }
        Request::Flush { filter } => {
            let t = table()?;
            let n = t.flush(|s| !crate::nat::is_mapping(s) && filter.matches(s));
            // The endpoint-independent mappings the filter names go too (counted apart).
            let m = t.flush(|s| crate::nat::is_mapping(s) && filter.matches(s));
            if let Some(to_main) = reload {
                let _ = to_main.try_send(MainRequest::Flushed);
            }
            Ok(serde_json::json!({ "removed": n, "mappings_removed": m }))
        }
        Request::RemoveHalf { key } => {
            let k = tuple_from_json(key)?;
            let removed = table()?.remove_half(&k);
            Ok(serde_json::json!({ "removed": removed }))
        }
        Request::Reload {} => {
            let to_main = reload.ok_or("this gateway does not take reloads")?;
            let (tx, rx) = crossbeam::channel::bounded(1);
            to_main
                .send_timeout(MainRequest::Reload(tx), RELOAD_WAIT)
                .map_err(|_| "the gateway is busy: try again".to_string())?;
            rx.recv_timeout(RELOAD_WAIT)
                .map_err(|_| "the gateway did not finish the reload in time".to_string())?
        }
    }
}

fn to_value<T: Serialize>(v: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// Errors of the control socket, server or client side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No gateway listening at the path.
    #[error(
        "xnat is not running: no control socket at {0} (start `xnat run`, or pass --control PATH)"
    )]
    NotRunning(PathBuf),
    /// The socket exists but this user may not use it.
    #[error("cannot open the control socket {0}: permission denied (it is root-only)")]
    Permission(PathBuf),
    /// Another gateway owns the socket path.
    #[error("another xnat is already serving the control socket {0}; use --control to pick another path")]
    InUse(PathBuf),
    /// Something other than a socket is at the path: never replaced.
    #[error("{0} exists and is not a socket; xnat will not replace it: remove it or pass another --control PATH")]
    NotASocket(PathBuf),
    /// Any other I/O trouble.
    #[error("control socket {path}: {err}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// What happened.
        err: std::io::Error,
    },
    /// The gateway answered with an error.
    #[error("the gateway refused the request: {0}")]
    Refused(String),
}

fn io(path: &Path, err: std::io::Error) -> ControlError {
    match err.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning(path.into())
        }
        std::io::ErrorKind::PermissionDenied => ControlError::Permission(path.into()),
        _ => ControlError::Io {
            path: path.into(),
            err,
        },
    }
}

/// The serving side.
pub struct Server {
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Binds the socket (mode 0600, parent directory created) and starts serving; reload
    /// requests go to `reload`.
    pub fn start(
        path: &Path,
        src: StatsSource,
        reload: Option<ToMain>,
    ) -> Result<Server, ControlError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| io(path, e))?;
            }
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ControlError::NotASocket(path.into()));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.into()));
            }
            // A stale socket of a process that died.
            let _ = std::fs::remove_file(path);
        }
        let listener = bind_private(path)?;
        listener.set_nonblocking(true).map_err(|e| io(path, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("xnat-control".into())
            .spawn(move || serve(listener, src, reload, stop2))
            .map_err(|e| io(path, e))?;
        Ok(Server {
            path: path.into(),
            thread: Some(thread),
            stop,
        })
    }
}

/// Binds a listening socket at `path` that no one but its owner can ever connect to: it is
/// created in a fresh mode-0700 directory next to `path`, made mode 0600, then renamed into
/// place (no process-wide umask change, no window with looser permissions).
fn bind_private(path: &Path) -> Result<UnixListener, ControlError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "xnat.sock".into());
    let tmp_dir = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp_dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp_dir)
        .map_err(|e| io(path, e))?;
    let tmp = tmp_dir.join("s");
    let bound = UnixListener::bind(&tmp)
        .and_then(|l| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, path)?;
            Ok(l)
        })
        .map_err(|e| io(path, e));
    let _ = std::fs::remove_dir_all(&tmp_dir);
    bound
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Only our socket: never a file someone put there since.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Counts one control client for as long as it lives (also if its thread panics).
struct ClientSlot(Arc<AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn serve(listener: UnixListener, src: StatsSource, reload: Option<ToMain>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if active.load(Ordering::Relaxed) >= MAX_CLIENTS {
                    let mut s = stream;
                    let _ = reply(&mut s, &busy());
                    continue;
                }
                active.fetch_add(1, Ordering::Relaxed);
                let slot = ClientSlot(Arc::clone(&active));
                let (src, stop, reload) = (src.clone(), Arc::clone(&stop), reload.clone());
                // The slot is given back when the thread ends, or at once if it cannot start.
                let spawned = std::thread::Builder::new()
                    .name("xnat-ctl-client".into())
                    .spawn(move || {
                        let _slot = slot;
                        client(stream, &src, reload.as_ref(), &stop);
                    });
                if spawned.is_err() {
                    tracing::warn!("could not spawn a control client thread");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn busy() -> Response {
    Response {
        version: PROTOCOL_VERSION,
        ok: false,
        result: None,
        error: Some(format!("too many control clients (at most {MAX_CLIENTS})")),
    }
}

fn reply(stream: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

fn client(stream: UnixStream, src: &StatsSource, reload: Option<&ToMain>, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        // Read at most one byte past the limit so an oversized line is detected.
        let mut limited =
            (&mut reader).take((MAX_REQUEST + 1 - line.len().min(MAX_REQUEST)) as u64);
        match limited.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) if line.last() == Some(&b'\n') => {
                idle = 0;
                let text = String::from_utf8_lossy(&line);
                let r = handle_line(text.trim_end(), src, reload);
                if reply(&mut writer, &r).is_err() {
                    return;
                }
                line.clear();
            }
            Ok(_) if line.len() > MAX_REQUEST => {
                let r = Response {
                    version: PROTOCOL_VERSION,
                    ok: false,
                    result: None,
                    error: Some(format!("request larger than {MAX_REQUEST} bytes")),
                };
                let _ = reply(&mut writer, &r);
                return;
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                idle += 1;
                if idle > 120 {
                    return; // a minute without a complete request
                }
            }
            Err(_) => return,
        }
    }
}

/// Sends one request to the gateway at `path` and returns its result.
pub fn request(path: &Path, req: &Request) -> Result<serde_json::Value, ControlError> {
    let mut s = UnixStream::connect(path).map_err(|e| io(path, e))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut line =
        serde_json::to_vec(&serde_json::json!({ "version": PROTOCOL_VERSION, "request": req }))
            .map_err(|e| io(path, std::io::Error::other(e)))?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| io(path, e))?;
    let mut resp = String::new();
    BufReader::new(&s)
        .read_line(&mut resp)
        .map_err(|e| io(path, e))?;
    let r: Response = serde_json::from_str(&resp).map_err(|e| {
        io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    if r.ok {
        Ok(r.result.unwrap_or(serde_json::Value::Null))
    } else {
        Err(ControlError::Refused(r.error.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_reject_unknown_fields() {
        let r = Request::Sessions {
            filter: Filter {
                proto: Some("tcp".into()),
                addr: None,
                port: Some(80),
            },
            limit: Some(5),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["cmd"], "sessions");
        assert_eq!(serde_json::from_value::<Request>(v).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"stats","x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"reload"}"#).unwrap(),
            Request::Reload {}
        );
        assert!(serde_json::from_str::<Request>(
            r#"{"cmd":"flush","filter":{"addr":"300.1.1.1"}}"#
        )
        .is_err());
    }

    #[test]
    fn filters_match_any_end() {
        let s = Session {
            org: Tuple {
                src: u32::from(Ipv4Addr::new(198, 18, 0, 2)),
                dst: u32::from(Ipv4Addr::new(198, 19, 0, 2)),
                sport: 40000,
                dport: 80,
                proto: 6,
            },
            xlate: Tuple {
                src: u32::from(Ipv4Addr::new(198, 19, 0, 1)),
                dst: u32::from(Ipv4Addr::new(198, 19, 0, 2)),
                sport: 1025,
                dport: 80,
                proto: 6,
            },
            state: ConnState::TcpEstablished,
            idle_secs: 3,
        };
        assert!(Filter::default().matches(&s));
        let f = |proto: Option<&str>, addr: Option<[u8; 4]>, port: Option<u16>| Filter {
            proto: proto.map(String::from),
            addr: addr.map(Ipv4Addr::from),
            port,
        };
        assert!(f(Some("tcp"), Some([198, 19, 0, 1]), Some(1025)).matches(&s));
        assert!(!f(Some("udp"), None, None).matches(&s));
        assert!(!f(None, Some([198, 18, 0, 9]), None).matches(&s));
        assert!(!f(None, None, Some(443)).matches(&s));
        let j = SessionJson::from(&s);
        assert_eq!(j.original, "198.18.0.2:40000 -> 198.19.0.2:80");
        assert_eq!(j.translated, "198.19.0.1:1025 -> 198.19.0.2:80");
        assert_eq!(j.state, "established");
    }

    #[test]
    fn tuple_json_validates_protocol() {
        let t = TupleJson {
            proto: "sctp".into(),
            src: Ipv4Addr::LOCALHOST,
            sport: 1,
            dst: Ipv4Addr::LOCALHOST,
            dport: 2,
        };
        assert!(tuple_from_json(&t).unwrap_err().contains("sctp"));
    }
}
