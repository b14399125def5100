//! leofs-wire: how leofs nodes talk to each other (DESIGN §9).
//!
//! - [`frame`]: a frame is `u32 length`, `u32 crc32c`, `u32 envelope length`, the envelope and
//!   then the raw payload (object bytes travel here, never inside the envelope). Every frame is
//!   bounded ([`frame::FRAME_BYTES_MAX`], [`frame::ENVELOPE_BYTES_MAX`]) and its checksum,
//!   which covers the envelope and the payload, is verified before anything in it is used.
//! - [`handshake`]: before any request, both ends prove they hold the cluster secret with a
//!   mutual HMAC-SHA256 challenge over fresh nonces from both sides, bound to the protocol
//!   version and the cluster id.
//!
//! What the handshake protects: a peer that does not hold the cluster secret cannot complete
//! it; a recorded handshake cannot be replayed (each side's proof covers the other side's fresh
//! nonce); two clusters (different cluster ids) never talk by mistake; the two ends agree on
//! one protocol version, and a node speaks with peers one version older (rolling upgrades).
//! What it does not protect: frames after the handshake are neither signed nor encrypted. The
//! cluster network is trusted (anyone on it can read object bytes and inject frames into an
//! open connection) until TLS between nodes exists. The frame checksum detects corruption, not
//! tampering.
//!
//! Still to come in this crate (issue 11): the flatbuffers envelope schemas, the connection
//! (requests in flight matched by id, batching, lanes for bulk payloads) and the client.

pub mod frame;
pub mod handshake;

pub use frame::{Frame, FrameDecoder, FrameError};
pub use handshake::{
    ClusterId, ClusterSecret, HandshakeError, PROTOCOL_VERSION, PROTOCOL_VERSION_OLDEST,
};
