//! Log segments: the 4 KiB segment header (two copies: block 0 and the mirror in the last block),
//! creating (fallocated) segment files, (re)writing headers when a segment is activated or
//! recycled, choosing between the two copies at open, and the in-memory segment table with the
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
/// Segment header format version written by this build: a copy of the header in block 0 and
/// another (the mirror) in the last block, and one salt per shard (FORMAT.md §3.1).
pub(crate) const SEGMENT_VERSION: u32 = 2;
/// The first segment format (one header copy, a random salt per life): read, never written.
pub(crate) const SEGMENT_VERSION_V1: u32 = 1;
/// Bytes of the segment header (the first block); records start after it.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = BLOCK_BYTES as u64;
/// Bytes of the header mirror at the end of a version-2 segment.
pub(crate) const SEGMENT_MIRROR_BYTES: u64 = BLOCK_BYTES as u64;
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

impl SegState {
    pub(crate) fn from_u32(v: u32) -> Option<SegState> {
        match v {
            1 => Some(SegState::Free),
            2 => Some(SegState::Active),
            _ => None,
        }
    }
}

/// The decoded header block of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub id: u64,
    pub life_seq: u64,
    pub state: SegState,
    pub size_bytes: u64,
    /// Seeds the checksums of the records of this life (version 2: the shard's salt).
    pub salt: u64,
    /// Format version of the header (this build writes only [`SEGMENT_VERSION`]).
    pub version: u32,
}

impl SegmentHeader {
    /// Encodes into a full header block (always in the current format version).
    pub(crate) fn encode(&self, block: &mut [u8]) {
        debug_assert_eq!(
            self.version, SEGMENT_VERSION,
            "only the current format is written"
        );
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

    /// Decodes and verifies a header block (either format version).
    pub(crate) fn decode(block: &[u8]) -> Result<SegmentHeader, String> {
        if block.len() < BLOCK_BYTES || block[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic".into());
        }
        if le_u64(block, SEGMENT_CHECKSUM_AT) != xxh3_64(&block[..SEGMENT_CHECKSUM_AT]) {
            return Err("segment header checksum mismatch".into());
        }
        let version = le_u32(block, 8);
        if version != SEGMENT_VERSION && version != SEGMENT_VERSION_V1 {
            return Err(format!(
                "segment format version {version}, this build reads {SEGMENT_VERSION_V1} and {SEGMENT_VERSION}"
            ));
        }
        let state = SegState::from_u32(le_u32(block, 12))
            .ok_or_else(|| format!("unknown segment state {}", le_u32(block, 12)))?;
        Ok(SegmentHeader {
            id: le_u64(block, 16),
            life_seq: le_u64(block, 24),
            state,
            size_bytes: le_u64(block, 32),
            salt: le_u64(block, 40),
            version,
        })
    }
}

/// Where records of a segment end: before the header mirror, except in an active segment of
/// the first format (no mirror; its records may fill the last block). A free segment is
/// treated as the current format: it gets a version-2 header when it is next activated.
pub(crate) fn records_end(size_bytes: u64, state: SegState, version: u32) -> u64 {
    if state == SegState::Active && version == SEGMENT_VERSION_V1 {
        size_bytes
    } else {
        size_bytes - SEGMENT_MIRROR_BYTES
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
    /// Format version of its header (1: no mirror, records may fill the last block).
    pub version: u32,
    /// Both header copies were unreadable and the header was established from the checkpoint
    /// and the records themselves: never the head, rewritten only when compaction recycles it.
    pub inferred: bool,
    /// Every block below this offset has been written (zeros or records) in some life, so a
    /// write there overwrites allocated, written blocks and its fdatasync changes no metadata;
    /// blocks above it may still be unwritten extents (they read as zeros).
    pub zeroed_until: u64,
    /// LSN of the newest partition-drop record known in this life (0: none). The segment is
    /// recycled only once a checkpoint covers it (FORMAT.md §7): replay must find the drop
    /// whenever it can replay records the drop removed.
    pub drop_lsn_max: u64,
}

impl Segment {
    /// End of the region records may occupy (see [`records_end`]).
    pub(crate) fn records_end(&self) -> u64 {
        records_end(self.size_bytes, self.state, self.version)
    }

    /// The header this segment carries (for rewriting one copy from the other).
    pub(crate) fn header(&self) -> SegmentHeader {
        SegmentHeader {
            id: self.id,
            life_seq: self.life_seq,
            state: self.state,
            size_bytes: self.size_bytes,
            salt: self.salt,
            version: self.version,
        }
    }

    fn from_header(file: File, path: &Path, header: &SegmentHeader, inferred: bool) -> Segment {
        Segment {
            id: header.id,
            file: Rc::new(file),
            path: path.to_path_buf(),
            size_bytes: header.size_bytes,
            life_seq: header.life_seq,
            salt: header.salt,
            state: header.state,
            version: header.version,
            inferred,
            // Unknown after a restart: assume written (writes beyond are correct, only slower).
            zeroed_until: header.size_bytes,
            // Replay notes the drops it finds; earlier ones are covered by the checkpoint.
            drop_lsn_max: 0,
        }
    }
}

/// Writes both copies of a header (block 0 and the mirror in the last block), without a sync.
async fn write_header_copies(
    file: &File,
    path: &Path,
    header: &SegmentHeader,
    pool: &BufPool,
) -> Result<(), EngineError> {
    let mut buf = pool.get(BLOCK_BYTES);
    header.encode(buf.spare_mut());
    buf.set_len(BLOCK_BYTES);
    let (res, buf) = write_all_at(file, buf, 0, path).await;
    if let Err(e) = res {
        pool.put(buf);
        return Err(e);
    }
    let (res, buf) = write_all_at(file, buf, header.size_bytes - SEGMENT_MIRROR_BYTES, path).await;
    pool.put(buf);
    res
}

/// Writes a segment's header (a new life, or a new state) in both copies and makes it durable.
/// Records of a new life are written only after this returns, so a crash in between leaves
/// copies that disagree; [`choose_header`] then takes the newer life, which is safe either way.
pub(crate) async fn write_segment_header(
    file: &File,
    path: &Path,
    header: &SegmentHeader,
    pool: &BufPool,
) -> Result<(), EngineError> {
    write_header_copies(file, path, header, pool).await?;
    fail::fail_point!("engine::segment_header_fdatasync", |arg| Err(io_err(
        "fdatasync",
        path,
        crate::io::injected(arg)
    )));
    sync_data(file, path).await
}

/// Rewrites one damaged or stale copy of a header from the good one and syncs it.
pub(crate) async fn repair_header_copy(
    seg: &Segment,
    offset: u64,
    pool: &BufPool,
) -> Result<(), EngineError> {
    let mut buf = pool.get(BLOCK_BYTES);
    seg.header().encode(buf.spare_mut());
    buf.set_len(BLOCK_BYTES);
    let (res, buf) = write_all_at(&seg.file, buf, offset, &seg.path).await;
    pool.put(buf);
    res?;
    sync_data(&seg.file, &seg.path).await
}

/// Creates segment `id`: a temporary file of `size_bytes` allocated with `fallocate` (the
/// blocks read as zeros), both header copies written in state free, fdatasync'ed, renamed into
/// place, directory fsync'ed. ENOSPC → [`EngineError::DiskFull`].
pub(crate) async fn create_segment(
    log_dir: &Path,
    header: SegmentHeader,
    pool: &BufPool,
) -> Result<Segment, EngineError> {
    let id = header.id;
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
    let result = fill_new_segment(&tmp, &header, pool).await;
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
    let mut seg = Segment::from_header(file, &path, &header, false);
    seg.zeroed_until = SEGMENT_HEADER_BYTES;
    Ok(seg)
}

async fn fill_new_segment(
    tmp: &Path,
    header: &SegmentHeader,
    pool: &BufPool,
) -> Result<File, EngineError> {
    let size_bytes = header.size_bytes;
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
    write_header_copies(&file, tmp, header, pool).await?;
    sync_data(&file, tmp).await?;
    Ok(file)
}

/// What the two header copies of a segment file say.
pub(crate) enum HeaderRead {
    /// The header to use. `repair` names the offset of a copy that is damaged or stale (older
    /// life), to be rewritten from this one; `detail` says what was wrong with it.
    Valid {
        header: SegmentHeader,
        repair: Option<(u64, String)>,
    },
    /// Neither copy is usable; `detail` says why.
    Damaged { detail: String },
}

/// Decides between the two copies of a header: block 0 (`primary`) and the last block
/// (`mirror`), for a file of `file_len` bytes named as segment `id`. A copy counts only if it
/// verifies, names this segment and this file's size. A first-format header has no mirror (its
/// last block holds records). When both copies are current-format and disagree, the newer life
/// wins: the older one is what a crash during a header rewrite left behind.
pub(crate) fn choose_header(
    id: u64,
    file_len: u64,
    primary: Result<&[u8], String>,
    mirror: Result<&[u8], String>,
) -> HeaderRead {
    let check = |block: Result<&[u8], String>| -> Result<SegmentHeader, String> {
        let h = SegmentHeader::decode(block?)?;
        if h.id != id {
            return Err(format!("header names segment {:x}", h.id));
        }
        if h.size_bytes != file_len {
            return Err(format!(
                "header says {} bytes, the file has {file_len}",
                h.size_bytes
            ));
        }
        Ok(h)
    };
    let mirror_at = file_len.saturating_sub(SEGMENT_MIRROR_BYTES);
    match (check(primary), check(mirror)) {
        (Ok(a), _) if a.version == SEGMENT_VERSION_V1 => HeaderRead::Valid {
            header: a,
            repair: None,
        },
        (Ok(a), Ok(b)) if a == b => HeaderRead::Valid {
            header: a,
            repair: None,
        },
        (Ok(a), Ok(b)) if b.version == SEGMENT_VERSION && b.life_seq > a.life_seq => {
            HeaderRead::Valid {
                header: b,
                repair: Some((0, format!("block 0 holds an older life ({})", a.life_seq))),
            }
        }
        (Ok(a), Ok(b)) => HeaderRead::Valid {
            header: a,
            repair: Some((
                mirror_at,
                format!("the mirror holds another life ({})", b.life_seq),
            )),
        },
        (Ok(a), Err(detail)) => HeaderRead::Valid {
            header: a,
            repair: Some((mirror_at, format!("mirror: {detail}"))),
        },
        (Err(detail), Ok(b)) if b.version == SEGMENT_VERSION => HeaderRead::Valid {
            header: b,
            repair: Some((0, format!("block 0: {detail}"))),
        },
        (Err(a), Err(b)) => HeaderRead::Damaged {
            detail: format!("block 0: {a}; mirror: {b}"),
        },
        (Err(a), Ok(_)) => HeaderRead::Damaged {
            detail: format!("block 0: {a}; the last block holds a first-format header"),
        },
    }
}

/// An opened segment file before its header is settled.
pub(crate) struct OpenedFile {
    pub file: File,
    pub path: PathBuf,
    pub len: u64,
    pub read: HeaderRead,
}

/// Opens an existing segment and reads both header copies.
pub(crate) async fn open_segment(path: &Path, id: u64) -> Result<OpenedFile, EngineError> {
    let file = open_direct(path, false).await?;
    let len = std::fs::metadata(path)
        .map_err(|e| io_err("stat", path, e))?
        .len();
    let read_block = async |at: u64| -> Result<AlignedBuf, String> {
        if len < at + BLOCK_BYTES as u64 {
            return Err(format!("file of {len} bytes is too short"));
        }
        let buf = AlignedBuf::new(BLOCK_BYTES);
        let (res, buf) = crate::io::read_exact_at(&file, buf, BLOCK_BYTES, at, path).await;
        res.map(|()| buf).map_err(|e| e.to_string())
    };
    let primary = read_block(0).await;
    let mirror = read_block(len.saturating_sub(SEGMENT_MIRROR_BYTES)).await;
    let read = choose_header(
        id,
        len,
        primary.as_deref().map_err(Clone::clone),
        mirror.as_deref().map_err(Clone::clone),
    );
    Ok(OpenedFile {
        file,
        path: path.to_path_buf(),
        len,
        read,
    })
}

impl OpenedFile {
    /// The segment, with the header decided on (read from a copy, or established otherwise).
    pub(crate) fn into_segment(self, header: &SegmentHeader, inferred: bool) -> Segment {
        Segment::from_header(self.file, &self.path, header, inferred)
    }
}

/// What the engine remembers of a segment it cannot use (both header copies unreadable and
/// nothing to establish them from, or the file is gone): its checkpoint row, so that index
/// entries pointing into it are kept (they read as corrupt) and a later open, after the file
/// is repaired, finds them again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SetAside {
    pub id: u64,
    /// The segment's row in the checkpoint it was last seen in, if any.
    pub row: Option<crate::checkpoint::SegmentRow>,
}

/// The segment table and the write head.
pub(crate) struct Log {
    /// Every usable segment by id.
    pub segments: BTreeMap<u64, Segment>,
    /// Segments that cannot be used: never reused, never read (entries into them read as corrupt).
    pub set_aside: Vec<SetAside>,
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
    /// Seeds every record checksum written by this shard (in every header and checkpoint).
    pub shard_salt: u64,
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
            SegState::Active => seg.records_end() - SEGMENT_HEADER_BYTES,
        }
    }

    /// Sealed (active, not head) segments.
    pub(crate) fn sealed(&self) -> impl Iterator<Item = &Segment> {
        self.segments
            .values()
            .filter(|s| s.state == SegState::Active && s.id != self.head)
    }

    /// A header for a new life of segment `id` (of `size_bytes`) in `state`: the next life
    /// sequence and the shard's salt, in the current format.
    pub(crate) fn new_life(&mut self, id: u64, size_bytes: u64, state: SegState) -> SegmentHeader {
        let life_seq = self.next_life;
        self.next_life += 1;
        SegmentHeader {
            id,
            life_seq,
            state,
            size_bytes,
            salt: self.shard_salt,
            version: SEGMENT_VERSION,
        }
    }

    /// Installs a header written to segment `id` (its new life and state).
    pub(crate) fn set_header(&mut self, header: &SegmentHeader) {
        if let Some(seg) = self.segments.get_mut(&header.id) {
            seg.life_seq = header.life_seq;
            seg.salt = header.salt;
            seg.state = header.state;
            seg.version = header.version;
            seg.inferred = false;
            seg.drop_lsn_max = 0;
        }
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
            version: SEGMENT_VERSION,
        };
        let mut block = vec![0u8; BLOCK_BYTES];
        h.encode(&mut block);
        assert_eq!(SegmentHeader::decode(&block).unwrap(), h);
        block[30] ^= 1;
        assert!(SegmentHeader::decode(&block).is_err());
    }

    fn block(h: &SegmentHeader) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK_BYTES];
        h.encode(&mut b);
        b
    }

    fn v2(life_seq: u64) -> SegmentHeader {
        SegmentHeader {
            id: 3,
            life_seq,
            state: SegState::Active,
            size_bytes: 1 << 20,
            salt: 99,
            version: SEGMENT_VERSION,
        }
    }

    fn chosen(read: HeaderRead) -> (SegmentHeader, Option<u64>) {
        match read {
            HeaderRead::Valid { header, repair } => (header, repair.map(|(at, _)| at)),
            HeaderRead::Damaged { detail } => panic!("damaged: {detail}"),
        }
    }

    #[test]
    fn either_header_copy_serves_and_the_bad_one_is_named_for_repair() {
        let len = 1 << 20;
        let mirror_at = len - BLOCK_BYTES as u64;
        let good = block(&v2(5));
        let mut bad = good.clone();
        bad[20] ^= 1;
        fn ok(b: &[u8]) -> Result<&[u8], String> {
            Ok(b)
        }
        assert_eq!(
            chosen(choose_header(3, len, ok(&good), ok(&good))),
            (v2(5), None)
        );
        assert_eq!(
            chosen(choose_header(3, len, ok(&bad), ok(&good))),
            (v2(5), Some(0))
        );
        assert_eq!(
            chosen(choose_header(3, len, ok(&good), ok(&bad))),
            (v2(5), Some(mirror_at))
        );
        assert_eq!(
            chosen(choose_header(3, len, Err("read failed".into()), ok(&good))),
            (v2(5), Some(0))
        );
        // A crash during a header rewrite: the newer life wins, whichever copy holds it.
        let newer = block(&v2(6));
        assert_eq!(
            chosen(choose_header(3, len, ok(&good), ok(&newer))),
            (v2(6), Some(0))
        );
        assert_eq!(
            chosen(choose_header(3, len, ok(&newer), ok(&good))),
            (v2(6), Some(mirror_at))
        );
        assert!(matches!(
            choose_header(3, len, ok(&bad), ok(&bad)),
            HeaderRead::Damaged { .. }
        ));
        // A copy naming another segment or another file size does not count.
        assert!(matches!(
            choose_header(4, len, ok(&good), ok(&good)),
            HeaderRead::Damaged { .. }
        ));
        assert!(matches!(
            choose_header(3, len * 2, ok(&good), ok(&good)),
            HeaderRead::Damaged { .. }
        ));
    }

    #[test]
    fn a_first_format_header_has_no_mirror() {
        let len = 1 << 20;
        let mut v1 = block(&v2(5));
        v1[8..12].copy_from_slice(&SEGMENT_VERSION_V1.to_le_bytes());
        let sum = xxh3_64(&v1[..SEGMENT_CHECKSUM_AT]);
        v1[SEGMENT_CHECKSUM_AT..].copy_from_slice(&sum.to_le_bytes());
        let records = vec![7u8; BLOCK_BYTES];
        let (h, repair) = chosen(choose_header(3, len, Ok(&v1), Ok(&records)));
        assert_eq!(
            (h.version, h.life_seq, repair),
            (SEGMENT_VERSION_V1, 5, None)
        );
        assert_eq!(records_end(len, SegState::Active, h.version), len);
        assert_eq!(
            records_end(len, SegState::Free, h.version),
            len - BLOCK_BYTES as u64
        );
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
