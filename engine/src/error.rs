//! [`EngineError`]: every way an engine operation can fail.

use std::path::PathBuf;

/// Every way an engine operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An I/O call failed; `op` says which, `path` on what.
    #[error("{op} failed on {path}: {source}")]
    Io {
        /// The operation (open, write, fdatasync, read…).
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The disk (or the configured `disk_bytes_max`) has no room for another segment.
    #[error("disk full: no space for a new log segment in {dir}")]
    DiskFull {
        /// The shard directory.
        dir: PathBuf,
    },
    /// A key, metadata or body exceeds its limit.
    #[error("{what} is {len} bytes, limit is {max}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A record failed its checksum and was not returned.
    #[error("corrupt record in {path} at offset {offset}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
    },
    /// The directory holds data in a format this build cannot read.
    #[error("unsupported format in {path}: {detail}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The engine was closed, or a previous fatal error stopped the writer.
    #[error("engine closed")]
    Closed,
    /// A streamed body source failed or ended early.
    #[error("body stream failed: {0}")]
    Body(String),
}
