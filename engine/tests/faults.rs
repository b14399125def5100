//! Fault injection: an I/O failure at fdatasync, write, segment rollover, checkpoint write,
//! compaction move or segment creation (ENOSPC) reaches the caller as an error, and never damages
//! what was acknowledged before it, neither while the engine stays open nor after a reopen. Also a
//! real disk-full test on a small ext4 filesystem mounted from a loop device.
//!
//! The engine's fail points are compiled in for test builds through the dev-dependency on
//! `fail` with its `failpoints` feature (see engine/Cargo.toml). Fail points are process-global:
//! every test holds a `fail::FailScenario`, which serializes them when they share a process.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use leofs_engine::{Engine, EngineConfig, EngineError, PartitionId};

/// Partitions the keys are spread over.
const PARTITIONS: u32 = 4;
/// Body size that fills a 1 MiB test segment in a few puts.
const BIG_BODY_BYTES: usize = 200 * 1024;
/// Upper bound on puts a test issues while waiting for an injected failure to show.
const PUTS_UNTIL_FAILURE_MAX: usize = 256;
/// Size of the ext4 image for the real disk-full test.
const DISK_IMAGE_BYTES: u64 = 48 * 1024 * 1024;
/// Segment size on that filesystem.
const SMALL_DISK_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Body size of the puts that fill that filesystem.
const SMALL_DISK_BODY_BYTES: usize = 256 * 1024;
/// Bytes of a file that shares the small filesystem and is removed to free space.
const FILLER_BYTES: usize = 3 * SMALL_DISK_SEGMENT_BYTES as usize;

fn partition_of(key: &[u8]) -> PartitionId {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(PARTITIONS)) as PartitionId
}

/// What the test knows about the store: acknowledged values must be served exactly; values of
/// failed writes may be absent or complete, never anything else.
#[derive(Default)]
struct Expect {
    acked: BTreeMap<Vec<u8>, Option<(u64, usize)>>,
    failed: BTreeMap<Vec<u8>, (u64, usize)>,
    next_seed: u64,
}

impl Expect {
    fn seed(&mut self) -> u64 {
        self.next_seed += 1;
        self.next_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// Puts a value that must succeed.
    async fn put_ok(&mut self, engine: &Engine, key: &str, len: usize) {
        let seed = self.seed();
        engine
            .put(
                partition_of(key.as_bytes()),
                key.as_bytes(),
                common::value(seed, len),
            )
            .await
            .unwrap_or_else(|e| panic!("put {key} ({len} bytes) failed: {e}"));
        self.acked
            .insert(key.as_bytes().to_vec(), Some((seed, len)));
        self.failed.remove(key.as_bytes());
    }

    /// Puts a value whose outcome the test records either way; returns the error if any.
    async fn put_any(&mut self, engine: &Engine, key: &str, len: usize) -> Result<(), EngineError> {
        let seed = self.seed();
        let result = engine
            .put(
                partition_of(key.as_bytes()),
                key.as_bytes(),
                common::value(seed, len),
            )
            .await;
        match &result {
            Ok(_) => {
                self.acked
                    .insert(key.as_bytes().to_vec(), Some((seed, len)));
                self.failed.remove(key.as_bytes());
            }
            Err(_) => {
                assert!(
                    !self.acked.contains_key(key.as_bytes()),
                    "put_any wants a fresh key, {key} was used"
                );
                self.failed.insert(key.as_bytes().to_vec(), (seed, len));
            }
        }
        result.map(|_| ())
    }

    async fn delete_ok(&mut self, engine: &Engine, key: &str) {
        engine
            .delete(partition_of(key.as_bytes()), key.as_bytes(), None)
            .await
            .unwrap_or_else(|e| panic!("delete {key} failed: {e}"));
        self.acked.insert(key.as_bytes().to_vec(), None);
    }

    /// Every acknowledged key reads back exactly; every failed write is absent or complete.
    async fn verify(&self, engine: &Engine, context: &str) {
        for (key, expected) in &self.acked {
            let name = String::from_utf8_lossy(key);
            let got = engine
                .get(partition_of(key), key)
                .await
                .unwrap_or_else(|e| panic!("{context}: get {name} failed: {e}"));
            match (expected, got) {
                (None, None) => {}
                (Some((seed, len)), Some(value)) => {
                    assert_eq!(
                        &value.meta[..],
                        &common::meta(*seed, *len)[..],
                        "{context}: meta of {name}"
                    );
                    assert!(
                        value.body[..] == common::body(*seed, *len)[..],
                        "{context}: acknowledged body of {name} differs"
                    );
                }
                (expected, got) => panic!(
                    "{context}: acknowledged {name}: expected {expected:?}, got {:?}",
                    got.map(|v| v.body.len())
                ),
            }
        }
        for (key, (seed, len)) in &self.failed {
            let name = String::from_utf8_lossy(key);
            match engine.get(partition_of(key), key).await {
                Ok(None) => {}
                Ok(Some(value)) => assert!(
                    value.meta[..] == common::meta(*seed, *len)[..]
                        && value.body[..] == common::body(*seed, *len)[..],
                    "{context}: failed write {name} is visible with WRONG bytes"
                ),
                Err(e) => panic!("{context}: get of failed write {name}: {e}"),
            }
        }
    }
}

/// Opens the engine in a fresh runtime, checks `expect`, puts one more value (writes work after
/// the fault is gone), checks again and closes cleanly.
fn reopen_and_verify(config: &EngineConfig, expect: &mut Expect, context: &str) {
    let mut runtime = common::runtime();
    runtime.block_on(async {
        let engine = Engine::open(config.clone())
            .await
            .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
        expect
            .verify(&engine, &format!("{context}, after reopen"))
            .await;
        expect.put_ok(&engine, "after-reopen", 5000).await;
        expect
            .verify(&engine, &format!("{context}, after reopen and a put"))
            .await;
        engine
            .close()
            .await
            .unwrap_or_else(|e| panic!("{context}: close after reopen: {e}"));
    });
}

/// Fills a fresh engine with acknowledged data of mixed sizes.
async fn seed_data(engine: &Engine, expect: &mut Expect) {
    for i in 0..24 {
        let len = [0, 17, 4096, 70_000, BIG_BODY_BYTES][i % 5];
        expect.put_ok(engine, &format!("base-{i:03}"), len).await;
    }
    expect.delete_ok(engine, "base-003").await;
}

/// Common shape for a fault in the write path: acknowledged data, then `point` fails a put, the
/// engine keeps serving reads, and after the fault is cleared and a reopen, nothing is lost.
fn write_path_fault(point: &str) {
    let scenario = fail::FailScenario::setup();
    assert!(
        fail::has_failpoints(),
        "fail points are not compiled in (see engine/Cargo.toml)"
    );
    let dir = common::test_dir();
    let config = common::test_config(dir.path());
    let mut expect = Expect::default();
    let mut runtime = common::runtime();
    runtime.block_on(async {
        let engine = Engine::open(config.clone()).await.expect("open");
        seed_data(&engine, &mut expect).await;
        fail::cfg(point, "return").expect("cfg");
        let error = expect.put_any(&engine, "failed-0", 3000).await;
        assert!(
            error.is_err(),
            "{point}: put succeeded although {point} failed"
        );
        let error = expect.put_any(&engine, "failed-1", 100_000).await;
        assert!(
            error.is_err(),
            "{point}: second put succeeded although {point} failed"
        );
        expect.verify(&engine, &format!("{point} active")).await;
        fail::remove(point);
        expect.verify(&engine, &format!("{point} cleared")).await;
        // The engine may refuse further writes after a failed sync (fsyncgate) until reopened;
        // what it must not do is acknowledge a write it then loses.
        let after = expect.put_any(&engine, "after-fault", 1000).await;
        eprintln!("{point}: put after clearing the fault: {after:?}");
        let _ = engine.close().await;
    });
    drop(runtime);
    reopen_and_verify(&config, &mut expect, point);
    scenario.teardown();
}

#[test]
fn fdatasync_failure_fails_the_put_and_keeps_acknowledged_data() {
    write_path_fault("engine::fdatasync");
}

#[test]
fn write_failure_fails_the_put_and_keeps_acknowledged_data() {
    write_path_fault("engine::write");
}

#[test]
fn segment_rollover_failure_fails_a_put_and_keeps_acknowledged_data() {
    let scenario = fail::FailScenario::setup();
    let dir = common::test_dir();
    let config = common::test_config(dir.path());
    let mut expect = Expect::default();
    let mut runtime = common::runtime();
    runtime.block_on(async {
        let engine = Engine::open(config.clone()).await.expect("open");
        seed_data(&engine, &mut expect).await;
        fail::cfg("engine::segment_rollover", "return").expect("cfg");
        let mut failed = None;
        for i in 0..PUTS_UNTIL_FAILURE_MAX {
            if let Err(e) = expect
                .put_any(&engine, &format!("roll-{i:03}"), BIG_BODY_BYTES)
                .await
            {
                failed = Some(e);
                break;
            }
        }
        let error = failed.expect("no put failed although every segment rollover fails");
        eprintln!("segment_rollover: put failed with: {error}");
        expect.verify(&engine, "rollover failing").await;
        fail::remove("engine::segment_rollover");
        expect.verify(&engine, "rollover cleared").await;
        let after = expect.put_any(&engine, "after-fault", BIG_BODY_BYTES).await;
        eprintln!("segment_rollover: put after clearing the fault: {after:?}");
        let _ = engine.close().await;
    });
    drop(runtime);
    reopen_and_verify(&config, &mut expect, "segment_rollover");
    scenario.teardown();
}

#[test]
fn checkpoint_write_failure_is_reported_and_recovery_replays_the_log() {
    let scenario = fail::FailScenario::setup();
    let dir = common::test_dir();
    let config = common::test_config(dir.path());
    let mut expect = Expect::default();
    let mut runtime = common::runtime();
    runtime.block_on(async {
        let engine = Engine::open(config.clone()).await.expect("open");
        seed_data(&engine, &mut expect).await;
        engine.checkpoint().await.expect("first checkpoint");
        for i in 0..10 {
            expect
                .put_ok(&engine, &format!("post-ckpt-{i}"), 3000 * i)
                .await;
        }
        expect.delete_ok(&engine, "base-005").await;
        fail::cfg("engine::checkpoint_write", "return").expect("cfg");
        let result = engine.checkpoint().await;
        assert!(
            result.is_err(),
            "checkpoint succeeded although its write failed"
        );
        // A failed checkpoint must not stop the write path.
        for i in 0..5 {
            expect
                .put_ok(&engine, &format!("post-failed-ckpt-{i}"), 10_000)
                .await;
        }
        expect.verify(&engine, "checkpoint failing").await;
        let closed = engine.close().await;
        eprintln!("checkpoint_write: close with failing checkpoint: {closed:?}");
    });
    drop(runtime);
    fail::remove("engine::checkpoint_write");
    reopen_and_verify(&config, &mut expect, "checkpoint_write");
    scenario.teardown();
}

#[test]
fn compaction_move_failure_is_reported_and_loses_nothing() {
    let scenario = fail::FailScenario::setup();
    let dir = common::test_dir();
    let config = common::test_config(dir.path());
    let mut expect = Expect::default();
    let mut runtime = common::runtime();
    runtime.block_on(async {
        let engine = Engine::open(config.clone()).await.expect("open");
        // Two rounds: the second overwrites three keys in four, leaving the first round's
        // segments mostly dead but with live records that compaction must move.
        for i in 0..40 {
            expect.put_ok(&engine, &format!("c-{i:03}"), 100_000).await;
        }
        for i in (0..40).filter(|i| i % 4 != 0) {
            expect.put_ok(&engine, &format!("c-{i:03}"), 100_000).await;
        }
        fail::cfg("engine::compaction_move", "return").expect("cfg");
        let result = engine.compact().await;
        assert!(
            result.is_err(),
            "compaction succeeded although moving records failed: {result:?}"
        );
        expect.verify(&engine, "compaction move failing").await;
        fail::remove("engine::compaction_move");
        expect
            .put_ok(&engine, "after-failed-compaction", 5000)
            .await;
        let report = engine
            .compact()
            .await
            .expect("compaction after clearing the fault");
        assert!(
            report.segments_compacted > 0,
            "nothing compacted: {report:?}"
        );
        expect.verify(&engine, "after compaction").await;
        engine.close().await.expect("close");
    });
    drop(runtime);
    reopen_and_verify(&config, &mut expect, "compaction_move");
    scenario.teardown();
}

#[test]
fn segment_create_enospc_is_disk_full_and_reads_keep_working() {
    let scenario = fail::FailScenario::setup();
    let dir = common::test_dir();
    let config = common::test_config(dir.path());
    let mut expect = Expect::default();
    let mut runtime = common::runtime();
    runtime.block_on(async {
        let engine = Engine::open(config.clone()).await.expect("open");
        seed_data(&engine, &mut expect).await;
        fail::cfg("engine::segment_create", "return").expect("cfg");
        let mut failed = None;
        for i in 0..PUTS_UNTIL_FAILURE_MAX {
            if let Err(e) = expect
                .put_any(&engine, &format!("full-{i:03}"), BIG_BODY_BYTES)
                .await
            {
                failed = Some(e);
                break;
            }
        }
        let error = failed.expect("no put failed although no segment can be created");
        assert!(
            matches!(error, EngineError::DiskFull { .. }),
            "expected DiskFull, got: {error}"
        );
        expect.verify(&engine, "disk full (injected)").await;
        let again = expect.put_any(&engine, "full-again", 10).await;
        eprintln!("segment_create: small put while full: {again:?}");
        fail::remove("engine::segment_create");
        let mut resumed = false;
        for i in 0..PUTS_UNTIL_FAILURE_MAX {
            if expect
                .put_any(&engine, &format!("resume-{i:03}"), BIG_BODY_BYTES)
                .await
                .is_ok()
            {
                resumed = true;
                break;
            }
        }
        assert!(resumed, "writes did not resume after space came back");
        expect.verify(&engine, "after space came back").await;
        engine.close().await.expect("close");
    });
    drop(runtime);
    reopen_and_verify(&config, &mut expect, "segment_create");
    scenario.teardown();
}

/// Fills the store until put fails; the failure must be DiskFull. Returns how many puts worked.
async fn fill_until_disk_full(
    engine: &Engine,
    expect: &mut Expect,
    prefix: &str,
    len: usize,
) -> usize {
    for i in 0..100_000 {
        match expect
            .put_any(engine, &format!("{prefix}-{i:05}"), len)
            .await
        {
            Ok(()) => {}
            Err(EngineError::DiskFull { .. }) => return i,
            Err(e) => panic!("put {i} failed with {e}, expected DiskFull"),
        }
    }
    panic!("the store never became full");
}

/// Deletes every other filled key and compacts until a put fits again.
async fn free_space(engine: &Engine, expect: &mut Expect, prefix: &str, filled: usize) {
    for i in (0..filled).step_by(2) {
        expect.delete_ok(engine, &format!("{prefix}-{i:05}")).await;
    }
    let report = engine.compact().await.expect("compaction on a full store");
    eprintln!("{prefix}: compaction on the full store: {report:?}");
    expect
        .put_ok(
            engine,
            &format!("{prefix}-after-compaction"),
            BIG_BODY_BYTES,
        )
        .await;
}

#[test]
fn disk_bytes_max_is_disk_full_and_compaction_frees_space() {
    // No fail point, but the scenario keeps other tests' fail points away under `cargo test`.
    let scenario = fail::FailScenario::setup();
    let dir = common::test_dir();
    let mut config = common::test_config(dir.path());
    config.disk_bytes_max = Some(12 * common::TEST_SEGMENT_BYTES);
    config.cache_bytes = 0;
    let mut expect = Expect::default();
    let mut runtime = common::runtime();
    runtime.block_on(async {
        let engine = Engine::open(config.clone()).await.expect("open");
        let filled = fill_until_disk_full(&engine, &mut expect, "cap", BIG_BODY_BYTES).await;
        assert!(filled > 0, "not a single put fit under disk_bytes_max");
        expect.verify(&engine, "disk_bytes_max reached").await;
        free_space(&engine, &mut expect, "cap", filled).await;
        expect.verify(&engine, "after freeing space").await;
        engine.close().await.expect("close");
    });
    drop(runtime);
    reopen_and_verify(&config, &mut expect, "disk_bytes_max");
    scenario.teardown();
}

/// A small ext4 filesystem on a loop device, unmounted (lazily if busy) on drop.
struct SmallDisk {
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Result<SmallDisk, String> {
        let dir = common::test_dir();
        let image = dir.path().join("disk.img");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).map_err(|e| format!("mkdir: {e}"))?;
        let file = std::fs::File::create(&image).map_err(|e| format!("create image: {e}"))?;
        file.set_len(DISK_IMAGE_BYTES)
            .map_err(|e| format!("size image: {e}"))?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount_point))?;
        Ok(SmallDisk {
            mount_point,
            _dir: dir,
        })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if run(Command::new("umount").arg(&self.mount_point)).is_err() {
            let _ = run(Command::new("umount").arg("-l").arg(&self.mount_point));
        }
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[test]
fn real_disk_full_on_small_ext4_then_freed_space_resumes_writes() {
    // No fail point, but the scenario keeps other tests' fail points away under `cargo test`.
    let scenario = fail::FailScenario::setup();
    let disk = match SmallDisk::mount() {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!(
                "\n*** SKIPPED real_disk_full_on_small_ext4: cannot mount a loop ext4 filesystem here \
                 ({why}); needs root, mkfs.ext4 and loop devices. The fail-point and disk_bytes_max \
                 disk-full tests still ran. ***\n"
            );
            return;
        }
    };
    // Another tenant of the disk; removing it is how an operator frees space.
    let filler = disk.mount_point.join("filler");
    std::fs::write(&filler, vec![0xA5u8; FILLER_BYTES]).expect("filler file");
    let mut config = common::test_config(&disk.mount_point.join("shard-0"));
    config.segment_size_bytes = SMALL_DISK_SEGMENT_BYTES;
    config.cache_bytes = 0;
    let mut expect = Expect::default();
    let mut runtime = common::runtime();
    runtime.block_on(async {
        let engine = Engine::open(config.clone())
            .await
            .expect("open on the small disk");
        let filled =
            fill_until_disk_full(&engine, &mut expect, "ext4", SMALL_DISK_BODY_BYTES).await;
        assert!(filled > 0, "not a single put fit on the small disk");
        eprintln!("real disk full after {filled} puts of {SMALL_DISK_BODY_BYTES} bytes");
        expect.verify(&engine, "real disk full").await;
        std::fs::remove_file(&filler).expect("remove filler");
        for i in 0..2 * SMALL_DISK_SEGMENT_BYTES as usize / SMALL_DISK_BODY_BYTES {
            expect
                .put_ok(
                    &engine,
                    &format!("ext4-freed-{i:03}"),
                    SMALL_DISK_BODY_BYTES,
                )
                .await;
        }
        expect
            .verify(&engine, "after the disk got space back")
            .await;
        for i in (0..filled).step_by(2) {
            expect.delete_ok(&engine, &format!("ext4-{i:05}")).await;
        }
        let report = engine.compact().await.expect("compaction");
        assert!(
            report.bytes_reclaimed > 0,
            "compaction reclaimed nothing: {report:?}"
        );
        expect
            .verify(&engine, "after compaction on the small disk")
            .await;
        engine.close().await.expect("close");
    });
    drop(runtime);
    reopen_and_verify(&config, &mut expect, "real disk full");
    drop(disk);
    scenario.teardown();
}

/// Fills the rest of a filesystem with a file, byte by byte to the last block it will give.
fn fill_filesystem(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let block = vec![0x5Au8; 64 * 1024];
    let mut written = 0u64;
    for size in [64 * 1024, 4096] {
        while file
            .write_all(&block[..size])
            .and_then(|()| file.sync_all())
            .is_ok()
        {
            written += size as u64;
        }
    }
    written
}

/// On a filesystem filled to its last block, deletes still go through, compaction still
/// checkpoints and recycles, and closing (what SIGTERM does) writes its checkpoint: the room for
/// it was held back in the checkpoint reserve. The reopen then replays nothing.
#[test]
fn a_100_percent_full_filesystem_still_deletes_compacts_and_checkpoints_on_close() {
    let scenario = fail::FailScenario::setup();
    let disk = match SmallDisk::mount() {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!(
                "\n*** SKIPPED a_100_percent_full_filesystem: cannot mount a loop ext4 filesystem \
                 here ({why}); needs root, mkfs.ext4 and loop devices. ***\n"
            );
            return;
        }
    };
    let mut config = common::test_config(&disk.mount_point.join("shard-0"));
    config.segment_size_bytes = SMALL_DISK_SEGMENT_BYTES;
    config.cache_bytes = 0;
    let mut expect = Expect::default();
    common::runtime().block_on(async {
        let engine = Engine::open(config.clone())
            .await
            .expect("open on the small disk");
        let filled =
            fill_until_disk_full(&engine, &mut expect, "full", SMALL_DISK_BODY_BYTES).await;
        let filler = fill_filesystem(&disk.mount_point.join("filler"));
        eprintln!("{filled} puts, then {filler} bytes of filler: the filesystem is full");
        fill_until_disk_full(&engine, &mut expect, "tiny", 100).await;
        // Deletes may take the spare when the head is full; puts may not use its room then.
        let mut deleted = 0;
        while engine.stats().free_segments > 0 {
            assert!(deleted < filled, "deletes never needed the spare");
            expect
                .delete_ok(&engine, &format!("full-{deleted:05}"))
                .await;
            deleted += 1;
        }
        let refused = expect.put_any(&engine, "no-room-yet", 100).await;
        assert!(
            matches!(refused, Err(EngineError::DiskFull { .. })),
            "a put while the spare is the head must be DiskFull, got {refused:?}"
        );
        for i in (deleted..filled).filter(|i| i % 3 != 0) {
            expect.delete_ok(&engine, &format!("full-{i:05}")).await;
        }
        let report = engine
            .compact()
            .await
            .expect("compaction on a 100% full filesystem");
        assert!(
            report.segments_compacted > 0,
            "nothing recycled: {report:?}"
        );
        expect
            .put_ok(&engine, "room-again", SMALL_DISK_BODY_BYTES)
            .await;
        expect
            .verify(&engine, "after compaction on a full filesystem")
            .await;
        engine
            .close()
            .await
            .expect("close (checkpoint) on a 100% full filesystem");
    });
    common::runtime().block_on(async {
        let engine = Engine::open(config.clone()).await.expect("reopen");
        assert_eq!(
            engine.stats().replayed_records,
            0,
            "the checkpoint written at close covers everything"
        );
        expect.verify(&engine, "after reopen").await;
        engine.close().await.expect("close");
    });
    drop(disk);
    scenario.teardown();
}
