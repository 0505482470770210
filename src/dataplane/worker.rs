//! The per-queue worker: receive a batch on both interfaces, hand each frame to
//! the packet handler, transmit it on the interface the handler chose, recycle
//! frames through the completion and fill rings.
//!
//! Frame accounting: every frame of the queue's UMEM is at all times in exactly
//! one place: the free list, a fill ring, an RX ring, a TX ring, or a completion
//! ring. A received frame goes either to a TX ring (forwarded) or back to the
//! free list (dropped); a completed frame goes to the free list; the free list
//! refills both fill rings. Nothing is allocated inside the loop: the free list
//! and batch vectors are sized once, up front.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use xsk_rs::FrameDesc;

use super::xsk::{QueueSockets, Rings};

/// An interface of the two-port gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// The private side.
    Inside = 0,
    /// The public side.
    Outside = 1,
}

impl Port {
    /// The other port.
    #[inline]
    pub fn other(self) -> Port {
        match self {
            Port::Inside => Port::Outside,
            Port::Outside => Port::Inside,
        }
    }
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Transmit the (rewritten) frame on this port.
    Transmit(Port),
    /// Drop it, counting the handler's reason index.
    Drop(u16),
    /// Drop it, and send the handler's [`Handler::reply`] in its place on this port
    /// (an ICMP error originated by the gateway).
    Reply(Port),
}

/// The packet logic a worker runs (plain forwarding, NAT).
pub trait Handler: Send {
    /// Called once per batch before frames are handled (refresh caches, read the clock).
    fn begin_batch(&mut self) {}
    /// Whether [`Handler::prefetch`] should be called for the next batch.
    #[inline]
    fn prefetching(&self) -> bool {
        false
    }
    /// Called for every frame of a received batch before any is handled (when
    /// [`Handler::prefetching`]), to start loading what handling it will need into the cache.
    #[inline]
    fn prefetch(&self, _frame: &[u8]) {}
    /// Processes one frame in place.
    fn handle(&mut self, frame: &mut [u8], ingress: Port) -> Action;
    /// Names of the drop reasons this handler reports, indexed by `Action::Drop`.
    fn drop_reasons(&self) -> &'static [&'static str];
    /// The frame to send for [`Action::Reply`].
    fn reply(&self) -> &[u8] {
        &[]
    }
}

/// Maximum number of distinct drop reasons a worker counts.
pub const MAX_DROP_REASONS: usize = 48;

/// Counters of one worker. Written by its worker only (plain load+store), read by anyone.
#[repr(align(64))]
pub struct WorkerStats {
    /// Packets received, per port.
    pub rx_packets: [AtomicU64; 2],
    /// Bytes received, per port.
    pub rx_bytes: [AtomicU64; 2],
    /// Packets transmitted, per port.
    pub tx_packets: [AtomicU64; 2],
    /// Bytes transmitted, per port.
    pub tx_bytes: [AtomicU64; 2],
    /// Frames dropped because the TX ring was full.
    pub tx_ring_full: AtomicU64,
    /// Batches processed (loop iterations that received at least one frame).
    pub batches: AtomicU64,
    /// ICMP errors originated by the gateway (Time Exceeded).
    pub icmp_errors_sent: AtomicU64,
    /// Drops by handler reason.
    pub drops: [AtomicU64; MAX_DROP_REASONS],
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            rx_packets: Default::default(),
            rx_bytes: Default::default(),
            tx_packets: Default::default(),
            tx_bytes: Default::default(),
            tx_ring_full: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            icmp_errors_sent: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

#[inline]
fn bump(c: &AtomicU64, by: u64) {
    if by != 0 {
        c.store(
            c.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        );
    }
}

/// Asks the kernel to transmit what waits in the TX ring. In zero-copy mode only when the
/// driver asks for it. In copy mode the kernel sends synchronously, at most 32 frames per
/// call (its TX_BATCH_SIZE): call again while descriptors remain in the ring (bounded, so a
/// busy device cannot hold the worker).
#[inline]
fn kick(rings: &mut Rings) {
    if rings.zero_copy {
        if rings.tx.needs_wakeup() {
            let _ = rings.tx.wakeup();
        }
        return;
    }
    for _ in 0..16 {
        if rings.tx.wakeup().is_err() || rings.tx.nb_free(rings.ring_size) >= rings.ring_size {
            break;
        }
    }
}

/// How a worker waits when there is nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PollMode {
    /// Spin forever (lowest latency, one full core per worker).
    Busy,
    /// Spin briefly, then sleep in poll(2) until a frame arrives.
    Adaptive,
}

/// One worker's rings, buffers and handler.
pub struct Worker<H: Handler> {
    queue: u32,
    socks: QueueSockets,
    free: Vec<FrameDesc>,
    rx_batch: Vec<FrameDesc>,
    tx_batch: [Vec<FrameDesc>; 2],
    handler: H,
    stats: Arc<WorkerStats>,
    batch: usize,
    poll: PollMode,
    /// Frames submitted for transmission and not yet completed, per port.
    in_flight: [usize; 2],
}

impl<H: Handler> Worker<H> {
    /// Prepares a worker; all buffers are allocated here.
    pub fn new(
        queue: u32,
        mut socks: QueueSockets,
        handler: H,
        stats: Arc<WorkerStats>,
        batch: usize,
        poll: PollMode,
    ) -> Self {
        let free = std::mem::take(&mut socks.frames);
        let proto = free.first().copied();
        let filler = |n: usize| -> Vec<FrameDesc> {
            match proto {
                Some(p) => vec![p; n],
                None => Vec::new(),
            }
        };
        let mut free_list = Vec::with_capacity(free.len());
        free_list.extend(free);
        Worker {
            queue,
            rx_batch: filler(batch),
            tx_batch: [Vec::with_capacity(batch * 2), Vec::with_capacity(batch * 2)],
            free: free_list,
            socks,
            handler,
            stats,
            batch,
            poll,
            in_flight: [0; 2],
        }
    }

    fn rings(&mut self, p: Port) -> &mut Rings {
        match p {
            Port::Inside => &mut self.socks.inside,
            Port::Outside => &mut self.socks.outside,
        }
    }

    /// Moves completed TX frames back to the free list.
    fn reclaim(&mut self, p: Port) {
        let free_room = self.free.capacity() - self.free.len();
        let want = self.batch.min(free_room);
        if want == 0 {
            return;
        }
        let len = self.free.len();
        // Grow the free list into its spare capacity with placeholder descriptors,
        // let the completion ring overwrite them, then cut back to what it gave.
        let Some(&proto) = self.rx_batch.first() else {
            return;
        };
        self.free.resize(len + want, proto);
        let rings = match p {
            Port::Inside => &mut self.socks.inside,
            Port::Outside => &mut self.socks.outside,
        };
        let slots = &mut self.free[len..];
        // SAFETY: the descriptors come back from this UMEM's completion ring, which
        // only ever holds frames of this UMEM that we submitted for transmission.
        let n = unsafe { rings.cq.consume(slots) };
        self.free.truncate(len + n);
        self.in_flight[p as usize] = self.in_flight[p as usize].saturating_sub(n);
    }

    /// Gives free frames to the fill ring of `p`.
    fn refill(&mut self, p: Port) {
        let avail = self.free.len() as u32;
        if avail == 0 {
            return;
        }
        let rings = match p {
            Port::Inside => &mut self.socks.inside,
            Port::Outside => &mut self.socks.outside,
        };
        // Keep half of the free frames for the other interface.
        let want = (avail / 2).max(1);
        let n = rings.fq.nb_free(want).min(want) as usize;
        if n > 0 {
            let start = self.free.len() - n;
            // SAFETY: these frames are free (in no ring) and belong to this UMEM.
            let produced = unsafe { rings.fq.produce(&self.free[start..]) };
            if produced == n {
                self.free.truncate(start);
            }
        }
        if rings.fq.needs_wakeup() {
            let _ = rings.fq.wakeup(rings.rx.fd_mut(), 0);
        }
    }

    /// Receives and handles one batch from `p`; returns the number of frames.
    fn receive(&mut self, p: Port) -> usize {
        let rings = match p {
            Port::Inside => &mut self.socks.inside,
            Port::Outside => &mut self.socks.outside,
        };
        // SAFETY: the RX ring only returns frames of this UMEM.
        let n = unsafe { rings.rx.consume(&mut self.rx_batch) };
        if n == 0 {
            return 0;
        }
        if self.handler.prefetching() {
            for desc in &self.rx_batch[..n] {
                // SAFETY: the descriptor was just consumed from our RX ring: the kernel is done
                // with the frame and nothing writes it while we read.
                let data = unsafe { self.socks.umem.data(desc) };
                self.handler.prefetch(data.contents());
            }
        }
        let mut bytes = 0u64;
        let mut drops = [0u64; MAX_DROP_REASONS];
        let mut dropped_any = false;
        let mut replies = 0u64;
        for i in 0..n {
            let mut desc = self.rx_batch[i];
            bytes += desc.lengths().data() as u64;
            // SAFETY: the descriptor was just consumed from our RX ring, so the kernel
            // is done with the frame and no other descriptor refers to it.
            let mut data = unsafe { self.socks.umem.data_mut(&mut desc) };
            match self.handler.handle(data.contents_mut(), p) {
                Action::Transmit(out) => self.tx_batch[out as usize].push(desc),
                Action::Reply(out) => {
                    let mut c = data.cursor();
                    c.set_pos(0);
                    if std::io::Write::write_all(&mut c, self.handler.reply()).is_ok() {
                        replies += 1;
                        self.tx_batch[out as usize].push(desc);
                    } else {
                        self.free.push(desc);
                    }
                }
                Action::Drop(reason) => {
                    if let Some(d) = drops.get_mut(usize::from(reason)) {
                        *d += 1;
                    }
                    dropped_any = true;
                    self.free.push(desc);
                }
            }
        }
        let s = &self.stats;
        bump(&s.rx_packets[p as usize], n as u64);
        bump(&s.rx_bytes[p as usize], bytes);
        bump(&s.icmp_errors_sent, replies);
        if dropped_any {
            for (c, d) in s.drops.iter().zip(drops.iter()) {
                bump(c, *d);
            }
        }
        n
    }

    /// Submits the collected frames to the TX ring of `p`.
    fn transmit(&mut self, p: Port) {
        let pi = p as usize;
        if self.tx_batch[pi].is_empty() {
            // Frames may still wait in the TX ring: keep the kernel sending them.
            if self.in_flight[pi] > 0 {
                kick(self.rings(p));
            }
            return;
        }
        let mut batch = std::mem::take(&mut self.tx_batch[pi]);
        let mut sent = 0;
        // Two tries: if the ring is full, kick the kernel to drain it, then try again.
        for _ in 0..2 {
            let rest = &batch[sent..];
            let rings = self.rings(p);
            let room = rings.tx.nb_free(rest.len() as u32) as usize;
            let n = room.min(rest.len());
            if n > 0 {
                // SAFETY: these frames were received into this UMEM and are in no other ring.
                sent += unsafe { rings.tx.produce(&rest[..n]) };
            }
            kick(self.rings(p));
            if sent == batch.len() {
                break;
            }
        }
        let bytes: u64 = batch[..sent]
            .iter()
            .map(|d| d.lengths().data() as u64)
            .sum();
        let s = &self.stats;
        bump(&s.tx_packets[pi], sent as u64);
        bump(&s.tx_bytes[pi], bytes);
        bump(&s.tx_ring_full, (batch.len() - sent) as u64);
        self.in_flight[pi] += sent;
        self.free.extend_from_slice(&batch[sent..]);
        batch.clear();
        self.tx_batch[pi] = batch;
    }

    fn wait(&mut self) {
        let mut fds = [
            libc::pollfd {
                fd: self.socks.inside.rx.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.socks.outside.rx.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd structures for the call.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, 50) };
    }

    /// Runs until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) {
        tracing::debug!(queue = self.queue, "worker started");
        for p in [Port::Inside, Port::Outside] {
            self.refill(p);
        }
        let mut idle = 0u32;
        while !stop.load(Ordering::Relaxed) {
            for p in [Port::Inside, Port::Outside] {
                self.reclaim(p);
                self.refill(p);
            }
            self.handler.begin_batch();
            let got = self.receive(Port::Inside) + self.receive(Port::Outside);
            self.transmit(Port::Inside);
            self.transmit(Port::Outside);
            if got > 0 {
                bump(&self.stats.batches, 1);
                idle = 0;
            } else {
                idle = idle.saturating_add(1);
                let busy_tx = self.in_flight.iter().any(|&n| n > 0);
                if self.poll == PollMode::Adaptive && idle > 256 && !busy_tx {
                    self.wait();
                }
            }
        }
        tracing::debug!(queue = self.queue, "worker stopped");
    }
}
