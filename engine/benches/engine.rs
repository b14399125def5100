//! One-shard engine benchmarks: a small CLI, run in release with
//! `cargo bench -p leofs-engine --bench engine -- <workload> [options]`.
//!
//! Workloads (results printed one line each, figures in MB/s = 10^6 bytes/s):
//! - `put1m`    1 MiB puts for `--seconds` or `--gib`, `--writers` concurrent tasks, `--sync`.
//! - `put4k`    4 KiB durable puts with 1, 16, 64, 256 concurrent writers (`--writer-list`):
//!   puts/s and latency percentiles.
//! - `get`      4 KiB gets from the cache and uncached (cache_bytes = 0), 1 MiB gets.
//! - `recovery` builds `--records` small records, drops the engine without close, times the
//!   replaying open (records/s) and the open from a checkpoint; reports index memory per entry
//!   from `stats()` and from the RSS delta of the open (/proc/self/statm).
//! - `all`      every workload above in turn.
//!
//! Options: `--dir D` (parent of the temp dir; default /work/tmp, must support O_DIRECT),
//! `--seconds S`, `--gib G`, `--writers N`, `--sync always|none|batch-us:N`, `--records N`,
//! `--segment-mib N` (segment size for put1m/put4k; default: the engine's default),
//! `--hashed-keys` (recovery: keys in random order instead of log order within a partition).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use leofs_engine::{Engine, EngineConfig, PutValue, SyncPolicy};

/// Bytes in a MiB.
const MIB: u64 = 1024 * 1024;
/// Default duration of a timed phase in seconds.
const DEFAULT_SECONDS: f64 = 10.0;
/// Default record count for the recovery benchmark.
const DEFAULT_RECORDS: u64 = 1_000_000;
/// Writer counts of the 4 KiB durable put benchmark.
const DEFAULT_WRITER_LIST: [usize; 4] = [1, 16, 64, 256];
/// Concurrent writers of the 1 MiB put benchmark.
const DEFAULT_PUT1M_WRITERS: usize = 16;
/// 4 KiB objects preloaded for the get benchmark.
const GET_SMALL_OBJECTS: u64 = 50_000;
/// 1 MiB objects preloaded for the get benchmark.
const GET_LARGE_OBJECTS: u64 = 512;
/// Concurrent readers in the get benchmark.
const GET_READERS: usize = 32;
/// Concurrent loaders used to fill the store before a read or recovery benchmark.
const LOADERS: usize = 64;
/// Body of the recovery records.
const RECOVERY_BODY_BYTES: usize = 100;
/// Histogram range: 1 µs to 60 s, 3 significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;

type BenchRuntime = monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>;

#[derive(Clone, Debug)]
struct Options {
    dir: PathBuf,
    seconds: f64,
    gib: Option<f64>,
    writers: Option<usize>,
    writer_list: Vec<usize>,
    sync: SyncPolicy,
    records: u64,
    segment_mib: Option<u64>,
    hashed_keys: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: cargo bench -p leofs-engine --bench engine -- <put1m|put4k|get|recovery|all>... \
         [--dir D] [--seconds S] [--gib G] [--writers N] [--writer-list 1,16,64,256] \
         [--sync always|none|batch-us:N] [--records N] [--segment-mib N] [--hashed-keys]"
    );
    std::process::exit(2)
}

fn parse_sync(text: &str) -> SyncPolicy {
    match text {
        "always" => SyncPolicy::Always,
        "none" => SyncPolicy::NoneUnsafe,
        other => match other
            .strip_prefix("batch-us:")
            .and_then(|us| us.parse().ok())
        {
            Some(us) => SyncPolicy::BatchWindow(Duration::from_micros(us)),
            None => usage(),
        },
    }
}

fn parse_args() -> (Vec<String>, Options) {
    let mut workloads = Vec::new();
    let mut options = Options {
        dir: PathBuf::from("/work/tmp"),
        seconds: DEFAULT_SECONDS,
        gib: None,
        writers: None,
        writer_list: DEFAULT_WRITER_LIST.to_vec(),
        sync: SyncPolicy::Always,
        records: DEFAULT_RECORDS,
        segment_mib: None,
        hashed_keys: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            // cargo bench appends --bench to every bench binary.
            "--bench" => {}
            "--dir" => options.dir = PathBuf::from(value()),
            "--seconds" => options.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--gib" => options.gib = Some(value().parse().unwrap_or_else(|_| usage())),
            "--writers" => options.writers = Some(value().parse().unwrap_or_else(|_| usage())),
            "--writer-list" => {
                options.writer_list = value()
                    .split(',')
                    .map(|w| w.parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--sync" => options.sync = parse_sync(&value()),
            "--records" => options.records = value().parse().unwrap_or_else(|_| usage()),
            "--segment-mib" => {
                options.segment_mib = Some(value().parse().unwrap_or_else(|_| usage()))
            }
            "--hashed-keys" => options.hashed_keys = true,
            "put1m" | "put4k" | "get" | "recovery" | "all" => workloads.push(arg),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    if workloads.is_empty() {
        usage();
    }
    (workloads, options)
}

fn runtime() -> BenchRuntime {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(4096)
        .enable_timer()
        .build()
        .expect("io_uring runtime")
}

fn bench_dir(options: &Options) -> tempfile::TempDir {
    std::fs::create_dir_all(&options.dir).expect("bench dir");
    tempfile::Builder::new()
        .prefix("leofs-engine-bench-")
        .tempdir_in(&options.dir)
        .expect("tempdir")
}

fn config(dir: &Path, sync: SyncPolicy) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.sync = sync;
    config.background_compaction = false;
    config.checkpoint_interval = Duration::from_secs(3600);
    config
}

/// Applies `--segment-mib` to a configuration.
fn sized(mut config: EngineConfig, options: &Options) -> EngineConfig {
    if let Some(mib) = options.segment_mib {
        config.segment_size_bytes = mib * MIB;
    }
    config
}

fn body(len: usize, salt: u64) -> Bytes {
    let mut state = salt | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    Bytes::from(bytes)
}

fn value(body: &Bytes) -> PutValue {
    PutValue {
        body: body.clone(),
        ..PutValue::default()
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("histogram")
}

fn latency_summary(h: &Histogram<u64>) -> String {
    format!(
        "p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    )
}

fn sync_name(sync: SyncPolicy) -> String {
    match sync {
        SyncPolicy::Always => "always".into(),
        SyncPolicy::NoneUnsafe => "none(UNSAFE)".into(),
        SyncPolicy::BatchWindow(w) => format!("batch({} µs)", w.as_micros()),
    }
}

/// Runs `writers` tasks that put `len`-byte bodies under fresh keys until `deadline` or until
/// `bytes_max` bytes were acknowledged; returns (puts, bytes, elapsed, latency histogram).
async fn put_load(
    engine: &Engine,
    writers: usize,
    len: usize,
    deadline: Instant,
    bytes_max: u64,
) -> (u64, u64, Duration, Histogram<u64>) {
    let payload = body(len, 42);
    let done_puts = Rc::new(Cell::new(0u64));
    let done_bytes = Rc::new(Cell::new(0u64));
    let hist = Rc::new(RefCell::new(histogram()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let engine = engine.clone();
            let payload = payload.clone();
            let (done_puts, done_bytes, hist) =
                (done_puts.clone(), done_bytes.clone(), hist.clone());
            monoio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline && done_bytes.get() < bytes_max {
                    let key = format!("w{w:03}/{i:010}");
                    let t = Instant::now();
                    engine
                        .put((i % 64) as u32, key.as_bytes(), value(&payload))
                        .await
                        .expect("put");
                    let _ = hist
                        .borrow_mut()
                        .record(t.elapsed().as_micros().max(1) as u64);
                    done_puts.set(done_puts.get() + 1);
                    done_bytes.set(done_bytes.get() + len as u64);
                    i += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    let elapsed = started.elapsed();
    let h = hist.borrow().clone();
    (done_puts.get(), done_bytes.get(), elapsed, h)
}

fn bench_put1m(options: &Options) {
    let dir = bench_dir(options);
    let writers = options.writers.unwrap_or(DEFAULT_PUT1M_WRITERS);
    let bytes_max = options
        .gib
        .map_or(u64::MAX, |g| (g * (1u64 << 30) as f64) as u64);
    let seconds = if options.gib.is_some() {
        3600.0
    } else {
        options.seconds
    };
    let sync = options.sync;
    runtime().block_on(async {
        let engine = Engine::open(sized(config(dir.path(), sync), options)).await.expect("open");
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let (puts, bytes, elapsed, h) = put_load(&engine, writers, MIB as usize, deadline, bytes_max).await;
        let stats = engine.stats();
        println!(
            "put1m writers={writers} sync={}: {puts} puts, {:.0} MiB in {:.2} s = {:.1} MB/s ({:.1} MiB/s); \
             latency {}; {} batches, {} syncs",
            sync_name(sync),
            bytes as f64 / MIB as f64,
            elapsed.as_secs_f64(),
            bytes as f64 / elapsed.as_secs_f64() / 1e6,
            bytes as f64 / elapsed.as_secs_f64() / MIB as f64,
            latency_summary(&h),
            stats.batches_written,
            stats.syncs
        );
        engine.close().await.expect("close");
    });
}

fn bench_put4k(options: &Options) {
    for &writers in &options.writer_list {
        let dir = bench_dir(options);
        let sync = options.sync;
        runtime().block_on(async {
            let engine = Engine::open(sized(config(dir.path(), sync), options))
                .await
                .expect("open");
            let deadline = Instant::now() + Duration::from_secs_f64(options.seconds);
            let (puts, _, elapsed, h) = put_load(&engine, writers, 4096, deadline, u64::MAX).await;
            let stats = engine.stats();
            println!(
                "put4k writers={writers} sync={}: {:.0} puts/s ({puts} in {:.2} s); latency {}; \
                 {:.1} records/batch, {} syncs",
                sync_name(sync),
                puts as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64(),
                latency_summary(&h),
                puts as f64 / stats.batches_written.max(1) as f64,
                stats.syncs
            );
            engine.close().await.expect("close");
        });
    }
}

/// Puts `count` objects of `len` bytes under `prefix` with [`LOADERS`] concurrent tasks.
/// Name of the `i`th benchmark object: `prefix/` and `i` as 12 decimal digits (log order is key
/// order within a partition), or with `hashed` a 64-bit hash of `i` in hex (random order).
fn object_key(prefix: &str, i: u64, hashed: bool) -> String {
    if hashed {
        format!("{prefix}/{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    } else {
        format!("{prefix}/{i:012}")
    }
}

async fn load(engine: &Engine, prefix: &str, count: u64, len: usize, hashed: bool) {
    let payload = body(len, 7);
    let next = Rc::new(Cell::new(0u64));
    let tasks: Vec<_> = (0..LOADERS)
        .map(|_| {
            let (engine, payload, next, prefix) = (
                engine.clone(),
                payload.clone(),
                next.clone(),
                prefix.to_string(),
            );
            monoio::spawn(async move {
                loop {
                    let i = next.get();
                    if i >= count {
                        break;
                    }
                    next.set(i + 1);
                    let key = object_key(&prefix, i, hashed);
                    engine
                        .put((i % 64) as u32, key.as_bytes(), value(&payload))
                        .await
                        .expect("load put");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
}

/// Random gets of keys `prefix/0..count` by [`GET_READERS`] tasks for `seconds`.
async fn get_load(
    engine: &Engine,
    prefix: &str,
    count: u64,
    seconds: f64,
) -> (u64, u64, Duration, Histogram<u64>) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let hist = Rc::new(RefCell::new(histogram()));
    let ops = Rc::new(Cell::new(0u64));
    let bytes = Rc::new(Cell::new(0u64));
    let started = Instant::now();
    let tasks: Vec<_> = (0..GET_READERS)
        .map(|r| {
            let (engine, hist, ops, bytes, prefix) = (
                engine.clone(),
                hist.clone(),
                ops.clone(),
                bytes.clone(),
                prefix.to_string(),
            );
            monoio::spawn(async move {
                let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ r as u64;
                while Instant::now() < deadline {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let i = state % count;
                    let key = object_key(&prefix, i, false);
                    let t = Instant::now();
                    let v = engine
                        .get((i % 64) as u32, key.as_bytes())
                        .await
                        .expect("get")
                        .expect("present");
                    let _ = hist
                        .borrow_mut()
                        .record(t.elapsed().as_micros().max(1) as u64);
                    ops.set(ops.get() + 1);
                    bytes.set(bytes.get() + v.body.len() as u64);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    let h = hist.borrow().clone();
    (ops.get(), bytes.get(), started.elapsed(), h)
}

fn print_get(
    name: &str,
    (ops, bytes, elapsed, h): (u64, u64, Duration, Histogram<u64>),
    engine: &Engine,
) {
    let stats = engine.stats();
    println!(
        "{name} readers={GET_READERS}: {:.0} ops/s, {:.1} MB/s; latency {}; cache hits {} misses {}",
        ops as f64 / elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / 1e6,
        latency_summary(&h),
        stats.cache_hits,
        stats.cache_misses
    );
}

fn bench_get(options: &Options) {
    let dir = bench_dir(options);
    let seconds = options.seconds;
    let mut cached = config(dir.path(), SyncPolicy::Always);
    cached.cache_bytes = 512 * MIB;
    runtime().block_on(async {
        let engine = Engine::open(cached.clone()).await.expect("open");
        let t = Instant::now();
        load(&engine, "small", GET_SMALL_OBJECTS, 4096, false).await;
        load(&engine, "large", GET_LARGE_OBJECTS, MIB as usize, false).await;
        eprintln!("get: loaded in {:.1?}", t.elapsed());
        // Warm the cache with one pass, then measure.
        let _ = get_load(&engine, "small", GET_SMALL_OBJECTS, seconds.min(3.0)).await;
        print_get(
            "get4k cached",
            get_load(&engine, "small", GET_SMALL_OBJECTS, seconds).await,
            &engine,
        );
        engine.close().await.expect("close");
    });
    let mut uncached = cached;
    uncached.cache_bytes = 0;
    runtime().block_on(async {
        let engine = Engine::open(uncached).await.expect("open");
        print_get(
            "get4k uncached",
            get_load(&engine, "small", GET_SMALL_OBJECTS, seconds).await,
            &engine,
        );
        print_get(
            "get1m uncached",
            get_load(&engine, "large", GET_LARGE_OBJECTS, seconds).await,
            &engine,
        );
        engine.close().await.expect("close");
    });
}

/// Resident set size of this process in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm rss");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

/// Hidden workload run in a fresh process by `recovery`: opens an existing directory, so the
/// RSS delta of the open is the index alone (not memory the allocator kept from the build).
const OPEN_ONLY: &str = "--open-only";

fn bench_recovery(options: &Options) {
    let dir = bench_dir(options);
    let records = options.records;
    let mut build = config(dir.path(), SyncPolicy::NoneUnsafe);
    build.cache_bytes = 0;
    runtime().block_on(async {
        let empty = bench_dir(options);
        let t = Instant::now();
        let engine = Engine::open(config(empty.path(), SyncPolicy::Always))
            .await
            .expect("open empty");
        println!(
            "open of an empty directory: {:.3} s",
            t.elapsed().as_secs_f64()
        );
        engine.close().await.expect("close");
    });
    let t = Instant::now();
    runtime().block_on(async {
        let engine = Engine::open(build.clone()).await.expect("open");
        load(
            &engine,
            "obj",
            records,
            RECOVERY_BODY_BYTES,
            options.hashed_keys,
        )
        .await;
        // Dropped without close: no checkpoint, so the next open replays the whole log.
    });
    eprintln!("recovery: built {records} records in {:.1?}", t.elapsed());
    for ckpt in std::fs::read_dir(dir.path().join("index"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_file(ckpt.path());
    }
    for phase in ["replay", "checkpoint"] {
        let status = std::process::Command::new(std::env::current_exe().expect("current_exe"))
            .arg(OPEN_ONLY)
            .arg(dir.path())
            .arg(phase)
            .status()
            .expect("spawn the open-only process");
        assert!(status.success(), "open-only process failed: {status}");
    }
}

/// Opens `dir` (replaying the log or loading a checkpoint), reports time and memory, closes
/// (which writes the checkpoint the next phase loads).
fn open_only(dir: &Path, phase: &str) {
    runtime().block_on(async {
        let rss_before = rss_bytes();
        let t = Instant::now();
        let engine = Engine::open(config(dir, SyncPolicy::Always)).await.expect("open");
        let elapsed = t.elapsed();
        let rss_delta = rss_bytes().saturating_sub(rss_before);
        let stats = engine.stats();
        let entries = stats.live_records + stats.tombstones;
        println!(
            "open ({phase}): {:.3} s, {} records replayed = {:.0} records/s, {entries} index entries",
            elapsed.as_secs_f64(),
            stats.replayed_records,
            stats.replayed_records as f64 / elapsed.as_secs_f64(),
        );
        println!(
            "index memory ({phase}): stats {} bytes/entry ({:.1} MiB); RSS delta of the open {:.1} bytes/entry ({:.1} MiB)",
            stats.index_bytes_per_entry,
            stats.index_bytes as f64 / MIB as f64,
            rss_delta as f64 / entries.max(1) as f64,
            rss_delta as f64 / MIB as f64
        );
        let t = Instant::now();
        engine.close().await.expect("close");
        println!("close with checkpoint ({phase}): {:.3} s", t.elapsed().as_secs_f64());
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(OPEN_ONLY) && args.len() == 4 {
        open_only(Path::new(&args[2]), &args[3]);
        return;
    }
    let (workloads, options) = parse_args();
    for workload in &workloads {
        match workload.as_str() {
            "put1m" => bench_put1m(&options),
            "put4k" => bench_put4k(&options),
            "get" => bench_get(&options),
            "recovery" => bench_recovery(&options),
            "all" => {
                bench_put1m(&options);
                bench_put4k(&options);
                bench_get(&options);
                bench_recovery(&options);
            }
            _ => usage(),
        }
    }
}
