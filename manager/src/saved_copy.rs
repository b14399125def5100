//! The catalog a node without the manager role keeps on its disk (`<data dir>/catalog.copy`):
//! the last one it fetched, with the ring and the members in it, so that it can start and
//! serve again while no manager answers (a storage node or gateway restarted during a manager
//! outage).
//!
//! ```text
//! 8 bytes   magic "LFSCAT01"
//! 8 bytes   the catalog's version (as the managers number it), little-endian
//! n bytes   the catalog snapshot (Manager::encode_snapshot)
//! 8 bytes   xxh3 of everything before, little-endian
//! ```
//! Written atomically and durably, owner-only (it holds secret keys). A file that fails its
//! checksum or does not decode is refused: the node then needs a manager to start.

use std::path::Path;

use crate::persist::{read_if_exists, write_atomic};
use crate::{Manager, ManagerError, ManagerState};

/// The file's name in a node's data dir.
pub const SAVED_CATALOG_FILE: &str = "catalog.copy";
const MAGIC: &[u8; 8] = b"LFSCAT01";
/// Magic, version and checksum.
const FRAMING_BYTES: usize = 24;

/// Saves `snapshot` (bytes of [`Manager::encode_snapshot`]) at `version` in `path`.
pub fn save(path: &Path, version: u64, snapshot: &[u8]) -> Result<(), ManagerError> {
    let mut bytes = Vec::with_capacity(snapshot.len() + FRAMING_BYTES);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(snapshot);
    let checksum = xxhash_rust::xxh3::xxh3_64(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    write_atomic(path, &bytes)
}

/// The catalog saved in `path` and its version; None if there is no such file.
pub fn load(path: &Path) -> Result<Option<(ManagerState, u64)>, ManagerError> {
    let Some(bytes) = read_if_exists(path)? else {
        return Ok(None);
    };
    let corrupt = |detail: &str| ManagerError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.to_owned(),
    };
    if bytes.len() < FRAMING_BYTES || &bytes[..8] != MAGIC {
        return Err(corrupt("not a saved catalog (bad magic or too short)"));
    }
    let (content, tail) = bytes.split_at(bytes.len() - 8);
    let mut stored = [0u8; 8];
    stored.copy_from_slice(tail);
    if xxhash_rust::xxh3::xxh3_64(content) != u64::from_le_bytes(stored) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut version = [0u8; 8];
    version.copy_from_slice(&content[8..16]);
    let mut state = Manager::decode_snapshot(&content[16..])?;
    // Whether every node routes by the saved ring was true when it was saved, not now: a node
    // that starts from this copy drops no partition until the managers say so again.
    if let Some(ring) = state.ring.as_mut() {
        ring.known_everywhere = false;
    }
    Ok(Some((state, u64::from_le_bytes(version))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_catalog_reads_back_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SAVED_CATALOG_FILE);
        assert!(load(&path).unwrap().is_none());
        let (manager, _) = Manager::open(&dir.path().join("m"), None).unwrap();
        manager.create_user("alice").unwrap();
        let snapshot = Manager::encode_snapshot(&manager.snapshot());
        save(&path, 42, &snapshot).unwrap();
        let (state, version) = load(&path).unwrap().unwrap();
        assert_eq!(version, 42);
        assert!(state.user("alice").is_some());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);

        let good = std::fs::read(&path).unwrap();
        for at in [0, 9, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                matches!(load(&path), Err(ManagerError::Corrupt { .. })),
                "byte {at}"
            );
        }
        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(matches!(load(&path), Err(ManagerError::Corrupt { .. })));
    }
}
