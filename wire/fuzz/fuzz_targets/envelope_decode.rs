//! Arbitrary bytes as a verified frame's envelope and payload, decoded as every request and
//! every answer a node reads: never a panic, whatever a peer sends. The first byte splits the
//! input into envelope and payload.
#![no_main]

use bytes::Bytes;
use leofs_shard::remote::codec::{self, Expect};
use leofs_wire::{Frame, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = rest.len() * usize::from(split) / 256;
    let frame = Frame {
        envelope: Bytes::copy_from_slice(&rest[..rest.len() - split]),
        payload: Bytes::copy_from_slice(&rest[rest.len() - split..]),
    };
    let Ok(message) = Message::parse(frame) else {
        return;
    };
    let _ = codec::decode_request(&message);
    for expect in [
        Expect::Storage("get"),
        Expect::Storage("head"),
        Expect::Storage("lookup"),
        Expect::Storage("scan"),
        Expect::Ring,
        Expect::Catalog,
        Expect::CatalogChange,
    ] {
        let _ = codec::decode_answer(&message, expect);
    }
    let _ = codec::decode_scan_answer(&message);
});
