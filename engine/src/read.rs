//! Reads: index lookup, one aligned O_DIRECT read covering the record (or its header and meta
//! for `head`), checksum verification, and values handed out as `Bytes` slices of the read
//! buffer (no copy). Bad bytes are never returned: a record failing verification is counted,
//! logged and reported as [`EngineError::Corrupt`].

use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use monoio::fs::File;

use crate::aligned::{AlignedBuf, align_down, align_up};
use crate::cache::CachedValue;
use crate::engine::{Counters, Inner};
use crate::index::Entry;
use crate::io::read_exact_at;
use crate::record::{HEADER_BYTES, RecordHeader, payload_hasher, verify_header, verify_record};
use crate::{EngineError, Head, PartitionId, Value};

/// Records up to this size are read whole (and verified whole) by a ranged read; larger ones
/// are streamed through in [`RANGE_PIECE_BYTES`] pieces to verify, keeping only the range.
pub(crate) const RANGE_READ_WHOLE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Piece size of a streamed verification read.
const RANGE_PIECE_BYTES: u64 = 1024 * 1024;
/// How often a read retries when the key moved (compaction) while it was reading.
const READ_ATTEMPTS_MAX: usize = 3;

/// Where a record lives, as seen at lookup time.
struct Located {
    entry: Entry,
    file: Rc<File>,
    path: PathBuf,
    salt: u64,
    life_seq: u64,
}

/// Looks the key up; None if absent or a tombstone.
fn locate(
    inner: &Inner,
    partition: PartitionId,
    key: &[u8],
) -> Result<Option<Located>, EngineError> {
    let state = inner.state.borrow();
    let Some(entry) = state.index.get(partition, key).copied() else {
        return Ok(None);
    };
    if entry.tombstone {
        return Ok(None);
    }
    let Some(seg) = state.log.segments.get(&(entry.segment as u64)) else {
        return Err(EngineError::Corrupt {
            path: crate::segment::segment_path(&inner.log_dir, entry.segment as u64),
            offset: entry.offset as u64,
        });
    };
    Ok(Some(Located {
        entry,
        file: seg.file.clone(),
        path: seg.path.clone(),
        salt: seg.salt,
        life_seq: seg.life_seq,
    }))
}

/// Whether the index still points at the record `loc` was looked up for.
fn unchanged(inner: &Inner, partition: PartitionId, key: &[u8], loc: &Located) -> bool {
    inner.state.borrow().index.get(partition, key) == Some(&loc.entry)
}

/// Reads `[offset, offset + len)` of a segment with one aligned read; returns the buffer and
/// where the wanted bytes start in it.
async fn read_span(
    loc: &Located,
    offset: u64,
    len: u64,
) -> Result<(AlignedBuf, usize), EngineError> {
    let start = align_down(offset);
    let end = align_up(offset + len);
    let buf = AlignedBuf::new((end - start) as usize);
    let (res, buf) = read_exact_at(&loc.file, buf, (end - start) as usize, start, &loc.path).await;
    res?;
    Ok((buf, (offset - start) as usize))
}

/// Checks that `rec` is the record `loc` points at, for `key`.
fn check_header(loc: &Located, key: &[u8], rec: &[u8]) -> Option<RecordHeader> {
    let h = RecordHeader::parse(rec)?;
    let ok = h.life_seq == loc.life_seq
        && h.lsn == loc.entry.lsn
        && h.len() == loc.entry.len as u64
        && h.key_len as usize == key.len()
        && verify_header(loc.salt, rec, &h)
        && &rec[HEADER_BYTES..HEADER_BYTES + key.len()] == key;
    ok.then_some(h)
}

fn corrupt(inner: &Inner, loc: &Located) -> EngineError {
    Counters::add(&inner.counters.corrupt_records, 1);
    tracing::warn!(path = %loc.path.display(), offset = loc.entry.offset, "corrupt record on read");
    EngineError::Corrupt {
        path: loc.path.clone(),
        offset: loc.entry.offset as u64,
    }
}

/// A whole record read and verified.
struct WholeRecord {
    bytes: Bytes,
    header: RecordHeader,
}

/// Reads and verifies the record for `key`; retries if the key moved meanwhile.
async fn read_whole(
    inner: &Inner,
    partition: PartitionId,
    key: &[u8],
) -> Result<Option<(Located, WholeRecord)>, EngineError> {
    for _ in 0..READ_ATTEMPTS_MAX {
        let Some(loc) = locate(inner, partition, key)? else {
            return Ok(None);
        };
        let (buf, at) = read_span(&loc, loc.entry.offset as u64, loc.entry.len as u64).await?;
        let rec = &buf[at..at + loc.entry.len as usize];
        let valid = check_header(&loc, key, rec).filter(|h| verify_record(loc.salt, rec, h));
        match valid {
            Some(header) => {
                let bytes = Bytes::from_owner(buf).slice(at..at + loc.entry.len as usize);
                return Ok(Some((loc, WholeRecord { bytes, header })));
            }
            None if !unchanged(inner, partition, key, &loc) => continue,
            None => return Err(corrupt(inner, &loc)),
        }
    }
    Err(EngineError::Closed)
}

fn parts(rec: &WholeRecord) -> (Bytes, Bytes) {
    let km = HEADER_BYTES + rec.header.key_len as usize;
    let meta_end = km + rec.header.meta_len as usize;
    let body_end = meta_end + rec.header.body_len as usize;
    (
        rec.bytes.slice(km..meta_end),
        rec.bytes.slice(meta_end..body_end),
    )
}

/// [`crate::Engine::get`].
pub(crate) async fn get(
    inner: &Inner,
    partition: PartitionId,
    key: &[u8],
) -> Result<Option<Value>, EngineError> {
    inner.check_open()?;
    if let Some(hit) = cache_get(inner, partition, key) {
        return Ok(Some(hit.value()));
    }
    let Some((loc, rec)) = read_whole(inner, partition, key).await? else {
        return Ok(None);
    };
    let (meta, body) = parts(&rec);
    let value = Value {
        meta,
        body,
        body_len: rec.header.body_len,
        summary: rec.header.summary,
        hlc: rec.header.hlc,
    };
    cache_insert(inner, partition, key, &loc, &value);
    Ok(Some(value))
}

fn cache_get(inner: &Inner, partition: PartitionId, key: &[u8]) -> Option<CachedValue> {
    let mut cache = inner.cache.borrow_mut();
    let cache = cache.as_mut()?;
    let hit = cache.get(partition, key);
    let counter = if hit.is_some() {
        &inner.counters.cache_hits
    } else {
        &inner.counters.cache_misses
    };
    Counters::add(counter, 1);
    hit
}

fn cache_insert(inner: &Inner, partition: PartitionId, key: &[u8], loc: &Located, value: &Value) {
    if !unchanged(inner, partition, key, loc) {
        return;
    }
    let mut cache = inner.cache.borrow_mut();
    if let Some(cache) = cache.as_mut()
        && cache.admits(value.body_len)
    {
        let cached = CachedValue {
            meta: value.meta.clone(),
            body: value.body.clone(),
            summary: value.summary,
            hlc: value.hlc,
            pinned_bytes: align_up(loc.entry.len as u64) + crate::aligned::BLOCK_BYTES as u64,
        };
        cache.insert(partition, key, cached);
    }
}

/// [`crate::Engine::get_range`].
pub(crate) async fn get_range(
    inner: &Inner,
    partition: PartitionId,
    key: &[u8],
    range: Range<u64>,
) -> Result<Option<Value>, EngineError> {
    inner.check_open()?;
    if let Some(hit) = cache_get(inner, partition, key) {
        let mut value = hit.value();
        let (a, b) = clamp(&range, value.body_len);
        value.body = value.body.slice(a as usize..b as usize);
        return Ok(Some(value));
    }
    let large = {
        let state = inner.state.borrow();
        state
            .index
            .get(partition, key)
            .is_some_and(|e| e.len as u64 > RANGE_READ_WHOLE_BYTES_MAX)
    };
    if large {
        return get_range_streamed(inner, partition, key, range).await;
    }
    let Some((_, rec)) = read_whole(inner, partition, key).await? else {
        return Ok(None);
    };
    let (meta, body) = parts(&rec);
    let (a, b) = clamp(&range, rec.header.body_len);
    Ok(Some(Value {
        meta,
        body: body.slice(a as usize..b as usize),
        body_len: rec.header.body_len,
        summary: rec.header.summary,
        hlc: rec.header.hlc,
    }))
}

fn clamp(range: &Range<u64>, body_len: u64) -> (u64, u64) {
    let end = range.end.min(body_len);
    (range.start.min(end), end)
}

/// Ranged read of a large record: streams the record through in pieces to verify its checksum,
/// keeping only the header, meta and the requested range (memory bounded by the range).
async fn get_range_streamed(
    inner: &Inner,
    partition: PartitionId,
    key: &[u8],
    range: Range<u64>,
) -> Result<Option<Value>, EngineError> {
    for _ in 0..READ_ATTEMPTS_MAX {
        let Some(loc) = locate(inner, partition, key)? else {
            return Ok(None);
        };
        match read_range_verified(&loc, key, &range).await? {
            Some(value) => return Ok(Some(value)),
            None if !unchanged(inner, partition, key, &loc) => continue,
            None => return Err(corrupt(inner, &loc)),
        }
    }
    Err(EngineError::Closed)
}

async fn read_range_verified(
    loc: &Located,
    key: &[u8],
    range: &Range<u64>,
) -> Result<Option<Value>, EngineError> {
    let offset = loc.entry.offset as u64;
    let len = loc.entry.len as u64;
    let first_len = RANGE_PIECE_BYTES.min(len);
    let (buf, at) = read_span(loc, offset, first_len).await?;
    let first = &buf[at..at + first_len as usize];
    let Some(h) = check_header(loc, key, first) else {
        return Ok(None);
    };
    let meta_at = HEADER_BYTES + h.key_len as usize;
    let body_at = (meta_at + h.meta_len as usize) as u64;
    let meta = Bytes::copy_from_slice(&first[meta_at..body_at as usize]);
    let (a, b) = clamp(range, h.body_len);
    let (want_a, want_b) = (body_at + a, body_at + b);
    let payload_end = body_at + h.body_len;
    let mut hasher = payload_hasher(loc.salt, first);
    let mut out = BytesMut::with_capacity((b - a) as usize);
    let mut pos = HEADER_BYTES as u64;
    let mut piece = Some((buf, at));
    while pos < payload_end {
        let piece_start = pos - pos % RANGE_PIECE_BYTES;
        let (buf, at) = match piece.take() {
            Some(p) if piece_start == 0 => p,
            _ => {
                read_span(
                    loc,
                    offset + piece_start,
                    RANGE_PIECE_BYTES.min(len - piece_start),
                )
                .await?
            }
        };
        let piece_end = (piece_start + RANGE_PIECE_BYTES).min(payload_end);
        let bytes =
            &buf[at + (pos - piece_start) as usize..at + (piece_end - piece_start) as usize];
        hasher.update(bytes);
        let (ka, kb) = (want_a.max(pos), want_b.min(piece_end));
        if ka < kb {
            out.extend_from_slice(&bytes[(ka - pos) as usize..(kb - pos) as usize]);
        }
        pos = piece_end;
    }
    if hasher.digest() != h.record_checksum {
        return Ok(None);
    }
    Ok(Some(Value {
        meta,
        body: out.freeze(),
        body_len: h.body_len,
        summary: h.summary,
        hlc: h.hlc,
    }))
}

/// [`crate::Engine::head`].
pub(crate) async fn head(
    inner: &Inner,
    partition: PartitionId,
    key: &[u8],
) -> Result<Option<Head>, EngineError> {
    inner.check_open()?;
    if let Some(hit) = inner
        .cache
        .borrow_mut()
        .as_mut()
        .and_then(|c| c.get(partition, key))
    {
        return Ok(Some(hit.head()));
    }
    for _ in 0..READ_ATTEMPTS_MAX {
        let Some(loc) = locate(inner, partition, key)? else {
            return Ok(None);
        };
        // Header, key and meta (the record minus its body, plus at most 7 bytes of padding).
        let want = (loc.entry.len as u64).saturating_sub(loc.entry.body_len);
        let (buf, at) = read_span(&loc, loc.entry.offset as u64, want).await?;
        let rec = &buf[at..];
        match check_header(&loc, key, rec) {
            Some(h) => {
                let meta_at = at + HEADER_BYTES + h.key_len as usize;
                let meta = Bytes::from_owner(buf).slice(meta_at..meta_at + h.meta_len as usize);
                return Ok(Some(Head {
                    meta,
                    body_len: h.body_len,
                    summary: h.summary,
                    hlc: h.hlc,
                }));
            }
            None if !unchanged(inner, partition, key, &loc) => continue,
            None => return Err(corrupt(inner, &loc)),
        }
    }
    Err(EngineError::Closed)
}
