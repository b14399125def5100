//! Thin wrappers over monoio file I/O that map errors to [`EngineError`] (with the path) and
//! carry the fail points the fault-injection tests rely on. Every write/sync of the engine goes
//! through here.

use std::io;
use std::path::Path;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

use crate::EngineError;
use crate::aligned::AlignedBuf;

/// Builds an [`EngineError::Io`].
pub(crate) fn io_err(op: &'static str, path: &Path, source: io::Error) -> EngineError {
    EngineError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The error a fail point injects: ENOSPC when its argument is `enospc`, EIO otherwise.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub(crate) fn injected(arg: Option<String>) -> io::Error {
    match arg.as_deref() {
        Some("enospc") => io::Error::from_raw_os_error(libc::ENOSPC),
        _ => io::Error::from_raw_os_error(libc::EIO),
    }
}

/// True when an I/O error means the disk is full.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Opens a file for O_DIRECT reads and writes (creating it when asked).
pub(crate) async fn open_direct(path: &Path, create_new: bool) -> Result<File, EngineError> {
    let mut opts = OpenOptions::new();
    opts.read(true)
        .write(true)
        .create_new(create_new)
        .custom_flags(libc::O_DIRECT);
    opts.open(path).await.map_err(|e| io_err("open", path, e))
}

/// Writes the whole valid part of `buf` at `pos` (fail point `engine::write`).
pub(crate) async fn write_all_at<T: IoBuf>(
    file: &File,
    buf: T,
    pos: u64,
    path: &Path,
) -> (Result<(), EngineError>, T) {
    let fail = || -> Result<(), io::Error> {
        fail::fail_point!("engine::write", |arg| Err(injected(arg)));
        Ok(())
    };
    if let Err(e) = fail() {
        return (Err(io_err("write", path, e)), buf);
    }
    let (res, buf) = file.write_all_at(buf, pos).await;
    (res.map_err(|e| io_err("write", path, e)), buf)
}

/// fdatasync through io_uring (fail point `engine::fdatasync`).
pub(crate) async fn sync_data(file: &File, path: &Path) -> Result<(), EngineError> {
    fail::fail_point!("engine::fdatasync", |arg| Err(io_err(
        "fdatasync",
        path,
        injected(arg)
    )));
    file.sync_data()
        .await
        .map_err(|e| io_err("fdatasync", path, e))
}

/// Reads exactly `len` bytes (a block multiple) at `pos` (block aligned) into `buf`.
pub(crate) async fn read_exact_at(
    file: &File,
    buf: AlignedBuf,
    len: usize,
    pos: u64,
    path: &Path,
) -> (Result<(), EngineError>, AlignedBuf) {
    debug_assert!(len <= buf.capacity());
    let (res, slice) = file.read_exact_at(buf.slice_mut(0..len), pos).await;
    let mut buf = slice.into_inner();
    if res.is_ok() {
        buf.set_len(len);
    }
    (res.map_err(|e| io_err("read", path, e)), buf)
}

/// fsyncs a directory so that creations, renames and removals in it are durable.
pub(crate) async fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    let file = File::open(dir).await.map_err(|e| io_err("open", dir, e))?;
    file.sync_all().await.map_err(|e| io_err("fsync", dir, e))?;
    file.close().await.map_err(|e| io_err("close", dir, e))
}
