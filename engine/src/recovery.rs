//! Opening a shard directory: newest valid checkpoint, segment discovery (each header from either
//! of its two copies, a damaged copy rewritten from the other; with both copies damaged, from the
//! checkpoint's row and the records themselves; else the segment is set aside and the entries
//! into it are kept, reading as corrupt), replay of the log after the checkpoint in
//! life-sequence order (which is LSN order: a partition drop removes what came before it),
//! torn-tail truncation (the rest of the head is zero-filled before any new
//! write), and the start of the writer and background tasks.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use futures_channel::mpsc;

use crate::aligned::{AlignedBuf, BLOCK_BYTES, BufPool};
use crate::cache::ObjectCache;
use crate::checkpoint::{self, Checkpoint, SegmentRow};
use crate::clock::HlcClock;
use crate::engine::{Counters, Engine, Inner, State};
use crate::index::{Entry, Index};
use crate::io::{io_err, read_exact_at, sync_data, write_all_at};
use crate::record::{HEADER_BYTES, Kind, RecordHeader, verify_header};
use crate::reserve::CheckpointReserve;
use crate::scan::{SCAN_WINDOW_BYTES, SegmentScanner};
use crate::segment::{
    HeaderRead, Log, LogFile, OpenedFile, SEGMENT_HEADER_BYTES, SEGMENT_MIRROR_BYTES,
    SEGMENT_VERSION, SEGMENT_VERSION_V1, SegState, Segment, SegmentHeader, SetAside, open_segment,
    parse_segment_name, random_u64, repair_header_copy, write_segment_header,
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
    let batch_room =
        ((config.segment_size_bytes - SEGMENT_HEADER_BYTES - SEGMENT_MIRROR_BYTES) / 2) as usize;
    config.batch_bytes_max = config.batch_bytes_max.min(batch_room).max(BLOCK_BYTES);
    let log_dir = config.dir.join("log");
    let index_dir = config.dir.join("index");
    for dir in [&config.dir, &log_dir, &index_dir] {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create dir", dir, e))?;
    }
    let pool = BufPool::new(PIECE_BYTES);
    checkpoint::reclaim_cut_off_reserve(&index_dir, &index_dir.join(crate::reserve::RESERVE_FILE));
    let (ckpt, checkpoint_seq) = checkpoint::load_newest(&index_dir).await?;
    let counters = Counters::default();
    let mut log = discover(&log_dir, ckpt.as_ref(), &pool, &counters).await?;
    let mut corrupt_records = 0u64;
    let (mut index, position, mut hlc_max) = match ckpt {
        Some(ckpt) => {
            tracing::info!(
                seq = ckpt.seq,
                covered_lsn = ckpt.position.covered_lsn,
                "loaded checkpoint"
            );
            let mut index = ckpt.index;
            for (&id, row) in &ckpt.segment_rows {
                // A segment that cannot be read (set aside, or its file is gone) keeps its
                // entries: they read as corrupt, and come back when the segment is repaired.
                let Some(seg) = log.segments.get(&id) else {
                    continue;
                };
                if seg.state != SegState::Active || seg.life_seq != row.life {
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
    let head_inferred = active.last().is_some_and(|s| s.inferred);
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
    // Partition drops replayed, per segment: such a segment is kept until a checkpoint covers them.
    let mut drops: Vec<(u64, u64)> = Vec::new();
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
            replayed += 1;
            if h.kind == Kind::PartitionDrop {
                // Applied in LSN order: removes the partition's entries so far (the checkpoint's
                // and those bulk-loaded); the gathered ones below it are filtered at bulk load.
                index.drop_partition(h.partition, h.lsn);
                drops.push((seg.id, h.lsn));
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
    for (id, lsn) in drops {
        if let Some(seg) = log.segments.get_mut(&id) {
            seg.drop_lsn_max = seg.drop_lsn_max.max(lsn);
        }
    }
    // Set-aside segments nothing points into need no row any more.
    log.set_aside
        .retain(|a| a.row.is_none() || index.live_bytes(a.id as u32) > 0);
    let next_lsn = position.map_or(1, |p| p.next_lsn).max(last_lsn + 1);
    let reserve = CheckpointReserve::new(&index_dir);
    let reserve_bytes = CheckpointReserve::bytes_needed(
        &index,
        log.segments.len() + log.set_aside.len(),
        config.segment_size_bytes,
    );
    log.free = log
        .segments
        .values()
        .filter(|s| s.state == SegState::Free)
        .map(|s| s.id)
        .collect();
    match head_id {
        // A head whose header had to be established from its records is sealed as it is:
        // appends go to a segment with a header of its own.
        Some(id) if head_inferred => {
            tracing::warn!(
                segment = id,
                "the newest segment's header was re-established; it is sealed and a new head is started"
            );
            log.head = id;
            log.head_offset = head_offset;
            activate_first(&config, &log_dir, &mut log, &pool, &reserve, reserve_bytes).await?;
        }
        Some(id) => {
            log.head = id;
            log.head_offset = head_offset;
            zero_fill_tail(&log.segments[&id], head_offset, &pool).await?;
        }
        None => activate_first(&config, &log_dir, &mut log, &pool, &reserve, reserve_bytes).await?,
    }
    let (tx, rx) = mpsc::unbounded();
    let inner = Rc::new(Inner {
        tombstones: RefCell::new(crate::engine::TombstonePolicy::Age),
        disk_full_log: Default::default(),
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
            disk_full: false,
            compaction_wake: None,
        }),
        cache: RefCell::new(ObjectCache::new(
            config.cache_bytes,
            config.cache_object_bytes_max,
        )),
        clock: HlcClock::new(config.node_id, hlc_max),
        tx,
        pool,
        counters,
        checkpoint_lock: Default::default(),
        compaction_lock: Default::default(),
        segment_create_lock: Default::default(),
        sync_tasks: Default::default(),
        reserve,
        config,
    });
    Counters::add(&inner.counters.corrupt_records, corrupt_records);
    Counters::add(&inner.counters.replayed_records, replayed);
    // A shard keeps CHECKPOINTS_KEPT checkpoints of this build's format from its start, so
    // that each later one is written into the reserve with an obsolete one, whose slack grows
    // with the reserve, to take the reserve's place.
    for _ in inner.reserve.checkpoint_files()..crate::checkpoint::CHECKPOINTS_KEPT {
        if let Err(e) = crate::checkpoint_task::checkpoint_now(&inner).await {
            tracing::warn!(error = %e, "cannot write a shard's first checkpoints at open");
            break;
        }
    }
    let weak = Rc::downgrade(&inner);
    monoio::spawn(crate::writer::run(weak.clone(), rx));
    monoio::spawn(crate::checkpoint_task::run_periodic(weak.clone()));
    if inner.config.background_compaction {
        monoio::spawn(crate::compaction::run_periodic(weak));
    }
    crate::segment_pool::kick(&inner);
    Ok(Engine { inner })
}

/// Lists and opens the segment files and settles each one's header: from either copy (a damaged
/// or stale copy is rewritten from the other), or, with both copies unreadable, from the
/// checkpoint's row and the records in the segment ([`infer_header`]); a segment whose header
/// cannot be settled, and a segment the checkpoint knew whose file is gone, is set aside.
async fn discover(
    log_dir: &Path,
    ckpt: Option<&Checkpoint>,
    pool: &BufPool,
    counters: &Counters,
) -> Result<Log, EngineError> {
    let mut opened: Vec<(u64, OpenedFile)> = Vec::new();
    let mut next_segment_id = 0u64;
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
                next_segment_id = next_segment_id.max(id + 1);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io_err("remove", &path, e));
                    }
                    _ => continue,
                }
            }
        };
        next_segment_id = next_segment_id.max(id + 1);
        opened.push((id, open_segment(&path, id).await?));
    }
    let rows = ckpt.map(|c| &c.segment_rows);
    // Every current-format header carries the shard's salt; so does every checkpoint.
    let shard_salt = most_common(opened.iter().filter_map(|(_, o)| match &o.read {
        HeaderRead::Valid { header, .. } if header.version == SEGMENT_VERSION => Some(header.salt),
        _ => None,
    }))
    .or(ckpt.and_then(|c| c.shard_salt))
    .unwrap_or_else(random_u64);
    let mut log = Log {
        segments: BTreeMap::new(),
        set_aside: Vec::new(),
        free: Vec::new(),
        head: 0,
        head_offset: SEGMENT_HEADER_BYTES,
        next_life: 1,
        next_segment_id,
        shard_salt,
    };
    for (id, file) in opened {
        let path = file.path.clone();
        let row = rows.and_then(|r| r.get(&id)).copied();
        let settled = match &file.read {
            HeaderRead::Valid { header, repair } => Some((*header, repair.clone(), false)),
            HeaderRead::Damaged { detail } => {
                tracing::warn!(path = %path.display(), %detail, "both copies of a segment header are unreadable");
                infer_header(&file, id, row, shard_salt)
                    .await?
                    .map(|header| (header, None, true))
            }
        };
        let Some((header, repair, inferred)) = settled else {
            tracing::error!(path = %path.display(), "segment set aside: its header cannot be established; index entries pointing into it read as corrupt until it is repaired");
            log.set_aside.push(SetAside { id, row });
            continue;
        };
        if inferred {
            tracing::warn!(path = %path.display(), life = header.life_seq, "segment header established from the checkpoint and the records; the segment is read, never written, until compaction recycles it");
        }
        log.next_life = log.next_life.max(header.life_seq + 1);
        let seg = file.into_segment(&header, inferred);
        if let Some((offset, detail)) = repair {
            tracing::warn!(path = %path.display(), offset, %detail, "segment header copy damaged or stale; rewriting it from the other copy");
            match repair_header_copy(&seg, offset, pool).await {
                Ok(()) => Counters::add(&counters.segment_headers_repaired, 1),
                Err(e) => tracing::warn!(error = %e, "could not rewrite the segment header copy"),
            }
        }
        log.segments.insert(id, seg);
    }
    for row in rows.into_iter().flat_map(|r| r.values()) {
        log.next_life = log.next_life.max(row.life + 1);
        log.next_segment_id = log.next_segment_id.max(row.id + 1);
        let known =
            log.segments.contains_key(&row.id) || log.set_aside.iter().any(|a| a.id == row.id);
        if !known && row.state != Some(SegState::Free) {
            tracing::error!(
                segment = row.id,
                "a segment file named in the checkpoint is missing; index entries pointing into it read as corrupt"
            );
            log.set_aside.push(SetAside {
                id: row.id,
                row: Some(*row),
            });
        }
    }
    Ok(log)
}

/// The value seen most often (ties: the smallest), if any.
fn most_common(values: impl Iterator<Item = u64>) -> Option<u64> {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(v, n)| (n, std::cmp::Reverse(v)))
        .map(|(v, _)| v)
}

/// Establishes the header of a segment whose two copies are both unreadable. Records are
/// self-describing: every record carries its life sequence and verifies with the shard's salt
/// (or, for a first-format segment, the salt its checkpoint row recorded). The segment's life is
/// the newest life among the records that verify, unless the checkpoint recorded a newer one
/// (the segment was recycled, or activated and not yet written): then the row is used.
/// None when neither the records nor a row with a salt tell.
async fn infer_header(
    file: &OpenedFile,
    id: u64,
    row: Option<SegmentRow>,
    shard_salt: u64,
) -> Result<Option<SegmentHeader>, EngineError> {
    let mut salts = Vec::with_capacity(2);
    if let Some(salt) = row.and_then(|r| r.salt) {
        salts.push(salt);
    }
    if !salts.contains(&shard_salt) {
        salts.push(shard_salt);
    }
    let version_of = |salt: u64| {
        if salt == shard_salt {
            SEGMENT_VERSION
        } else {
            row.and_then(|r| r.version).unwrap_or(SEGMENT_VERSION_V1)
        }
    };
    for &salt in &salts {
        let Some(life) = newest_record_life(file, salt).await? else {
            continue;
        };
        if row.is_none_or(|r| life >= r.life) {
            return Ok(Some(SegmentHeader {
                id,
                life_seq: life,
                state: SegState::Active,
                size_bytes: file.len,
                salt,
                version: version_of(salt),
            }));
        }
    }
    Ok(row.and_then(|r| {
        let salt = r.salt?;
        Some(SegmentHeader {
            id,
            life_seq: r.life,
            state: r.state.unwrap_or(SegState::Active),
            size_bytes: file.len,
            salt,
            version: r.version.unwrap_or_else(|| version_of(salt)),
        })
    }))
}

/// The newest life sequence among the records of a segment that verify with `salt`, looking at
/// every block boundary (every batch, and so every life's writes, starts on one).
async fn newest_record_life(file: &OpenedFile, salt: u64) -> Result<Option<u64>, EngineError> {
    let mut newest = None;
    let end = file.len;
    let mut window_start = SEGMENT_HEADER_BYTES;
    while window_start < end {
        let len = (SCAN_WINDOW_BYTES as u64).min(end - window_start) as usize;
        let (res, window) = read_exact_at(
            &file.file,
            AlignedBuf::new(len),
            len,
            window_start,
            &file.path,
        )
        .await;
        if res.is_err() {
            // An unreadable stretch tells nothing; the next one may.
            window_start += len as u64;
            continue;
        }
        for at in (0..len).step_by(BLOCK_BYTES) {
            let Some(h) = RecordHeader::parse(&window[at..]) else {
                continue;
            };
            if newest.is_some_and(|n| h.life_seq <= n) {
                continue;
            }
            let km_end = at + HEADER_BYTES + h.key_meta_len();
            let verified = if km_end <= len {
                verify_header(salt, &window[at..km_end], &h)
            } else {
                let span = (km_end - at).next_multiple_of(BLOCK_BYTES);
                let pos = window_start + at as u64;
                if pos + span as u64 > end {
                    false
                } else {
                    let (res, buf) =
                        read_exact_at(&file.file, AlignedBuf::new(span), span, pos, &file.path)
                            .await;
                    res.is_ok() && verify_header(salt, &buf[..km_end - at], &h)
                }
            };
            if verified {
                newest = Some(h.life_seq);
            }
        }
        window_start += len as u64;
    }
    Ok(newest)
}

/// Makes a free (or new) segment the head: of an empty log, or after a head that must stay
/// sealed.
async fn activate_first(
    config: &EngineConfig,
    log_dir: &Path,
    log: &mut Log,
    pool: &BufPool,
    reserve: &CheckpointReserve,
    reserve_bytes: u64,
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
            reserve
                .ensure(reserve_bytes)
                .map_err(|e| reserve_error(config, e))?;
            let id = log.next_segment_id;
            log.next_segment_id += 1;
            let header = log.new_life(id, config.segment_size_bytes, SegState::Free);
            let seg = crate::segment::create_segment(log_dir, header, pool).await?;
            log.segments.insert(id, seg);
            id
        }
    };
    let seg = log.segments.get(&id).ok_or(EngineError::Closed)?;
    let (file, path, size_bytes) = (seg.file.clone(), seg.path.clone(), seg.size_bytes);
    let header = log.new_life(id, size_bytes, SegState::Active);
    write_segment_header(&file, &path, &header, pool).await?;
    log.set_header(&header);
    log.head = id;
    log.head_offset = SEGMENT_HEADER_BYTES;
    Ok(())
}

/// A failure to take the checkpoint reserve: the disk is full, or an I/O error.
pub(crate) fn reserve_error(config: &EngineConfig, e: std::io::Error) -> EngineError {
    if crate::io::is_no_space(&e) {
        EngineError::DiskFull {
            dir: config.dir.clone(),
        }
    } else {
        io_err("allocate checkpoint reserve", &config.dir, e)
    }
}

/// Zero-fills every non-zero piece of the head after `from`, so that no torn or
/// unacknowledged bytes of the current life can ever be mistaken for records later.
async fn zero_fill_tail(seg: &Segment, from: u64, pool: &BufPool) -> Result<(), EngineError> {
    let mut pos = from;
    let mut wrote = false;
    let end = seg.records_end();
    while pos < end {
        let n = (PIECE_BYTES as u64).min(end - pos) as usize;
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
