//! One flipped byte at every kind of offset (segment header, both header copies, record header
//! fields, key, metadata, body, checkpoint), after a clean close and after a crash. For each:
//! no acknowledged key reads as absent, every undamaged key reads back byte for byte (deleted
//! keys stay deleted), a damaged record is an error (never None, never other bytes), listings
//! keep every key, and flipping the byte back and reopening restores everything.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use leofs_engine::{Engine, EngineConfig, EngineError, Hlc, PartitionId};

/// The damaged key; distinctive so it occurs once in the segment files.
const VICTIM_KEY: &str = "byte-flip-victim-key-4c1e77";
/// Body length of the victim (several blocks).
const VICTIM_BODY_BYTES: usize = 30_000;
/// Metadata length of the victim (see `common::meta`).
const HEADER_BYTES: usize = 112;
/// Bytes of a segment header block.
const BLOCK_BYTES: usize = 4096;
/// Partitions the keys are spread over.
const PARTITIONS: u32 = 4;

fn partition_of(key: &[u8]) -> PartitionId {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(PARTITIONS)) as PartitionId
}

/// What a key should read as.
#[derive(Clone, Copy, Debug)]
enum Expected {
    Value { seed: u64, len: usize, hlc: Hlc },
    Deleted,
}

/// How the engine is left before the damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    /// `close`: a checkpoint covers the whole log.
    Clean,
    /// Dropped without `close` after a checkpoint: the next open replays the rest of the log.
    Crash,
}

/// Where the flipped byte goes.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Byte `offset` of block 0 of the segment holding the victim (a sealed segment).
    SegmentHeader(usize),
    /// Byte `offset` of block 0 of the newest segment (the head).
    HeadSegmentHeader(usize),
    /// The same byte of block 0 and of the mirror in the last block of the victim's segment.
    BothHeaderCopies(usize),
    /// The same byte of both header copies of the head (after a crash: written after the
    /// checkpoint, so only its records tell its header).
    BothHeadHeaderCopies(usize),
    /// Byte `offset` of the victim's 112-byte record header.
    RecordHeader(usize),
    /// A byte of the victim's key.
    Key,
    /// A byte of the victim's metadata.
    Meta,
    /// A byte in the middle of the victim's body.
    Body,
    /// A byte in the middle of the newest checkpoint.
    Checkpoint,
}

impl Damage {
    /// Whether the victim record itself is damaged (it must then read as corrupt).
    fn hits_victim(self) -> bool {
        matches!(
            self,
            Damage::RecordHeader(_) | Damage::Key | Damage::Meta | Damage::Body
        )
    }
}

fn config(dir: &Path) -> EngineConfig {
    common::test_config(dir)
}

/// Writes keys of mixed sizes (some streamed), overwrites and deletes some, with the victim in
/// the middle; a checkpoint after the victim so that it is covered either way.
async fn write_keys(engine: &Engine) -> BTreeMap<String, Expected> {
    let mut expected = BTreeMap::new();
    let mut seed = 5000u64;
    let mut put = async |expected: &mut BTreeMap<String, Expected>, key: String, len: usize| {
        seed += 1;
        let hlc = engine
            .put(
                partition_of(key.as_bytes()),
                key.as_bytes(),
                common::value(seed, len),
            )
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        expected.insert(key, Expected::Value { seed, len, hlc });
    };
    for i in 0..60usize {
        let len = match i % 6 {
            0 => 90,
            1 => 4_000,
            2 => 25_000,
            3 => 70_000,
            4 => 600_000, // streamed into a reservation (above the batch limit)
            _ => 1,
        };
        put(&mut expected, format!("first/{i:03}"), len).await;
    }
    put(&mut expected, VICTIM_KEY.to_string(), VICTIM_BODY_BYTES).await;
    for i in (0..60usize).step_by(7) {
        put(&mut expected, format!("first/{i:03}"), 3_000 + i).await;
    }
    for i in (3..60usize).step_by(11) {
        let key = format!("first/{i:03}");
        engine
            .delete(partition_of(key.as_bytes()), key.as_bytes(), None)
            .await
            .expect("delete");
        expected.insert(key, Expected::Deleted);
    }
    engine.checkpoint().await.expect("checkpoint");
    for i in 0..40usize {
        put(&mut expected, format!("second/{i:03}"), 200 + i * 3_500).await;
    }
    expected
}

fn find(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Flips every bit of the byte at `offset` of `path` (flipping again restores it).
fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read for flip");
    bytes[offset] ^= 0xFF;
    std::fs::write(path, bytes).expect("write flipped");
}

/// The segment holding the victim and the offset of its key.
fn locate_victim(dir: &Path) -> (PathBuf, usize) {
    let mut hits = Vec::new();
    for segment in common::files_with_suffix(dir, ".seg") {
        let bytes = std::fs::read(&segment).expect("read segment");
        for at in find(&bytes, VICTIM_KEY.as_bytes()) {
            hits.push((segment.clone(), at));
        }
    }
    assert_eq!(hits.len(), 1, "the victim key occurs once: {hits:?}");
    hits.pop().expect("one hit")
}

/// The head: the active segment (header state 2) with the newest life (header bytes 24..32).
fn head_segment(dir: &Path) -> PathBuf {
    let le = |b: &[u8], at: usize, n: usize| {
        b[at..at + n]
            .iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
    };
    common::files_with_suffix(dir, ".seg")
        .into_iter()
        .filter_map(|path| {
            let bytes = std::fs::read(&path).expect("read segment");
            (le(&bytes, 12, 4) == 2).then(|| (le(&bytes, 24, 8), path))
        })
        .max()
        .expect("an active segment")
        .1
}

/// Byte `offset` of block 0 and of the header mirror in the last block.
fn both_copies(segment: PathBuf, offset: usize) -> Vec<(PathBuf, usize)> {
    let size = std::fs::metadata(&segment).expect("stat").len() as usize;
    vec![
        (segment.clone(), offset),
        (segment, size - BLOCK_BYTES + offset),
    ]
}

/// The (path, offset) pairs to flip for a damage kind.
fn targets(dir: &Path, damage: Damage, victim: &Expected) -> Vec<(PathBuf, usize)> {
    let (segment, key_at) = locate_victim(dir);
    let record_at = key_at - HEADER_BYTES;
    let Expected::Value { seed, len, .. } = *victim else {
        panic!("the victim is live");
    };
    let meta_len = common::meta(seed, len).len();
    match damage {
        Damage::SegmentHeader(offset) => vec![(segment, offset)],
        Damage::HeadSegmentHeader(offset) => vec![(head_segment(dir), offset)],
        Damage::BothHeaderCopies(offset) => both_copies(segment, offset),
        Damage::BothHeadHeaderCopies(offset) => both_copies(head_segment(dir), offset),
        Damage::RecordHeader(offset) => vec![(segment, record_at + offset)],
        Damage::Key => vec![(segment, key_at + VICTIM_KEY.len() / 2)],
        Damage::Meta => vec![(segment, key_at + VICTIM_KEY.len() + meta_len / 2)],
        Damage::Body => vec![(segment, key_at + VICTIM_KEY.len() + meta_len + len / 2)],
        Damage::Checkpoint => {
            let mut checkpoints = common::files_with_suffix(dir, ".ckpt");
            checkpoints.sort();
            let newest = checkpoints.pop().expect("a checkpoint");
            let len = common::checkpoint_content_len(&newest);
            vec![(newest, len / 2)]
        }
    }
}

/// Checks every key; the victim must be an error when `victim_damaged`, else exact.
async fn check(
    engine: &Engine,
    expected: &BTreeMap<String, Expected>,
    victim_damaged: bool,
    context: &str,
) {
    for (key, want) in expected {
        let p = partition_of(key.as_bytes());
        let got = engine.get(p, key.as_bytes()).await;
        if key == VICTIM_KEY && victim_damaged {
            match got {
                Err(EngineError::Corrupt { .. }) => {}
                other => panic!(
                    "{context}: the damaged victim must read as corrupt, got {:?}",
                    other.map(|v| v.map(|v| v.body.len()))
                ),
            }
            continue;
        }
        match (*want, got) {
            (Expected::Deleted, Ok(None)) => {}
            (Expected::Deleted, other) => panic!(
                "{context}: deleted {key} came back: {:?}",
                other.map(|v| v.map(|v| v.body.len()))
            ),
            (Expected::Value { seed, len, hlc }, Ok(Some(v))) => {
                assert_eq!(v.hlc, hlc, "{context}: hlc of {key}");
                assert_eq!(
                    &v.meta[..],
                    &common::meta(seed, len)[..],
                    "{context}: meta of {key}"
                );
                assert!(
                    v.body[..] == common::body(seed, len)[..],
                    "{context}: body of {key} differs"
                );
            }
            (Expected::Value { .. }, Ok(None)) => {
                panic!("{context}: acknowledged {key} reads as absent")
            }
            (Expected::Value { .. }, Err(e)) => panic!("{context}: {key}: {e}"),
        }
    }
    let listed: Vec<String> = engine
        .scan(b"", None, usize::MAX)
        .into_iter()
        .map(|e| String::from_utf8(e.key.to_vec()).expect("utf8"))
        .collect();
    let live: Vec<String> = expected
        .iter()
        .filter(|(_, e)| matches!(e, Expected::Value { .. }))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(listed, live, "{context}: the listing lost or invented keys");
}

fn reopen_and_check(
    config: &EngineConfig,
    expected: &BTreeMap<String, Expected>,
    victim_damaged: bool,
    context: &str,
) -> leofs_engine::EngineStats {
    common::runtime().block_on(async {
        let engine = Engine::open(config.clone())
            .await
            .unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
        check(&engine, expected, victim_damaged, context).await;
        let stats = engine.stats();
        engine
            .close()
            .await
            .unwrap_or_else(|e| panic!("{context}: close: {e}"));
        stats
    })
}

fn case(damage: Damage, shutdown: Shutdown) {
    let context = format!("{damage:?} after {shutdown:?}");
    let dir = common::test_dir();
    let config = config(dir.path());
    let expected = common::runtime().block_on(async {
        let engine = Engine::open(config.clone()).await.expect("open");
        let expected = write_keys(&engine).await;
        if shutdown == Shutdown::Clean {
            engine.close().await.expect("close");
        }
        expected
    });
    let flips = targets(dir.path(), damage, &expected[VICTIM_KEY]);
    for (path, offset) in &flips {
        flip(path, *offset);
    }
    let victim_damaged = damage.hits_victim();
    let stats = reopen_and_check(&config, &expected, victim_damaged, &context);
    match damage {
        Damage::SegmentHeader(_) | Damage::HeadSegmentHeader(_) => {
            assert_eq!(
                stats.segments_set_aside, 0,
                "{context}: one copy was intact: {stats:?}"
            );
        }
        Damage::BothHeaderCopies(_) | Damage::BothHeadHeaderCopies(_) => {
            assert_eq!(
                stats.segments_set_aside, 0,
                "{context}: established from checkpoint and records: {stats:?}"
            );
        }
        _ => {}
    }
    // Reopening again (after the checkpoint the damaged open wrote on close) changes nothing.
    reopen_and_check(
        &config,
        &expected,
        victim_damaged,
        &format!("{context}, second open"),
    );
    if victim_damaged {
        // The operator repairs the byte: everything is back, the victim included.
        for (path, offset) in &flips {
            flip(path, *offset);
        }
        reopen_and_check(
            &config,
            &expected,
            false,
            &format!("{context}, after repair"),
        );
    }
}

/// Offsets inside a segment header block: magic, version, state, id, life, size, salt, the
/// reserved area, and the checksum.
const SEGMENT_HEADER_OFFSETS: [usize; 9] = [0, 9, 12, 20, 28, 36, 44, 1000, 4090];
/// Offsets inside a record header: magic, version, kind, partition, key length, meta length,
/// body length, HLC, LSN, life, summary, both checksums.
const RECORD_HEADER_OFFSETS: [usize; 14] = [0, 4, 6, 8, 12, 16, 25, 33, 49, 57, 70, 90, 99, 107];

#[test]
fn segment_header_flips_lose_nothing() {
    for shutdown in [Shutdown::Clean, Shutdown::Crash] {
        for offset in SEGMENT_HEADER_OFFSETS {
            case(Damage::SegmentHeader(offset), shutdown);
        }
    }
}

#[test]
fn head_segment_header_flips_lose_nothing() {
    for shutdown in [Shutdown::Clean, Shutdown::Crash] {
        for offset in [9, 20, 28, 44, 4090] {
            case(Damage::HeadSegmentHeader(offset), shutdown);
        }
    }
}

#[test]
fn both_header_copies_damaged_lose_nothing() {
    for shutdown in [Shutdown::Clean, Shutdown::Crash] {
        for offset in [0, 28, 44, 4090] {
            case(Damage::BothHeaderCopies(offset), shutdown);
        }
    }
}

#[test]
fn both_header_copies_of_the_head_damaged_lose_nothing() {
    for shutdown in [Shutdown::Clean, Shutdown::Crash] {
        for offset in [0, 28, 4090] {
            case(Damage::BothHeadHeaderCopies(offset), shutdown);
        }
    }
}

/// A segment file that disappears: keys in it read as corrupt (never absent), the rest exactly;
/// putting the file back restores everything.
#[test]
fn missing_segment_file_reads_as_corrupt_until_restored() {
    let dir = common::test_dir();
    let config = config(dir.path());
    let expected = common::runtime().block_on(async {
        let engine = Engine::open(config.clone()).await.expect("open");
        let expected = write_keys(&engine).await;
        engine.close().await.expect("close");
        expected
    });
    let (segment, _) = locate_victim(dir.path());
    let aside = dir.path().join("moved-away.seg.bak");
    std::fs::rename(&segment, &aside).expect("move the segment away");
    common::runtime().block_on(async {
        let engine = Engine::open(config.clone())
            .await
            .expect("open without the segment");
        let mut corrupt = 0;
        for (key, want) in &expected {
            let got = engine
                .get(partition_of(key.as_bytes()), key.as_bytes())
                .await;
            match (*want, got) {
                (Expected::Deleted, Ok(None)) => {}
                (Expected::Value { .. }, Err(EngineError::Corrupt { .. })) => corrupt += 1,
                (Expected::Value { seed, len, .. }, Ok(Some(v))) => {
                    assert!(v.body[..] == common::body(seed, len)[..], "{key} differs")
                }
                (want, got) => panic!(
                    "{key}: expected {want:?}, got {:?}",
                    got.map(|v| v.map(|v| v.body.len()))
                ),
            }
        }
        assert!(
            corrupt > 0,
            "the keys of the missing segment must read as corrupt"
        );
        assert_eq!(engine.stats().segments_set_aside, 1);
        engine.close().await.expect("close");
    });
    std::fs::rename(&aside, &segment).expect("put the segment back");
    reopen_and_check(&config, &expected, false, "segment file restored");
}

#[test]
fn record_header_flips_read_as_corrupt_and_repair_restores() {
    for shutdown in [Shutdown::Clean, Shutdown::Crash] {
        for offset in RECORD_HEADER_OFFSETS {
            case(Damage::RecordHeader(offset), shutdown);
        }
    }
}

#[test]
fn key_meta_and_body_flips_read_as_corrupt_and_repair_restores() {
    for shutdown in [Shutdown::Clean, Shutdown::Crash] {
        for damage in [Damage::Key, Damage::Meta, Damage::Body] {
            case(damage, shutdown);
        }
    }
}

#[test]
fn checkpoint_flip_loses_nothing() {
    for shutdown in [Shutdown::Clean, Shutdown::Crash] {
        case(Damage::Checkpoint, shutdown);
    }
}
