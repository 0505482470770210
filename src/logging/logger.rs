//! Per-worker rings and the logger thread: workers push events into their own bounded
//! ring (never blocking, a full ring drops and counts), one thread drains every ring,
//! stamps events without a time, and sends them: IPFIX messages batched up to the size
//! limit and flushed at least every `flush_interval`, templates sent in the first message
//! and again every `template_refresh` and every `template_refresh_messages` messages
//! (RFC 7011 §8.4, so that a restarted collector relearns them); or one syslog datagram
//! per event.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;

use super::event::{now_ms, NatEvent};
use super::ipfix::Encoder;
use super::syslog::SyslogFormat;
use super::LogError;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// IPFIX messages (RFC 7011) with the RFC 8158 information elements.
    Ipfix,
    /// RFC 5424 syslog lines, one per datagram (RFC 5426).
    Syslog,
}

/// Logger configuration (the proposed `[logging]` keys are named in each field's doc).
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `logging.format`.
    pub format: Format,
    /// `logging.collector`: where the datagrams go.
    pub collector: SocketAddr,
    /// `logging.source`: local address to send from (default: any, chosen by the kernel).
    pub source: Option<SocketAddr>,
    /// Number of workers (one ring each).
    pub workers: usize,
    /// `logging.ring_size`: events each worker's ring holds.
    pub ring_size: usize,
    /// `logging.mtu`: largest IPFIX message (UDP payload), bytes.
    pub mtu: usize,
    /// `logging.flush_interval_ms`: longest time a record waits in a partial message.
    pub flush_interval: Duration,
    /// `logging.template_refresh_secs`: templates resent at least this often.
    pub template_refresh: Duration,
    /// `logging.template_refresh_messages`: templates resent after this many messages.
    pub template_refresh_messages: u32,
    /// `logging.observation_domain`.
    pub observation_domain: u32,
    /// `logging.destinations`: add the destination address and port to session events
    /// (off by default: RFC 6888 asks to keep logs minimal).
    pub destinations: bool,
    /// `logging.syslog_facility` (0..=23).
    pub syslog_facility: u8,
    /// `logging.hostname`: syslog HOSTNAME (default: the kernel's host name).
    pub hostname: Option<String>,
    /// How long the logger thread sleeps when every ring is empty.
    pub poll: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: Format::Ipfix,
            collector: SocketAddr::from(([127, 0, 0, 1], 4739)),
            source: None,
            workers: 1,
            ring_size: 16384,
            mtu: 1400,
            flush_interval: Duration::from_secs(1),
            template_refresh: Duration::from_secs(60),
            template_refresh_messages: 100,
            observation_domain: 1,
            destinations: false,
            syslog_facility: 16,
            hostname: None,
            poll: Duration::from_millis(5),
        }
    }
}

/// Largest ring accepted (events per worker; 32 bytes each).
pub const MAX_RING_SIZE: usize = 1 << 24;

impl LogConfig {
    /// Refuses values out of range, naming the key and the value.
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |key, value: String, why| Err(LogError::Invalid { key, value, why });
        if self.workers == 0 {
            return bad("workers", "0".into(), "at least one worker");
        }
        if self.ring_size == 0 || self.ring_size > MAX_RING_SIZE {
            return bad(
                "logging.ring_size",
                self.ring_size.to_string(),
                "must be within 1..=16777216",
            );
        }
        if self.flush_interval.is_zero() || self.flush_interval > Duration::from_secs(1) {
            return bad(
                "logging.flush_interval_ms",
                self.flush_interval.as_millis().to_string(),
                "must be within 1..=1000",
            );
        }
        if self.template_refresh.is_zero() || self.template_refresh > Duration::from_secs(3600) {
            return bad(
                "logging.template_refresh_secs",
                self.template_refresh.as_secs_f64().to_string(),
                "must be within 1..=3600",
            );
        }
        if self.template_refresh_messages == 0 {
            return bad(
                "logging.template_refresh_messages",
                "0".into(),
                "must be at least 1",
            );
        }
        if self.syslog_facility > 23 {
            return bad(
                "logging.syslog_facility",
                self.syslog_facility.to_string(),
                "must be within 0..=23",
            );
        }
        if self.poll.is_zero() || self.poll > Duration::from_millis(100) {
            return bad(
                "logging.poll",
                format!("{:?}", self.poll),
                "must be within 1 µs..=100 ms",
            );
        }
        if self.format == Format::Ipfix {
            Encoder::new(0, self.destinations, self.mtu)?;
        }
        Ok(())
    }
}

struct Ring {
    q: ArrayQueue<NatEvent>,
    dropped: AtomicU64,
}

/// A worker's handle: its own ring. Not `Clone`: one producer per ring.
pub struct WorkerLog {
    ring: Arc<Ring>,
}

impl WorkerLog {
    /// Queues `ev` for the logger thread; never blocks: if the ring is full the event is
    /// dropped and counted. With one producer per ring the push is a bounded number of
    /// atomic operations (crossbeam's `ArrayQueue`), no lock, no allocation, no syscall.
    #[inline]
    pub fn log(&self, ev: NatEvent) {
        if self.ring.q.push(ev).is_err() {
            self.ring.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events this worker dropped because its ring was full.
    pub fn dropped(&self) -> u64 {
        self.ring.dropped.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Counters {
    records_sent: AtomicU64,
    messages_sent: AtomicU64,
    send_errors: AtomicU64,
    records_lost: AtomicU64,
    template_messages: AtomicU64,
}

/// Logging counters at one point in time.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogStats {
    /// Events dropped by the workers because their ring was full (sum of all rings).
    pub dropped: u64,
    /// Events waiting in the rings.
    pub queued: u64,
    /// Records (IPFIX data records or syslog lines) in datagrams sent without error.
    pub records_sent: u64,
    /// Datagrams sent without error.
    pub messages_sent: u64,
    /// Datagrams whose send failed (the collector unreachable, a full socket buffer).
    pub send_errors: u64,
    /// Records in those datagrams (lost; the IPFIX sequence numbers still count them, so
    /// the collector sees the gap).
    pub records_lost: u64,
    /// IPFIX messages that carried the templates.
    pub template_messages: u64,
}

/// Reads the counters of a running logger (cheap to clone, for stats and metrics).
#[derive(Clone)]
pub struct StatsReader {
    rings: Vec<Arc<Ring>>,
    c: Arc<Counters>,
}

impl StatsReader {
    /// The counters now.
    pub fn read(&self) -> LogStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = LogStats {
            records_sent: r(&self.c.records_sent),
            messages_sent: r(&self.c.messages_sent),
            send_errors: r(&self.c.send_errors),
            records_lost: r(&self.c.records_lost),
            template_messages: r(&self.c.template_messages),
            ..LogStats::default()
        };
        for ring in &self.rings {
            s.dropped += r(&ring.dropped);
            s.queued += ring.q.len() as u64;
        }
        s
    }
}

/// The logger thread.
pub struct Logger {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    reader: StatsReader,
}

impl Logger {
    /// Validates `cfg`, opens the socket to the collector, starts the logger thread and
    /// returns it with one [`WorkerLog`] per worker.
    pub fn start(cfg: LogConfig) -> Result<(Logger, Vec<WorkerLog>), LogError> {
        cfg.validate()?;
        let sock_err = |source| LogError::Socket {
            addr: cfg.collector,
            source,
        };
        let local = cfg.source.unwrap_or(if cfg.collector.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        });
        let sock = UdpSocket::bind(local).map_err(sock_err)?;
        sock.connect(cfg.collector).map_err(sock_err)?;
        sock.set_write_timeout(Some(Duration::from_millis(100)))
            .map_err(sock_err)?;
        let rings: Vec<Arc<Ring>> = (0..cfg.workers)
            .map(|_| {
                Arc::new(Ring {
                    q: ArrayQueue::new(cfg.ring_size),
                    dropped: AtomicU64::new(0),
                })
            })
            .collect();
        let c = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let sink = match cfg.format {
            Format::Ipfix => Sink::Ipfix(Box::new(IpfixSink {
                enc: Encoder::new(cfg.observation_domain, cfg.destinations, cfg.mtu)?,
                buf: Vec::with_capacity(cfg.mtu),
                last_templates: None,
                since_templates: 0,
                oldest: None,
                refresh: cfg.template_refresh,
                refresh_messages: cfg.template_refresh_messages,
                flush: cfg.flush_interval,
            })),
            Format::Syslog => Sink::Syslog(
                SyslogFormat {
                    facility: cfg.syslog_facility,
                    hostname: cfg.hostname.clone().unwrap_or_else(host_name),
                    destinations: cfg.destinations,
                    pid: std::process::id(),
                },
                String::with_capacity(256),
            ),
        };
        let mut run = Run {
            sock,
            rings: rings.clone(),
            c: c.clone(),
            stop: stop.clone(),
            sink,
            poll: cfg.poll,
        };
        let thread = std::thread::Builder::new()
            .name("xnat-logger".into())
            .spawn(move || run.run())
            .map_err(LogError::Thread)?;
        let workers = rings
            .iter()
            .map(|r| WorkerLog { ring: r.clone() })
            .collect();
        Ok((
            Logger {
                stop,
                thread: Some(thread),
                reader: StatsReader { rings, c },
            },
            workers,
        ))
    }

    /// The counters now.
    pub fn stats(&self) -> LogStats {
        self.reader.read()
    }

    /// A reader of the counters that outlives borrows of the logger.
    pub fn reader(&self) -> StatsReader {
        self.reader.clone()
    }

    /// Drains the rings, sends what is pending, stops the thread and returns the final
    /// counters. Events logged after this call starts may or may not be sent.
    pub fn stop(mut self) -> LogStats {
        self.shutdown();
        self.reader.read()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The kernel's host name, or empty (formatted as `-`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Events taken from one ring per pass before moving to the next (fairness).
const DRAIN_BATCH: usize = 1024;

struct Run {
    sock: UdpSocket,
    rings: Vec<Arc<Ring>>,
    c: Arc<Counters>,
    stop: Arc<AtomicBool>,
    sink: Sink,
    poll: Duration,
}

impl Run {
    fn run(&mut self) {
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            let now = Instant::now();
            let wall = now_ms();
            let mut got = 0usize;
            for ring in &self.rings {
                for _ in 0..DRAIN_BATCH {
                    let Some(mut ev) = ring.q.pop() else { break };
                    if ev.time_ms == 0 {
                        ev.time_ms = wall;
                    }
                    self.sink.add(ev, now, wall, &self.sock, &self.c);
                    got += 1;
                }
            }
            if got == 0 && stopping {
                self.sink.flush(now, wall, &self.sock, &self.c);
                return;
            }
            self.sink.tick(now, wall, &self.sock, &self.c);
            if got == 0 {
                std::thread::sleep(self.poll);
            }
        }
    }
}

enum Sink {
    Ipfix(Box<IpfixSink>),
    Syslog(SyslogFormat, String),
}

struct IpfixSink {
    enc: Encoder,
    buf: Vec<u8>,
    last_templates: Option<Instant>,
    since_templates: u32,
    /// When the oldest record of the message being built arrived.
    oldest: Option<Instant>,
    refresh: Duration,
    refresh_messages: u32,
    flush: Duration,
}

/// Sends one datagram; true if it went out whole. A "connection refused" reported by the
/// kernel belongs to an earlier datagram (an ICMP port unreachable while the collector
/// was down) and fails this send without sending it: retried once, so that a collector
/// that came back gets this datagram.
fn send(sock: &UdpSocket, buf: &[u8], records: u32, c: &Counters) -> bool {
    let mut r = sock.send(buf);
    if matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused) {
        r = sock.send(buf);
    }
    match r {
        Ok(n) if n == buf.len() => {
            c.messages_sent.fetch_add(1, Ordering::Relaxed);
            c.records_sent
                .fetch_add(u64::from(records), Ordering::Relaxed);
            true
        }
        _ => {
            c.send_errors.fetch_add(1, Ordering::Relaxed);
            c.records_lost
                .fetch_add(u64::from(records), Ordering::Relaxed);
            false
        }
    }
}

impl Sink {
    fn add(&mut self, ev: NatEvent, now: Instant, wall: u64, sock: &UdpSocket, c: &Counters) {
        match self {
            Sink::Ipfix(s) => s.add(ev, now, wall, sock, c),
            Sink::Syslog(f, line) => {
                f.format(&ev, line);
                let _ = send(sock, line.as_bytes(), 1, c);
            }
        }
    }

    fn tick(&mut self, now: Instant, wall: u64, sock: &UdpSocket, c: &Counters) {
        if let Sink::Ipfix(s) = self {
            s.tick(now, wall, sock, c);
        }
    }

    fn flush(&mut self, now: Instant, wall: u64, sock: &UdpSocket, c: &Counters) {
        if let Sink::Ipfix(s) = self {
            if s.enc.records() > 0 {
                s.send(now, wall, sock, c);
            }
        }
    }
}

impl IpfixSink {
    fn templates_due(&self, now: Instant) -> bool {
        match self.last_templates {
            None => true,
            Some(t) => {
                now.duration_since(t) >= self.refresh
                    || self.since_templates >= self.refresh_messages
            }
        }
    }

    /// Puts the templates into an empty message when they are due.
    fn start_message(&mut self, now: Instant) {
        if self.enc.is_empty() && self.templates_due(now) {
            self.enc.include_templates();
        }
    }

    fn add(&mut self, ev: NatEvent, now: Instant, wall: u64, sock: &UdpSocket, c: &Counters) {
        if self.enc.records() == 0 {
            self.start_message(now);
            self.oldest = Some(now);
        }
        if self.enc.push(&ev) {
            return;
        }
        self.send(now, wall, sock, c);
        self.start_message(now);
        self.oldest = Some(now);
        if !self.enc.push(&ev) {
            // Cannot happen: the size limit was checked to hold templates and any record.
            c.records_lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn tick(&mut self, now: Instant, wall: u64, sock: &UdpSocket, c: &Counters) {
        let flush_due = self
            .oldest
            .is_some_and(|t| now.duration_since(t) >= self.flush);
        if self.enc.records() > 0 && flush_due {
            self.send(now, wall, sock, c);
        } else if self.enc.is_empty() && self.templates_due(now) {
            // Idle: a template-only message keeps a restarted collector able to decode.
            self.enc.include_templates();
            self.send(now, wall, sock, c);
        }
    }

    fn send(&mut self, now: Instant, wall: u64, sock: &UdpSocket, c: &Counters) {
        let templates = self.enc.has_templates();
        let secs = u32::try_from(wall / 1000).unwrap_or(u32::MAX);
        let sent = match self.enc.finish(secs, &mut self.buf) {
            Ok(records) => send(sock, &self.buf, records, c),
            Err(_) => {
                // Lengths are bounded by the size limit (≤ 65507): not reachable.
                c.send_errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        if templates {
            c.template_messages.fetch_add(1, Ordering::Relaxed);
            // Templates that did not go out are due again with the next message.
            self.last_templates = if sent { Some(now) } else { None };
            self.since_templates = 0;
        } else {
            self.since_templates = self.since_templates.saturating_add(1);
        }
        self.oldest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::event::{EventKind, PortBlock};

    fn block(i: u16) -> NatEvent {
        let b = PortBlock::contiguous(0xC612_0002, 0xC613_0001, 1024 + i, 1024 + i).unwrap();
        NatEvent::new(EventKind::PortBlockAlloc(b))
    }

    #[test]
    fn full_ring_drops_and_counts_without_a_consumer() {
        let ring = Arc::new(Ring {
            q: ArrayQueue::new(4),
            dropped: AtomicU64::new(0),
        });
        let w = WorkerLog { ring: ring.clone() };
        for i in 0..10 {
            w.log(block(i));
        }
        assert_eq!(w.dropped(), 6);
        assert_eq!(ring.q.len(), 4);
        // The four kept are the first four, in order.
        for i in 0..4 {
            assert_eq!(ring.q.pop(), Some(block(i)));
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let ok = LogConfig::default();
        assert!(ok.validate().is_ok());
        let cases: Vec<(LogConfig, &str)> = vec![
            (
                LogConfig {
                    ring_size: 0,
                    ..ok.clone()
                },
                "logging.ring_size = 0",
            ),
            (
                LogConfig {
                    flush_interval: Duration::from_secs(2),
                    ..ok.clone()
                },
                "logging.flush_interval_ms = 2000",
            ),
            (
                LogConfig {
                    template_refresh_messages: 0,
                    ..ok.clone()
                },
                "logging.template_refresh_messages = 0",
            ),
            (
                LogConfig {
                    syslog_facility: 24,
                    ..ok.clone()
                },
                "logging.syslog_facility = 24",
            ),
            (
                LogConfig {
                    mtu: 100,
                    ..ok.clone()
                },
                "logging.mtu = 100",
            ),
        ];
        for (cfg, want) in cases {
            let e = cfg.validate().expect_err(want).to_string();
            assert!(e.starts_with(want), "{e} (wanted {want})");
        }
    }

    /// A UDP sink on loopback for the logger under test.
    fn sink() -> (UdpSocket, SocketAddr) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let a = s.local_addr().unwrap();
        (s, a)
    }

    #[test]
    fn ipfix_logger_batches_flushes_within_the_interval_and_counts() {
        let (rx, addr) = sink();
        let cfg = LogConfig {
            collector: addr,
            workers: 2,
            flush_interval: Duration::from_millis(200),
            ..LogConfig::default()
        };
        let (logger, w) = Logger::start(cfg).unwrap();
        let t0 = Instant::now();
        for i in 0..10 {
            w[usize::from(i % 2)].log(block(i));
        }
        // First datagram: the templates alone (sent at start) or with the records.
        let mut buf = [0u8; 2048];
        let mut records = 0u32;
        let mut seen_templates = false;
        while records < 10 {
            let n = rx.recv(&mut buf).expect("a message within 3 s");
            assert!(n <= 1400);
            assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), 10);
            assert_eq!(usize::from(u16::from_be_bytes([buf[2], buf[3]])), n);
            let seq = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
            assert_eq!(seq, records, "sequence counts the data records before");
            // Walk the sets: count data records of the port block template (25 bytes).
            let mut o = 16;
            while o < n {
                let id = u16::from_be_bytes([buf[o], buf[o + 1]]);
                let len = usize::from(u16::from_be_bytes([buf[o + 2], buf[o + 3]]));
                if id == 2 {
                    seen_templates = true;
                } else {
                    assert_eq!(id, 261);
                    assert_eq!((len - 4) % 25, 0);
                    records += u32::try_from((len - 4) / 25).unwrap();
                }
                o += len;
            }
            assert_eq!(o, n);
        }
        assert!(seen_templates);
        // Flushed by the timer (10 records are far from filling 1400 bytes), in time.
        assert!(t0.elapsed() < Duration::from_secs(2));
        let s = logger.stop();
        assert_eq!(s.records_sent, 10);
        assert_eq!(s.dropped, 0);
        assert_eq!(s.send_errors, 0);
        assert!(s.messages_sent >= 1);
    }

    #[test]
    fn syslog_logger_sends_one_line_per_event() {
        let (rx, addr) = sink();
        let cfg = LogConfig {
            format: Format::Syslog,
            collector: addr,
            hostname: Some("gw".into()),
            ..LogConfig::default()
        };
        let (logger, w) = Logger::start(cfg).unwrap();
        w[0].log(NatEvent::at(1000, block(5).kind));
        w[0].log(NatEvent::new(EventKind::AddressesExhausted { pool_id: 2 }));
        let mut buf = [0u8; 1024];
        let n = rx.recv(&mut buf).unwrap();
        let line = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            line.starts_with("<134>1 1970-01-01T00:00:01.000Z gw xnat "),
            "{line}"
        );
        assert!(line.ends_with(" PORT_BLOCK_ALLOC - natEvent=16 src=198.18.0.2 nat=198.19.0.1 ports=1029-1029 step=1 n=1"), "{line}");
        let n = rx.recv(&mut buf).unwrap();
        let line = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            line.ends_with(" ADDRESSES_EXHAUSTED - natEvent=3 pool=2"),
            "{line}"
        );
        // Stamped by the logger: not 1970.
        assert!(!line.contains(" 1970-"), "{line}");
        let s = logger.stop();
        assert_eq!((s.records_sent, s.messages_sent), (2, 2));
    }
}
