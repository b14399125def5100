//! The calling side towards one peer node ([`Peer`]), on one core: one connection per (shard,
//! lane) of the peer, opened on first use and again after a failure; a record of each of the
//! peer's shards' recent failures, so that a dead shard costs one timeout and then fails calls
//! at once until its back-off ends (kept per shard: one core of a node can hang while the
//! others serve; but a shard that was up timing out when no shard answered anything for a
//! whole request timeout takes the whole node for silent, so that a stopped or cut-off node
//! costs one timeout, not one a shard); a cap on the bytes in flight towards the peer.
//!
//! Lanes: [`Lane::Bulk`] carries calls with large payloads (chunk bodies) on a connection of
//! their own, so a 4 MiB transfer never sits between a small request and its answer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::Shared;

use crate::connection::{Budget, ClientConnection, ClusterAuth, Message, WireError};
use crate::frame::{Frame, FrameError};

/// Longest time to open a TCP connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default longest time a call waits for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes (requests' payloads and expected answers) in flight towards one peer from one
/// core; calls beyond wait.
pub const IN_FLIGHT_BYTES_PER_PEER_MAX: usize = 64 * 1024 * 1024;
/// Back-off after a peer's first failure; it doubles with each failure in a row.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Least time between two warnings about one peer's failures.
pub const PEER_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Which connection to a shard a call travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Requests and answers without large payloads.
    Small,
    /// Calls that carry or fetch large payloads.
    Bulk,
}

/// A connection attempt several callers await together.
type Connecting = Shared<Pin<Box<dyn Future<Output = Result<Rc<ClientConnection>, WireError>>>>>;

/// The connection of one (shard, lane).
enum Channel {
    Connected(Rc<ClientConnection>),
    Connecting(Connecting),
}

/// A peer shard's recent failures.
#[derive(Default)]
struct Health {
    failures_in_a_row: u32,
    down_until: Option<Instant>,
    last_error: String,
    /// A [`Peer::probe`] is under way.
    probing: bool,
}

/// One peer node as seen from one core. `!Send`.
pub struct Peer {
    /// Shard 0's address; shard *i* listens on its port + *i*.
    base: SocketAddr,
    auth: ClusterAuth,
    request_timeout: Duration,
    /// By shard; a shard without an entry has not failed since it last answered.
    health: RefCell<HashMap<u16, Health>>,
    /// When any shard of the peer last answered a call.
    last_answer: Cell<Option<Instant>>,
    /// When each shard last answered a call, by shard (None, or beyond the end: never).
    shard_answers: RefCell<Vec<Option<Instant>>>,
    /// A shard that was up timed out and no shard answered anything for a whole request
    /// timeout: the node is taken for stopped or cut off, and every shard counts as down until
    /// one of them answers (a probe or any call).
    silent: Cell<bool>,
    /// When a failure of the peer was last logged (one line for the failures of one event).
    last_warned: Cell<Option<Instant>>,
    bytes: Rc<Budget>,
    channels: RefCell<HashMap<(u16, Lane), Channel>>,
}

impl Peer {
    /// A peer whose shard 0 listens on `base`.
    pub fn new(base: SocketAddr, auth: ClusterAuth, request_timeout: Duration) -> Rc<Self> {
        Rc::new(Self {
            base,
            auth,
            request_timeout,
            health: RefCell::new(HashMap::new()),
            last_answer: Cell::new(None),
            shard_answers: RefCell::new(Vec::new()),
            silent: Cell::new(false),
            last_warned: Cell::new(None),
            bytes: Budget::new(IN_FLIGHT_BYTES_PER_PEER_MAX),
            channels: RefCell::new(HashMap::new()),
        })
    }

    /// The address shard `shard` of the peer listens on.
    pub fn shard_addr(&self, shard: u16) -> SocketAddr {
        let mut addr = self.base;
        addr.set_port(self.base.port().wrapping_add(shard));
        addr
    }

    /// Whether shard `shard` of the peer failed and has not answered since: a coordinator
    /// counts it as down (skips it for reads, makes a write's quorum without it, fails a write
    /// at once when too few are up) until [`Peer::probe`] or a call finds it back. Unlike the
    /// back-off, this does not lapse by itself: a write sent to a peer merely because its
    /// back-off ended would be stored by the replicas up and fail for want of this one. Only
    /// that shard's own answers count (another shard of the node answering says nothing of a
    /// core that hangs), except while the whole node is silent: then every shard is down
    /// until one answers.
    pub fn is_down(&self, shard: u16) -> bool {
        self.silent.get()
            || self
                .health
                .borrow()
                .get(&shard)
                .is_some_and(|health| health.failures_in_a_row > 0)
    }

    /// Whether shard `shard` of the peer answered any call from this core at or after `at`.
    /// A call waiting longer than usual on a shard that answers nothing else either (a hung
    /// core, a stopped node) is worth asking another replica for; one waiting on a shard that
    /// keeps answering is only queued behind other work there.
    pub fn answered_since(&self, shard: u16, at: Instant) -> bool {
        self.shard_answers
            .borrow()
            .get(usize::from(shard))
            .is_some_and(|answered| answered.is_some_and(|answered| answered >= at))
    }

    /// The shards of the peer that are down ([`Peer::is_down`]): while the node is silent,
    /// every shard this core has called (and shard 0), so that probes find any that answers.
    pub fn down_shards(&self) -> Vec<u16> {
        let health = self.health.borrow();
        let mut down: Vec<u16> = if self.silent.get() {
            let called = self.channels.borrow();
            health
                .keys()
                .copied()
                .chain(called.keys().map(|(shard, _)| *shard))
                .chain([0])
                .collect()
        } else {
            health
                .iter()
                .filter(|(_, health)| health.failures_in_a_row > 0)
                .map(|(shard, _)| *shard)
                .collect()
        };
        down.sort_unstable();
        down.dedup();
        down
    }

    /// Checks in the background whether shard `shard` of the peer answers: one down, whether
    /// it is back; one up that a caller found stalled (and stopped waiting for), whether it is
    /// still alive. At most one probe at a time per shard (and, for a shard down, once per
    /// back-off): one call to it with the frame `build` makes (a small request any shard
    /// answers). Any answer marks it up; no answer within the request timeout is one more
    /// failure. A round trip, not just a connection: a stopped process still has its sockets
    /// open.
    pub fn probe(self: &Rc<Self>, shard: u16, build: impl FnOnce(u64) -> Frame + 'static) {
        {
            let mut all = self.health.borrow_mut();
            let health = all.entry(shard).or_default();
            if health.probing
                || health
                    .down_until
                    .is_some_and(|until| until > Instant::now())
            {
                return;
            }
            health.probing = true;
        }
        let peer = self.clone();
        monoio::spawn(async move {
            // An answer or a failure is recorded (and logged) by the call, as any call's.
            let _ = peer.call(shard, Lane::Small, 0, build).await;
            if let Some(health) = peer.health.borrow_mut().get_mut(&shard) {
                health.probing = false;
            }
        });
    }

    /// Sends the frame `build` makes (given the request id) to `shard` on `lane` and waits for
    /// the answer, at most the request timeout. `bytes` is what the call holds of the peer's
    /// in-flight budget (its payload and the answer's expected size).
    pub async fn call(
        self: &Rc<Self>,
        shard: u16,
        lane: Lane,
        bytes: usize,
        build: impl FnOnce(u64) -> Frame,
    ) -> Result<Message, WireError> {
        let started = Instant::now();
        let _grant =
            match monoio::time::timeout(self.request_timeout, self.bytes.acquire(bytes)).await {
                Ok(grant) => grant,
                Err(_) => {
                    return Err(WireError::TimedOut {
                        what: "waiting for the peer's in-flight byte budget",
                        after_ms: self.request_timeout.as_millis() as u64,
                    });
                }
            };
        let connection = self.connection(shard, lane).await?;
        let left = self.request_timeout.saturating_sub(started.elapsed());
        match connection.call(build, left).await {
            Ok(message) => {
                self.succeeded(shard);
                Ok(message)
            }
            // A frame too large to send is this node's mistake, not the peer's.
            Err(e @ WireError::Frame(FrameError::TooLarge { .. })) => Err(e),
            Err(e) => {
                self.failed(shard, &e);
                Err(e)
            }
        }
    }

    /// Sends a one-way frame (request id 0) to `shard`: at once on an open connection, else
    /// from a task once one is open. Best effort: a failure is logged.
    pub fn post(self: &Rc<Self>, shard: u16, frame: Frame) {
        if let Some(Channel::Connected(connection)) =
            self.channels.borrow().get(&(shard, Lane::Small))
            && connection.post(&frame).is_ok()
        {
            return;
        }
        let peer = self.clone();
        monoio::spawn(async move {
            let posted = match peer.connection(shard, Lane::Small).await {
                Ok(connection) => connection.post(&frame),
                Err(e) => Err(e),
            };
            if let Err(e) = posted {
                tracing::warn!(peer = %peer.shard_addr(shard), error = %e, "a one-way request was not sent");
            }
        });
    }

    /// The open connection of (shard, lane), or a new one (shared by every caller that asks
    /// while it is being opened). Fails at once while the peer is in its back-off.
    async fn connection(
        self: &Rc<Self>,
        shard: u16,
        lane: Lane,
    ) -> Result<Rc<ClientConnection>, WireError> {
        self.check_up(shard)?;
        let key = (shard, lane);
        let connecting = match self.channels.borrow().get(&key) {
            Some(Channel::Connected(connection)) if !connection.is_closed() => {
                return Ok(connection.clone());
            }
            Some(Channel::Connecting(attempt)) => Some(attempt.clone()),
            _ => None,
        };
        if let Some(attempt) = connecting {
            return attempt.await;
        }
        let peer = self.clone();
        let addr = self.shard_addr(shard);
        // A task of its own: the attempt finishes (bounded by the connect and handshake
        // timeouts) even if every caller waiting for it goes away.
        let attempt = monoio::spawn(async move {
            let opened =
                ClientConnection::connect(addr, &peer.auth, crate::client::CONNECT_TIMEOUT)
                    .await
                    .map(Rc::new);
            let mut channels = peer.channels.borrow_mut();
            match &opened {
                Ok(connection) => {
                    channels.insert(key, Channel::Connected(connection.clone()));
                }
                Err(e) => {
                    channels.remove(&key);
                    drop(channels);
                    peer.failed(shard, e);
                }
            }
            opened
        });
        let attempt: Pin<Box<dyn Future<Output = _>>> = Box::pin(attempt);
        let attempt = attempt.shared();
        self.channels
            .borrow_mut()
            .insert(key, Channel::Connecting(attempt.clone()));
        attempt.await
    }

    /// Refuses a call while the shard is in its back-off.
    fn check_up(&self, shard: u16) -> Result<(), WireError> {
        let all = self.health.borrow();
        let Some(health) = all.get(&shard) else {
            return Ok(());
        };
        match health.down_until {
            Some(until) if until > Instant::now() => Err(WireError::PeerDown {
                peer: self.shard_addr(shard),
                reason: health.last_error.clone(),
                retry_in_ms: until.saturating_duration_since(Instant::now()).as_millis() as u64,
            }),
            _ => Ok(()),
        }
    }

    /// Records an answer of `shard` (a probe's or any call's); one line when the peer is whole
    /// again: it was silent or this shard down, and no shard is down any more.
    fn succeeded(&self, shard: u16) {
        let now = Instant::now();
        self.last_answer.set(Some(now));
        {
            let mut answers = self.shard_answers.borrow_mut();
            let index = usize::from(shard);
            if answers.len() <= index {
                answers.resize(index + 1, None);
            }
            answers[index] = Some(now);
        }
        let was_silent = self.silent.replace(false);
        let was_down = self
            .health
            .borrow_mut()
            .get_mut(&shard)
            .is_some_and(|health| {
                let was_down = health.failures_in_a_row > 0;
                health.failures_in_a_row = 0;
                health.down_until = None;
                was_down
            });
        if (was_silent || was_down) && self.down_shards().is_empty() {
            tracing::info!(peer = %self.shard_addr(shard), "a peer that failed answers again");
        }
    }

    /// Records a failure of `shard`: it is down for a back-off that doubles with each failure
    /// in a row. If it was up, timed out, and no shard of the peer answered anything for a
    /// whole request timeout, the node is silent ([`Peer::is_down`]): judged over that long a
    /// span (not over the failed call's own wait, which a call queued behind a timed-out one on
    /// its connection inherits at once), and never on a shard already down (the probes of a
    /// hung core while the node's other cores get no traffic from here). Failures of the
    /// request itself (the peer answered) never reach here. Logged at most once per
    /// [`PEER_WARNING_INTERVAL`] (a dead node: one line, not one a shard).
    fn failed(&self, shard: u16, error: &WireError) {
        let mut all = self.health.borrow_mut();
        let health = all.entry(shard).or_default();
        let timed_out_in_silence = health.failures_in_a_row == 0
            && matches!(error, WireError::TimedOut { .. })
            && self
                .last_answer
                .get()
                .is_none_or(|at| at.elapsed() >= self.request_timeout);
        let fell_silent = timed_out_in_silence && !self.silent.replace(true);
        if health
            .down_until
            .is_some_and(|until| until > Instant::now())
        {
            // Another call already reported this failure (every call on a connection that
            // closed fails at once): one event, one step of back-off.
            return;
        }
        health.failures_in_a_row = health.failures_in_a_row.saturating_add(1);
        let doublings = health.failures_in_a_row.saturating_sub(1).min(16);
        let backoff = BACKOFF_MIN.saturating_mul(1 << doublings).min(BACKOFF_MAX);
        health.down_until = Some(Instant::now() + backoff);
        let quiet = self
            .last_warned
            .get()
            .is_some_and(|at| at.elapsed() < PEER_WARNING_INTERVAL);
        if (health.failures_in_a_row == 1 || fell_silent) && !quiet {
            self.last_warned.set(Some(Instant::now()));
            tracing::warn!(
                peer = %self.shard_addr(shard),
                error = %error,
                whole_node = self.silent.get(),
                "a peer failed; backing off"
            );
        }
        health.last_error = error.to_string();
    }
}
