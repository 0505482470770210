//! What each command does: turns parsed arguments into a running gateway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{Cli, Command, Mode, RunArgs};
use crate::dataplane::forward::Forwarder;
use crate::dataplane::{Dataplane, DataplaneConfig, DataplaneError, RingSizes};
use crate::stats::Snapshot;

/// Exit code for bad input (configuration, flags, environment).
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code for failures at run time.
pub const EXIT_FAILURE: i32 = 1;

/// Runs the CLI; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    init_logging(&cli.log_level);
    match cli.command {
        Command::Run(args) => run(&args),
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
            "--{name} = {v}: must be a non-negative number of seconds"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

fn dataplane_config(a: &RunArgs) -> Result<DataplaneConfig, String> {
    for (name, v) in [("frames", a.frames), ("ring-size", a.ring_size)] {
        if !v.is_power_of_two() || v < 64 {
            return Err(format!(
                "--{name} = {v}: must be a power of two and at least 64"
            ));
        }
    }
    if a.frames < 2 * a.ring_size {
        return Err(format!(
            "--frames = {}: must be at least twice --ring-size ({}) so both fill rings can be stocked",
            a.frames, a.ring_size
        ));
    }
    Ok(DataplaneConfig {
        inside: a.inside.clone(),
        outside: a.outside.clone(),
        queues: (0..a.queues).collect(),
        cores: a.cores.clone(),
        xdp_mode: a.xdp_mode,
        zero_copy: a.zero_copy,
        sizes: RingSizes {
            frames: a.frames,
            ring: a.ring_size,
        },
        batch: a.batch as usize,
        poll: a.poll,
        outside_route_all: a.route_all || a.mode == Mode::Forward,
        neighbour_refresh: secs("neighbour-refresh", a.neighbour_refresh)?
            .max(Duration::from_millis(100)),
    })
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

fn run(a: &RunArgs) -> i32 {
    let cfg = match dataplane_config(a) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("xnat: {msg}");
            return EXIT_BAD_INPUT;
        }
    };
    let (interval, duration) = match (
        secs("stats-interval", a.stats_interval),
        secs("duration", a.duration),
    ) {
        (Ok(i), Ok(d)) => (i, d),
        (Err(m), _) | (_, Err(m)) => {
            eprintln!("xnat: {m}");
            return EXIT_BAD_INPUT;
        }
    };
    let mode = match a.mode {
        Mode::Forward => "forward",
    };
    let started = Instant::now();
    let dp = match Dataplane::start(
        &cfg,
        |_| Ok(()),
        |_q, nh, ports| Forwarder::new(nh, ports.ifindex, ports.mac),
    ) {
        Ok(dp) => dp,
        Err(e) => {
            eprintln!("xnat: {e}");
            return match e {
                DataplaneError::Bpf(_) | DataplaneError::Socket { .. } => EXIT_FAILURE,
                _ => EXIT_BAD_INPUT,
            };
        }
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
        xsk = i.xsk_mode,
        "xnat running"
    );

    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&term)) {
            tracing::warn!(error = %e, "could not install a signal handler");
        }
    }
    let mut prev: Option<Snapshot> = None;
    let mut next_report = Instant::now() + interval;
    while !term.load(Ordering::Relaxed) && (duration.is_zero() || started.elapsed() < duration) {
        std::thread::sleep(Duration::from_millis(50));
        if !interval.is_zero() && Instant::now() >= next_report {
            next_report += interval;
            let s = Snapshot::take(&dp, mode, started);
            tracing::info!("{}", s.line(prev.as_ref()));
            if let Some(p) = &a.stats_file {
                write_stats(p, &s);
            }
            prev = Some(s);
        }
    }
    let fin = Snapshot::take(&dp, mode, started);
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
    0
}
