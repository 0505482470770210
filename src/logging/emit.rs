//! Where the NAT's events go from whichever thread notices them: a worker's own ring (it
//! binds it once), or else the shared ring of the other threads (the reaper, a flush over
//! the control socket). Rings are bounded and never block; a full ring drops the event and
//! counts it.

use std::cell::RefCell;
use std::sync::Arc;

use super::settings::Events;
use super::{EventKind, NatEvent, WorkerLog};

thread_local! {
    /// The ring of the worker running on this thread, if it bound one.
    static RING: RefCell<Option<Arc<WorkerLog>>> = const { RefCell::new(None) };
}

/// The NAT's way to the logger thread.
pub struct EventLog {
    shared: Arc<WorkerLog>,
    events: Events,
}

impl EventLog {
    /// Events from threads without a ring of their own go to `shared`.
    pub fn new(shared: WorkerLog, events: Events) -> EventLog {
        EventLog {
            shared: Arc::new(shared),
            events,
        }
    }

    /// Whether session create and delete events are wanted.
    #[inline]
    pub fn sessions(&self) -> bool {
        self.events == Events::Sessions
    }

    /// Makes `ring` this thread's ring (a worker, once, on its own thread).
    pub fn bind_thread(ring: Arc<WorkerLog>) {
        RING.with(|r| *r.borrow_mut() = Some(ring));
    }

    /// Queues an event (time stamped by the logger thread), never blocking.
    #[inline]
    pub fn emit(&self, kind: EventKind) {
        let ev = NatEvent::new(kind);
        RING.with(|r| match r.borrow().as_ref() {
            Some(ring) => ring.log(ev),
            None => self.shared.log(ev),
        });
    }

    /// Events dropped because the shared ring was full.
    pub fn shared_dropped(&self) -> u64 {
        self.shared.dropped()
    }
}
