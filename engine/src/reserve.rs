//! Room for the next checkpoint, held on disk: `index/checkpoint.reserve`, a file of allocated
//! blocks sized for a checkpoint of the index as it can grow before the next segment is created.
//! A new segment is created only after the reserve has its size, so the disk can fill up with
//! segments but never past the room a checkpoint needs. A checkpoint is written INTO the
//! reserve's blocks (the file is renamed to the checkpoint's temporary name; its content length
//! is in its header, so slack blocks stay allocated), and the checkpoint it makes obsolete
//! becomes the next reserve: no block is ever given back to the filesystem in between, where
//! another shard's new segment could take it. Compaction can therefore always checkpoint and
//! recycle, and SIGTERM on a full disk writes its checkpoint (DESIGN §5).
//!
//! These rules keep that true however small the records are and however many checkpoints
//! follow each other on a full disk: every write that adds an index entry first makes sure the
//! room covers a checkpoint with it (else it fails as a full disk; overwrites and deletes of
//! present keys add none and pass, and foreground writes leave a headroom to the writes that
//! free space); the room counts the checkpoint files too, whose slack grows with the reserve
//! (each becomes the reserve in turn); a shard writes its first two checkpoints at open, into
//! files of their own, so that the reserve is only ever taken with an obsolete checkpoint to
//! take its place; and the file of a checkpoint cut off by a crash, or of one that failed,
//! becomes the reserve again rather than giving its blocks back.

use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::index::Index;

/// File name of the reserve inside the index directory.
pub(crate) const RESERVE_FILE: &str = "checkpoint.reserve";
/// Smallest reserve (bytes): an empty index still needs a checkpoint header and its segment rows.
const RESERVE_BYTES_MIN: u64 = 64 * 1024;
/// Checkpoint bytes per index entry before its key (FORMAT.md §5).
const CKPT_ENTRY_BYTES: u64 = 80;
/// Record size assumed while the index is empty (bytes on disk per record).
const RECORD_BYTES_ASSUMED: u64 = 4096;
/// Segments' worth of new records the reserve covers beyond the current index: the head's rest
/// and the segment about to be created.
const GROWTH_SEGMENTS: u64 = 2;

/// How long a failed attempt to make room stands: writes that need more room meanwhile are
/// refused without trying again (no `fallocate` per client retry on a full disk).
const ENSURE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The checkpoint reserve of one shard.
pub(crate) struct CheckpointReserve {
    path: PathBuf,
    index_dir: PathBuf,
    /// Bytes allocated to the file now (0 when given back).
    held_bytes: Cell<u64>,
    /// The file a checkpoint under way took the reserve into, and the bytes it holds.
    taken: RefCell<Option<(PathBuf, u64)>>,
    /// The checkpoint files present of this build's format: how many, and the smallest one's
    /// length (each becomes the reserve in turn, so the room after the next checkpoint is no
    /// more than that).
    files: Cell<(usize, u64)>,
    /// The room asked for by the last attempt that failed, and when.
    failed: Cell<Option<(u64, Instant)>>,
}

impl CheckpointReserve {
    /// The reserve of the shard whose index directory is `index_dir` (not allocated yet).
    pub(crate) fn new(index_dir: &Path) -> Self {
        let path = index_dir.join(RESERVE_FILE);
        let held_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        Self {
            path,
            index_dir: index_dir.to_path_buf(),
            held_bytes: Cell::new(held_bytes),
            taken: RefCell::new(None),
            files: Cell::new(crate::checkpoint::present_v2(index_dir)),
            failed: Cell::new(None),
        }
    }

    /// Bytes a checkpoint finds room in, now and after the next checkpoint: the reserve (or
    /// what a checkpoint under way took of it) and the checkpoint files that become the reserve
    /// in turn; 0 while fewer than [`crate::checkpoint::CHECKPOINTS_KEPT`] checkpoint files of
    /// this build's format are present (the reserve is not used then).
    pub(crate) fn room(&self) -> u64 {
        let (count, files_min) = self.files.get();
        if count < crate::checkpoint::CHECKPOINTS_KEPT {
            return 0;
        }
        let taken = self.taken.borrow().as_ref().map_or(0, |(_, bytes)| *bytes);
        self.held_bytes.get().max(taken).min(files_min)
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

    /// Makes [`Self::room`] at least `bytes` (once the kept checkpoint files are present, which
    /// allocation cannot make so): the reserve's allocated blocks (growing geometrically, to
    /// twice what it held or half again what is asked when the disk has that room, so the
    /// blocking `fallocate` on the core thread is rare), and the slack of the checkpoint files
    /// (and of the one a checkpoint under way writes) to the same length: each becomes the
    /// reserve when it is obsolete, so a checkpoint written right after the next one finds room
    /// too. ENOSPC when the disk lacks room (for a second after a failure, without trying
    /// again). Not synced: the reservation matters to the running process's use of the disk;
    /// after a crash the reserve is taken again from what the files then hold.
    pub(crate) fn ensure(&self, bytes: u64) -> std::io::Result<()> {
        if self.room() >= bytes {
            return Ok(());
        }
        if let Some((asked, at)) = self.failed.get()
            && bytes >= asked
            && at.elapsed() < ENSURE_RETRY_AFTER
        {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let result = self.grow(bytes);
        self.files
            .set(crate::checkpoint::present_v2(&self.index_dir));
        self.failed
            .set(result.is_err().then(|| (bytes, Instant::now())));
        result
    }

    /// [`Self::ensure`]'s allocations: the reserve, then every file that becomes it in turn,
    /// to the reserve's length (or to `bytes` where that length does not fit).
    fn grow(&self, bytes: u64) -> std::io::Result<()> {
        let taken = self.taken.borrow().clone();
        let held = self.held_bytes.get();
        if held < bytes && taken.as_ref().is_none_or(|(_, t)| *t < bytes) {
            let ample = (bytes + bytes / 2).max(held.saturating_mul(2));
            match self.allocate(ample) {
                Err(e) if ample > bytes && crate::io::is_no_space(&e) => self.allocate(bytes)?,
                other => other?,
            }
        }
        let target = self
            .held_bytes
            .get()
            .max(taken.as_ref().map_or(0, |(_, t)| *t));
        let extend = |to: u64| -> std::io::Result<()> {
            crate::checkpoint::extend_present(&self.index_dir, to)?;
            if let Some((path, have)) = &taken
                && *have < to
            {
                allocate_to(path, *have, to)?;
                *self.taken.borrow_mut() = Some((path.clone(), to));
            }
            Ok(())
        };
        match extend(target) {
            Err(e) if target > bytes && crate::io::is_no_space(&e) => extend(bytes),
            other => other,
        }
    }

    /// Allocates the reserve file's blocks up to `bytes`.
    fn allocate(&self, bytes: u64) -> std::io::Result<()> {
        allocate_to(&self.path, self.held_bytes.get(), bytes)?;
        self.held_bytes.set(bytes);
        Ok(())
    }

    /// Hands the reserve's blocks to a checkpoint being written: renames the file to `tmp`.
    /// False when there is no reserve (the checkpoint then allocates its own blocks).
    pub(crate) fn take_into(&self, tmp: &Path) -> std::io::Result<bool> {
        let held = self.held_bytes.get();
        if held == 0 {
            return Ok(false);
        }
        match std::fs::rename(&self.path, tmp) {
            Ok(()) => {
                self.held_bytes.set(0);
                *self.taken.borrow_mut() = Some((tmp.to_path_buf(), held));
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.held_bytes.set(0);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes an obsolete checkpoint file (or the file a failed checkpoint was written into) the
    /// reserve: its blocks stay allocated.
    pub(crate) fn adopt(&self, old_checkpoint: &Path) -> std::io::Result<()> {
        let len = std::fs::metadata(old_checkpoint)?.len();
        std::fs::rename(old_checkpoint, &self.path)?;
        self.held_bytes.set(len);
        Ok(())
    }

    /// A checkpoint is over (written or not): the checkpoint files are what they are now.
    pub(crate) fn checkpoint_done(&self) {
        *self.taken.borrow_mut() = None;
        self.files
            .set(crate::checkpoint::present_v2(&self.index_dir));
        self.failed.set(None);
    }

    /// How many checkpoint files of this build's format are present.
    pub(crate) fn checkpoint_files(&self) -> usize {
        self.files.get().0
    }

    /// Whether a reserve file is held now.
    pub(crate) fn is_held(&self) -> bool {
        self.held_bytes.get() > 0
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held_bytes.get()
    }
}

/// Allocates the blocks of the file at `path` (created if missing) up to `bytes`; `have` bytes
/// are allocated already (where zeros are written instead, for a file system without
/// `fallocate`).
pub(crate) fn allocate_to(path: &Path, have: u64, bytes: u64) -> std::io::Result<()> {
    // Fail point `engine::disk_full`: no block is left for the reserve or a checkpoint.
    fail::fail_point!("engine::disk_full", bytes > have, |_| Err(
        std::io::Error::from_raw_os_error(libc::ENOSPC)
    ));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // SAFETY: fallocate on a file descriptor we own, with no pointers involved.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(e);
        }
        // No fallocate here: zeros written are allocated just the same.
        use std::io::{Seek, SeekFrom, Write};
        file.seek(SeekFrom::Start(have))?;
        let zeros = vec![0u8; 64 * 1024];
        let mut left = bytes.saturating_sub(have);
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
    }
    Ok(())
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
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            150_000,
            "half again what is asked"
        );
        reserve.ensure(50_000).expect("smaller is a no-op");
        assert_eq!(reserve.held(), 150_000);
        reserve.ensure(160_000).expect("grow");
        assert_eq!(reserve.held(), 300_000, "grows to twice what it held");
        let tmp = dir.path().join("x.tmp");
        assert!(reserve.take_into(&tmp).expect("take"));
        assert!(!reserve.is_held() && !path.exists() && tmp.exists());
        assert!(!reserve.take_into(&tmp).expect("nothing left to take"));
        reserve.adopt(&tmp).expect("adopt");
        assert_eq!(CheckpointReserve::new(dir.path()).held(), 300_000);
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
