//! Opening a shard directory: segment discovery, newest valid checkpoint, replay of the log after
//! it in life-sequence order, torn-tail truncation (the rest of the head is zero-filled before
//! any new write), and the start of the writer and background tasks.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use futures_channel::mpsc;

use crate::aligned::{BLOCK_BYTES, BufPool};
use crate::cache::ObjectCache;
use crate::checkpoint;
use crate::clock::HlcClock;
use crate::engine::{Counters, Engine, Inner, State};
use crate::index::{Entry, Index};
use crate::io::{io_err, read_exact_at, sync_data, write_all_at};
use crate::record::{HEADER_BYTES, Kind};
use crate::scan::SegmentScanner;
use crate::segment::{
    Log, LogFile, SEGMENT_HEADER_BYTES, SegState, Segment, SegmentHeader, open_segment,
    parse_segment_name, random_u64, write_segment_header,
};
use crate::stream::PIECE_BYTES;
use crate::{EngineConfig, EngineError, Hlc};

/// Replayed records gathered before they are bulk-loaded into the index (bounds the memory of
/// the gathering: ~100 bytes per record plus its key).
const REPLAY_BATCH_ENTRIES: usize = 4 * 1024 * 1024;
/// Record size assumed when reserving room for replayed entries (a small record with its header).
const REPLAY_RECORD_BYTES_MIN: u64 = 256;
/// Smallest accepted segment size.
pub(crate) const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Largest accepted segment size (index entries hold 32-bit offsets).
pub(crate) const SEGMENT_BYTES_MAX: u64 = 1 << 32;

fn invalid(config: &EngineConfig, detail: String) -> EngineError {
    EngineError::Format {
        path: config.dir.clone(),
        detail: format!("invalid engine config: {detail}"),
    }
}

fn validate(config: &EngineConfig) -> Result<(), EngineError> {
    let size = config.segment_size_bytes;
    if !size.is_multiple_of(BLOCK_BYTES as u64)
        || !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&size)
    {
        return Err(invalid(
            config,
            format!(
                "segment_size_bytes {size} must be a multiple of {BLOCK_BYTES} in {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}"
            ),
        ));
    }
    if config.batch_bytes_max < BLOCK_BYTES {
        return Err(invalid(
            config,
            format!(
                "batch_bytes_max {} must be at least {BLOCK_BYTES}",
                config.batch_bytes_max
            ),
        ));
    }
    if !(0.0..=1.0).contains(&config.compaction_live_ratio_min) {
        return Err(invalid(
            config,
            "compaction_live_ratio_min must be within 0.0..=1.0".into(),
        ));
    }
    if config.checkpoint_interval.is_zero() {
        return Err(invalid(
            config,
            "checkpoint_interval must be positive".into(),
        ));
    }
    Ok(())
}

/// [`Engine::open`].
pub(crate) async fn open(mut config: EngineConfig) -> Result<Engine, EngineError> {
    validate(&config)?;
    // A batch never needs more than a segment's room (half of it keeps rollovers cheap).
    let batch_room = ((config.segment_size_bytes - SEGMENT_HEADER_BYTES) / 2) as usize;
    config.batch_bytes_max = config.batch_bytes_max.min(batch_room).max(BLOCK_BYTES);
    let log_dir = config.dir.join("log");
    let index_dir = config.dir.join("index");
    for dir in [&config.dir, &log_dir, &index_dir] {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create dir", dir, e))?;
    }
    let pool = BufPool::new(PIECE_BYTES);
    let mut log = discover(&log_dir).await?;
    let (ckpt, checkpoint_seq) = checkpoint::load_newest(&index_dir).await?;
    let mut corrupt_records = 0u64;
    let (mut index, position, mut hlc_max) = match ckpt {
        Some(ckpt) => {
            tracing::info!(
                seq = ckpt.seq,
                covered_lsn = ckpt.position.covered_lsn,
                "loaded checkpoint"
            );
            let mut index = ckpt.index;
            for (&id, &life) in &ckpt.segment_lives {
                let current = log
                    .segments
                    .get(&id)
                    .filter(|s| s.state == SegState::Active)
                    .map(|s| s.life_seq);
                if current != Some(life) {
                    let dropped = index.drop_segment(id as u32);
                    if dropped > 0 {
                        tracing::warn!(
                            segment = id,
                            dropped,
                            "checkpoint entries point into a reused segment; replay decides"
                        );
                    }
                }
            }
            (index, Some(ckpt.position), ckpt.hlc_max)
        }
        None => (Index::default(), None, Hlc::default()),
    };
    let covered_lsn = position.map_or(0, |p| p.covered_lsn);
    let mut active: Vec<&Segment> = log
        .segments
        .values()
        .filter(|s| s.state == SegState::Active)
        .collect();
    active.sort_by_key(|s| s.life_seq);
    let head_id = active.last().map(|s| s.id);
    let replay_life = position.map_or(0, |p| p.replay_life);
    let mut last_lsn = 0u64;
    let mut replayed = 0u64;
    // Sized for small records up front: growing a vector of millions of entries copies it.
    let replay_bytes: u64 = active
        .iter()
        .filter(|s| s.life_seq >= replay_life)
        .map(|s| s.size_bytes)
        .sum();
    let mut replayed_items = Vec::with_capacity(
        ((replay_bytes / REPLAY_RECORD_BYTES_MIN) as usize).min(REPLAY_BATCH_ENTRIES),
    );
    let mut head_offset = SEGMENT_HEADER_BYTES;
    for seg in active
        .iter()
        .filter(|s| s.life_seq >= replay_life || Some(s.id) == head_id)
    {
        let start = match position {
            Some(p) if p.replay_segment == seg.id && p.replay_life == seg.life_seq => {
                p.replay_offset
            }
            _ => SEGMENT_HEADER_BYTES,
        };
        let mut scanner = SegmentScanner::new(seg, start, last_lsn);
        while let Some(found) = scanner.next().await? {
            let h = found.header;
            hlc_max = hlc_max.max(h.hlc);
            if h.lsn <= covered_lsn {
                continue;
            }
            let entry = Entry {
                segment: seg.id as u32,
                offset: found.offset as u32,
                len: h.len() as u32,
                tombstone: h.kind == Kind::Tombstone,
                hlc: h.hlc,
                lsn: h.lsn,
                summary: h.summary,
                body_len: h.body_len,
            };
            let rec = scanner.bytes(&found);
            replayed_items.push((
                h.partition,
                rec[HEADER_BYTES..HEADER_BYTES + h.key_len as usize].into(),
                entry,
            ));
            replayed += 1;
            if replayed_items.len() >= REPLAY_BATCH_ENTRIES {
                index.bulk_load(std::mem::take(&mut replayed_items));
            }
        }
        corrupt_records += scanner.corrupt_records();
        last_lsn = scanner.last_lsn();
        if Some(seg.id) == head_id {
            head_offset = scanner.valid_end_block();
            for offset in scanner.tail_corrupt() {
                tracing::warn!(path = %seg.path.display(), offset, "torn tail truncated (unacknowledged write)");
            }
        } else {
            for offset in scanner.tail_corrupt() {
                tracing::warn!(path = %seg.path.display(), offset, "corrupt record skipped");
                corrupt_records += 1;
            }
        }
    }
    index.bulk_load(replayed_items);
    let next_lsn = position.map_or(1, |p| p.next_lsn).max(last_lsn + 1);
    log.free = log
        .segments
        .values()
        .filter(|s| s.state == SegState::Free)
        .map(|s| s.id)
        .collect();
    match head_id {
        Some(id) => {
            log.head = id;
            log.head_offset = head_offset;
            zero_fill_tail(&log.segments[&id], head_offset, &pool).await?;
        }
        None => activate_first(&config, &log_dir, &mut log, &pool).await?,
    }
    let (tx, rx) = mpsc::unbounded();
    let inner = Rc::new(Inner {
        log_dir,
        index_dir,
        state: RefCell::new(State {
            index,
            log,
            next_lsn,
            unapplied: BTreeMap::new(),
            poisoned: None,
            closed: false,
            checkpoint_seq,
            checkpoint_lsn: covered_lsn,
            prewriting: false,
            zero_wanted: false,
            zero_claim: None,
        }),
        cache: RefCell::new(ObjectCache::new(
            config.cache_bytes,
            config.cache_object_bytes_max,
        )),
        clock: HlcClock::new(config.node_id, hlc_max),
        tx,
        pool,
        counters: Counters::default(),
        checkpoint_lock: Default::default(),
        compaction_lock: Default::default(),
        segment_create_lock: Default::default(),
        sync_tasks: Default::default(),
        config,
    });
    Counters::add(&inner.counters.corrupt_records, corrupt_records);
    Counters::add(&inner.counters.replayed_records, replayed);
    let weak = Rc::downgrade(&inner);
    monoio::spawn(crate::writer::run(weak.clone(), rx));
    monoio::spawn(crate::checkpoint_task::run_periodic(weak.clone()));
    if inner.config.background_compaction {
        monoio::spawn(crate::compaction::run_periodic(weak));
    }
    crate::segment_pool::kick(&inner);
    Ok(Engine { inner })
}

/// Lists and opens the segment files; unreadable headers are reported and set aside.
async fn discover(log_dir: &Path) -> Result<Log, EngineError> {
    let mut log = Log {
        segments: BTreeMap::new(),
        broken: Vec::new(),
        free: Vec::new(),
        head: 0,
        head_offset: SEGMENT_HEADER_BYTES,
        next_life: 1,
        next_segment_id: 0,
    };
    let rd = std::fs::read_dir(log_dir).map_err(|e| io_err("read dir", log_dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| io_err("read dir", log_dir, e))?;
        let name = ent.file_name();
        let Some(parsed) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        let path = ent.path();
        let id = match parsed {
            LogFile::Segment(id) => id,
            LogFile::Temporary(id) => {
                log.next_segment_id = log.next_segment_id.max(id + 1);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io_err("remove", &path, e));
                    }
                    _ => continue,
                }
            }
        };
        log.next_segment_id = log.next_segment_id.max(id + 1);
        match open_segment(&path, id).await? {
            Ok(seg) => {
                log.next_life = log.next_life.max(seg.life_seq + 1);
                log.segments.insert(id, seg);
            }
            Err(detail) => {
                tracing::warn!(path = %path.display(), %detail, "unreadable segment header; segment set aside");
                log.broken.push(id);
            }
        }
    }
    Ok(log)
}

/// Makes a free (or new) segment the head of an empty log.
async fn activate_first(
    config: &EngineConfig,
    log_dir: &Path,
    log: &mut Log,
    pool: &BufPool,
) -> Result<(), EngineError> {
    let id = match log.free.first().copied() {
        Some(id) => {
            log.free.remove(0);
            id
        }
        None => {
            if let Some(max) = config.disk_bytes_max
                && log.disk_bytes() + config.segment_size_bytes > max
            {
                return Err(EngineError::DiskFull {
                    dir: config.dir.clone(),
                });
            }
            let id = log.next_segment_id;
            log.next_segment_id += 1;
            log.next_life += 1;
            let seg = crate::segment::create_segment(
                log_dir,
                id,
                config.segment_size_bytes,
                log.next_life - 1,
                pool,
            )
            .await?;
            log.segments.insert(id, seg);
            id
        }
    };
    let life_seq = log.next_life;
    log.next_life += 1;
    let salt = random_u64();
    let seg = log.segments.get_mut(&id).ok_or(EngineError::Closed)?;
    let header = SegmentHeader {
        id,
        life_seq,
        state: SegState::Active,
        size_bytes: seg.size_bytes,
        salt,
    };
    write_segment_header(&seg.file, &seg.path, &header, pool).await?;
    seg.life_seq = life_seq;
    seg.salt = salt;
    seg.state = SegState::Active;
    log.head = id;
    log.head_offset = SEGMENT_HEADER_BYTES;
    Ok(())
}

/// Zero-fills every non-zero piece of the head after `from`, so that no torn or
/// unacknowledged bytes of the current life can ever be mistaken for records later.
async fn zero_fill_tail(seg: &Segment, from: u64, pool: &BufPool) -> Result<(), EngineError> {
    let mut pos = from;
    let mut wrote = false;
    while pos < seg.size_bytes {
        let n = (PIECE_BYTES as u64).min(seg.size_bytes - pos) as usize;
        let buf = pool.get(n);
        let (res, mut buf) = read_exact_at(&seg.file, buf, n, pos, &seg.path).await;
        res?;
        if buf.iter().any(|&b| b != 0) {
            buf.spare_mut()[..n].fill(0);
            let (res, buf) = write_all_at(&seg.file, buf, pos, &seg.path).await;
            pool.put(buf);
            res?;
            wrote = true;
        } else {
            pool.put(buf);
        }
        pos += n as u64;
    }
    if wrote {
        sync_data(&seg.file, &seg.path).await?;
    }
    Ok(())
}
