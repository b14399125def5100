//! Connections between nodes on a core's monoio runtime: the handshake, then frames in both
//! directions, many requests in flight matched by request id.
//!
//! - Reading: [`FrameReader`] decodes frames as bytes arrive; a frame once started must arrive
//!   whole within [`FRAME_TIME_MAX`] (a peer that never finishes one is cut off), and every
//!   frame is verified (length, checksum, then the flatbuffers verifier in [`Message::parse`])
//!   before any field of it is used.
//! - Writing: frames ready together go out in one `write` (an [`Outbox`] gathers them while
//!   the previous write is in flight); a payload of [`PAYLOAD_COPY_BYTES_MAX`] or more is
//!   written from its own buffer, never copied.
//! - Serving ([`serve_connection`]): at most [`REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`]
//!   requests run at once per connection, and at most [`OUTBOX_BYTES_MAX`] of answers wait to
//!   be written; beyond either, the connection is not read. During the handshake a frame is
//!   at most [`HANDSHAKE_FRAME_BYTES_MAX`].
//! - Calling ([`ClientConnection`]): each call has a deadline; a connection whose call timed
//!   out is closed (its peer is hung or gone), and every call waiting on it fails at once.
//!
//! Must never: panic on anything a peer sends, use a byte of a frame before it is verified, or
//! hold more than the named bounds of requests per connection.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use futures_util::future::{Either, select};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use crate::fb;
use crate::frame::{Frame, FrameDecoder, FrameError};
use crate::handshake::{
    ClientHandshake, ClusterId, ClusterSecret, HANDSHAKE_TIMEOUT, HandshakeError, ServerHandshake,
};

/// Longest time a frame may take to arrive once its first byte has (and a write to complete).
pub const FRAME_TIME_MAX: Duration = Duration::from_secs(10);
/// Most requests one connection has running at once on the serving side, and waiting for an
/// answer on the calling side.
pub const REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX: usize = 1024;
/// Payloads of at least this many bytes are written from their own buffer (no copy).
pub const PAYLOAD_COPY_BYTES_MAX: usize = 16 * 1024;
/// Bytes a read asks the kernel for at least.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Largest frame during the handshake (its messages are under 100 bytes): a peer that has not
/// proven anything gets no larger buffer.
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 256;
/// Most bytes of answers waiting to be written on one serving connection; beyond, no further
/// request is read until the peer has taken some.
pub const OUTBOX_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What both ends of a connection must share: the cluster secret and the cluster id.
#[derive(Clone, Debug)]
pub struct ClusterAuth {
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// The cluster id.
    pub cluster: ClusterId,
}

/// Why a connection or a call failed. Clone: every call waiting on a connection gets it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A frame was refused (bad length, checksum).
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// A verified frame's envelope is not a valid envelope, or not what was expected.
    #[error("bad envelope: {0}")]
    Envelope(String),
    /// The socket failed.
    #[error("{op}: {message}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error's text.
        message: String,
    },
    /// The connection is closed (by either end).
    #[error("connection closed")]
    Closed,
    /// Something took longer than its bound.
    #[error("{what} took longer than {after_ms} ms")]
    TimedOut {
        /// What timed out.
        what: &'static str,
        /// The bound.
        after_ms: u64,
    },
    /// This node has too much in flight towards the peer (its own queue, not the peer's
    /// fault); the caller may retry.
    #[error("too much in flight towards the peer: {what}")]
    Busy {
        /// What was full.
        what: &'static str,
    },
    /// The peer failed recently; it is not tried again before its back-off ends.
    #[error("peer {peer} is down ({reason}); next attempt in {retry_in_ms} ms")]
    PeerDown {
        /// The peer.
        peer: SocketAddr,
        /// Its last failure.
        reason: String,
        /// Time left until the next attempt.
        retry_in_ms: u64,
    },
}

impl WireError {
    fn io(op: &'static str, e: &std::io::Error) -> Self {
        Self::Io {
            op,
            message: e.to_string(),
        }
    }

    fn timed_out(what: &'static str, after: Duration) -> Self {
        Self::TimedOut {
            what,
            after_ms: after.as_millis() as u64,
        }
    }
}

/// A verified frame: its checksum held and its envelope passed the flatbuffers verifier.
#[derive(Clone, Debug)]
pub struct Message {
    frame: Frame,
    request_id: u64,
}

impl Message {
    /// Verifies `frame`'s envelope.
    pub fn parse(frame: Frame) -> Result<Self, WireError> {
        let envelope = flatbuffers::root::<fb::Envelope>(&frame.envelope)
            .map_err(|e| WireError::Envelope(e.to_string()))?;
        let request_id = envelope.request_id();
        Ok(Self { frame, request_id })
    }

    /// The envelope (verified when the message was parsed).
    pub fn envelope(&self) -> fb::Envelope<'_> {
        // SAFETY: `parse` ran the flatbuffers verifier over these exact bytes, which are
        // immutable (`Bytes`) for the life of the message.
        unsafe { flatbuffers::root_unchecked::<fb::Envelope>(&self.frame.envelope) }
    }

    /// The raw payload (object bytes, or a nested flatbuffer the reader verifies).
    pub fn payload(&self) -> &Bytes {
        &self.frame.payload
    }

    /// The request id (0: a one-way request).
    pub fn request_id(&self) -> u64 {
        self.request_id
    }
}

/// Reads frames from one side of a connection.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl<R: AsyncReadRent> FrameReader<R> {
    /// A reader over `io`.
    pub fn new(io: R) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(),
        }
    }

    /// A reader over `io` that accepts only handshake-sized frames until
    /// [`FrameReader::handshake_done`].
    pub fn for_handshake(io: R) -> Self {
        let mut reader = Self::new(io);
        reader.decoder.limit_frames_to(HANDSHAKE_FRAME_BYTES_MAX);
        reader
    }

    /// Accepts frames of any size within the bounds from now on.
    pub fn handshake_done(&mut self) {
        self.decoder = FrameDecoder::new();
    }

    /// The next verified frame; None at a clean end of stream (between frames). Waits as long
    /// as needed for a frame to start, at most [`FRAME_TIME_MAX`] for a started one to finish.
    pub async fn next(&mut self) -> Result<Option<Frame>, WireError> {
        let mut started: Option<Instant> = None;
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if !self.buf.is_empty() && started.is_none() {
                started = Some(Instant::now());
            }
            self.buf.reserve(READ_CHUNK_BYTES);
            let (len, capacity) = (self.buf.len(), self.buf.capacity());
            let into = std::mem::take(&mut self.buf).slice_mut(len..capacity);
            let (result, into) = match started {
                None => self.io.read(into).await,
                Some(at) => {
                    let left = FRAME_TIME_MAX.saturating_sub(at.elapsed());
                    match monoio::time::timeout(left, self.io.read(into)).await {
                        Ok(read) => read,
                        Err(_) => return Err(WireError::timed_out("a frame", FRAME_TIME_MAX)),
                    }
                }
            };
            self.buf = into.into_inner();
            match result {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err(WireError::Closed),
                Ok(_) => {}
                Err(e) => return Err(WireError::io("read", &e)),
            }
        }
    }
}

/// Frames waiting to be written on one connection, gathered while a write is in flight.
#[derive(Default)]
pub struct Outbox {
    /// Buffers to write in order, before `batch`.
    ready: RefCell<VecDeque<Bytes>>,
    /// Small frames gathered since the last write.
    batch: RefCell<BytesMut>,
    writer: Cell<Option<Waker>>,
    closed: Cell<bool>,
    /// Bytes queued and not yet written.
    queued: Cell<usize>,
    /// Tasks waiting for `queued` to drop below a bound.
    drained: RefCell<Vec<Waker>>,
}

impl Outbox {
    /// Waits until fewer than `bytes` are queued (or the outbox is closed).
    pub async fn below(&self, bytes: usize) {
        std::future::poll_fn(|cx| {
            if self.queued.get() < bytes || self.closed.get() {
                Poll::Ready(())
            } else {
                self.drained.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Queues `frame` for writing.
    pub fn push(&self, frame: &Frame) -> Result<(), WireError> {
        if self.closed.get() {
            return Err(WireError::Closed);
        }
        let mut batch = self.batch.borrow_mut();
        let before = batch.len();
        frame.encode_head(&mut batch)?;
        let bytes = batch.len() - before + frame.payload.len();
        self.queued.set(self.queued.get() + bytes);
        if frame.payload.len() >= PAYLOAD_COPY_BYTES_MAX {
            let mut ready = self.ready.borrow_mut();
            ready.push_back(batch.split().freeze());
            ready.push_back(frame.payload.clone());
        } else {
            batch.extend_from_slice(&frame.payload);
        }
        if let Some(writer) = self.writer.take() {
            writer.wake();
        }
        Ok(())
    }

    /// Stops the writer once what is queued is written; later pushes fail.
    pub fn close(&self) {
        self.closed.set(true);
        if let Some(writer) = self.writer.take() {
            writer.wake();
        }
        for waiter in self.drained.borrow_mut().drain(..) {
            waiter.wake();
        }
    }

    /// Whether the outbox was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// The next bytes to write; None once closed and empty.
    async fn next_write(&self) -> Option<Bytes> {
        std::future::poll_fn(|cx| {
            if let Some(bytes) = self.ready.borrow_mut().pop_front() {
                return Poll::Ready(Some(bytes));
            }
            let mut batch = self.batch.borrow_mut();
            if !batch.is_empty() {
                return Poll::Ready(Some(batch.split().freeze()));
            }
            if self.closed.get() {
                return Poll::Ready(None);
            }
            self.writer.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Writes what is queued to `io` until the outbox is closed or a write fails (which
    /// closes it), then shuts the write side down.
    pub async fn write_to<W: AsyncWriteRent>(&self, mut io: W) {
        while let Some(bytes) = self.next_write().await {
            let len = bytes.len();
            match monoio::time::timeout(FRAME_TIME_MAX, io.write_all(bytes)).await {
                Ok((Ok(_), _)) => {
                    self.queued.set(self.queued.get().saturating_sub(len));
                    for waiter in self.drained.borrow_mut().drain(..) {
                        waiter.wake();
                    }
                }
                Ok((Err(e), _)) => {
                    tracing::debug!(error = %e, "node connection write failed");
                    break;
                }
                Err(_) => {
                    tracing::warn!(
                        "a node connection write took longer than {FRAME_TIME_MAX:?}: closing it"
                    );
                    break;
                }
            }
        }
        self.close();
        let _ = io.shutdown().await;
    }
}

/// A bound on something in flight (requests, bytes), awaited when full. `!Send`.
pub struct Budget {
    used: Cell<usize>,
    max: usize,
    waiters: RefCell<Vec<Waker>>,
}

impl Budget {
    /// A budget of `max` units.
    pub fn new(max: usize) -> Rc<Self> {
        Rc::new(Self {
            used: Cell::new(0),
            max,
            waiters: RefCell::new(Vec::new()),
        })
    }

    /// Units in use.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Waits until `units` fit (or nothing else is in use: one oversized holder may pass
    /// alone) and takes them until the returned grant is dropped.
    pub async fn acquire(self: &Rc<Self>, units: usize) -> Grant {
        std::future::poll_fn(|cx| {
            let used = self.used.get();
            if used == 0 || used + units <= self.max {
                self.used.set(used + units);
                Poll::Ready(Grant {
                    budget: self.clone(),
                    units,
                })
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

/// Units taken from a [`Budget`]; given back when dropped.
pub struct Grant {
    budget: Rc<Budget>,
    units: usize,
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget.used.set(self.budget.used.get() - self.units);
        // Every waiter re-checks: waking all cannot lose a wake-up to a cancelled waiter.
        for waker in self.budget.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

/// Sends one handshake message as a frame's envelope.
async fn send_handshake<W: AsyncWriteRent>(
    writer: &mut W,
    message: Bytes,
) -> Result<(), WireError> {
    let mut out = BytesMut::new();
    Frame {
        envelope: message,
        payload: Bytes::new(),
    }
    .encode(&mut out)?;
    let (result, _) = writer.write_all(out.freeze()).await;
    result.map_err(|e| WireError::io("write", &e))?;
    Ok(())
}

/// Reads one handshake message (a frame's envelope) from `reader`.
async fn read_handshake<R: AsyncReadRent>(reader: &mut FrameReader<R>) -> Result<Bytes, WireError> {
    match reader.next().await? {
        Some(frame) if frame.payload.is_empty() => Ok(frame.envelope),
        Some(_) => Err(HandshakeError::Malformed("a handshake frame with a payload").into()),
        None => Err(WireError::Closed),
    }
}

/// The calling side's handshake, bounded by [`HANDSHAKE_TIMEOUT`]; the agreed version. The
/// same reader then reads the answers (bytes it buffered are never lost).
pub async fn client_handshake<R: AsyncReadRent, W: AsyncWriteRent>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    auth: &ClusterAuth,
) -> Result<u16, WireError> {
    let exchange = async {
        let (state, hello) = ClientHandshake::start(auth.secret.clone(), auth.cluster);
        send_handshake(writer, hello).await?;
        let challenge = read_handshake(reader).await?;
        let (version, proof) = state.on_challenge(&challenge)?;
        send_handshake(writer, proof).await?;
        Ok(version)
    };
    monoio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(WireError::timed_out(
            "the handshake",
            HANDSHAKE_TIMEOUT,
        )))
}

/// The accepting side's handshake, bounded by [`HANDSHAKE_TIMEOUT`]; the agreed version. The
/// same reader then reads the requests (a client may send them right behind its proof).
pub async fn server_handshake<R: AsyncReadRent, W: AsyncWriteRent>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    auth: &ClusterAuth,
) -> Result<u16, WireError> {
    let exchange = async {
        let hello = read_handshake(reader).await?;
        let (state, challenge) =
            match ServerHandshake::on_hello(auth.secret.clone(), auth.cluster, &hello) {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Best effort: the client learns why before the connection closes.
                    let _ = send_handshake(writer, crate::handshake::refusal(&e)).await;
                    return Err(e.into());
                }
            };
        send_handshake(writer, challenge).await?;
        let proof = read_handshake(reader).await?;
        Ok(state.on_proof(&proof)?)
    };
    monoio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(WireError::timed_out(
            "the handshake",
            HANDSHAKE_TIMEOUT,
        )))
}

/// Serves one accepted connection: the handshake, then each request as its own task through
/// `handler` (which returns the answer frame, or None for a one-way request), at most
/// [`REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX`] at once. A bad frame, a failed handshake or a
/// peer that stalls mid-frame closes the connection with one log line. Returns when the
/// connection is closed.
pub async fn serve_connection<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    auth: &ClusterAuth,
    handler: H,
) where
    H: Fn(Message) -> F,
    F: Future<Output = Option<Frame>> + 'static,
{
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::for_handshake(read);
    if let Err(e) = server_handshake(&mut reader, &mut write, auth).await {
        tracing::warn!(%peer, error = %e, "refused a node connection");
        return;
    }
    reader.handshake_done();
    let outbox = Rc::new(Outbox::default());
    let writer = {
        let outbox = outbox.clone();
        monoio::spawn(async move { outbox.write_to(write).await })
    };
    let slots = Budget::new(REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX);
    loop {
        let slot = slots.acquire(1).await;
        let message = match reader
            .next()
            .await
            .and_then(|f| f.map(Message::parse).transpose())
        {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing a node connection");
                break;
            }
        };
        let answer = handler(message);
        let outbox = outbox.clone();
        monoio::spawn(async move {
            if let Some(frame) = answer.await
                && let Err(e) = outbox.push(&frame)
            {
                tracing::debug!(error = %e, "an answer could not be queued");
            }
            drop(slot);
        });
    }
    outbox.close();
    let _ = writer.await;
}

/// A request waiting for its answer.
type Waiting = oneshot::Sender<Result<Message, WireError>>;

/// The state a connection's calls and its reader task share.
struct Calls {
    waiting: RefCell<HashMap<u64, Waiting>>,
    outbox: Rc<Outbox>,
    /// Dropped to stop the reader task.
    stop_reader: RefCell<Option<oneshot::Sender<()>>>,
}

impl Calls {
    /// Closes the connection: the writer stops, the reader stops, every waiting call fails.
    fn close(&self, why: &WireError) {
        self.outbox.close();
        self.stop_reader.borrow_mut().take();
        for (_, waiting) in self.waiting.borrow_mut().drain() {
            let _ = waiting.send(Err(why.clone()));
        }
    }
}

/// The calling side of one connection. `!Send`; dropping it closes the connection.
pub struct ClientConnection {
    calls: Rc<Calls>,
    next_id: Cell<u64>,
    slots: Rc<Budget>,
    peer: SocketAddr,
}

impl ClientConnection {
    /// Connects to `peer` within `connect_timeout` and runs the handshake.
    pub async fn connect(
        peer: SocketAddr,
        auth: &ClusterAuth,
        connect_timeout: Duration,
    ) -> Result<Self, WireError> {
        let stream = match monoio::time::timeout(connect_timeout, TcpStream::connect(peer)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(WireError::io("connect", &e)),
            Err(_) => return Err(WireError::timed_out("connecting", connect_timeout)),
        };
        let _ = stream.set_nodelay(true);
        let (read, mut write) = stream.into_split();
        let mut reader = FrameReader::for_handshake(read);
        client_handshake(&mut reader, &mut write, auth).await?;
        reader.handshake_done();
        let (stop_reader, stopped) = oneshot::channel();
        let calls = Rc::new(Calls {
            waiting: RefCell::new(HashMap::new()),
            outbox: Rc::new(Outbox::default()),
            stop_reader: RefCell::new(Some(stop_reader)),
        });
        let outbox = calls.outbox.clone();
        monoio::spawn(async move { outbox.write_to(write).await });
        let reader_calls = calls.clone();
        monoio::spawn(async move { read_answers(reader_calls, reader, stopped, peer).await });
        Ok(Self {
            calls,
            next_id: Cell::new(1),
            slots: Budget::new(REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX),
            peer,
        })
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connection is closed (calls on it fail at once).
    pub fn is_closed(&self) -> bool {
        self.calls.outbox.is_closed()
    }

    /// Closes the connection; calls waiting on it fail with `why`.
    pub fn close(&self, why: &WireError) {
        self.calls.close(why);
    }

    /// Sends the frame `build` makes for a fresh request id and waits, at most `deadline` from
    /// when it is queued, for its answer. A call that times out closes the connection (the
    /// peer is hung or gone).
    pub async fn call(
        &self,
        build: impl FnOnce(u64) -> Frame,
        deadline: Duration,
    ) -> Result<Message, WireError> {
        let _slot = match monoio::time::timeout(deadline, self.slots.acquire(1)).await {
            Ok(slot) => slot,
            Err(_) => {
                return Err(WireError::Busy {
                    what: "requests in flight on the connection",
                });
            }
        };
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (waiting, answer) = oneshot::channel();
        self.calls.waiting.borrow_mut().insert(id, waiting);
        let _forget = ForgetOnDrop {
            calls: &self.calls,
            id,
        };
        self.calls.outbox.push(&build(id))?;
        // The deadline runs from the moment the request is queued: time spent waiting on
        // this node never counts against the peer.
        match monoio::time::timeout(deadline, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(WireError::Closed),
            Err(_) => {
                let why = WireError::timed_out("a request", deadline);
                self.close(&why);
                Err(why)
            }
        }
    }

    /// Sends a one-way request (request id 0: no answer comes back).
    pub fn post(&self, frame: &Frame) -> Result<(), WireError> {
        self.calls.outbox.push(frame)
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        self.calls.close(&WireError::Closed);
    }
}

/// Removes a call's entry when the call ends in any way (answered, failed, cancelled).
struct ForgetOnDrop<'a> {
    calls: &'a Calls,
    id: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.calls.waiting.borrow_mut().remove(&self.id);
    }
}

/// The reader task of a calling connection: hands each answer to its call until the
/// connection fails or is closed.
async fn read_answers<R: AsyncReadRent>(
    calls: Rc<Calls>,
    mut reader: FrameReader<R>,
    mut stopped: oneshot::Receiver<()>,
    peer: SocketAddr,
) {
    let why = loop {
        let next = match select(pin!(reader.next()), &mut stopped).await {
            Either::Left((next, _)) => next,
            Either::Right(_) => break WireError::Closed,
        };
        let message = match next.and_then(|f| f.map(Message::parse).transpose()) {
            Ok(Some(message)) => message,
            Ok(None) => break WireError::Closed,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing a node connection");
                break e;
            }
        };
        // An answer to a call that went away (timed out, cancelled) is dropped.
        let waiting = calls.waiting.borrow_mut().remove(&message.request_id());
        if let Some(waiting) = waiting {
            let _ = waiting.send(Ok(message));
        }
    };
    calls.close(&why);
}
