//! Arbitrary bytes as each handshake message: no panic, and without the secret no proof is
//! ever accepted.
#![no_main]

use leofs_wire::handshake::{ClientHandshake, ClusterId, ClusterSecret, ServerHandshake};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secret = || ClusterSecret::new(vec![0x5a; 32]).expect("32 bytes");
    let cluster = ClusterId([3; 16]);
    // As a Hello to a server, then (if it passes) the rest as the client's Proof.
    let split = data.len().min(56);
    if let Ok((server, _challenge)) = ServerHandshake::on_hello(secret(), cluster, &data[..split]) {
        assert!(server.on_proof(&data[split..]).is_err(), "a proof forged without the secret");
    }
    // As a Challenge to a client.
    let (client, _hello) = ClientHandshake::start(secret(), cluster);
    assert!(client.on_challenge(data).is_err(), "a challenge forged without the secret");
});
