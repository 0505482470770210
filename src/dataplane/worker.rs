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
    /// Transmit the (rewritten) frame on this port as IPv4 fragments of at most this MTU
    /// (it has DF clear and does not fit the link; see [`crate::router::fragment`]).
    TransmitFragments(Port, u16),
    /// The handler kept a copy to send later ([`Handler::emit_held`]): recycle the frame,
    /// counting no drop.
    Consumed,
}

/// Work a handler did on frames besides forwarding and dropping them, counted per worker
/// (indexes into [`Events`] and [`EVENT_NAMES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Event {
    /// A TCP/UDP checksum left partial by the sender's checksum offload was completed.
    ChecksumCompleted = 0,
    /// A SYN's MSS option was lowered (`--clamp-mss`).
    MssClamped,
    /// ICMP Fragmentation Needed sent for a DF packet larger than the egress MTU.
    FragNeededSent,
    /// A packet was fragmented on egress.
    Fragmented,
    /// Fragments sent by egress fragmentation.
    FragmentsSent,
    /// An ICMP error was not sent because RFC 1812 4.3.2.7 forbids it.
    IcmpSuppressed,
    /// An ICMP error was not sent because of the per-worker rate limit.
    IcmpRateLimited,
    /// A non-first fragment was translated as its datagram's first fragment was.
    FragmentsTranslated,
    /// A non-first fragment arrived before its first and was held.
    FragmentsHeld,
    /// Held frames sent once what they waited for arrived.
    HeldSent,
    /// A packet to a neighbour not yet resolved was held.
    NeighbourHeld,
    /// A probe was queued for the receiver of an RST that reset a live TCP connection
    /// (sent 1 to 2 s later, see `nat::tcp`).
    RstProbes,
}

/// Number of [`Event`]s.
pub const EVENT_COUNT: usize = 12;
/// Names of the events, indexed by [`Event`].
pub const EVENT_NAMES: [&str; EVENT_COUNT] = [
    "checksum_completed",
    "mss_clamped",
    "frag_needed_sent",
    "fragmented",
    "fragments_sent",
    "icmp_suppressed_rfc1812",
    "icmp_rate_limited",
    "fragments_translated",
    "fragments_held",
    "held_sent",
    "neighbour_held",
    "rst_probes",
];

/// Event counts, indexed by [`Event`].
pub type Events = [u64; EVENT_COUNT];

/// Counts a handler keeps until the worker adds them to its statistics (once per loop):
/// events, and drops decided outside [`Handler::handle`] (held frames that expired).
pub struct Tally {
    /// Events, indexed by [`Event`].
    pub events: Events,
    /// Drops by the handler's reason index.
    pub drops: [u64; MAX_DROP_REASONS],
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            events: [0; EVENT_COUNT],
            drops: [0; MAX_DROP_REASONS],
        }
    }
}

/// The packet logic a worker runs (plain forwarding, NAT).
pub trait Handler: Send {
    /// Called once per batch before frames are handled (refresh caches, read the clock).
    fn begin_batch(&mut self) {}
    /// Whether received batches go through [`Handler::prepare`] and [`Handler::prepared`]
    /// before their frames are handled (the batch pipeline).
    #[inline]
    fn preparing(&self) -> bool {
        false
    }
    /// First stage of the batch pipeline, called (when [`Handler::preparing`]) for every
    /// frame of a received batch, `index` 0 first, before any is handled: parse the frame,
    /// hash its keys and start loading what handling it will need into the cache, keeping
    /// what [`Handler::handle`] can use.
    #[inline]
    fn prepare(&mut self, _index: usize, _frame: &[u8]) {}
    /// Second stage: called once all `count` frames of the batch were prepared, before the
    /// first is handled.
    #[inline]
    fn prepared(&mut self, _count: usize) {}
    /// Processes one frame in place (the frames of a batch in order).
    fn handle(&mut self, frame: &mut [u8], ingress: Port) -> Action;
    /// Called once per loop after the batches received from both ports were handled:
    /// publish what was gathered over them (the table's outcome counts).
    fn end_batch(&mut self) {}
    /// Names of the drop reasons this handler reports, indexed by `Action::Drop`.
    fn drop_reasons(&self) -> &'static [&'static str];
    /// The frame to send for [`Action::Reply`].
    fn reply(&self) -> &[u8] {
        &[]
    }
    /// The handler's counts; the worker adds them to its statistics and zeroes them once
    /// per loop.
    fn tally(&mut self) -> Option<&mut Tally> {
        None
    }
    /// Hands the frames the handler held and has now released to `send` (egress port,
    /// bytes), which copies each into a free frame and queues it; `send` returns `false`
    /// when no frame is free.
    fn emit_held(&mut self, _send: &mut dyn FnMut(Port, &[u8]) -> bool) {}
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
    /// ICMP errors originated by the gateway (Time Exceeded, Fragmentation Needed).
    pub icmp_errors_sent: AtomicU64,
    /// Packets that needed fragmenting but were dropped: too few free frames were left for
    /// the fragments, or the packet could not be split.
    pub frag_dropped: AtomicU64,
    /// Drops by handler reason.
    pub drops: [AtomicU64; MAX_DROP_REASONS],
    /// Handler events, indexed by [`Event`].
    pub events: [AtomicU64; EVENT_COUNT],
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
            frag_dropped: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            events: std::array::from_fn(|_| AtomicU64::new(0)),
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

/// Writes `bytes` as the whole content of the frame of `d` (its length becomes theirs);
/// `false` if they do not fit.
///
/// # Safety
///
/// No ring and no other descriptor may refer to `d`'s frame while this runs.
unsafe fn fill_frame(umem: &xsk_rs::Umem, d: &mut FrameDesc, bytes: &[u8]) -> bool {
    // SAFETY: the caller guarantees the frame is ours alone.
    let mut data = unsafe { umem.data_mut(d) };
    let mut c = data.cursor();
    c.set_pos(0);
    std::io::Write::write_all(&mut c, bytes).is_ok()
}

/// How a worker waits when there is nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PollMode {
    /// Spin forever (lowest latency, one full core per worker).
    Busy,
    /// Spin briefly, then sleep in poll(2) until a frame arrives.
    Adaptive,
    /// Spin forever and drive the NIC's NAPI context from the worker: preferred busy polling
    /// (SO_PREFER_BUSY_POLL, SO_BUSY_POLL, SO_BUSY_POLL_BUDGET = the batch size) on every
    /// AF_XDP socket, a non-blocking recvfrom(2) on each socket whose RX ring is empty.
    PreferBusy,
}

impl PollMode {
    /// The busy-poll options the sockets get in this mode, for workers handling `batch`
    /// frames at a time.
    pub fn busy_poll(self, batch: usize) -> Option<super::xsk::BusyPoll> {
        (self == PollMode::PreferBusy).then(|| super::xsk::BusyPoll {
            usecs: super::xsk::BUSY_POLL_USECS,
            budget: u32::try_from(batch).unwrap_or(u32::MAX),
        })
    }
}

/// Drives the NAPI context of the AF_XDP socket `fd` once (preferred busy polling): a
/// non-blocking `recvfrom` with no buffer, as the kernel's AF_XDP documentation describes.
#[inline]
fn napi_poll(fd: i32) {
    // SAFETY: a null buffer of length 0 and null address pointers are valid arguments;
    // MSG_DONTWAIT keeps the call from blocking. The result does not matter (the RX ring is
    // read next time round).
    unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
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
    /// A copy of the frame being fragmented, and the fragment being written (both one UMEM
    /// frame long, allocated once).
    frag_src: Vec<u8>,
    frag_out: Vec<u8>,
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
            // Room for a whole batch from each interface, and for fragments.
            tx_batch: [Vec::with_capacity(batch * 4), Vec::with_capacity(batch * 4)],
            free: free_list,
            socks,
            handler,
            stats,
            batch,
            poll,
            in_flight: [0; 2],
            frag_src: vec![0; super::xsk::FRAME_SIZE as usize],
            frag_out: vec![0; super::xsk::FRAME_SIZE as usize],
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
        if self.handler.preparing() {
            for (i, desc) in self.rx_batch[..n].iter().enumerate() {
                // SAFETY: the descriptor was just consumed from our RX ring: the kernel is done
                // with the frame and nothing writes it while we read.
                let data = unsafe { self.socks.umem.data(desc) };
                self.handler.prepare(i, data.contents());
            }
            self.handler.prepared(n);
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
                    // SAFETY: as above, the frame is ours until it is queued.
                    if unsafe { fill_frame(&self.socks.umem, &mut desc, self.handler.reply()) } {
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
                Action::Consumed => self.free.push(desc),
                Action::TransmitFragments(out, mtu) => {
                    let src = data.contents();
                    let n = src.len().min(self.frag_src.len());
                    self.frag_src[..n].copy_from_slice(&src[..n]);
                    self.fragment(desc, n, out, mtu);
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

    /// Sends what the handler released from its held frames, in free frames.
    fn emit_held(&mut self) {
        let Worker {
            handler,
            free,
            socks,
            tx_batch,
            ..
        } = self;
        handler.emit_held(&mut |port, bytes| {
            let Some(mut d) = free.pop() else {
                return false;
            };
            // SAFETY: `d` comes from the free list: no ring and no other descriptor refers
            // to its frame.
            if unsafe { fill_frame(&socks.umem, &mut d, bytes) } {
                tx_batch[port as usize].push(d);
                true
            } else {
                free.push(d);
                false
            }
        });
    }

    /// Adds the handler's counts to the statistics.
    fn flush_tally(&mut self) {
        let Some(t) = self.handler.tally() else {
            return;
        };
        for (c, v) in self.stats.events.iter().zip(t.events.iter_mut()) {
            bump(c, *v);
            *v = 0;
        }
        for (c, v) in self.stats.drops.iter().zip(t.drops.iter_mut()) {
            bump(c, *v);
            *v = 0;
        }
    }

    /// Queues the packet in `frag_src[..len]` (received in `desc`) for `out` as fragments of
    /// at most `mtu` bytes: the first is written over `desc`, the others into free frames.
    /// Without enough free frames the packet is dropped and counted.
    fn fragment(&mut self, desc: FrameDesc, len: usize, out: Port, mtu: u16) {
        use crate::router::fragment::{FragError, Fragmenter};
        let mut fr = match Fragmenter::new(
            self.frag_src.get(..len).unwrap_or_default(),
            usize::from(mtu),
        ) {
            Ok(fr) => fr,
            Err(FragError::Fits) => {
                self.tx_batch[out as usize].push(desc);
                return;
            }
            Err(_) => {
                bump(&self.stats.frag_dropped, 1);
                self.free.push(desc);
                return;
            }
        };
        let need = fr.count();
        if self.free.len() + 1 < need {
            bump(&self.stats.frag_dropped, 1);
            self.free.push(desc);
            return;
        }
        let mut next = Some(desc);
        let mut sent = 0u64;
        while let Some(n) = fr.next_into(&mut self.frag_out) {
            let Some(mut d) = next.take().or_else(|| self.free.pop()) else {
                break;
            };
            // SAFETY: `d` is either the frame just received (ours until we queue it) or a
            // frame from the free list, which no ring and no other descriptor refers to.
            let ok = self
                .frag_out
                .get(..n)
                .is_some_and(|f| unsafe { fill_frame(&self.socks.umem, &mut d, f) });
            if ok {
                self.tx_batch[out as usize].push(d);
                sent += 1;
            } else {
                self.free.push(d);
            }
        }
        if let Some(d) = next {
            self.free.push(d);
        }
        bump(&self.stats.events[Event::Fragmented as usize], 1);
        bump(&self.stats.events[Event::FragmentsSent as usize], sent);
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
            let got_in = self.receive(Port::Inside);
            let got_out = self.receive(Port::Outside);
            let got = got_in + got_out;
            self.handler.end_batch();
            self.emit_held();
            self.transmit(Port::Inside);
            self.transmit(Port::Outside);
            self.flush_tally();
            if self.poll == PollMode::PreferBusy {
                // An empty RX ring: let the kernel run the device's NAPI poll for this
                // socket now (interrupts stay deferred while the worker keeps doing so).
                if got_in == 0 {
                    napi_poll(self.socks.inside.rx.fd().as_raw_fd());
                }
                if got_out == 0 {
                    napi_poll(self.socks.outside.rx.fd().as_raw_fd());
                }
            }
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
