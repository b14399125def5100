//! Arbitrary bytes fed to the frame decoder, whole and in two pieces: it must never panic, and
//! every frame it hands out must encode back to the very bytes it was read from.
#![no_main]

use bytes::BytesMut;
use leofs_wire::{Frame, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::from(&data[..split]);
    let mut consumed = 0;
    let mut frames: Vec<Frame> = Vec::new();
    for piece in [&data[split..], &[][..]] {
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    consumed += before - buf.len();
                    frames.push(frame);
                }
                Ok(None) | Err(_) => break,
            }
        }
        buf.extend_from_slice(piece);
    }
    let mut again = BytesMut::new();
    for frame in &frames {
        frame.encode(&mut again).expect("a decoded frame is within bounds");
    }
    assert_eq!(&again[..], &data[..consumed]);
});
