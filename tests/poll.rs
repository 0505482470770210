//! `--poll prefer-busy` (preferred busy polling): the AF_XDP sockets carry the three
//! busy-poll options, a gateway in that mode passes real traffic in the lab, and bad poll
//! values are refused with exit code 2.

mod common;

use std::os::fd::AsRawFd;

use common::*;
use xnat::dataplane::xsk::{self, BusyPollOptions, RingSizes, ZeroCopy};
use xnat::dataplane::PollMode;

/// Runs `f` on a thread that has entered network namespace `ns` (a namespace affects only
/// the calling thread; the test's other threads stay where they are).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("namespace file");
        // SAFETY: a valid descriptor of a network namespace and the matching flag; only this
        // thread changes namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

/// The busy-poll options of the inside and outside sockets of `queue` of in0/out0 in the
/// namespace `ns`, opened as the gateway opens them in `mode` with batch `batch`. (A queue
/// per call: the kernel releases a closed socket's binding asynchronously.)
fn options_in(ns: &str, queue: u32, mode: PollMode, batch: usize) -> [BusyPollOptions; 2] {
    in_netns(ns, move || {
        let sizes = RingSizes {
            frames: 256,
            ring: 64,
        };
        let s = xsk::open_queue(
            "in0",
            "out0",
            queue,
            ZeroCopy::Auto,
            sizes,
            mode.busy_poll(batch),
        )
        .expect("open the sockets of the queue");
        [&s.inside, &s.outside].map(|r| {
            xsk::busy_poll_options(r.rx.fd().as_raw_fd()).expect("getsockopt busy-poll options")
        })
    })
}

#[test]
fn prefer_busy_sets_the_busy_poll_options_on_both_sockets() {
    let lab = Lab::up("pbopt", 3);
    let ns = lab.ns("gw");
    // SO_PREFER_BUSY_POLL and SO_BUSY_POLL read back with getsockopt (the kernel has no
    // getsockopt for SO_BUSY_POLL_BUDGET: ENOPROTOOPT; see the traced gateway below).
    for o in options_in(&ns, 0, PollMode::PreferBusy, 48) {
        assert_eq!(o.prefer, 1, "{o:?}");
        assert_eq!(
            o.usecs,
            i32::try_from(xsk::BUSY_POLL_USECS).expect("small"),
            "{o:?}"
        );
    }
    // The other modes leave the sockets as the kernel made them.
    for (queue, mode) in [(1, PollMode::Adaptive), (2, PollMode::Busy)] {
        for o in options_in(&ns, queue, mode, 48) {
            assert_eq!(o.prefer, 0, "{mode:?}: {o:?}");
            assert_eq!(o.usecs, 0, "{mode:?}: {o:?}");
        }
    }

    // A lab of its own for the gateway: the sockets above leave their queues (and the XDP
    // program) to a deferred teardown, which on a loaded machine can still hold them when
    // a gateway binds the same queues.
    let lab = Lab::up("pbgw", 3);
    // A gateway started with `--poll prefer-busy --batch 48`, its setsockopt calls traced:
    // all three options on both sockets of each of the 3 queues, the budget = the batch size,
    // every call succeeding.
    let trace = lab.dir.join("setsockopt.trace");
    let trace_s = trace.to_string_lossy().to_string();
    let stats = lab.dir.join("stats.json");
    let stats_s = stats.to_string_lossy().to_string();
    let control = lab.dir.join("xnat.sock");
    let control_s = control.to_string_lossy().to_string();
    let mut child = lab.spawn(
        "gw",
        &[
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=setsockopt",
            "-o",
            &trace_s,
            xnat_bin(),
            "run",
            "--inside",
            "in0",
            "--outside",
            "out0",
            "--masquerade",
            "--no-state-file",
            "--queues",
            "3",
            "--poll",
            "prefer-busy",
            "--batch",
            "48",
            "--stats-interval",
            "0.2",
            "--stats-file",
            &stats_s,
            "--control",
            &control_s,
        ],
        "xnat.log",
    );
    let started = wait_for(std::time::Duration::from_secs(30), || stats.exists());
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "xnat did not start: {}", lab.read("xnat.log"));
    let t = std::fs::read_to_string(&trace).expect("trace");
    for (opt, val) in [
        ("SO_PREFER_BUSY_POLL", 1u32),
        ("SO_BUSY_POLL", xsk::BUSY_POLL_USECS),
        ("SO_BUSY_POLL_BUDGET", 48),
    ] {
        let call = format!("SOL_SOCKET, {opt}, [{val}], 4) = 0");
        let n = t.lines().filter(|l| l.contains(&call)).count();
        assert_eq!(n, 6, "{call} on the 3 inside and 3 outside sockets:\n{t}");
    }
}

#[test]
fn prefer_busy_gateway_passes_ping_and_tcp() {
    // Default veth offloads (partial checksums from the hosts), NAT mode.
    let lab = Lab::up("pbusy", 1);
    let mut srv = http_server(&lab, "srv", "198.19.0.2", 8080, "http.log");
    let gw = Gateway::start(&lab, &["--masquerade", "--poll", "prefer-busy"]);
    let ping = lab.exec(
        "cli",
        &["ping", "-c", "5", "-i", "0.2", "-W", "2", "198.19.0.2"],
    );
    let ping_out = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(
        ping_out.contains(" 5 received") || ping_out.contains(" 4 received"),
        "{ping_out}\n{}",
        gw.log()
    );
    download_10mb_intact(&lab, "cli", "http://198.19.0.2:8080");
    let log = lab.read("http.log");
    assert!(log.contains("198.19.0.1 - -"), "{log}");
    let s = gw.fresh_stats();
    assert!(num(&s, "/table/hit") > 1000, "{s}");
    assert!(num(&s, "/total/events/checksum_completed") > 1000, "{s}");
    let _ = srv.kill();
    let _ = srv.wait();
}

#[test]
fn bad_poll_values_are_refused_with_exit_2() {
    let out = std::process::Command::new(xnat_bin())
        .args([
            "run",
            "--inside",
            "in0",
            "--outside",
            "out0",
            "--poll",
            "foo",
        ])
        .output()
        .expect("run xnat");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'foo'") && err.contains("prefer-busy"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("xnat-poll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("xnat.toml");
    std::fs::write(
        &conf,
        "[interfaces]\ninside = \"in0\"\noutside = \"out0\"\n[dataplane]\npoll = \"foo\"\n",
    )
    .expect("config file");
    let out = std::process::Command::new(xnat_bin())
        .args(["run", "--config"])
        .arg(&conf)
        .output()
        .expect("run xnat");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid dataplane.poll = \"foo\"") && err.contains("prefer-busy"),
        "{err}"
    );
}
