//! The human-readable report: a header saying what was measured and how, one table row per
//! operation kind, and every error by kind.

use std::fmt::Write as _;

use crate::bench::{Report, format_errors};
use crate::size::format_size;
use crate::stats::BYTES_PER_MB;

/// Renders `report` as the table printed on stdout.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}: {} workload against {} bucket {}",
        report.tool,
        report.version,
        serde_json::to_value(report.workload)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        report.endpoint,
        report.bucket
    );
    let mut setup = format!(
        "size {}, concurrency {}, {} client thread(s), {:.1} s measured after {:.1} s warmup",
        report.size, report.concurrency, report.threads, report.duration_s, report.warmup_s
    );
    if let Some(ratio) = report.read_ratio {
        let _ = write!(setup, ", read ratio {ratio}");
    }
    if let Some(part) = report.part_size_bytes {
        let _ = write!(setup, ", part size {}", format_size(part));
    }
    let _ = writeln!(out, "{setup}");
    let _ = writeln!(
        out,
        "PUT payload: {}; reads: {}; {} connection(s) opened",
        report.payload_signing, report.verification, report.connections
    );
    if let Some(preload) = &report.preload {
        let _ = writeln!(
            out,
            "preload: {} objects, {:.1} MB in {:.1} s at concurrency {} (not measured)",
            preload.objects,
            preload.bytes as f64 / BYTES_PER_MB,
            preload.elapsed_s,
            preload.concurrency
        );
    }
    let _ = writeln!(
        out,
        "\n{:<10} {:>9} {:>10} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "op", "ops", "ops/s", "MB/s", "items/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for r in &report.results {
        let items = if r.items > 0 {
            format!("{:.0}", r.items_per_s)
        } else {
            "-".to_owned()
        };
        let l = &r.latency_ms;
        let _ = writeln!(
            out,
            "{:<10} {:>9} {:>10.1} {:>9.2} {:>10} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            r.op, r.ops, r.ops_per_s, r.mb_per_s, items, l.p50, l.p90, l.p99, l.p999, l.max
        );
    }
    if report.results.is_empty() {
        let _ = writeln!(out, "(no successful operation in the measured phase)");
    }
    let measured: u64 = report.errors.values().sum();
    let _ = writeln!(
        out,
        "\nerrors (measured phase): {}",
        if measured == 0 {
            "none".to_owned()
        } else {
            format!(
                "{measured}: {}",
                format_errors(&report.errors, &report.error_examples)
            )
        }
    );
    let warmup: u64 = report.warmup_errors.values().sum();
    if warmup > 0 {
        let _ = writeln!(
            out,
            "errors (warmup): {warmup}: {}",
            format_errors(&report.warmup_errors, &report.error_examples)
        );
    }
    out
}
