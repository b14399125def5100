//! HTTP listeners of one core: SO_REUSEPORT binding, the accept loop, hyper http1 connections
//! (keep-alive, TCP_NODELAY, header limits) and their graceful shutdown.
//!
//! Every listener and connection registers in its core's [`ConnectionHub`]; on shutdown the hub
//! tells each to stop (listeners stop accepting, connections finish the request in flight and
//! close) and the node waits, bounded, until the hub is empty.
//!
//! Overload: a core serves at most `connections_per_core_max` connections (`balance` places a
//! connection on a core with room). A connection accepted while every core is full is not reset:
//! it is answered once with the listener's [`OverloadAnswer`] (`503`, `Connection: close`), and
//! the request bytes it sent are read and dropped before the close (a "lingering close": closing
//! a socket with unread input makes the kernel send a reset, which can destroy the answer before
//! the client reads it). At most [`REFUSALS_PER_CORE_MAX`] such answers are in flight per core,
//! each bounded by [`REFUSAL_TIME_MAX`] and [`LINGER_BYTES_MAX`]; beyond that a connection is
//! closed at once.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::os::fd::{AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use monoio::io::IntoPollIo;
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use send_wrapper::SendWrapper;

use crate::balance::{ConnectionBalancer, Handoff};
use crate::node::NodeShared;
use crate::{Shard, ShardError};

/// Longest time a client may take to send a request's headers (also closes idle keep-alive
/// connections after this long).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head (request line + headers) in bytes; larger gets 431 from hyper.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most headers in one request; more gets 431 from hyper.
pub const MAX_HEADERS: usize = 128;
/// Pending connections the kernel queues per listener.
pub const LISTEN_BACKLOG: i32 = 1024;
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Overload answers in flight per core; a connection over the cap beyond these is closed at once.
pub const REFUSALS_PER_CORE_MAX: usize = 64;
/// Longest an overload answer may take, from accept to close (request head, answer, linger).
pub const REFUSAL_TIME_MAX: Duration = Duration::from_secs(5);
/// Most request bytes read and dropped after an overload answer before the connection closes.
pub const LINGER_BYTES_MAX: usize = 1024 * 1024;
/// Read buffer of a lingering close.
const LINGER_BUFFER_BYTES: usize = 8 * 1024;

/// What a listener answers a connection accepted while every core of the node serves
/// `connections_per_core_max` connections: `503 Service Unavailable` with this body, then close.
#[derive(Clone, Copy, Debug)]
pub struct OverloadAnswer {
    /// The `Content-Type` of `body`.
    pub content_type: &'static str,
    /// The response body (e.g. S3's `SlowDown` error document).
    pub body: &'static str,
}

impl OverloadAnswer {
    /// The response: 503, `Connection: close`, the body.
    fn response(self) -> http::Response<String> {
        let mut resp = http::Response::new(self.body.to_owned());
        *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(self.content_type),
        );
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        resp
    }
}

/// Listeners and connections alive on one core, each with a stop signal.
#[derive(Default)]
pub(crate) struct ConnectionHub {
    next_id: Cell<u64>,
    stopping: Cell<bool>,
    /// Stop signal per live registration (taken when sent; the entry stays until the task ends).
    live: RefCell<HashMap<u64, Option<oneshot::Sender<()>>>>,
    /// Listeners bound on this core so far (the ordinal of the next `serve_http` call).
    listeners_bound: Cell<usize>,
    /// Overload answers in flight on this core (at most [`REFUSALS_PER_CORE_MAX`]).
    refusals: Cell<usize>,
}

impl ConnectionHub {
    /// Whether the core is stopping (its listeners and connections were told to).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Registers a listener or connection; None once the core is stopping.
    fn register(&self) -> Option<(u64, oneshot::Receiver<()>)> {
        if self.stopping.get() {
            return None;
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (stop, stopped) = oneshot::channel();
        self.live.borrow_mut().insert(id, Some(stop));
        Some((id, stopped))
    }

    /// Tells every listener and connection to stop; refuses new ones from now on.
    pub(crate) fn stop_all(&self) {
        self.stopping.set(true);
        let stops: Vec<_> = self
            .live
            .borrow_mut()
            .values_mut()
            .filter_map(Option::take)
            .collect();
        for stop in stops {
            // A task that already ended has dropped its receiver: nothing to tell it.
            let _ = stop.send(());
        }
    }

    /// Listeners and connections still running.
    pub(crate) fn live_count(&self) -> usize {
        self.live.borrow().len()
    }
}

/// Removes a registration from the hub when its task ends.
struct Registration {
    shard: Shard,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shard
            .core
            .connections
            .live
            .borrow_mut()
            .remove(&self.id);
    }
}

/// The address of the client a request came from, in every served request's extensions (for
/// access logs and source-address conditions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// A connection's service: tags each request with the connection's peer, then serves it.
struct PeerTagged<S> {
    inner: S,
    peer: PeerAddr,
}

impl<S, B> hyper::service::Service<http::Request<B>> for PeerTagged<S>
where
    S: hyper::service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        self.inner.call(request)
    }
}

/// Binds `addr` with SO_REUSEPORT on the current core, sets TCP_NODELAY on accepted connections and
/// serves each with hyper http1 (keep-alive) until shutdown; in-flight requests finish on shutdown.
/// A connection accepted while another core serves fewer connections is moved there (see
/// `balance`), through this listener's inbox on that core; one accepted while every core serves
/// `connections_per_core_max` gets `overload` (see the module docs).
///
/// Every core of a node binds the same address; with port 0 the first core's ephemeral port is
/// reused by the others (cores run `init_core` one after another). The first bind of an address
/// in the node checks that no other process listens there, so "address in use" is reported
/// instead of silently sharing a port with another SO_REUSEPORT user.
pub fn serve_http<S, B>(
    shard: &Shard,
    addr: SocketAddr,
    service: S,
    overload: OverloadAnswer,
) -> Result<(), ShardError>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let ordinal = shard.core.connections.listeners_bound.get();
    let listener = bind(shard, addr)?;
    let hub = &shard.core.connections;
    let (Some((id, mut stop)), Some((inbox_id, mut inbox_stop))) = (hub.register(), hub.register())
    else {
        return Err(ShardError::ShuttingDown);
    };
    let registration = Registration {
        shard: shard.clone(),
        id,
    };
    let inbox_registration = Registration {
        shard: shard.clone(),
        id: inbox_id,
    };
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(MonoioTimer)
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    let mut refusal_builder = http1::Builder::new();
    refusal_builder
        .keep_alive(false)
        .timer(MonoioTimer)
        .header_read_timeout(REFUSAL_TIME_MAX)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    let server = Rc::new(ConnectionServer {
        shard: shard.clone(),
        builder,
        service,
        refusal_builder,
        overload,
    });
    let core = shard.core.id;
    let mut inbox = shard.core.node.balancer.register_inbox(ordinal, core);
    let inbox_server = server.clone();
    monoio::spawn(async move {
        let _registration = inbox_registration;
        loop {
            let handoff = match select(inbox.next(), &mut inbox_stop).await {
                Either::Left((Some(handoff), _)) => handoff,
                _ => break,
            };
            // The sending core already counted the connection on this core.
            let slot = ConnectionSlot::counted(&inbox_server.shard);
            match TcpStream::from_std(std::net::TcpStream::from(handoff.fd)) {
                Ok(stream) => inbox_server.spawn(stream, handoff.peer, slot),
                Err(e) => {
                    tracing::warn!(peer = %handoff.peer, error = %e, "cannot adopt a connection from another core");
                }
            }
        }
    });
    monoio::spawn(async move {
        loop {
            let accepted = match select(pin!(listener.accept()), &mut stop).await {
                Either::Left((accepted, _)) => accepted,
                Either::Right(_) => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let balancer = &server.shard.core.node.balancer;
                    let Some(target) = balancer.place(core) else {
                        server.refuse(stream, peer);
                        continue;
                    };
                    let stream = if target == core {
                        stream
                    } else {
                        match hand_off(balancer, ordinal, target, stream, peer) {
                            None => continue,
                            Some(stream) => {
                                balancer.closed(target);
                                balancer.opened(core);
                                stream
                            }
                        }
                    };
                    let slot = ConnectionSlot::counted(&server.shard);
                    server.spawn(stream, peer, slot);
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "accept failed");
                    monoio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
        drop(registration);
    });
    Ok(())
}

/// Moves an accepted connection to `target`'s inbox of listener `ordinal`. Gives the stream back
/// when that fails (the caller serves it here); releases `target`'s count if it was lost.
fn hand_off(
    balancer: &ConnectionBalancer,
    ordinal: usize,
    target: usize,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TcpStream> {
    // SAFETY: `stream` owns this descriptor and outlives the borrow, which ends with the dup.
    let dup = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }.try_clone_to_owned();
    let fd = match dup {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "cannot duplicate a connection for another core");
            return Some(stream);
        }
    };
    drop(stream);
    let back = balancer
        .hand_off(ordinal, target, Handoff { fd, peer })
        .err()?;
    match TcpStream::from_std(std::net::TcpStream::from(back.fd)) {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "lost a connection while moving it between cores");
            balancer.closed(target);
            None
        }
    }
}

/// Counts a connection on its core while it lives (released on drop).
struct ConnectionSlot {
    node: Arc<NodeShared>,
    core: usize,
}

impl ConnectionSlot {
    /// A slot for a connection already counted on `shard`'s core.
    fn counted(shard: &Shard) -> Self {
        Self {
            node: shard.core.node.clone(),
            core: shard.core.id,
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.node.balancer.closed(self.core);
    }
}

/// What a listener needs to serve a connection on its core.
struct ConnectionServer<S> {
    shard: Shard,
    builder: http1::Builder,
    service: S,
    /// hyper settings of overload answers (no keep-alive, short head timeout).
    refusal_builder: http1::Builder,
    overload: OverloadAnswer,
}

/// Counts an overload answer in flight on its core (released on drop).
struct RefusalSlot {
    shard: Shard,
}

impl RefusalSlot {
    /// Takes a slot on `shard`'s core; `None` when [`REFUSALS_PER_CORE_MAX`] are in flight.
    fn take(shard: &Shard) -> Option<Self> {
        let refusals = &shard.core.connections.refusals;
        if refusals.get() >= REFUSALS_PER_CORE_MAX {
            return None;
        }
        refusals.set(refusals.get() + 1);
        Some(Self {
            shard: shard.clone(),
        })
    }
}

impl Drop for RefusalSlot {
    fn drop(&mut self) {
        let refusals = &self.shard.core.connections.refusals;
        refusals.set(refusals.get().saturating_sub(1));
    }
}

impl<S, B> ConnectionServer<S>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Serves one connection on this core until it closes or the core stops.
    fn spawn(&self, stream: TcpStream, peer: SocketAddr, slot: ConnectionSlot) {
        let Some((conn_id, conn_stop)) = self.shard.core.connections.register() else {
            return;
        };
        let conn_registration = Registration {
            shard: self.shard.clone(),
            id: conn_id,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let io = match stream.into_poll_io() {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot switch connection to poll mode");
                return;
            }
        };
        let service = PeerTagged {
            inner: self.service.clone(),
            peer: PeerAddr(peer),
        };
        let connection = self.builder.serve_connection(io, service);
        monoio::spawn(async move {
            let _registration = conn_registration;
            let _slot = slot;
            let mut connection = pin!(connection);
            let result = match select(connection.as_mut(), conn_stop).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

impl<S> ConnectionServer<S> {
    /// Answers a connection accepted while every core is full with the overload answer, then
    /// closes it after a lingering read (see the module docs); closes it at once when
    /// [`REFUSALS_PER_CORE_MAX`] answers are already in flight on this core.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr) {
        let Some(slot) = RefusalSlot::take(&self.shard) else {
            tracing::warn!(%peer, "connection limit reached and too many overload answers in flight; closing");
            return;
        };
        let Some((id, stop)) = self.shard.core.connections.register() else {
            return;
        };
        let registration = Registration {
            shard: self.shard.clone(),
            id,
        };
        tracing::debug!(%peer, "connection limit reached; answering 503");
        let io = match stream.into_poll_io() {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot switch connection to poll mode");
                return;
            }
        };
        let overload = self.overload;
        let service = hyper::service::service_fn(move |_request| {
            std::future::ready(Ok::<_, std::convert::Infallible>(overload.response()))
        });
        let answered = self
            .refusal_builder
            .serve_connection(io, service)
            .without_shutdown();
        monoio::spawn(async move {
            let _registration = registration;
            let _slot = slot;
            let refusal = async move {
                let parts = answered.await?;
                linger(parts.io.into_inner()).await;
                Ok::<_, hyper::Error>(())
            };
            let bounded = monoio::time::timeout(REFUSAL_TIME_MAX, refusal);
            if let Either::Left((Ok(Err(e)), _)) = select(pin!(bounded), stop).await {
                tracing::debug!(%peer, error = %e, "overload answer failed");
            }
        });
    }
}

/// The lingering close after an overload answer: stops writing (the client sees the end of the
/// answer), then reads and drops what the client still sends until it closes, at most
/// [`LINGER_BYTES_MAX`] bytes (the caller bounds the time). Closing with unread input would make
/// the kernel reset the connection, which can destroy the answer before the client reads it.
async fn linger(mut io: monoio::net::tcp::stream_poll::TcpStreamPoll) {
    use monoio::io::poll_io::{AsyncRead, AsyncWrite, ReadBuf};
    if std::future::poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx))
        .await
        .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; LINGER_BUFFER_BYTES];
    let mut dropped = 0;
    while dropped < LINGER_BYTES_MAX {
        let mut read = ReadBuf::new(&mut buf);
        match std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut read)).await {
            Ok(()) if !read.filled().is_empty() => dropped += read.filled().len(),
            // The client closed (or the connection failed): nothing more to wait for.
            _ => return,
        }
    }
}

/// Binds the listener of `addr` on this core (see [`serve_http`] for port 0 and the in-use check).
fn bind(shard: &Shard, addr: SocketAddr) -> Result<TcpListener, ShardError> {
    let node = &shard.core.node;
    let ordinal = shard.core.connections.listeners_bound.get();
    let known = node.bound_addr(ordinal, addr);
    let bind_addr = match known {
        Some(bound) => bound,
        None => {
            if addr.port() != 0 {
                // Another process on this port? std binds without SO_REUSEPORT, so it fails then.
                std::net::TcpListener::bind(addr)
                    .map_err(|error| ShardError::Bind { addr, error })?;
            }
            addr
        }
    };
    let opts = ListenerOpts::new().reuse_port(true).backlog(LISTEN_BACKLOG);
    let listener = TcpListener::bind_with_config(bind_addr, &opts)
        .map_err(|error| ShardError::Bind { addr, error })?;
    let local = listener
        .local_addr()
        .map_err(|error| ShardError::Bind { addr, error })?;
    if known.is_none() {
        node.record_bound_addr(ordinal, addr, local);
    }
    shard.core.connections.listeners_bound.set(ordinal + 1);
    tracing::debug!(core = shard.core.id, %local, "listening");
    Ok(listener)
}

/// hyper's timer on the current monoio runtime.
#[derive(Clone, Copy, Debug)]
struct MonoioTimer;

/// A monoio sleep made `Send + Sync` for hyper's `Sleep` bound. Sound: monoio never moves a task
/// to another thread, so the wrapper is only touched on the thread that created it (SendWrapper
/// checks this at run time).
struct MonoioSleep(SendWrapper<Pin<Box<monoio::time::Sleep>>>);

impl std::future::Future for MonoioSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for MonoioSleep {}

impl hyper::rt::Timer for MonoioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(MonoioSleep(SendWrapper::new(Box::pin(
            monoio::time::sleep(duration),
        ))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let deadline = monoio::time::Instant::from_std(deadline);
        Box::pin(MonoioSleep(SendWrapper::new(Box::pin(
            monoio::time::sleep_until(deadline),
        ))))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        // Re-arm the existing timer instead of allocating a new one for every request.
        match sleep.as_mut().downcast_mut_pin::<MonoioSleep>() {
            Some(mut ours) => ours
                .0
                .as_mut()
                .reset(monoio::time::Instant::from_std(new_deadline)),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}
