//! Log segments: the 4 KiB segment header, creating (fallocated) segment files, (re)writing
//! headers when a segment is activated or recycled, and the in-memory segment table with the
//! write head. Segment files are never grown by appends: every block is allocated at creation,
//! and the pre-writer (`segment_pool`) zero-fills blocks ahead of the head in the background.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use monoio::fs::File;
use std::os::fd::AsRawFd;
use xxhash_rust::xxh3::xxh3_64;

use crate::EngineError;
use crate::aligned::{AlignedBuf, BLOCK_BYTES, BufPool};
use crate::io::{io_err, is_no_space, open_direct, sync_data, sync_dir, write_all_at};
use crate::record::{le_u32, le_u64};

/// Magic of a segment header block.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"LEOFSSEG";
/// Segment header format version written by this build.
pub(crate) const SEGMENT_VERSION: u32 = 1;
/// Bytes of the segment header (the first block); records start after it.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = BLOCK_BYTES as u64;
/// Offset of the header's xxh3-64 checksum (it covers the bytes before it).
const SEGMENT_CHECKSUM_AT: usize = BLOCK_BYTES - 8;
/// File name suffix of a segment.
const SEGMENT_SUFFIX: &str = ".seg";
/// File name suffix of a segment being created (removed at open).
const SEGMENT_TMP_SUFFIX: &str = ".seg.tmp";

/// A segment's role, as recorded in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegState {
    /// Holds no current records; may become the head.
    Free = 1,
    /// Holds (or held) records of its current life: the head or a sealed segment.
    Active = 2,
}

/// The decoded header block of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub id: u64,
    pub life_seq: u64,
    pub state: SegState,
    pub size_bytes: u64,
    pub salt: u64,
}

impl SegmentHeader {
    /// Encodes into a full header block.
    pub(crate) fn encode(&self, block: &mut [u8]) {
        let b = &mut block[..BLOCK_BYTES];
        b.fill(0);
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.state as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.id.to_le_bytes());
        b[24..32].copy_from_slice(&self.life_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.size_bytes.to_le_bytes());
        b[40..48].copy_from_slice(&self.salt.to_le_bytes());
        let sum = xxh3_64(&b[..SEGMENT_CHECKSUM_AT]);
        b[SEGMENT_CHECKSUM_AT..].copy_from_slice(&sum.to_le_bytes());
    }

    /// Decodes and verifies a header block.
    pub(crate) fn decode(block: &[u8]) -> Result<SegmentHeader, String> {
        if block.len() < BLOCK_BYTES || block[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic".into());
        }
        if le_u64(block, SEGMENT_CHECKSUM_AT) != xxh3_64(&block[..SEGMENT_CHECKSUM_AT]) {
            return Err("segment header checksum mismatch".into());
        }
        let version = le_u32(block, 8);
        if version != SEGMENT_VERSION {
            return Err(format!(
                "segment format version {version}, this build reads {SEGMENT_VERSION}"
            ));
        }
        let state = match le_u32(block, 12) {
            1 => SegState::Free,
            2 => SegState::Active,
            s => return Err(format!("unknown segment state {s}")),
        };
        Ok(SegmentHeader {
            id: le_u64(block, 16),
            life_seq: le_u64(block, 24),
            state,
            size_bytes: le_u64(block, 32),
            salt: le_u64(block, 40),
        })
    }
}

/// A fresh random 64-bit value (seeded by the process's random hash keys and the time).
pub(crate) fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.finish()
}

/// `<log dir>/<id:016x>.seg`.
pub(crate) fn segment_path(log_dir: &Path, id: u64) -> PathBuf {
    log_dir.join(format!("{id:016x}{SEGMENT_SUFFIX}"))
}

/// A file found in the log directory.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LogFile {
    /// A segment.
    Segment(u64),
    /// A segment whose creation did not finish (removed at open).
    Temporary(u64),
}

/// Parses a log directory file name.
pub(crate) fn parse_segment_name(name: &str) -> Option<LogFile> {
    if let Some(stem) = name.strip_suffix(SEGMENT_TMP_SUFFIX) {
        return u64::from_str_radix(stem, 16).ok().map(LogFile::Temporary);
    }
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    (stem.len() == 16).then(|| u64::from_str_radix(stem, 16).ok().map(LogFile::Segment))?
}

/// One segment file and what the engine knows of it.
pub(crate) struct Segment {
    pub id: u64,
    pub file: Rc<File>,
    pub path: PathBuf,
    pub size_bytes: u64,
    pub life_seq: u64,
    pub salt: u64,
    pub state: SegState,
    /// Every block below this offset has been written (zeros or records) in some life, so a
    /// write there overwrites allocated, written blocks and its fdatasync changes no metadata;
    /// blocks above it may still be unwritten extents (they read as zeros).
    pub zeroed_until: u64,
}

/// Writes a segment's header block (a new life, or a new state) and makes it durable.
pub(crate) async fn write_segment_header(
    file: &File,
    path: &Path,
    header: &SegmentHeader,
    pool: &BufPool,
) -> Result<(), EngineError> {
    let mut buf = pool.get(BLOCK_BYTES);
    header.encode(buf.spare_mut());
    buf.set_len(BLOCK_BYTES);
    let (res, buf) = write_all_at(file, buf, 0, path).await;
    pool.put(buf);
    res?;
    fail::fail_point!("engine::segment_header_fdatasync", |arg| Err(io_err(
        "fdatasync",
        path,
        crate::io::injected(arg)
    )));
    sync_data(file, path).await
}

/// Creates segment `id`: a temporary file of `size_bytes` allocated with `fallocate` (the
/// blocks read as zeros), its header block written in state free, fdatasync'ed, renamed into
/// place, directory fsync'ed. ENOSPC → [`EngineError::DiskFull`].
pub(crate) async fn create_segment(
    log_dir: &Path,
    id: u64,
    size_bytes: u64,
    life_seq: u64,
    pool: &BufPool,
) -> Result<Segment, EngineError> {
    let shard_dir = log_dir.parent().unwrap_or(log_dir).to_path_buf();
    let disk_full = |e: &EngineError| match e {
        EngineError::Io { source, .. } => is_no_space(source),
        _ => false,
    };
    let fail = || -> Result<(), std::io::Error> {
        fail::fail_point!("engine::segment_create", |arg| Err(crate::io::injected(
            arg.or(Some("enospc".into()))
        )));
        Ok(())
    };
    if let Err(e) = fail() {
        return Err(if is_no_space(&e) {
            EngineError::DiskFull { dir: shard_dir }
        } else {
            io_err("create segment", &segment_path(log_dir, id), e)
        });
    }
    let tmp = log_dir.join(format!("{id:016x}{SEGMENT_TMP_SUFFIX}"));
    let path = segment_path(log_dir, id);
    let result = fill_new_segment(&tmp, id, size_bytes, life_seq, pool).await;
    let file = match result {
        Ok(file) => file,
        Err(e) => {
            // Best effort: the temporary file is also removed at the next open.
            let _ = std::fs::remove_file(&tmp);
            return Err(if disk_full(&e) {
                EngineError::DiskFull { dir: shard_dir }
            } else {
                e
            });
        }
    };
    std::fs::rename(&tmp, &path).map_err(|e| io_err("rename", &tmp, e))?;
    sync_dir(log_dir).await?;
    Ok(Segment {
        id,
        file: Rc::new(file),
        path,
        size_bytes,
        life_seq,
        salt: 0,
        state: SegState::Free,
        zeroed_until: SEGMENT_HEADER_BYTES,
    })
}

async fn fill_new_segment(
    tmp: &Path,
    id: u64,
    size_bytes: u64,
    life_seq: u64,
    pool: &BufPool,
) -> Result<File, EngineError> {
    let file = open_direct(tmp, true).await?;
    // Allocate every block first: ENOSPC shows here, and no write below extends the file.
    // SAFETY: fallocate on a file descriptor we own, with no pointers involved.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, size_bytes as libc::off_t) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(io_err("fallocate", tmp, e));
        }
        // No fallocate here: a sparse file of the full size still reads as zeros.
        // SAFETY: ftruncate on a file descriptor we own, with no pointers involved.
        let rc = unsafe { libc::ftruncate(file.as_raw_fd(), size_bytes as libc::off_t) };
        if rc != 0 {
            return Err(io_err("ftruncate", tmp, std::io::Error::last_os_error()));
        }
    }
    let mut block = pool.get(BLOCK_BYTES);
    SegmentHeader {
        id,
        life_seq,
        state: SegState::Free,
        size_bytes,
        salt: 0,
    }
    .encode(block.spare_mut());
    block.set_len(BLOCK_BYTES);
    let (res, block) = write_all_at(&file, block, 0, tmp).await;
    pool.put(block);
    res?;
    sync_data(&file, tmp).await?;
    Ok(file)
}

/// Opens an existing segment and reads its header; Err(detail) if the header is unreadable.
pub(crate) async fn open_segment(
    path: &Path,
    id: u64,
) -> Result<Result<Segment, String>, EngineError> {
    let file = open_direct(path, false).await?;
    let buf = AlignedBuf::new(BLOCK_BYTES);
    let (res, buf) = crate::io::read_exact_at(&file, buf, BLOCK_BYTES, 0, path).await;
    if let Err(e) = res {
        return Ok(Err(e.to_string()));
    }
    let header = match SegmentHeader::decode(&buf) {
        Ok(h) if h.id == id => h,
        Ok(h) => return Ok(Err(format!("header names segment {:x}", h.id))),
        Err(detail) => return Ok(Err(detail)),
    };
    Ok(Ok(Segment {
        id,
        file: Rc::new(file),
        path: path.to_path_buf(),
        size_bytes: header.size_bytes,
        life_seq: header.life_seq,
        salt: header.salt,
        state: header.state,
        // Unknown after a restart: assume written (writes beyond are correct, only slower).
        zeroed_until: header.size_bytes,
    }))
}

/// The segment table and the write head.
pub(crate) struct Log {
    /// Every usable segment by id.
    pub segments: BTreeMap<u64, Segment>,
    /// Ids of segments whose header is unreadable: never reused, never read.
    pub broken: Vec<u64>,
    /// Free segments, oldest first.
    pub free: Vec<u64>,
    /// The segment appends go to.
    pub head: u64,
    /// Next append offset in the head (block aligned between batches).
    pub head_offset: u64,
    /// Next life sequence to hand out (greater than every one on disk).
    pub next_life: u64,
    /// Next segment id to create.
    pub next_segment_id: u64,
}

impl Log {
    /// The head segment.
    pub(crate) fn head(&self) -> &Segment {
        &self.segments[&self.head]
    }

    /// Bytes of all segment files.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size_bytes).sum()
    }

    /// Bytes written or reserved in a segment (its used extent), header excluded.
    pub(crate) fn used_bytes(&self, seg: &Segment) -> u64 {
        match seg.state {
            SegState::Free => 0,
            SegState::Active if seg.id == self.head => self.head_offset - SEGMENT_HEADER_BYTES,
            SegState::Active => seg.size_bytes - SEGMENT_HEADER_BYTES,
        }
    }

    /// Sealed (active, not head) segments.
    pub(crate) fn sealed(&self) -> impl Iterator<Item = &Segment> {
        self.segments
            .values()
            .filter(|s| s.state == SegState::Active && s.id != self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_corruption() {
        let h = SegmentHeader {
            id: 5,
            life_seq: 9,
            state: SegState::Active,
            size_bytes: 1 << 20,
            salt: 77,
        };
        let mut block = vec![0u8; BLOCK_BYTES];
        h.encode(&mut block);
        assert_eq!(SegmentHeader::decode(&block).unwrap(), h);
        block[30] ^= 1;
        assert!(SegmentHeader::decode(&block).is_err());
    }

    #[test]
    fn names() {
        let p = segment_path(Path::new("/x"), 0x1f);
        assert_eq!(p, Path::new("/x/000000000000001f.seg"));
        assert_eq!(
            parse_segment_name("000000000000001f.seg"),
            Some(LogFile::Segment(0x1f))
        );
        assert_eq!(
            parse_segment_name("000000000000001f.seg.tmp"),
            Some(LogFile::Temporary(0x1f))
        );
        assert_eq!(parse_segment_name("foo.seg"), None);
        assert_eq!(parse_segment_name("x.ckpt"), None);
    }
}
