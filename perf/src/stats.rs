//! Measurements: per-operation latency histograms (hdrhistogram, microseconds), byte and item
//! counts, errors by kind, and the summaries printed at the end of a run.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Significant figures kept by the latency histograms (0.1% resolution).
const HISTOGRAM_SIGFIG: u8 = 3;
/// Highest latency a histogram records without resizing, microseconds (10 minutes).
const HISTOGRAM_MAX_US: u64 = 600_000_000;
/// Bytes in the MB of MB/s (decimal, as disks and networks are rated).
pub const BYTES_PER_MB: f64 = 1_000_000.0;

/// Latencies and counts of one operation kind (e.g. `GET`) as seen by one worker.
#[derive(Clone, Debug)]
pub struct OpRecorder {
    latency_us: Histogram<u64>,
    bytes: u64,
    items: u64,
}

impl OpRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            latency_us: new_histogram(),
            bytes: 0,
            items: 0,
        }
    }

    /// Records one successful operation that moved `bytes` of payload and returned `items`
    /// entries (keys for a listing page, 0 otherwise).
    pub fn record(&mut self, latency: Duration, bytes: u64, items: u64) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.saturating_record(micros);
        self.bytes += bytes;
        self.items += items;
    }

    /// Adds another recorder's measurements to this one.
    pub fn merge(&mut self, other: &OpRecorder) {
        // Both histograms auto-resize, so `add` cannot fail on range.
        let _ = self.latency_us.add(&other.latency_us);
        self.bytes += other.bytes;
        self.items += other.items;
    }

    /// Number of operations recorded.
    pub fn ops(&self) -> u64 {
        self.latency_us.len()
    }

    /// The summary over `elapsed` wall-clock time.
    pub fn summary(&self, op: &str, elapsed: Duration) -> OpSummary {
        let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &self.latency_us;
        let ops = h.len();
        OpSummary {
            op: op.to_owned(),
            ops,
            elapsed_s: elapsed.as_secs_f64(),
            ops_per_s: ops as f64 / secs,
            bytes: self.bytes,
            mb_per_s: self.bytes as f64 / BYTES_PER_MB / secs,
            items: self.items,
            items_per_s: self.items as f64 / secs,
            latency_ms: LatencySummary {
                mean: if ops == 0 { 0.0 } else { h.mean() / 1000.0 },
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                p999: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
            },
        }
    }
}

impl Default for OpRecorder {
    fn default() -> Self {
        Self::new()
    }
}

fn new_histogram() -> Histogram<u64> {
    // Constant bounds (1 <= low, high >= 2 * low, sigfig <= 5): construction cannot fail.
    let mut histogram = Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_SIGFIG)
        .expect("constant histogram bounds are valid");
    histogram.auto(true);
    histogram
}

/// Everything one worker measured, per operation kind, plus its errors.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    /// Per operation kind (`PUT`, `GET`, `DELETE`, `LIST`, `MULTIPART`).
    pub ops: BTreeMap<&'static str, OpRecorder>,
    /// Error counts by kind (`http 503`, `transport`, `verify`, ...).
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each error kind, to show what went wrong.
    pub error_examples: BTreeMap<String, String>,
}

impl Recorder {
    /// Records a success of operation `op`.
    pub fn success(&mut self, op: &'static str, latency: Duration, bytes: u64, items: u64) {
        self.ops
            .entry(op)
            .or_default()
            .record(latency, bytes, items);
    }

    /// Counts one error of kind `kind`; keeps `message` if it is the first of its kind.
    pub fn error(&mut self, kind: String, message: String) {
        self.error_examples.entry(kind.clone()).or_insert(message);
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Adds another worker's measurements.
    pub fn merge(&mut self, other: &Recorder) {
        for (op, rec) in &other.ops {
            self.ops.entry(op).or_default().merge(rec);
        }
        for (kind, count) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += count;
        }
        for (kind, message) in &other.error_examples {
            self.error_examples
                .entry(kind.clone())
                .or_insert_with(|| message.clone());
        }
    }

    /// Total errors.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Latency percentiles, milliseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest operation.
    pub max: f64,
}

/// Throughput and latency of one operation kind over the measured phase.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OpSummary {
    /// Operation kind.
    pub op: String,
    /// Successful operations.
    pub ops: u64,
    /// Measured wall-clock time, seconds.
    pub elapsed_s: f64,
    /// Operations per second.
    pub ops_per_s: f64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Payload MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Entries returned (keys listed); 0 for other operations.
    pub items: u64,
    /// Entries per second.
    pub items_per_s: f64,
    /// Latency percentiles.
    pub latency_ms: LatencySummary,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_latencies() {
        let mut rec = OpRecorder::new();
        for ms in 1..=1000u64 {
            rec.record(Duration::from_millis(ms), 4096, 0);
        }
        let s = rec.summary("GET", Duration::from_secs(2));
        assert_eq!(s.ops, 1000);
        assert!((s.ops_per_s - 500.0).abs() < 1e-9);
        assert!((s.mb_per_s - 1000.0 * 4096.0 / 1e6 / 2.0).abs() < 1e-9);
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.002;
        assert!(close(s.latency_ms.p50, 500.0), "{:?}", s.latency_ms);
        assert!(close(s.latency_ms.p90, 900.0), "{:?}", s.latency_ms);
        assert!(close(s.latency_ms.p99, 990.0), "{:?}", s.latency_ms);
        assert!(close(s.latency_ms.p999, 999.0), "{:?}", s.latency_ms);
        assert!(close(s.latency_ms.max, 1000.0), "{:?}", s.latency_ms);
        assert!(close(s.latency_ms.mean, 500.5), "{:?}", s.latency_ms);
    }

    #[test]
    fn merge_adds_ops_bytes_and_errors() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        a.success("PUT", Duration::from_micros(10), 1, 0);
        b.success("PUT", Duration::from_micros(20), 2, 0);
        b.success("LIST", Duration::from_micros(30), 0, 1000);
        a.error("http 503".into(), "first".into());
        b.error("http 503".into(), "second".into());
        b.error("verify".into(), "bad byte".into());
        a.merge(&b);
        assert_eq!(a.ops["PUT"].ops(), 2);
        assert_eq!(
            a.ops["LIST"].summary("LIST", Duration::from_secs(1)).items,
            1000
        );
        assert_eq!(a.errors["http 503"], 2);
        assert_eq!(a.error_count(), 3);
        assert_eq!(a.error_examples["http 503"], "first");
        assert_eq!(a.error_examples["verify"], "bad byte");
        let put = a.ops["PUT"].summary("PUT", Duration::from_secs(1));
        assert_eq!(put.bytes, 3);
        assert!((put.latency_ms.max - 0.020).abs() < 1e-4);
    }

    #[test]
    fn empty_summary_is_zero_not_nan() {
        let s = OpRecorder::new().summary("GET", Duration::ZERO);
        assert_eq!(s.ops, 0);
        assert_eq!(s.ops_per_s, 0.0);
        assert_eq!(s.latency_ms.mean, 0.0);
    }
}
