//! Translation logging for carrier-grade NAT (issue 18 item 3): NAT events (RFC 8158) from
//! the workers to a collector, as IPFIX (RFC 7011) or as RFC 5424 syslog lines over UDP.
//!
//! This module owns the event type ([`NatEvent`]), the IPFIX encoder ([`ipfix`]), the
//! syslog line format ([`syslog`]), the per-worker rings and the logger thread that
//! drains them, batches records into messages and sends them ([`Logger`], [`WorkerLog`]),
//! and the logging counters ([`LogStats`]). It knows nothing of packets or the table: the
//! NAT code builds events and hands them to [`WorkerLog::log`], which never blocks (a full
//! ring drops the event and counts it).
//!
//! ```no_run
//! use xnat::logging::{EventKind, LogConfig, Logger, NatEvent, PortBlock};
//! let cfg = LogConfig { collector: "127.0.0.1:4739".parse().unwrap(), workers: 2, ..LogConfig::default() };
//! let (logger, workers) = Logger::start(cfg).expect("logger");
//! let b = PortBlock::contiguous(0xC612_0002, 0xC613_0001, 1024, 1535).unwrap();
//! workers[0].log(NatEvent::new(EventKind::PortBlockAlloc(b)));
//! let stats = logger.stop();
//! assert_eq!(stats.dropped, 0);
//! ```

mod emit;
mod event;
pub mod ipfix;
mod logger;
pub mod settings;
pub mod syslog;

pub use emit::EventLog;
pub use event::{
    nat_event, now_ms, EventKind, NatEvent, PortBlock, Session, KINDS, QUOTA_MAX_ENTRIES_PER_USER,
};
pub use logger::{Format, LogConfig, LogStats, Logger, StatsReader, WorkerLog};
pub use settings::{log_settings, Events, LogSettings};

use std::net::SocketAddr;

/// Errors of the logging module: bad configuration values (naming the proposed
/// configuration key), the collector socket, the logger thread.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The message size limit cannot hold the templates and one record, or exceeds UDP.
    #[error("logging.mtu = {value}: must be within {min}..={max} (the templates and one record must fit)")]
    MessageSize {
        /// The value given.
        value: usize,
        /// Smallest accepted.
        min: usize,
        /// Largest accepted.
        max: usize,
    },
    /// A length that does not fit a 16-bit IPFIX length field.
    #[error("logging: {0} bytes do not fit a 16-bit IPFIX length field")]
    TooLong(usize),
    /// A configuration value out of range.
    #[error("{key} = {value}: {why}")]
    Invalid {
        /// The configuration key.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        why: &'static str,
    },
    /// The UDP socket towards the collector could not be set up.
    #[error("logging: socket to collector {addr}: {source}")]
    Socket {
        /// The collector.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The logger thread could not be started.
    #[error("logging: cannot start the logger thread: {0}")]
    Thread(std::io::Error),
}
