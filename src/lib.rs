//! xnat: a NAT gateway on AF_XDP.
//!
//! - [`dataplane`]: XDP steering, AF_XDP sockets, per-queue workers, next hops.
//! - [`table`]: the paired translation table, shared without locks (no I/O).
//! - [`packet`]: zero-copy frame parsing and in-place rewrites with incremental checksums.
//! - [`router`]: the IPv4 router around the NAT: partial checksums, MTU, fragmentation, ICMP
//!   origination, MSS clamping.
//! - [`nat`]: SNAT/DNAT rules, port allocation, translation; [`config`]: file + flags.
//! - [`state`]: the table's state file (one gateway per file, what became of the last table).
//! - [`stats`]: point-in-time counters for logs and the CLI; [`control`]: the control socket.
//! - [`cli`]: command-line types; [`app`]: what each command does; [`notify`]: readiness
//!   for the service manager; [`lookup`]: the owner of a NAT endpoint (deterministic NAT).
//! - [`logging`]: NAT event logs (IPFIX, syslog) from the workers to a collector.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod fuzzing;
pub mod logging;
pub mod lookup;
pub mod nat;
pub mod notify;
pub mod packet;
pub mod reload;
pub mod router;
pub mod state;
pub mod stats;
pub mod table;
