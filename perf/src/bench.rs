//! The run: bucket check, preload, warmup, measured phase, and the report.
//!
//! `concurrency` tasks each own one keep-alive connection and issue one operation at a time, in
//! a closed loop, until the deadline. Operations that start during the warmup are executed but
//! not measured (their errors are still counted, under `warmup_errors`). Every error is counted
//! by kind; none is retried or dropped.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::{ClientConfig, OpError, REQUEST_TIMEOUT, S3Client};
use crate::content::Content;
use crate::rng::{Rng, mix64};
use crate::size::{SizeDist, format_size};
use crate::stats::{BYTES_PER_MB, OpSummary, Recorder};

/// Keys per ListObjectsV2 page (S3's maximum).
pub const LIST_PAGE_KEYS: u32 = 1000;
/// S3's largest part number in a multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// Most concurrent operations accepted.
pub const MAX_CONCURRENCY: usize = 4096;
/// Progress line period.
const PROGRESS_PERIOD: Duration = Duration::from_secs(1);

/// What each operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// PutObject of new keys.
    Put,
    /// GetObject of random preloaded keys, bodies verified.
    Get,
    /// GET with probability `read_ratio`, else PUT overwriting a random preloaded key with its
    /// own content (so concurrent reads stay verifiable).
    Mixed,
    /// DeleteObject of the preloaded keys, each once; ends early when they are all deleted.
    Delete,
    /// ListObjectsV2 pages of 1000 keys over the preloaded keys, pass after pass; each full pass
    /// must return exactly `objects` keys.
    List,
    /// Multipart uploads of new keys: create, `part_size` parts in sequence, complete.
    Multipart,
}

impl Workload {
    fn needs_preload(self) -> bool {
        matches!(self, Self::Get | Self::Mixed | Self::Delete | Self::List)
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// `http://host:port`.
    pub endpoint: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// SigV4 region.
    pub region: String,
    /// Bucket (created if missing).
    pub bucket: String,
    /// Operation mix.
    pub workload: Workload,
    /// Object sizes.
    pub size: SizeDist,
    /// Operations in flight (one connection each).
    pub concurrency: usize,
    /// Client runtime threads (reported only; the caller builds the runtime).
    pub threads: usize,
    /// Measured phase.
    pub duration: Duration,
    /// Unmeasured phase before it.
    pub warmup: Duration,
    /// Objects preloaded for get, mixed, delete and list.
    pub objects: u64,
    /// PUTs in flight during the preload.
    pub preload_concurrency: usize,
    /// Whether to preload the objects (false: a previous run with the same prefix, count,
    /// size and seed did).
    pub preload: bool,
    /// Share of GETs in `mixed`, 0..=1.
    pub read_ratio: f64,
    /// Part size of `multipart`, bytes.
    pub part_size_bytes: u64,
    /// Sign PUT bodies instead of sending UNSIGNED-PAYLOAD.
    pub signed_payload: bool,
    /// Compare every GET body with the content written (off only for ceiling measurements
    /// against servers that do not store data, e.g. nginx `return 200`).
    pub verify: bool,
    /// Every key of this run starts with it.
    pub prefix: String,
    /// Seed of sizes and key choices.
    pub seed: u64,
    /// Print a progress line on stderr every second.
    pub progress: bool,
}

/// Why a run could not start or its preload failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The endpoint cannot be reached or resolved.
    #[error("endpoint {endpoint}")]
    Endpoint {
        /// The endpoint URL.
        endpoint: String,
        /// What failed.
        source: OpError,
    },
    /// The bucket is neither usable nor creatable.
    #[error("bucket {bucket}: {message}")]
    Bucket {
        /// Bucket name.
        bucket: String,
        /// What failed.
        message: String,
    },
    /// Some preload PUTs failed, so reads would not be meaningful.
    #[error("preload failed: {failed} of {objects} PUTs failed ({summary})")]
    Preload {
        /// Failed PUTs.
        failed: u64,
        /// Objects to preload.
        objects: u64,
        /// Errors by kind and an example.
        summary: String,
    },
}

/// The preload phase, reported for context.
#[derive(Clone, Debug, Serialize)]
pub struct PreloadReport {
    /// Objects written.
    pub objects: u64,
    /// PUTs in flight.
    pub concurrency: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Wall-clock time, seconds.
    pub elapsed_s: f64,
}

/// The result of a run (printed as a table, or as JSON with `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `leofs-bench`.
    pub tool: &'static str,
    /// Crate version.
    pub version: &'static str,
    /// Endpoint URL.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Key prefix of this run.
    pub prefix: String,
    /// Workload.
    pub workload: Workload,
    /// Size distribution, as given.
    pub size: String,
    /// Operations in flight.
    pub concurrency: usize,
    /// Client runtime threads.
    pub threads: usize,
    /// Measured phase, seconds (target).
    pub duration_s: f64,
    /// Warmup, seconds.
    pub warmup_s: f64,
    /// Preloaded objects (0 if the workload does not preload).
    pub objects: u64,
    /// Share of GETs (mixed only).
    pub read_ratio: Option<f64>,
    /// Part size, bytes (multipart only).
    pub part_size_bytes: Option<u64>,
    /// `UNSIGNED-PAYLOAD` or `signed (SHA-256)`.
    pub payload_signing: &'static str,
    /// How reads are checked.
    pub verification: &'static str,
    /// The preload phase, if any.
    pub preload: Option<PreloadReport>,
    /// One entry per operation kind.
    pub results: Vec<OpSummary>,
    /// Measured-phase errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Warmup errors by kind.
    pub warmup_errors: BTreeMap<String, u64>,
    /// First message of each error kind.
    pub error_examples: BTreeMap<String, String>,
    /// TCP connections opened (== concurrency when keep-alive held).
    pub connections: u64,
}

impl Report {
    /// Errors of every phase (a non-zero total makes the binary exit with status 2).
    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.warmup_errors.values().sum::<u64>()
    }
}

/// Counters the progress line reads; updated by every operation.
#[derive(Default)]
struct Live {
    ops: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    done: AtomicBool,
}

struct Shared {
    config: BenchConfig,
    client: Arc<ClientConfig>,
    objects: Vec<(String, u64)>,
    measure_start: Instant,
    end: Instant,
    next_delete: AtomicU64,
    live: Live,
}

struct WorkerResult {
    measured: Recorder,
    warmup: Recorder,
    connects: u64,
}

/// A fresh key prefix from the clock and the process id, so runs never see each other's keys.
pub fn default_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "leofs-bench-{:08x}/",
        mix64(nanos ^ u64::from(std::process::id())) as u32
    )
}

/// Runs the benchmark described by `config` on the current tokio runtime.
pub async fn run(config: BenchConfig) -> Result<Report, BenchError> {
    validate(&config)?;
    let (addr, host) = ClientConfig::resolve_endpoint(&config.endpoint)
        .await
        .map_err(|source| BenchError::Endpoint {
            endpoint: config.endpoint.clone(),
            source,
        })?;
    let client = Arc::new(ClientConfig {
        addr,
        host,
        access_key: config.access_key.clone(),
        secret_key: config.secret_key.clone(),
        region: config.region.clone(),
        bucket: config.bucket.clone(),
        signed_payload: config.signed_payload,
    });
    ensure_bucket(&config, &client).await?;

    let objects: Vec<(String, u64)> = if config.workload.needs_preload() {
        let mut rng = Rng::new(config.seed);
        (0..config.objects)
            .map(|i| {
                (
                    format!("{}obj/{i:08}", config.prefix),
                    config.size.sample(&mut rng),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let preload = if objects.is_empty() || !config.preload {
        None
    } else {
        Some(preload_objects(&config, &client, &objects).await?)
    };

    let start = Instant::now();
    let measure_start = start + config.warmup;
    let shared = Arc::new(Shared {
        client,
        objects,
        measure_start,
        end: measure_start + config.duration,
        next_delete: AtomicU64::new(0),
        live: Live::default(),
        config,
    });
    let progress = shared
        .config
        .progress
        .then(|| tokio::spawn(progress_loop(Arc::clone(&shared), start)));
    let mut tasks = Vec::with_capacity(shared.config.concurrency);
    for worker_id in 0..shared.config.concurrency {
        tasks.push(tokio::spawn(worker(Arc::clone(&shared), worker_id as u64)));
    }
    let mut measured = Recorder::default();
    let mut warmup = Recorder::default();
    let mut connections = 0;
    for task in tasks {
        match task.await {
            Ok(result) => {
                measured.merge(&result.measured);
                warmup.merge(&result.warmup);
                connections += result.connects;
            }
            Err(e) => measured.error("worker panic".to_owned(), e.to_string()),
        }
    }
    let finished = Instant::now();
    shared.live.done.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    let elapsed = finished.saturating_duration_since(measure_start);

    let config = &shared.config;
    let results = measured
        .ops
        .iter()
        .map(|(op, rec)| rec.summary(op, elapsed))
        .collect();
    let mut error_examples = warmup.error_examples.clone();
    error_examples.extend(measured.error_examples.clone());
    Ok(Report {
        tool: "leofs-bench",
        version: env!("CARGO_PKG_VERSION"),
        endpoint: config.endpoint.clone(),
        bucket: config.bucket.clone(),
        prefix: config.prefix.clone(),
        workload: config.workload,
        size: config.size.to_string(),
        concurrency: config.concurrency,
        threads: config.threads,
        duration_s: config.duration.as_secs_f64(),
        warmup_s: config.warmup.as_secs_f64(),
        objects: shared.objects.len() as u64,
        read_ratio: (config.workload == Workload::Mixed).then_some(config.read_ratio),
        part_size_bytes: (config.workload == Workload::Multipart).then_some(config.part_size_bytes),
        payload_signing: if config.signed_payload {
            "signed (SHA-256)"
        } else {
            "UNSIGNED-PAYLOAD"
        },
        verification: if config.verify {
            "every GET body compared byte for byte with the content derived from key+size"
        } else {
            "NOT verified (--no-verify): bodies read and counted only"
        },
        preload,
        results,
        errors: measured.errors,
        warmup_errors: warmup.errors,
        error_examples,
        connections,
    })
}

fn validate(config: &BenchConfig) -> Result<(), BenchError> {
    let bad = |m: String| Err(BenchError::Config(m));
    for (name, value) in [
        ("concurrency", config.concurrency),
        ("preload concurrency", config.preload_concurrency),
    ] {
        if value == 0 || value > MAX_CONCURRENCY {
            return bad(format!("{name} must be in 1..={MAX_CONCURRENCY}"));
        }
    }
    if !(0.0..=1.0).contains(&config.read_ratio) {
        return bad("read ratio must be in 0..=1".to_owned());
    }
    if config.workload.needs_preload() && config.objects == 0 {
        return bad("this workload reads preloaded objects: --objects must be > 0".to_owned());
    }
    if config.workload == Workload::Multipart {
        if config.part_size_bytes == 0 {
            return bad("--part-size must be > 0".to_owned());
        }
        if config.size.max_bytes().div_ceil(config.part_size_bytes) > MAX_PARTS {
            return bad(format!(
                "objects of {} need more than {MAX_PARTS} parts of {}",
                format_size(config.size.max_bytes()),
                format_size(config.part_size_bytes)
            ));
        }
    }
    if config.bucket.is_empty() || config.access_key.is_empty() {
        return bad("bucket and access key must not be empty".to_owned());
    }
    Ok(())
}

async fn ensure_bucket(config: &BenchConfig, client: &Arc<ClientConfig>) -> Result<(), BenchError> {
    let mut s3 = S3Client::new(Arc::clone(client));
    let bucket_error = |message: String| BenchError::Bucket {
        bucket: config.bucket.clone(),
        message,
    };
    match s3.head_bucket().await {
        Ok(status) if (200..300).contains(&status) => Ok(()),
        Ok(404) => s3
            .create_bucket()
            .await
            .map_err(|e| bucket_error(format!("missing, and creating it failed: {e}"))),
        Ok(status) => Err(bucket_error(format!(
            "HEAD returned HTTP {status} (wrong credentials, or owned by someone else?)"
        ))),
        Err(source) => Err(BenchError::Endpoint {
            endpoint: config.endpoint.clone(),
            source,
        }),
    }
}

async fn preload_objects(
    config: &BenchConfig,
    client: &Arc<ClientConfig>,
    objects: &[(String, u64)],
) -> Result<PreloadReport, BenchError> {
    let started = Instant::now();
    let objects: Arc<Vec<(String, u64)>> = Arc::new(objects.to_vec());
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..config.preload_concurrency {
        let objects = Arc::clone(&objects);
        let next = Arc::clone(&next);
        let mut s3 = S3Client::new(Arc::clone(client));
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((key, size)) = objects.get(index as usize) else {
                    break;
                };
                let body = Content::new(key.as_bytes(), *size).bytes();
                if let Err(e) = timed(s3.put_object(key, body)).await {
                    if matches!(e, OpError::Timeout) {
                        s3.disconnect();
                    }
                    rec.error(e.kind(), e.to_string());
                }
            }
            rec
        }));
    }
    let mut rec = Recorder::default();
    let total = objects.len() as u64;
    if config.progress {
        eprintln!("preloading {total} objects of {} ...", config.size);
    }
    for task in tasks {
        match task.await {
            Ok(r) => rec.merge(&r),
            Err(e) => rec.error("worker panic".to_owned(), e.to_string()),
        }
    }
    let failed = rec.error_count();
    if failed > 0 {
        return Err(BenchError::Preload {
            failed,
            objects: total,
            summary: format_errors(&rec.errors, &rec.error_examples),
        });
    }
    Ok(PreloadReport {
        objects: total,
        concurrency: config.preload_concurrency,
        bytes: objects.iter().map(|(_, s)| s).sum(),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Bounds one client operation by [`REQUEST_TIMEOUT`]; the caller drops the connection on
/// [`OpError::Timeout`], since the abandoned request may still be in flight on it.
async fn timed<T>(operation: impl Future<Output = Result<T, OpError>>) -> Result<T, OpError> {
    tokio::time::timeout(REQUEST_TIMEOUT, operation)
        .await
        .unwrap_or(Err(OpError::Timeout))
}

/// State of a `list` worker across pages.
#[derive(Default)]
struct ListPass {
    token: Option<String>,
    keys: u64,
}

/// What one operation did: its kind, payload bytes and items returned.
type OpOutcome = Result<(&'static str, u64, u64), OpError>;

async fn worker(shared: Arc<Shared>, worker_id: u64) -> WorkerResult {
    let config = &shared.config;
    let mut s3 = S3Client::new(Arc::clone(&shared.client));
    let mut rng = Rng::new(config.seed ^ mix64(worker_id + 1));
    let mut measured = Recorder::default();
    let mut warmup = Recorder::default();
    let mut sequence = 0u64;
    let mut list_pass = ListPass::default();
    loop {
        let started = Instant::now();
        if started >= shared.end {
            break;
        }
        let outcome: OpOutcome = match config.workload {
            Workload::Put => {
                let key = format!("{}put/{worker_id}-{sequence}", config.prefix);
                sequence += 1;
                let size = config.size.sample(&mut rng);
                put(&mut s3, key, size).await
            }
            Workload::Get => get_random(&mut s3, &shared, &mut rng).await,
            Workload::Mixed => {
                if rng.unit_f64() < config.read_ratio {
                    get_random(&mut s3, &shared, &mut rng).await
                } else {
                    let index = rng.below(shared.objects.len() as u64) as usize;
                    let (key, size) = shared.objects[index].clone();
                    put(&mut s3, key, size).await
                }
            }
            Workload::Delete => {
                let index = shared.next_delete.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((key, _)) = shared.objects.get(index) else {
                    break;
                };
                timed(s3.delete_object(key))
                    .await
                    .map(|()| ("DELETE", 0, 0))
            }
            Workload::List => list_page(&mut s3, &shared, &mut list_pass).await,
            Workload::Multipart => {
                let key = format!("{}mpu/{worker_id}-{sequence}", config.prefix);
                sequence += 1;
                let size = config.size.sample(&mut rng);
                let recorder = if started >= shared.measure_start {
                    &mut measured
                } else {
                    &mut warmup
                };
                multipart(&mut s3, key, size, config.part_size_bytes, recorder).await
            }
        };
        let latency = started.elapsed();
        let recorder = if started >= shared.measure_start {
            &mut measured
        } else {
            &mut warmup
        };
        match outcome {
            Ok((op, bytes, items)) => {
                shared.live.ops.fetch_add(1, Ordering::Relaxed);
                shared.live.bytes.fetch_add(bytes, Ordering::Relaxed);
                recorder.success(op, latency, bytes, items);
            }
            Err(e) => {
                if matches!(e, OpError::Timeout) {
                    s3.disconnect();
                }
                shared.live.errors.fetch_add(1, Ordering::Relaxed);
                recorder.error(e.kind(), e.to_string());
            }
        }
    }
    // Warmup latencies are discarded; only its errors are reported.
    warmup.ops.clear();
    WorkerResult {
        measured,
        warmup,
        connects: s3.connects(),
    }
}

async fn put(s3: &mut S3Client, key: String, size: u64) -> OpOutcome {
    let body = Content::new(key.as_bytes(), size).bytes();
    timed(s3.put_object(&key, body))
        .await
        .map(|()| ("PUT", size, 0))
}

async fn get_random(s3: &mut S3Client, shared: &Shared, rng: &mut Rng) -> OpOutcome {
    let (key, size) = &shared.objects[rng.below(shared.objects.len() as u64) as usize];
    let content = Content::new(key.as_bytes(), *size);
    let expected = shared.config.verify.then_some(&content);
    timed(s3.get_object(key, expected))
        .await
        .map(|bytes| ("GET", bytes, 0))
}

async fn list_page(s3: &mut S3Client, shared: &Shared, pass: &mut ListPass) -> OpOutcome {
    let prefix = format!("{}obj/", shared.config.prefix);
    let token = pass.token.take();
    let page = match timed(s3.list_page(&prefix, token.as_deref(), LIST_PAGE_KEYS)).await {
        Ok(page) => page,
        Err(e) => {
            *pass = ListPass::default();
            return Err(e);
        }
    };
    pass.keys += page.keys;
    pass.token = page.next_token;
    if pass.token.is_none() {
        let keys = std::mem::take(&mut pass.keys);
        let expected = shared.objects.len() as u64;
        if keys != expected {
            return Err(OpError::Protocol(format!(
                "a full listing pass returned {keys} keys, expected {expected}"
            )));
        }
    }
    Ok(("LIST", 0, page.keys))
}

async fn multipart(
    s3: &mut S3Client,
    key: String,
    size: u64,
    part_size_bytes: u64,
    recorder: &mut Recorder,
) -> OpOutcome {
    let content = Content::new(key.as_bytes(), size);
    let upload_id = timed(s3.create_multipart(&key)).await?;
    let mut parts = Vec::new();
    let mut offset = 0;
    let mut number = 1u32;
    while offset < size || number == 1 {
        let len = part_size_bytes.min(size - offset);
        let body = content.range(offset, len);
        let started = Instant::now();
        let etag = timed(s3.upload_part(&key, &upload_id, number, body)).await?;
        recorder.success("PART", started.elapsed(), len, 0);
        parts.push((number, etag));
        offset += len;
        number += 1;
        if len == 0 {
            break;
        }
    }
    timed(s3.complete_multipart(&key, &upload_id, &parts))
        .await
        .map(|()| ("MULTIPART", size, 0))
}

async fn progress_loop(shared: Arc<Shared>, start: Instant) {
    let live = &shared.live;
    let tty = std::io::stderr().is_terminal();
    let mut last_ops = 0;
    let mut last_bytes = 0;
    let mut ticker = tokio::time::interval(PROGRESS_PERIOD);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if live.done.load(Ordering::Relaxed) {
            break;
        }
        let ops = live.ops.load(Ordering::Relaxed);
        let bytes = live.bytes.load(Ordering::Relaxed);
        let now = Instant::now();
        let phase = if now < shared.measure_start {
            "warmup"
        } else {
            "run"
        };
        let line = format!(
            "[{:>6.1}s {phase:>6}] {:>9.0} ops/s {:>9.1} MB/s  errors {}",
            now.duration_since(start).as_secs_f64(),
            (ops - last_ops) as f64 / PROGRESS_PERIOD.as_secs_f64(),
            (bytes - last_bytes) as f64 / BYTES_PER_MB / PROGRESS_PERIOD.as_secs_f64(),
            live.errors.load(Ordering::Relaxed)
        );
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{line}")
        } else {
            writeln!(err, "{line}")
        };
        last_ops = ops;
        last_bytes = bytes;
    }
    if tty {
        eprintln!();
    }
}

/// `http 503 SlowDown: 2, transport: 1 (e.g. transport: connect ...)`.
pub fn format_errors(
    errors: &BTreeMap<String, u64>,
    examples: &BTreeMap<String, String>,
) -> String {
    errors
        .iter()
        .map(|(kind, count)| match examples.get(kind) {
            Some(example) => format!("{kind}: {count} (e.g. {example})"),
            None => format!("{kind}: {count}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}
