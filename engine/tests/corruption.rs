//! Corruption: flip bytes on disk while the engine is closed (in a record's body, in a record's
//! header, in a record's length field, in the middle of the log; in a checkpoint) and reopen.
//! The engine must report the damage (`stats().corrupt_records`), must never return wrong bytes
//! for the damaged key (an error or None), and must serve every other key exactly. Each case runs
//! both after a clean close (the index comes from a checkpoint, damage is found on read) and after
//! dropping the engine without close (recovery replays the log across the damaged record).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use leofs_engine::{Engine, EngineError, Hlc, PartitionId};

/// Keys written before and after the victim, so the damage sits in the middle of the log.
const KEYS_AROUND_VICTIM: usize = 30;
/// The damaged key; long and distinctive so it occurs once in the segment files.
const VICTIM_KEY: &str = "corruption-victim-key-7f3a9c";
/// Body length of the victim (spans several 4 KiB blocks).
const VICTIM_BODY_BYTES: usize = 20_000;
/// Offset of a byte of the HLC (physical microseconds) inside the 112-byte record header
/// (engine/src/record.rs: header bytes 32..40).
const HEADER_HLC_BYTE: usize = 33;
/// Offset of a byte of the body length inside the record header (bytes 24..32).
const HEADER_BODY_LEN_BYTE: usize = 25;
/// Bytes of the fixed record header that precede the key.
const HEADER_BYTES: usize = 112;
/// Partitions the keys are spread over.
const PARTITIONS: u32 = 3;

fn partition_of(key: &[u8]) -> PartitionId {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(PARTITIONS)) as PartitionId
}

/// Where to damage the victim record.
#[derive(Clone, Copy, Debug)]
enum Damage {
    Body,
    HeaderHlc,
    HeaderBodyLen,
}

/// How the engine is left before the damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    /// `close`: a checkpoint covers the whole log.
    Clean,
    /// Engine and runtime dropped without `close`: the next open replays the log.
    Dirty,
}

struct Written {
    values: BTreeMap<String, (u64, usize, Hlc)>,
}

/// Writes keys around the victim; returns what was written.
async fn write_keys(engine: &Engine) -> Written {
    let mut values = BTreeMap::new();
    let mut seed = 1000u64;
    let mut put = async |key: String, len: usize| {
        seed += 1;
        let hlc = engine
            .put(
                partition_of(key.as_bytes()),
                key.as_bytes(),
                common::value(seed, len),
            )
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        (key, (seed, len, hlc))
    };
    for i in 0..KEYS_AROUND_VICTIM {
        let (k, v) = put(format!("before-{i:03}"), 500 + i * 2_000).await;
        values.insert(k, v);
    }
    let (k, v) = put(VICTIM_KEY.to_string(), VICTIM_BODY_BYTES).await;
    values.insert(k, v);
    for i in 0..KEYS_AROUND_VICTIM {
        let (k, v) = put(format!("after-{i:03}"), 300 + i * 3_000).await;
        values.insert(k, v);
    }
    Written { values }
}

fn find(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Flips the byte at `offset` of `path` (every bit).
fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read for flip");
    bytes[offset] ^= 0xFF;
    std::fs::write(path, bytes).expect("write flipped");
}

/// Finds the victim's record in the segments; returns the segment and the key's offset.
fn locate_victim(dir: &Path) -> (PathBuf, usize) {
    let mut hits = Vec::new();
    for segment in common::files_with_suffix(dir, ".seg") {
        let bytes = std::fs::read(&segment).expect("read segment");
        for at in find(&bytes, VICTIM_KEY.as_bytes()) {
            hits.push((segment.clone(), at));
        }
    }
    assert_eq!(
        hits.len(),
        1,
        "the victim key should occur once in the segment files: {hits:?}"
    );
    let (segment, at) = hits.pop().expect("one hit");
    assert!(
        at >= HEADER_BYTES,
        "victim key too close to the segment start for a header"
    );
    (segment, at)
}

fn damage(dir: &Path, how: Damage, written: &Written) {
    let (segment, key_at) = locate_victim(dir);
    let (seed, len, _) = written.values[VICTIM_KEY];
    let record_at = key_at - HEADER_BYTES;
    let offset = match how {
        Damage::Body => key_at + VICTIM_KEY.len() + common::meta(seed, len).len() + len / 2,
        Damage::HeaderHlc => record_at + HEADER_HLC_BYTE,
        Damage::HeaderBodyLen => record_at + HEADER_BODY_LEN_BYTE,
    };
    flip(&segment, offset);
}

/// Every key but the victim reads back exactly; the victim is an error or None.
async fn check_after_damage(engine: &Engine, written: &Written, context: &str) {
    for (key, &(seed, len, hlc)) in &written.values {
        let corrupt_before = engine.stats().corrupt_records;
        let got = engine
            .get(partition_of(key.as_bytes()), key.as_bytes())
            .await;
        if key == VICTIM_KEY {
            // Found by replay (the key is then unknown) or by this read.
            let reported =
                matches!(got, Ok(None)) || engine.stats().corrupt_records > corrupt_before;
            assert!(
                reported,
                "{context}: reading the damaged record did not count it as corrupt"
            );
            match got {
                Ok(None) | Err(EngineError::Corrupt { .. }) => {}
                Err(e) => eprintln!("{context}: victim read failed with a non-Corrupt error: {e}"),
                Ok(Some(v)) => panic!(
                    "{context}: damaged record was returned ({} bytes, body intact: {})",
                    v.body.len(),
                    v.body[..] == common::body(seed, len)[..]
                ),
            }
            let head = engine
                .head(partition_of(key.as_bytes()), key.as_bytes())
                .await;
            assert!(
                !matches!(head, Ok(Some(ref h)) if h.hlc != hlc),
                "{context}: head of the damaged record returned a wrong timestamp: {head:?}"
            );
            continue;
        }
        let value = got
            .unwrap_or_else(|e| panic!("{context}: undamaged key {key}: {e}"))
            .unwrap_or_else(|| panic!("{context}: undamaged key {key} is missing"));
        assert_eq!(value.hlc, hlc, "{context}: hlc of {key}");
        assert_eq!(
            &value.meta[..],
            &common::meta(seed, len)[..],
            "{context}: meta of {key}"
        );
        assert!(
            value.body[..] == common::body(seed, len)[..],
            "{context}: body of {key} differs"
        );
    }
    let listed: Vec<String> = engine
        .scan(b"", None, usize::MAX)
        .into_iter()
        .map(|e| String::from_utf8(e.key.to_vec()).expect("utf8"))
        .filter(|k| k != VICTIM_KEY)
        .collect();
    let expected: Vec<String> = written
        .values
        .keys()
        .filter(|k| *k != VICTIM_KEY)
        .cloned()
        .collect();
    assert_eq!(listed, expected, "{context}: scan lost or invented keys");
    let stats = engine.stats();
    assert!(
        stats.corrupt_records > 0,
        "{context}: damage not reported: {stats:?}"
    );
}

fn damaged_record_case(how: Damage, shutdown: Shutdown) {
    let context = format!("{how:?} damage after {shutdown:?} shutdown");
    let dir = common::test_dir();
    let config = common::test_config(dir.path());
    let mut runtime = common::runtime();
    let written = runtime.block_on(async {
        let engine = Engine::open(config.clone()).await.expect("open");
        let written = write_keys(&engine).await;
        if shutdown == Shutdown::Clean {
            engine.close().await.expect("close");
        }
        written
    });
    drop(runtime);
    damage(dir.path(), how, &written);
    let mut runtime = common::runtime();
    runtime.block_on(async {
        let engine = Engine::open(config.clone())
            .await
            .unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
        check_after_damage(&engine, &written, &context).await;
        // The store stays writable and the new write is readable after another reopen.
        engine
            .put(partition_of(b"new"), b"new", common::value(7, 9000))
            .await
            .unwrap_or_else(|e| panic!("{context}: put after damage: {e}"));
        engine
            .close()
            .await
            .unwrap_or_else(|e| panic!("{context}: close: {e}"));
    });
    drop(runtime);
    let mut runtime = common::runtime();
    runtime.block_on(async {
        let engine = Engine::open(config.clone())
            .await
            .unwrap_or_else(|e| panic!("{context}: second open failed: {e}"));
        let value = engine
            .get(partition_of(b"new"), b"new")
            .await
            .expect("get new")
            .expect("new key");
        assert!(
            value.body[..] == common::body(7, 9000)[..],
            "{context}: new key differs"
        );
        for (key, &(seed, len, _)) in written.values.iter().filter(|(k, _)| *k != VICTIM_KEY) {
            let value = engine
                .get(partition_of(key.as_bytes()), key.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("{context}: second open, {key}: {e}"))
                .unwrap_or_else(|| panic!("{context}: second open, {key} missing"));
            assert!(
                value.body[..] == common::body(seed, len)[..],
                "{context}: second open, {key} differs"
            );
        }
        engine.close().await.expect("close");
    });
}

/// The baseline for the cases above: replaying an undamaged log reports no corruption.
#[test]
fn undamaged_log_reports_no_corruption_after_replay() {
    let dir = common::test_dir();
    let config = common::test_config(dir.path());
    let written = common::runtime().block_on(async {
        let engine = Engine::open(config.clone()).await.expect("open");
        write_keys(&engine).await
    });
    common::runtime().block_on(async {
        let engine = Engine::open(config.clone()).await.expect("reopen");
        for (key, &(seed, len, _)) in &written.values {
            let value = engine
                .get(partition_of(key.as_bytes()), key.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("{key}: {e}"))
                .unwrap_or_else(|| panic!("{key} missing"));
            assert!(
                value.body[..] == common::body(seed, len)[..],
                "{key} differs"
            );
        }
        let stats = engine.stats();
        assert_eq!(
            stats.corrupt_records, 0,
            "an undamaged log was reported corrupt: {stats:?}"
        );
        engine.close().await.expect("close");
    });
}

/// Zero padding that ends a few bytes before a 4 KiB boundary is padding, whatever the next
/// batch's header holds (here a first record of 4084 bytes leaves 8 bytes of padding, and the
/// next record's LSN sits where a misaligned header read finds its life sequence).
#[test]
fn short_padding_before_the_next_batch_is_not_corruption() {
    let dir = common::test_dir();
    let config = common::test_config(dir.path());
    common::runtime().block_on(async {
        let engine = Engine::open(config.clone()).await.expect("open");
        for len in [3935, 0] {
            engine
                .put(
                    partition_of(b"a/00"),
                    b"a/00",
                    common::value(len as u64, len),
                )
                .await
                .expect("put");
        }
    });
    common::runtime().block_on(async {
        let engine = Engine::open(config.clone()).await.expect("reopen");
        let value = engine
            .get(partition_of(b"a/00"), b"a/00")
            .await
            .expect("get")
            .expect("a/00");
        assert_eq!(&value.meta[..], &common::meta(0, 0)[..]);
        let stats = engine.stats();
        assert_eq!(
            stats.corrupt_records, 0,
            "padding reported as corruption: {stats:?}"
        );
        engine.close().await.expect("close");
    });
}

#[test]
fn flipped_body_byte_after_clean_close_is_detected_on_read() {
    damaged_record_case(Damage::Body, Shutdown::Clean);
}

#[test]
fn flipped_body_byte_is_detected_by_replay() {
    damaged_record_case(Damage::Body, Shutdown::Dirty);
}

#[test]
fn flipped_header_byte_after_clean_close_is_detected_on_read() {
    damaged_record_case(Damage::HeaderHlc, Shutdown::Clean);
}

#[test]
fn flipped_header_byte_mid_log_is_skipped_by_replay() {
    damaged_record_case(Damage::HeaderHlc, Shutdown::Dirty);
}

#[test]
fn flipped_length_byte_after_clean_close_is_detected_on_read() {
    damaged_record_case(Damage::HeaderBodyLen, Shutdown::Clean);
}

#[test]
fn flipped_length_byte_mid_log_does_not_lose_later_records() {
    damaged_record_case(Damage::HeaderBodyLen, Shutdown::Dirty);
}

/// Writes two generations of keys with a checkpoint between, closes (second checkpoint), damages
/// the newest checkpoint (or all of them) and checks every key after reopen.
fn damaged_checkpoint_case(all_checkpoints: bool) {
    let context = if all_checkpoints {
        "every checkpoint damaged"
    } else {
        "newest checkpoint damaged"
    };
    let dir = common::test_dir();
    let config = common::test_config(dir.path());
    let mut runtime = common::runtime();
    let written = runtime.block_on(async {
        let engine = Engine::open(config.clone()).await.expect("open");
        let written = write_keys(&engine).await;
        engine.checkpoint().await.expect("checkpoint");
        engine
            .delete(partition_of(b"before-001"), b"before-001", None)
            .await
            .expect("delete");
        engine.close().await.expect("close");
        written
    });
    drop(runtime);
    let mut checkpoints = common::files_with_suffix(dir.path(), ".ckpt");
    // Newest last, whether sequence numbers are zero-padded or not.
    checkpoints.sort_by_key(|p| (p.as_os_str().len(), p.clone()));
    assert!(
        !checkpoints.is_empty(),
        "no *.ckpt file after checkpoint and close"
    );
    let damaged: Vec<&PathBuf> = if all_checkpoints {
        checkpoints.iter().collect()
    } else {
        checkpoints.iter().rev().take(1).collect()
    };
    for path in &damaged {
        let len = common::checkpoint_content_len(path);
        assert!(len > 0, "empty checkpoint {path:?}");
        flip(path, len / 2);
    }
    let mut runtime = common::runtime();
    runtime.block_on(async {
        let engine = Engine::open(config.clone())
            .await
            .unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
        for (key, &(seed, len, hlc)) in &written.values {
            let got = engine
                .get(partition_of(key.as_bytes()), key.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("{context}: {key}: {e}"));
            if key == "before-001" {
                assert!(got.is_none(), "{context}: deleted key came back");
                continue;
            }
            let value = got.unwrap_or_else(|| panic!("{context}: {key} missing"));
            assert_eq!(value.hlc, hlc, "{context}: hlc of {key}");
            assert!(
                value.body[..] == common::body(seed, len)[..],
                "{context}: body of {key} differs"
            );
        }
        let stats = engine.stats();
        eprintln!("{context}: stats after reopen: {stats:?}");
        assert!(
            stats.replayed_records > 0,
            "{context}: nothing replayed, so the damaged checkpoint was used"
        );
        engine.close().await.expect("close");
    });
}

#[test]
fn damaged_newest_checkpoint_falls_back_and_loses_nothing() {
    damaged_checkpoint_case(false);
}

#[test]
fn damaged_every_checkpoint_falls_back_to_full_replay() {
    damaged_checkpoint_case(true);
}
