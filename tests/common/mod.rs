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

/// Directions of the outside link, as indexes of [`Impairment`]'s fields.
pub const TO_SERVER: usize = 0;
pub const FROM_SERVER: usize = 1;

/// What the outside link's impairment ([`Lab::impair_outside`]) has done so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Frames dropped at random, per direction.
    pub dropped: [u64; 2],
    /// Frames sent the slow way (the ifb device, the slow htb class), per direction.
    pub detoured: [u64; 2],
    /// Times the slow htb class from the server held a frame back (over its rate) while
    /// later frames overtook it.
    pub held_back: u64,
}

impl Lab {
    /// 1 % loss and reordering on the outside link, both directions, made in the server's
    /// namespace (the gateway's interfaces stay as they are).
    ///
    /// The usual tool, `tc qdisc ... netem loss 1% reorder ...`, needs sch_netem, which not
    /// every kernel the lab runs on has; this is built from what is common instead.
    /// - Loss: nftables `netdev` chains on the server's veth drop 1 % of the IPv4 frames at
    ///   random, at its ingress and at its egress (a drop in the `output` hook would fail
    ///   the sender's `sendto` with EPERM, which no wire does). UDP datagrams of fewer
    ///   than 8 bytes are spared: iperf3 (3.12) opens a UDP test with one 4-byte datagram
    ///   each way and never sends it again, so losing it fails the run before any data.
    /// - Reordering from the server: nftables sends 2 % of the frames at random to the slow
    ///   class of a htb qdisc on the veth (2 Mbit/s, 30 frames of queue): while that class
    ///   is over its rate (under load) its frames wait and the frames after them overtake
    ///   them. A TSO/GSO burst is one frame there.
    /// - Reordering towards the server: a u32 filter on the veth's ingress redirects the
    ///   frames whose IPv4 header checksum ends in three zero bits (1 in 8: the checksum
    ///   changes with every IP ID) through an ifb device, which hands them back from a
    ///   tasklet, after the rest of the batch they arrived in: the frames behind them
    ///   overtake them. The redirected frames skip the ingress loss.
    pub fn impair_outside(&self) {
        let script = "set -e\n\
             ip link add ifb0 txqueuelen 1000 type ifb\n\
             ip link set ifb0 up\n\
             tc qdisc add dev eth0 clsact\n\
             tc filter add dev eth0 ingress protocol ip u32 match u16 0 0x0007 at 10 \
                action mirred egress redirect dev ifb0\n\
             tc qdisc add dev eth0 root handle 1: htb default 1\n\
             tc class add dev eth0 parent 1: classid 1:1 htb rate 10gbit quantum 200000\n\
             tc class add dev eth0 parent 1: classid 1:2 htb rate 2mbit burst 1514 cburst 1514 quantum 1514\n\
             tc qdisc add dev eth0 parent 1:2 pfifo limit 30\n\
             nft add table netdev impair\n\
             nft add chain netdev impair in '{ type filter hook ingress device eth0 priority 0; }'\n\
             nft add rule netdev impair in udp length '<' 16 accept\n\
             nft add rule netdev impair in meta protocol ip numgen random mod 100 '<' 1 counter drop\n\
             nft add chain netdev impair out '{ type filter hook egress device eth0 priority 0; }'\n\
             nft add rule netdev impair out udp length '<' 16 accept\n\
             nft add rule netdev impair out meta protocol ip numgen random mod 100 '<' 1 counter drop\n\
             nft add rule netdev impair out meta protocol ip numgen random mod 50 == 0 meta priority set 1:2\n";
        let out = self.sh("srv", script);
        assert!(out.status.success(), "impairment: {}", text(&out));
    }

    /// How often TCP senders in `role`'s namespace detected reordering (SACK, timestamps
    /// or duplicate ACKs showed a segment arriving after a later one), since it was made.
    pub fn tcp_reordering_seen(&self, role: &str) -> u64 {
        let out = self.exec(
            role,
            &[
                "nstat",
                "-asz",
                "TcpExtTCPSACKReorder",
                "TcpExtTCPTSReorder",
                "TcpExtTCPRenoReorder",
            ],
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("TcpExt"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    }

    /// What the impairment has done so far.
    pub fn impairment(&self) -> Impairment {
        let mut imp = Impairment::default();
        // The drop rules, by chain.
        let out = self.exec("srv", &["nft", "-j", "list", "table", "netdev", "impair"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for item in v["nftables"].as_array().into_iter().flatten() {
            let rule = &item["rule"];
            let Some(dir) = ["in", "out"].iter().position(|c| rule["chain"] == *c) else {
                continue;
            };
            let exprs = rule["expr"].as_array().cloned().unwrap_or_default();
            if exprs.iter().any(|e| e.get("drop").is_some()) {
                imp.dropped[dir] += exprs
                    .iter()
                    .find_map(|e| e["counter"]["packets"].as_u64())
                    .unwrap_or(0);
            }
        }
        // The detour towards the server, from the ifb device's counters.
        let ifb = self.exec("srv", &["cat", "/sys/class/net/ifb0/statistics/tx_packets"]);
        imp.detoured[TO_SERVER] = String::from_utf8_lossy(&ifb.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        // The slow class from the server: "Sent B bytes P pkt (dropped D, overlimits O ...)"
        // (`tc -j` has no JSON for htb classes).
        let out = self.exec(
            "srv",
            &["tc", "-s", "class", "show", "dev", "eth0", "classid", "1:2"],
        );
        let t = text(&out);
        let after = |key: &str| -> u64 {
            t.split(key)
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        imp.detoured[FROM_SERVER] = after(" bytes ");
        imp.held_back = after("overlimits ");
        imp
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

/// An HTTP server (tests/tools/http_server.py) in `role` on `addr:port` serving the lab
/// directory; its log shows peers.
pub fn http_server(lab: &Lab, role: &str, addr: &str, port: u16, log: &str) -> Child {
    let dir = lab.dir.to_string_lossy().to_string();
    let p = port.to_string();
    let child = lab.spawn(
        role,
        &["python3", &tool("http_server.py"), addr, &p, &dir],
        log,
    );
    let pat = format!("{addr}:{port}");
    let up = wait_for(Duration::from_secs(10), || {
        lab.sh(role, &format!("ss -ltn | grep -q {pat}"))
            .status
            .success()
    });
    assert!(up, "http server on {pat} did not start");
    child
}

/// Puts `len` bytes of a fixed pattern at `name` in the lab's directory (which the lab's
/// HTTP servers serve), unless already there; returns its path.
pub fn lab_file(lab: &Lab, name: &str, len: u32) -> PathBuf {
    let path = lab.dir.join(name);
    if !path.exists() {
        let data: Vec<u8> = (0..len)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(&path, &data).expect("lab file");
    }
    path
}

/// Checks that `role` downloads a 10 MB file intact from `base`/big.bin (an HTTP server
/// on the lab's directory).
pub fn download_10mb_intact(lab: &Lab, role: &str, base: &str) {
    let big = lab_file(lab, "big.bin", 10 << 20);
    let got = lab.dir.join("got.bin");
    let _ = std::fs::remove_file(&got);
    let got_s = got.to_string_lossy().to_string();
    let out = lab.exec(
        role,
        &[
            "curl",
            "-sS",
            "--max-time",
            "30",
            "-o",
            &got_s,
            &format!("{base}/big.bin"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sha256(&got), sha256(&big), "10 MB from {base} corrupted");
}

/// Checks that `role` downloads a 64 KiB file from `base`/small.bin `n` times in parallel
/// (one curl, `n` transfers at once, each on its own connection), every copy intact.
pub fn parallel_downloads_intact(lab: &Lab, role: &str, base: &str, n: u32) {
    let small = lab_file(lab, "small.bin", 64 << 10);
    let want = sha256(&small);
    let dir = lab.dir.join("parallel");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("download dir");
    let out = lab.exec(
        role,
        &[
            "curl",
            "-sS",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            &n.to_string(),
            "--max-time",
            "30",
            "--output-dir",
            &dir.to_string_lossy(),
            "-o",
            "copy#1.bin",
            &format!("{base}/small.bin?[1-{n}]"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let intact = (1..=n)
        .filter(|i| sha256(&dir.join(format!("copy{i}.bin"))) == want)
        .count();
    assert_eq!(intact, n as usize, "of {n} parallel downloads from {base}");
}

/// Starts an iperf3 server on the server's 198.19.0.2:5201.
pub fn iperf3_server(lab: &Lab) -> Child {
    let c = lab.spawn(
        "srv",
        &["iperf3", "-s", "-B", "198.19.0.2", "-p", "5201"],
        "iperf.log",
    );
    let ready = wait_for(Duration::from_secs(10), || {
        lab.sh("srv", "ss -ltn | grep -q :5201").status.success()
    });
    assert!(ready, "iperf3 server did not start");
    c
}

/// What an iperf3 run measured.
#[derive(Debug, Default)]
pub struct IperfResult {
    /// Bytes the receiver got.
    pub bytes: u64,
    /// UDP: datagrams lost, in percent.
    pub lost_percent: f64,
    /// UDP: datagrams that arrived after a later one.
    pub out_of_order: u64,
}

/// Runs iperf3 from the client to [`iperf3_server`] for `secs` seconds: TCP, or UDP at
/// 50 Mbit/s; `reverse`: the server sends. Fails the test unless it completes.
pub fn iperf3(lab: &Lab, udp: bool, reverse: bool, secs: u32) -> IperfResult {
    let t = secs.to_string();
    let mut args = vec!["iperf3", "-c", "198.19.0.2", "-p", "5201", "-t", &t, "-J"];
    if udp {
        args.extend_from_slice(&["-u", "-b", "50M"]);
    }
    if reverse {
        args.push("-R");
    }
    // The server takes a moment to finish the previous test (over a lossy link, until its
    // control connection's close gets through) and refuses a client meanwhile: only that
    // answer is tried again, for up to 5 s.
    let mut tries = 0;
    let (out, j) = loop {
        let out = lab.exec("cli", &args);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let busy = j["error"]
            .as_str()
            .is_some_and(|e| e.contains("server is busy"));
        tries += 1;
        if !busy || tries == 10 {
            break (out, j);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(
        out.status.success() && j["error"].is_null(),
        "iperf3 udp={udp} reverse={reverse}: {}",
        text(&out)
    );
    let end = &j["end"];
    if udp {
        IperfResult {
            bytes: end["sum"]["bytes"].as_u64().unwrap_or(0),
            lost_percent: end["sum"]["lost_percent"].as_f64().unwrap_or(100.0),
            out_of_order: end["streams"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["udp"]["out_of_order"].as_u64())
                .sum(),
        }
    } else {
        IperfResult {
            bytes: end["sum_received"]["bytes"].as_u64().unwrap_or(0),
            ..IperfResult::default()
        }
    }
}

/// Starts `udp_who.py serve` on `addr:port` in `role`.
pub fn who_server(lab: &Lab, role: &str, addr: &str, port: &str) -> Child {
    let (c, _) = lab.spawn_ready(
        role,
        &["python3", &tool("udp_who.py"), "serve", addr, port, "20"],
    );
    c
}

/// What `dst:dport` sees as the source of a datagram from `bind:bport` in the client
/// namespace ("ip:port"), or "timeout".
pub fn seen_by(lab: &Lab, bind: &str, bport: &str, dst: &str, dport: &str) -> String {
    let out = lab.exec(
        "cli",
        &[
            "python3",
            &tool("udp_who.py"),
            "ask",
            bind,
            bport,
            dst,
            dport,
        ],
    );
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    s.strip_prefix("seen ").unwrap_or(&s).to_string()
}
