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
    let afxdp = counter_family(
        &mut reg,
        "afxdp_losses",
        "Frames the kernel could not hand to an AF_XDP socket, by interface and kind (rx_ring_full: the worker's RX ring was full; rx_dropped: dropped by the kernel; fill_ring_empty: no free frame to receive into)",
    );
    let table_events = counter_family(&mut reg, "table_events", "Translation table outcomes");
    let entries = gauge_family(
        &mut reg,
        "table_entries",
        "Live connections in the translation table",
    );
    let by_state = gauge_family(
        &mut reg,
        "table_connections",
        "Live connections in the translation table by state (kept as connections come and go)",
    );
    let capacity = gauge_family(
        &mut reg,
        "table_capacity",
        "Capacity of the translation table in connections",
    );
    let table_pages = gauge_family(
        &mut reg,
        "table_memory_bytes",
        "Bytes of the translation table resident at start, by page size (huge: 2 MiB and up; small: 4 KiB): a large table mostly on small pages misses the TLB on most lookups",
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
        "Gateway mode, XDP and AF_XDP modes, checksum completion per port (always 1)",
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
    for (i, name) in ifname.iter().enumerate() {
        for (kind, v) in [
            ("rx_ring_full", s.total.xsk_rx_ring_full[i]),
            ("rx_dropped", s.total.xsk_rx_dropped[i]),
            ("fill_ring_empty", s.total.xsk_fill_ring_empty[i]),
        ] {
            afxdp
                .get_or_create(&l(&[("interface", name), ("kind", kind)]))
                .inc_by(v);
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
        for c in &t.states {
            by_state
                .get_or_create(&l(&[("state", &c.state)]))
                .set(c.connections as i64);
        }
        capacity.get_or_create(&Vec::new()).set(t.capacity as i64);
        if let Some(p) = t.pages {
            let as_gauge = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
            table_pages
                .get_or_create(&l(&[("pages", "huge")]))
                .set(as_gauge(p.huge));
            table_pages
                .get_or_create(&l(&[("pages", "small")]))
                .set(as_gauge(p.resident.saturating_sub(p.huge)));
        }
    }
    for p in &s.ports {
        let a = p.addr.to_string();
        ports.get_or_create(&l(&[("addr", &a)])).set(p.used as i64);
        port_range
            .get_or_create(&l(&[("addr", &a)]))
            .set(i64::from(p.size));
    }
    if let Some(b) = &s.port_blocks {
        let g = gauge_family(
            &mut reg,
            "port_blocks",
            "Port blocks (carrier-grade NAT): held by subscribers, and in the pools in all",
        );
        g.get_or_create(&l(&[("state", "in_use")]))
            .set(b.in_use as i64);
        g.get_or_create(&l(&[("state", "total")]))
            .set(b.total as i64);
        gauge_family(
            &mut reg,
            "port_block_subscribers",
            "Inside addresses holding at least one port block",
        )
        .get_or_create(&Vec::new())
        .set(b.subscribers as i64);
        let ev = counter_family(
            &mut reg,
            "port_block_events",
            "Port blocks allocated, released, and refused (the subscriber at its limit, or the pool address out of blocks)",
        );
        for (event, v) in [
            ("allocated", b.allocated),
            ("released", b.released),
            ("refused_subscriber_limit", b.refused_subscriber_limit),
            ("refused_pool_exhausted", b.refused_pool_exhausted),
        ] {
            ev.get_or_create(&l(&[("event", event)])).inc_by(v);
        }
    }
    if let Some(lg) = &s.logging {
        let records = counter_family(
            &mut reg,
            "log_records",
            "Translation log records (IPFIX records or syslog lines): sent, dropped (a worker's ring was full), lost (in a datagram whose send failed)",
        );
        for (outcome, v) in [
            ("sent", lg.records_sent),
            ("dropped", lg.dropped),
            ("lost", lg.records_lost),
        ] {
            records.get_or_create(&l(&[("outcome", outcome)])).inc_by(v);
        }
        let messages = counter_family(
            &mut reg,
            "log_messages",
            "Translation log datagrams: sent, failed, and those that carried the IPFIX templates",
        );
        for (outcome, v) in [
            ("sent", lg.messages_sent),
            ("failed", lg.send_errors),
            ("templates", lg.template_messages),
        ] {
            messages
                .get_or_create(&l(&[("outcome", outcome)]))
                .inc_by(v);
        }
        gauge_family(
            &mut reg,
            "log_queued",
            "Translation log events waiting in the rings",
        )
        .get_or_create(&Vec::new())
        .set(lg.queued as i64);
    }
    let xdp_modes = format!("{}/{}", s.info.xdp_mode[0], s.info.xdp_mode[1]);
    let on_off = crate::stats::on_off;
    let completion = format!(
        "{}/{}",
        on_off(s.info.checksum_completion[0].0),
        on_off(s.info.checksum_completion[1].0)
    );
    info.get_or_create(&l(&[
        ("mode", &s.mode),
        ("xdp_mode", &xdp_modes),
        ("xsk_mode", &s.info.xsk_mode),
        ("checksum_completion", &completion),
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use super::render;
    use crate::dataplane::bpf::{AttachedMode, SteerCounters, PASS_REASONS};
    use crate::dataplane::RunInfo;
    use crate::stats::{Counters, PortUsage, Snapshot, TableSnapshot, WorkerSnapshot};

    /// Labels Prometheus gives every series of a scrape target: the dashboard may select
    /// and group by them although `render` does not write them.
    const TARGET_LABELS: [&str; 2] = ["instance", "job"];

    /// PromQL clauses followed by a list of label names.
    const GROUPING: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];

    /// Series name -> label name -> the values it takes.
    type Exported = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

    /// A snapshot in which every metric family has samples, with every label value the
    /// code knows of (forward mode's drop reasons stand for the handler's).
    fn populated() -> Snapshot {
        let counters = Counters {
            rx_packets: [10, 20],
            rx_bytes: [1_000, 2_000],
            tx_packets: [20, 10],
            tx_bytes: [2_000, 1_000],
            tx_ring_full: 1,
            frag_dropped: 1,
            drops: crate::dataplane::forward::DROP_REASONS
                .iter()
                .map(|r| (r.to_string(), 1))
                .collect(),
            events: crate::dataplane::worker::EVENT_NAMES
                .iter()
                .map(|e| (e.to_string(), 1))
                .collect(),
            ..Default::default()
        };
        Snapshot {
            uptime_secs: 60.0,
            mode: "nat".into(),
            info: RunInfo {
                inside: "in0".into(),
                outside: "out0".into(),
                queues: vec![0],
                cores: vec![Some(1)],
                xdp_mode: [AttachedMode::Native, AttachedMode::Generic],
                zero_copy: false,
                xsk_mode: "copy".into(),
                checksum_completion: [(true, "virtual".into()), (false, "ixgbe".into())],
            },
            total: counters.clone(),
            workers: vec![WorkerSnapshot {
                queue: 0,
                core: Some(1),
                counters,
            }],
            xdp: SteerCounters {
                redirected: 30,
                passed: 9,
                redirect_failed: 1,
                passed_by_reason: PASS_REASONS.iter().map(|r| (r.to_string(), 1)).collect(),
            },
            neighbours: 1,
            table: Some(TableSnapshot {
                connections: 3,
                states: vec![crate::stats::StateCount {
                    state: "established".into(),
                    connections: 3,
                }],
                capacity: 1_024,
                bytes_per_connection: 128,
                hit: 1,
                miss: 1,
                insert: 1,
                evict: 1,
                expire: 1,
                restore: 1,
                full: 1,
                race_lost: 1,
                rev_taken: 1,
                pages: Some(crate::table::PageUse {
                    resident: 4 << 20,
                    huge: 2 << 20,
                }),
            }),
            ports: vec![PortUsage {
                addr: std::net::Ipv4Addr::new(198, 19, 0, 1),
                used: 3,
                size: 64_512,
            }],
            port_blocks: Some(crate::nat::BlockStats {
                allocated: 1,
                released: 1,
                in_use: 1,
                total: 1,
                subscribers: 1,
                refused_subscriber_limit: 1,
                refused_pool_exhausted: 1,
            }),
            logging: Some(crate::logging::LogStats {
                dropped: 1,
                queued: 1,
                records_sent: 1,
                messages_sent: 1,
                send_errors: 1,
                records_lost: 1,
                template_messages: 1,
            }),
            nat_address_changes: 1,
        }
    }

    /// A token of PromQL (or of a sample line of the OpenMetrics text).
    #[derive(Clone, Debug, PartialEq)]
    enum Tok {
        Ident(String),
        Str(String),
        /// A Grafana variable: `$name` or `${name}`.
        Var,
        Num,
        Punct(char),
    }

    fn tokens(text: &str) -> Vec<Tok> {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            if c.is_whitespace() {
                i += 1;
            } else if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                while matches!(chars.get(i), Some(&c) if word(c)) {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            } else if c.is_ascii_digit() {
                while matches!(chars.get(i), Some(&c) if word(c) || c == '.') {
                    i += 1;
                }
                out.push(Tok::Num);
            } else if c == '"' || c == '\'' {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => panic!("unterminated string in {text:?}"),
                        Some('\\') => {
                            s.extend(chars.get(i + 1));
                            i += 2;
                        }
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(&other) => {
                            s.push(other);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(s));
            } else if c == '$' {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    while !matches!(chars.get(i), None | Some('}')) {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while matches!(chars.get(i), Some(&c) if word(c)) {
                        i += 1;
                    }
                }
                out.push(Tok::Var);
            } else {
                out.push(Tok::Punct(c));
                i += 1;
            }
        }
        out
    }

    /// What an expression uses.
    #[derive(Default)]
    struct Uses {
        /// Metric names (`xnat_...`).
        metrics: BTreeSet<String>,
        /// Label matchers of selectors: (metric, label, the values compared with it; none
        /// when the value is a variable or a regular expression other than `a|b|c`).
        matchers: Vec<(String, String, Vec<String>)>,
        /// Labels of `by (...)`, `on (...)` and the like.
        grouping: BTreeSet<String>,
    }

    /// Reads the matchers of a selector of `metric` from `i` (just after its `{`); returns
    /// the index after its `}`.
    fn selector(t: &[Tok], mut i: usize, metric: &str, u: &mut Uses, expr: &str) -> usize {
        loop {
            let label = match t.get(i) {
                Some(Tok::Punct('}')) => return i + 1,
                Some(Tok::Punct(',')) => {
                    i += 1;
                    continue;
                }
                Some(Tok::Ident(label)) => label.clone(),
                other => panic!("unexpected {other:?} in a selector of {expr:?}"),
            };
            i += 1;
            // The operator: =, !=, =~ or !~.
            let mut regex = false;
            while matches!(t.get(i), Some(Tok::Punct('=' | '!' | '~'))) {
                regex |= t.get(i) == Some(&Tok::Punct('~'));
                i += 1;
            }
            let plain = |v: &str| {
                v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|')
            };
            let values = match t.get(i) {
                Some(Tok::Str(v)) if v.contains('$') => Vec::new(),
                Some(Tok::Str(v)) if !regex => vec![v.clone()],
                Some(Tok::Str(v)) if plain(v.as_str()) => {
                    v.split('|').map(str::to_string).collect()
                }
                Some(Tok::Str(_)) => Vec::new(),
                other => panic!("unexpected {other:?} after label {label} in {expr:?}"),
            };
            i += 1;
            u.matchers.push((metric.to_string(), label, values));
        }
    }

    fn uses(expr: &str) -> Uses {
        let t = tokens(expr);
        let mut u = Uses::default();
        let mut i = 0;
        while i < t.len() {
            match &t[i] {
                Tok::Ident(name) if name.starts_with("xnat_") => {
                    u.metrics.insert(name.clone());
                    if t.get(i + 1) == Some(&Tok::Punct('{')) {
                        i = selector(&t, i + 2, name, &mut u, expr);
                        continue;
                    }
                }
                Tok::Ident(clause)
                    if GROUPING.contains(&clause.as_str())
                        && t.get(i + 1) == Some(&Tok::Punct('(')) =>
                {
                    i += 2;
                    loop {
                        match t.get(i) {
                            Some(Tok::Ident(label)) => {
                                u.grouping.insert(label.clone());
                            }
                            Some(Tok::Punct(',')) => {}
                            Some(Tok::Punct(')')) => break,
                            other => {
                                panic!("unexpected {other:?} in a {clause} clause of {expr:?}")
                            }
                        }
                        i += 1;
                    }
                }
                Tok::Punct('{') => panic!("a selector without an xnat_ metric name in {expr:?}"),
                _ => {}
            }
            i += 1;
        }
        u
    }

    /// The series `render` writes for a populated snapshot, with their labels and values.
    fn exported() -> Exported {
        let text = render(&populated());
        let mut families = BTreeSet::new();
        let mut series = Exported::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    panic!("a TYPE line without a name and a type: {line:?}");
                };
                // OpenMetrics: the samples of counter `x` are `x_total`.
                families.insert(if kind == "counter" {
                    format!("{name}_total")
                } else {
                    name.to_string()
                });
            } else if !line.is_empty() && !line.starts_with('#') {
                let u = uses(line);
                for m in u.metrics {
                    series.entry(m).or_default();
                }
                for (m, label, values) in u.matchers {
                    series
                        .entry(m)
                        .or_default()
                        .entry(label)
                        .or_default()
                        .extend(values);
                }
            }
        }
        assert_eq!(
            families.iter().collect::<Vec<_>>(),
            series.keys().collect::<Vec<_>>(),
            "every family has samples, named as its TYPE line says:\n{text}"
        );
        series
    }

    /// What is wrong with `expr`: metrics not exported, labels they do not carry, label
    /// values they never take.
    fn check(expr: &str, exported: &Exported) -> Vec<String> {
        let u = uses(expr);
        let mut problems = Vec::new();
        if u.metrics.is_empty() {
            problems.push(format!("{expr:?} names no xnat_ metric"));
        }
        for m in &u.metrics {
            if !exported.contains_key(m) {
                problems.push(format!("{expr:?} names {m}, which is not exported"));
            }
        }
        for (m, label, values) in &u.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let Some(labels) = exported.get(m) else {
                continue;
            };
            match labels.get(label) {
                None => problems.push(format!("{expr:?}: {m} has no label {label}")),
                Some(known) => {
                    for v in values.iter().filter(|v| !known.contains(*v)) {
                        problems.push(format!(
                            "{expr:?}: {m} never has {label}={v:?} (it has {known:?})"
                        ));
                    }
                }
            }
        }
        for label in &u.grouping {
            let carried = TARGET_LABELS.contains(&label.as_str())
                || u.metrics
                    .iter()
                    .any(|m| exported.get(m).is_some_and(|l| l.contains_key(label)));
            if !carried {
                problems.push(format!(
                    "{expr:?} groups by {label}, which none of its metrics has"
                ));
            }
        }
        problems
    }

    /// Every panel, those nested in collapsed rows included.
    fn walk<'a>(panels: &'a [Value], out: &mut Vec<&'a Value>) {
        for p in panels {
            out.push(p);
            if let Some(nested) = p["panels"].as_array() {
                walk(nested, out);
            }
        }
    }

    #[test]
    fn the_tables_pages_are_exported_by_size() {
        let text = render(&populated());
        // 4 MiB resident, 2 of them on huge pages.
        assert!(
            text.contains("xnat_table_memory_bytes{pages=\"huge\"} 2097152"),
            "{text}"
        );
        assert!(
            text.contains("xnat_table_memory_bytes{pages=\"small\"} 2097152"),
            "{text}"
        );
        let mut unmeasured = populated();
        if let Some(t) = unmeasured.table.as_mut() {
            t.pages = None;
        }
        assert!(!render(&unmeasured).contains("xnat_table_memory_bytes{"));
    }

    #[test]
    fn the_info_series_names_each_ports_checksum_completion() {
        let text = render(&populated());
        let info = text
            .lines()
            .find(|l| l.starts_with("xnat_info{"))
            .expect("an xnat_info series");
        assert!(info.contains(r#"checksum_completion="on/off""#), "{info}");
    }

    #[test]
    fn the_dashboard_check_catches_unknown_metrics_labels_and_values() {
        let exported = exported();
        let good = r#"sum by (reason) (rate(xnat_drops_total{instance=~"$instance",reason="tx_ring_full"}[$__rate_interval]))"#;
        assert_eq!(check(good, &exported), Vec::<String>::new());
        for bad in [
            "rate(xnat_nope_total[5m])",
            // A counter's samples are named with _total.
            "rate(xnat_drops[5m])",
            r#"xnat_drops_total{reason="nope"}"#,
            r#"xnat_table_events_total{event=~"hit|nope"}"#,
            r#"xnat_drops_total{nope="x"}"#,
            "sum by (nope) (xnat_drops_total)",
            "sum by (addr) (xnat_drops_total)",
            "vector(1)",
        ] {
            assert!(!check(bad, &exported).is_empty(), "{bad} passed");
        }
    }

    #[test]
    fn the_grafana_dashboard_names_only_exported_metrics() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/grafana/xnat-dashboard.json"
        );
        let text = std::fs::read_to_string(path).expect("reading the Grafana dashboard");
        let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
        let top = dashboard["panels"]
            .as_array()
            .expect("the dashboard has a panels array");
        assert!(!top.is_empty(), "the dashboard has no panels");
        let mut panels = Vec::new();
        walk(top, &mut panels);
        let exported = exported();

        let mut problems = Vec::new();
        let mut used = BTreeSet::new();
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            if panel["type"].as_str() == Some("row") {
                continue;
            }
            if panel["datasource"]["uid"].as_str() != Some("${datasource}") {
                problems.push(format!(
                    "panel {title:?} does not use the datasource variable"
                ));
            }
            let targets = match panel["targets"].as_array() {
                Some(t) if !t.is_empty() => t,
                _ => {
                    problems.push(format!("panel {title:?} has no targets"));
                    continue;
                }
            };
            for target in targets {
                let Some(expr) = target["expr"].as_str() else {
                    problems.push(format!("panel {title:?} has a target without expr"));
                    continue;
                };
                for p in check(expr, &exported) {
                    problems.push(format!("panel {title:?}: {p}"));
                }
                used.extend(uses(expr).metrics);
            }
        }
        for var in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if var["type"].as_str() != Some("query") {
                continue;
            }
            let name = var["name"].as_str().unwrap_or("(unnamed)");
            let query = var["query"]["query"]
                .as_str()
                .or_else(|| var["query"].as_str())
                .unwrap_or_default();
            for p in check(query, &exported) {
                problems.push(format!("variable {name:?}: {p}"));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(
            used.len() >= 8,
            "the dashboard shows only {} metrics: {used:?}",
            used.len()
        );
    }
}
