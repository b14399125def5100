//! leofs-wire: how leofs nodes talk to each other (DESIGN §9).
//!
//! - [`frame`]: a frame is `u32 length`, `u32 crc32c`, `u32 envelope length`, the envelope and
//!   then the raw payload (object bytes travel here, never inside the envelope). Every frame is
//!   bounded ([`frame::FRAME_BYTES_MAX`], [`frame::ENVELOPE_BYTES_MAX`]) and its checksum,
//!   which covers the envelope and the payload, is verified before anything in it is used.
//! - [`fb`]: the envelope, a flatbuffers table generated from `wire/schema/storage.fbs`
//!   (`wire/schema/regen.sh` regenerates `src/generated/`; never edit those files by hand).
//! - [`handshake`]: before any request, both ends prove they hold the cluster secret with a
//!   mutual HMAC-SHA256 challenge over fresh nonces from both sides, bound to the protocol
//!   version and the cluster id.
//! - [`connection`]: a connection on a core's monoio runtime: the handshake, frames read and
//!   verified, frames written in batches, many requests in flight matched by request id.
//! - [`client`]: one peer as seen from one core: connections per (shard, lane), deadlines,
//!   reconnection with back-off, a cap on in-flight bytes.
//!
//! What the handshake protects: a peer that does not hold the cluster secret cannot complete
//! it; a recorded handshake cannot be replayed (each side's proof covers the other side's fresh
//! nonce); two clusters (different cluster ids) never talk by mistake; the two ends agree on
//! one protocol version, and a node speaks with peers one version older (rolling upgrades).
//! What it does not protect: frames after the handshake are neither signed nor encrypted. The
//! cluster network is trusted (anyone on it can read object bytes and inject frames into an
//! open connection) until TLS between nodes exists. The frame checksum detects corruption, not
//! tampering; object bodies also carry an xxh3 from the sending node that storage verifies
//! before it acknowledges.

pub mod client;
pub mod connection;
pub mod frame;
pub mod handshake;
pub mod ring;

#[allow(clippy::all, unsafe_op_in_unsafe_fn, unused_imports, missing_docs, dead_code)]
#[rustfmt::skip]
mod generated;

/// The flatbuffers types of the envelope (generated; see `wire/schema/storage.fbs`).
pub mod fb {
    pub use crate::generated::leofs::wire::fb::*;
}

pub use client::{Lane, Peer};
pub use connection::{ClusterAuth, Message, WireError};
pub use flatbuffers;
pub use frame::{Frame, FrameDecoder, FrameError};
pub use handshake::{
    ClusterId, ClusterSecret, HandshakeError, PROTOCOL_VERSION, PROTOCOL_VERSION_OLDEST,
};
pub use ring::{moving_ring_checksum, ring_checksum};
