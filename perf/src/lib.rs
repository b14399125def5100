//! leofs-perf: `leofs-bench`, an S3 load generator for any S3 endpoint (leofs, Garage, ...).
//!
//! - `sigv4`: AWS Signature Version 4 signing.
//! - `client`: one keep-alive HTTP/1.1 S3 connection and its operations.
//! - `content`: deterministic object content and its verification on read.
//! - `size`: object sizes and size distributions.
//! - `stats`: latency histograms and summaries.
//! - `bench`: the run (preload, warmup, measured phase) and its report.
//! - `report`: the human-readable table.

pub mod bench;
pub mod client;
pub mod content;
pub mod report;
pub mod rng;
pub mod sigv4;
pub mod size;
pub mod stats;
