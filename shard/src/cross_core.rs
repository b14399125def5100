//! Cross-core forwarding: the ONLY way code on one core reaches state owned by another core.
//!
//! Every core has one mailbox (an unbounded `futures_channel::mpsc` queue woken across threads
//! by monoio's `sync` waker). A message is a `Send` closure run on the owner core with that
//! core's [`Shard`]; async work it starts replies through a `futures_channel::oneshot`. Request
//! bodies travel as `Bytes` (reference-counted, never copied).
//!
//! Bounds: a sending core keeps at most [`IN_FLIGHT_PER_PEER_MAX`] forwarded calls outstanding
//! per destination core; callers beyond that wait on the sending core, so no mailbox holds more
//! than `(cores - 1) · IN_FLIGHT_PER_PEER_MAX` calls. Every forwarded call is counted.
//!
//! Must never: block a core thread, or hand a `!Send` value (an `Rc`, an engine) to another core.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::Arc;
use std::task::{Poll, Waker};

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;

use crate::{Shard, ShardError};

/// Most forwarded calls one core keeps outstanding towards one other core.
pub const IN_FLIGHT_PER_PEER_MAX: usize = 1024;

/// A message: runs on the owner core with the owner's shard handle.
pub(crate) type Job = Box<dyn FnOnce(&Shard) + Send>;

/// Every core's mailbox sender, indexed by core (Send + Sync: any thread may post).
pub(crate) type Mailboxes = Arc<[mpsc::UnboundedSender<Job>]>;

/// Creates one mailbox per core: the shared senders and each core's receiver.
pub(crate) fn mailboxes(cores: usize) -> (Mailboxes, Vec<mpsc::UnboundedReceiver<Job>>) {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..cores).map(|_| mpsc::unbounded()).unzip();
    (senders.into(), receivers)
}

/// Posts a job to `core` without waiting (control messages from non-core threads).
pub(crate) fn post(mailboxes: &Mailboxes, core: usize, job: Job) -> Result<(), ShardError> {
    mailboxes[core]
        .unbounded_send(job)
        .map_err(|_| ShardError::CoreStopped { core })
}

/// Runs the jobs arriving in this core's mailbox until every sender is gone or the future is dropped.
pub(crate) async fn run_mailbox(shard: Shard, mut receiver: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = receiver.next().await {
        job(&shard);
    }
}

/// The sending side on one core: bounded forwarding to every other core, with counters.
pub(crate) struct Forwarder {
    mailboxes: Mailboxes,
    /// Outstanding calls per destination core.
    in_flight: Box<[InFlight]>,
    /// Calls this core forwarded since start.
    forwarded: Cell<u64>,
}

impl Forwarder {
    /// A forwarder over the node's mailboxes, nothing outstanding.
    pub(crate) fn new(mailboxes: Mailboxes) -> Self {
        let in_flight = (0..mailboxes.len()).map(|_| InFlight::default()).collect();
        Self {
            mailboxes,
            in_flight,
            forwarded: Cell::new(0),
        }
    }

    /// Calls forwarded by this core since start.
    pub(crate) fn forwarded(&self) -> u64 {
        self.forwarded.get()
    }

    /// Posts `job` to `core` (this one too) without waiting or taking an in-flight slot: for
    /// fire-and-forget releases from `Drop`, which may run while the runtime is being torn down
    /// (then the job is simply never run). Counted like a call.
    pub(crate) fn post(&self, core: usize, job: Job) {
        if post(&self.mailboxes, core, job).is_ok() {
            self.forwarded.set(self.forwarded.get() + 1);
        }
    }

    /// Runs `work` on core `owner` with its shard and returns the result: one message there,
    /// one reply back.
    pub(crate) async fn call<R, W, Fut>(&self, owner: usize, work: W) -> Result<R, ShardError>
    where
        R: Send + 'static,
        W: FnOnce(Shard) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let _permit = self.in_flight[owner].acquire().await;
        let (reply, replied) = oneshot::channel();
        let job: Job = Box::new(move |shard: &Shard| {
            let shard = shard.clone();
            monoio::spawn(async move {
                // The caller may have gone away; its answer is then dropped.
                let _ = reply.send(work(shard).await);
            });
        });
        post(&self.mailboxes, owner, job)?;
        self.forwarded.set(self.forwarded.get() + 1);
        replied
            .await
            .map_err(|_| ShardError::CoreStopped { core: owner })
    }
}

/// A counter of outstanding calls towards one core, with the tasks waiting for room.
#[derive(Default)]
struct InFlight {
    /// Calls sent and not yet answered.
    count: Cell<usize>,
    /// Tasks waiting for `count` to drop below the bound.
    waiters: RefCell<Vec<Waker>>,
}

impl InFlight {
    /// Waits until fewer than [`IN_FLIGHT_PER_PEER_MAX`] calls are outstanding and takes a slot.
    async fn acquire(&self) -> Permit<'_> {
        std::future::poll_fn(|cx| {
            if self.count.get() < IN_FLIGHT_PER_PEER_MAX {
                self.count.set(self.count.get() + 1);
                Poll::Ready(Permit { in_flight: self })
            } else {
                let mut waiters = self.waiters.borrow_mut();
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

/// One outstanding call; frees its slot when dropped.
struct Permit<'a> {
    in_flight: &'a InFlight,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.in_flight.count.set(self.in_flight.count.get() - 1);
        // Wake every waiter: one takes the slot, the others re-register. Waking all (instead of
        // one) cannot lose a wake-up to a waiter that was cancelled meanwhile.
        for waker in self.in_flight.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}
