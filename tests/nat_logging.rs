//! Translation logs read back by a real IPFIX collector: Debian's `nfcapd` (nfdump)
//! listening on 127.0.0.1, `nfdump -o json` decoding what it stored. Loopback only, no
//! root needed; every collector is killed and its directory removed also on failure.
//!
//! nfcapd must be installed (`scripts/deps.sh` installs `nfdump`); the tests fail when it
//! is missing unless `XNAT_SKIP_NFDUMP=1` is set, in which case they say so and pass.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xnat::logging::{
    nat_event, EventKind, LogConfig, LogStats, Logger, NatEvent, PortBlock, Session,
};

/// Whether nfcapd and nfdump can run; panics (test failure) when they cannot, unless
/// skipping was asked for explicitly.
fn have_nfdump() -> bool {
    let ok = ["nfcapd", "nfdump"].iter().all(|b| {
        Command::new(b)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if ok {
        return true;
    }
    if std::env::var_os("XNAT_SKIP_NFDUMP").is_some() {
        eprintln!("SKIPPED: nfcapd/nfdump not installed (XNAT_SKIP_NFDUMP set)");
        return false;
    }
    panic!("nfcapd/nfdump not installed: run scripts/deps.sh (apt-get install nfdump)");
}

/// A free UDP port on 127.0.0.1 (bound then released: nfcapd binds it right after).
fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// An nfcapd on 127.0.0.1:port writing into its own temporary directory.
struct Nfcapd {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Nfcapd {
    fn start(tag: &str, port: u16) -> Nfcapd {
        Self::start_in(None, "127.0.0.1", tag, port)
    }

    /// nfcapd on `bind:port`, in network namespace `netns` if given (a lab host).
    fn start_in(netns: Option<&str>, bind: &str, tag: &str, port: u16) -> Nfcapd {
        let dir =
            std::env::temp_dir().join(format!("xnat-nfcapd-{}-{tag}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("collector dir");
        let log = std::fs::File::create(dir.join("nfcapd.log")).expect("log");
        let log2 = log.try_clone().expect("log");
        std::fs::create_dir_all(dir.join("flows")).expect("flows dir");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nfcapd"]);
                c
            }
            None => Command::new("nfcapd"),
        };
        let child = cmd
            .arg("-w")
            .arg(dir.join("flows"))
            .args(["-b", bind, "-p", &port.to_string(), "-t", "3600"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("spawn nfcapd");
        let mut c = Nfcapd {
            child: Some(child),
            dir,
            port,
        };
        // Ready once its socket is bound: the port is taken.
        let deadline = Instant::now() + Duration::from_secs(10);
        let bound = || match netns {
            None => UdpSocket::bind(("127.0.0.1", port)).is_err(),
            Some(ns) => Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "ss",
                    "-Hlun",
                    "sport",
                    "=",
                    &format!(":{port}"),
                ])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty()),
        };
        loop {
            if bound() {
                break;
            }
            if let Some(ch) = c.child.as_mut() {
                if let Ok(Some(st)) = ch.try_wait() {
                    panic!("nfcapd exited ({st}): {}", c.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "nfcapd did not bind: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nfcapd.log")).unwrap_or_default()
    }

    /// Stops nfcapd with SIGTERM (it closes and renames its current file) and returns
    /// every record `nfdump -o json` reads from the directory.
    fn stop_and_read(&mut self) -> Vec<HashMap<String, String>> {
        if let Some(mut ch) = self.child.take() {
            let pid = i32::try_from(ch.id()).expect("pid");
            // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while ch.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = ch.kill();
                    let _ = ch.wait();
                    panic!("nfcapd did not stop on SIGTERM: {}", self.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let out = Command::new("nfdump")
            .arg("-R")
            .arg(self.dir.join("flows"))
            .args(["-o", "json"])
            .output()
            .expect("run nfdump");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "nfdump failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        parse_records(&text)
    }
}

impl Drop for Nfcapd {
    fn drop(&mut self) {
        if let Some(mut ch) = self.child.take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
        if std::thread::panicking() {
            eprintln!("collector files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// nfdump's JSON output, one object per record with `"key" : value` lines; read line by
/// line into string maps (values unquoted).
fn parse_records(text: &str) -> Vec<HashMap<String, String>> {
    let mut recs = vec![];
    let mut cur: Option<HashMap<String, String>> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('{') {
            cur = Some(HashMap::new());
        } else if t.starts_with('}') {
            if let Some(r) = cur.take() {
                recs.push(r);
            }
        } else if let (Some(r), Some((k, v))) = (cur.as_mut(), t.split_once(" : ")) {
            let k = k.trim().trim_matches('"').to_string();
            let v = v.trim().trim_end_matches(',').trim_matches('"').to_string();
            r.insert(k, v);
        }
    }
    recs
}

/// Whether this nfdump decodes the IPFIX port range elements (1.7.4 and later).
fn nfdump_decodes_port_ranges() -> bool {
    let out = Command::new("nfdump")
        .arg("-V")
        .output()
        .expect("nfdump -V");
    let v = String::from_utf8_lossy(&out.stdout);
    // "nfdump: Version: NSEL-NEL1.7.1" (1.7.x) or "nfdump: Version: 1.7.4-..." and later.
    let ver: Vec<u32> = v
        .rsplit(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|w| w.contains('.'))
        .unwrap_or("")
        .split('.')
        .filter_map(|x| x.parse().ok())
        .collect();
    eprintln!("nfdump version {ver:?}");
    ver >= vec![1, 7, 4]
}

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().expect("address"))
}

fn cfg(collector: SocketAddr, workers: usize) -> LogConfig {
    LogConfig {
        collector,
        workers,
        flush_interval: Duration::from_millis(200),
        ..LogConfig::default()
    }
}

/// Waits until the logger has sent (or failed to send) every record it accepted.
fn settle(logger: &Logger, total: u64) -> LogStats {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = logger.stats();
        if s.records_sent + s.records_lost + s.dropped >= total {
            return s;
        }
        assert!(Instant::now() < deadline, "logger stuck: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn find(
    recs: &[HashMap<String, String>],
    f: impl Fn(&HashMap<String, String>) -> bool,
) -> Vec<&HashMap<String, String>> {
    recs.iter().filter(|r| f(r)).collect()
}

fn get<'a>(r: &'a HashMap<String, String>, k: &str) -> &'a str {
    r.get(k).map(String::as_str).unwrap_or("")
}

#[test]
fn nfdump_decodes_port_blocks_sessions_and_exhaustion() {
    if !have_nfdump() {
        return;
    }
    let mut col = Nfcapd::start("all", free_port());
    let (logger, w) = Logger::start(cfg(col.addr(), 2)).expect("logger");
    let nat = ip("198.19.0.1");
    let mut blocks = vec![];
    let mut sessions = vec![];
    // Three subscribers, two blocks each of 512 ports, logged from two workers; one
    // session per subscriber; one block released.
    for h in 0..3u16 {
        let inside = ip("198.18.0.2") + u32::from(h);
        for k in 0..2u16 {
            let start = 1024 + (h * 2 + k) * 512;
            let b = PortBlock::contiguous(inside, nat, start, start + 511).expect("block");
            w[usize::from(h % 2)].log(NatEvent::new(EventKind::PortBlockAlloc(b)));
            blocks.push((nat_event::PORT_BLOCK_ALLOCATION, b));
        }
        let s = Session {
            proto: 6,
            inside,
            inside_port: 40000 + h,
            nat,
            nat_port: 1024 + h * 1024 + 7,
            dst: ip("198.19.0.2"),
            dst_port: 80,
        };
        w[usize::from(h % 2)].log(NatEvent::new(EventKind::SessionCreate(s)));
        w[usize::from(h % 2)].log(NatEvent::new(EventKind::SessionDelete(s)));
        sessions.push(s);
    }
    let released = blocks[1].1;
    w[0].log(NatEvent::new(EventKind::PortBlockDealloc(released)));
    blocks.push((nat_event::PORT_BLOCK_DEALLOCATION, released));
    w[1].log(NatEvent::new(EventKind::PortsExhausted { nat }));
    w[1].log(NatEvent::new(EventKind::AddressesExhausted { pool_id: 3 }));
    let total = blocks.len() + 2 * sessions.len() + 2;
    let s = settle(&logger, total as u64);
    assert_eq!(s.records_sent, total as u64, "{s:?}");
    let s = logger.stop();
    assert_eq!((s.dropped, s.send_errors), (0, 0));
    std::thread::sleep(Duration::from_millis(300));
    let recs = col.stop_and_read();
    eprintln!("{} records decoded by nfdump", recs.len());
    assert_eq!(recs.len(), total, "every record stored once");
    let ranges = nfdump_decodes_port_ranges();
    for (ev, b) in &blocks {
        let found = find(&recs, |r| {
            get(r, "nat_event_id") == ev.to_string()
                && ip(get(r, "src4_addr")) == b.inside
                && ip(get(r, "src4_xlt_ip")) == b.nat
        });
        assert!(
            !found.is_empty(),
            "event {ev} for {} missing",
            Ipv4Addr::from(b.inside)
        );
        // The port range: nfdump reads portRangeStart..NumPorts from IPFIX only since
        // 1.7.4 (1.7.1, Debian 12's, skips those elements); checked whenever it can.
        let with_range = find(&recs, |r| {
            get(r, "nat_event_id") == ev.to_string()
                && ip(get(r, "src4_addr")) == b.inside
                && get(r, "pblock_start") == b.start.to_string()
                && get(r, "pblock_end") == b.end.to_string()
                && get(r, "pblock_step") == "1"
                && get(r, "pblock_size") == "512"
        });
        if ranges {
            assert!(!with_range.is_empty(), "port range of {b:?} not decoded");
        } else {
            assert!(found.iter().all(|r| !r.contains_key("pblock_start")));
        }
    }
    for s in &sessions {
        for ev in [
            nat_event::NAT44_SESSION_CREATE,
            nat_event::NAT44_SESSION_DELETE,
        ] {
            let found = find(&recs, |r| {
                get(r, "nat_event_id") == ev.to_string()
                    && ip(get(r, "src4_addr")) == s.inside
                    && get(r, "src_port") == s.inside_port.to_string()
                    && ip(get(r, "src4_xlt_ip")) == s.nat
                    && get(r, "src_xlt_port") == s.nat_port.to_string()
                    && get(r, "proto") == "6"
            });
            assert_eq!(found.len(), 1, "session event {ev} of {s:?}");
            // Minimal logs: no destination exported.
            assert_eq!(get(found[0], "dst4_addr"), "0.0.0.0");
        }
    }
    for ev in [nat_event::PORTS_EXHAUSTED, nat_event::ADDRESSES_EXHAUSTED] {
        assert_eq!(
            find(&recs, |r| get(r, "nat_event_id") == ev.to_string()).len(),
            1,
            "event {ev}"
        );
    }
}

#[test]
fn collector_started_after_the_first_message_decodes_after_template_refresh() {
    if !have_nfdump() {
        return;
    }
    let port = free_port();
    let collector = SocketAddr::from(([127, 0, 0, 1], port));
    let refresh = Duration::from_millis(700);
    let (logger, w) = Logger::start(LogConfig {
        template_refresh: refresh,
        // Only the timer refreshes here: the message count never triggers.
        template_refresh_messages: 1_000_000,
        ..cfg(collector, 1)
    })
    .expect("logger");
    let nat = ip("198.19.0.1");
    let block = |h: u32, i: u16| {
        PortBlock::contiguous(
            ip("198.18.0.10") + h,
            nat,
            2048 + i * 256,
            2048 + i * 256 + 255,
        )
        .expect("block")
    };
    // Before any collector: the templates (and these records) go nowhere.
    w[0].log(NatEvent::new(EventKind::PortBlockAlloc(block(0, 0))));
    settle(&logger, 1);
    let first = logger.stats();
    assert!(first.template_messages >= 1, "{first:?}");
    let mut col = Nfcapd::start("late", port);
    // Wait for a template refresh after the collector came up, then log.
    let t = Instant::now();
    while logger.stats().template_messages == first.template_messages {
        assert!(t.elapsed() < Duration::from_secs(5), "no template refresh");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 1..6u16 {
        w[0].log(NatEvent::new(EventKind::PortBlockAlloc(block(
            u32::from(i),
            i,
        ))));
    }
    settle(&logger, 6);
    let s = logger.stop();
    assert_eq!(s.dropped, 0);
    std::thread::sleep(Duration::from_millis(300));
    let recs = col.stop_and_read();
    for i in 1..6u16 {
        let b = block(u32::from(i), i);
        assert_eq!(
            find(&recs, |r| get(r, "nat_event_id") == "16"
                && ip(get(r, "src4_addr")) == b.inside
                && ip(get(r, "src4_xlt_ip")) == nat)
            .len(),
            1,
            "block of {} decoded after the refresh",
            Ipv4Addr::from(b.inside)
        );
    }
    // The record sent before the collector existed is lost, not invented.
    assert!(find(&recs, |r| ip(get(r, "src4_addr")) == block(0, 0).inside).is_empty());
}

#[test]
fn full_ring_counts_drops_without_blocking_and_the_rest_arrives() {
    if !have_nfdump() {
        return;
    }
    let mut col = Nfcapd::start("drops", free_port());
    let (logger, w) = Logger::start(LogConfig {
        ring_size: 64,
        // A slow consumer: the burst below overflows the ring long before it wakes.
        poll: Duration::from_millis(100),
        ..cfg(col.addr(), 1)
    })
    .expect("logger");
    std::thread::sleep(Duration::from_millis(50));
    let n = 20_000u32;
    let nat = ip("198.19.0.1");
    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let s = Session {
            proto: 17,
            inside: ip("198.18.0.2") + i % 200,
            inside_port: 10_000 + (i % 50_000) as u16,
            nat,
            nat_port: 1024 + (i % 60_000) as u16,
            dst: 0,
            dst_port: 0,
        };
        let t1 = Instant::now();
        w[0].log(NatEvent::new(EventKind::SessionCreate(s)));
        slowest = slowest.max(t1.elapsed());
    }
    let burst = t.elapsed();
    eprintln!("{n} log() calls in {burst:?}, slowest {slowest:?}");
    // Never blocked: the whole burst takes far less than one poll period of the logger
    // would if a call had waited for it (generous for a loaded 2-core debug build).
    assert!(burst < Duration::from_millis(500), "burst took {burst:?}");
    let s = settle(&logger, u64::from(n));
    let s2 = logger.stop();
    assert_eq!(
        s,
        LogStats {
            queued: 0,
            ..s2.clone()
        }
    );
    eprintln!("{s2:?}");
    assert!(s2.dropped > 0, "{s2:?}");
    assert_eq!(s2.dropped + s2.records_sent + s2.records_lost, u64::from(n));
    assert_eq!(s2.send_errors, 0);
    std::thread::sleep(Duration::from_millis(300));
    let recs = col.stop_and_read();
    // Exactly what the logger says it sent reached the collector and was decoded.
    assert_eq!(recs.len() as u64, s2.records_sent);
    assert!(recs.iter().all(|r| get(r, "nat_event_id") == "4"));
}

/// pmacct's nfacctd decodes the port range elements (361..364) that nfdump 1.7.1 skips,
/// through an `aggregate_primitives` file (scripts/deps.sh installs pmacct): every block's
/// start, end, step and size read back from a real collector.
/// pmacct's nfacctd on `bind:port` (in network namespace `netns` if given), printing every
/// record with the NAT and port block fields as JSON lines (appended once a second); its
/// whole process group is killed on drop.
struct Nfacctd {
    child: Child,
    dir: PathBuf,
}

impl Nfacctd {
    fn start_in(netns: Option<&str>, bind: &str, port: u16) -> Nfacctd {
        use std::os::unix::process::CommandExt;
        let dir = std::env::temp_dir().join(format!("xnat-nfacctd-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let d = dir.display();
        std::fs::write(
            dir.join("prims.lst"),
            "name=pbstart field_type=361 len=2 semantics=u_int\n\
             name=pbend field_type=362 len=2 semantics=u_int\n\
             name=pbstep field_type=363 len=2 semantics=u_int\n\
             name=pbnum field_type=364 len=2 semantics=u_int\n\
             name=natev field_type=230 len=1 semantics=u_int\n",
        )
        .expect("primitives");
        std::fs::write(
            dir.join("nfacctd.conf"),
            format!(
                "daemonize: false\nnfacctd_ip: {bind}\nnfacctd_port: {port}\n\
                 aggregate_primitives: {d}/prims.lst\nplugins: print[p]\n\
                 aggregate[p]: src_host, post_nat_src_host, natev, pbstart, pbend, pbstep, pbnum\n\
                 print_output[p]: json\nprint_output_file[p]: {d}/out.json\n\
                 print_output_file_append[p]: true\nprint_refresh_time[p]: 1\n"
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.join("nfacctd.log")).expect("log");
        let log2 = log.try_clone().expect("log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nfacctd"]);
                c
            }
            None => Command::new("nfacctd"),
        };
        let child = cmd
            .arg("-f")
            .arg(dir.join("nfacctd.conf"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("spawn nfacctd (apt-get install pmacct)");
        let c = Nfacctd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        let bound = || match netns {
            None => UdpSocket::bind(("127.0.0.1", port)).is_err(),
            Some(ns) => Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "ss",
                    "-Hlun",
                    "sport",
                    "=",
                    &format!(":{port}"),
                ])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty()),
        };
        while !bound() {
            assert!(Instant::now() < deadline, "nfacctd did not bind");
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// The records printed so far, once there are at least `want` (or after 10 s).
    fn records(&self, want: usize) -> Vec<serde_json::Value> {
        self.records_until(|v| v.len() >= want)
    }

    /// The records written so far, once `done` holds for them (or after 10 s).
    fn records_until(&self, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let out = self.dir.join("out.json");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let v: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if done(&v) || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Nfacctd {
    /// SIGKILL to the whole group: its core process does not exit on SIGTERM once the
    /// plugin has gone.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group our own child leads (process_group(0)).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A number field of an nfacctd JSON record (printed as a number or a string).
fn num(v: &serde_json::Value, k: &str) -> u64 {
    match &v[k] {
        serde_json::Value::String(s) => s.parse().unwrap_or(u64::MAX),
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(u64::MAX),
        _ => u64::MAX,
    }
}

/// pmacct's nfacctd decodes the port range elements (361..364) that nfdump 1.7.1 skips,
/// through an `aggregate_primitives` file (scripts/deps.sh installs pmacct): every block's
/// start, end, step and size read back from a real collector.
#[test]
fn nfacctd_decodes_port_ranges() {
    let port = free_port();
    let col = Nfacctd::start_in(None, "127.0.0.1", port);
    let (logger, w) =
        Logger::start(cfg(SocketAddr::from(([127, 0, 0, 1], port)), 1)).expect("logger");
    let nat = ip("198.19.0.1");
    let mut want = vec![];
    for h in 0..4u16 {
        let start = 4096 + h * 1000;
        let b = PortBlock {
            step: 2,
            num_ports: 500,
            ..PortBlock::contiguous(ip("198.18.0.20") + u32::from(h), nat, start, start + 999)
                .expect("block")
        };
        w[0].log(NatEvent::new(EventKind::PortBlockAlloc(b)));
        want.push((16u64, b));
        if h % 2 == 1 {
            w[0].log(NatEvent::new(EventKind::PortBlockDealloc(b)));
            want.push((17, b));
        }
    }
    settle(&logger, want.len() as u64);
    assert_eq!(logger.stop().records_sent, want.len() as u64);
    let lines = col.records(want.len());
    assert_eq!(lines.len(), want.len(), "{lines:?}");
    for (ev, b) in &want {
        let hit = lines.iter().any(|l| {
            num(l, "natev") == *ev
                && l["ip_src"] == Ipv4Addr::from(b.inside).to_string()
                && l["post_nat_ip_src"] == Ipv4Addr::from(b.nat).to_string()
                && num(l, "pbstart") == u64::from(b.start)
                && num(l, "pbend") == u64::from(b.end)
                && num(l, "pbstep") == 2
                && num(l, "pbnum") == 500
        });
        assert!(hit, "event {ev} {b:?} not decoded: {lines:?}");
    }
}

/// The gateway itself logs to a collector in the outside namespace: every connection of
/// two inside hosts arrives as a session create record with the inside address and port
/// and the NAT address and port the server saw, and, once flushed, as a delete record.
#[test]
fn the_gateway_logs_sessions_to_a_collector_across_the_lab() {
    if !have_nfdump() {
        return;
    }
    let lab = common::Lab::up("natlog", 1);
    let mut c = Nfcapd::start_in(Some(&lab.ns("srv")), "198.19.0.2", "lab", 4739);
    let gw = common::Gateway::start(
        &lab,
        &[
            "--snat",
            "198.19.0.1",
            "--log-format",
            "ipfix",
            "--log-collector",
            "198.19.0.2:4739",
        ],
    );
    assert!(lab
        .exec(
            "cli",
            &["ip", "addr", "add", "198.18.0.3/24", "dev", "eth0"]
        )
        .status
        .success());
    let conns = common::tool("conns.py");
    let mut srv = lab.spawn(
        "srv",
        &["python3", &conns, "server", "198.19.0.2", "9000", "30"],
        "conns-srv.log",
    );
    assert!(common::wait_for(Duration::from_secs(10), || lab
        .sh("srv", "ss -ltn | grep -q ':9000 '")
        .status
        .success()));
    // (inside address, inside port, NAT port) of each connection, as both ends saw it.
    let mut seen = Vec::new();
    for inside in ["198.18.0.2", "198.18.0.3"] {
        for _ in 0..3 {
            let py = format!(
                "import socket; s=socket.create_connection(('198.19.0.2',9000),timeout=5,source_address=('{inside}',0)); print(s.getsockname()[1], s.recv(100).decode().strip())"
            );
            let out = lab.exec("cli", &["python3", "-c", &py]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let (iport, peer) = text
                .trim()
                .split_once(' ')
                .unwrap_or_else(|| panic!("{out:?}"));
            let (nat, nport) = peer.split_once(':').unwrap_or_else(|| panic!("{text}"));
            assert_eq!(nat, "198.19.0.1", "{text}");
            seen.push((inside.to_string(), iport.to_string(), nport.to_string()));
        }
    }
    // Every session ends: delete records.
    assert!(gw.ctl(&["flush", "--all"]).status.success());
    // The logger flushes partial messages within a second.
    std::thread::sleep(Duration::from_millis(2500));
    let stats = gw.ctl_json(&["stats"]);
    let sent = stats["logging"]["records_sent"].as_u64().unwrap_or(0);
    assert!(sent >= 12, "{stats}");
    assert_eq!(stats["logging"]["dropped"], 0, "{stats}");
    let recs = c.stop_and_read();
    for (inside, iport, nport) in &seen {
        for ev in [
            nat_event::NAT44_SESSION_CREATE,
            nat_event::NAT44_SESSION_DELETE,
        ] {
            let found = find(&recs, |r| {
                get(r, "nat_event_id") == ev.to_string()
                    && get(r, "src4_addr") == inside
                    && get(r, "src_port") == iport
                    && get(r, "src4_xlt_ip") == "198.19.0.1"
                    && get(r, "src_xlt_port") == nport
                    && get(r, "proto") == "6"
            });
            assert_eq!(
                found.len(),
                1,
                "event {ev} of {inside}:{iport} -> 198.19.0.1:{nport} in {} records: {recs:?}",
                recs.len()
            );
        }
    }
    let _ = srv.kill();
    let _ = srv.wait();
}

/// Port blocks through the whole gateway: three inside hosts open 4, 20 and 36
/// connections; blocks of 16 ports, at most 2 per host. The collector (pmacct's nfacctd in
/// the outside namespace, which decodes the port range elements) gets one allocation per
/// block with the right inside address, NAT address and range; every NAT port the server
/// saw lies in a block of its own host; the third host is refused past its 32 ports while
/// the others are not touched; after a flush every block goes back (one de-allocation
/// each) once its hold time has passed.
#[test]
fn port_blocks_hold_every_connection_and_are_logged_once_per_block() {
    let lab = common::Lab::up("blocks", 1);
    let col = Nfacctd::start_in(Some(&lab.ns("srv")), "198.19.0.2", 4739);
    let cfg = lab.dir.join("xnat.toml");
    std::fs::write(
        &cfg,
        "[nat]\nsnat = [\"198.19.0.1\"]\nports = \"2000-2127\"\nport_block_size = 16\n\
         port_blocks_per_subscriber = 2\nport_block_hold_secs = 2\n\
         [timeouts]\nallow_below_rfc = true\n\
         [logging]\nformat = \"ipfix\"\ncollector = \"198.19.0.2:4739\"\nflush_interval_ms = 200\n",
    )
    .expect("config");
    let gw = common::Gateway::start(&lab, &["--config", &cfg.to_string_lossy()]);
    for a in ["198.18.0.3/24", "198.18.0.4/24"] {
        assert!(lab
            .exec("cli", &["ip", "addr", "add", a, "dev", "eth0"])
            .status
            .success());
    }
    let conns = common::tool("conns.py");
    let mut srv = lab.spawn(
        "srv",
        &["python3", &conns, "server", "198.19.0.2", "9000", "60"],
        "conns-srv.log",
    );
    assert!(common::wait_for(Duration::from_secs(10), || lab
        .sh("srv", "ss -ltn | grep -q ':9000 '")
        .status
        .success()));
    // Each host: N connections one after the other, kept open; prints the NAT port of
    // each that got through and the number that did not.
    let open = |inside: &str, n: u32| -> (Vec<u16>, u32) {
        let py = format!(
            "import socket\nkeep=[]\nfailed=0\n\
             for i in range({n}):\n\
             \x20 try:\n\
             \x20   s=socket.create_connection(('198.19.0.2',9000),timeout=1,source_address=('{inside}',0))\n\
             \x20   keep.append(s); print(s.recv(100).decode().strip().split(':')[1])\n\
             \x20 except OSError:\n\
             \x20   failed+=1\n\
             print('failed', failed)\n"
        );
        let out = lab.exec("cli", &["python3", "-c", &py]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut ports = Vec::new();
        let mut failed = u32::MAX;
        for line in text.lines() {
            match line.strip_prefix("failed ") {
                Some(f) => failed = f.parse().unwrap_or(u32::MAX),
                None => ports.push(line.parse().unwrap_or_else(|_| panic!("{text}"))),
            }
        }
        (ports, failed)
    };
    let hosts = [("198.18.0.2", 4u32), ("198.18.0.3", 20), ("198.18.0.4", 36)];
    let mut seen = Vec::new();
    for &(h, n) in &hosts {
        let (ports, failed) = open(h, n);
        seen.push((h, ports, failed));
    }
    assert_eq!(seen[0].1.len(), 4, "{seen:?}");
    assert_eq!(seen[1].1.len(), 20, "{seen:?}");
    assert_eq!(
        (seen[2].1.len(), seen[2].2),
        (32, 4),
        "{seen:?}\n{}",
        gw.log()
    );
    // The exhausted subscriber touches nobody else: the first host still gets ports (in
    // its own block).
    let (more, failed) = open("198.18.0.2", 3);
    assert_eq!((more.len(), failed), (3, 0), "{more:?}");
    seen[0].1.extend(more);
    let s = gw.ctl_json(&["stats"]);
    assert_eq!(s["port_blocks"]["allocated"], 5, "{s}");
    assert_eq!(s["port_blocks"]["subscribers"], 3, "{s}");
    assert!(
        s["total"]["drops"]["port_block_limit"].as_u64() >= Some(4),
        "{s}"
    );
    // `xnat lookup` asks the running gateway who holds each NAT port's block now.
    for (h, ports, _) in &seen {
        for p in ports {
            let out = Command::new(common::xnat_bin())
                .args(["lookup", &format!("198.19.0.1:{p}"), "--control"])
                .arg(&gw.control)
                .output()
                .expect("xnat lookup");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains(&format!("-> {h} ")),
                "198.19.0.1:{p} should be {h}'s: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // Every session ends; the blocks go back once empty for 2 s.
    assert!(gw.ctl(&["flush", "--all"]).status.success());
    assert!(
        common::wait_for(Duration::from_secs(10), || gw.ctl_json(&["stats"])
            ["port_blocks"]["released"]
            == 5),
        "{}",
        gw.ctl_json(&["stats"])
    );
    // Five blocks allocated and released: wait for all ten records (the quota events of the
    // host that hit its limit come in among them, so a count of records is not enough).
    let recs = col.records_until(|v| {
        let of = |ev| v.iter().filter(|r| num(r, "natev") == ev).count();
        of(16) >= 5 && of(17) >= 5
    });
    let blocks = |ev: u64, inside: &str| -> Vec<(u64, u64)> {
        recs.iter()
            .filter(|r| {
                num(r, "natev") == ev
                    && r["ip_src"] == inside
                    && r["post_nat_ip_src"] == "198.19.0.1"
                    && num(r, "pbstep") == 1
                    && num(r, "pbnum") == 16
            })
            .map(|r| (num(r, "pbstart"), num(r, "pbend")))
            .collect()
    };
    for (h, ports, _) in &seen {
        let alloc = blocks(16, h);
        let want = if ports.len() > 16 { 2 } else { 1 };
        assert_eq!(alloc.len(), want, "allocations of {h}: {recs:?}");
        let mut dealloc = blocks(17, h);
        let mut a2 = alloc.clone();
        dealloc.sort();
        a2.sort();
        assert_eq!(dealloc, a2, "de-allocations of {h}: {recs:?}");
        for &p in ports {
            assert!(
                alloc
                    .iter()
                    .any(|&(lo, hi)| (lo..=hi).contains(&u64::from(p)) && hi - lo == 15),
                "{h}'s NAT port {p} outside its blocks {alloc:?}"
            );
        }
    }
    let _ = srv.kill();
    let _ = srv.wait();
}
