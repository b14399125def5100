//! Model-based property test: random sequences of puts (whole and streamed), deletes, partition
//! drops, reads, scans, compactions,
//! checkpoints and reopens (clean, and by dropping the engine and its runtime without `close` so
//! recovery must replay the log) run against the engine and against a `BTreeMap` model; every
//! observable answer must match the model. proptest shrinks a failing sequence to a minimal one.
//!
//! Cases default to [`DEFAULT_CASES`]; set `PROPTEST_CASES` for more.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bytes::Bytes;
use leofs_engine::{Engine, Hlc, PartitionId, PutValue, ScanEntry, Summary};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};

/// Cases per run unless `PROPTEST_CASES` says otherwise (keeps the debug run well under a minute).
const DEFAULT_CASES: u32 = 64;
/// Distinct keys: small, so that overwrites and deletes of existing keys are common.
const KEY_SPACE: u8 = 24;
/// Distinct partitions the keys are spread over.
const PARTITIONS: u32 = 5;
/// Longest operation sequence per case.
const OPS_MAX: usize = 60;
/// Key prefixes: nested (`a/` inside `a`) so prefix scans have interesting boundaries.
const KEY_GROUPS: [&str; 3] = ["a/", "ab/", "b/"];
/// Prefixes a scan may ask for.
const SCAN_PREFIXES: [&str; 6] = ["", "a", "a/", "ab", "b/", "c"];

fn key_name(index: u8) -> Vec<u8> {
    format!(
        "{}{:02}",
        KEY_GROUPS[usize::from(index) % KEY_GROUPS.len()],
        index
    )
    .into_bytes()
}

/// Each key lives in one partition, as a ring hash would place it.
fn partition_of(index: u8) -> PartitionId {
    (u32::from(index) * 7 + 3) % PARTITIONS
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: u8,
        len: usize,
        seed: u64,
    },
    /// A put through `put_stream`, the body cut into pieces of `piece` bytes.
    PutStream {
        key: u8,
        len: usize,
        seed: u64,
        piece: usize,
    },
    Delete {
        key: u8,
    },
    /// `drop_partition`: the model forgets every key of the partition.
    DropPartition {
        partition: PartitionId,
    },
    Get {
        key: u8,
    },
    GetRange {
        key: u8,
        start_frac: u16,
        len_frac: u16,
    },
    Head {
        key: u8,
    },
    Scan {
        prefix: usize,
        start_after: Option<u8>,
        limit: usize,
    },
    ScanPartition {
        partition: PartitionId,
        start_after: Option<u8>,
        limit: usize,
        tombstones: bool,
    },
    Compact,
    Checkpoint,
    /// `close` then `open` in the same runtime.
    ReopenClean,
    /// Drop the engine and its runtime without `close`, then open in a new runtime.
    ReopenDirty,
}

fn body_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..4096,
        3 => 4096usize..65536,
        1 => 200_000usize..700_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEY_SPACE;
    prop_oneof![
        30 => (key.clone(), body_len(), any::<u64>()).prop_map(|(key, len, seed)| Op::Put { key, len, seed }),
        10 => (key.clone(), body_len(), any::<u64>(), 1usize..70_000)
            .prop_map(|(key, len, seed, piece)| Op::PutStream { key, len, seed, piece }),
        8 => key.clone().prop_map(|key| Op::Delete { key }),
        2 => (0..PARTITIONS).prop_map(|partition| Op::DropPartition { partition }),
        10 => key.clone().prop_map(|key| Op::Get { key }),
        4 => (key.clone(), any::<u16>(), any::<u16>())
            .prop_map(|(key, start_frac, len_frac)| Op::GetRange { key, start_frac, len_frac }),
        3 => key.clone().prop_map(|key| Op::Head { key }),
        6 => (0..SCAN_PREFIXES.len(), proptest::option::of(key.clone()), 0usize..30)
            .prop_map(|(prefix, start_after, limit)| Op::Scan { prefix, start_after, limit }),
        4 => (0..PARTITIONS, proptest::option::of(key), 0usize..30, any::<bool>()).prop_map(
            |(partition, start_after, limit, tombstones)| Op::ScanPartition { partition, start_after, limit, tombstones }
        ),
        3 => Just(Op::Compact),
        2 => Just(Op::Checkpoint),
        2 => Just(Op::ReopenClean),
        3 => Just(Op::ReopenDirty),
    ]
}

#[derive(Clone, Debug)]
enum State {
    Live { seed: u64, len: usize, hlc: Hlc },
    Tombstone { hlc: Hlc },
}

#[derive(Clone, Debug)]
struct Entry {
    partition: PartitionId,
    state: State,
}

/// What the engine should hold: key → newest record.
#[derive(Default, Debug)]
struct Model {
    entries: BTreeMap<Vec<u8>, Entry>,
}

impl Model {
    fn live(&self, key: &[u8]) -> Option<(u64, usize, Hlc)> {
        match self.entries.get(key).map(|e| &e.state) {
            Some(State::Live { seed, len, hlc }) => Some((*seed, *len, *hlc)),
            _ => None,
        }
    }

    fn newest_hlc(&self, key: &[u8]) -> Option<Hlc> {
        self.entries.get(key).map(|e| match e.state {
            State::Live { hlc, .. } | State::Tombstone { hlc } => hlc,
        })
    }

    fn scan_entry(key: &[u8], entry: &Entry) -> ScanEntry {
        match entry.state {
            State::Live { seed, len, hlc } => ScanEntry {
                partition: entry.partition,
                key: Bytes::copy_from_slice(key),
                hlc,
                summary: common::summary(seed, len),
                body_len: len as u64,
                tombstone: false,
            },
            State::Tombstone { hlc } => ScanEntry {
                partition: entry.partition,
                key: Bytes::copy_from_slice(key),
                hlc,
                summary: Summary::default(),
                body_len: 0,
                tombstone: true,
            },
        }
    }
}

fn start_after_key(start_after: Option<u8>) -> Option<Vec<u8>> {
    start_after.map(key_name)
}

async fn check_get(engine: &Engine, model: &Model, index: u8) -> Result<(), TestCaseError> {
    let key = key_name(index);
    let got = engine
        .get(partition_of(index), &key)
        .await
        .map_err(|e| TestCaseError::fail(format!("get {index}: {e}")))?;
    match (model.live(&key), got) {
        (None, None) => {}
        (None, Some(v)) => {
            return Err(TestCaseError::fail(format!(
                "get {}: expected absent, got a value of {} bytes (meta {:?})",
                String::from_utf8_lossy(&key),
                v.body.len(),
                v.meta
            )));
        }
        (Some(_), None) => {
            return Err(TestCaseError::fail(format!(
                "get {}: expected a value, got None",
                String::from_utf8_lossy(&key)
            )));
        }
        (Some((seed, len, hlc)), Some(v)) => {
            prop_assert_eq!(&v.meta[..], &common::meta(seed, len)[..]);
            prop_assert_eq!(v.body_len, len as u64);
            prop_assert_eq!(v.summary, common::summary(seed, len));
            prop_assert_eq!(v.hlc, hlc);
            prop_assert!(
                v.body[..] == common::body(seed, len)[..],
                "body bytes differ for key {}",
                index
            );
        }
    }
    Ok(())
}

/// Compares every key, every scan order and the counters with the model.
async fn check_all(engine: &Engine, model: &Model) -> Result<(), TestCaseError> {
    for index in 0..KEY_SPACE {
        check_get(engine, model, index).await?;
    }
    let expected: Vec<ScanEntry> = model
        .entries
        .iter()
        .filter(|(_, e)| matches!(e.state, State::Live { .. }))
        .map(|(k, e)| Model::scan_entry(k, e))
        .collect();
    prop_assert_eq!(engine.scan(b"", None, usize::MAX), expected);
    let mut partitions = engine.partitions();
    partitions.sort_unstable();
    let expected_partitions: Vec<PartitionId> = model
        .entries
        .values()
        .map(|e| e.partition)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    prop_assert_eq!(partitions, expected_partitions);
    let stats = engine.stats();
    let live = model
        .entries
        .values()
        .filter(|e| matches!(e.state, State::Live { .. }))
        .count();
    prop_assert_eq!(stats.live_records, live as u64, "stats.live_records");
    prop_assert_eq!(
        stats.tombstones,
        (model.entries.len() - live) as u64,
        "stats.tombstones"
    );
    prop_assert_eq!(stats.corrupt_records, 0, "stats.corrupt_records");
    Ok(())
}

async fn open(dir: &Path) -> Result<Engine, TestCaseError> {
    Engine::open(common::test_config(dir))
        .await
        .map_err(|e| TestCaseError::fail(format!("open: {e}")))
}

/// Runs `ops` from `*next` until the end or until a dirty reopen (returns true then: the caller
/// drops this runtime, which drops the engine without `close`).
async fn session(
    dir: &Path,
    ops: &[Op],
    next: &mut usize,
    model: &mut Model,
) -> Result<bool, TestCaseError> {
    let mut engine = open(dir).await?;
    check_all(&engine, model).await?;
    while *next < ops.len() {
        let op = &ops[*next];
        *next += 1;
        match *op {
            Op::Put {
                key: index,
                len,
                seed,
            } => {
                let key = key_name(index);
                let hlc = engine
                    .put(partition_of(index), &key, common::value(seed, len))
                    .await
                    .map_err(|e| TestCaseError::fail(format!("put {index} ({len} bytes): {e}")))?;
                if let Some(previous) = model.newest_hlc(&key) {
                    prop_assert!(
                        hlc > previous,
                        "put hlc {:?} not after previous {:?}",
                        hlc,
                        previous
                    );
                }
                model.entries.insert(
                    key,
                    Entry {
                        partition: partition_of(index),
                        state: State::Live { seed, len, hlc },
                    },
                );
            }
            Op::PutStream {
                key: index,
                len,
                seed,
                piece,
            } => {
                let key = key_name(index);
                let full = common::value(seed, len);
                let pieces: Vec<Result<Bytes, std::io::Error>> = full
                    .body
                    .chunks(piece)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                let header = PutValue {
                    body: Bytes::new(),
                    ..full
                };
                let hlc = engine
                    .put_stream(
                        partition_of(index),
                        &key,
                        header,
                        len as u64,
                        futures_util::stream::iter(pieces),
                    )
                    .await
                    .map_err(|e| {
                        TestCaseError::fail(format!("put_stream {index} ({len} bytes): {e}"))
                    })?;
                if let Some(previous) = model.newest_hlc(&key) {
                    prop_assert!(
                        hlc > previous,
                        "put_stream hlc {:?} not after {:?}",
                        hlc,
                        previous
                    );
                }
                model.entries.insert(
                    key,
                    Entry {
                        partition: partition_of(index),
                        state: State::Live { seed, len, hlc },
                    },
                );
            }
            Op::Delete { key: index } => {
                let key = key_name(index);
                let result = engine
                    .delete(partition_of(index), &key, None)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("delete {index}: {e}")))?;
                match (model.live(&key), result) {
                    (Some((_, _, previous)), Some(hlc)) => {
                        prop_assert!(
                            hlc > previous,
                            "tombstone hlc {:?} not after put {:?}",
                            hlc,
                            previous
                        );
                        model.entries.insert(
                            key,
                            Entry {
                                partition: partition_of(index),
                                state: State::Tombstone { hlc },
                            },
                        );
                    }
                    (None, None) => {}
                    (expected, got) => {
                        return Err(TestCaseError::fail(format!(
                            "delete {index}: live value {expected:?}, engine returned {got:?}"
                        )));
                    }
                }
            }
            Op::DropPartition { partition } => {
                let removed = engine
                    .drop_partition(partition)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("drop_partition {partition}: {e}")))?;
                let before = model.entries.len();
                model.entries.retain(|_, e| e.partition != partition);
                prop_assert_eq!(
                    removed,
                    (before - model.entries.len()) as u64,
                    "drop_partition {} count",
                    partition
                );
            }
            Op::Get { key } => check_get(&engine, model, key).await?,
            Op::GetRange {
                key: index,
                start_frac,
                len_frac,
            } => {
                let key = key_name(index);
                let Some((seed, len, _)) = model.live(&key) else {
                    let got = engine
                        .get_range(partition_of(index), &key, 0..1)
                        .await
                        .map_err(|e| TestCaseError::fail(format!("get_range {index}: {e}")))?;
                    prop_assert!(
                        got.is_none(),
                        "get_range of absent key {} returned a value",
                        index
                    );
                    continue;
                };
                let len64 = len as u64;
                let start = len64 * u64::from(start_frac) / u64::from(u16::MAX);
                let end = start + (len64 - start) * u64::from(len_frac) / u64::from(u16::MAX);
                let value = engine
                    .get_range(partition_of(index), &key, start..end)
                    .await
                    .map_err(|e| {
                        TestCaseError::fail(format!("get_range {index} {start}..{end}: {e}"))
                    })?;
                let Some(value) = value else {
                    return Err(TestCaseError::fail(format!(
                        "get_range {index}: None for a live key"
                    )));
                };
                prop_assert_eq!(value.body_len, len64);
                let full = common::body(seed, len);
                prop_assert!(
                    value.body[..] == full[start as usize..end as usize],
                    "get_range {} {}..{} returned {} wrong bytes",
                    index,
                    start,
                    end,
                    value.body.len()
                );
            }
            Op::Head { key: index } => {
                let key = key_name(index);
                let head = engine
                    .head(partition_of(index), &key)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("head {index}: {e}")))?;
                match (model.live(&key), head) {
                    (None, None) => {}
                    (Some((seed, len, hlc)), Some(h)) => {
                        prop_assert_eq!(&h.meta[..], &common::meta(seed, len)[..]);
                        prop_assert_eq!(h.body_len, len as u64);
                        prop_assert_eq!(h.summary, common::summary(seed, len));
                        prop_assert_eq!(h.hlc, hlc);
                    }
                    (expected, got) => {
                        return Err(TestCaseError::fail(format!(
                            "head {index}: model {expected:?}, engine {:?}",
                            got.map(|h| h.body_len)
                        )));
                    }
                }
            }
            Op::Scan {
                prefix,
                start_after,
                limit,
            } => {
                let prefix = SCAN_PREFIXES[prefix].as_bytes();
                let after = start_after_key(start_after);
                let expected: Vec<ScanEntry> = model
                    .entries
                    .iter()
                    .filter(|(k, e)| {
                        matches!(e.state, State::Live { .. })
                            && k.starts_with(prefix)
                            && after.as_ref().is_none_or(|a| k.as_slice() > a.as_slice())
                    })
                    .take(limit)
                    .map(|(k, e)| Model::scan_entry(k, e))
                    .collect();
                let got = engine.scan(prefix, after.as_deref(), limit);
                prop_assert_eq!(
                    got,
                    expected,
                    "scan prefix {:?} after {:?} limit {}",
                    prefix,
                    after,
                    limit
                );
            }
            Op::ScanPartition {
                partition,
                start_after,
                limit,
                tombstones,
            } => {
                let after = start_after_key(start_after);
                let expected: Vec<ScanEntry> = model
                    .entries
                    .iter()
                    .filter(|(k, e)| {
                        e.partition == partition
                            && (tombstones || matches!(e.state, State::Live { .. }))
                            && after.as_ref().is_none_or(|a| k.as_slice() > a.as_slice())
                    })
                    .take(limit)
                    .map(|(k, e)| Model::scan_entry(k, e))
                    .collect();
                let got = engine.scan_partition(partition, after.as_deref(), limit, tombstones);
                prop_assert_eq!(
                    got,
                    expected,
                    "scan_partition {} after {:?} limit {} tombstones {}",
                    partition,
                    after,
                    limit,
                    tombstones
                );
            }
            Op::Compact => {
                engine
                    .compact()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("compact: {e}")))?;
                check_all(&engine, model).await?;
            }
            Op::Checkpoint => {
                engine
                    .checkpoint()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("checkpoint: {e}")))?;
            }
            Op::ReopenClean => {
                engine
                    .close()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("close: {e}")))?;
                drop(engine);
                engine = open(dir).await?;
                check_all(&engine, model).await?;
            }
            Op::ReopenDirty => return Ok(true),
        }
    }
    check_all(&engine, model).await?;
    engine
        .close()
        .await
        .map_err(|e| TestCaseError::fail(format!("final close: {e}")))?;
    Ok(false)
}

fn run_case(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = common::test_dir();
    let mut model = Model::default();
    let mut next = 0;
    loop {
        let mut runtime = common::runtime();
        let dirty = runtime.block_on(session(dir.path(), ops, &mut next, &mut model))?;
        drop(runtime);
        if !dirty {
            return Ok(());
        }
    }
}

fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        // Failing cases are saved beside this file (model.proptest-regressions) and rerun first.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    /// Every answer the engine gives matches the model, across compactions, checkpoints,
    /// clean reopens and reopens that must replay the log.
    #[test]
    fn engine_matches_btreemap_model(ops in proptest::collection::vec(op(), 1..OPS_MAX)) {
        run_case(&ops)?;
    }
}
