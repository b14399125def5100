//! `leofs-bench`: drives any S3 endpoint with one workload and prints throughput and latency.
//!
//! Exit status: 0 when every operation succeeded, 2 when any error was counted (the report is
//! still printed), 1 when the run could not start (bad flags, unreachable endpoint, failed
//! preload).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use leofs_perf::bench::{self, BenchConfig, Workload};
use leofs_perf::report::render_table;
use leofs_perf::size::{SizeDist, parse_size};

/// Longest accepted phase (one day).
const MAX_PHASE_SECS: f64 = 86_400.0;

/// An S3 load generator: PUT/GET/mixed/DELETE/LIST/multipart against any S3 endpoint, with
/// verified reads, per-status error counts and hdrhistogram latencies.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// S3 endpoint (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    endpoint: String,
    /// Access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    access_key: String,
    /// Secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: String,
    /// SigV4 region.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Bucket, created if missing.
    #[arg(long, default_value = "leofs-bench")]
    bucket: String,
    /// Workload.
    #[arg(long, value_enum, default_value = "put")]
    workload: Workload,
    /// Object size: `4KiB`, a uniform range `4KiB..1MiB`, or weights `4KiB:9,1MiB:1`.
    #[arg(long, default_value = "4KiB")]
    size: SizeDist,
    /// Operations in flight, one keep-alive connection each.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Client runtime threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Measured phase: `10s`, `500ms`, `2m` or seconds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured phase before it.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Objects preloaded for get, mixed, delete and list.
    #[arg(long, default_value_t = 1000)]
    objects: u64,
    /// PUTs in flight during the preload (not measured).
    #[arg(long, default_value_t = 32)]
    preload_concurrency: usize,
    /// Share of GETs in `mixed`, 0..=1.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Part size of `multipart`.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    part_size: u64,
    /// Sign PUT bodies (SHA-256) instead of sending `x-amz-content-sha256: UNSIGNED-PAYLOAD`.
    #[arg(long)]
    signed_payload: bool,
    /// Do not compare GET bodies with the content written (only for ceiling measurements
    /// against servers that store nothing, e.g. nginx `return 200`); stated in the report.
    #[arg(long)]
    no_verify: bool,
    /// Key prefix of this run (default: a fresh `leofs-bench-XXXXXXXX/`).
    #[arg(long)]
    prefix: Option<String>,
    /// Read the objects a previous run with the same --prefix, --objects, --size and --seed
    /// preloaded, without writing them again (e.g. to measure a cache warmed by that run:
    /// a preload would write new versions).
    #[arg(long, requires = "prefix")]
    no_preload: bool,
    /// Seed for sizes and key choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the full report as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
}

/// Parses `10s`, `500ms`, `2m`, `1h` or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 10s, 500ms, 2m"))?;
    let secs = value * scale;
    if !(0.0..=MAX_PHASE_SECS).contains(&secs) {
        return Err(format!("duration {text:?} must be between 0 and 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The process allocator: with glibc malloc the client itself capped nginx's `return 200` at
/// 62k PUT/s and 45k static 4 KiB GET/s on the 2-core machine; with mimalloc 70k and 61k (see
/// BENCHMARKS.md), so the measured ceilings are the server's, not the client's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leofs-bench: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let threads = args.threads.max(1);
    let config = BenchConfig {
        endpoint: args.endpoint,
        access_key: args.access_key,
        secret_key: args.secret_key,
        region: args.region,
        bucket: args.bucket,
        workload: args.workload,
        size: args.size,
        concurrency: args.concurrency,
        threads,
        duration: args.duration,
        warmup: args.warmup,
        objects: args.objects,
        preload_concurrency: args.preload_concurrency,
        preload: !args.no_preload,
        read_ratio: args.read_ratio,
        part_size_bytes: args.part_size,
        signed_payload: args.signed_payload,
        verify: !args.no_verify,
        prefix: args.prefix.unwrap_or_else(bench::default_prefix),
        seed: args.seed,
        progress: !args.quiet,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let report = runtime.block_on(bench::run(config))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    Ok(if report.total_errors() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("25h").is_err());
    }

    #[test]
    fn flags_parse_into_a_config() {
        let args = Args::try_parse_from([
            "leofs-bench",
            "--access-key",
            "a",
            "--secret-key",
            "s",
            "--workload",
            "mixed",
            "--size",
            "4KiB..1MiB",
            "--part-size",
            "5MiB",
        ])
        .unwrap();
        assert_eq!(args.workload, Workload::Mixed);
        assert_eq!(
            args.size,
            SizeDist::Uniform {
                min_bytes: 4096,
                max_bytes: 1 << 20
            }
        );
        assert_eq!(args.part_size, 5 << 20);
    }
}
