//! Port block allocation (RFC 6888 REQ-4, as carrier-grade NATs do it): a subscriber (an
//! inside address) gets blocks of `size` consecutive ports on one pool address, on
//! demand, up to `max_per_subscriber` blocks; its connections take ports inside its
//! blocks only. A block goes back to the pool once it has been empty for `hold` seconds
//! (RFC 6888 asks for at least 120 s before a port is reused), oldest freed first. One
//! log record per block allocated and per block released replaces one per connection.
//!
//! Concurrency: subscribers live in 64 shards, each behind a mutex taken on a new
//! connection (to read its blocks), on a connection's end (to count it out) and by the
//! once-a-second release; the free blocks of the pool addresses behind one more mutex,
//! taken only when a block is allocated or released. A worker never holds two of them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::logging::{EventKind, EventLog, PortBlock};

/// Port block settings (`nat.port_block_size`, `nat.port_blocks_per_subscriber`,
/// `nat.port_block_hold_secs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BlockConfig {
    /// Ports per block.
    pub size: u16,
    /// Most blocks one subscriber holds at once.
    pub max_per_subscriber: u16,
    /// Seconds a block stays with its subscriber after its last connection ended.
    pub hold_secs: u32,
}

/// Why a subscriber got no new block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockRefusal {
    /// It holds `max_per_subscriber` blocks, all full.
    SubscriberLimit,
    /// Its pool address has no free block left.
    PoolExhausted,
    /// No pool at all (no SNAT rule).
    NoPool,
}

/// Counters of the block allocator.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockStats {
    /// Blocks allocated since start.
    pub allocated: u64,
    /// Blocks released since start.
    pub released: u64,
    /// Blocks held by subscribers now.
    pub in_use: u64,
    /// Blocks in the pools.
    pub total: u64,
    /// Subscribers holding at least one block.
    pub subscribers: u64,
    /// New blocks refused: the subscriber was at its limit.
    pub refused_subscriber_limit: u64,
    /// New blocks refused: its pool address had none left.
    pub refused_pool_exhausted: u64,
}

struct Block {
    start: u16,
    /// Table entries (sessions, mappings) using a port of the block.
    live: u32,
    /// When it was last handed to a worker or last became empty.
    last_used: u32,
}

struct Subscriber {
    nat: u32,
    blocks: Vec<Block>,
}

/// Free blocks of one pool address.
struct AddrBlocks {
    free: VecDeque<u16>,
}

const SHARDS: usize = 64;

/// The port block allocator shared by the workers.
pub struct PortBlocks {
    cfg: BlockConfig,
    shards: Box<[Mutex<HashMap<u32, Subscriber>>]>,
    pool: Mutex<HashMap<u32, AddrBlocks>>,
    log: Option<Arc<EventLog>>,
    allocated: AtomicU64,
    released: AtomicU64,
    total: AtomicU64,
    refused_limit: AtomicU64,
    refused_pool: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked while holding it ends the process anyway (see the
    // dataplane); the data is counts and lists that stay usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PortBlocks {
    /// An allocator over the pool addresses `addrs` `(address, first port, last port)`.
    pub fn new(cfg: BlockConfig, addrs: &[(u32, u16, u16)]) -> PortBlocks {
        let b = PortBlocks {
            cfg,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            pool: Mutex::new(HashMap::new()),
            log: None,
            allocated: AtomicU64::new(0),
            released: AtomicU64::new(0),
            total: AtomicU64::new(0),
            refused_limit: AtomicU64::new(0),
            refused_pool: AtomicU64::new(0),
        };
        b.set_pools(addrs);
        b
    }

    /// Logs every block allocated and released to `log`.
    pub fn with_log(mut self, log: Arc<EventLog>) -> PortBlocks {
        self.log = Some(log);
        self
    }

    /// The settings.
    pub fn config(&self) -> BlockConfig {
        self.cfg
    }

    /// Adds pool addresses (a reload); addresses already known keep their blocks. Blocks
    /// of an address no longer in `addrs` stay with their subscribers until released,
    /// and then leave the pool.
    pub fn set_pools(&self, addrs: &[(u32, u16, u16)]) {
        let mut pool = lock(&self.pool);
        let size = u32::from(self.cfg.size.max(1));
        let keep: std::collections::HashSet<u32> = addrs.iter().map(|a| a.0).collect();
        pool.retain(|a, _| keep.contains(a));
        for &(addr, lo, hi) in addrs {
            if pool.contains_key(&addr) {
                continue;
            }
            let n = (u32::from(hi) - u32::from(lo) + 1) / size;
            let free: VecDeque<u16> = (0..n)
                .filter_map(|i| u16::try_from(u32::from(lo) + i * size).ok())
                .collect();
            pool.insert(addr, AddrBlocks { free });
        }
        let total: u64 = pool.values().map(|a| a.free.len() as u64).sum::<u64>() + self.in_use();
        self.total.store(total, Relaxed);
    }

    fn shard(&self, inside: u32) -> &Mutex<HashMap<u32, Subscriber>> {
        &self.shards[(inside.wrapping_mul(0x9E37_79B1) >> 26) as usize % SHARDS]
    }

    fn range(&self, start: u16) -> (u16, u16) {
        (start, start.saturating_add(self.cfg.size - 1))
    }

    /// The NAT address and port ranges of `inside`'s blocks, newest first (marked in use
    /// at `now`, so that none is released while a worker picks a port in it). A
    /// subscriber without blocks gets its first, on `preferred` (its paired pool address)
    /// or, if that one has none left, on any other.
    pub fn ranges(
        &self,
        inside: u32,
        preferred: Option<u32>,
        now: u32,
        out: &mut Vec<(u16, u16)>,
    ) -> Result<u32, BlockRefusal> {
        out.clear();
        let mut shard = lock(self.shard(inside));
        if let Some(sub) = shard.get_mut(&inside) {
            for b in sub.blocks.iter_mut().rev() {
                b.last_used = now;
                out.push(self.range(b.start));
            }
            if !out.is_empty() {
                return Ok(sub.nat);
            }
        }
        let pref = preferred.ok_or(BlockRefusal::NoPool)?;
        let (nat, start) = self.take_block(inside, pref, true)?;
        shard.insert(
            inside,
            Subscriber {
                nat,
                blocks: vec![Block {
                    start,
                    live: 0,
                    last_used: now,
                }],
            },
        );
        out.push(self.range(start));
        Ok(nat)
    }

    /// One more block for `inside` (its blocks are full), on its address.
    pub fn grow(&self, inside: u32, now: u32) -> Result<(u32, u16, u16), BlockRefusal> {
        let mut shard = lock(self.shard(inside));
        let Some(sub) = shard.get_mut(&inside) else {
            return Err(BlockRefusal::NoPool);
        };
        if sub.blocks.len() >= usize::from(self.cfg.max_per_subscriber) {
            self.refused_limit.fetch_add(1, Relaxed);
            return Err(BlockRefusal::SubscriberLimit);
        }
        let (nat, start) = self.take_block(inside, sub.nat, false)?;
        sub.blocks.push(Block {
            start,
            live: 0,
            last_used: now,
        });
        let (lo, hi) = self.range(start);
        Ok((nat, lo, hi))
    }

    /// Takes a free block of `addr` (or, if `any` and `addr` has none, of another
    /// address) and logs it.
    fn take_block(&self, inside: u32, addr: u32, any: bool) -> Result<(u32, u16), BlockRefusal> {
        let got = {
            let mut pool = lock(&self.pool);
            let own = pool.get_mut(&addr).and_then(|a| a.free.pop_front());
            match own {
                Some(s) => Some((addr, s)),
                None if any => pool
                    .iter_mut()
                    .find_map(|(&a, b)| b.free.pop_front().map(|s| (a, s))),
                None => None,
            }
        };
        let Some((nat, start)) = got else {
            self.refused_pool.fetch_add(1, Relaxed);
            return Err(BlockRefusal::PoolExhausted);
        };
        self.allocated.fetch_add(1, Relaxed);
        let (lo, hi) = self.range(start);
        if let (Some(log), Some(b)) = (&self.log, PortBlock::contiguous(inside, nat, lo, hi)) {
            log.emit(EventKind::PortBlockAlloc(b));
        }
        Ok((nat, start))
    }

    /// Counts a table entry of `inside` on `nat:port` in (`d` = 1) or out (-1).
    pub fn account(&self, inside: u32, nat: u32, port: u16, d: i32, now: u32) {
        let mut shard = lock(self.shard(inside));
        let Some(sub) = shard.get_mut(&inside) else {
            return;
        };
        if sub.nat != nat {
            return;
        }
        let size = self.cfg.size;
        if let Some(b) = sub
            .blocks
            .iter_mut()
            .find(|b| port >= b.start && port - b.start < size)
        {
            b.live = b.live.saturating_add_signed(d);
            if b.live == 0 {
                b.last_used = now;
            }
        }
    }

    /// Gives back every block empty for the hold time (called about once a second).
    /// Returns how many went back.
    pub fn release_idle(&self, now: u32) -> usize {
        let mut freed: Vec<(u32, u32, u16)> = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.retain(|&inside, sub| {
                sub.blocks.retain(|b| {
                    let idle = b.live == 0 && now.saturating_sub(b.last_used) >= self.cfg.hold_secs;
                    if idle {
                        freed.push((inside, sub.nat, b.start));
                    }
                    !idle
                });
                !sub.blocks.is_empty()
            });
        }
        if freed.is_empty() {
            return 0;
        }
        {
            let mut pool = lock(&self.pool);
            for &(_, nat, start) in &freed {
                if let Some(a) = pool.get_mut(&nat) {
                    a.free.push_back(start);
                }
            }
            let total: u64 = pool.values().map(|a| a.free.len() as u64).sum();
            self.total
                .store(total + self.in_use_after(freed.len()), Relaxed);
        }
        self.released.fetch_add(freed.len() as u64, Relaxed);
        if let Some(log) = &self.log {
            for &(inside, nat, start) in &freed {
                let (lo, hi) = self.range(start);
                if let Some(b) = PortBlock::contiguous(inside, nat, lo, hi) {
                    log.emit(EventKind::PortBlockDealloc(b));
                }
            }
        }
        freed.len()
    }

    fn in_use(&self) -> u64 {
        self.allocated
            .load(Relaxed)
            .saturating_sub(self.released.load(Relaxed))
    }

    fn in_use_after(&self, releasing: usize) -> u64 {
        self.in_use().saturating_sub(releasing as u64)
    }

    /// Who holds the block with `nat:port` now: `(inside address, first port, last port)`.
    pub fn owner(&self, nat: u32, port: u16) -> Option<(u32, u16, u16)> {
        for shard in self.shards.iter() {
            let shard = lock(shard);
            for (&inside, sub) in shard.iter() {
                if sub.nat != nat {
                    continue;
                }
                if let Some(b) = sub
                    .blocks
                    .iter()
                    .find(|b| port >= b.start && port - b.start < self.cfg.size)
                {
                    let (lo, hi) = self.range(b.start);
                    return Some((inside, lo, hi));
                }
            }
        }
        None
    }

    /// The counters now.
    pub fn stats(&self) -> BlockStats {
        let subscribers = self.shards.iter().map(|s| lock(s).len() as u64).sum();
        BlockStats {
            allocated: self.allocated.load(Relaxed),
            released: self.released.load(Relaxed),
            in_use: self.in_use(),
            total: self.total.load(Relaxed),
            subscribers,
            refused_subscriber_limit: self.refused_limit.load(Relaxed),
            refused_pool_exhausted: self.refused_pool.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAT: u32 = 0xC613_0001;
    const NAT2: u32 = 0xC613_0002;

    fn blocks() -> PortBlocks {
        PortBlocks::new(
            BlockConfig {
                size: 100,
                max_per_subscriber: 2,
                hold_secs: 120,
            },
            &[(NAT, 1000, 1299), (NAT2, 1000, 1099)],
        )
    }

    #[test]
    fn subscribers_get_blocks_on_demand_up_to_their_limit() {
        let b = blocks();
        let mut r = Vec::new();
        assert_eq!(b.ranges(1, Some(NAT), 10, &mut r), Ok(NAT));
        assert_eq!(r, vec![(1000, 1099)]);
        assert_eq!(b.grow(1, 10), Ok((NAT, 1100, 1199)));
        assert_eq!(b.grow(1, 10), Err(BlockRefusal::SubscriberLimit));
        assert_eq!(b.ranges(1, Some(NAT), 11, &mut r), Ok(NAT));
        assert_eq!(r, vec![(1100, 1199), (1000, 1099)], "newest first");
        // Another subscriber paired to NAT gets its last block; a third goes elsewhere.
        assert_eq!(b.ranges(2, Some(NAT), 10, &mut r), Ok(NAT));
        assert_eq!(r, vec![(1200, 1299)]);
        assert_eq!(b.grow(2, 10), Err(BlockRefusal::PoolExhausted));
        assert_eq!(b.ranges(3, Some(NAT), 10, &mut r), Ok(NAT2));
        assert_eq!(
            b.ranges(4, Some(NAT), 10, &mut r),
            Err(BlockRefusal::PoolExhausted)
        );
        let s = b.stats();
        assert_eq!(
            (s.allocated, s.in_use, s.total, s.subscribers),
            (4, 4, 4, 3)
        );
        assert_eq!(
            (s.refused_subscriber_limit, s.refused_pool_exhausted),
            (1, 2)
        );
        assert_eq!(b.owner(NAT, 1150), Some((1, 1100, 1199)));
        assert_eq!(b.owner(NAT2, 1050), Some((3, 1000, 1099)));
        assert_eq!(b.owner(NAT2, 1200), None);
    }

    #[test]
    fn a_block_goes_back_only_after_being_empty_for_the_hold_time() {
        let b = blocks();
        let mut r = Vec::new();
        b.ranges(1, Some(NAT), 10, &mut r).unwrap();
        b.account(1, NAT, 1005, 1, 10);
        b.account(1, NAT, 1006, 1, 10);
        assert_eq!(b.release_idle(500), 0, "in use");
        b.account(1, NAT, 1005, -1, 20);
        b.account(1, NAT, 1006, -1, 30);
        assert_eq!(b.release_idle(149), 0, "empty since 30: held until 150");
        assert_eq!(b.release_idle(150), 1);
        assert_eq!(b.owner(NAT, 1005), None);
        let s = b.stats();
        assert_eq!((s.released, s.in_use, s.subscribers), (1, 0, 0));
        // Freed blocks are reused last (oldest freed first).
        assert_eq!(b.ranges(2, Some(NAT), 200, &mut r), Ok(NAT));
        assert_eq!(r, vec![(1100, 1199)]);
    }

    #[test]
    fn a_block_handed_to_a_worker_is_not_released_under_it() {
        let b = blocks();
        let mut r = Vec::new();
        b.ranges(1, Some(NAT), 10, &mut r).unwrap();
        // Never used, but handed out again at 200: not idle for the hold time at 300.
        b.ranges(1, Some(NAT), 200, &mut r).unwrap();
        assert_eq!(b.release_idle(300), 0);
        assert_eq!(b.release_idle(320), 1);
    }
}
