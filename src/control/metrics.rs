//! Prometheus metrics: an HTTP endpoint (`--metrics-listen ADDR:PORT`, path `/metrics`)
//! serving every counter in the OpenMetrics text format. Each scrape reads the counters
//! like `xnat stats` does; the packet path is never touched.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::stats::{Snapshot, StatsSource};

type Labels = Vec<(String, String)>;

fn counter_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge_family(reg: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    reg.register(name, help, f.clone());
    f
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Renders a snapshot in the OpenMetrics text format.
pub fn render(s: &Snapshot) -> String {
    let mut reg = Registry::with_prefix("xnat");
    let packets = counter_family(
        &mut reg,
        "packets",
        "Packets by worker, interface and direction",
    );
    let bytes = counter_family(
        &mut reg,
        "bytes",
        "Bytes by worker, interface and direction",
    );
    let drops = counter_family(&mut reg, "drops", "Packets dropped, by reason");
    let xdp_passed = counter_family(
        &mut reg,
        "xdp_passed",
        "Frames the steering program handed to the kernel, by reason",
    );
    let router_events = counter_family(
        &mut reg,
        "router_events",
        "Router work on forwarded packets: partial checksums completed, MSS clamped, Fragmentation Needed sent, packets fragmented and fragments sent, ICMP errors suppressed (RFC 1812) or rate-limited",
    );
    let xdp = counter_family(
        &mut reg,
        "xdp_packets",
        "Frames seen by the XDP steering program, by action",
    );
    let table_events = counter_family(&mut reg, "table_events", "Translation table outcomes");
    let entries = gauge_family(
        &mut reg,
        "table_entries",
        "Live connections in the translation table",
    );
    let capacity = gauge_family(
        &mut reg,
        "table_capacity",
        "Capacity of the translation table in connections",
    );
    let ports = gauge_family(
        &mut reg,
        "nat_ports_used",
        "Ports of a NAT address used by live sessions",
    );
    let port_range = gauge_family(
        &mut reg,
        "nat_ports",
        "Ports in the NAT range of a NAT address",
    );
    let info = gauge_family(
        &mut reg,
        "info",
        "Gateway mode, XDP and AF_XDP modes (always 1)",
    );
    let uptime = gauge_family(
        &mut reg,
        "uptime_seconds",
        "Seconds since the gateway started",
    );

    let ifname = [s.info.inside.as_str(), s.info.outside.as_str()];
    for w in &s.workers {
        let worker = w.queue.to_string();
        let c = &w.counters;
        for (i, name) in ifname.iter().enumerate() {
            for (dir, p, b) in [
                ("rx", c.rx_packets[i], c.rx_bytes[i]),
                ("tx", c.tx_packets[i], c.tx_bytes[i]),
            ] {
                let labels = l(&[("worker", &worker), ("interface", name), ("direction", dir)]);
                packets.get_or_create(&labels).inc_by(p);
                bytes.get_or_create(&labels).inc_by(b);
            }
        }
    }
    for (reason, v) in &s.total.drops {
        drops.get_or_create(&l(&[("reason", reason)])).inc_by(*v);
    }
    drops
        .get_or_create(&l(&[("reason", "tx_ring_full")]))
        .inc_by(s.total.tx_ring_full);
    drops
        .get_or_create(&l(&[("reason", "frag_dropped")]))
        .inc_by(s.total.frag_dropped);
    for name in crate::dataplane::worker::EVENT_NAMES {
        let v = s.total.events.get(name).copied().unwrap_or(0);
        router_events
            .get_or_create(&l(&[("event", name)]))
            .inc_by(v);
    }
    for (action, v) in [
        ("redirected", s.xdp.redirected),
        ("passed", s.xdp.passed),
        ("redirect_failed", s.xdp.redirect_failed),
    ] {
        xdp.get_or_create(&l(&[("action", action)])).inc_by(v);
    }
    for reason in crate::dataplane::bpf::PASS_REASONS {
        let v = s.xdp.passed_by_reason.get(reason).copied().unwrap_or(0);
        xdp_passed
            .get_or_create(&l(&[("reason", reason)]))
            .inc_by(v);
    }
    if let Some(t) = &s.table {
        for (event, v) in [
            ("hit", t.hit),
            ("miss", t.miss),
            ("insert", t.insert),
            ("evict", t.evict),
            ("expire", t.expire),
            ("restore", t.restore),
            ("full", t.full),
            ("race_lost", t.race_lost),
            ("rev_taken", t.rev_taken),
        ] {
            table_events
                .get_or_create(&l(&[("event", event)]))
                .inc_by(v);
        }
        entries.get_or_create(&Vec::new()).set(t.connections as i64);
        capacity.get_or_create(&Vec::new()).set(t.capacity as i64);
    }
    for p in &s.ports {
        let a = p.addr.to_string();
        ports.get_or_create(&l(&[("addr", &a)])).set(p.used as i64);
        port_range
            .get_or_create(&l(&[("addr", &a)]))
            .set(i64::from(p.size));
    }
    let xdp_modes = format!("{}/{}", s.info.xdp_mode[0], s.info.xdp_mode[1]);
    info.get_or_create(&l(&[
        ("mode", &s.mode),
        ("xdp_mode", &xdp_modes),
        ("xsk_mode", &s.info.xsk_mode),
    ]))
    .set(1);
    uptime.get_or_create(&Vec::new()).set(s.uptime_secs as i64);

    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

/// The metrics HTTP server.
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The address actually bound.
    pub addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and serves `/metrics` from `src` until dropped.
    pub fn start(addr: SocketAddr, src: StatsSource) -> Result<MetricsServer, String> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| format!("invalid --metrics-listen = {addr}: {e}"))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| format!("--metrics-listen = {addr}: not an IP socket"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("xnat-metrics".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    let req = match server.recv_timeout(Duration::from_millis(200)) {
                        Ok(Some(r)) => r,
                        Ok(None) => continue,
                        Err(_) => break,
                    };
                    let resp = if req.url() == "/metrics" || req.url().starts_with("/metrics?") {
                        let body = render(&src.snapshot_with_ports());
                        let ct = tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
                        );
                        let mut r = tiny_http::Response::from_string(body);
                        if let Ok(h) = ct {
                            r.add_header(h);
                        }
                        r
                    } else {
                        tiny_http::Response::from_string("xnat: metrics are at /metrics\n")
                            .with_status_code(404)
                    };
                    let _ = req.respond(resp);
                }
            })
            .map_err(|e| format!("spawning the metrics thread: {e}"))?;
        Ok(MetricsServer {
            stop,
            thread: Some(thread),
            addr: bound,
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
