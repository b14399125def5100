//! Cross-core forwarding: the ONLY way code on one core reaches state owned by another core.
//!
//! Every core has one mailbox (an unbounded `futures_channel::mpsc` queue woken across threads
//! by monoio's `sync` waker). A message is a value, never a closure: a [`StorageRequest`] for
//! the core's executor, with a `futures_channel::oneshot` for its [`StorageResponse`] (none for
//! one-way requests), or a node [`Control`] message. Request bodies travel as `Bytes`
//! (reference-counted, never copied).
//!
//! Bounds: a sending core keeps at most [`IN_FLIGHT_PER_PEER_MAX`] forwarded calls outstanding
//! per destination core; callers beyond that wait on the sending core, so no mailbox holds more
//! than `(cores - 1) · IN_FLIGHT_PER_PEER_MAX` calls. Every forwarded call is counted.
//!
//! Must never: block a core thread, or hand a `!Send` value (an `Rc`, an engine) to another core.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use leofs_wire::connection::Budget;

use crate::node::Control;
use crate::request::{StorageRequest, StorageResponse};
use crate::{Shard, ShardError};

/// Most forwarded calls one core keeps outstanding towards one other core.
pub const IN_FLIGHT_PER_PEER_MAX: usize = 1024;

/// Where a core sends the answer to a request.
pub(crate) type Reply = oneshot::Sender<Result<StorageResponse, ShardError>>;

/// One message to a core.
pub(crate) enum Message {
    /// A storage request for the core's executor; `reply` is None for one-way requests.
    Request {
        /// The request.
        request: StorageRequest,
        /// Where the answer goes.
        reply: Option<Reply>,
    },
    /// A node control message (stats, drain, admin scans).
    Control(Control),
}

/// Every core's mailbox sender, indexed by core (Send + Sync: any thread may post).
pub(crate) type Mailboxes = Arc<[mpsc::UnboundedSender<Message>]>;

/// Creates one mailbox per core: the shared senders and each core's receiver.
pub(crate) fn mailboxes(cores: usize) -> (Mailboxes, Vec<mpsc::UnboundedReceiver<Message>>) {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..cores).map(|_| mpsc::unbounded()).unzip();
    (senders.into(), receivers)
}

/// Posts a message to `core` without waiting (control messages from non-core threads).
pub(crate) fn post(mailboxes: &Mailboxes, core: usize, message: Message) -> Result<(), ShardError> {
    mailboxes[core]
        .unbounded_send(message)
        .map_err(|_| ShardError::CoreStopped { core })
}

/// Serves the messages arriving in this core's mailbox until every sender is gone or the
/// future is dropped: each request runs as a task of the core's executor.
pub(crate) async fn run_mailbox(shard: Shard, mut receiver: mpsc::UnboundedReceiver<Message>) {
    while let Some(message) = receiver.next().await {
        match message {
            Message::Request { request, reply } => {
                let shard = shard.clone();
                monoio::spawn(async move {
                    let kind = request.kind();
                    let answer = shard.execute(request).await;
                    match (reply, answer) {
                        // The sender may have gone away; its answer is then dropped.
                        (Some(reply), answer) => {
                            let _ = reply.send(answer);
                        }
                        (None, Err(e)) => {
                            tracing::warn!(error = %e, request = kind, "a one-way request failed; the sweeper will find what it left");
                        }
                        (None, Ok(_)) => {}
                    }
                });
            }
            Message::Control(control) => crate::node::serve_control(&shard, control),
        }
    }
}

/// The sending side on one core: bounded forwarding to every other core, with counters.
pub(crate) struct Forwarder {
    mailboxes: Mailboxes,
    /// Outstanding calls per destination core, each at most [`IN_FLIGHT_PER_PEER_MAX`].
    in_flight: Box<[Rc<Budget>]>,
    /// Calls this core forwarded since start.
    forwarded: Cell<u64>,
}

impl Forwarder {
    /// A forwarder over the node's mailboxes, nothing outstanding.
    pub(crate) fn new(mailboxes: Mailboxes) -> Self {
        let in_flight = (0..mailboxes.len())
            .map(|_| Budget::new(IN_FLIGHT_PER_PEER_MAX))
            .collect();
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

    /// Posts a one-way `request` to `core` (this one too) without waiting or taking an
    /// in-flight slot: for fire-and-forget releases from `Drop`, which may run while the
    /// runtime is being torn down (then the request is simply never served). Counted like a call.
    pub(crate) fn post(&self, core: usize, request: StorageRequest) {
        let message = Message::Request {
            request,
            reply: None,
        };
        if post(&self.mailboxes, core, message).is_ok() {
            self.forwarded.set(self.forwarded.get() + 1);
        }
    }

    /// Serves `request` on core `owner` and returns its answer: one message there, one reply back.
    pub(crate) async fn call(
        &self,
        owner: usize,
        request: StorageRequest,
    ) -> Result<StorageResponse, ShardError> {
        let _permit = self.in_flight[owner].acquire(1).await;
        let (reply, replied) = oneshot::channel();
        let message = Message::Request {
            request,
            reply: Some(reply),
        };
        post(&self.mailboxes, owner, message)?;
        self.forwarded.set(self.forwarded.get() + 1);
        replied
            .await
            .map_err(|_| ShardError::CoreStopped { core: owner })?
    }
}
