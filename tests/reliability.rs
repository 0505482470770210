//! Failure behaviour in the lab: restarts (graceful and SIGKILL) that keep live
//! connections, port exhaustion and a full table that keep existing connections.

mod common;

use std::time::Duration;

use common::*;

/// Starts a two-way chat (server in srv, client in cli) for `secs` seconds.
fn chat(lab: &Lab, port: u16, secs: u32) -> (std::process::Child, std::process::Child) {
    let chat = tool("chat.py");
    let p = port.to_string();
    let s = secs.to_string();
    let srv = lab.spawn(
        "srv",
        &["python3", &chat, "server", "198.19.0.2", &p, &s],
        &format!("chat-srv-{port}.log"),
    );
    let pat = format!(":{port} ");
    let up = wait_for(Duration::from_secs(10), || {
        lab.sh("srv", &format!("ss -ltn | grep -q '{pat}'"))
            .status
            .success()
    });
    assert!(up, "chat server did not start");
    let cli = lab.spawn(
        "cli",
        &["python3", &chat, "client", "198.19.0.2", &p, &s],
        &format!("chat-cli-{port}.log"),
    );
    (srv, cli)
}

/// Waits for the chat client and returns its JSON report.
fn chat_result(lab: &Lab, mut cli: std::process::Child, port: u16) -> serde_json::Value {
    let done = wait_for(Duration::from_secs(40), || {
        matches!(cli.try_wait(), Ok(Some(_)))
    });
    assert!(done, "chat client hung");
    let text = lab.read(&format!("chat-cli-{port}.log"));
    serde_json::from_str(text.trim()).unwrap_or_else(|_| panic!("chat client said: {text}"))
}

/// Opens `n` TCP connections at once from the client to a server on 198.19.0.2:9000 (given
/// 4 s to complete); returns the server process and the client's JSON report.
fn parallel_connections(lab: &Lab, n: u32) -> (std::process::Child, serde_json::Value) {
    let conns = tool("conns.py");
    let srv = lab.spawn(
        "srv",
        &["python3", &conns, "server", "198.19.0.2", "9000", "30"],
        "conns-srv.log",
    );
    let up = wait_for(Duration::from_secs(10), || {
        lab.sh("srv", "ss -ltn | grep -q ':9000 '").status.success()
    });
    assert!(up, "connection server did not start");
    let out = lab.exec(
        "cli",
        &[
            "python3",
            &conns,
            "client",
            "198.19.0.2",
            "9000",
            &n.to_string(),
            "4",
        ],
    );
    let j = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    (srv, j)
}

fn translated(gw: &Gateway, port: u16) -> Option<String> {
    let v = gw.ctl_json(&["sessions", "--proto", "tcp", "--port", &port.to_string()]);
    v.as_array()?.first()?["translated"]
        .as_str()
        .map(String::from)
}

#[test]
fn restarts_keep_a_live_tcp_stream_on_the_same_port() {
    let lab = Lab::up("restart", 1);
    let state = lab.dir.join("table");
    let state_s = state.to_string_lossy().to_string();
    // A dedicated, routed pool address: the gateway's kernel does not own it, so while no
    // xnat runs its packets are dropped (and retransmitted), never answered with a RST as
    // the host's own (masquerade) address would be.
    let args = [
        "--snat",
        "198.19.2.1",
        "--table-size",
        "4096",
        "--state-file",
        &state_s,
    ];
    let mut gw = Gateway::start(&lab, &args);
    let (mut srv, cli) = chat(&lab, 7000, 14);
    assert!(
        wait_for(Duration::from_secs(5), || translated(&gw, 7000).is_some()),
        "{}",
        gw.log()
    );
    let before = translated(&gw, 7000).unwrap();
    std::thread::sleep(Duration::from_secs(2));

    // An upgrade: stop, start again with the same state file.
    assert_eq!(gw.stop(libc::SIGTERM), Some(0));
    let gw2 = Gateway::start(&lab, &args);
    assert!(gw2.log().contains("took over"), "{}", gw2.log());
    assert_eq!(
        translated(&gw2, 7000).as_deref(),
        Some(before.as_str()),
        "translation changed across restart"
    );
    std::thread::sleep(Duration::from_secs(3));

    // A crash: SIGKILL, start again.
    let mut gw2 = gw2;
    assert_eq!(gw2.stop(libc::SIGKILL), None);
    let gw3 = Gateway::start(&lab, &args);
    assert!(gw3.log().contains("took over"), "{}", gw3.log());

    let j = chat_result(&lab, cli, 7000);
    assert!(
        j["error"].is_null(),
        "the stream broke across restarts: {j}\n{}",
        gw3.log()
    );
    // ~10 lines/s for 14 s, minus the retransmission gaps of two restarts.
    assert!(j["received"].as_u64().unwrap_or(0) >= 100, "{j}");
    assert_eq!(translated(&gw3, 7000).as_deref(), Some(before.as_str()));
    let _ = srv.kill();
    let _ = srv.wait();
}

#[test]
fn port_exhaustion_refuses_new_connections_and_keeps_existing_ones() {
    let lab = Lab::up("ports", 1);
    // Ten NAT ports on one address.
    let gw = Gateway::start(&lab, &["--snat", "198.19.0.1", "--ports", "20000-20009"]);
    let (mut chat_srv, chat_cli) = chat(&lab, 7000, 10);
    assert!(wait_for(Duration::from_secs(5), || translated(&gw, 7000).is_some()));

    let (srv, j) = parallel_connections(&lab, 30);
    // Nine ports are left for this destination's connections (the chat holds one, but
    // towards another port: endpoint-dependent mapping lets that one be reused too).
    let ok = j["ok"].as_u64().unwrap_or(0);
    assert!((9..=10).contains(&ok), "{j}");
    assert_eq!(ok + j["failed"].as_u64().unwrap_or(0), 30);
    let s = gw.ctl_json(&["stats"]);
    assert!(num(&s, "/total/drops/ports_exhausted") >= 20, "{s}");

    let c = chat_result(&lab, chat_cli, 7000);
    assert!(
        c["error"].is_null() && c["received"].as_u64().unwrap_or(0) >= 80,
        "existing connection suffered: {c}"
    );
    let _ = chat_srv.kill();
    let _ = chat_srv.wait();
    drop(srv);
}

#[test]
fn a_full_table_keeps_established_connections() {
    let lab = Lab::up("full", 1);
    // 16 connections: a handful of buckets.
    let gw = Gateway::start(&lab, &["--masquerade", "--table-size", "16"]);
    let (mut chat_srv, chat_cli) = chat(&lab, 7000, 10);
    assert!(wait_for(Duration::from_secs(5), || translated(&gw, 7000).is_some()));
    std::thread::sleep(Duration::from_secs(1));
    // A flood of one-packet UDP flows from many source ports (nothing answers them).
    let flood = "import socket,time\n\
                 end=time.time()+5\n\
                 n=0\n\
                 while time.time()<end:\n\
                 \x20   s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                 \x20   s.sendto(b'x',('198.19.0.2',9))\n\
                 \x20   s.close(); n+=1\n\
                 \x20   time.sleep(0.002)\n\
                 print(n)\n";
    let out = lab.exec("cli", &["python3", "-c", flood]);
    let sent: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(sent > 200, "{out:?}");
    let s = gw.ctl_json(&["stats"]);
    // The table turned over many times: one-packet flows were evicted or refused.
    assert!(num(&s, "/table/evict") + num(&s, "/table/full") > 0, "{s}");
    assert!(num(&s, "/table/connections") <= 16, "{s}");
    let c = chat_result(&lab, chat_cli, 7000);
    assert!(
        c["error"].is_null() && c["received"].as_u64().unwrap_or(0) >= 80,
        "established connection lost: {c}"
    );
    let _ = chat_srv.kill();
    let _ = chat_srv.wait();
}

#[test]
fn one_source_cannot_exceed_its_session_quota() {
    let lab = Lab::up("quota", 1);
    let gw = Gateway::start(
        &lab,
        &["--snat", "198.19.0.1", "--max-sessions-per-source", "5"],
    );
    let (srv, j) = parallel_connections(&lab, 20);
    assert_eq!(j["ok"], 5, "{j}\n{}", gw.log());
    let s = gw.ctl_json(&["stats"]);
    assert!(num(&s, "/total/drops/quota_exceeded") >= 15, "{s}");
    // Another inside host is not affected.
    assert!(lab
        .exec(
            "cli",
            &["ip", "addr", "add", "198.18.0.3/24", "dev", "eth0"]
        )
        .status
        .success());
    let out = lab.exec("cli", &["python3", "-c", "import socket; s=socket.create_connection(('198.19.0.2',9000),timeout=5,source_address=('198.18.0.3',0)); print(s.recv(100).decode().strip())"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("198.19.0.1:"),
        "{out:?}"
    );
    let mut srv = srv;
    let _ = srv.kill();
    let _ = srv.wait();
    // Ended sessions give their share back at once (counted as they go, no recount).
    let f = gw.ctl(&["flush", "--all"]);
    assert!(f.status.success(), "{f:?}");
    let s = gw.ctl_json(&["stats"]);
    assert_eq!(num(&s, "/table/connections"), 0, "{s}");
    let (mut srv, j) = parallel_connections(&lab, 8);
    assert_eq!(j["ok"], 5, "{j}\n{}", gw.log());
    let _ = srv.kill();
    let _ = srv.wait();
}

#[test]
fn malformed_frames_are_counted_by_reason_while_good_traffic_flows() {
    let lab = Lab::up("malformed", 1);
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let mac = lab.mac("gw", "in0");
    assert_eq!(mac.len(), 17, "{mac:?}");
    // Good traffic before, during and after.
    let mut ping = lab.spawn(
        "cli",
        &["ping", "-c", "30", "-i", "0.1", "-W", "2", "198.19.0.2"],
        "ping.log",
    );
    let before = gw.ctl_json(&["stats"]);
    // Debian's python3 (with scapy), not whatever python3 comes first in PATH.
    let out = lab.exec(
        "cli",
        &["/usr/bin/python3", &tool("malformed.py"), "eth0", &mac, "3"],
    );
    assert!(out.status.success(), "{out:?}");
    let sent = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(wait_for(Duration::from_secs(10), || matches!(
        ping.try_wait(),
        Ok(Some(_))
    )));
    let log = lab.read("ping.log");
    assert!(
        log.contains(" 0% packet loss") || log.contains(" 29 received"),
        "good traffic suffered: {log}"
    );
    let after = gw.ctl_json(&["stats"]);
    // TTL 1: the gateway answers with Time Exceeded instead of only dropping.
    let replies = num(&after, "/total/icmp_errors_sent") - num(&before, "/total/icmp_errors_sent");
    assert_eq!(replies, 3, "{after}");
    for case in sent
        .lines()
        .filter(|c| !["vlan_passed", "ttl_expired"].contains(c))
    {
        let n = num(&after, &format!("/total/drops/{case}"))
            - num(&before, &format!("/total/drops/{case}"));
        assert_eq!(n, 3, "{case}: counted {n} times\n{after}");
    }
    // The VLAN frames went to the kernel, not to xnat.
    assert!(
        num(&after, "/xdp/passed") >= num(&before, "/xdp/passed") + 3,
        "{after}"
    );
    // Nothing malformed was translated.
    assert_eq!(
        num(&after, "/table/connections"),
        2,
        "only the ping's session and its endpoint-independent mapping: {after}"
    );
}

/// Removes the default state file when the test ends, also on failure.
struct RemoveOnDrop(&'static str);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

#[test]
fn a_restart_with_default_flags_takes_over_an_idle_connection() {
    // The one test that lets the gateway use the default /run/xnat/table: alone.
    let _alone = default_state_lock();
    // Never touch the file of a real gateway running on this host.
    if let Ok(f) = std::fs::File::open(DEFAULT_STATE_FILE) {
        // SAFETY: flock(2) on a descriptor we own; released when `f` is dropped.
        let r = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        assert_eq!(
            r, 0,
            "a gateway on this host holds {DEFAULT_STATE_FILE}: this test needs the default path"
        );
    }
    let _cleanup = RemoveOnDrop(DEFAULT_STATE_FILE);
    let lab = Lab::up("defstate", 1);
    // Nothing about state on the command line; a dedicated routed pool address as in the
    // test above (a masqueraded address is the host's own: its kernel would answer the
    // gap's packets with RSTs).
    let args = ["--snat", "198.19.2.1"];
    let mut gw = Gateway::start_exact(&lab, &args);
    assert!(
        gw.log().contains(DEFAULT_STATE_FILE),
        "the table is not in the default state file: {}",
        gw.log()
    );
    let mut srv = echo_server(&lab, "srv", "198.19.0.2", 7100, 60);
    let mut conn = EchoClient::connect(&lab, "cli", "198.19.0.2", 7100).expect("connect");
    assert_eq!(conn.say("before"), "ok before");
    let before = translated(&gw, 7100).expect("a translation");
    assert!(before.starts_with("198.19.2.1:"), "{before}");

    // The connection is idle while the gateway restarts.
    assert_eq!(gw.stop(libc::SIGTERM), Some(0));
    let gw2 = Gateway::start_exact(&lab, &args);
    assert!(gw2.log().contains("took over"), "{}", gw2.log());
    assert_eq!(translated(&gw2, 7100).as_deref(), Some(before.as_str()));
    assert_eq!(conn.say("after"), "ok after", "{}", gw2.log());

    // Another table size cannot take the file over as it is: its connections are carried
    // into the new table (the connection and its mapping), said in the log, and the idle
    // connection goes on through the same NAT port.
    let mut gw2 = gw2;
    assert_eq!(gw2.stop(libc::SIGTERM), Some(0));
    let gw3 = Gateway::start_exact(&lab, &["--snat", "198.19.2.1", "--table-size", "4096"]);
    let log = gw3.log();
    assert!(
        log.contains("carried the previous table's live connections into the new one")
            && log.contains("table size changed")
            && log.contains("found=2 kept=2"),
        "{log}"
    );
    assert!(!log.contains("started with an empty table"), "{log}");
    assert_eq!(translated(&gw3, 7100).as_deref(), Some(before.as_str()));
    assert_eq!(conn.say("resized"), "ok resized", "{}", gw3.log());
    let _ = srv.kill();
    let _ = srv.wait();
}

#[test]
fn two_gateways_cannot_share_a_state_file() {
    let lab = Lab::up("statelock", 1);
    let state = lab.dir.join("table");
    let state_s = state.to_string_lossy().to_string();
    let gw = Gateway::start(&lab, &["--snat", "198.19.2.1", "--state-file", &state_s]);
    // A second pair of interfaces in the same namespace, so that the second gateway is
    // not already refused for the XDP programs of the first.
    for cmd in [
        "ip link add in1 type veth peer name in1p",
        "ip link add out1 type veth peer name out1p",
        "ip addr add 198.18.9.1/24 dev in1",
        "ip addr add 198.19.9.1/24 dev out1",
        "for i in in1 in1p out1 out1p; do ip link set $i up; done",
    ] {
        let out = lab.sh("gw", cmd);
        assert!(out.status.success(), "{cmd}: {}", text(&out));
    }
    let control = lab.dir.join("second.sock");
    let out = lab.exec(
        "gw",
        &[
            xnat_bin(),
            "run",
            "--inside",
            "in1",
            "--outside",
            "out1",
            "--snat",
            "198.19.9.1",
            "--state-file",
            &state_s,
            "--control",
            control.to_str().unwrap(),
            "--duration",
            "5",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another xnat is running with this state file") && err.contains(&state_s),
        "{err}"
    );
    assert!(
        !lab.xdp_attached("in1"),
        "nothing attached by the refused one"
    );
    // The first one still translates, from its intact table.
    let ping = lab.exec("cli", &["ping", "-c", "2", "-W", "2", "198.19.0.2"]);
    assert!(ping.status.success(), "{}\n{}", text(&ping), gw.log());
    let s = gw.ctl_json(&["stats"]);
    assert!(num(&s, "/table/connections") >= 1, "{s}");
}

/// A tmpfs mounted for a test, unmounted (and its directory removed) when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs with `options` on `dir` (created); `None` if the kernel refuses them.
    fn mount(dir: std::path::PathBuf, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "xnat-test"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Some(Tmpfs(dir))
        } else {
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The resident and huge-page KiB of process `pid`'s mappings of `path` (`/proc/PID/smaps`).
fn smaps_of(pid: u32, path: &std::path::Path) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut inside, mut rss, mut huge) = (false, 0, 0);
    let path = path.to_string_lossy().to_string();
    for line in smaps.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            inside = w.last() == Some(&path.as_str());
            continue;
        }
        if inside && w.len() >= 2 {
            let kib: u64 = w[1].parse().unwrap_or(0);
            match w[0] {
                "Rss:" => rss += kib,
                "ShmemPmdMapped:" | "FilePmdMapped:" | "AnonHugePages:" => huge += kib,
                _ => {}
            }
        }
    }
    (rss, huge)
}

/// The number after `field=` in the log's "translation table allocated" line.
fn logged(log: &str, field: &str) -> Option<u64> {
    let line = log
        .lines()
        .find(|l| l.contains("translation table allocated"))?;
    let at = line.find(&format!("{field}="))? + field.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn the_start_log_tells_how_much_of_a_state_file_table_is_on_huge_pages() {
    let lab = Lab::up("hugepg", 1);
    const WARNING: &str = "mostly on 4 KiB pages";
    // A million connections, about 94 MiB: large enough to be warned about.
    let run = |dir: &std::path::Path| {
        let state = dir.join("table");
        let state_s = state.to_string_lossy().to_string();
        let gw = Gateway::start(
            &lab,
            &[
                "--masquerade",
                "--table-size",
                "1000000",
                "--state-file",
                &state_s,
            ],
        );
        let pid = gw.child.as_ref().unwrap().id();
        let (rss, huge) = smaps_of(pid, &state);
        // `xnat stats` tells the same (and `xnat_table_memory_bytes` on /metrics).
        let stats = gw.ctl_json(&["stats"]);
        let pages = &stats["table"]["pages"];
        let stats_huge = pages["huge"].as_u64().unwrap_or_else(|| panic!("{stats}"));
        assert!(
            stats_huge.abs_diff(huge << 10) <= 2 << 20,
            "stats {stats_huge} B, smaps {huge} KiB"
        );
        assert!(pages["resident"].as_u64().is_some_and(|r| r >= stats_huge));
        (gw.log(), rss, huge)
    };
    // What the log says is what the kernel says of the mapping (the gateway faulted every
    // page in at start), and the warning comes with most of it on 4 KiB pages.
    let check = |log: &str, rss: u64, huge: u64| {
        assert!(rss >= 90 << 10, "{rss} KiB resident\n{log}");
        let mib =
            logged(log, "huge_pages_mib").unwrap_or_else(|| panic!("no huge_pages_mib\n{log}"));
        assert!(
            mib.abs_diff(huge >> 10) <= 2,
            "logged {mib} MiB, smaps {huge} KiB\n{log}"
        );
        assert_eq!(
            log.contains(WARNING),
            huge < rss / 2,
            "{rss} KiB, {huge} KiB huge\n{log}"
        );
    };
    let forced = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .is_ok_and(|s| s.contains("[force]"));
    // A tmpfs as /run is mounted (no huge=): 4 KiB pages, and the advice names the mount.
    let small = Tmpfs::mount(lab.dir.join("small"), "mode=0700").expect("mounting a tmpfs");
    let (log, rss, huge) = run(&small.0);
    check(&log, rss, huge);
    if !forced {
        assert!(log.contains(WARNING), "{log}");
        assert!(log.contains("huge=within_size"), "{log}");
    }
    drop(small);
    // A tmpfs mounted as deploy/README.md says: huge pages where the kernel has them free.
    match Tmpfs::mount(lab.dir.join("huge"), "mode=0700,huge=within_size") {
        Some(huge_fs) => {
            let (log, rss, huge) = run(&huge_fs.0);
            check(&log, rss, huge);
            eprintln!("on a huge=within_size tmpfs: {huge} of {rss} KiB on huge pages");
        }
        None => eprintln!("this kernel refuses huge=within_size: that half is skipped"),
    }
}
