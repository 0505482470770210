//! Next-hop resolution from the kernel's own route and neighbour tables.
//!
//! A resolver thread dumps IPv4 routes (main table) and neighbours over rtnetlink, and
//! reads the MTU of the gateway's ports, whenever rtnetlink notifies a change of links,
//! addresses, routes or neighbours (and every refresh period, at least 10 s then, as a
//! safety net), and publishes an immutable [`Snapshot`]. Workers keep an
//! `Arc` of the snapshot and look at a generation counter once per batch, so the
//! packet path takes no lock. A destination whose neighbour is not known is
//! counted by the worker and handed to the resolver, which asks the kernel to
//! resolve it (`NTF_USE`, the same as `ip neigh replace ADDR dev DEV use`) and
//! dumps again shortly after.
//!
//! - `snapshot`: the published [`Snapshot`] (routes, longest-prefix match, neighbours, MTUs);
//! - `resolver`: [`NextHops`], shared by the resolver thread and the workers;
//! - `view`: a worker's [`NextHopView`] with its route and MAC caches;
//! - `netlink`: the rtnetlink dumps and requests the resolver makes.

mod netlink;
mod resolver;
mod snapshot;
#[cfg(test)]
mod tests;
mod view;

pub use resolver::NextHops;
pub use snapshot::{Fib, Hop, Miss, NeighHash, NeighHasher, Route, RouteKind, Snapshot};
pub use view::NextHopView;
