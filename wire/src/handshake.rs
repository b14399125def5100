//! The mutual handshake that opens every node-to-node connection, before any request.
//!
//! ```text
//! client → server  Hello      magic, u16 oldest, u16 newest version, cluster id (16), client nonce (32)
//! server → client  Challenge  magic, u16 chosen version, cluster id, server nonce (32), server proof (32)
//! client → server  Proof      magic, client proof (32)
//! server → client  Refusal    refusal magic, u8 reason   (instead of a Challenge)
//! ```
//! A server that refuses a Hello (another cluster, no common version, a malformed message)
//! answers with a Refusal before it closes, so the client can say why instead of seeing the
//! connection close.
//! server proof = HMAC-SHA256(secret, "leofs-wire server" ‖ version ‖ cluster id ‖ client nonce ‖
//! server nonce); client proof = the same with "leofs-wire client" and the nonces swapped. Each
//! side's proof covers the nonce the other side just drew, so a recorded handshake cannot be
//! replayed against either side; the cluster id and the version are inside both proofs, so
//! neither can be changed in flight. The chosen version is the newest both ends speak; a node
//! speaks [`PROTOCOL_VERSION`] and the one before it ([`PROTOCOL_VERSION_OLDEST`]).
//!
//! These are pure state machines over byte strings (each message travels as the envelope of
//! one frame); the connection bounds the whole exchange with [`HANDSHAKE_TIMEOUT`].

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The protocol version this build speaks by preference.
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest protocol version this build still speaks (one older than its own, when there is
/// one), so that a cluster can be upgraded one node at a time.
pub const PROTOCOL_VERSION_OLDEST: u16 = if PROTOCOL_VERSION > 1 {
    PROTOCOL_VERSION - 1
} else {
    1
};
/// Longest time a connection may take to finish the handshake before it is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a cluster id.
pub const CLUSTER_ID_BYTES: usize = 16;
/// Fewest bytes a cluster secret may have.
pub const CLUSTER_SECRET_BYTES_MIN: usize = 32;
/// Marks the handshake messages of this protocol.
const MAGIC: [u8; 4] = *b"LFSW";
/// Marks a server's Refusal of a Hello.
const REFUSAL_MAGIC: [u8; 4] = *b"LFSR";
/// Bytes of a Refusal.
const REFUSAL_BYTES: usize = 5;
/// Bytes of an HMAC-SHA256 proof.
const PROOF_BYTES: usize = 32;
const HELLO_BYTES: usize = 4 + 2 + 2 + CLUSTER_ID_BYTES + NONCE_BYTES;
const CHALLENGE_BYTES: usize = 4 + 2 + CLUSTER_ID_BYTES + NONCE_BYTES + PROOF_BYTES;
const PROOF_MESSAGE_BYTES: usize = 4 + PROOF_BYTES;

/// The id of a cluster, drawn at random when its manager group is bootstrapped and kept by
/// every node that joined it; peers of different clusters refuse each other, even when they
/// were given the same secret.
///
/// A node that has not learned its cluster's id yet (its first start, joining) presents the
/// **joining id** instead ([`ClusterId::derived_from`] its secret): a peer accepts it and
/// answers with its own id, which both proofs then cover. A node with an id of its own accepts
/// only that id, or a joining node; a node still joining accepts the id of any peer that
/// proves the secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClusterId(pub [u8; CLUSTER_ID_BYTES]);

impl ClusterId {
    /// The joining id of the nodes that hold `secret`, derived from it (an HMAC of a fixed
    /// label, which reveals nothing of the secret): nodes of clusters with different secrets
    /// refuse each other before any proof is checked.
    pub fn derived_from(secret: &ClusterSecret) -> Self {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0)
            .unwrap_or_else(|_| unreachable!("HMAC-SHA256 takes keys of any length"));
        mac.update(b"leofs cluster id");
        let digest = mac.finalize().into_bytes();
        let mut id = [0u8; CLUSTER_ID_BYTES];
        id.copy_from_slice(&digest[..CLUSTER_ID_BYTES]);
        Self(id)
    }
}

/// The secret every node of a cluster holds. Its bytes never appear in `Debug` output.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    /// A secret of at least [`CLUSTER_SECRET_BYTES_MIN`] bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, HandshakeError> {
        if bytes.len() < CLUSTER_SECRET_BYTES_MIN {
            return Err(HandshakeError::SecretTooShort { bytes: bytes.len() });
        }
        Ok(Self(bytes))
    }

    /// A fresh random secret of 32 bytes.
    pub fn generate() -> Self {
        Self(rand::random::<[u8; CLUSTER_SECRET_BYTES_MIN]>().to_vec())
    }

    fn proof(
        &self,
        role: &[u8],
        version: u16,
        cluster: &ClusterId,
        nonces: [&[u8]; 2],
    ) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC-SHA256 takes keys of any length"));
        mac.update(role);
        mac.update(&version.to_le_bytes());
        mac.update(&cluster.0);
        mac.update(nonces[0]);
        mac.update(nonces[1]);
        mac
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSecret(<{} bytes>)", self.0.len())
    }
}

/// Why a handshake failed; the connection is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A message is not a handshake message of this protocol (wrong magic or length).
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    /// The peer belongs to another cluster.
    #[error("the peer belongs to another cluster")]
    WrongCluster,
    /// The server refused our Hello (the reason it gave).
    #[error("the peer refused the handshake: {0}")]
    Refused(&'static str),
    /// The two ends share no protocol version.
    #[error(
        "no common protocol version: we speak {ours_oldest}..={ours_newest}, the peer {theirs_oldest}..={theirs_newest}"
    )]
    NoCommonVersion {
        /// Oldest version we speak.
        ours_oldest: u16,
        /// Newest version we speak.
        ours_newest: u16,
        /// Oldest version the peer speaks.
        theirs_oldest: u16,
        /// Newest version the peer speaks.
        theirs_newest: u16,
    },
    /// The peer's proof is wrong: it does not hold the cluster secret, or replays an old
    /// handshake.
    #[error("the peer's proof does not match: wrong cluster secret or a replayed handshake")]
    BadProof,
    /// A cluster secret shorter than [`CLUSTER_SECRET_BYTES_MIN`].
    #[error("a cluster secret needs at least {CLUSTER_SECRET_BYTES_MIN} bytes, got {bytes}")]
    SecretTooShort {
        /// Its length.
        bytes: usize,
    },
}

fn check_magic(message: &[u8], len: usize, what: &'static str) -> Result<(), HandshakeError> {
    if message.len() != len || message[..4] != MAGIC {
        return Err(HandshakeError::Malformed(what));
    }
    Ok(())
}

fn u16_at(message: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([message[at], message[at + 1]])
}

/// The connecting side of a handshake.
pub struct ClientHandshake {
    secret: ClusterSecret,
    cluster: ClusterId,
    nonce: [u8; NONCE_BYTES],
}

impl ClientHandshake {
    /// Starts a handshake: the state to keep and the Hello to send.
    pub fn start(secret: ClusterSecret, cluster: ClusterId) -> (Self, Bytes) {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let mut hello = BytesMut::with_capacity(HELLO_BYTES);
        hello.put_slice(&MAGIC);
        hello.put_u16_le(PROTOCOL_VERSION_OLDEST);
        hello.put_u16_le(PROTOCOL_VERSION);
        hello.put_slice(&cluster.0);
        hello.put_slice(&nonce);
        (
            Self {
                secret,
                cluster,
                nonce,
            },
            hello.freeze(),
        )
    }

    /// Checks the server's Challenge; on success, the agreed version and the Proof to send.
    pub fn on_challenge(self, challenge: &[u8]) -> Result<(u16, Bytes), HandshakeError> {
        if challenge.len() == REFUSAL_BYTES && challenge[..4] == REFUSAL_MAGIC {
            return Err(HandshakeError::Refused(match challenge[4] {
                REFUSED_WRONG_CLUSTER => {
                    "we belong to another cluster, or hold another cluster secret"
                }
                REFUSED_NO_COMMON_VERSION => "we share no protocol version",
                _ => "our hello was malformed",
            }));
        }
        check_magic(challenge, CHALLENGE_BYTES, "challenge")?;
        let version = u16_at(challenge, 4);
        let cluster = &challenge[6..6 + CLUSTER_ID_BYTES];
        let server_nonce = &challenge[6 + CLUSTER_ID_BYTES..6 + CLUSTER_ID_BYTES + NONCE_BYTES];
        let server_proof = &challenge[6 + CLUSTER_ID_BYTES + NONCE_BYTES..];
        let joining = self.cluster == ClusterId::derived_from(&self.secret);
        if cluster != self.cluster.0 && !joining {
            return Err(HandshakeError::WrongCluster);
        }
        // A joining client takes the server's id; otherwise the ids are equal.
        let mut agreed = [0u8; CLUSTER_ID_BYTES];
        agreed.copy_from_slice(cluster);
        let agreed = ClusterId(agreed);
        if !(PROTOCOL_VERSION_OLDEST..=PROTOCOL_VERSION).contains(&version) {
            return Err(HandshakeError::NoCommonVersion {
                ours_oldest: PROTOCOL_VERSION_OLDEST,
                ours_newest: PROTOCOL_VERSION,
                theirs_oldest: version,
                theirs_newest: version,
            });
        }
        self.secret
            .proof(
                b"leofs-wire server",
                version,
                &agreed,
                [&self.nonce, server_nonce],
            )
            .verify_slice(server_proof)
            .map_err(|_| HandshakeError::BadProof)?;
        let proof = self
            .secret
            .proof(
                b"leofs-wire client",
                version,
                &agreed,
                [server_nonce, &self.nonce],
            )
            .finalize()
            .into_bytes();
        let mut message = BytesMut::with_capacity(PROOF_MESSAGE_BYTES);
        message.put_slice(&MAGIC);
        message.put_slice(&proof);
        Ok((version, message.freeze()))
    }
}

/// Refusal reason: the Hello's cluster id is neither the server's nor its joining id.
const REFUSED_WRONG_CLUSTER: u8 = 1;
/// Refusal reason: no protocol version both speak.
const REFUSED_NO_COMMON_VERSION: u8 = 2;
/// Refusal reason: a malformed Hello.
const REFUSED_MALFORMED: u8 = 3;

/// The Refusal a server sends instead of a Challenge when [`ServerHandshake::on_hello`] fails
/// with `error`.
pub fn refusal(error: &HandshakeError) -> Bytes {
    let reason = match error {
        HandshakeError::WrongCluster => REFUSED_WRONG_CLUSTER,
        HandshakeError::NoCommonVersion { .. } => REFUSED_NO_COMMON_VERSION,
        _ => REFUSED_MALFORMED,
    };
    let mut message = BytesMut::with_capacity(REFUSAL_BYTES);
    message.put_slice(&REFUSAL_MAGIC);
    message.put_u8(reason);
    message.freeze()
}

/// The accepting side of a handshake, between its Challenge and the client's Proof.
pub struct ServerHandshake {
    secret: ClusterSecret,
    cluster: ClusterId,
    version: u16,
    client_nonce: [u8; NONCE_BYTES],
    server_nonce: [u8; NONCE_BYTES],
}

impl ServerHandshake {
    /// Checks a client's Hello; on success, the state to keep and the Challenge to send.
    pub fn on_hello(
        secret: ClusterSecret,
        cluster: ClusterId,
        hello: &[u8],
    ) -> Result<(Self, Bytes), HandshakeError> {
        check_magic(hello, HELLO_BYTES, "hello")?;
        let (theirs_oldest, theirs_newest) = (u16_at(hello, 4), u16_at(hello, 6));
        let mut theirs = [0u8; CLUSTER_ID_BYTES];
        theirs.copy_from_slice(&hello[8..8 + CLUSTER_ID_BYTES]);
        let theirs = ClusterId(theirs);
        let joining = ClusterId::derived_from(&secret);
        // The id both proofs cover: ours, unless we are the one still joining.
        let cluster = if theirs == cluster || theirs == joining {
            cluster
        } else if cluster == joining {
            theirs
        } else {
            return Err(HandshakeError::WrongCluster);
        };
        let version = PROTOCOL_VERSION.min(theirs_newest);
        if theirs_oldest > theirs_newest || version < PROTOCOL_VERSION_OLDEST.max(theirs_oldest) {
            return Err(HandshakeError::NoCommonVersion {
                ours_oldest: PROTOCOL_VERSION_OLDEST,
                ours_newest: PROTOCOL_VERSION,
                theirs_oldest,
                theirs_newest,
            });
        }
        let mut client_nonce = [0u8; NONCE_BYTES];
        client_nonce.copy_from_slice(&hello[8 + CLUSTER_ID_BYTES..]);
        let server_nonce: [u8; NONCE_BYTES] = rand::random();
        let proof = secret
            .proof(
                b"leofs-wire server",
                version,
                &cluster,
                [&client_nonce, &server_nonce],
            )
            .finalize()
            .into_bytes();
        let mut challenge = BytesMut::with_capacity(CHALLENGE_BYTES);
        challenge.put_slice(&MAGIC);
        challenge.put_u16_le(version);
        challenge.put_slice(&cluster.0);
        challenge.put_slice(&server_nonce);
        challenge.put_slice(&proof);
        Ok((
            Self {
                secret,
                cluster,
                version,
                client_nonce,
                server_nonce,
            },
            challenge.freeze(),
        ))
    }

    /// Checks the client's Proof; on success the connection speaks the returned version.
    pub fn on_proof(self, proof: &[u8]) -> Result<u16, HandshakeError> {
        check_magic(proof, PROOF_MESSAGE_BYTES, "proof")?;
        self.secret
            .proof(
                b"leofs-wire client",
                self.version,
                &self.cluster,
                [&self.server_nonce, &self.client_nonce],
            )
            .verify_slice(&proof[4..])
            .map_err(|_| HandshakeError::BadProof)?;
        Ok(self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: ClusterId = ClusterId([7; CLUSTER_ID_BYTES]);

    fn secret(byte: u8) -> ClusterSecret {
        ClusterSecret::new(vec![byte; 32]).unwrap()
    }

    #[test]
    fn peers_with_the_same_secret_and_cluster_agree_on_a_version() {
        let (client, hello) = ClientHandshake::start(secret(1), CLUSTER);
        let (server, challenge) = ServerHandshake::on_hello(secret(1), CLUSTER, &hello).unwrap();
        let (version, proof) = client.on_challenge(&challenge).unwrap();
        assert_eq!(version, PROTOCOL_VERSION);
        assert_eq!(server.on_proof(&proof), Ok(PROTOCOL_VERSION));
    }

    #[test]
    fn a_wrong_secret_fails_on_both_sides() {
        // The server does not know the client's secret: the client refuses its challenge.
        let (client, hello) = ClientHandshake::start(secret(1), CLUSTER);
        let (_, challenge) = ServerHandshake::on_hello(secret(2), CLUSTER, &hello).unwrap();
        assert_eq!(
            client.on_challenge(&challenge).err(),
            Some(HandshakeError::BadProof)
        );
        // A client that forges its proof without the secret is refused by the server.
        let (_, hello) = ClientHandshake::start(secret(2), CLUSTER);
        let (server, _) = ServerHandshake::on_hello(secret(1), CLUSTER, &hello).unwrap();
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&[0u8; PROOF_BYTES]);
        assert_eq!(server.on_proof(&forged), Err(HandshakeError::BadProof));
    }

    #[test]
    fn a_recorded_handshake_cannot_be_replayed() {
        let (client, hello) = ClientHandshake::start(secret(1), CLUSTER);
        let (server, challenge) = ServerHandshake::on_hello(secret(1), CLUSTER, &hello).unwrap();
        let (_, proof) = client.on_challenge(&challenge).unwrap();
        assert!(server.on_proof(&proof).is_ok());
        // The recorded Hello and Proof, replayed to the server: it draws a fresh nonce.
        let (replayed, _) = ServerHandshake::on_hello(secret(1), CLUSTER, &hello).unwrap();
        assert_eq!(replayed.on_proof(&proof), Err(HandshakeError::BadProof));
        // The recorded Challenge, replayed to a new client: its nonce is fresh too.
        let (fresh, _) = ClientHandshake::start(secret(1), CLUSTER);
        assert_eq!(
            fresh.on_challenge(&challenge).err(),
            Some(HandshakeError::BadProof)
        );
    }

    #[test]
    fn a_joining_node_takes_its_peers_id_and_other_clusters_are_refused() {
        let handshake = |client: ClusterId, server: ClusterId| {
            let (state, hello) = ClientHandshake::start(secret(1), client);
            let (server, challenge) = ServerHandshake::on_hello(secret(1), server, &hello)?;
            let (version, proof) = state.on_challenge(&challenge)?;
            assert_eq!(server.on_proof(&proof)?, version);
            Ok::<_, HandshakeError>(challenge[6..6 + CLUSTER_ID_BYTES].to_vec())
        };
        let joining = ClusterId::derived_from(&secret(1));
        let (ours, theirs) = (
            ClusterId([1; CLUSTER_ID_BYTES]),
            ClusterId([2; CLUSTER_ID_BYTES]),
        );
        // A joining client is told the server's id; a joining server takes the client's.
        assert_eq!(handshake(joining, ours).unwrap(), ours.0);
        assert_eq!(handshake(ours, joining).unwrap(), ours.0);
        assert_eq!(handshake(joining, joining).unwrap(), joining.0);
        assert_eq!(handshake(ours, ours).unwrap(), ours.0);
        // Two clusters that share a secret still refuse each other, in either direction.
        assert_eq!(handshake(ours, theirs), Err(HandshakeError::WrongCluster));
        assert_eq!(handshake(theirs, ours), Err(HandshakeError::WrongCluster));
        // A client with an id of its own refuses a server that answers with another.
        let (state, _) = ClientHandshake::start(secret(1), ours);
        let (_, hello) = ClientHandshake::start(secret(1), joining);
        let (_, challenge) = ServerHandshake::on_hello(secret(1), theirs, &hello).unwrap();
        assert_eq!(
            state.on_challenge(&challenge).err(),
            Some(HandshakeError::WrongCluster)
        );
    }

    #[test]
    fn other_clusters_versions_and_garbage_are_refused() {
        let (_, hello) = ClientHandshake::start(secret(1), ClusterId([8; CLUSTER_ID_BYTES]));
        assert_eq!(
            ServerHandshake::on_hello(secret(1), CLUSTER, &hello).err(),
            Some(HandshakeError::WrongCluster)
        );
        let (_, hello) = ClientHandshake::start(secret(1), CLUSTER);
        let mut future = hello.to_vec();
        future[4..6].copy_from_slice(&(PROTOCOL_VERSION + 2).to_le_bytes());
        future[6..8].copy_from_slice(&(PROTOCOL_VERSION + 3).to_le_bytes());
        assert!(matches!(
            ServerHandshake::on_hello(secret(1), CLUSTER, &future),
            Err(HandshakeError::NoCommonVersion { .. })
        ));
        // A newer peer that still speaks ours gets ours.
        let mut newer = hello.to_vec();
        newer[6..8].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        let (server, _) = ServerHandshake::on_hello(secret(1), CLUSTER, &newer).unwrap();
        assert_eq!(server.version, PROTOCOL_VERSION);
        for garbage in [
            &b""[..],
            b"LFSW",
            &[0u8; HELLO_BYTES],
            &hello[..HELLO_BYTES - 1],
        ] {
            assert!(matches!(
                ServerHandshake::on_hello(secret(1), CLUSTER, garbage),
                Err(HandshakeError::Malformed(_))
            ));
        }
        assert!(ClusterSecret::new(vec![0; 31]).is_err());
        assert_eq!(format!("{:?}", secret(9)), "ClusterSecret(<32 bytes>)");
    }

    #[test]
    fn a_refused_client_learns_why() {
        let stranger = ClusterId::derived_from(&secret(2));
        let (client, hello) = ClientHandshake::start(secret(2), stranger);
        let refused = ServerHandshake::on_hello(secret(1), CLUSTER, &hello)
            .err()
            .unwrap();
        let answer = refusal(&refused);
        assert!(matches!(
            client.on_challenge(&answer),
            Err(HandshakeError::Refused(why)) if why.contains("another cluster secret")
        ));
    }
}
