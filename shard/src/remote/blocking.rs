//! A blocking client of one peer (std sockets, one request at a time) for threads that are not
//! core threads: joining a cluster at start-up and the catalog thread of a node without the
//! manager role. The data path never uses it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use leofs_wire::handshake::ClientHandshake;
use leofs_wire::{ClusterAuth, Frame, FrameDecoder, Message, WireError};

use super::codec::{
    self, CatalogChange, CatalogRefusal, CatalogSnapshot, ClusterRing, Expect, NodeAnswer,
    NodeRequest,
};
use crate::ShardError;

/// Bytes a read asks for.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// One measure of a peer's clock (see [`BlockingPeer::clock_sample`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// This node's clock minus the peer's, in µs.
    pub offset_us: i64,
    /// The round trip it was measured over, in µs: the measure is within half of it.
    pub round_trip_us: u64,
}

/// One peer, reached over a connection opened on first use and again after a failure.
pub struct BlockingPeer {
    addr: SocketAddr,
    auth: ClusterAuth,
    timeout: Duration,
    connection: Option<(TcpStream, BytesMut)>,
    next_id: u64,
}

fn io(op: &'static str, e: &std::io::Error) -> ShardError {
    ShardError::Wire(WireError::Io {
        op,
        message: e.to_string(),
    })
}

impl BlockingPeer {
    /// A peer at `addr` (its shard 0); every connect, read and write is bounded by `timeout`.
    pub fn new(addr: SocketAddr, auth: ClusterAuth, timeout: Duration) -> Self {
        Self {
            addr,
            auth,
            timeout,
            connection: None,
            next_id: 1,
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The ring and its nodes' addresses.
    pub fn fetch_ring(&mut self) -> Result<ClusterRing, ShardError> {
        match self.call(&NodeRequest::FetchRing, Expect::Ring)? {
            NodeAnswer::Ring(ring) => Ok(ring),
            other => Err(unexpected(&other)),
        }
    }

    /// The catalog, unless `known_version` is current.
    pub fn fetch_catalog(
        &mut self,
        known_version: u64,
    ) -> Result<Result<CatalogSnapshot, CatalogRefusal>, ShardError> {
        match self.call(
            &NodeRequest::FetchCatalog { known_version },
            Expect::Catalog,
        )? {
            NodeAnswer::Catalog(snapshot) => Ok(Ok(snapshot)),
            NodeAnswer::CatalogRefused(refusal) => Ok(Err(refusal)),
            other => Err(unexpected(&other)),
        }
    }

    /// Makes a catalog change on the peer's manager.
    pub fn change_catalog(
        &mut self,
        change: CatalogChange,
    ) -> Result<Result<(), CatalogRefusal>, ShardError> {
        match self.call(&NodeRequest::Catalog(change), Expect::CatalogChange)? {
            NodeAnswer::CatalogChanged => Ok(Ok(())),
            NodeAnswer::CatalogRefused(refusal) => Ok(Err(refusal)),
            other => Err(unexpected(&other)),
        }
    }

    /// A call between managers (see `leofs_manager::raft::network`): the answer's bytes.
    pub fn raft(&mut self, call: u8, body: Bytes) -> Result<Bytes, ShardError> {
        match self.call(&NodeRequest::Raft { call, body }, Expect::Raft)? {
            NodeAnswer::Raft(bytes) => Ok(bytes),
            other => Err(unexpected(&other)),
        }
    }

    /// One measure of this node's clock minus the peer's, from a round trip: the peer's
    /// clock is taken to be read halfway through (the error is at most half the round trip).
    pub fn clock_sample(&mut self) -> Result<ClockSample, ShardError> {
        // Connected first: the round trip timed is the request's alone.
        if let Err(e) = self.connection() {
            self.connection = None;
            return Err(e);
        }
        let sent_us = leofs_engine::wall_us();
        let started = std::time::Instant::now();
        let peer_us = match self.call(&NodeRequest::ReadClock, Expect::Clock)? {
            NodeAnswer::Clock(unix_us) => unix_us,
            other => return Err(unexpected(&other)),
        };
        let round_trip_us = started.elapsed().as_micros() as u64;
        let halfway = sent_us.saturating_add(round_trip_us / 2);
        Ok(ClockSample {
            offset_us: halfway as i64 - peer_us as i64,
            round_trip_us,
        })
    }

    /// Sends one request and reads its answer; a failed connection is dropped (the next call
    /// opens a new one).
    fn call(&mut self, request: &NodeRequest, expect: Expect) -> Result<NodeAnswer, ShardError> {
        let result = self.exchange(request);
        if result.is_err() {
            self.connection = None;
        }
        codec::decode_answer(&result?, expect)
    }

    fn exchange(&mut self, request: &NodeRequest) -> Result<Message, ShardError> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = codec::encode_request(id, 0, request);
        let (stream, buf) = self.connection()?;
        write_frame(stream, &frame)?;
        let message = Message::parse(read_frame(stream, buf)?)?;
        // One call at a time, and a failed call drops its connection: any other id is a
        // peer bug.
        if message.request_id() != id {
            return Err(ShardError::BadAnswer(format!(
                "answer to request {} while waiting for {id}",
                message.request_id()
            )));
        }
        Ok(message)
    }

    fn connection(&mut self) -> Result<&mut (TcpStream, BytesMut), ShardError> {
        if self.connection.is_none() {
            let mut stream = TcpStream::connect_timeout(&self.addr, self.timeout)
                .map_err(|e| io("connect", &e))?;
            stream
                .set_read_timeout(Some(self.timeout))
                .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
                .and_then(|()| stream.set_nodelay(true))
                .map_err(|e| io("configure socket", &e))?;
            let mut buf = BytesMut::new();
            let (state, hello) =
                ClientHandshake::start(self.auth.secret.clone(), self.auth.cluster);
            write_frame(&mut stream, &handshake_frame(hello))?;
            let challenge = read_frame(&mut stream, &mut buf)?;
            let (_, proof) = state
                .on_challenge(&challenge.envelope)
                .map_err(WireError::from)?;
            write_frame(&mut stream, &handshake_frame(proof))?;
            self.connection = Some((stream, buf));
        }
        self.connection
            .as_mut()
            .ok_or_else(|| ShardError::BadAnswer("no connection".into()))
    }
}

fn handshake_frame(message: Bytes) -> Frame {
    Frame {
        envelope: message,
        payload: Bytes::new(),
    }
}

fn unexpected(answer: &NodeAnswer) -> ShardError {
    ShardError::BadAnswer(format!("unexpected answer {answer:?}"))
}

fn write_frame(stream: &mut TcpStream, frame: &Frame) -> Result<(), ShardError> {
    let mut out = BytesMut::new();
    frame.encode(&mut out).map_err(WireError::from)?;
    stream.write_all(&out).map_err(|e| io("write", &e))
}

fn read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Frame, ShardError> {
    let mut decoder = FrameDecoder::new();
    loop {
        if let Some(frame) = decoder.decode(buf).map_err(WireError::from)? {
            return Ok(frame);
        }
        let start = buf.len();
        buf.resize(start + READ_CHUNK_BYTES, 0);
        let read = stream.read(&mut buf[start..]);
        match read {
            Ok(0) => {
                buf.truncate(start);
                return Err(ShardError::Wire(WireError::Closed));
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) => {
                buf.truncate(start);
                return Err(io("read", &e));
            }
        }
    }
}
