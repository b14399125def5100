//! The gateway's disk cache (issue 15): on a gateway-only node, beneath the memory cache
//! ([`crate::cache`]), objects and chunks read from storage are also written to files of the
//! core's directory, so that a read the memory does not hold (too small for it, pushed out, or
//! the gateway restarted) still moves no body over the wire. Its admission is the memory's: at
//! once while there is room, on a second recent miss once full or for a chunk (a scan does not
//! push out the hot set, one large read does not fill the disk). It is the same promise as the memory's: an object read from disk is served only
//! once the replicas' HLC digests name its version as the newest (a chunk never changes).
//!
//! - **Checksummed**: each file is one entry, `magic | xxh3-64 of the rest | lengths, summary,
//!   HLC | key | meta | body`; a read verifies the checksum, the lengths and the key before it
//!   serves anything. A flipped byte drops the entry (the file is removed) and the object is
//!   read from storage.
//! - **Written late**: an entry waits [`WRITE_DELAY`] (held in memory, at most
//!   [`PENDING_BYTES_MAX`] per core) before its file is written, so a version overwritten or
//!   dropped sooner costs no file at all: objects that change often do not churn the disk.
//! - **No blocking on a core**: files are written, renamed and removed by one writer thread per
//!   node, fed by a queue bounded in bytes ([`WRITE_QUEUE_BYTES_MAX`]: past it an entry is not
//!   written); a core reads through io_uring. A write lands in a temporary file renamed into
//!   place, so a crash leaves a temporary (removed at start) or a whole file.
//! - **A full disk never fails a request**: a write that fails is counted and logged (once a
//!   minute at most) and its entry is simply missing; a read that finds no file is a miss.
//! - **Bounded**: each core's files take at most its share of the configured bytes, counted in
//!   whole 4 KiB blocks; the least recently used go first; no entry takes over an eighth. (While
//!   a previous run's files are read back, what this run writes comes on top of them, their
//!   room not known yet; as they are taken back, those that do not fit beside what this run
//!   holds are removed.)
//! - **Survives restarts**: at start a core serves at once, and a loader thread of its own
//!   reads back each file's header (its key) and hands the entries to the core, which takes
//!   them below everything it has cached since (the most recently written first, so the least
//!   recently written go first when the cache is full). The loader reads the whole directory
//!   and sorts it before the first entry comes back: millions of small files take minutes from
//!   a cold disk; the gateway does not wait for it, its reads of
//!   entries not yet read back go to storage meanwhile, and what they read enters on a second
//!   miss only, as in a full cache. The last cache purge applied is kept beside the files, so
//!   purges made while the gateway was down are applied when it comes back (to entries read
//!   back later too: the mark is kept only once they all are).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use leofs_shard::metrics::ObjectCacheMetrics;
use leofs_shard::{Hlc, Summary, Value};

use crate::cache::MissWindow;
use crate::lru::Lru;

/// The first bytes of every cache file (and its format's version).
pub const FILE_MAGIC: [u8; 8] = *b"LFSGC001";
/// Bytes of a cache file before its key: magic, checksum, then the lengths, summary and HLC.
pub const HEADER_BYTES: usize = 8 + 8 + 4 + 4 + 8 + 8 + 8 + 16 + 4 + 8 + 4 + 4;
/// Most bytes of entries waiting for the writer thread, all cores together; past it an entry
/// is not written to disk (it stays in memory).
pub const WRITE_QUEUE_BYTES_MAX: u64 = 64 << 20;
/// Most writes waiting for the writer thread (removals are never refused: a lost removal
/// would leave a file nothing counts).
pub const WRITE_QUEUE_OPS_MAX: u64 = 65_536;
/// Disk space is counted in blocks of this many bytes (a file takes at least one).
pub const BLOCK_BYTES: u64 = 4096;
/// An entry takes at most this fraction (1/n) of a core's disk cache.
pub const ENTRY_SHARE_DIVISOR: u64 = 8;
/// How long an entry waits before its file is written (a version replaced or dropped sooner
/// is never written).
pub const WRITE_DELAY: Duration = Duration::from_secs(2);
/// Most bytes of one core's entries waiting for their write delay; past it the oldest are
/// written at once.
pub const PENDING_BYTES_MAX: u64 = 64 << 20;
/// Longest key a cache file may name (a storage key is far shorter).
const KEY_BYTES_MAX: usize = 64 << 10;
/// The file that keeps the sequence number of the last cache purge a core applied.
const PURGES_FILE: &str = "purges-applied";
/// The writer thread logs a failed write at most once per this long.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Entries the loader hands its core in one batch.
const LOAD_BATCH_ENTRIES: usize = 1024;
/// Batches the loader may have waiting for its core (it waits beyond).
const LOAD_BATCHES_QUEUED_MAX: usize = 16;
/// Most batches a core takes at a tick of its timer: a large cache comes back a little at a
/// time, never in one long pause of the core.
const LOAD_BATCHES_PER_TICK_MAX: usize = 16;
/// Most batches a core takes before a read or an offer while loading: a request waits for
/// one batch at most (and sees the loader's end at once).
const LOAD_BATCHES_PER_REQUEST_MAX: usize = 1;

/// What the writer thread does.
enum Op {
    /// Writes `parts` (a header without its checksum, then key, meta, body) to `path` through a
    /// temporary file, the checksum computed here; counts a failure in `failures`.
    Write {
        path: PathBuf,
        parts: [Bytes; 4],
        bytes: u64,
        failures: Arc<AtomicU64>,
    },
    /// Removes `path` if it is there.
    Remove { path: PathBuf },
    /// Removes every entry file of the directory `dir` (a core's whole cache emptied).
    RemoveAll { dir: PathBuf },
    /// Records `seq` in `path` (the last purge applied).
    SavePurges { path: PathBuf, seq: u64 },
    /// Answers once every op queued before it is done (tests wait on it).
    #[cfg(test)]
    Flush(crossbeam::channel::Sender<()>),
}

/// The handle to a node's cache writer thread, shared by its cores. The thread is started by
/// the first core that opens its cache (so it inherits a core thread's blocked shutdown
/// signals: the node's watcher takes them; it leaves that core's CPU) and lives as long as the
/// process: what is still queued at a stop is not done (the next start's scan finds files
/// whose removal was lost, and trims the cache to its size).
#[derive(Clone)]
pub struct DiskCacheWriter {
    tx: crossbeam::channel::Sender<Op>,
    pending_bytes: Arc<AtomicU64>,
    /// Writes queued, at most [`WRITE_QUEUE_OPS_MAX`].
    pending_writes: Arc<AtomicU64>,
    /// The queue's receiving end until the thread is started.
    unstarted: Arc<std::sync::Mutex<Option<crossbeam::channel::Receiver<Op>>>>,
    /// This process's mark in the names of its temporary files: any other temporary is a
    /// previous run's, left by a crash.
    run: Arc<str>,
}

impl std::fmt::Debug for DiskCacheWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCacheWriter")
            .field("pending_bytes", &self.pending_bytes.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for DiskCacheWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl DiskCacheWriter {
    /// A writer whose thread starts with the first cache opened.
    pub fn new() -> Self {
        let (tx, rx) = crossbeam::channel::unbounded();
        Self {
            tx,
            pending_bytes: Arc::default(),
            pending_writes: Arc::default(),
            unstarted: Arc::new(std::sync::Mutex::new(Some(rx))),
            run: run_mark().into(),
        }
    }

    /// Starts the thread unless it runs.
    fn ensure_running(&self) -> std::io::Result<()> {
        let mut unstarted = self
            .unstarted
            .lock()
            .map_err(|_| std::io::Error::other("the disk cache writer's start panicked"))?;
        if let Some(rx) = unstarted.take() {
            let (bytes, writes, run) = (
                Arc::clone(&self.pending_bytes),
                Arc::clone(&self.pending_writes),
                Arc::clone(&self.run),
            );
            std::thread::Builder::new()
                .name("leofs-cache-writer".into())
                .spawn(move || {
                    leave_the_core_cpu();
                    write_loop(&rx, &bytes, &writes, &run);
                })?;
        }
        Ok(())
    }

    /// Queues a write of `bytes`; false (nothing queued) when the queue is full.
    fn write(
        &self,
        path: PathBuf,
        parts: [Bytes; 4],
        bytes: u64,
        failures: &Arc<AtomicU64>,
    ) -> bool {
        let before = self.pending_bytes.fetch_add(bytes, Ordering::AcqRel);
        let writes = self.pending_writes.fetch_add(1, Ordering::AcqRel);
        if before + bytes > WRITE_QUEUE_BYTES_MAX || writes >= WRITE_QUEUE_OPS_MAX {
            self.pending_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.pending_writes.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        let op = Op::Write {
            path,
            parts,
            bytes,
            failures: Arc::clone(failures),
        };
        if self.tx.send(op).is_err() {
            self.pending_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.pending_writes.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Queues the removal of `path` (after every write queued before it).
    fn remove(&self, path: PathBuf) {
        let _ = self.tx.send(Op::Remove { path });
    }

    /// Queues the removal of every entry file of `dir`.
    fn remove_all(&self, dir: PathBuf) {
        let _ = self.tx.send(Op::RemoveAll { dir });
    }

    fn save_purges(&self, path: PathBuf, seq: u64) {
        let _ = self.tx.send(Op::SavePurges { path, seq });
    }
}

/// Lets the calling thread run on every CPU of the machine: a thread started from a pinned
/// core thread inherits its one CPU, and the writer must not take that core's time.
pub(crate) fn leave_the_core_cpu() {
    // SAFETY: cpu_set_t is plain data, valid when zeroed; CPU_SET writes within it for
    // indices below CPU_SETSIZE; sched_setaffinity(0, ..) changes only the calling thread.
    unsafe {
        let mut every: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut every);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &every) != 0 {
            tracing::debug!("disk cache writer: cannot widen its CPU affinity");
        }
    }
}

/// A mark of this process for the names of its temporary files: its id and start time, so
/// that no other run (before a crash, or a reboot reusing the id) had it.
fn run_mark() -> String {
    let started = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", std::process::id(), started)
}

fn write_loop(
    rx: &crossbeam::channel::Receiver<Op>,
    pending: &AtomicU64,
    writes: &AtomicU64,
    run: &str,
) {
    let mut last_logged: Option<Instant> = None;
    for op in rx {
        match op {
            Op::Write {
                path,
                parts,
                bytes,
                failures,
            } => {
                if let Err(e) = write_entry(&path, &parts, run) {
                    failures.fetch_add(1, Ordering::Relaxed);
                    let _ = std::fs::remove_file(temporary(&path, run));
                    if last_logged.is_none_or(|at| at.elapsed() >= FAILURE_LOG_INTERVAL) {
                        last_logged = Some(Instant::now());
                        tracing::warn!(
                            path = %path.display(),
                            error = %e,
                            "disk cache: an entry could not be written (it is served from \
                             memory and storage instead; logged at most once a minute)"
                        );
                    }
                }
                pending.fetch_sub(bytes, Ordering::AcqRel);
                writes.fetch_sub(1, Ordering::AcqRel);
            }
            Op::RemoveAll { dir } => {
                let entries = std::fs::read_dir(&dir).into_iter().flatten().flatten();
                for entry in entries {
                    let name = entry.file_name();
                    if name.to_str().is_some_and(|n| n != PURGES_FILE) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
            Op::Remove { path } => {
                if let Err(e) = std::fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), error = %e, "disk cache: cannot remove");
                }
            }
            #[cfg(test)]
            Op::Flush(done) => {
                let _ = done.send(());
            }
            Op::SavePurges { path, seq } => {
                let tmp = temporary(&path, run);
                let saved = std::fs::write(&tmp, seq.to_string())
                    .and_then(|()| std::fs::rename(&tmp, &path));
                if let Err(e) = saved {
                    tracing::warn!(path = %path.display(), error = %e, "disk cache: cannot record purges");
                }
            }
        }
    }
}

/// The temporary a file of this run (`run`'s mark) is written to before it is renamed.
fn temporary(path: &Path, run: &str) -> PathBuf {
    path.with_extension(format!("{run}.tmp"))
}

/// Writes one entry: the checksum over everything after it, then the file renamed into place.
fn write_entry(path: &Path, parts: &[Bytes; 4], run: &str) -> std::io::Result<()> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&parts[0][16..]);
    for part in &parts[1..] {
        hasher.update(part);
    }
    let mut header = BytesMut::from(&parts[0][..]);
    header[8..16].copy_from_slice(&hasher.digest().to_le_bytes());
    let tmp = temporary(path, run);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&header)?;
    for part in &parts[1..] {
        file.write_all(part)?;
    }
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Why a cache file was refused.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not hold a whole, intact entry.
    #[error("corrupt: {0}")]
    Corrupt(&'static str),
}

/// The header and lengths of an entry, as read from the start of its file.
struct Header {
    checksum: u64,
    key_len: usize,
    meta_len: usize,
    stored_body_len: u64,
    body_len: u64,
    summary: Summary,
    hlc: Hlc,
}

impl Header {
    fn of(key: &[u8], value: &Value) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_BYTES);
        out.put_slice(&FILE_MAGIC);
        out.put_u64_le(0);
        out.put_u32_le(key.len() as u32);
        out.put_u32_le(value.meta.len() as u32);
        out.put_u64_le(value.body.len() as u64);
        out.put_u64_le(value.body_len);
        out.put_u64_le(value.summary.size);
        out.put_slice(&value.summary.digest);
        out.put_u32_le(value.summary.tag);
        out.put_u64_le(value.hlc.physical_us);
        out.put_u32_le(value.hlc.logical);
        out.put_u32_le(value.hlc.node_id);
        debug_assert_eq!(out.len(), HEADER_BYTES);
        out.freeze()
    }

    fn parse(mut bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() < HEADER_BYTES {
            return Err(EntryError::Corrupt("shorter than a header"));
        }
        if bytes[..8] != FILE_MAGIC {
            return Err(EntryError::Corrupt("not a cache file"));
        }
        bytes.advance(8);
        let checksum = bytes.get_u64_le();
        let key_len = bytes.get_u32_le() as usize;
        let meta_len = bytes.get_u32_le() as usize;
        let stored_body_len = bytes.get_u64_le();
        let body_len = bytes.get_u64_le();
        let size = bytes.get_u64_le();
        let mut digest = [0u8; 16];
        bytes.copy_to_slice(&mut digest);
        let tag = bytes.get_u32_le();
        let hlc = Hlc {
            physical_us: bytes.get_u64_le(),
            logical: bytes.get_u32_le(),
            node_id: bytes.get_u32_le(),
        };
        if key_len == 0 || key_len > KEY_BYTES_MAX {
            return Err(EntryError::Corrupt("key length out of bounds"));
        }
        Ok(Self {
            checksum,
            key_len,
            meta_len,
            stored_body_len,
            body_len,
            summary: Summary { size, digest, tag },
            hlc,
        })
    }

    /// The whole file's length this header announces (None: beyond any file).
    fn file_len(&self) -> Option<u64> {
        ((HEADER_BYTES + self.key_len + self.meta_len) as u64).checked_add(self.stored_body_len)
    }
}

/// The entry in `file` (a whole cache file) if it is intact and is `key`'s.
pub fn decode_entry(file: Bytes, key: &[u8]) -> Result<Value, EntryError> {
    let header = Header::parse(&file)?;
    if header.file_len() != Some(file.len() as u64) {
        return Err(EntryError::Corrupt("length differs from the header's"));
    }
    if xxhash_rust::xxh3::xxh3_64(&file[16..]) != header.checksum {
        return Err(EntryError::Corrupt("checksum mismatch"));
    }
    let key_end = HEADER_BYTES + header.key_len;
    if &file[HEADER_BYTES..key_end] != key {
        return Err(EntryError::Corrupt("another key's entry"));
    }
    let meta_end = key_end + header.meta_len;
    Ok(Value {
        meta: file.slice(key_end..meta_end),
        body: file.slice(meta_end..),
        body_len: header.body_len,
        summary: header.summary,
        hlc: header.hlc,
    })
}

/// A core's disk cache. `!Send` (it lives on its core).
pub struct DiskCache {
    dir: PathBuf,
    capacity_bytes: u64,
    writer: DiskCacheWriter,
    /// Writes the writer thread could not do, for this core's entries.
    write_failures: Arc<AtomicU64>,
    /// The last purge applied, as found at start.
    purges_found: Option<u64>,
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The entries, each counted for its disk space (whole blocks).
    entries: Lru<Entry>,
    /// Keys missed once recently (admission once full).
    missed: MissWindow,
    /// Entries waiting for their write delay, oldest first: when it ends, the key and the
    /// version (an entry replaced or dropped since is skipped).
    pending: VecDeque<(Instant, Bytes, Hlc)>,
    /// Bytes of the entries waiting.
    pending_bytes: u64,
    /// The previous run's entries being read back (None once they all are).
    loading: Option<Loading>,
}

/// A core's cache being read back from its directory after a start.
struct Loading {
    /// What the loader thread found.
    found: crossbeam::channel::Receiver<Loaded>,
    /// Purges applied since the start: a file read back for a key they name is removed.
    purged: Vec<(Bytes, bool)>,
    /// The last purge applied since the start, recorded only once every file read back is
    /// taken (the files a purge names are removed as they are found: a mark recorded sooner
    /// would, after a stop, leave the rest to come back).
    purges_applied: Option<u64>,
    /// Entries taken back so far.
    taken: u64,
    started: Instant,
    /// Set when this is dropped (the cache emptied or gone, or all taken): the loader stops.
    abandoned: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Loading {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Release);
    }
}

/// What the loader thread sends its core.
enum Loaded {
    /// Files found, each a key, its version and the file's length; the most recently written
    /// first.
    Entries(Vec<(Bytes, Hlc, u64)>),
    /// Every file was read; `refused` of them were removed (not a whole entry), `skipped` could
    /// not be read now and were left as they are.
    Done { refused: u64, skipped: u64 },
}

struct Entry {
    /// The file's length.
    len: u64,
    /// The version held (it names the file).
    hlc: Hlc,
    /// The version itself until its file is handed to the writer (None: written).
    pending: Option<Value>,
}

/// A file's name: the hash of its key and version, so that a newer version of an object is
/// another file (the older one is removed) and a read never finds a version it did not expect
/// under a name; the key is checked against the file's own on every read.
fn file_name(key: &[u8], hlc: Hlc) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(key);
    hasher.update(&hlc.physical_us.to_le_bytes());
    hasher.update(&hlc.logical.to_le_bytes());
    hasher.update(&hlc.node_id.to_le_bytes());
    format!("{:032x}", hasher.digest128())
}

fn blocks(len: u64) -> u64 {
    len.div_ceil(BLOCK_BYTES).max(1) * BLOCK_BYTES
}

impl DiskCache {
    /// A core's disk cache of at most `capacity_bytes` in `dir` (created if missing). What a
    /// previous run left there is read back by a loader thread started here and taken by the
    /// core as its timer calls [`DiskCache::write_due_entries`], and before each read or offer
    /// while it lasts; the cache serves meanwhile. Called as the core starts, before it serves.
    pub fn open(
        dir: PathBuf,
        capacity_bytes: u64,
        writer: DiskCacheWriter,
    ) -> std::io::Result<Self> {
        writer.ensure_running()?;
        std::fs::create_dir_all(&dir)?;
        let purges_found = std::fs::read_to_string(dir.join(PURGES_FILE))
            .ok()
            .and_then(|text| text.trim().parse().ok());
        let (sender, found) = crossbeam::channel::bounded(LOAD_BATCHES_QUEUED_MAX);
        let (scanned, run) = (dir.clone(), Arc::clone(&writer.run));
        let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::clone(&abandoned);
        std::thread::Builder::new()
            .name("leofs-cache-load".into())
            .spawn(move || {
                leave_the_core_cpu();
                load(&scanned, &run, &sender, &stop);
            })?;
        tracing::info!(dir = %dir.display(), "disk cache opened; its entries are read back in the background");
        Ok(Self {
            dir,
            capacity_bytes,
            writer,
            write_failures: Arc::default(),
            purges_found,
            inner: RefCell::new(Inner {
                missed: MissWindow::for_capacity(capacity_bytes),
                loading: Some(Loading {
                    found,
                    purged: Vec::new(),
                    purges_applied: None,
                    taken: 0,
                    started: Instant::now(),
                    abandoned,
                }),
                ..Inner::default()
            }),
        })
    }

    /// Whether the previous run's entries are still being read back.
    #[cfg(test)]
    fn is_loading(&self) -> bool {
        self.inner.borrow().loading.is_some()
    }

    /// Takes what the loader has found since the last call (at most `batches_max` batches),
    /// below every entry held: a file of a key held
    /// in another version, or named by a purge since the start, or beyond the capacity (what
    /// is found is older than what is held) is removed instead. (A file of a key whose entry
    /// was dropped meanwhile, its object overwritten, is taken: like any entry, it is served
    /// only once the replicas' digests name its version, so its first read drops it.)
    fn take_loaded(&self, inner: &mut Inner, batches_max: usize) {
        let Inner {
            entries, loading, ..
        } = inner;
        let Some(load) = loading.as_mut() else {
            return;
        };
        for _ in 0..batches_max {
            let batch = match load.found.try_recv() {
                Ok(Loaded::Entries(batch)) => batch,
                Err(crossbeam::channel::TryRecvError::Empty) => return,
                Ok(Loaded::Done { refused, skipped }) => {
                    // A file left unread may be one a purge names: the mark then stays where it
                    // was, and the next start applies those purges again.
                    if let Some(seq) = load.purges_applied.filter(|_| skipped == 0) {
                        self.writer.save_purges(self.dir.join(PURGES_FILE), seq);
                    }
                    tracing::info!(
                        dir = %self.dir.display(),
                        entries = entries.len(),
                        mib = entries.bytes() >> 20,
                        read_back = load.taken,
                        refused,
                        skipped,
                        secs = load.started.elapsed().as_secs_f64(),
                        "disk cache: the previous run's entries are read back"
                    );
                    *loading = None;
                    return;
                }
                Err(crossbeam::channel::TryRecvError::Disconnected) => {
                    tracing::warn!(dir = %self.dir.display(), "disk cache: reading back its entries stopped early");
                    *loading = None;
                    return;
                }
            };
            for (key, hlc, len) in batch {
                let held = entries.peek(&key).map(|e| (e.hlc, e.pending.is_some()));
                if held == Some((hlc, false)) {
                    // This version's file, written by this run: the entry's own.
                    continue;
                }
                // Held in another version, or in this one still waiting for its write delay
                // (the removal goes before that write; the entry, if dropped first, would
                // leave the file to nobody).
                if held.is_some()
                    || crate::cache::named(&key, &load.purged)
                    || entries.bytes() + blocks(len) > self.capacity_bytes
                {
                    self.writer.remove(self.path_of(&key, hlc));
                    continue;
                }
                let entry = Entry {
                    len,
                    hlc,
                    pending: None,
                };
                entries.insert_coldest(key, entry, blocks(len));
                load.taken += 1;
            }
        }
    }

    fn path_of(&self, key: &[u8], hlc: Hlc) -> PathBuf {
        self.dir.join(file_name(key, hlc))
    }

    /// The sequence number of the last cache purge applied before the last stop, if known.
    pub fn purges_applied_at_start(&self) -> Option<u64> {
        self.purges_found
    }

    /// Records that purges up to `seq` are applied (kept for the next start, after the
    /// removals they made; while the previous run's entries are read back, once they all are).
    pub fn save_purges_applied(&self, seq: u64) {
        if let Some(loading) = self.inner.borrow_mut().loading.as_mut() {
            loading.purges_applied = Some(seq);
            return;
        }
        self.writer.save_purges(self.dir.join(PURGES_FILE), seq);
    }

    /// The entry held for `key`, read from its file and verified; None if none is held, or
    /// its file is missing (not written yet, or the write failed) or damaged: the entry is
    /// then dropped, and a damaged one counted in `metrics.disk_dropped` and logged.
    pub async fn get(&self, key: &[u8], metrics: &ObjectCacheMetrics) -> Option<Value> {
        let (len, hlc) = {
            let mut inner = self.inner.borrow_mut();
            self.take_loaded(&mut inner, LOAD_BATCHES_PER_REQUEST_MAX);
            let entry = inner.entries.touch(key)?;
            if entry.pending.is_some() {
                return entry.pending.clone();
            }
            (entry.len, entry.hlc)
        };
        let path = self.path_of(key, hlc);
        let read = read_file(&path, len)
            .await
            .and_then(|file| decode_entry(file, key));
        self.publish_metrics(metrics);
        match read {
            Ok(value) if value.hlc == hlc => Some(value),
            Ok(_) => {
                ObjectCacheMetrics::count(&metrics.disk_dropped);
                tracing::warn!(path = %path.display(), "disk cache: a file holds another version");
                self.remove(key, metrics);
                None
            }
            Err(EntryError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                self.remove(key, metrics);
                None
            }
            Err(EntryError::Io(e)) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
                // Not the file's fault (descriptors, memory, the device): a miss this time.
                tracing::debug!(path = %path.display(), error = %e, "disk cache: a read failed");
                None
            }
            Err(e) => {
                ObjectCacheMetrics::count(&metrics.disk_dropped);
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "disk cache: a damaged entry was dropped (the object is read from storage)"
                );
                self.remove(key, metrics);
                None
            }
        }
    }

    /// Offers a version just read from the replicas: written as `key`'s entry (in the
    /// background) if admitted (see the module's documentation), pushing out the least
    /// recently used as needed; never when it would take over an eighth of the cache, or the
    /// writer's queue is full.
    pub fn offer(&self, key: &[u8], value: &Value, is_chunk: bool, metrics: &ObjectCacheMetrics) {
        let len = (HEADER_BYTES + key.len() + value.meta.len() + value.body.len()) as u64;
        if blocks(len) > self.capacity_bytes / ENTRY_SHARE_DIVISOR
            || value.body.len() as u64 != value.body_len
        {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        self.take_loaded(&mut inner, LOAD_BATCHES_PER_REQUEST_MAX);
        if inner
            .entries
            .peek(key)
            .is_some_and(|held| held.hlc == value.hlc)
        {
            return;
        }
        // While the previous run's entries are read back, the room they take is not known
        // yet: an entry enters only on its second miss, as in a full cache.
        let at_once = !is_chunk
            && inner.loading.is_none()
            && inner.entries.bytes() + blocks(len) <= self.capacity_bytes;
        if !at_once && !inner.missed.second_miss(leofs_shard::hash_bytes(key)) {
            return;
        }
        self.drop_entry(&mut inner, key);
        while inner.entries.bytes() + blocks(len) > self.capacity_bytes {
            let Some(oldest) = inner.entries.oldest().cloned() else {
                break;
            };
            self.drop_entry(&mut inner, &oldest);
        }
        let key = Bytes::copy_from_slice(key);
        let hlc = value.hlc;
        let entry = Entry {
            len,
            hlc,
            pending: Some(value.clone()),
        };
        inner.entries.insert(key.clone(), entry, blocks(len));
        inner
            .pending
            .push_back((Instant::now() + WRITE_DELAY, key, hlc));
        inner.pending_bytes += len;
        debug_assert!(inner.entries.bytes() <= self.capacity_bytes);
        self.write_due(&mut inner, Instant::now(), metrics);
        self.publish(&inner, metrics);
    }

    /// Hands the entries whose write delay is over (and the oldest, while more than
    /// [`PENDING_BYTES_MAX`] wait) to the writer, and takes what the loader has read back
    /// since the last call. Called by the core's timer (an offer hands the due entries itself).
    pub fn write_due_entries(&self, metrics: &ObjectCacheMetrics) {
        let mut inner = self.inner.borrow_mut();
        self.take_loaded(&mut inner, LOAD_BATCHES_PER_TICK_MAX);
        self.write_due(&mut inner, Instant::now(), metrics);
        self.publish(&inner, metrics);
    }

    /// Hands the entries whose delay is over at `now` to the writer (see
    /// [`DiskCache::write_due_entries`]).
    fn write_due(&self, inner: &mut Inner, now: Instant, metrics: &ObjectCacheMetrics) {
        while let Some((due, _, _)) = inner.pending.front() {
            if *due > now && inner.pending_bytes <= PENDING_BYTES_MAX {
                break;
            }
            let Some((_, key, hlc)) = inner.pending.pop_front() else {
                break;
            };
            let Some(entry) = inner.entries.peek_mut(&key).filter(|e| e.hlc == hlc) else {
                continue;
            };
            let Some(value) = entry.pending.take() else {
                continue;
            };
            let len = entry.len;
            inner.pending_bytes -= len;
            let parts = [
                Header::of(&key, &value),
                key.clone(),
                value.meta.clone(),
                value.body.clone(),
            ];
            if !self
                .writer
                .write(self.path_of(&key, hlc), parts, len, &self.write_failures)
            {
                ObjectCacheMetrics::count(&metrics.disk_skipped);
                self.drop_entry(inner, &key);
            }
        }
    }

    /// Drops `key`'s entry from the index, and its file if it was handed to the writer.
    fn drop_entry(&self, inner: &mut Inner, key: &[u8]) {
        if let Some(entry) = inner.entries.remove(key) {
            if entry.pending.is_some() {
                inner.pending_bytes -= entry.len;
            } else {
                self.writer.remove(self.path_of(key, entry.hlc));
            }
        }
    }

    /// Drops `key`'s entry and its file.
    pub fn remove(&self, key: &[u8], metrics: &ObjectCacheMetrics) {
        let mut inner = self.inner.borrow_mut();
        self.drop_entry(&mut inner, key);
        self.publish(&inner, metrics);
    }

    /// Drops every entry whose key is one of `names`, or starts with it when it is marked as
    /// a prefix (a purge); how many.
    pub fn remove_named(&self, names: &[(Bytes, bool)], metrics: &ObjectCacheMetrics) -> usize {
        if let Some(loading) = self.inner.borrow_mut().loading.as_mut() {
            loading.purged.extend_from_slice(names);
        }
        let doomed: Vec<Bytes> = self
            .inner
            .borrow()
            .entries
            .keys()
            .filter(|k| crate::cache::named(k, names))
            .cloned()
            .collect();
        for key in &doomed {
            self.remove(key, metrics);
        }
        doomed.len()
    }

    /// Drops every entry and every file.
    pub fn clear(&self, metrics: &ObjectCacheMetrics) {
        let mut inner = self.inner.borrow_mut();
        inner.entries.clear();
        inner.pending.clear();
        inner.pending_bytes = 0;
        // Nothing the loader finds is wanted any more (its receiver dropped, it stops).
        inner.loading = None;
        self.writer.remove_all(self.dir.clone());
        self.publish(&inner, metrics);
    }

    /// Brings this core's disk figures in `metrics` up to date.
    pub fn publish_metrics(&self, metrics: &ObjectCacheMetrics) {
        self.publish(&self.inner.borrow(), metrics);
    }

    fn publish(&self, inner: &Inner, metrics: &ObjectCacheMetrics) {
        metrics.disk_entries.set(inner.entries.len() as u64);
        metrics.disk_bytes.set(inner.entries.bytes());
        metrics
            .disk_write_failures
            .set(self.write_failures.load(Ordering::Relaxed));
    }
}

/// The loader thread of a core's cache: reads back the files a previous run left in `dir`
/// (each one's header and key), removes those that are not whole entries, temporaries a crash
/// left (any without this run's mark `run`), and the older version of a key found twice (a
/// removal lost to a crash), and sends the rest to the core in batches, the most recently
/// written first. Stops when the core no longer wants them (`abandoned`).
fn load(
    dir: &Path,
    run: &str,
    sender: &crossbeam::channel::Sender<Loaded>,
    abandoned: &std::sync::atomic::AtomicBool,
) {
    let mut found: std::collections::HashMap<Bytes, (SystemTime, Hlc, u64)> =
        std::collections::HashMap::new();
    let (mut refused, mut skipped) = (0u64, 0u64);
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "disk cache: cannot list the previous run's entries");
            let _ = sender.send(Loaded::Done {
                refused,
                skipped: 1,
            });
            return;
        }
    };
    let ours = format!(".{run}.tmp");
    for item in listing {
        if abandoned.load(Ordering::Acquire) {
            return;
        }
        // An entry the listing could not give is a file left unread, like one not readable.
        let Ok(item) = item else {
            skipped += 1;
            continue;
        };
        let path = item.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == PURGES_FILE {
            continue;
        }
        if name.ends_with(".tmp") {
            if !name.ends_with(&ours) {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        if name.len() != 32 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        match read_key(&path) {
            Ok((key, hlc, len, written)) if file_name(&key, hlc) == name => match found.get(&key) {
                // The same file listed twice (a rename into the directory during the listing).
                Some((_, twin, _)) if *twin == hlc => {}
                Some((_, twin, _)) if *twin > hlc => {
                    let _ = std::fs::remove_file(&path);
                }
                Some((_, twin, _)) => {
                    let _ = std::fs::remove_file(dir.join(file_name(&key, *twin)));
                    found.insert(key, (written, hlc, len));
                }
                None => {
                    found.insert(key, (written, hlc, len));
                }
            },
            Ok(_) | Err(EntryError::Corrupt(_)) => {
                refused += 1;
                let _ = std::fs::remove_file(&path);
            }
            Err(EntryError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                refused += 1;
                let _ = std::fs::remove_file(&path);
            }
            // Gone since it was listed (this run's cache dropped it), or not readable now.
            Err(EntryError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(EntryError::Io(e)) => {
                skipped += 1;
                tracing::warn!(path = %path.display(), error = %e, "disk cache: a file left out (cannot read it now)");
            }
        }
    }
    let mut found: Vec<_> = found.into_iter().collect();
    found.sort_by_key(|(_, (written, _, _))| std::cmp::Reverse(*written));
    let mut found = found
        .into_iter()
        .map(|(key, (_, hlc, len))| (key, hlc, len));
    loop {
        let batch: Vec<_> = found.by_ref().take(LOAD_BATCH_ENTRIES).collect();
        if batch.is_empty() {
            break;
        }
        if sender.send(Loaded::Entries(batch)).is_err() {
            return;
        }
    }
    let _ = sender.send(Loaded::Done { refused, skipped });
}

/// Reads the key and version of the cache file at `path`, with the file's length and when it
/// was written.
fn read_key(path: &Path) -> Result<(Bytes, Hlc, u64, SystemTime), EntryError> {
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut head = vec![0u8; HEADER_BYTES];
    file.read_exact(&mut head)?;
    let header = Header::parse(&head)?;
    if header.file_len() != Some(meta.len()) {
        return Err(EntryError::Corrupt("length differs from the header's"));
    }
    let mut key = vec![0u8; header.key_len];
    file.read_exact(&mut key)?;
    Ok((Bytes::from(key), header.hlc, meta.len(), meta.modified()?))
}

/// The whole file at `path`, `len` bytes long, read through io_uring.
async fn read_file(path: &Path, len: u64) -> Result<Bytes, EntryError> {
    let len = usize::try_from(len).map_err(|_| EntryError::Corrupt("too long"))?;
    let file = monoio::fs::File::open(path).await?;
    let (read, buf) = file.read_exact_at(Vec::with_capacity(len), 0).await;
    let closed = file.close().await;
    read?;
    closed?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(at: u64, body: &[u8]) -> Value {
        Value {
            meta: Bytes::from_static(b"meta"),
            body: Bytes::copy_from_slice(body),
            body_len: body.len() as u64,
            summary: Summary {
                size: body.len() as u64,
                digest: [3; 16],
                tag: 9,
            },
            hlc: Hlc {
                physical_us: at,
                logical: 2,
                node_id: 7,
            },
        }
    }

    fn encoded(key: &[u8], value: &Value) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("entry");
        let parts = [
            Header::of(key, value),
            Bytes::copy_from_slice(key),
            value.meta.clone(),
            value.body.clone(),
        ];
        write_entry(&path, &parts, "test").unwrap();
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn an_entry_reads_back_as_written_and_any_flipped_byte_is_refused() {
        let v = value(42, b"hello body");
        let file = encoded(b"the-key", &v);
        let back = decode_entry(Bytes::from(file.clone()), b"the-key").unwrap();
        assert_eq!(back.meta, v.meta);
        assert_eq!(back.body, v.body);
        assert_eq!(back.body_len, v.body_len);
        assert_eq!(back.summary, v.summary);
        assert_eq!(back.hlc, v.hlc);
        assert!(decode_entry(Bytes::from(file.clone()), b"other-key").is_err());
        for at in 0..file.len() {
            let mut damaged = file.clone();
            damaged[at] ^= 0x10;
            assert!(
                decode_entry(Bytes::from(damaged), b"the-key").is_err(),
                "a flip at byte {at} went unseen"
            );
        }
        assert!(decode_entry(Bytes::from(file[..file.len() - 1].to_vec()), b"the-key").is_err());
    }

    #[test]
    fn entries_are_found_again_at_start_and_damaged_files_removed() {
        let dir = tempfile::tempdir().unwrap();
        let writer = DiskCacheWriter::new();
        let metrics = ObjectCacheMetrics::default();
        previous_run(dir.path(), &writer, &[b"a", b"b"], Some(17));
        std::fs::write(dir.path().join("0123456789abcdef0123456789abcdef"), b"junk").unwrap();
        // A crash's temporary, and one this run is writing: only the first goes.
        std::fs::write(dir.path().join("x.1-2.tmp"), b"partial").unwrap();
        let ours = format!("y.{}.tmp", writer.run);
        std::fs::write(dir.path().join(&ours), b"partial").unwrap();
        let cache = DiskCache::open(dir.path().into(), 1 << 20, writer.clone()).unwrap();
        assert!(cache.is_loading());
        wait_until_loaded(&cache, &metrics);
        assert_eq!(cache.purges_applied_at_start(), Some(17));
        assert_eq!(cache.inner.borrow().entries.len(), 2);
        assert_eq!(cache.inner.borrow().entries.bytes(), 2 * BLOCK_BYTES);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.contains(&ours), "{names:?}");
        std::fs::remove_file(dir.path().join(&ours)).unwrap();
        // Emptied: every entry file goes, the purge mark stays.
        cache.clear(&metrics);
        wait_for_writes(&writer);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec![PURGES_FILE.to_owned()]);
        assert_eq!(metrics.disk_entries.get(), 0);
    }

    #[test]
    fn the_least_recently_used_make_room_and_the_capacity_holds_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let writer = DiskCacheWriter::new();
        let metrics = ObjectCacheMetrics::default();
        let cache = DiskCache::open(dir.path().into(), 8 * BLOCK_BYTES, writer.clone()).unwrap();
        wait_until_loaded(&cache, &metrics);
        for i in 0..8u8 {
            cache.offer(&[b'k', i], &value(1, &[i; 100]), false, &metrics);
        }
        assert_eq!(metrics.disk_entries.get(), 8);
        // Full: a key enters on its second miss, pushing out the least recently used.
        for i in 8..10u8 {
            cache.offer(&[b'k', i], &value(1, &[i; 100]), false, &metrics);
            assert!(cache.inner.borrow().entries.peek(&[b'k', i]).is_none());
            cache.offer(&[b'k', i], &value(1, &[i; 100]), false, &metrics);
        }
        assert_eq!(metrics.disk_entries.get(), 8);
        let held = |k: &[u8]| cache.inner.borrow().entries.peek(k).is_some();
        assert!(!held(&[b'k', 0]) && !held(&[b'k', 1]) && held(&[b'k', 9]));
        // Nothing written yet (the delay), and the two pushed out never will be.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_all_now(&cache, &metrics);
        wait_for_writes(&writer);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 8);
        // Written one after the other, k2 first (k0 and k1 were pushed out).
        let first = SystemTime::now() - Duration::from_secs(100);
        for i in 2..10u8 {
            std::fs::File::options()
                .write(true)
                .open(cache.path_of(&[b'k', i], value(1, &[]).hlc))
                .unwrap()
                .set_modified(first + Duration::from_secs(u64::from(i)))
                .unwrap();
        }
        drop(cache);
        let smaller = DiskCache::open(dir.path().into(), 4 * BLOCK_BYTES, writer.clone()).unwrap();
        wait_until_loaded(&smaller, &metrics);
        wait_for_writes(&writer);
        assert_eq!(smaller.inner.borrow().entries.len(), 4);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
        for i in 2..10u8 {
            let held = smaller.inner.borrow().entries.peek(&[b'k', i]).is_some();
            assert_eq!(held, i >= 6, "k{i}: the most recently written are kept");
        }
        // The least recently written of those read back goes first.
        assert_eq!(
            smaller.inner.borrow().entries.oldest().map(|k| k.to_vec()),
            Some(vec![b'k', 6])
        );
        // Too large for an eighth of the cache: not written.
        smaller.offer(b"big", &value(1, &[0; 5000]), false, &metrics);
        assert!(smaller.inner.borrow().entries.peek(b"big").is_none());
    }

    #[test]
    fn what_the_core_does_while_its_entries_are_read_back_wins_over_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let writer = DiskCacheWriter::new();
        let metrics = ObjectCacheMetrics::default();
        previous_run(
            dir.path(),
            &writer,
            &[b"kept", b"newer", b"purged", b"other"],
            None,
        );
        let cache = DiskCache::open(dir.path().into(), 1 << 20, writer.clone()).unwrap();
        // While the core takes its entries back: a newer version read (offered twice: while
        // the room the files take is not known, an entry enters on its second miss, as in a
        // full cache), and a purge.
        cache.offer(b"newer", &value(2, b"newer"), false, &metrics);
        cache.offer(b"newer", &value(2, b"newer"), false, &metrics);
        cache.remove_named(&[(Bytes::from_static(b"purged"), false)], &metrics);
        wait_until_loaded(&cache, &metrics);
        write_all_now(&cache, &metrics);
        wait_for_writes(&writer);
        let held = |k: &[u8]| {
            cache
                .inner
                .borrow()
                .entries
                .peek(k)
                .map(|e| e.hlc.physical_us)
        };
        assert_eq!(held(b"kept"), Some(1));
        assert_eq!(
            held(b"newer"),
            Some(2),
            "a version read back never replaces a newer one"
        );
        assert_eq!(
            held(b"purged"),
            None,
            "a purge applies to entries read back later"
        );
        assert_eq!(held(b"other"), Some(1));
        // One file each for kept, newer (its new version) and other.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        let got = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .build()
            .expect("runtime")
            .block_on(cache.get(b"newer", &metrics))
            .unwrap();
        assert_eq!(got.body, Bytes::from_static(b"newer"));
        // Emptied while reading back: nothing found comes back.
        drop(cache);
        let cache = DiskCache::open(dir.path().into(), 1 << 20, writer.clone()).unwrap();
        cache.clear(&metrics);
        wait_until_loaded(&cache, &metrics);
        wait_for_writes(&writer);
        assert_eq!(cache.inner.borrow().entries.len(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_file_found_for_a_version_still_waiting_to_be_written_is_left_to_no_one() {
        let dir = tempfile::tempdir().unwrap();
        let writer = DiskCacheWriter::new();
        let metrics = ObjectCacheMetrics::default();
        previous_run(dir.path(), &writer, &[b"k"], None);
        let cache = DiskCache::open(dir.path().into(), 1 << 20, writer.clone()).unwrap();
        // The same version read again before its file is taken back: it waits for its delay.
        cache.offer(b"k", &value(1, b"k"), false, &metrics);
        cache.offer(b"k", &value(1, b"k"), false, &metrics);
        wait_until_loaded(&cache, &metrics);
        // Dropped before its delay is over (an overwrite through this gateway, say).
        cache.remove(b"k", &metrics);
        wait_for_writes(&writer);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_purge_mark_is_kept_only_once_the_files_it_names_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let writer = DiskCacheWriter::new();
        let metrics = ObjectCacheMetrics::default();
        previous_run(dir.path(), &writer, &[b"purged", b"kept"], Some(3));
        let purge = [(Bytes::from_static(b"purged"), false)];
        // Purge 4 applied while reading back, then a stop before the files came back: the
        // mark stays at 3, so the next start applies purge 4 again.
        {
            let cache = DiskCache::open(dir.path().into(), 1 << 20, writer.clone()).unwrap();
            assert_eq!(cache.purges_applied_at_start(), Some(3));
            cache.remove_named(&purge, &metrics);
            cache.save_purges_applied(4);
        }
        wait_for_writes(&writer);
        let cache = DiskCache::open(dir.path().into(), 1 << 20, writer.clone()).unwrap();
        assert_eq!(cache.purges_applied_at_start(), Some(3));
        cache.remove_named(&purge, &metrics);
        cache.save_purges_applied(4);
        wait_until_loaded(&cache, &metrics);
        wait_for_writes(&writer);
        assert!(cache.inner.borrow().entries.peek(b"purged").is_none());
        assert!(cache.inner.borrow().entries.peek(b"kept").is_some());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "kept's file and the mark"
        );
        drop(cache);
        let cache = DiskCache::open(dir.path().into(), 1 << 20, writer.clone()).unwrap();
        assert_eq!(cache.purges_applied_at_start(), Some(4));
    }

    #[test]
    fn of_two_versions_of_a_key_found_the_older_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let writer = DiskCacheWriter::new();
        let metrics = ObjectCacheMetrics::default();
        for (at, body) in [(5, &b"newer"[..]), (4, b"older")] {
            let v = value(at, body);
            let parts = [
                Header::of(b"twice", &v),
                Bytes::from_static(b"twice"),
                v.meta.clone(),
                v.body.clone(),
            ];
            write_entry(&dir.path().join(file_name(b"twice", v.hlc)), &parts, "test").unwrap();
        }
        let cache = DiskCache::open(dir.path().into(), 1 << 20, writer.clone()).unwrap();
        wait_until_loaded(&cache, &metrics);
        let held = cache.inner.borrow().entries.peek(b"twice").map(|e| e.hlc);
        assert_eq!(held, Some(value(5, b"").hlc));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![file_name(b"twice", value(5, b"").hlc)]);
    }

    /// Runs a cache on `dir` that writes an entry for each of `keys` (its body the key, at
    /// HLC 1) and, if given, the purge mark `mark`, then stops; every file written.
    fn previous_run(dir: &Path, writer: &DiskCacheWriter, keys: &[&[u8]], mark: Option<u64>) {
        let metrics = ObjectCacheMetrics::default();
        {
            let cache = DiskCache::open(dir.into(), 1 << 20, writer.clone()).unwrap();
            wait_until_loaded(&cache, &metrics);
            for key in keys {
                cache.offer(key, &value(1, key), false, &metrics);
            }
            if let Some(mark) = mark {
                cache.save_purges_applied(mark);
            }
            write_all_now(&cache, &metrics);
        }
        wait_for_writes(writer);
    }

    /// Takes what the loader reads back until it is done.
    fn wait_until_loaded(cache: &DiskCache, metrics: &ObjectCacheMetrics) {
        for _ in 0..500 {
            cache.write_due_entries(metrics);
            if !cache.is_loading() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the loader did not finish");
    }

    /// Hands every entry waiting to the writer as if its delay were over.
    fn write_all_now(cache: &DiskCache, metrics: &ObjectCacheMetrics) {
        let mut inner = cache.inner.borrow_mut();
        cache.write_due(&mut inner, Instant::now() + WRITE_DELAY, metrics);
    }

    /// Waits until the writer has done every op queued so far.
    fn wait_for_writes(writer: &DiskCacheWriter) {
        let (done, flushed) = crossbeam::channel::bounded(1);
        writer.tx.send(Op::Flush(done)).unwrap();
        flushed
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer did not finish");
    }
}
