//! The Raft log of one manager, durable in `<data_dir>/manager/`:
//!
//! - `raft.log`: a 16-byte header (`LEOFSRFT`, u32 LE format version, u32 zero), then one record
//!   per entry: u32 LE payload length, u64 LE xxh3 of the payload, the payload (JSON
//!   `{"v": 1, "entry": <openraft entry>}`). Appends are fdatasynced before openraft is told
//!   they are durable. Truncation and purging rewrite the file atomically (they are rare and
//!   the log stays short: it is purged behind each snapshot).
//! - `raft-meta.json` (replaced atomically): format version, this manager's Raft node id, its
//!   vote and the last purged log id.
//!
//! Recovery: records are read until the first one that is incomplete or fails its checksum;
//! that one and everything after it is the tail of an append that was never acknowledged (a
//! crash mid-write), cut off with a log line.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use xxhash_rust::xxh3::xxh3_64;

use super::TypeConfig;
use crate::ManagerError;
use crate::persist::{SECRET_FILE_MODE, io_error, read_if_exists, write_atomic};
use crate::store::corrupt;

/// The log file.
pub const LOG_FILE: &str = "raft.log";
/// The vote, node id and purge point.
pub const META_FILE: &str = "raft-meta.json";
/// Version of the log file's layout (its header).
pub const LOG_FORMAT_VERSION: u32 = 1;
/// Version of each stored entry (`"v"` in its JSON).
pub const ENTRY_FORMAT_VERSION: u32 = 1;
/// Version of `raft-meta.json`.
pub const META_FORMAT_VERSION: u32 = 1;
/// Largest record payload accepted when reading (a larger length is damage, not an entry).
pub const RECORD_BYTES_MAX: usize = 64 << 20;

const MAGIC: &[u8; 8] = b"LEOFSRFT";
const HEADER_BYTES: usize = 16;
const RECORD_HEAD_BYTES: usize = 12;

/// What `raft-meta.json` holds.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Meta {
    format_version: u32,
    node_id: u64,
    vote: Option<Vote<u64>>,
    last_purged: Option<LogId<u64>>,
}

/// One stored entry.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredEntry {
    v: u32,
    entry: Entry<TypeConfig>,
}

struct Inner {
    dir: PathBuf,
    meta: Meta,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    file: File,
}

/// The log store handed to openraft; clones share one log (openraft reads it from its own
/// tasks while the core appends).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn io<E: std::error::Error + 'static>(e: &E) -> StorageError<u64> {
    StorageIOError::write_logs(e).into()
}

impl LogStore {
    /// Opens the log in `dir`, creating it (with a fresh random node id) when there is none.
    /// Returns the store, this manager's node id and whether the log was created now.
    pub fn open(dir: &Path) -> Result<(Self, u64, bool), ManagerError> {
        let meta_path = dir.join(META_FILE);
        let (meta, created) = match read_if_exists(&meta_path)? {
            Some(bytes) => {
                let meta: Meta = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(&meta_path, e.to_string()))?;
                if meta.format_version != META_FORMAT_VERSION {
                    return Err(corrupt(
                        &meta_path,
                        format!("format version {} is not supported", meta.format_version),
                    ));
                }
                (meta, false)
            }
            None => {
                let meta = Meta {
                    format_version: META_FORMAT_VERSION,
                    node_id: crate::persist::random_nonzero_u64()?,
                    vote: None,
                    last_purged: None,
                };
                // The log file first: meta marks a log that exists.
                write_log_file(&dir.join(LOG_FILE), std::iter::empty())?;
                write_meta(dir, &meta)?;
                (meta, true)
            }
        };
        let log_path = dir.join(LOG_FILE);
        let mut entries = read_log_file(&log_path)?;
        if let Some(purged) = meta.last_purged {
            entries.retain(|&index, _| index > purged.index);
        }
        let file = open_append(&log_path)?;
        let node_id = meta.node_id;
        let inner = Inner {
            dir: dir.to_path_buf(),
            meta,
            entries,
            file,
        };
        Ok((
            Self {
                inner: Arc::new(Mutex::new(inner)),
            },
            node_id,
            created,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change below completes its file work before touching the in-memory copy, so
        // a panic elsewhere leaves nothing half-done here.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// Rewrites the log file from the entries in memory and reopens it for appending.
    fn rewrite(&mut self) -> Result<(), ManagerError> {
        let path = self.dir.join(LOG_FILE);
        write_log_file(&path, self.entries.values())?;
        self.file = open_append(&path)?;
        Ok(())
    }
}

fn write_meta(dir: &Path, meta: &Meta) -> Result<(), ManagerError> {
    let bytes =
        serde_json::to_vec(meta).map_err(|e| corrupt(&dir.join(META_FILE), e.to_string()))?;
    write_atomic(&dir.join(META_FILE), &bytes)
}

fn open_append(path: &Path) -> Result<File, ManagerError> {
    OpenOptions::new()
        .append(true)
        .mode(SECRET_FILE_MODE)
        .open(path)
        .map_err(io_error("open", path))
}

fn encode_record(entry: &Entry<TypeConfig>, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let payload = serde_json::to_vec(&StoredEntry {
        v: ENTRY_FORMAT_VERSION,
        entry: entry.clone(),
    })?;
    // Entries are catalog changes of a few hundred bytes; RECORD_BYTES_MAX bounds them.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

fn write_log_file<'a>(
    path: &Path,
    entries: impl Iterator<Item = &'a Entry<TypeConfig>>,
) -> Result<(), ManagerError> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&LOG_FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    for entry in entries {
        encode_record(entry, &mut bytes).map_err(|e| corrupt(path, e.to_string()))?;
    }
    write_atomic(path, &bytes)
}

/// Reads every whole, verified record; cuts a damaged tail off the file (see the module docs).
fn read_log_file(path: &Path) -> Result<BTreeMap<u64, Entry<TypeConfig>>, ManagerError> {
    let bytes = read_if_exists(path)?.ok_or_else(|| {
        corrupt(
            path,
            "the Raft log is missing (raft-meta.json exists)".into(),
        )
    })?;
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err(corrupt(path, "not a leofs Raft log (bad header)".into()));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != LOG_FORMAT_VERSION {
        return Err(corrupt(
            path,
            format!("log format version {version} is not supported"),
        ));
    }
    let mut entries = BTreeMap::new();
    let mut at = HEADER_BYTES;
    while at < bytes.len() {
        let Some(entry) = read_record(&bytes[at..]) else {
            tracing::warn!(
                path = %path.display(),
                offset = at,
                dropped_bytes = bytes.len() - at,
                "the Raft log ends in an incomplete or damaged record (an append cut by a crash, never acknowledged): cutting it off"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_error("open", path))?;
            file.set_len(at as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_error("truncate", path))?;
            break;
        };
        let (entry, len) = entry.map_err(|e| corrupt(path, format!("record at {at}: {e}")))?;
        entries.insert(entry.log_id.index, entry);
        at += len;
    }
    Ok(entries)
}

/// The record at the front of `bytes` and its length; None if it is incomplete or fails its
/// checksum; an error if it verifies but cannot be understood.
fn read_record(bytes: &[u8]) -> Option<Result<(Entry<TypeConfig>, usize), String>> {
    let head = bytes.get(..RECORD_HEAD_BYTES)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let checksum = u64::from_le_bytes(head[4..12].try_into().ok()?);
    if len > RECORD_BYTES_MAX {
        return None;
    }
    let payload = bytes.get(RECORD_HEAD_BYTES..RECORD_HEAD_BYTES + len)?;
    if xxh3_64(payload) != checksum {
        return None;
    }
    Some(match serde_json::from_slice::<StoredEntry>(payload) {
        Ok(stored) if stored.v == ENTRY_FORMAT_VERSION => {
            Ok((stored.entry, RECORD_HEAD_BYTES + len))
        }
        Ok(stored) => Err(format!(
            "entry format version {} is not supported",
            stored.v
        )),
        Err(e) => Err(e.to_string()),
    })
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let inner = self.lock();
        let last_purged = inner.meta.last_purged;
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|entry| entry.log_id)
            .or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.lock();
        let mut meta = inner.meta.clone();
        meta.vote = Some(*vote);
        write_meta(&inner.dir, &meta)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        inner.meta = meta;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.lock().meta.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let entries: Vec<_> = entries.into_iter().collect();
        let mut bytes = Vec::new();
        for entry in &entries {
            encode_record(entry, &mut bytes).map_err(|e| io(&e))?;
        }
        let written = inner
            .file
            .write_all(&bytes)
            .and_then(|()| inner.file.sync_data());
        if let Err(e) = written {
            let message = e.to_string();
            callback.log_io_completed(Err(e));
            return Err(io(&std::io::Error::other(message)));
        }
        for entry in entries {
            inner.entries.insert(entry.log_id.index, entry);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.lock();
        let kept: BTreeMap<_, _> = inner
            .entries
            .range(..log_id.index)
            .map(|(&index, entry)| (index, entry.clone()))
            .collect();
        let removed = std::mem::replace(&mut inner.entries, kept);
        if let Err(e) = inner.rewrite() {
            inner.entries = removed;
            return Err(io(&e));
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut inner = self.lock();
        assert!(
            inner.meta.last_purged <= Some(log_id),
            "the Raft log is never purged backwards"
        );
        let mut meta = inner.meta.clone();
        meta.last_purged = Some(log_id);
        // The purge point first: a crash before the rewrite leaves entries that are skipped.
        write_meta(&inner.dir, &meta).map_err(|e| io(&e))?;
        inner.meta = meta;
        inner.entries.retain(|&index, _| index > log_id.index);
        inner.rewrite().map_err(|e| io(&e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::command::Command;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 7), index),
            payload: EntryPayload::Normal(Command::DeleteUser {
                user_id: format!("user{index}"),
            }),
        }
    }

    fn append(store: &LogStore, entries: &[Entry<TypeConfig>]) {
        let mut inner = store.lock();
        let mut bytes = Vec::new();
        for e in entries {
            encode_record(e, &mut bytes).unwrap();
        }
        inner.file.write_all(&bytes).unwrap();
        for e in entries {
            inner.entries.insert(e.log_id.index, e.clone());
        }
    }

    #[test]
    fn entries_survive_reopen_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (store, node_id, created) = LogStore::open(dir.path()).unwrap();
        assert!(created && node_id != 0);
        append(&store, &[entry(1), entry(2), entry(3)]);
        drop(store);
        // A torn append: half a record at the end.
        let path = dir.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        let mut torn = Vec::new();
        encode_record(&entry(4), &mut torn).unwrap();
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();

        let (store, again, created) = LogStore::open(dir.path()).unwrap();
        assert_eq!((again, created), (node_id, false));
        assert_eq!(
            store.lock().entries.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, whole);

        // A flipped byte in the last record: it is cut off too, the others stay.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (store, _, _) = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.lock().entries.len(), 2);
    }

    #[test]
    fn purge_and_truncate_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = LogStore::open(dir.path()).unwrap();
        append(&store, &[entry(1), entry(2), entry(3), entry(4), entry(5)]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut handle = store.clone();
        rt.block_on(async {
            handle.purge(entry(2).log_id).await.unwrap();
            handle.truncate(entry(5).log_id).await.unwrap();
            let vote = Vote::new(3, 9);
            handle.save_vote(&vote).await.unwrap();
        });
        drop((store, handle));
        let (mut store, _, _) = LogStore::open(dir.path()).unwrap();
        rt.block_on(async {
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(entry(2).log_id));
            assert_eq!(state.last_log_id, Some(entry(4).log_id));
            assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 9)));
            let read = store.try_get_log_entries(0..10).await.unwrap();
            assert_eq!(
                read.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
                vec![3, 4]
            );
        });
    }

    #[test]
    fn a_damaged_record_that_verifies_but_is_not_an_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = LogStore::open(dir.path()).unwrap();
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let payload = br#"{"v":9,"entry":null}"#;
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&xxh3_64(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            LogStore::open(dir.path()),
            Err(ManagerError::Corrupt { .. })
        ));
    }
}
