//! Test lab: throw-away network namespaces joined by veth pairs (see bench/lab.sh),
//! and a gateway process running in the middle one. Everything is removed on drop,
//! also when a test fails.
#![allow(dead_code)]

use std::io::Write;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Path of the xnat binary under test.
pub fn xnat_bin() -> &'static str {
    env!("CARGO_BIN_EXE_xnat")
}

/// Repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of a helper script in tests/tools.
pub fn tool(name: &str) -> String {
    root()
        .join("tests/tools")
        .join(name)
        .to_string_lossy()
        .to_string()
}

/// Fails the test clearly when not root (the lab needs namespaces and XDP).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "lab tests need root (network namespaces, XDP, AF_XDP)"
    );
}

/// A lab of three namespaces: PFX-cli, PFX-gw, PFX-srv.
pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
}

impl Lab {
    /// Creates the lab with `queues` queues per veth.
    pub fn up(tag: &str, queues: u32) -> Lab {
        Self::up_with(tag, queues, "")
    }

    /// Creates the lab; `extra` is passed to bench/lab.sh ("router" adds PFX-far).
    pub fn up_with(tag: &str, queues: u32, extra: &str) -> Lab {
        require_root();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("xt{}{}-{}", std::process::id() % 100000, n, tag);
        let dir = std::env::temp_dir().join(format!("xnat-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let lab = Lab { prefix, dir };
        let out = Command::new(root().join("bench/lab.sh"))
            .args(["up", &lab.prefix, &queues.to_string(), extra])
            .output()
            .expect("run bench/lab.sh");
        assert!(
            out.status.success(),
            "lab up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    pub fn ns(&self, role: &str) -> String {
        format!("{}-{}", self.prefix, role)
    }

    /// Runs a command in a namespace and returns its output.
    pub fn exec(&self, role: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// Runs a shell command in a namespace.
    pub fn sh(&self, role: &str, script: &str) -> Output {
        self.exec(role, &["sh", "-c", script])
    }

    /// Spawns a long-running command in a namespace.
    pub fn spawn(&self, role: &str, args: &[&str], log: &str) -> Child {
        let f = std::fs::File::create(self.dir.join(log)).expect("log file");
        let f2 = f.try_clone().expect("log file");
        Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .expect("spawn")
    }

    /// Whether an XDP program is attached to `ifname` in the gateway namespace.
    pub fn xdp_attached(&self, ifname: &str) -> bool {
        let out = self.exec("gw", &["ip", "-d", "link", "show", "dev", ifname]);
        let s = String::from_utf8_lossy(&out.stdout);
        s.contains("prog/xdp") || s.contains(" xdp ") || s.contains("xdpgeneric")
    }

    /// Spawns `args` in a namespace with its stdout piped, and waits for the tool's
    /// `ready` line (the helpers in tests/tools print it once listening or capturing);
    /// returns the child and the rest of its output.
    pub fn spawn_ready(&self, role: &str, args: &[&str]) -> (Child, Lines<BufReader<ChildStdout>>) {
        let mut c = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tool");
        let mut lines = BufReader::new(c.stdout.take().expect("stdout")).lines();
        assert_eq!(
            lines.next().and_then(|l| l.ok()).as_deref(),
            Some("ready"),
            "{args:?} did not start"
        );
        (c, lines)
    }

    /// The MAC address of `dev` in the namespace of `role`.
    pub fn mac(&self, role: &str, dev: &str) -> String {
        let out = self.exec(role, &["cat", &format!("/sys/class/net/{dev}/address")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(root().join("bench/lab.sh"))
            .args(["down", &self.prefix])
            .output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("lab files kept in {}", self.dir.display());
        }
    }
}

/// A gateway process in the lab's gw namespace.
pub struct Gateway {
    pub child: Option<Child>,
    pub stats: PathBuf,
    pub log: PathBuf,
    pub control: PathBuf,
}

impl Gateway {
    /// Starts `xnat run --inside in0 --outside out0 <extra>` and waits until it reports stats.
    /// The table stays in memory (`--no-state-file`) unless `extra` names a state file:
    /// tests running side by side never share the default `/run/xnat/table`.
    pub fn start(lab: &Lab, extra: &[&str]) -> Gateway {
        let mut v = extra.to_vec();
        if !extra
            .iter()
            .any(|a| a.starts_with("--state-file") || *a == "--no-state-file")
        {
            v.push("--no-state-file");
        }
        Self::start_exact(lab, &v)
    }

    /// As [`Gateway::start`], with exactly `extra`: without a state flag the gateway keeps
    /// its table in the default state file (only for a test holding [`default_state_lock`]).
    pub fn start_exact(lab: &Lab, extra: &[&str]) -> Gateway {
        let stats = lab.dir.join("stats.json");
        let _ = std::fs::remove_file(&stats);
        let stats_s = stats.to_string_lossy().to_string();
        let control = lab.dir.join("xnat.sock");
        let control_s = control.to_string_lossy().to_string();
        let mut args = vec![
            xnat_bin(),
            "run",
            "--inside",
            "in0",
            "--outside",
            "out0",
            "--stats-interval",
            "0.2",
            "--stats-file",
            &stats_s,
            "--control",
            &control_s,
        ];
        args.extend_from_slice(extra);
        let child = lab.spawn("gw", &args, "xnat.log");
        let mut gw = Gateway {
            child: Some(child),
            stats,
            log: lab.dir.join("xnat.log"),
            control,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !gw.stats.exists() {
            if let Some(c) = gw.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "xnat exited early ({st}): {}",
                        std::fs::read_to_string(&gw.log).unwrap_or_default()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "xnat did not start: {}",
                std::fs::read_to_string(&gw.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }

    /// The last statistics written.
    pub fn stats(&self) -> serde_json::Value {
        let s = std::fs::read_to_string(&self.stats).expect("stats file");
        serde_json::from_str(&s).expect("stats json")
    }

    /// Waits for the next stats file write.
    pub fn fresh_stats(&self) -> serde_json::Value {
        std::thread::sleep(Duration::from_millis(450));
        self.stats()
    }

    /// Sends a signal and waits for exit; returns the exit status code (None if killed).
    pub fn stop(&mut self, sig: i32) -> Option<i32> {
        let mut c = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "xnat did not exit after signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs an `xnat` client command against this gateway's control socket.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.push("--control".into());
        v.push(self.control.to_string_lossy().to_string());
        Command::new(xnat_bin())
            .args(&v)
            .output()
            .expect("xnat client")
    }

    /// `xnat <args> --json` parsed.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ctl(&a);
        assert!(
            out.status.success(),
            "xnat {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An echo server (tests/tools/echo.py) in `role` on `addr:port` for `secs` seconds,
/// listening when this returns.
pub fn echo_server(lab: &Lab, role: &str, addr: &str, port: u16, secs: u32) -> Child {
    let (c, _) = lab.spawn_ready(
        role,
        &[
            "python3",
            &tool("echo.py"),
            "server",
            addr,
            &port.to_string(),
            &secs.to_string(),
        ],
    );
    c
}

/// One TCP connection to an echo server that talks only when told to
/// (tests/tools/echo.py client): it may stay idle across a restart or a reload.
pub struct EchoClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl EchoClient {
    /// Connects from `role` to `addr:port` (within 10 s); the error says why it could not.
    pub fn connect(lab: &Lab, role: &str, addr: &str, port: u16) -> Result<EchoClient, String> {
        Self::connect_within(lab, role, addr, port, 10)
    }

    /// [`EchoClient::connect`] giving up after `secs` seconds.
    pub fn connect_within(
        lab: &Lab,
        role: &str,
        addr: &str,
        port: u16,
        secs: u32,
    ) -> Result<EchoClient, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &lab.ns(role)])
            .args([
                "python3",
                &tool("echo.py"),
                "client",
                addr,
                &port.to_string(),
                &secs.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn echo client");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let c = EchoClient {
            child,
            stdin,
            lines,
        };
        if first == "ready" {
            Ok(c)
        } else {
            Err(first)
        }
    }

    /// Sends `msg` and returns what came back: "ok MSG" or "error ...".
    pub fn say(&mut self, msg: &str) -> String {
        if writeln!(self.stdin, "{msg}")
            .and_then(|_| self.stdin.flush())
            .is_err()
        {
            return "error: the client is gone".into();
        }
        self.lines
            .next()
            .and_then(|l| l.ok())
            .unwrap_or_else(|| "error: no answer".into())
    }
}

impl Drop for EchoClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The default state file of `xnat run`.
pub const DEFAULT_STATE_FILE: &str = "/run/xnat/table";

/// Serialises the tests that let a gateway use [`DEFAULT_STATE_FILE`] (across test
/// binaries and concurrent runs of the suite): held until dropped.
pub fn default_state_lock() -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/xnat-default-state-test.lock")
        .expect("lock file");
    // SAFETY: flock(2) on a descriptor we own; blocks until the other test is done.
    let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock: {}", std::io::Error::last_os_error());
    f
}

/// A command's stdout and stderr, for messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Number at a JSON pointer (0 if absent).
pub fn num(v: &serde_json::Value, ptr: &str) -> u64 {
    v.pointer(ptr).and_then(|x| x.as_u64()).unwrap_or(0)
}

/// Waits until `f` is true or the timeout passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// sha256 of a file via coreutils.
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}
