//! leofs-engine: the durable storage that one CPU core owns.
//!
//! An [`Engine`] lives inside one monoio runtime (io_uring driver) and is never shared across
//! threads (`Rc` inside, `!Send`). It knows nothing of networks, S3 or the ring: callers pass the
//! partition a key belongs to, and the engine keeps an ordered index per partition.
//!
//! CONTRACT (fixed; other crates build against it): the public items below and their
//! signatures. Implementations may add items, never change these without coordinating.
//!
//! The on-disk format and what durability rests on: `engine/FORMAT.md`. To simulate a crash in
//! a test, drop the monoio runtime (that ends the engine's tasks), then reopen.
//!
//! Modules:
//! - handle and state: `engine` (the [`Engine`] handle and operations), `error`, `types`;
//! - write path: `writer` (group commit, rollover, reservations), `stream` (large records),
//!   `segment_pool` (free segments ahead of need, the compaction spare), `clock` (HLC);
//! - read path: `index` (per-partition ordered index, live bytes), `read` (verified reads),
//!   `cache` (hot small objects);
//! - durability: `recovery` (open: checkpoint + replay), `scan` (record validity),
//!   `checkpoint` (file format), `checkpoint_task` (taking them), `reserve` (disk room kept for
//!   the next checkpoint), `compaction`;
//! - formats and I/O: `record`, `segment`, `aligned` (O_DIRECT buffers), `io` (fail points).

mod aligned;
mod cache;
mod checkpoint;
mod checkpoint_task;
mod clock;
pub use clock::{HlcClock, set_test_clock_offset_us, wall_us};
mod compaction;
mod disk_full;
mod engine;
mod error;
mod index;
mod io;
mod read;
mod record;
mod recovery;
mod reserve;
mod scan;
mod segment;
mod segment_pool;
mod stream;
mod types;
mod writer;

#[cfg(test)]
mod engine_tests;

pub use engine::{Engine, TombstonePolicy};
pub use error::EngineError;
pub use types::{
    CompactionReport, EngineConfig, EngineStats, Head, Hlc, Lookup, MAX_BODY_BYTES, MAX_KEY_BYTES,
    MAX_META_BYTES, PartitionId, PutValue, ScanEntry, Summary, SyncPolicy, Value,
};
