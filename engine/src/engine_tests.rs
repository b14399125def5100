//! Engine-level unit tests: real files in a temporary directory, a real io_uring runtime.

use std::cell::Cell;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{RwLock, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;

use crate::{Engine, EngineConfig, EngineError, Hlc, PutValue, Summary, SyncPolicy};

/// Fail points are process-wide. Under `cargo test` these tests share one process (nextest
/// gives each its own), so a test that arms a fail point runs alone: it holds this lock for
/// writing, every other test holds it for reading while its engine runs.
static FAIL_POINTS: RwLock<()> = RwLock::new(());

thread_local! {
    /// Set while this test thread holds [`FAIL_POINTS`] for writing.
    static ARMING: Cell<bool> = const { Cell::new(false) };
}

/// Exclusive use of the fail points for one test (and the `fail` crate's scenario).
struct FailPoints {
    scenario: Option<fail::FailScenario<'static>>,
    _exclusive: RwLockWriteGuard<'static, ()>,
}

impl FailPoints {
    fn exclusive() -> Self {
        let exclusive = FAIL_POINTS.write().unwrap_or_else(|e| e.into_inner());
        ARMING.with(|a| a.set(true));
        Self {
            scenario: Some(fail::FailScenario::setup()),
            _exclusive: exclusive,
        }
    }
}

impl Drop for FailPoints {
    fn drop(&mut self) {
        if let Some(scenario) = self.scenario.take() {
            scenario.teardown();
        }
        ARMING.with(|a| a.set(false));
    }
}

fn run<F: Future>(f: F) -> F::Output {
    let _shared =
        (!ARMING.with(Cell::get)).then(|| FAIL_POINTS.read().unwrap_or_else(|e| e.into_inner()));
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f)
}

fn config(dir: &Path) -> EngineConfig {
    EngineConfig {
        segment_size_bytes: 1024 * 1024,
        checkpoint_interval: Duration::from_secs(3600),
        background_compaction: false,
        batch_bytes_max: 256 * 1024,
        ..EngineConfig::new(dir)
    }
}

fn value(body: &[u8]) -> PutValue {
    PutValue {
        meta: Bytes::from_static(b"meta"),
        body: Bytes::copy_from_slice(body),
        summary: Summary {
            size: body.len() as u64,
            digest: [7; 16],
            tag: 1,
        },
        hlc: None,
    }
}

fn body_of(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

async fn get_body(engine: &Engine, partition: u32, key: &str) -> Option<Vec<u8>> {
    engine
        .get(partition, key.as_bytes())
        .await
        .unwrap()
        .map(|v| v.body.to_vec())
}

/// Offset of the first block at or after `from` whose bytes are all zero in `path`.
fn first_zero_block(path: &Path, from: u64) -> u64 {
    let mut f = std::fs::File::open(path).unwrap();
    let mut block = vec![0u8; 4096];
    let mut pos = from;
    loop {
        f.seek(SeekFrom::Start(pos)).unwrap();
        f.read_exact(&mut block).unwrap();
        if block.iter().all(|&b| b == 0) {
            return pos;
        }
        pos += 4096;
    }
}

fn segment_file(dir: &Path, id: u64) -> std::path::PathBuf {
    dir.join("log").join(format!("{id:016x}.seg"))
}

#[test]
fn put_get_delete_scan_across_partitions() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for p in 0..4u32 {
            for i in 0..10 {
                engine
                    .put(
                        p,
                        format!("k/{p}/{i:02}").as_bytes(),
                        value(&body_of(i, 100)),
                    )
                    .await
                    .unwrap();
            }
        }
        assert_eq!(get_body(&engine, 2, "k/2/05").await, Some(body_of(5, 100)));
        assert_eq!(
            get_body(&engine, 1, "k/2/05").await,
            None,
            "keys are per partition"
        );
        let head = engine.head(3, b"k/3/01").await.unwrap().unwrap();
        assert_eq!(&head.meta[..], b"meta");
        assert_eq!(head.body_len, 100);
        assert_eq!(head.summary.digest, [7; 16]);
        let deleted = engine.delete(2, b"k/2/05", None).await.unwrap();
        assert!(deleted.is_some());
        assert_eq!(
            engine.delete(2, b"k/2/05", None).await.unwrap(),
            None,
            "nothing live to delete"
        );
        assert_eq!(get_body(&engine, 2, "k/2/05").await, None);
        assert!(engine.head(2, b"k/2/05").await.unwrap().is_none());
        let all = engine.scan(b"k/", None, 1000);
        assert_eq!(all.len(), 39);
        assert!(all.windows(2).all(|w| w[0].key < w[1].key));
        let page = engine.scan(b"k/2/", Some(b"k/2/03"), 3);
        let keys: Vec<_> = page.iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys, [&b"k/2/04"[..], b"k/2/06", b"k/2/07"]);
        let with_tomb = engine.scan_partition(2, Some(b"k/2/04"), 2, true);
        assert!(with_tomb[0].tombstone && with_tomb[0].key == b"k/2/05"[..]);
        assert_eq!(
            engine.scan_partition(2, Some(b"k/2/04"), 2, false)[0].key,
            b"k/2/06"[..]
        );
        assert_eq!(engine.partitions(), [0, 1, 2, 3]);
        let stats = engine.stats();
        assert_eq!(stats.live_records, 39);
        assert_eq!(stats.tombstones, 1);
        assert!(
            stats.index_bytes_per_entry > 100
                && stats.index_bytes >= 40 * stats.index_bytes_per_entry / 2
        );
        assert!(stats.live_bytes > 0);
        engine.close().await.unwrap();
        assert!(matches!(
            engine.put(0, b"x", value(b"y")).await,
            Err(EngineError::Closed)
        ));
    });
}

#[test]
fn get_range_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        let body = body_of(1, 10_000);
        engine.put(0, b"r", value(&body)).await.unwrap();
        let v = engine.get_range(0, b"r", 100..250).await.unwrap().unwrap();
        assert_eq!(&v.body[..], &body[100..250]);
        assert_eq!(v.body_len, 10_000);
        let clamped = engine
            .get_range(0, b"r", 9_990..20_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&clamped.body[..], &body[9_990..]);
        let empty = engine
            .get_range(0, b"r", 20_000..30_000)
            .await
            .unwrap()
            .unwrap();
        assert!(empty.body.is_empty());
        let long_key = vec![b'k'; crate::MAX_KEY_BYTES + 1];
        assert!(matches!(
            engine.put(0, &long_key, value(b"")).await,
            Err(EngineError::TooLarge { what: "key", .. })
        ));
        let big_meta = PutValue {
            meta: Bytes::from(vec![0u8; crate::MAX_META_BYTES + 1]),
            ..value(b"")
        };
        assert!(matches!(
            engine.put(0, b"m", big_meta).await,
            Err(EngineError::TooLarge {
                what: "metadata",
                ..
            })
        ));
        let huge = futures_util::stream::iter(Vec::<Result<Bytes, std::io::Error>>::new());
        let res = engine
            .put_stream(0, b"h", value(b""), crate::MAX_BODY_BYTES + 1, huge)
            .await;
        assert!(matches!(
            res,
            Err(EngineError::TooLarge { what: "body", .. })
        ));
    });
}

#[test]
fn overwrite_ordering_by_hlc() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        let t = engine.now();
        let newer = Hlc {
            physical_us: t.physical_us + 1_000_000,
            ..t
        };
        let stored = engine
            .put(
                0,
                b"k",
                PutValue {
                    hlc: Some(newer),
                    ..value(b"new")
                },
            )
            .await
            .unwrap();
        assert_eq!(stored, newer);
        engine
            .put(
                0,
                b"k",
                PutValue {
                    hlc: Some(t),
                    ..value(b"old")
                },
            )
            .await
            .unwrap();
        assert_eq!(get_body(&engine, 0, "k").await.unwrap(), b"new");
        assert!(
            engine.now() > newer,
            "the clock moved past an observed timestamp"
        );
        // A delete older than the value does not hide it.
        engine.delete(0, b"k", Some(t)).await.unwrap();
        assert_eq!(get_body(&engine, 0, "k").await.unwrap(), b"new");
        engine.put(0, b"k", value(b"newest")).await.unwrap();
        assert_eq!(get_body(&engine, 0, "k").await.unwrap(), b"newest");
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(
            get_body(&engine, 0, "k").await.unwrap(),
            b"newest",
            "replay applies the same order"
        );
    });
}

#[test]
fn reopen_after_close_uses_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for i in 0..200 {
            engine
                .put(
                    i as u32 % 8,
                    format!("key-{i}").as_bytes(),
                    value(&body_of(i, 500)),
                )
                .await
                .unwrap();
        }
        engine.delete(3, b"key-3", None).await.unwrap();
        engine.close().await.unwrap();
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(
            engine.stats().replayed_records,
            0,
            "a clean close leaves nothing to replay"
        );
        for i in 0..200 {
            let want = (i != 3).then(|| body_of(i, 500));
            assert_eq!(
                get_body(&engine, i as u32 % 8, &format!("key-{i}")).await,
                want
            );
        }
        assert_eq!(engine.stats().tombstones, 1);
        let ckpts = std::fs::read_dir(dir.path().join("index"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".ckpt"))
            })
            .count();
        assert_eq!(ckpts, 2, "the two newest checkpoints are kept");
    });
}

#[test]
fn reopen_without_close_replays() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for i in 0..100 {
            engine
                .put(0, format!("key-{i}").as_bytes(), value(&body_of(i, 300)))
                .await
                .unwrap();
        }
        engine.checkpoint().await.unwrap();
        for i in 100..150 {
            engine
                .put(0, format!("key-{i}").as_bytes(), value(&body_of(i, 300)))
                .await
                .unwrap();
        }
        engine.delete(0, b"key-7", None).await.unwrap();
        engine.delete(0, b"key-120", None).await.unwrap();
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(
            engine.stats().replayed_records,
            52,
            "only records after the checkpoint replay"
        );
        for i in 0..150 {
            let want = (i != 7 && i != 120).then(|| body_of(i, 300));
            assert_eq!(
                get_body(&engine, 0, &format!("key-{i}")).await,
                want,
                "key-{i}"
            );
        }
        // New writes after a replay get fresh LSNs and survive another crash.
        engine.put(0, b"after", value(b"x")).await.unwrap();
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(get_body(&engine, 0, "after").await.unwrap(), b"x");
        assert_eq!(
            get_body(&engine, 0, "key-149").await,
            Some(body_of(149, 300))
        );
    });
}

#[test]
fn segment_rollover_with_small_segments() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for i in 0..60 {
            engine
                .put(
                    1,
                    format!("key-{i}").as_bytes(),
                    value(&body_of(i, 100_000)),
                )
                .await
                .unwrap();
        }
        let stats = engine.stats();
        assert!(stats.segments >= 7, "6 MB in 1 MiB segments: {stats:?}");
        for i in 0..60 {
            assert_eq!(
                get_body(&engine, 1, &format!("key-{i}")).await,
                Some(body_of(i, 100_000))
            );
        }
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(engine.stats().replayed_records, 60);
        for i in 0..60 {
            assert_eq!(
                get_body(&engine, 1, &format!("key-{i}")).await,
                Some(body_of(i, 100_000))
            );
        }
    });
}

#[test]
fn torn_tail_is_truncated_and_never_resurrected() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for i in 0..10 {
            engine
                .put(0, format!("key-{i}").as_bytes(), value(&body_of(i, 1000)))
                .await
                .unwrap();
        }
        drop(engine);
    });
    // Simulate a torn batch after the head: a copy of the first batch block (a real record
    // header of the current life) with a flipped body byte, then garbage.
    let seg = segment_file(dir.path(), 0);
    let end = first_zero_block(&seg, 4096);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let mut block = vec![0u8; 4096];
    f.seek(SeekFrom::Start(4096)).unwrap();
    f.read_exact(&mut block).unwrap();
    block[500] ^= 0xff;
    f.seek(SeekFrom::Start(end)).unwrap();
    f.write_all(&block).unwrap();
    f.write_all(&vec![0xabu8; 8192]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(
            engine.stats().corrupt_records,
            0,
            "a torn tail is not corruption"
        );
        for i in 0..10 {
            assert_eq!(
                get_body(&engine, 0, &format!("key-{i}")).await,
                Some(body_of(i, 1000))
            );
        }
        engine.put(0, b"after", value(b"x")).await.unwrap();
        drop(engine);
    });
    // The tail was zero-filled before new writes: nothing of the garbage remains.
    let zero_at = first_zero_block(&seg, 4096);
    assert!(zero_at < end + 4096 * 3);
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(get_body(&engine, 0, "after").await.unwrap(), b"x");
        assert_eq!(engine.stats().live_records, 11);
    });
}

#[test]
fn short_padding_before_a_block_boundary_is_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        // 112 + 1 + 4 + 3971 = 4088: eight bytes of padding, and the next record's LSN sits
        // where a header read at the padding would find a life sequence.
        assert_eq!(crate::record::record_len(1, 4, 3971), 4088);
        engine.put(0, b"a", value(&body_of(1, 3971))).await.unwrap();
        engine.put(0, b"b", value(b"x")).await.unwrap();
    });
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(engine.stats().corrupt_records, 0);
        assert_eq!(get_body(&engine, 0, "a").await, Some(body_of(1, 3971)));
        assert_eq!(get_body(&engine, 0, "b").await.unwrap(), b"x");
    });
}

#[test]
fn corrupt_record_in_the_middle_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut offsets = Vec::new();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for i in 0..5 {
            engine
                .put(0, format!("key-{i}").as_bytes(), value(&body_of(i, 5000)))
                .await
                .unwrap();
            let e = *engine
                .inner
                .state
                .borrow()
                .index
                .get(0, format!("key-{i}").as_bytes())
                .unwrap();
            offsets.push(e.offset as u64);
        }
        drop(engine);
    });
    let seg = segment_file(dir.path(), 0);
    let flip = |at: u64| {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .unwrap();
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[b[0] ^ 0x01]).unwrap();
        f.sync_all().unwrap();
    };
    flip(offsets[1] + 3000); // body of key-1: skipped by its trusted length
    flip(offsets[3] + 20); // header of key-3: resync at the next block
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(engine.stats().corrupt_records, 2);
        for i in [0, 2, 4] {
            assert_eq!(
                get_body(&engine, 0, &format!("key-{i}")).await,
                Some(body_of(i, 5000))
            );
        }
        assert_eq!(get_body(&engine, 0, "key-1").await, None);
        assert_eq!(get_body(&engine, 0, "key-3").await, None);
        engine.close().await.unwrap();
    });
    // After a checkpoint, a flipped byte is found by the read itself.
    let e4 = offsets[4];
    flip(e4 + 2000);
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert!(matches!(
            engine.get(0, b"key-4").await,
            Err(EngineError::Corrupt { .. })
        ));
        assert!(matches!(
            engine.get_range(0, b"key-4", 0..10).await,
            Err(EngineError::Corrupt { .. })
        ));
        assert!(
            engine.head(0, b"key-4").await.unwrap().is_some(),
            "meta is intact and verified"
        );
        assert_eq!(engine.stats().corrupt_records, 2);
    });
}

/// Puts `count` keys `<prefix>-<i>` of 50 KB three times over, so two thirds of those bytes are dead.
async fn overwrite_keys_three_times(engine: &Engine, prefix: &str, count: usize) {
    for round in 0..3 {
        for i in 0..count {
            engine
                .put(
                    0,
                    format!("{prefix}-{i}").as_bytes(),
                    value(&body_of(i + round, 50_000)),
                )
                .await
                .unwrap();
        }
    }
}

#[test]
fn compaction_reclaims_space_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        overwrite_keys_three_times(&engine, "key", 40).await;
        let before = engine.stats();
        assert!(before.dead_bytes > before.live_bytes, "{before:?}");
        let report = engine.compact().await.unwrap();
        assert!(report.segments_compacted >= 2, "{report:?}");
        assert!(report.bytes_reclaimed > 0);
        let after = engine.stats();
        assert!(after.dead_bytes < before.dead_bytes, "{after:?}");
        assert!(after.free_segments > before.free_segments);
        assert_eq!(after.segments_compacted, report.segments_compacted);
        for i in 0..40 {
            assert_eq!(
                get_body(&engine, 0, &format!("key-{i}")).await,
                Some(body_of(i + 2, 50_000))
            );
        }
        // Recycled segments are reused by new writes, and everything survives a crash.
        for i in 0..40 {
            engine
                .put(
                    0,
                    format!("key-{i}").as_bytes(),
                    value(&body_of(i + 3, 50_000)),
                )
                .await
                .unwrap();
        }
        assert_eq!(
            engine.stats().segments,
            after.segments,
            "no new segment was needed"
        );
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for i in 0..40 {
            assert_eq!(
                get_body(&engine, 0, &format!("key-{i}")).await,
                Some(body_of(i + 3, 50_000))
            );
        }
        assert_eq!(engine.stats().corrupt_records, 0);
    });
}

async fn tombstone_in_sealed_segment(engine: &Engine) {
    engine.put(0, b"gone", value(b"v")).await.unwrap();
    engine.delete(0, b"gone", None).await.unwrap();
    overwrite_keys_three_times(engine, "filler", 20).await;
}

#[test]
fn tombstones_are_kept_for_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        tombstone_in_sealed_segment(&engine).await;
        let report = engine.compact().await.unwrap();
        assert!(report.segments_compacted >= 1);
        assert_eq!(report.tombstones_dropped, 0);
        assert_eq!(engine.stats().tombstones, 1);
        assert!(
            engine
                .scan_partition(0, None, 100, true)
                .iter()
                .any(|e| e.key == b"gone"[..] && e.tombstone)
        );
    });
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let cfg = EngineConfig {
            tombstone_grace: Duration::ZERO,
            ..config(dir.path())
        };
        let engine = Engine::open(cfg.clone()).await.unwrap();
        tombstone_in_sealed_segment(&engine).await;
        let report = engine.compact().await.unwrap();
        assert_eq!(report.tombstones_dropped, 1);
        assert_eq!(engine.stats().tombstones, 0);
        drop(engine);
        let engine = Engine::open(cfg).await.unwrap();
        assert_eq!(engine.stats().tombstones, 0);
        assert_eq!(
            get_body(&engine, 0, "gone").await,
            None,
            "the put under the tombstone stays dead"
        );
    });
}

#[test]
fn a_replicated_partition_drops_tombstones_only_at_its_floor_never_by_age() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let cfg = EngineConfig {
            tombstone_grace: Duration::ZERO,
            ..config(dir.path())
        };
        let engine = Engine::open(cfg).await.unwrap();
        engine.drop_tombstones_at_floors();
        tombstone_in_sealed_segment(&engine).await;
        let tombstone = engine.lookup(0, b"gone").unwrap().hlc;
        let report = engine.compact().await.unwrap();
        assert_eq!(
            report.tombstones_dropped, 0,
            "no floor: kept whatever its age"
        );
        let below = Hlc {
            physical_us: tombstone.physical_us - 1,
            ..tombstone
        };
        engine.raise_tombstone_floor(0, below);
        engine.raise_tombstone_floor(1, tombstone);
        overwrite_keys_three_times(&engine, "filler", 20).await;
        let report = engine.compact().await.unwrap();
        assert_eq!(
            report.tombstones_dropped, 0,
            "a floor below it, or another partition's"
        );
        engine.raise_tombstone_floor(0, tombstone);
        overwrite_keys_three_times(&engine, "filler", 20).await;
        let report = engine.compact().await.unwrap();
        assert_eq!(report.tombstones_dropped, 1, "at the floor: dropped");
        assert_eq!(get_body(&engine, 0, "gone").await, None);
    });
}

#[test]
fn put_stream_of_20_mib() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let cfg = EngineConfig {
            segment_size_bytes: 64 * 1024 * 1024,
            ..config(dir.path())
        };
        let engine = Engine::open(cfg.clone()).await.unwrap();
        let len = 20 * 1024 * 1024 + 123;
        let body = Bytes::from(body_of(9, len));
        let pieces: Vec<Result<Bytes, std::io::Error>> = (0..len)
            .step_by(65_536)
            .map(|a| Ok(body.slice(a..(a + 65_536).min(len))))
            .collect();
        let hlc = engine
            .put_stream(
                0,
                b"big",
                value(b""),
                len as u64,
                futures_util::stream::iter(pieces),
            )
            .await
            .unwrap();
        let v = engine.get(0, b"big").await.unwrap().unwrap();
        assert_eq!(v.hlc, hlc);
        assert!(v.body == body);
        let r = engine
            .get_range(0, b"big", 10_000_000..10_100_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&r.body[..], &body[10_000_000..10_100_000]);
        assert_eq!(r.body_len, len as u64);
        let short = futures_util::stream::iter([Ok(Bytes::from_static(b"abc"))]);
        let res = engine
            .put_stream(0, b"short", value(b""), 1_000_000, short)
            .await;
        assert!(matches!(res, Err(EngineError::Body(_))));
        let failing = futures_util::stream::iter([
            Ok(body.slice(0..2_000_000)),
            Err(std::io::Error::other("client went away")),
        ]);
        let res = engine
            .put_stream(0, b"broken", value(b""), 3_000_000, failing)
            .await;
        assert!(matches!(res, Err(EngineError::Body(_))));
        assert_eq!(get_body(&engine, 0, "broken").await, None);
        engine.put(0, b"after", value(b"small")).await.unwrap();
        drop(engine);
        let engine = Engine::open(cfg).await.unwrap();
        assert!(engine.get(0, b"big").await.unwrap().unwrap().body == body);
        assert_eq!(get_body(&engine, 0, "after").await.unwrap(), b"small");
        assert_eq!(get_body(&engine, 0, "broken").await, None);
        assert_eq!(
            engine.stats().corrupt_records,
            0,
            "an abandoned stream leaves a hole, not corruption"
        );
    });
}

#[test]
fn cache_hits_are_counted_and_invalidated() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        engine.put(0, b"hot", value(b"v1")).await.unwrap();
        assert_eq!(get_body(&engine, 0, "hot").await.unwrap(), b"v1");
        assert_eq!(get_body(&engine, 0, "hot").await.unwrap(), b"v1");
        let stats = engine.stats();
        assert_eq!((stats.cache_misses, stats.cache_hits), (1, 1));
        engine.put(0, b"hot", value(b"v2")).await.unwrap();
        assert_eq!(get_body(&engine, 0, "hot").await.unwrap(), b"v2");
        engine.delete(0, b"hot", None).await.unwrap();
        assert_eq!(get_body(&engine, 0, "hot").await, None);
    });
}

#[test]
fn group_commit_batches_concurrent_puts() {
    for sync in [
        SyncPolicy::Always,
        SyncPolicy::BatchWindow(Duration::from_millis(2)),
        SyncPolicy::NoneUnsafe,
    ] {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let engine = Engine::open(EngineConfig {
                sync,
                ..config(dir.path())
            })
            .await
            .unwrap();
            let puts = (0..64).map(|i| {
                let engine = engine.clone();
                async move {
                    engine
                        .put(0, format!("k{i}").as_bytes(), value(&body_of(i, 4096)))
                        .await
                }
            });
            for r in join_all(puts).await {
                r.unwrap();
            }
            let stats = engine.stats();
            assert!(stats.batches_written < 64, "{sync:?}: {stats:?}");
            if sync == SyncPolicy::NoneUnsafe {
                assert_eq!(stats.syncs, 0);
            }
            drop(engine);
            let engine = Engine::open(config(dir.path())).await.unwrap();
            assert_eq!(engine.stats().live_records, 64);
        });
    }
}

#[test]
fn disk_full_then_recovers_after_deletes_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let cfg = EngineConfig {
            disk_bytes_max: Some(5 * 1024 * 1024),
            tombstone_grace: Duration::ZERO,
            ..config(dir.path())
        };
        let engine = Engine::open(cfg).await.unwrap();
        let mut stored = Vec::new();
        let mut full = false;
        for i in 0..200 {
            match engine
                .put(
                    0,
                    format!("key-{i}").as_bytes(),
                    value(&body_of(i, 100_000)),
                )
                .await
            {
                Ok(_) => stored.push(i),
                Err(EngineError::DiskFull { .. }) => {
                    full = true;
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(full, "the configured bound must be reached");
        assert!(stored.len() >= 30);
        let stats = engine.stats();
        assert!(stats.disk_full, "a refused put marks the shard full");
        assert_eq!(stats.writes_refused_disk_full, 1);
        for &i in &stored {
            assert_eq!(
                get_body(&engine, 0, &format!("key-{i}")).await,
                Some(body_of(i, 100_000)),
                "reads work when full"
            );
        }
        // Deletes are small and fit in the head; then compaction frees whole segments.
        let deletes = stored.iter().filter(|&&i| i % 4 != 0).map(|i| {
            let engine = engine.clone();
            let key = format!("key-{i}");
            async move { engine.delete(0, key.as_bytes(), None).await }
        });
        for r in join_all(deletes).await {
            r.unwrap();
        }
        let report = engine.compact().await.unwrap();
        assert!(report.segments_compacted >= 1, "{report:?}");
        engine
            .put(0, b"after-full", value(&body_of(1, 100_000)))
            .await
            .unwrap();
        for &i in &stored {
            let want = (i % 4 == 0).then(|| body_of(i, 100_000));
            assert_eq!(get_body(&engine, 0, &format!("key-{i}")).await, want);
        }
        assert!(engine.stats().segments <= 5);
    });
}

#[test]
fn failed_segment_header_fdatasync_stops_writes() {
    // Fail points are process-wide: this test holds them alone (see `FailPoints`).
    let _fail_points = FailPoints::exclusive();
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        engine
            .put(0, b"a", value(&body_of(1, 700_000)))
            .await
            .unwrap();
        // The next large put needs a rollover, whose header rewrite fails its fdatasync: the
        // device may have dropped other completed writes, so no later sync may acknowledge.
        fail::cfg("engine::segment_header_fdatasync", "1*return").unwrap();
        let failed = engine.put(0, b"b", value(&body_of(2, 700_000))).await;
        fail::remove("engine::segment_header_fdatasync");
        assert!(failed.is_err(), "{failed:?}");
        let after = engine.put(0, b"c", value(b"small")).await;
        assert!(matches!(after, Err(EngineError::Closed)), "{after:?}");
        assert_eq!(get_body(&engine, 0, "a").await, Some(body_of(1, 700_000)));
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(get_body(&engine, 0, "a").await, Some(body_of(1, 700_000)));
        assert_eq!(get_body(&engine, 0, "b").await, None);
        engine.put(0, b"c", value(b"small")).await.unwrap();
        assert_eq!(get_body(&engine, 0, "c").await.unwrap(), b"small");
    });
}

#[test]
fn dropped_tombstone_stays_dropped_while_a_stream_holds_the_replay_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig {
        tombstone_grace: Duration::ZERO,
        ..config(dir.path())
    };
    run(async {
        let engine = Engine::open(cfg.clone()).await.unwrap();
        // A streamed put that never finishes: its reservation holds every checkpoint's replay
        // start (and covered LSN) back to before the puts below.
        let (body_tx, body_rx) = futures_channel::mpsc::unbounded();
        body_tx
            .unbounded_send(Ok(Bytes::from(vec![1u8; 1000])))
            .unwrap();
        let streamer = engine.clone();
        monoio::spawn(async move {
            let _keep_open = body_tx;
            streamer
                .put_stream(0, b"stalled", value(b""), 200_000, body_rx)
                .await
        });
        monoio::time::sleep(Duration::from_millis(20)).await;
        engine.put(0, b"gone", value(b"old")).await.unwrap();
        for i in 0..20 {
            engine
                .put(0, format!("pad-{i}").as_bytes(), value(&body_of(i, 50_000)))
                .await
                .unwrap();
        }
        engine.delete(0, b"gone", None).await.unwrap();
        overwrite_keys_three_times(&engine, "churn", 20).await;
        let report = engine.compact().await.unwrap();
        assert!(report.segments_compacted >= 1, "{report:?}");
        assert_eq!(get_body(&engine, 0, "gone").await, None);
        // The runtime ends with the stream still pending: a crash.
    });
    run(async {
        let engine = Engine::open(cfg.clone()).await.unwrap();
        assert_eq!(
            get_body(&engine, 0, "gone").await,
            None,
            "the put under a dropped tombstone came back after a crash"
        );
        assert_eq!(
            get_body(&engine, 0, "churn-3").await,
            Some(body_of(5, 50_000))
        );
        assert_eq!(get_body(&engine, 0, "stalled").await, None);
    });
}

#[test]
fn stream_sharing_a_failed_fdatasync_is_not_acknowledged() {
    // Fail points are process-wide: this test holds them alone (see `FailPoints`).
    let _fail_points = FailPoints::exclusive();
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let cfg = EngineConfig {
            sync: SyncPolicy::BatchWindow(Duration::from_millis(100)),
            ..config(dir.path())
        };
        let engine = Engine::open(cfg).await.unwrap();
        while engine.stats().free_segments < 2 {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        // The put opens a batch window; the streamed put reserves, writes its pieces and asks
        // for its sync inside that window, so both wait on the batch's fdatasync, which fails.
        fail::cfg("engine::fdatasync", "1*return").unwrap();
        let small = engine.put(0, b"small", value(b"x"));
        let streamer = engine.clone();
        let stream = monoio::spawn(async move {
            monoio::time::sleep(Duration::from_millis(10)).await;
            let body = futures_util::stream::iter([Ok(Bytes::from(body_of(3, 200_000)))]);
            streamer
                .put_stream(0, b"streamed", value(b""), 200_000, body)
                .await
        });
        let small = small.await;
        let streamed = stream.await;
        fail::remove("engine::fdatasync");
        assert!(small.is_err(), "{small:?}");
        assert!(
            streamed.is_err(),
            "a record covered only by a failed fdatasync was acknowledged: {streamed:?}"
        );
        assert_eq!(get_body(&engine, 0, "streamed").await, None);
    });
}

#[test]
fn earlier_life_leftovers_in_a_reused_segment_are_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        overwrite_keys_three_times(&engine, "key", 40).await;
        let report = engine.compact().await.unwrap();
        assert!(report.segments_compacted >= 2, "{report:?}");
        for i in 0..6 {
            engine
                .put(
                    0,
                    format!("big-{i}").as_bytes(),
                    value(&body_of(i, 600_000)),
                )
                .await
                .unwrap();
        }
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(engine.stats().corrupt_records, 0);
    });
}

/// Offset of the first hole at or after `from` (ext4 reports unwritten extents as holes).
fn first_hole(path: &Path, from: u64) -> u64 {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: lseek on a file descriptor we own, with no pointers involved.
    let at = unsafe { libc::lseek(f.as_raw_fd(), from as libc::off_t, libc::SEEK_HOLE) };
    assert!(at >= 0, "lseek: {}", std::io::Error::last_os_error());
    at as u64
}

#[test]
fn small_batches_are_zero_filled_ahead_and_new_segments_are_not() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let cfg = EngineConfig {
            segment_size_bytes: 4 * 1024 * 1024,
            ..config(dir.path())
        };
        let engine = Engine::open(cfg).await.unwrap();
        monoio::time::sleep(Duration::from_millis(100)).await;
        let mut files: Vec<_> = std::fs::read_dir(dir.path().join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 2, "head and free segments: {files:?}");
        for f in &files {
            assert_eq!(first_hole(f, 4096), 4096, "created unwritten: {f:?}");
        }
        for i in 0..8 {
            let key = format!("small-{i}");
            engine
                .put(1, key.as_bytes(), value(&body_of(i, 4000)))
                .await
                .unwrap();
        }
        monoio::time::sleep(Duration::from_millis(500)).await;
        // The head (the oldest segment) is zero-filled to its end, well ahead of 8 records.
        assert_eq!(first_hole(&files[0], 4096), 4 * 1024 * 1024);
        for i in 0..8 {
            let key = format!("small-{i}");
            assert_eq!(get_body(&engine, 1, &key).await, Some(body_of(i, 4000)));
        }
    });
}

#[test]
fn zero_fill_ahead_never_overwrites_records() {
    const ROUNDS: usize = 40;
    const PUTS: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    // Small segments: a zero piece covers most of a free segment, so rollovers into a segment
    // whose zero-fill is in flight are frequent.
    let cfg = |dir: &Path| EngineConfig {
        segment_size_bytes: 512 * 1024,
        ..config(dir)
    };
    run(async {
        let engine = Engine::open(cfg(dir.path())).await.unwrap();
        // Small batches (zeroing wanted) and streamed records (written into unwritten
        // extents) interleaved across many 1 MiB segments: the pre-writer zero-fills the next
        // free segment while it becomes the head.
        for round in 0..ROUNDS {
            let puts = (0..PUTS).map(|j| {
                let i = round * 100 + j;
                let len = if j == 0 { 300_000 } else { 3000 };
                let engine = &engine;
                async move {
                    let key = format!("k-{i}");
                    engine
                        .put(1, key.as_bytes(), value(&body_of(i, len)))
                        .await
                        .unwrap();
                }
            });
            join_all(puts).await;
        }
        let check = |engine: &Engine| {
            let engine = engine.clone();
            async move {
                for round in 0..ROUNDS {
                    for j in 0..PUTS {
                        let i = round * 100 + j;
                        let len = if j == 0 { 300_000 } else { 3000 };
                        let key = format!("k-{i}");
                        assert_eq!(
                            get_body(&engine, 1, &key).await,
                            Some(body_of(i, len)),
                            "{key}"
                        );
                    }
                }
            }
        };
        check(&engine).await;
        assert_eq!(engine.stats().corrupt_records, 0);
        drop(engine);
        let engine = Engine::open(cfg(dir.path())).await.unwrap();
        assert_eq!(engine.stats().corrupt_records, 0);
        check(&engine).await;
    });
}

/// Sum of the on-disk lengths of `partition`'s index entries.
fn partition_bytes(engine: &Engine, partition: u32) -> u64 {
    engine
        .inner
        .state
        .borrow()
        .index
        .iter()
        .filter(|(p, _, _)| *p == partition)
        .map(|(_, _, e)| e.len as u64)
        .sum()
}

/// Offsets of the partition-drop records in a segment file (every one starts a block).
fn drop_record_offsets(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    (4096..bytes.len() - 4096)
        .step_by(4096)
        .filter(|&at| &bytes[at..at + 4] == b"LEOR" && bytes[at + 6] == 3)
        .map(|at| at as u64)
        .collect()
}

#[test]
fn drop_partition_forgets_one_partition_and_survives_reopen() {
    for clean_close in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let engine = Engine::open(config(dir.path())).await.unwrap();
            for p in 0..3u32 {
                for i in 0..20 {
                    let key = format!("k/{p}/{i:02}");
                    engine
                        .put(p, key.as_bytes(), value(&body_of(i, 700)))
                        .await
                        .unwrap();
                }
            }
            engine.delete(1, b"k/1/03", None).await.unwrap();
            let t = engine.now();
            engine.delete(1, b"never-put", Some(t)).await.unwrap();
            // Some of the partition comes from a checkpoint, some from replay.
            engine.checkpoint().await.unwrap();
            for i in 20..30 {
                let key = format!("k/1/{i:02}");
                engine
                    .put(1, key.as_bytes(), value(&body_of(i, 700)))
                    .await
                    .unwrap();
            }
            let before = engine.stats();
            let dropped_bytes = partition_bytes(&engine, 1);
            assert_eq!(engine.drop_partition(1).await.unwrap(), 31);
            let after = engine.stats();
            assert_eq!(after.live_records, before.live_records - 29);
            assert_eq!(after.tombstones, before.tombstones - 2);
            assert_eq!(after.live_bytes, before.live_bytes - dropped_bytes);
            assert_eq!(engine.partitions(), [0, 2]);
            assert!(engine.scan_partition(1, None, 100, true).is_empty());
            assert!(engine.lookup(1, b"never-put").is_none());
            assert_eq!(engine.drop_partition(1).await.unwrap(), 0, "nothing left");
            // A put after the drop survives; the other partitions are untouched.
            engine.put(1, b"k/1/05", value(b"after")).await.unwrap();
            assert_eq!(engine.partitions(), [0, 1, 2]);
            let check = |engine: Engine| async move {
                for i in 0..30 {
                    let want = (i == 5).then(|| b"after".to_vec());
                    assert_eq!(get_body(&engine, 1, &format!("k/1/{i:02}")).await, want);
                }
                for p in [0, 2] {
                    for i in 0..20 {
                        assert_eq!(
                            get_body(&engine, p, &format!("k/{p}/{i:02}")).await,
                            Some(body_of(i, 700))
                        );
                    }
                }
                assert_eq!(engine.scan_partition(1, None, 100, true).len(), 1);
                assert_eq!(engine.partitions(), [0, 1, 2]);
                engine.stats()
            };
            let live = check(engine.clone()).await;
            if clean_close {
                engine.close().await.unwrap();
            }
            drop(engine);
            let engine = Engine::open(config(dir.path())).await.unwrap();
            let reopened = check(engine.clone()).await;
            assert_eq!(
                (
                    reopened.live_records,
                    reopened.tombstones,
                    reopened.live_bytes
                ),
                (live.live_records, live.tombstones, live.live_bytes)
            );
            assert_eq!(reopened.corrupt_records, 0);
            if clean_close {
                assert_eq!(reopened.replayed_records, 0);
            }
        });
    }
}

#[test]
fn dropped_partition_stays_dropped_through_compaction_checkpoint_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for i in 0..40 {
            let key = format!("gone-{i}");
            engine
                .put(7, key.as_bytes(), value(&body_of(i, 50_000)))
                .await
                .unwrap();
            if i % 4 == 0 {
                let key = format!("kept-{i}");
                engine
                    .put(8, key.as_bytes(), value(&body_of(i, 50_000)))
                    .await
                    .unwrap();
            }
        }
        let kept_bytes = partition_bytes(&engine, 8);
        let before = engine.stats();
        assert_eq!(engine.drop_partition(7).await.unwrap(), 40);
        let dropped = engine.stats();
        assert_eq!(dropped.live_bytes, kept_bytes);
        assert!(dropped.dead_bytes > before.dead_bytes + 40 * 50_000);
        engine.put(7, b"fresh", value(b"new owner")).await.unwrap();
        let report = engine.compact().await.unwrap();
        assert!(report.segments_compacted >= 1, "{report:?}");
        assert!(
            report.bytes_moved <= kept_bytes,
            "only partition 8 is moved, never a dropped record: {report:?}"
        );
        engine.checkpoint().await.unwrap();
        let compacted = engine.stats();
        assert!(
            compacted.dead_bytes < dropped.dead_bytes / 2,
            "{compacted:?}"
        );
        assert!(compacted.free_segments > dropped.free_segments);
        let check = |engine: Engine| async move {
            for i in 0..40 {
                assert_eq!(get_body(&engine, 7, &format!("gone-{i}")).await, None);
                let want = (i % 4 == 0).then(|| body_of(i, 50_000));
                assert_eq!(get_body(&engine, 8, &format!("kept-{i}")).await, want);
            }
            assert_eq!(get_body(&engine, 7, "fresh").await.unwrap(), b"new owner");
            assert_eq!(engine.scan_partition(7, None, 100, true).len(), 1);
            engine.stats()
        };
        check(engine.clone()).await;
        // Recycled segments are written again, then a crash.
        overwrite_keys_three_times(&engine, "churn", 10).await;
        let live = check(engine.clone()).await;
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        let reopened = check(engine.clone()).await;
        assert_eq!(
            (reopened.live_records, reopened.live_bytes),
            (live.live_records, live.live_bytes)
        );
        assert_eq!(reopened.corrupt_records, 0);
    });
}

#[test]
fn a_stream_begun_before_a_drop_and_finished_after_it_stays_dropped() {
    for clean_close in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        run(async {
            let engine = Engine::open(config(dir.path())).await.unwrap();
            engine.put(4, b"before", value(b"x")).await.unwrap();
            let (body_tx, body_rx) = futures_channel::mpsc::unbounded();
            body_tx
                .unbounded_send(Ok(Bytes::from(body_of(1, 100_000))))
                .unwrap();
            let streamer = engine.clone();
            let stream = monoio::spawn(async move {
                streamer
                    .put_stream(4, b"streamed", value(b""), 200_000, body_rx)
                    .await
            });
            monoio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(
                engine.inner.state.borrow().unapplied.len(),
                1,
                "the stream holds a reservation"
            );
            assert_eq!(engine.drop_partition(4).await.unwrap(), 1);
            body_tx
                .unbounded_send(Ok(Bytes::from(body_of(2, 100_000))))
                .unwrap();
            drop(body_tx);
            // Acknowledged (it is durable), but written before the drop: never visible.
            stream.await.unwrap();
            assert_eq!(get_body(&engine, 4, "streamed").await, None);
            assert_eq!(get_body(&engine, 4, "before").await, None);
            assert!(engine.partitions().is_empty());
            assert_eq!(
                (engine.stats().live_records, engine.stats().live_bytes),
                (0, 0)
            );
            engine.put(4, b"after", value(b"y")).await.unwrap();
            if clean_close {
                engine.close().await.unwrap();
            }
            drop(engine);
            let engine = Engine::open(config(dir.path())).await.unwrap();
            assert_eq!(get_body(&engine, 4, "streamed").await, None);
            assert_eq!(get_body(&engine, 4, "before").await, None);
            assert_eq!(get_body(&engine, 4, "after").await.unwrap(), b"y");
            assert_eq!(engine.stats().live_records, 1);
            assert_eq!(engine.stats().corrupt_records, 0);
        });
    }
}

#[test]
fn a_drop_behind_an_unapplied_write_is_replayed_and_its_segment_kept() {
    let dir = tempfile::tempdir().unwrap();
    let drop_segment = Cell::new(0u64);
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        // A streamed put (another partition) that never finishes: it holds every checkpoint's
        // covered LSN and replay start before the drop.
        let (body_tx, body_rx) = futures_channel::mpsc::unbounded();
        body_tx
            .unbounded_send(Ok(Bytes::from(vec![1u8; 1000])))
            .unwrap();
        let streamer = engine.clone();
        monoio::spawn(async move {
            let _keep_open = body_tx;
            streamer
                .put_stream(9, b"stalled", value(b""), 200_000, body_rx)
                .await
        });
        monoio::time::sleep(Duration::from_millis(20)).await;
        for i in 0..10 {
            engine
                .put(5, format!("p5-{i}").as_bytes(), value(&body_of(i, 1000)))
                .await
                .unwrap();
        }
        // The drop goes into a later segment than the partition's records.
        overwrite_keys_three_times(&engine, "fill", 10).await;
        assert_eq!(engine.drop_partition(5).await.unwrap(), 10);
        let (segment, life) = {
            let state = engine.inner.state.borrow();
            (state.log.head, state.log.head().life_seq)
        };
        drop_segment.set(segment);
        engine.checkpoint().await.unwrap();
        assert!(engine.inner.state.borrow().checkpoint_lsn < engine.inner.state.borrow().next_lsn);
        // The drop's segment becomes sealed and dead; compaction must keep it while the stream
        // holds replay before the drop.
        overwrite_keys_three_times(&engine, "fill", 10).await;
        overwrite_keys_three_times(&engine, "more", 10).await;
        let report = engine.compact().await.unwrap();
        assert!(report.segments_compacted >= 1, "{report:?}");
        {
            let state = engine.inner.state.borrow();
            let seg = &state.log.segments[&segment];
            assert_ne!(segment, state.log.head);
            assert_eq!(state.index.live_bytes(segment as u32), 0);
            assert_eq!((seg.life_seq, seg.drop_lsn_max > 0), (life, true));
        }
        for i in 0..10 {
            assert_eq!(get_body(&engine, 5, &format!("p5-{i}")).await, None);
        }
        // The runtime ends with the stream pending: a crash.
    });
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for i in 0..10 {
            assert_eq!(
                get_body(&engine, 5, &format!("p5-{i}")).await,
                None,
                "a record the drop removed came back"
            );
        }
        assert!(engine.partitions().iter().all(|&p| p != 5));
        assert_eq!(get_body(&engine, 9, "stalled").await, None);
        assert_eq!(
            get_body(&engine, 0, "fill-3").await,
            Some(body_of(5, 50_000))
        );
        // Nothing holds replay back any more: the segment is recycled, and the drop stays.
        engine.compact().await.unwrap();
        {
            let state = engine.inner.state.borrow();
            let seg = &state.log.segments[&drop_segment.get()];
            assert_eq!(seg.drop_lsn_max, 0, "recycled: {:?}", seg.state);
        }
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for i in 0..10 {
            assert_eq!(get_body(&engine, 5, &format!("p5-{i}")).await, None);
        }
        assert_eq!(engine.stats().corrupt_records, 0);
    });
}

#[test]
fn a_drop_resets_the_partition_tombstone_floor() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let cfg = EngineConfig {
            tombstone_grace: Duration::ZERO,
            ..config(dir.path())
        };
        let engine = Engine::open(cfg).await.unwrap();
        engine.drop_tombstones_at_floors();
        let far = Hlc {
            physical_us: engine.now().physical_us + 3_600_000_000,
            logical: 0,
            node_id: 0,
        };
        engine.raise_tombstone_floor(3, far);
        engine.raise_tombstone_floor(4, far);
        engine.drop_partition(3).await.unwrap();
        let floors = |engine: &Engine| match &*engine.inner.tombstones.borrow() {
            crate::TombstonePolicy::Floors(f) => f.clone(),
            crate::TombstonePolicy::Age => panic!("policy changed"),
        };
        assert!(!floors(&engine).contains_key(&3));
        assert_eq!(
            floors(&engine).get(&4),
            Some(&far),
            "other partitions keep theirs"
        );
        // Data of the partition's next owner: its tombstone is below the old floor, but with
        // no floor of its own it is kept.
        engine.put(3, b"gone", value(b"v")).await.unwrap();
        engine.delete(3, b"gone", None).await.unwrap();
        overwrite_keys_three_times(&engine, "filler", 20).await;
        let report = engine.compact().await.unwrap();
        assert!(report.segments_compacted >= 1, "{report:?}");
        assert_eq!(report.tombstones_dropped, 0);
        assert!(engine.lookup(3, b"gone").is_some_and(|l| l.tombstone));
        // A fresh floor works as before.
        engine.raise_tombstone_floor(3, far);
        overwrite_keys_three_times(&engine, "filler", 20).await;
        let report = engine.compact().await.unwrap();
        assert_eq!(report.tombstones_dropped, 1);
    });
}

#[test]
fn a_relocation_encoded_after_a_drop_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        engine.put(2, b"k", value(&body_of(1, 5000))).await.unwrap();
        let source = *engine.inner.state.borrow().index.get(2, b"k").unwrap();
        assert_eq!(engine.drop_partition(2).await.unwrap(), 1);
        // What compaction sends for a record it found live just before the drop was applied.
        let (reply, rx) = futures_channel::oneshot::channel();
        let req = crate::writer::AppendReq {
            kind: crate::record::Kind::Put,
            partition: 2,
            key: b"k"[..].into(),
            meta: Bytes::from_static(b"meta"),
            body: Bytes::from(body_of(1, 5000)),
            hlc: source.hlc,
            summary: source.summary,
            use_spare: true,
            relocates: Some(source.lsn),
            reply,
        };
        let batches = engine.stats().batches_written;
        engine.inner.append(req, rx).await.unwrap();
        assert_eq!(
            engine.stats().batches_written,
            batches,
            "nothing was written"
        );
        assert!(engine.lookup(2, b"k").is_none());
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert!(engine.lookup(2, b"k").is_none());
    });
}

#[test]
fn a_drop_is_a_batch_of_its_own_so_an_older_binary_loses_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for i in 0..20 {
            engine
                .put(0, format!("a-{i}").as_bytes(), value(&body_of(i, 300)))
                .await
                .unwrap();
        }
        for i in 0..5 {
            engine
                .put(1, format!("b-{i}").as_bytes(), value(&body_of(i, 300)))
                .await
                .unwrap();
        }
        // Deletes around the drop, all allowed the spare: without the rule they would share
        // the drop's batch.
        let deletes = (0..10).map(|i| {
            let engine = engine.clone();
            async move {
                engine
                    .delete(0, format!("a-{i}").as_bytes(), None)
                    .await
                    .unwrap();
            }
        });
        let dropper = engine.clone();
        let drop_it = async move {
            assert_eq!(dropper.drop_partition(1).await.unwrap(), 5);
        };
        futures_util::future::join(join_all(deletes), drop_it).await;
        engine.put(0, b"last", value(b"z")).await.unwrap();
        drop(engine);
    });
    let seg = segment_file(dir.path(), 0);
    let offsets = drop_record_offsets(&seg);
    assert_eq!(offsets.len(), 1);
    let at = offsets[0];
    let bytes = std::fs::read(&seg).unwrap();
    let padding = &bytes[at as usize + 112..at as usize + 4096];
    assert!(padding.iter().all(|&b| b == 0), "the drop shares its block");
    // What an older binary sees: a record kind it does not know (it cannot parse kind 3).
    let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(at + 6)).unwrap();
    f.write_all(&[9]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for i in 0..20 {
            let want = (i >= 10).then(|| body_of(i, 300));
            assert_eq!(get_body(&engine, 0, &format!("a-{i}")).await, want, "a-{i}");
        }
        assert_eq!(get_body(&engine, 0, "last").await.unwrap(), b"z");
        // The drop itself is not honoured, and counted as damage.
        assert_eq!(get_body(&engine, 1, "b-2").await, Some(body_of(2, 300)));
        assert_eq!(engine.stats().corrupt_records, 1);
    });
}

#[test]
fn on_a_full_disk_new_keys_wait_for_checkpoint_room_and_every_checkpoint_is_written() {
    // Fail points are process-wide: this test holds them alone (see `FailPoints`).
    let _fail_points = FailPoints::exclusive();
    let dir = tempfile::tempdir().unwrap();
    // Long keys: each index entry adds ~1.6 KB to a checkpoint, so the reserve sized at open
    // for small records is outgrown within a few hundred puts of one segment.
    let key = |i: usize| format!("{i:08}-{}", "k".repeat(1_500));
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        engine.put(0, key(0).as_bytes(), value(b"x")).await.unwrap();
        // From now on the disk has no block left: not for the reserve, not for a checkpoint
        // beyond the blocks its file has.
        fail::cfg("engine::disk_full", "return").unwrap();
        let mut stored = 1;
        let refused = 'fill: loop {
            let puts = (stored..stored + 32).map(|i| {
                let engine = engine.clone();
                async move { engine.put(0, key(i).as_bytes(), value(b"x")).await }
            });
            for result in join_all(puts).await {
                match result {
                    Ok(_) => stored += 1,
                    Err(e) => break 'fill e,
                }
            }
            assert!(stored < 100_000, "new keys are never refused");
        };
        assert!(
            matches!(refused, EngineError::DiskFull { .. }),
            "{refused:?}"
        );
        assert!(stored > 20, "only {stored} keys went in");
        // What adds no index entry still goes in: an overwrite and a delete free space; and a
        // tombstone of a key never held (a replicated delete) takes the headroom left to it.
        engine.put(0, key(0).as_bytes(), value(b"y")).await.unwrap();
        engine.delete(0, key(1).as_bytes(), None).await.unwrap();
        engine.delete(0, b"never-held", None).await.unwrap();
        // Checkpoint after checkpoint fits in the blocks held for it (compaction's, then
        // the one at close).
        for _ in 0..3 {
            engine.checkpoint().await.unwrap();
        }
        engine.close().await.unwrap();
        fail::remove("engine::disk_full");
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(get_body(&engine, 0, &key(0)).await.unwrap(), b"y");
        assert_eq!(get_body(&engine, 0, &key(1)).await, None);
        for i in 2..stored {
            assert_eq!(get_body(&engine, 0, &key(i)).await.unwrap(), b"x", "{i}");
        }
    });
}

#[test]
fn a_reserve_cut_off_by_a_crash_in_a_checkpoint_is_the_reserve_again_at_open() {
    // Fail points are process-wide: this test holds them alone (see `FailPoints`).
    let _fail_points = FailPoints::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("index");
    run(async {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for i in 0..50 {
            engine
                .put(0, format!("key-{i}").as_bytes(), value(b"x"))
                .await
                .unwrap();
        }
        engine.checkpoint().await.unwrap();
        engine.close().await.unwrap();
    });
    // A crash while the next checkpoint was written into the reserve's blocks: the reserve
    // file has its temporary name.
    std::fs::rename(
        index_dir.join("checkpoint.reserve"),
        index_dir.join("00000000000000ff.ckpt.tmp"),
    )
    .unwrap();
    run(async {
        // The disk is full: only the blocks held for them take checkpoints.
        fail::cfg("engine::disk_full", "return").unwrap();
        let engine = Engine::open(config(dir.path())).await.unwrap();
        engine.put(0, b"key-1", value(b"y")).await.unwrap();
        engine.checkpoint().await.unwrap();
        engine.close().await.unwrap();
        fail::remove("engine::disk_full");
        drop(engine);
        let engine = Engine::open(config(dir.path())).await.unwrap();
        assert_eq!(get_body(&engine, 0, "key-1").await.unwrap(), b"y");
        assert_eq!(get_body(&engine, 0, "key-49").await.unwrap(), b"x");
    });
}

/// Puts of 100,000 bytes under new keys until one is refused for lack of room; the keys kept.
async fn fill_until_refused(engine: &Engine) -> Vec<usize> {
    let mut kept = Vec::new();
    for i in 0..400 {
        match engine
            .put(
                0,
                format!("key-{i}").as_bytes(),
                value(&body_of(i, 100_000)),
            )
            .await
        {
            Ok(_) => kept.push(i),
            Err(EngineError::DiskFull { .. }) => return kept,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    panic!("the disk never filled up");
}

/// Deletes the `count` newest of `kept` (they sit in the head).
async fn delete_newest(engine: &Engine, kept: &mut Vec<usize>, count: usize) {
    for _ in 0..count {
        let i = kept.pop().unwrap();
        engine
            .delete(0, format!("key-{i}").as_bytes(), None)
            .await
            .unwrap();
    }
}

/// 1 MiB segments, 6 MiB in all, tombstones droppable at once: a disk that fills quickly.
fn full_disk_config(dir: &Path) -> EngineConfig {
    EngineConfig {
        disk_bytes_max: Some(6 * 1024 * 1024),
        tombstone_grace: Duration::ZERO,
        ..config(dir)
    }
}

/// A full engine of 1 MiB segments, 6 MiB in all, whose head has room again and dead records:
/// filled until a put is refused, the 4 newest deleted and compacted (the head is sealed and
/// moved), then the 2 newest deleted.
async fn full_with_roomy_dead_head(dir: &Path) -> Engine {
    let engine = Engine::open(full_disk_config(dir)).await.unwrap();
    let mut kept = fill_until_refused(&engine).await;
    delete_newest(&engine, &mut kept, 4).await;
    engine.compact().await.unwrap();
    delete_newest(&engine, &mut kept, 2).await;
    engine
}

#[test]
fn a_put_that_fits_the_head_is_not_refused_by_a_seal() {
    // Sealing a head that still had room spent the spare, and a put that fitted the old head
    // got 507 while the old head was moved; so did any put waiting in the batch being gathered.
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let engine = full_with_roomy_dead_head(dir.path()).await;
        let (put, report) = futures_util::future::join(
            engine.put(0, b"fits-the-head", value(&body_of(5, 10_000))),
            engine.compact(),
        )
        .await;
        put.unwrap();
        report.unwrap();
        let (report, put) = futures_util::future::join(
            engine.compact(),
            engine.put(0, b"fits-too", value(&body_of(6, 10_000))),
        )
        .await;
        report.unwrap();
        put.unwrap();
    });
}

#[test]
fn a_seal_never_strands_a_streamed_write_nor_fails_the_pass() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        // A streamed put's region in the head, reserved just before compaction asked for the
        // seal: the head holds a write still unapplied, so it is not sealed (the spare would be
        // spent on a head compaction cannot move yet, refusing every put until the stream ends).
        let engine = full_with_roomy_dead_head(dir.path()).await;
        let (tx, rx) = futures_channel::mpsc::unbounded::<Result<Bytes, std::io::Error>>();
        let body = body_of(7, 80_000);
        let stream = engine.put_stream(0, b"streamed", value(b""), body.len() as u64, rx);
        let racer = async {
            let report = engine.compact().await;
            let put = engine.put(0, b"probe", value(&body_of(2, 10_000))).await;
            tx.unbounded_send(Ok(Bytes::from(body.clone()))).unwrap();
            drop(tx);
            (report, put)
        };
        let (streamed, (report, put)) = futures_util::future::join(stream, racer).await;
        streamed.unwrap();
        report.unwrap();
        put.unwrap();
        assert_eq!(get_body(&engine, 0, "streamed").await, Some(body));
    });
    let dir = tempfile::tempdir().unwrap();
    run(async {
        // Space-freeing writes roll the head over into the spare before the seal: the writer
        // finds another head and no free segment, and leaves it; the pass does not fail.
        let engine = full_with_roomy_dead_head(dir.path()).await;
        let (a, b, report) = futures_util::future::join3(
            engine.put_reclaiming(0, b"note-1", value(&body_of(3, 250_000))),
            engine.put_reclaiming(0, b"note-2", value(&body_of(4, 250_000))),
            engine.compact(),
        )
        .await;
        a.unwrap();
        b.unwrap();
        report.unwrap();
    });
}

#[test]
fn on_a_full_disk_records_deleted_in_the_head_are_reclaimed() {
    // The newest records sit in the head, which compaction never took: on a full disk, deleting
    // them freed nothing a write could use (a rollover needs a segment, and compaction had no
    // sealed segment worth moving), for ever. Compaction now seals the head into the spare.
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let cfg = full_disk_config(dir.path());
        let engine = Engine::open(cfg.clone()).await.unwrap();
        let mut kept = fill_until_refused(&engine).await;
        delete_newest(&engine, &mut kept, 4).await;
        let deleted = 4 * 100_000;
        // Write until nothing more fits, compacting after each refusal as the background would.
        let (mut written, mut refusals, mut heads_sealed) = (0, 0, 0);
        let mut next = 1000;
        while refusals < 3 {
            match engine
                .put(
                    0,
                    format!("key-{next}").as_bytes(),
                    value(&body_of(next, 100_000)),
                )
                .await
            {
                Ok(_) => {
                    kept.push(next);
                    written += 100_000;
                    next += 1;
                    refusals = 0;
                }
                Err(EngineError::DiskFull { .. }) => {
                    heads_sealed += engine.compact().await.unwrap().heads_sealed;
                    refusals += 1;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(
            written >= deleted,
            "deleted {deleted}, written again {written}"
        );
        assert!(heads_sealed >= 1);
        engine.close().await.unwrap();
        drop(engine);
        let engine = Engine::open(cfg).await.unwrap();
        for &i in &kept {
            assert_eq!(
                get_body(&engine, 0, &format!("key-{i}")).await,
                Some(body_of(i, 100_000)),
                "key-{i} after reopening"
            );
        }
    });
}
