//! xnat: a NAT gateway on AF_XDP.
//!
//! - [`dataplane`]: XDP steering, AF_XDP sockets, per-queue workers, next hops.
//! - [`stats`]: point-in-time counters for logs and the CLI.
//! - [`cli`]: command-line types; [`app`]: what each command does.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod dataplane;
pub mod stats;
