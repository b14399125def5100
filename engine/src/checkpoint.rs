//! Index checkpoints: `index/<seq:016x>.ckpt`, the whole index plus the log position it covers
//! and what every segment's header said (a second source for each header, and for the shard's
//! salt), written tmp → fsync → rename → fsync dir, verified by a whole-file xxh3 on load. The
//! newest two are kept so a corrupt newest one falls back to the previous one (byte layout in
//! FORMAT.md §5). Both format versions are read; only the current one is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use crate::index::{Entry, Index};
use crate::io::{io_err, sync_dir};
use crate::record::{le_u32, le_u64};
use crate::reserve::CheckpointReserve;
use crate::segment::SegState;
use crate::{EngineError, Hlc, Summary};

/// Magic at the start of a checkpoint file.
const CKPT_MAGIC: [u8; 8] = *b"LEOFSCKP";
/// Checkpoint format version written by this build (segment rows with salt, state and format).
const CKPT_VERSION: u32 = 2;
/// The first checkpoint format (segment rows of id and life only): read, never written.
const CKPT_VERSION_V1: u32 = 1;
/// Bytes of the fixed checkpoint header (version 2).
const CKPT_HEADER_BYTES: usize = 96;
/// Bytes of the fixed checkpoint header (version 1).
const CKPT_HEADER_BYTES_V1: usize = 80;
/// Bytes of one segment-table row (version 2: id, life, salt, state, format, flags).
const CKPT_SEGMENT_BYTES: usize = 32;
/// Bytes of one segment-table row (version 1: id, life).
const CKPT_SEGMENT_BYTES_V1: usize = 16;
/// Offset of the content length in a version-2 header (the file may be longer: reserve slack).
const CKPT_LENGTH_AT: usize = 88;
/// Row flag: the salt field is known.
const ROW_SALT_KNOWN: u8 = 1;
/// Bytes of one entry before its key.
const CKPT_ENTRY_BYTES: usize = 80;
/// Bytes of the trailing checksum.
const CKPT_TRAILER_BYTES: usize = 8;
/// How many checkpoint files are kept.
pub(crate) const CHECKPOINTS_KEPT: usize = 2;
/// File name suffix of a checkpoint.
const CKPT_SUFFIX: &str = ".ckpt";

/// Where replay resumes and what a checkpoint covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogPosition {
    /// Every record with an LSN ≤ this is reflected in the checkpoint's index.
    pub covered_lsn: u64,
    /// The next LSN the engine would have handed out.
    pub next_lsn: u64,
    /// Segment where replay starts (the oldest unapplied write, or the head).
    pub replay_segment: u64,
    /// That segment's life at checkpoint time (a different life: start at its header).
    pub replay_life: u64,
    /// Offset in that segment where replay starts.
    pub replay_offset: u64,
}

/// What a checkpoint records of one segment: its header at checkpoint time (fields a first-
/// format checkpoint did not record are None).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentRow {
    pub id: u64,
    pub life: u64,
    pub salt: Option<u64>,
    pub state: Option<SegState>,
    /// Segment header format version.
    pub version: Option<u32>,
}

/// A loaded checkpoint.
pub(crate) struct Checkpoint {
    pub seq: u64,
    pub position: LogPosition,
    /// Every segment the engine knew at checkpoint time (all those the entries point into).
    pub segment_rows: HashMap<u64, SegmentRow>,
    /// The shard's record salt (None in a first-format checkpoint).
    pub shard_salt: Option<u64>,
    pub index: Index,
    /// Newest HLC in the index (the clock starts after it).
    pub hlc_max: Hlc,
}

/// `<index dir>/<seq:016x>.ckpt`.
pub(crate) fn checkpoint_path(index_dir: &Path, seq: u64) -> PathBuf {
    index_dir.join(format!("{seq:016x}{CKPT_SUFFIX}"))
}

/// Serialises the index and position into checkpoint bytes.
pub(crate) fn encode(
    seq: u64,
    position: &LogPosition,
    rows: &[SegmentRow],
    shard_salt: u64,
    index: &Index,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        CKPT_HEADER_BYTES
            + rows.len() * CKPT_SEGMENT_BYTES
            + index.len() as usize * (CKPT_ENTRY_BYTES + 32),
    );
    out.extend_from_slice(&CKPT_MAGIC);
    out.extend_from_slice(&CKPT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for v in [
        seq,
        position.covered_lsn,
        position.next_lsn,
        position.replay_segment,
        position.replay_life,
        position.replay_offset,
        rows.len() as u64,
        index.len(),
        shard_salt,
        0, // the content length, set below
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    debug_assert_eq!(out.len(), CKPT_HEADER_BYTES);
    for row in rows {
        out.extend_from_slice(&row.id.to_le_bytes());
        out.extend_from_slice(&row.life.to_le_bytes());
        out.extend_from_slice(&row.salt.unwrap_or(0).to_le_bytes());
        out.push(row.state.map_or(0, |s| s as u8));
        out.push(row.version.map_or(0, |v| v as u8));
        out.push(if row.salt.is_some() {
            ROW_SALT_KNOWN
        } else {
            0
        });
        out.extend_from_slice(&[0u8; 5]);
    }
    for (partition, key, e) in index.iter() {
        out.extend_from_slice(&partition.to_le_bytes());
        out.extend_from_slice(&e.segment.to_le_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.push(e.tombstone as u8);
        out.push(0);
        out.extend_from_slice(&e.hlc.logical.to_le_bytes());
        out.extend_from_slice(&e.hlc.physical_us.to_le_bytes());
        out.extend_from_slice(&e.hlc.node_id.to_le_bytes());
        out.extend_from_slice(&e.summary.tag.to_le_bytes());
        out.extend_from_slice(&e.lsn.to_le_bytes());
        out.extend_from_slice(&e.summary.size.to_le_bytes());
        out.extend_from_slice(&e.body_len.to_le_bytes());
        out.extend_from_slice(&e.summary.digest);
        out.extend_from_slice(key);
    }
    let content_len = (out.len() + CKPT_TRAILER_BYTES) as u64;
    out[CKPT_LENGTH_AT..CKPT_LENGTH_AT + 8].copy_from_slice(&content_len.to_le_bytes());
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Bytes [`encode`] writes for `index` with `segment_rows` segment rows: what a checkpoint of
/// it needs on disk (its keys counted by their heap bytes, at least their lengths).
pub(crate) fn encoded_bytes_bound(index: &Index, segment_rows: usize) -> u64 {
    (CKPT_HEADER_BYTES + segment_rows * CKPT_SEGMENT_BYTES + CKPT_TRAILER_BYTES) as u64
        + index.len() * CKPT_ENTRY_BYTES as u64
        + index.key_heap_bytes_total()
}

/// Bytes one more index entry with a key of `key_len` bytes adds to a checkpoint.
pub(crate) fn entry_bytes(key_len: usize) -> u64 {
    (CKPT_ENTRY_BYTES + key_len) as u64
}

/// Parses and verifies checkpoint bytes.
pub(crate) fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    if bytes.len() < CKPT_HEADER_BYTES_V1 + CKPT_TRAILER_BYTES || bytes[..8] != CKPT_MAGIC {
        return Err("not a checkpoint (bad magic or too short)".into());
    }
    let version = le_u32(bytes, 8);
    // Version 2 says where its content ends (the rest is slack of the reserve it was written
    // into); version 1 is the whole file.
    let content_len = match version {
        CKPT_VERSION if bytes.len() >= CKPT_HEADER_BYTES + CKPT_TRAILER_BYTES => {
            usize::try_from(le_u64(bytes, CKPT_LENGTH_AT)).unwrap_or(usize::MAX)
        }
        _ => bytes.len(),
    };
    if content_len > bytes.len() || content_len < CKPT_HEADER_BYTES_V1 + CKPT_TRAILER_BYTES {
        return Err(format!(
            "checkpoint content length {content_len} does not fit the file of {} bytes",
            bytes.len()
        ));
    }
    let bytes = &bytes[..content_len];
    let body_end = bytes.len() - CKPT_TRAILER_BYTES;
    if xxh3_64(&bytes[..body_end]) != le_u64(bytes, body_end) {
        return Err("checkpoint checksum mismatch".into());
    }
    let (header_bytes, row_bytes) = match version {
        CKPT_VERSION => (CKPT_HEADER_BYTES, CKPT_SEGMENT_BYTES),
        CKPT_VERSION_V1 => (CKPT_HEADER_BYTES_V1, CKPT_SEGMENT_BYTES_V1),
        _ => {
            return Err(format!(
                "checkpoint format version {version}, this build reads {CKPT_VERSION_V1} and {CKPT_VERSION}"
            ));
        }
    };
    if body_end < header_bytes {
        return Err("checkpoint truncated".into());
    }
    let seq = le_u64(bytes, 16);
    let position = LogPosition {
        covered_lsn: le_u64(bytes, 24),
        next_lsn: le_u64(bytes, 32),
        replay_segment: le_u64(bytes, 40),
        replay_life: le_u64(bytes, 48),
        replay_offset: le_u64(bytes, 56),
    };
    let segment_count = le_u64(bytes, 64);
    let entry_count = le_u64(bytes, 72);
    let shard_salt = (version == CKPT_VERSION).then(|| le_u64(bytes, 80));
    let truncated = || "checkpoint truncated".to_string();
    let mut at = header_bytes;
    let mut segment_rows = HashMap::new();
    for _ in 0..segment_count {
        if at + row_bytes > body_end {
            return Err(truncated());
        }
        let mut row = SegmentRow {
            id: le_u64(bytes, at),
            life: le_u64(bytes, at + 8),
            salt: None,
            state: None,
            version: None,
        };
        if version == CKPT_VERSION {
            let flags = bytes[at + 26];
            row.salt = (flags & ROW_SALT_KNOWN != 0).then(|| le_u64(bytes, at + 16));
            row.state = SegState::from_u32(u32::from(bytes[at + 24]));
            row.version = Some(u32::from(bytes[at + 25])).filter(|&v| v != 0);
        }
        segment_rows.insert(row.id, row);
        at += row_bytes;
    }
    let mut items =
        Vec::with_capacity(entry_count.min((body_end / CKPT_ENTRY_BYTES) as u64) as usize);
    let mut hlc_max = Hlc::default();
    for _ in 0..entry_count {
        if at + CKPT_ENTRY_BYTES > body_end {
            return Err(truncated());
        }
        let e = &bytes[at..at + CKPT_ENTRY_BYTES];
        let key_len = u16::from_le_bytes([e[16], e[17]]) as usize;
        let key_at = at + CKPT_ENTRY_BYTES;
        if key_at + key_len > body_end {
            return Err(truncated());
        }
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&e[64..80]);
        let entry = Entry {
            segment: le_u32(e, 4),
            offset: le_u32(e, 8),
            len: le_u32(e, 12),
            tombstone: e[18] & 1 == 1,
            hlc: Hlc {
                physical_us: le_u64(e, 24),
                logical: le_u32(e, 20),
                node_id: le_u32(e, 32),
            },
            lsn: le_u64(e, 40),
            summary: Summary {
                size: le_u64(e, 48),
                digest,
                tag: le_u32(e, 36),
            },
            body_len: le_u64(e, 56),
        };
        if !segment_rows.contains_key(&(entry.segment as u64)) {
            return Err(format!(
                "entry points into segment {:x} missing from the table",
                entry.segment
            ));
        }
        hlc_max = hlc_max.max(entry.hlc);
        items.push((le_u32(e, 0), bytes[key_at..key_at + key_len].into(), entry));
        at = key_at + key_len;
    }
    let mut index = Index::default();
    index.bulk_load(items);
    if at != body_end {
        return Err("checkpoint has trailing bytes".into());
    }
    Ok(Checkpoint {
        seq,
        position,
        segment_rows,
        shard_salt,
        index,
        hlc_max,
    })
}

/// Writes checkpoint `seq` durably (fail point `engine::checkpoint_write`) into the checkpoint
/// reserve's blocks once [`CHECKPOINTS_KEPT`] checkpoints are present (see `reserve`; the first
/// ones of a shard, written at open, get files of their own), then keeps the newest
/// [`CHECKPOINTS_KEPT`]: the newest obsolete one becomes the next reserve, older ones are
/// removed.
pub(crate) async fn write(
    index_dir: &Path,
    seq: u64,
    bytes: Vec<u8>,
    reserve: &CheckpointReserve,
) -> Result<(), EngineError> {
    let path = checkpoint_path(index_dir, seq);
    let tmp = index_dir.join(format!("{seq:016x}{CKPT_SUFFIX}.tmp"));
    let fail = || -> Result<(), std::io::Error> {
        fail::fail_point!("engine::checkpoint_write", |arg| Err(crate::io::injected(
            arg
        )));
        Ok(())
    };
    fail().map_err(|e| io_err("write checkpoint", &tmp, e))?;
    let mut present = present(index_dir).map_err(|e| io_err("read dir", index_dir, e))?;
    // A reserve lost (an adoption that failed after a checkpoint) is taken back from the
    // oldest checkpoint beyond the kept ones.
    if !reserve.is_held() && present.len() > CHECKPOINTS_KEPT {
        present.sort_unstable();
        let (oldest, _) = present.remove(0);
        reserve
            .adopt(&oldest)
            .map_err(|e| io_err("keep as checkpoint reserve", &oldest, e))?;
    }
    let mut reused = present.len() >= CHECKPOINTS_KEPT
        && reserve
            .take_into(&tmp)
            .map_err(|e| io_err("take checkpoint reserve", &tmp, e))?;
    let (mut written, bytes) = write_file(&tmp, bytes, reused).await;
    // A shard's first checkpoints find no room of their own on a full disk: the reserve's
    // blocks are better used than none.
    if let Err(e) = &written
        && !reused
        && crate::io::is_no_space(e)
        && reserve.is_held()
    {
        let _ = std::fs::remove_file(&tmp);
        reused = reserve
            .take_into(&tmp)
            .map_err(|e| io_err("take checkpoint reserve", &tmp, e))?;
        written = write_file(&tmp, bytes, reused).await.0;
    }
    if let Err(e) = written {
        // The reserve's blocks stay the reserve's: removed, another shard's segment could
        // take them, and the next checkpoint would find no room on a full disk. (A reserve
        // allocated meanwhile was grown to the same length: the cut-off file goes.)
        let kept = reused && !reserve.is_held() && reserve.adopt(&tmp).is_ok();
        if !kept {
            let _ = std::fs::remove_file(&tmp);
        }
        reserve.checkpoint_done();
        return Err(io_err("write checkpoint", &tmp, e));
    }
    let result = rotate(index_dir, &tmp, &path, reserve).await;
    reserve.checkpoint_done();
    result
}

/// Puts the checkpoint written to `tmp` in place at `path` and keeps the newest
/// [`CHECKPOINTS_KEPT`]: the newest obsolete one becomes the reserve, older ones are removed.
async fn rotate(
    index_dir: &Path,
    tmp: &Path,
    path: &Path,
    reserve: &CheckpointReserve,
) -> Result<(), EngineError> {
    std::fs::rename(tmp, path).map_err(|e| io_err("rename", tmp, e))?;
    sync_dir(index_dir).await?;
    let mut seqs = list(index_dir)?;
    seqs.sort_unstable();
    let old = &seqs[..seqs.len().saturating_sub(CHECKPOINTS_KEPT)];
    for (i, old_seq) in old.iter().enumerate().rev() {
        let p = checkpoint_path(index_dir, *old_seq);
        if i + 1 == old.len() && !reserve.is_held() {
            reserve
                .adopt(&p)
                .map_err(|e| io_err("keep as checkpoint reserve", &p, e))?;
        } else {
            std::fs::remove_file(&p).map_err(|e| io_err("remove", &p, e))?;
        }
    }
    Ok(())
}

/// Writes `bytes` at the start of `path` and fsyncs it: into the existing blocks of a reserve
/// (never shortened: the header says where the content ends), or into a new file. The bytes
/// come back, for a second attempt.
async fn write_file(path: &Path, bytes: Vec<u8>, existing: bool) -> (std::io::Result<()>, Vec<u8>) {
    // Fail point `engine::disk_full`: a checkpoint that needs blocks beyond its file's fails.
    let injected = || -> std::io::Result<()> {
        fail::fail_point!(
            "engine::disk_full",
            !existing || bytes.len() as u64 > std::fs::metadata(path).map_or(0, |m| m.len()),
            |_| Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        );
        Ok(())
    };
    if let Err(e) = injected() {
        return (Err(e), bytes);
    }
    let opened = if existing {
        monoio::fs::OpenOptions::new().write(true).open(path).await
    } else {
        monoio::fs::File::create(path).await
    };
    let file = match opened {
        Ok(file) => file,
        Err(e) => return (Err(e), bytes),
    };
    let (res, bytes) = file.write_all_at(bytes, 0).await;
    if let Err(e) = res {
        return (Err(e), bytes);
    }
    if let Err(e) = file.sync_all().await {
        return (Err(e), bytes);
    }
    (file.close().await, bytes)
}

/// The checkpoint files present with their lengths in bytes, leaving temporary files alone (a
/// checkpoint may be under way).
fn present(index_dir: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut files = Vec::new();
    for ent in std::fs::read_dir(index_dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(CKPT_SUFFIX)) else {
            continue;
        };
        if u64::from_str_radix(stem, 16).is_ok() {
            files.push((ent.path(), ent.metadata()?.len()));
        }
    }
    Ok(files)
}

/// Whether the checkpoint file at `path` is of this build's format, whose header says where
/// its content ends (an older one is its whole file: it is never given slack).
fn has_content_length(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 12];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head[..8] == CKPT_MAGIC && le_u32(&head, 8) == CKPT_VERSION)
}

/// Gives every checkpoint file present of this build's format allocated slack up to `bytes`:
/// each becomes the checkpoint reserve once it is obsolete (see `reserve`).
pub(crate) fn extend_present(index_dir: &Path, bytes: u64) -> std::io::Result<()> {
    for (path, len) in present(index_dir)? {
        if len < bytes && has_content_length(&path) {
            crate::reserve::allocate_to(&path, len, bytes)?;
        }
    }
    Ok(())
}

/// How many checkpoint files of this build's format are present, and the smallest one's
/// length (u64::MAX for none); (0, u64::MAX) when the directory cannot be read.
pub(crate) fn present_v2(index_dir: &Path) -> (usize, u64) {
    present(index_dir).map_or((0, u64::MAX), |files| {
        files
            .into_iter()
            .filter(|(path, _)| has_content_length(path))
            .fold((0, u64::MAX), |(count, min), (_, len)| {
                (count + 1, min.min(len))
            })
    })
}

/// At open, before the directory is listed (which removes temporary files): the file of a
/// checkpoint cut off by a crash holds the reserve's blocks, so it becomes the reserve again
/// when there is none.
pub(crate) fn reclaim_cut_off_reserve(index_dir: &Path, reserve_path: &Path) {
    if reserve_path.exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(index_dir) else {
        return;
    };
    let cut_off = entries.filter_map(Result::ok).find(|e| {
        e.file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(&format!("{CKPT_SUFFIX}.tmp")))
    });
    if let Some(entry) = cut_off
        && std::fs::rename(entry.path(), reserve_path).is_ok()
    {
        tracing::info!(
            path = %entry.path().display(),
            "a checkpoint cut off by a crash gives its blocks back to the checkpoint reserve"
        );
    }
}

/// Sequence numbers of the checkpoint files present (temporary files are removed).
pub(crate) fn list(index_dir: &Path) -> Result<Vec<u64>, EngineError> {
    let mut seqs = Vec::new();
    let rd = std::fs::read_dir(index_dir).map_err(|e| io_err("read dir", index_dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| io_err("read dir", index_dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            std::fs::remove_file(ent.path()).map_err(|e| io_err("remove", &ent.path(), e))?;
        } else if let Some(stem) = name.strip_suffix(CKPT_SUFFIX)
            && let Ok(seq) = u64::from_str_radix(stem, 16)
        {
            seqs.push(seq);
        }
    }
    Ok(seqs)
}

/// The bytes of the checkpoint file at `path` up to the end of its content, when its header
/// says where that is (a file written into the reserve keeps the reserve's slack after it,
/// which need not be read); the whole file otherwise, for [`decode`] to judge.
async fn read_content(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = monoio::fs::File::open(path).await?;
    let file_len = std::fs::metadata(path)?.len();
    let (head, header) = file
        .read_exact_at(Vec::with_capacity(CKPT_HEADER_BYTES), 0)
        .await;
    let len = match head {
        Ok(()) if header[..8] == CKPT_MAGIC && le_u32(&header, 8) == CKPT_VERSION => {
            le_u64(&header, CKPT_LENGTH_AT).min(file_len)
        }
        _ => file_len,
    };
    let capacity = usize::try_from(len).map_err(|_| std::io::ErrorKind::OutOfMemory)?;
    let (read, bytes) = file.read_exact_at(Vec::with_capacity(capacity), 0).await;
    file.close().await?;
    read.map(|()| bytes)
}

/// Loads the newest valid checkpoint (a corrupt one is reported and skipped); also returns the
/// highest sequence number present.
pub(crate) async fn load_newest(
    index_dir: &Path,
) -> Result<(Option<Checkpoint>, u64), EngineError> {
    let mut seqs = list(index_dir)?;
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    let max_seq = seqs.first().copied().unwrap_or(0);
    for seq in seqs {
        let path = checkpoint_path(index_dir, seq);
        let bytes = read_content(&path)
            .await
            .map_err(|e| io_err("read", &path, e))?;
        match decode(&bytes) {
            Ok(ckpt) => return Ok((Some(ckpt), max_seq)),
            Err(detail) => {
                tracing::warn!(path = %path.display(), %detail, "skipping invalid checkpoint")
            }
        }
    }
    Ok((None, max_seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_index() -> Index {
        let mut idx = Index::default();
        for i in 0..100u32 {
            let e = Entry {
                segment: i % 3,
                offset: 4096 + i * 8,
                len: 200 + i,
                tombstone: i % 7 == 0,
                hlc: Hlc {
                    physical_us: 1000 + i as u64,
                    logical: i,
                    node_id: 2,
                },
                lsn: i as u64 + 1,
                summary: Summary {
                    size: i as u64,
                    digest: [i as u8; 16],
                    tag: i * 3,
                },
                body_len: i as u64 * 10,
            };
            idx.apply(i % 4, format!("key-{i}").as_bytes(), e);
        }
        idx
    }

    fn row(id: u64, life: u64) -> SegmentRow {
        SegmentRow {
            id,
            life,
            salt: (id != 2).then_some(id * 11),
            state: Some(SegState::Active),
            version: Some(crate::segment::SEGMENT_VERSION),
        }
    }

    #[test]
    fn round_trip() {
        let idx = sample_index();
        let pos = LogPosition {
            covered_lsn: 100,
            next_lsn: 101,
            replay_segment: 2,
            replay_life: 7,
            replay_offset: 8192,
        };
        let rows = [row(0, 1), row(1, 5), row(2, 7)];
        let bytes = encode(9, &pos, &rows, 0xfeed, &idx);
        let ckpt = decode(&bytes).unwrap();
        assert_eq!(ckpt.seq, 9);
        assert_eq!(ckpt.position, pos);
        assert_eq!(ckpt.shard_salt, Some(0xfeed));
        assert_eq!(ckpt.segment_rows.len(), 3);
        assert_eq!(ckpt.segment_rows[&1], rows[1]);
        let a: Vec<_> = idx.iter().map(|(p, k, e)| (p, k.to_vec(), *e)).collect();
        let b: Vec<_> = ckpt
            .index
            .iter()
            .map(|(p, k, e)| (p, k.to_vec(), *e))
            .collect();
        assert_eq!(a, b);
        assert_eq!(ckpt.hlc_max.physical_us, 1099);
    }

    /// A first-format checkpoint (80-byte header, 16-byte rows) still loads.
    #[test]
    fn first_format_checkpoint_is_read() {
        let idx = sample_index();
        let current = encode(
            4,
            &LogPosition::default(),
            &[row(0, 1), row(1, 2), row(2, 3)],
            5,
            &idx,
        );
        let rows_at = CKPT_HEADER_BYTES;
        let entries_at = rows_at + 3 * CKPT_SEGMENT_BYTES;
        let mut v1 = current[..CKPT_HEADER_BYTES_V1].to_vec();
        v1[8..12].copy_from_slice(&CKPT_VERSION_V1.to_le_bytes());
        for i in 0..3 {
            let at = rows_at + i * CKPT_SEGMENT_BYTES;
            v1.extend_from_slice(&current[at..at + CKPT_SEGMENT_BYTES_V1]);
        }
        v1.extend_from_slice(&current[entries_at..current.len() - CKPT_TRAILER_BYTES]);
        let sum = xxh3_64(&v1);
        v1.extend_from_slice(&sum.to_le_bytes());
        let ckpt = decode(&v1).unwrap();
        assert_eq!(ckpt.seq, 4);
        assert_eq!(ckpt.shard_salt, None);
        assert_eq!(
            ckpt.segment_rows[&1],
            SegmentRow {
                id: 1,
                life: 2,
                salt: None,
                state: None,
                version: None
            }
        );
        assert_eq!(ckpt.index.len(), idx.len());
    }

    #[test]
    fn corruption_is_detected() {
        let bytes = encode(
            1,
            &LogPosition::default(),
            &[row(0, 1), row(1, 1), row(2, 1)],
            7,
            &sample_index(),
        );
        for at in [0, 20, 100, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {at} undetected");
        }
        assert!(decode(&bytes[..bytes.len() - 9]).is_err());
        // Slack after the content (a reused reserve) is ignored.
        let mut slack = bytes.clone();
        slack.extend_from_slice(&[0xAB; 5000]);
        assert_eq!(decode(&slack).expect("with slack").seq, 1);
    }
}
