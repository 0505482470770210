//! Translation logging cost: the worker side of `WorkerLog::log` (ns per event) and the
//! logger thread's throughput (IPFIX records/s sent to a UDP sink on 127.0.0.1).
//!
//! `cargo run --release --bin xnat-logbench [SECONDS]` (default 3 s per throughput run).
//! Reports, never asserts.

use std::hint::black_box;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xnat::logging::{now_ms, EventKind, Format, LogConfig, Logger, NatEvent, Session};

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cpu}, {cores} cores, Linux {kernel}")
}

/// A UDP sink on 127.0.0.1 counting datagrams until stopped.
struct Sink {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    t: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    fn start() -> Sink {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind sink");
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = s.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (st, c) = (stop.clone(), count.clone());
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                if s.recv(&mut buf).is_ok() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Sink {
            addr,
            stop,
            count,
            t: Some(t),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
        self.count.load(Ordering::Relaxed)
    }
}

fn session(i: u32) -> EventKind {
    EventKind::SessionCreate(Session {
        proto: 6,
        inside: 0xC612_0000 | (i & 0xffff),
        inside_port: (i % 60_000) as u16 + 1024,
        nat: 0xC613_0001,
        nat_port: (i % 64_000) as u16 + 1024,
        dst: 0xC613_0002,
        dst_port: 443,
    })
}

/// Worker-side cost: `n` calls timed as a whole, the ring large enough to hold them all
/// (no drop: the push path) or already full (the drop path).
fn worker_cost(sink: &Sink, n: u32, stamp: bool, full: bool) {
    let ring = if full { 1024 } else { n as usize };
    let (logger, w) = Logger::start(LogConfig {
        collector: sink.addr,
        ring_size: ring,
        // A sleepy consumer so that the ring is not drained under the timed loop.
        poll: Duration::from_millis(100),
        ..LogConfig::default()
    })
    .expect("logger");
    std::thread::sleep(Duration::from_millis(20));
    if full {
        for i in 0..ring as u32 {
            w[0].log(NatEvent::new(session(i)));
        }
    }
    let t = Instant::now();
    for i in 0..n {
        let ev = if stamp {
            NatEvent::at(now_ms(), session(i))
        } else {
            NatEvent::new(session(i))
        };
        w[0].log(black_box(ev));
    }
    let dt = t.elapsed();
    let s = logger.stop();
    println!(
        "worker log(): {:>6.1} ns/event  ({n} events, ring {ring}, {}{}; dropped {})",
        dt.as_nanos() as f64 / f64::from(n),
        if full {
            "ring full: drop path"
        } else {
            "ring with room"
        },
        if stamp {
            ", time stamped by the worker (SystemTime::now)"
        } else {
            ", time stamped by the logger"
        },
        s.dropped
    );
}

/// Logger throughput: one producer keeps the ring full for `secs`; records/s sent.
fn logger_throughput(sink: &Sink, secs: f64, format: Format, workers: usize) {
    let (logger, w) = Logger::start(LogConfig {
        format,
        collector: sink.addr,
        workers,
        ring_size: 65536,
        ..LogConfig::default()
    })
    .expect("logger");
    let before = sink.count.load(Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = w
        .into_iter()
        .map(|wl| {
            let st = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !st.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        wl.log(NatEvent::new(session(i)));
                        i = i.wrapping_add(1);
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    let t = Instant::now();
    let r0 = logger.stats().records_sent;
    std::thread::sleep(Duration::from_secs_f64(secs));
    let s = logger.stats();
    let dt = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        let _ = p.join();
    }
    let fin = logger.stop();
    let got = sink.count.load(Ordering::Relaxed) - before;
    println!(
        "logger {:?}, {workers} producer(s): {:>9.0} records/s, {:>7.0} datagrams/s sent \
         ({} records in {dt:.1} s; {} dropped by full rings; {} datagrams seen by the sink; send errors {})",
        format,
        (s.records_sent - r0) as f64 / dt,
        s.messages_sent as f64 / dt,
        s.records_sent - r0,
        fin.dropped,
        got,
        fin.send_errors
    );
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 600.0)
        .unwrap_or(3.0);
    let cmd: Vec<String> = std::env::args().collect();
    println!("machine: {}", machine());
    println!("command: {}", cmd.join(" "));
    let sink = Sink::start();
    for _ in 0..2 {
        worker_cost(&sink, 1_000_000, false, false);
    }
    worker_cost(&sink, 1_000_000, true, false);
    worker_cost(&sink, 1_000_000, false, true);
    logger_throughput(&sink, secs, Format::Ipfix, 1);
    logger_throughput(&sink, secs, Format::Ipfix, 2);
    logger_throughput(&sink, secs, Format::Syslog, 1);
    let n = sink.stop();
    println!("sink received {n} datagrams in total");
}
