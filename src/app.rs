//! What each command does: turns parsed arguments into a running gateway.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{Cli, Command, Mode, RunArgs};
use crate::cli::{DebugCommand, FilterArgs};
use crate::config::{nat_config, FileConfig, NatConfig, NatFlags};
use crate::control::{request, Filter, Request, SessionJson, TupleJson};
use crate::dataplane::forward::Forwarder;
use crate::dataplane::{
    iface, ChecksumCompletion, Dataplane, DataplaneConfig, DataplaneError, PollMode, RingSizes,
    XdpMode, ZeroCopy,
};
use crate::nat::{make_table, Census, Engine, LiveRules, NatHandler, Quota, Rules};
use crate::state::StateFile;
use crate::stats::{Snapshot, StatsSource};
use crate::table::Resume;
use crate::table::Table;

/// Exit code for bad input (configuration, flags, environment).
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code for failures at run time.
pub const EXIT_FAILURE: i32 = 1;

/// Runs the CLI; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    init_logging(&cli.log_level);
    match cli.command {
        Command::Run(args) => run(&args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Stats {
            control,
            json,
            watch,
        } => cmd_stats(&control, json, watch),
        Command::Sessions {
            control,
            filter,
            limit,
            json,
        } => cmd_sessions(&control, &filter, limit, json),
        Command::Flush {
            control,
            filter,
            all,
        } => cmd_flush(&control, &filter, all),
        Command::Reload { control, json } => cmd_reload(&control, json),
        Command::Debug { control, what } => cmd_debug(&control, what),
        Command::Lookup(args) => crate::lookup::cmd_lookup(&args),
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn secs(name: &str, v: f64) -> Result<Duration, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!(
            "invalid --{name} = {v}: must be a non-negative number of seconds"
        ));
    }
    Duration::try_from_secs_f64(v)
        .map_err(|_| format!("invalid --{name} = {v}: more seconds than a duration can hold"))
}

fn enum_value<T: clap::ValueEnum>(key: &str, s: &str) -> Result<T, String> {
    T::from_str(s, true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        format!(
            "invalid {key} = {s:?}: expected one of {}",
            names.join(", ")
        )
    })
}

/// Everything `run` needs, merged from the file and the flags and validated.
pub struct Settings {
    /// Gateway mode.
    pub mode: Mode,
    /// Dataplane settings.
    pub dataplane: DataplaneConfig,
    /// NAT settings (NAT mode only).
    pub nat: Option<NatConfig>,
    /// Seconds between stats lines.
    pub stats_interval: Duration,
    /// Control socket path.
    pub control: PathBuf,
    /// Prometheus endpoint.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Router settings (both modes).
    pub router: crate::router::RouterConfig,
    /// Translation logs (NAT mode).
    pub logging: Option<crate::logging::LogSettings>,
}

/// Merges the configuration file (if any) with the flags; flags win.
pub fn settings(a: &RunArgs) -> Result<Settings, String> {
    let file = match &a.config {
        Some(p) => FileConfig::load(p).map_err(|e| e.to_string())?,
        None => FileConfig::default(),
    };
    let d = &file.dataplane;
    let pick =
        |flag: &Option<String>, key: &str, fileval: &Option<String>| -> Result<String, String> {
            flag.clone().or_else(|| fileval.clone()).ok_or_else(|| {
                format!("missing --{key} (or interfaces.{key} in the configuration file)")
            })
        };
    let inside = pick(&a.inside, "inside", &file.interfaces.inside)?;
    let outside = pick(&a.outside, "outside", &file.interfaces.outside)?;
    let mode = match (a.mode, &d.mode) {
        (Some(m), _) => m,
        (None, Some(s)) => enum_value("dataplane.mode", s)?,
        (None, None) => Mode::Nat,
    };
    let xdp_mode = match (a.xdp_mode, &d.xdp_mode) {
        (Some(m), _) => m,
        (None, Some(s)) => enum_value("dataplane.xdp_mode", s)?,
        (None, None) => XdpMode::Auto,
    };
    let zero_copy = match (a.zero_copy, &d.zero_copy) {
        (Some(m), _) => m,
        (None, Some(s)) => enum_value("dataplane.zero_copy", s)?,
        (None, None) => ZeroCopy::Auto,
    };
    let checksum_completion = match (a.checksum_completion, &d.checksum_completion) {
        (Some(m), _) => m,
        (None, Some(s)) => enum_value("dataplane.checksum_completion", s)?,
        (None, None) => ChecksumCompletion::Auto,
    };
    let poll = match (a.poll, &d.poll) {
        (Some(m), _) => m,
        (None, Some(s)) => enum_value("dataplane.poll", s)?,
        (None, None) => PollMode::Adaptive,
    };
    let frames = a.frames.or(d.frames).unwrap_or(8192);
    let ring = a.ring_size.or(d.ring_size).unwrap_or(2048);
    for (name, v) in [("frames", frames), ("ring-size", ring)] {
        if !v.is_power_of_two() || v < 64 {
            return Err(format!(
                "invalid --{name} = {v}: must be a power of two and at least 64"
            ));
        }
    }
    if frames < 2 * ring {
        return Err(format!(
            "invalid --frames = {frames}: must be at least twice --ring-size ({ring}) so both fill rings can be stocked"
        ));
    }
    let queues = a.queues.or(d.queues).unwrap_or(1);
    if !(1..=128).contains(&queues) {
        return Err(format!(
            "invalid dataplane.queues = {queues}: must be 1..128"
        ));
    }
    let batch = a.batch.or(d.batch).unwrap_or(64);
    if !(1..=1024).contains(&batch) {
        return Err(format!(
            "invalid dataplane.batch = {batch}: must be 1..1024"
        ));
    }
    let cores = if a.cores.is_empty() {
        d.cores.clone().unwrap_or_default()
    } else {
        a.cores.clone()
    };
    let nat = match mode {
        Mode::Nat => {
            let flags = NatFlags {
                masquerade: a.masquerade,
                snat: a.snat.clone(),
                ports: a.ports.clone(),
                dnat: a.dnat.clone(),
                table_size: a.table_size,
                evict_established: a.evict_established,
                state_file: a.state_file.clone(),
                no_state_file: a.no_state_file,
                port_block_size: a.port_block_size,
                port_blocks_per_subscriber: a.port_blocks_per_subscriber,
                max_sessions_per_source: a.max_sessions_per_source,
                mapping: a.mapping.clone(),
                filtering: a.filtering.clone(),
                deterministic: a.deterministic.clone(),
            };
            Some(nat_config(&file, &flags).map_err(|e| e.to_string())?)
        }
        Mode::Forward => None,
    };
    let stats_interval = match (a.stats_interval, file.control.stats_interval) {
        (Some(v), _) => secs("stats-interval", v)?,
        (None, Some(v)) => {
            secs("control.stats_interval", v).map_err(|e| e.replace("--control.", "control."))?
        }
        (None, None) => Duration::from_secs(1),
    };
    let control = a
        .control
        .clone()
        .or_else(|| file.control.socket.as_ref().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::control::DEFAULT_SOCKET));
    let metrics_listen =
        match (a.metrics_listen, &file.control.metrics_listen) {
            (Some(m), _) => Some(m),
            (None, Some(s)) => Some(s.parse::<std::net::SocketAddr>().map_err(|_| {
                format!("invalid control.metrics_listen = {s:?}: expected ADDR:PORT")
            })?),
            (None, None) => None,
        };
    let clamp_mss = match (&a.clamp_mss, &d.clamp_mss) {
        (Some(v), _) => v
            .parse()
            .map_err(|e| format!("invalid --clamp-mss = {v:?}: {e}"))?,
        (None, Some(v)) => v
            .parse()
            .map_err(|e| format!("invalid dataplane.clamp_mss = {v:?}: {e}"))?,
        (None, None) => crate::router::MssClamp::Off,
    };
    let logging = crate::logging::log_settings(
        &file.logging,
        a.log_format.as_deref(),
        a.log_collector.as_deref(),
    )?;
    Ok(Settings {
        logging,
        metrics_listen,
        control,
        mode,
        router: crate::router::RouterConfig { clamp_mss },
        dataplane: DataplaneConfig {
            inside,
            outside,
            queues: (0..queues).collect(),
            cores,
            xdp_mode,
            zero_copy,
            sizes: RingSizes { frames, ring },
            batch: batch as usize,
            poll,
            outside_route_all: a.route_all || mode == Mode::Forward,
            checksum_completion,
            neighbour_refresh: secs("neighbour-refresh", a.neighbour_refresh)?
                .max(Duration::from_millis(100)),
        },
        nat,
        stats_interval,
    })
}

/// Every NAT address with the size of its port range, for the port usage figures.
fn nat_addr_sizes(n: &NatConfig, outside: &str) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = n
        .pools
        .iter()
        .flat_map(|p| p.addrs.iter().map(move |a| (u32::from(*a), p.ports.len())))
        .collect();
    if n.masquerade {
        v.extend(
            iface::ipv4_addrs(outside)
                .into_iter()
                .map(|a| (u32::from(a), n.ports.len())),
        );
    }
    v
}

fn write_stats(path: &std::path::Path, s: &Snapshot) {
    let tmp = path.with_extension("tmp");
    match serde_json::to_vec_pretty(s) {
        Ok(bytes) => {
            if std::fs::write(&tmp, bytes)
                .and_then(|_| std::fs::rename(&tmp, path))
                .is_err()
            {
                tracing::warn!(path = %path.display(), "could not write the stats file");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not serialise stats"),
    }
}

fn check_config(path: &std::path::Path) -> i32 {
    let args = RunArgs {
        config: Some(path.to_path_buf()),
        ..RunArgs::empty()
    };
    match settings(&args) {
        Ok(s) => {
            println!(
                "{}: ok (mode {:?}, inside {}, outside {}, {} queue(s){})",
                path.display(),
                s.mode,
                s.dataplane.inside,
                s.dataplane.outside,
                s.dataplane.queues.len(),
                s.nat
                    .as_ref()
                    .map(|n| format!(
                        ", {} SNAT pool(s){}, {} port forward(s), table {} connections {}",
                        n.pools.len(),
                        if n.masquerade { " + masquerade" } else { "" },
                        n.dnat.len(),
                        n.table_size,
                        n.state_file
                            .as_ref()
                            .map_or("in memory only".into(), |p| format!(
                                "kept in {}",
                                p.display()
                            ))
                    ))
                    .unwrap_or_default()
            );
            for line in s.nat.iter().flat_map(|n| n.describe_pools()) {
                println!("  {line}");
            }
            if let Some(l) = &s.logging {
                println!(
                    "  translation logs: {:?} to {}, events {:?}, destinations {}",
                    l.cfg.format, l.cfg.collector, l.events, l.cfg.destinations
                );
            }
            0
        }
        Err(msg) => {
            eprintln!("xnat: {msg}");
            EXIT_BAD_INPUT
        }
    }
}

fn exit_code(e: &DataplaneError) -> i32 {
    match e {
        DataplaneError::Bpf(_)
        | DataplaneError::Socket { .. }
        | DataplaneError::SocketOption { .. } => EXIT_FAILURE,
        _ => EXIT_BAD_INPUT,
    }
}

/// A started dataplane and, in NAT mode, its table, the lock on its state file and what a
/// reload changes; or a message and an exit code.
type Started = Result<
    (
        Dataplane,
        Option<Arc<Table>>,
        Option<StateFile>,
        Option<crate::reload::NatParts>,
    ),
    (String, i32),
>;

fn start(s: &Settings) -> Started {
    let dp_err = |e: DataplaneError| (e.to_string(), exit_code(&e));
    match &s.nat {
        None => Dataplane::start(
            &s.dataplane,
            |_| Ok(()),
            |_q, nh, ports| Forwarder::new(nh, ports, s.router),
        )
        .map(|dp| (dp, None, None, None))
        .map_err(dp_err),
        Some(nat) => {
            // Interfaces are checked first so that a missing one is reported as such.
            crate::dataplane::validate(&s.dataplane).map_err(dp_err)?;
            let outside = crate::reload::addrs_of(&s.dataplane.outside);
            let inside = iface::ipv4_addrs(&s.dataplane.inside)
                .first()
                .map(|a| u32::from(*a));
            let rules =
                Arc::new(Rules::new(nat, &outside, inside).map_err(|m| (m, EXIT_BAD_INPUT))?);
            let live = LiveRules::new(Arc::clone(&rules));
            let steer_map = crate::reload::desired(&rules, &[], &[]);
            // One gateway per state file, locked before the table touches it (a second
            // gateway on other interfaces would otherwise resize the file under the first).
            let state = match &nat.state_file {
                Some(p) => Some(StateFile::lock(p).map_err(|m| (m, EXIT_BAD_INPUT))?),
                None => None,
            };
            let (table, resume) = make_table(nat).map_err(|m| (m, EXIT_BAD_INPUT))?;
            // Every page now, not under the first connections (see `Table::prefault`).
            let started = std::time::Instant::now();
            let prefault = match table.prefault() {
                Ok(()) => format!("{} ms", started.elapsed().as_millis()),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "could not fault the translation table in at start: its pages are faulted in by the connections that first write them (the workers may stall on them)"
                    );
                    "failed".into()
                }
            };
            let table = Arc::new(table);
            let pages = table.page_use();
            tracing::info!(
                connections = table.capacity(),
                bytes_per_connection = table.bytes_per_connection(),
                mib = table.memory_bytes() >> 20,
                huge_pages_mib = %pages.map_or("unknown".into(), |p| (p.huge >> 20).to_string()),
                prefault = %prefault,
                state_file = %nat.state_file.as_ref().map_or("none (in memory)".into(), |p| p.display().to_string()),
                "translation table allocated"
            );
            if let Some((p, advice)) =
                pages.and_then(|p| Some((p, small_pages_advice(p, nat.state_file.as_deref())?)))
            {
                tracing::warn!(
                    resident_mib = p.resident >> 20,
                    huge_pages_mib = p.huge >> 20,
                    "the translation table is mostly on 4 KiB pages: most lookups miss the TLB (at 1 M connections about a fifth fewer packets a core); {advice}"
                );
            }
            match (state.as_ref().map(|st| st.path()), resume) {
                (Some(_), Resume::Resumed) => tracing::info!(
                    live = table.len(),
                    "took over the live connections of the previous process"
                ),
                (Some(p), Resume::Reset { reason }) => tracing::warn!(
                    state_file = %p.display(),
                    "state file not taken over, started with an empty table: {reason}"
                ),
                (
                    Some(p),
                    Resume::Migrated {
                        reason,
                        found,
                        kept,
                    },
                ) if kept < found => {
                    tracing::warn!(
                        state_file = %p.display(),
                        found,
                        kept,
                        "carried the previous table's live connections into the new one, but not all fitted (the file could not be taken over as it was: {reason})"
                    )
                }
                (
                    Some(p),
                    Resume::Migrated {
                        reason,
                        found,
                        kept,
                    },
                ) => tracing::info!(
                    state_file = %p.display(),
                    found,
                    kept,
                    "carried the previous table's live connections into the new one (the file could not be taken over as it was: {reason})"
                ),
                _ => {}
            }
            let s2 = steer_map.clone();
            let steer = move |st: &mut crate::dataplane::Steering| -> Result<(), DataplaneError> {
                crate::reload::apply(st, &crate::reload::Steer::default(), &s2)
            };
            let t2 = Arc::clone(&table);
            let quota = Arc::new(Quota::new(nat.max_sessions_per_source));
            let q2 = Arc::clone(&quota);
            // Translation logs: one ring per worker, one more for the other threads.
            let (logger, mut rings, events) = match &s.logging {
                None => (None, Vec::new(), None),
                Some(l) => {
                    let cfg = crate::logging::LogConfig {
                        workers: s.dataplane.queues.len() + 1,
                        ..l.cfg.clone()
                    };
                    let (logger, mut rings) = crate::logging::Logger::start(cfg)
                        .map_err(|e| (e.to_string(), EXIT_BAD_INPUT))?;
                    let shared = rings
                        .pop()
                        .ok_or(("no logging ring".to_string(), EXIT_FAILURE))?;
                    // With port blocks one record per block replaces one per session,
                    // unless sessions are asked for explicitly.
                    let what = l.events.unwrap_or(if nat.port_blocks.is_some() {
                        crate::logging::Events::None
                    } else {
                        crate::logging::Events::Sessions
                    });
                    let events = Arc::new(crate::logging::EventLog::new(shared, what));
                    tracing::info!(
                        format = ?l.cfg.format,
                        collector = %l.cfg.collector,
                        events = ?what,
                        port_blocks = nat.port_blocks.is_some(),
                        "translation logs on"
                    );
                    let rings: Vec<_> = rings.into_iter().map(Arc::new).collect();
                    (Some(logger), rings, Some(events))
                }
            };
            // The counts stats, metrics and the quota read (never a walk of the table per
            // scrape): attached before any worker runs; a resumed table's connections are
            // counted in by one walk here.
            let mut census = Census::new(
                &nat_addr_sizes(nat, &s.dataplane.outside)
                    .iter()
                    .map(|a| a.0)
                    .collect::<Vec<_>>(),
                Arc::clone(&quota),
            );
            if let Some(ev) = &events {
                census = census.with_log(Arc::clone(ev));
            }
            // Port blocks: the subscribers' blocks, counted by the census, logged once per
            // block.
            let blocks = nat.port_blocks.map(|cfg| {
                let mut b = crate::nat::PortBlocks::new(cfg, &rules.pool_addresses());
                if let Some(ev) = &events {
                    b = b.with_log(Arc::clone(ev));
                }
                Arc::new(b)
            });
            if let Some(b) = &blocks {
                census = census.with_blocks(Arc::clone(b));
            }
            let census = Arc::new(census);
            table.attach_observer(census.clone());
            let dp = Dataplane::start(&s.dataplane, steer, |q, nh, ports| {
                let seed =
                    0x9E37_79B9_7F4A_7C15u64 ^ (u64::from(q) << 32) ^ u64::from(std::process::id());
                let mut engine =
                    Engine::following(Arc::clone(&t2), Arc::clone(&live), Arc::clone(&q2), seed);
                if let Some(ev) = &events {
                    engine.set_log(Arc::clone(ev));
                }
                if let Some(b) = &blocks {
                    engine.set_port_blocks(Arc::clone(b));
                }
                let h = NatHandler::new(engine, nh, ports, s.router);
                // Workers are made in queue order: each takes the next ring.
                match rings.is_empty() {
                    true => h,
                    false => h.with_log_ring(rings.remove(0)),
                }
            })
            .map_err(dp_err)?;
            // The background sweep: removes expired connections (counting them out), a
            // slice at a time, the whole table every REAP_PASS.
            {
                let (t3, stop, b3) = (Arc::clone(&table), dp.stop_flag(), blocks.clone());
                let slots = u32::try_from(table.capacity().saturating_mul(2)).unwrap_or(u32::MAX);
                let per_tick =
                    (slots / (REAP_PASS.as_millis() / REAP_TICK.as_millis()) as u32).max(1024);
                let spawned = std::thread::Builder::new()
                    .name("xnat-reaper".into())
                    .spawn(move || {
                        let (mut next, mut released_at) = (0, 0);
                        while !stop.load(Ordering::Relaxed) {
                            let now = crate::nat::coarse_now();
                            next = t3.reap(next, per_tick, now).0;
                            // Port blocks empty for their hold time go back, once a second.
                            if let (Some(b), true) = (&b3, now != released_at) {
                                released_at = now;
                                b.release_idle(now);
                            }
                            std::thread::sleep(REAP_TICK);
                        }
                    });
                if spawned.is_err() {
                    return Err(("could not start the reaper thread".into(), EXIT_FAILURE));
                }
            }
            let parts = crate::reload::NatParts {
                live,
                quota,
                census,
                logger,
                blocks,
                table: Arc::clone(&table),
                installed: steer_map,
                outside_addrs: outside,
            };
            Ok((dp, Some(table), state, Some(parts)))
        }
    }
}

fn run(a: &RunArgs) -> i32 {
    // Before anything else: a SIGHUP (reload) or SIGTERM arriving while the gateway starts
    // is remembered and acted on once it runs, instead of ending the process half-started.
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGINT, &term),
        (signal_hook::consts::SIGTERM, &term),
        (signal_hook::consts::SIGHUP, &hup),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
            tracing::warn!(error = %e, "could not install a signal handler");
        }
    }
    let s = match settings(a) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("xnat: {msg}");
            return EXIT_BAD_INPUT;
        }
    };
    let duration = match secs("duration", a.duration) {
        Ok(d) => d,
        Err(m) => {
            eprintln!("xnat: {m}");
            return EXIT_BAD_INPUT;
        }
    };
    let interval = s.stats_interval;
    let mode = match s.mode {
        Mode::Forward => "forward",
        Mode::Nat => "nat",
    };
    let started = Instant::now();
    // `_state` holds the state file's lock until the process ends.
    let (mut dp, table, _state, nat_parts) = match start(&s) {
        Ok(x) => x,
        Err((msg, code)) => {
            eprintln!("xnat: {msg}");
            return code;
        }
    };
    let nat_addrs = s
        .nat
        .as_ref()
        .map(|n| nat_addr_sizes(n, &s.dataplane.outside))
        .unwrap_or_default();
    let census = nat_parts.as_ref().map(|p| Arc::clone(&p.census));
    let log_stats = nat_parts
        .as_ref()
        .and_then(|p| p.logger.as_ref().map(|l| l.reader()));
    let blocks = nat_parts.as_ref().and_then(|p| p.blocks.clone());
    let source = StatsSource::new(&dp, mode, table, started)
        .with_census(census)
        .with_log_stats(log_stats)
        .with_port_blocks(blocks)
        .with_nat_addrs(nat_addrs);
    let mut reloader = crate::reload::Reloader::new(a.clone(), &s, nat_parts);
    let (reload_tx, reload_rx) = crossbeam::channel::bounded::<crate::control::MainRequest>(4);
    let control = match crate::control::Server::start(&s.control, source.clone(), Some(reload_tx)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xnat: {e}");
            dp.shutdown();
            return EXIT_BAD_INPUT;
        }
    };
    let metrics = match s.metrics_listen {
        None => None,
        Some(addr) => match crate::control::metrics::MetricsServer::start(addr, source.clone()) {
            Ok(m) => {
                tracing::info!(addr = %m.addr, "metrics at http://{}/metrics", m.addr);
                Some(m)
            }
            Err(e) => {
                eprintln!("xnat: {e}");
                drop(control);
                dp.shutdown();
                return EXIT_BAD_INPUT;
            }
        },
    };
    let i = &dp.info;
    tracing::info!(
        mode,
        inside = %i.inside,
        outside = %i.outside,
        queues = ?i.queues,
        cores = ?i.cores,
        xdp_inside = %i.xdp_mode[0],
        xdp_outside = %i.xdp_mode[1],
        xsk = %i.xsk_mode,
        checksum_completion = %format!(
            "{}/{}",
            completion(&i.checksum_completion[0]),
            completion(&i.checksum_completion[1])
        ),
        control = %s.control.display(),
        "xnat running"
    );
    // Under systemd (Type=notify): started now; a reload asked meanwhile was held back.
    crate::notify::notify("READY=1");

    let mut next_drain = Instant::now();
    let mut addr_changes_seen = dp.next_hops.address_changes();
    let mut next_addr_check = Instant::now() + ADDR_CHECK_EVERY;
    let mut prev: Option<Snapshot> = None;
    let mut next_report = Instant::now() + interval;
    let mut exit = 0;
    while !term.load(Ordering::Relaxed) && (duration.is_zero() || started.elapsed() < duration) {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(q) = dp.dead_worker() {
            // Its queue's frames would go nowhere: end the process, so that the service
            // manager restarts it (with the state file, connections survive).
            tracing::error!(
                queue = q,
                "the worker of queue {q} stopped unexpectedly (panic); exiting so that xnat can be restarted"
            );
            exit = EXIT_FAILURE;
            break;
        }
        // Reloads run here, on the thread that owns the steering maps: asked over the
        // control socket (the reply goes back to `xnat reload`) or by SIGHUP (logged only).
        while let Ok(req) = reload_rx.try_recv() {
            match req {
                crate::control::MainRequest::Reload(reply) => {
                    let r = reload(&mut reloader, &mut dp, "control socket");
                    if let Some(n) = reloader.running() {
                        source.set_nat_addrs(nat_addr_sizes(n, &s.dataplane.outside));
                    }
                    let _ = reply.send(r);
                }
                // Removed forwards may have lost their last connection: look now.
                crate::control::MainRequest::Flushed => next_drain = Instant::now(),
            }
        }
        if hup.swap(false, Ordering::Relaxed) {
            let _ = reload(&mut reloader, &mut dp, "SIGHUP");
            if let Some(n) = reloader.running() {
                source.set_nat_addrs(nat_addr_sizes(n, &s.dataplane.outside));
            }
        }
        // An address added or removed (DHCP, PPPoE): the steering program's own addresses
        // and, with --masquerade, the NAT addresses follow. Also every 10 s, should a
        // notification have been missed.
        let changes = dp.next_hops.address_changes();
        if changes != addr_changes_seen || Instant::now() >= next_addr_check {
            addr_changes_seen = changes;
            next_addr_check = Instant::now() + ADDR_CHECK_EVERY;
            follow_addresses(&mut reloader, &mut dp, &source, &s);
        }
        if Instant::now() >= next_drain {
            next_drain = Instant::now() + DRAIN_EVERY;
            reloader.drain(dp.steering_mut());
        }
        if !interval.is_zero() && Instant::now() >= next_report {
            next_report += interval;
            let snap = source.snapshot();
            tracing::info!("{}", snap.line(prev.as_ref()));
            if let Some(p) = &a.stats_file {
                write_stats(p, &snap);
            }
            prev = Some(snap);
        }
    }
    let fin = source.snapshot();
    drop(metrics);
    drop(control);
    dp.shutdown();
    if let Some(p) = &a.stats_file {
        write_stats(p, &fin);
    }
    tracing::info!(
        rx = fin.total.rx_packets[0] + fin.total.rx_packets[1],
        tx = fin.total.tx_packets[0] + fin.total.tx_packets[1],
        dropped = fin.total.dropped(),
        "xnat stopped, XDP detached"
    );
    exit
}

/// How often the interfaces' addresses are compared with what the gateway uses, besides
/// after every address notification.
const ADDR_CHECK_EVERY: Duration = Duration::from_secs(10);

/// Brings the steering program's own addresses and, with `--masquerade`, the NAT
/// addresses up to date with the interfaces; logs and counts a change of NAT address.
fn follow_addresses(
    r: &mut crate::reload::Reloader,
    dp: &mut Dataplane,
    source: &StatsSource,
    s: &Settings,
) {
    if let Err(e) = dp.sync_local_addrs() {
        tracing::warn!(error = %e, "could not update the gateway's own addresses in the steering maps");
    }
    let show = |v: &[u32]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|a| std::net::Ipv4Addr::from(*a).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    match r.follow_outside_addresses(dp.steering_mut()) {
        Ok(None) => {}
        Ok(Some(c)) => {
            source.count_nat_address_change();
            if let Some(n) = r.running() {
                source.set_nat_addrs(nat_addr_sizes(n, &s.dataplane.outside));
            }
            if c.after.is_empty() {
                tracing::warn!(
                    was = %show(&c.before),
                    ended = c.ended,
                    "the outside interface has no IPv4 address any more: new outbound connections are dropped until one is assigned"
                );
            } else {
                tracing::info!(
                    now = %show(&c.after),
                    was = %show(&c.before),
                    ended = c.ended,
                    "outside address changed: new connections are translated to {} (connections on a removed address are ended)",
                    show(&c.after)
                );
            }
        }
        Err(e) => tracing::error!(
            "the outside address changed but the NAT addresses could not follow (the old ones stay): {e}"
        ),
    }
}

/// How often removed forwards and pools are checked for connections still using them
/// (a walk of the table, only while some are draining; also right after `xnat flush`).
const DRAIN_EVERY: Duration = Duration::from_secs(30);
/// The background sweep visits the whole table once per pass, a slice per tick: an
/// expired connection leaves the counts (port use, quota, states) within a pass.
const REAP_PASS: Duration = Duration::from_secs(10);
const REAP_TICK: Duration = Duration::from_millis(100);

fn reload(
    r: &mut crate::reload::Reloader,
    dp: &mut Dataplane,
    by: &str,
) -> Result<serde_json::Value, String> {
    let res = r.reload(dp.steering_mut());
    match &res {
        Ok(v) => {
            let list = |k: &str| json_strings(v, k);
            let applied = list("applied");
            tracing::info!(
                by,
                "configuration reloaded: {}",
                if applied.is_empty() {
                    "nothing that applies live changed".to_string()
                } else {
                    applied.join("; ")
                }
            );
            let restart = list("restart_needed");
            if !restart.is_empty() {
                tracing::warn!(
                    "changed settings that need a restart (the running values stay): {}",
                    restart.join(", ")
                );
            }
        }
        Err(e) => tracing::error!(by, "reload refused, the running configuration stays: {e}"),
    }
    res
}

fn fail(e: impl std::fmt::Display) -> i32 {
    eprintln!("xnat: {e}");
    EXIT_FAILURE
}

fn filter(f: &FilterArgs) -> Filter {
    Filter {
        proto: f.proto.clone(),
        addr: f.addr,
        port: f.port,
    }
}

fn cmd_stats(control: &Path, json: bool, watch: Option<f64>) -> i32 {
    let get = || -> Result<Snapshot, String> {
        let v = request(control, &Request::Stats {}).map_err(|e| e.to_string())?;
        serde_json::from_value(v).map_err(|e| format!("unexpected stats document: {e}"))
    };
    if json {
        return match request(control, &Request::Stats {}) {
            Ok(v) => {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                0
            }
            Err(e) => fail(e),
        };
    }
    let Some(every) = watch else {
        return match get() {
            Ok(s) => {
                print!("{}", s.render(None));
                0
            }
            Err(e) => fail(e),
        };
    };
    let period = match secs("watch", every) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            eprintln!("xnat: invalid --watch = {every}: must be a positive number of seconds");
            return EXIT_BAD_INPUT;
        }
    };
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&term));
    }
    let mut prev: Option<Snapshot> = None;
    while !term.load(Ordering::Relaxed) {
        match get() {
            Ok(s) => {
                // Clear the screen and home the cursor, like top.
                print!("\x1b[2J\x1b[H{}", s.render(prev.as_ref()));
                let _ = std::io::Write::flush(&mut std::io::stdout());
                prev = Some(s);
            }
            Err(e) => return fail(e),
        }
        let until = Instant::now() + period;
        while Instant::now() < until && !term.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    0
}

fn cmd_sessions(control: &Path, f: &FilterArgs, limit: Option<usize>, json: bool) -> i32 {
    // Page by page (each reply bounded, see `control::SESSIONS_PAGE`), printed as they come.
    let mut left = limit.unwrap_or(usize::MAX);
    let mut cursor = None;
    let mut shown = 0usize;
    if json {
        print!("[");
    } else {
        println!(
            "{:<5} {:<45} {:<45} {:<12} {:>6}",
            "proto", "original", "translated", "state", "idle"
        );
    }
    while left > 0 {
        let req = Request::Sessions {
            filter: filter(f),
            limit: Some(left.min(crate::control::SESSIONS_PAGE)),
            cursor,
        };
        let v = match request(control, &req) {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        let page: Vec<SessionJson> = match serde_json::from_value(v["sessions"].clone()) {
            Ok(l) => l,
            Err(e) => return fail(format!("unexpected sessions document: {e}")),
        };
        for s in &page {
            if json {
                let item = serde_json::to_string_pretty(s).unwrap_or_default();
                print!("{}\n{item}", if shown == 0 { "" } else { "," });
            } else {
                println!(
                    "{:<5} {:<45} {:<45} {:<12} {:>5}s",
                    s.proto, s.original, s.translated, s.state, s.idle_secs
                );
            }
            shown += 1;
        }
        left = left.saturating_sub(page.len());
        cursor = match v["next"].as_u64().map(u32::try_from) {
            Some(Ok(c)) => Some(c),
            Some(Err(_)) => return fail("unexpected sessions document: bad next".to_string()),
            None => break,
        };
    }
    if json {
        println!("{}]", if shown == 0 { "" } else { "\n" });
    } else {
        println!("{shown} session(s)");
    }
    0
}

fn cmd_flush(control: &Path, f: &FilterArgs, all: bool) -> i32 {
    let fl = filter(f);
    if fl == Filter::default() && !all {
        eprintln!("xnat: flush needs a filter (--proto, --addr, --port) or --all");
        return EXIT_BAD_INPUT;
    }
    match request(control, &Request::Flush { filter: fl }) {
        Ok(v) => {
            println!("removed {} session(s)", v["removed"].as_u64().unwrap_or(0));
            0
        }
        Err(e) => fail(e),
    }
}

fn cmd_reload(control: &Path, json: bool) -> i32 {
    match request(control, &Request::Reload {}) {
        Ok(v) if json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            0
        }
        Ok(v) => {
            let list = |k: &str| json_strings(&v, k);
            println!(
                "reloaded {}",
                v["config"].as_str().unwrap_or("the configuration")
            );
            let applied = list("applied");
            if applied.is_empty() {
                println!("  nothing that applies live changed");
            }
            for l in applied {
                println!("  {l}");
            }
            for l in list("draining") {
                println!("  still in use, kept until its connections end or are flushed: {l}");
            }
            let restart = list("restart_needed");
            if !restart.is_empty() {
                println!(
                    "  changed but needs a restart (the running values stay): {}",
                    restart.join(", ")
                );
            }
            0
        }
        Err(crate::control::ControlError::Refused(msg)) => {
            eprintln!("xnat: reload refused, the running configuration stays: {msg}");
            EXIT_BAD_INPUT
        }
        Err(e) => fail(e),
    }
}

fn cmd_debug(control: &Path, what: DebugCommand) -> i32 {
    match what {
        DebugCommand::RemoveHalf { proto, src, dst } => {
            let key = TupleJson {
                proto,
                src: *src.ip(),
                sport: src.port(),
                dst: *dst.ip(),
                dport: dst.port(),
            };
            match request(control, &Request::RemoveHalf { key }) {
                Ok(v) if v["removed"].as_bool() == Some(true) => {
                    println!("removed one half; the next packet of either direction restores it");
                    0
                }
                Ok(_) => {
                    eprintln!("xnat: no live half with that key");
                    EXIT_FAILURE
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// The strings of the array `v[k]` of a control reply (none if it is not an array).
fn json_strings(v: &serde_json::Value, k: &str) -> Vec<String> {
    v[k].as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A port's checksum completion for the logs: "on (virtual)", "off (ixgbe)".
fn completion((on, what): &(bool, String)) -> String {
    format!("{} ({what})", crate::stats::on_off(*on))
}

/// What to do about a translation table of `pages` that is mostly on 4 KiB pages, if it is
/// large enough for that to matter (64 MiB and more, about 680 k connections; a TLB's reach
/// on 4 KiB pages is a few MiB), kept in `state_file` or in process memory.
fn small_pages_advice(pages: crate::table::PageUse, state_file: Option<&Path>) -> Option<String> {
    if pages.resident < 64 << 20 || pages.huge >= pages.resident / 2 {
        return None;
    }
    Some(match state_file {
        Some(p) => {
            let dir = p.parent().map_or_else(|| ".".into(), |d| d.display().to_string());
            format!(
                "the state file's file system gives it no huge pages: mount its directory as a tmpfs of its own with huge=within_size before xnat starts (mount -t tmpfs -o huge=within_size,mode=0700 xnat {dir}; the mount hides the table now there, so the start after it begins empty; see deploy/README.md), or run with --no-state-file"
            )
        }
        None => "transparent huge pages are off: echo madvise > /sys/kernel/mm/transparent_hugepage/enabled".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::PageUse;

    #[test]
    fn a_large_table_mostly_on_small_pages_gets_advice_for_where_it_lives() {
        let mib = |m: u64| m << 20;
        let use_of = |resident, huge| PageUse {
            resident: mib(resident),
            huge: mib(huge),
        };
        let file = Path::new("/run/xnat/table");
        // Small tables, and tables mostly on huge pages: nothing to say.
        assert_eq!(small_pages_advice(use_of(32, 0), Some(file)), None);
        assert_eq!(small_pages_advice(use_of(1024, 1000), Some(file)), None);
        assert_eq!(small_pages_advice(use_of(1024, 512), None), None);
        // A state file: its directory, mounted as a tmpfs with huge pages.
        let advice = small_pages_advice(use_of(1024, 0), Some(file)).expect("advice");
        assert!(advice.contains("huge=within_size"), "{advice}");
        assert!(advice.contains("xnat /run/xnat;"), "{advice}");
        // In process memory: transparent huge pages.
        let advice = small_pages_advice(use_of(1024, 100), None).expect("advice");
        assert!(advice.contains("transparent_hugepage"), "{advice}");
    }
}
