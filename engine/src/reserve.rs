//! Room for the next checkpoint, held on disk: `index/checkpoint.reserve`, a file of allocated
//! blocks sized for a checkpoint of the index as it can grow before the next segment is created.
//! A new segment is created only after the reserve has its size, so the disk can fill up with
//! segments but never past the room a checkpoint needs. A checkpoint is written INTO the
//! reserve's blocks (the file is renamed to the checkpoint's temporary name; its content length
//! is in its header, so slack blocks stay allocated), and the checkpoint it makes obsolete
//! becomes the next reserve: no block is ever given back to the filesystem in between, where
//! another shard's new segment could take it. Compaction can therefore always checkpoint and
//! recycle, and SIGTERM on a full disk writes its checkpoint (DESIGN §5).

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::index::Index;

/// File name of the reserve inside the index directory.
const RESERVE_FILE: &str = "checkpoint.reserve";
/// Smallest reserve (bytes): an empty index still needs a checkpoint header and its segment rows.
const RESERVE_BYTES_MIN: u64 = 64 * 1024;
/// Checkpoint bytes per index entry before its key (FORMAT.md §5).
const CKPT_ENTRY_BYTES: u64 = 80;
/// Record size assumed while the index is empty (bytes on disk per record).
const RECORD_BYTES_ASSUMED: u64 = 4096;
/// Segments' worth of new records the reserve covers beyond the current index: the head's rest
/// and the segment about to be created.
const GROWTH_SEGMENTS: u64 = 2;

/// The checkpoint reserve of one shard.
pub(crate) struct CheckpointReserve {
    path: PathBuf,
    /// Bytes allocated to the file now (0 when given back).
    held_bytes: Cell<u64>,
}

impl CheckpointReserve {
    /// The reserve of the shard whose index directory is `index_dir` (not allocated yet).
    pub(crate) fn new(index_dir: &Path) -> Self {
        let path = index_dir.join(RESERVE_FILE);
        let held_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        Self {
            path,
            held_bytes: Cell::new(held_bytes),
        }
    }

    /// Bytes a checkpoint needs once the index has grown by `GROWTH_SEGMENTS` segments of records
    /// of its current average size: 80 bytes and the key per entry, a row per segment, 25% margin.
    pub(crate) fn bytes_needed(index: &Index, segments: usize, segment_room_bytes: u64) -> u64 {
        let entries = index.len();
        let (record_bytes, key_bytes) = match entries {
            0 => (RECORD_BYTES_ASSUMED, 32),
            n => (
                (index.live_bytes_total() / n).max(CKPT_ENTRY_BYTES),
                index.key_heap_bytes_total() / n,
            ),
        };
        let entry_bytes = CKPT_ENTRY_BYTES + key_bytes;
        let growth = GROWTH_SEGMENTS * segment_room_bytes / record_bytes;
        let bytes = (entries + growth) * entry_bytes + (segments as u64 + 4) * 32 + 1024;
        (bytes + bytes / 4).max(RESERVE_BYTES_MIN)
    }

    /// Makes the reserve at least `bytes` (allocated blocks); ENOSPC when the disk lacks room.
    /// It grows geometrically (to twice what it held, when the disk has that room), so the
    /// blocking `fallocate` on the core thread is rare. Not synced: the reservation matters to
    /// the running process's use of the disk; after a crash the reserve is taken again from
    /// what the file then holds.
    pub(crate) fn ensure(&self, bytes: u64) -> std::io::Result<()> {
        let held = self.held_bytes.get();
        if held >= bytes {
            return Ok(());
        }
        let ample = bytes.max(held.saturating_mul(2));
        match self.allocate(ample) {
            Err(e) if ample > bytes && crate::io::is_no_space(&e) => self.allocate(bytes),
            other => other,
        }
    }

    /// Allocates the file's blocks up to `bytes`.
    fn allocate(&self, bytes: u64) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)?;
        // SAFETY: fallocate on a file descriptor we own, with no pointers involved.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(e);
            }
            // No fallocate here: zeros written are allocated just the same.
            use std::io::{Seek, SeekFrom, Write};
            let have = self.held_bytes.get();
            file.seek(SeekFrom::Start(have))?;
            let zeros = vec![0u8; 64 * 1024];
            let mut left = bytes - have;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                file.write_all(&zeros[..n])?;
                left -= n as u64;
            }
        }
        self.held_bytes.set(bytes);
        Ok(())
    }

    /// Hands the reserve's blocks to a checkpoint being written: renames the file to `tmp`.
    /// False when there is no reserve (the checkpoint then allocates its own blocks).
    pub(crate) fn take_into(&self, tmp: &Path) -> std::io::Result<bool> {
        if self.held_bytes.get() == 0 {
            return Ok(false);
        }
        match std::fs::rename(&self.path, tmp) {
            Ok(()) => {
                self.held_bytes.set(0);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.held_bytes.set(0);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes an obsolete checkpoint file the reserve (its blocks stay allocated).
    pub(crate) fn adopt(&self, old_checkpoint: &Path) -> std::io::Result<()> {
        let len = std::fs::metadata(old_checkpoint)?.len();
        std::fs::rename(old_checkpoint, &self.path)?;
        self.held_bytes.set(len);
        Ok(())
    }

    /// Whether a reserve file is held now.
    pub(crate) fn is_held(&self) -> bool {
        self.held_bytes.get() > 0
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> u64 {
        self.held_bytes.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_grows_is_taken_and_adopts_an_old_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reserve = CheckpointReserve::new(dir.path());
        reserve.ensure(100_000).expect("ensure");
        let path = dir.path().join(RESERVE_FILE);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 100_000);
        reserve.ensure(50_000).expect("smaller is a no-op");
        assert_eq!(reserve.held_bytes(), 100_000);
        reserve.ensure(120_000).expect("grow");
        assert_eq!(reserve.held_bytes(), 200_000, "grows to twice what it held");
        let tmp = dir.path().join("x.tmp");
        assert!(reserve.take_into(&tmp).expect("take"));
        assert!(!reserve.is_held() && !path.exists() && tmp.exists());
        assert!(!reserve.take_into(&tmp).expect("nothing left to take"));
        reserve.adopt(&tmp).expect("adopt");
        assert_eq!(CheckpointReserve::new(dir.path()).held_bytes(), 200_000);
    }

    #[test]
    fn bytes_needed_covers_the_index_and_growth() {
        let empty = Index::default();
        let room = 16 * 1024 * 1024;
        let need = CheckpointReserve::bytes_needed(&empty, 3, room);
        // 2 segments of 4 KiB records: 8192 entries of ~112 bytes, plus a quarter.
        assert!(need > 8192 * 112 && need < 8192 * 112 * 2, "{need}");
    }
}
