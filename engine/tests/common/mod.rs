//! Shared support for the engine's integration tests: the runtime, temp dirs, a seeded PRNG and
//! self-describing bodies that a reader can regenerate and compare byte for byte.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use leofs_engine::{EngineConfig, PutValue, Summary, SyncPolicy};

/// The runtime type every engine test runs in (io_uring driver with timers, as in production).
pub type TestRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

/// Segment size the tests use so that rollover and compaction happen after a few MiB.
pub const TEST_SEGMENT_BYTES: u64 = 1024 * 1024;

/// Size of the pseudo-random block a body repeats (each copy stamped with its index).
const BODY_BLOCK_BYTES: usize = 4096;
/// Bytes at the start of each block that carry the seed and block index.
const BODY_STAMP_BYTES: usize = 16;

/// Builds a fresh io_uring runtime with timers.
pub fn runtime() -> TestRuntime {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .expect("io_uring runtime")
}

/// A temporary directory on a filesystem that supports O_DIRECT (`LEOFS_TEST_DIR`, else the
/// system temp dir, which is ext4 on the build machines).
pub fn test_dir() -> tempfile::TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("leofs-engine-test-");
    match std::env::var_os("LEOFS_TEST_DIR") {
        Some(base) => {
            std::fs::create_dir_all(&base).expect("LEOFS_TEST_DIR");
            builder.tempdir_in(base).expect("tempdir")
        }
        None => builder.tempdir().expect("tempdir"),
    }
}

/// A configuration for tests: small segments, durable puts, no background compaction, no
/// periodic checkpoints (tests call `checkpoint`/`compact` themselves).
pub fn test_config(dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.segment_size_bytes = TEST_SEGMENT_BYTES;
    config.sync = SyncPolicy::Always;
    config.checkpoint_interval = Duration::from_secs(3600);
    config.background_compaction = false;
    config.cache_bytes = 4 * 1024 * 1024;
    config
}

/// SplitMix64: a tiny, seeded, reproducible PRNG (no dependency, same sequence everywhere).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `range` (which must not be empty).
    pub fn range(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next_u64() % (range.end - range.start)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0..100) < percent
    }
}

/// The body of `len` bytes generated from `seed`: a pseudo-random 4 KiB block repeated, each copy
/// stamped with the seed and its index, so that a misplaced, stale or torn block never compares
/// equal. Cheap enough for debug builds (mostly memcpy).
pub fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut block = [0u8; BODY_BLOCK_BYTES];
    for word in block.chunks_exact_mut(8) {
        word.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    let mut out = Vec::with_capacity(len);
    let mut index = 0u64;
    while out.len() < len {
        let start = out.len();
        let take = BODY_BLOCK_BYTES.min(len - start);
        out.extend_from_slice(&block[..take]);
        let mut stamp = [0u8; BODY_STAMP_BYTES];
        stamp[..8].copy_from_slice(&seed.to_le_bytes());
        stamp[8..].copy_from_slice(&index.to_le_bytes());
        let stamp_len = BODY_STAMP_BYTES.min(take);
        out[start..start + stamp_len].copy_from_slice(&stamp[..stamp_len]);
        index += 1;
    }
    out
}

/// The metadata blob stored with a seeded body: names the seed and length so a reader can
/// regenerate the expected body from what it read.
pub fn meta(seed: u64, len: usize) -> Bytes {
    Bytes::from(format!("seed={seed:016x} len={len}"))
}

/// Parses a blob written by [`meta`].
pub fn parse_meta(meta: &[u8]) -> Option<(u64, usize)> {
    let text = std::str::from_utf8(meta).ok()?;
    let rest = text.strip_prefix("seed=")?;
    let (seed, len) = rest.split_once(" len=")?;
    Some((u64::from_str_radix(seed, 16).ok()?, len.parse().ok()?))
}

/// The summary stored with a seeded body.
pub fn summary(seed: u64, len: usize) -> Summary {
    let mut digest = [0u8; 16];
    digest[..8].copy_from_slice(&seed.to_le_bytes());
    digest[8..].copy_from_slice(&(len as u64).to_le_bytes());
    Summary {
        size: len as u64,
        digest,
        tag: (seed as u32) | 1,
    }
}

/// A complete put value for a seeded body.
pub fn value(seed: u64, len: usize) -> PutValue {
    PutValue {
        meta: meta(seed, len),
        body: Bytes::from(body(seed, len)),
        summary: summary(seed, len),
        hlc: None,
    }
}

/// Every regular file under `dir` (recursively) whose name ends with `suffix`, sorted.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Bytes of a checkpoint file's content: the whole file for format 1; format 2 records it in its
/// header (bytes 88..96), and the rest of the file is slack of the reserve it was written into.
pub fn checkpoint_content_len(path: &Path) -> usize {
    let bytes = std::fs::read(path).expect("read checkpoint");
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version >= 2 {
        u64::from_le_bytes(bytes[88..96].try_into().expect("8 bytes")) as usize
    } else {
        bytes.len()
    }
}
