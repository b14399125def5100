//! Files of `<data_dir>/manager/`: atomic replacement (write a temporary file, fsync, rename, fsync
//! the directory) with owner-only permissions, because every file here holds a secret.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::ManagerError;

/// Mode of every file the manager writes: they hold secrets (keys, the admin token).
pub const SECRET_FILE_MODE: u32 = 0o600;
/// Mode of `<data_dir>/manager/` itself.
pub const MANAGER_DIR_MODE: u32 = 0o700;
/// Bytes of randomness in the admin token (hex-encoded, so twice as many characters).
const ADMIN_TOKEN_RANDOM_BYTES: usize = 32;
/// Source of cryptographically secure random bytes.
const RANDOM_SOURCE: &str = "/dev/urandom";

/// Wraps an I/O error with the operation and the file it happened on.
pub(crate) fn io_error(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ManagerError {
    let path = path.to_path_buf();
    move |source| ManagerError::Io { op, path, source }
}

/// Creates `dir` (and parents) if missing and restricts it to its owner.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), ManagerError> {
    fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
    fs::set_permissions(dir, Permissions::from_mode(MANAGER_DIR_MODE))
        .map_err(io_error("chmod", dir))
}

/// Replaces `path` with `bytes` atomically and durably: after a crash the file holds either the
/// old or the new content, never a mix, and the new content survives once this returns.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ManagerError> {
    let tmp = temporary_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(SECRET_FILE_MODE)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    // A leftover temporary file may have been created with other permissions.
    file.set_permissions(Permissions::from_mode(SECRET_FILE_MODE))
        .map_err(io_error("chmod", &tmp))?;
    file.write_all(bytes).map_err(io_error("write", &tmp))?;
    file.sync_all().map_err(io_error("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error("rename", path))?;
    sync_parent_dir(path)
}

/// The temporary sibling used by [`write_atomic`] (`state.json` → `state.json.tmp`).
pub(crate) fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Fsyncs the directory holding `path` so a rename or create in it is durable.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<(), ManagerError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync directory", dir))
}

/// Reads a whole file; `Ok(None)` if it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, ManagerError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_error("read", path)(err)),
    }
}

/// Fills `buf` from the kernel CSPRNG.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), ManagerError> {
    let path = Path::new(RANDOM_SOURCE);
    File::open(path)
        .and_then(|mut source| source.read_exact(buf))
        .map_err(io_error("read", path))
}

/// `len` characters drawn uniformly from `alphabet` (rejection sampling, no modulo bias).
pub(crate) fn random_string(alphabet: &[u8], len: usize) -> Result<String, ManagerError> {
    debug_assert!(!alphabet.is_empty() && alphabet.len() <= 256);
    // Largest multiple of the alphabet size that fits in a byte: bytes at or above it are redrawn.
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    let mut pool = [0u8; 64];
    while out.len() < len {
        random_bytes(&mut pool)?;
        for &byte in &pool {
            if usize::from(byte) < limit && out.len() < len {
                out.push(char::from(alphabet[usize::from(byte) % alphabet.len()]));
            }
        }
    }
    Ok(out)
}

/// A fresh secret (the admin API token, a cluster secret): 32 random bytes, hex-encoded.
pub(crate) fn new_hex_secret() -> Result<String, ManagerError> {
    random_hex(ADMIN_TOKEN_RANDOM_BYTES)
}

/// `bytes` random bytes as lowercase hex (twice as many characters): secrets and ids.
pub fn random_hex(bytes: usize) -> Result<String, ManagerError> {
    let mut raw = vec![0u8; bytes];
    random_bytes(&mut raw)?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// A random u64 other than 0 (which the ids drawn with it reserve for "none").
pub(crate) fn random_nonzero_u64() -> Result<u64, ManagerError> {
    loop {
        let mut bytes = [0u8; 8];
        random_bytes(&mut bytes)?;
        let value = u64::from_le_bytes(bytes);
        if value != 0 {
            return Ok(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn write_atomic_replaces_content_with_mode_0600_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(!temporary_path(&path).exists());
    }

    #[test]
    fn write_atomic_fixes_permissions_of_a_leftover_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        fs::write(temporary_path(&path), b"junk").unwrap();
        fs::set_permissions(temporary_path(&path), Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"token").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"token");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn random_strings_use_the_alphabet_and_differ() {
        let a = random_string(b"ABC", 200).unwrap();
        let b = random_string(b"ABC", 200).unwrap();
        assert_eq!(a.len(), 200);
        assert!(a.bytes().all(|c| b"ABC".contains(&c)));
        assert_ne!(a, b);
        for letter in ['A', 'B', 'C'] {
            assert!(a.contains(letter));
        }
    }

    #[test]
    fn admin_tokens_are_64_hex_chars_and_unique() {
        let a = new_hex_secret().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_hex_secret().unwrap());
    }
}
