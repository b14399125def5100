//! Requests served by one core, by operation and status: counts, bytes in and out, and a
//! latency histogram (time to the answer's head). Kept in the core (no lock, no atomics:
//! only its own thread writes) and read through the node's stats for `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds; one more bucket holds the rest.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 10_000_000,
];

/// What one (operation, status) pair served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestTally {
    /// Requests answered.
    pub requests: u64,
    /// Request body bytes (as declared by Content-Length).
    pub bytes_in: u64,
    /// Answer body bytes (as known when the head was sent).
    pub bytes_out: u64,
    /// Sum of the latencies, in microseconds.
    pub latency_us_sum: u64,
    /// Requests per latency bucket ([`LATENCY_BUCKETS_US`], then the rest).
    pub latency_buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
}

/// The requests of one core, by (operation, HTTP status).
#[derive(Clone, Debug, Default)]
pub struct RequestMetrics {
    tallies: BTreeMap<(&'static str, u16), RequestTally>,
}

impl RequestMetrics {
    /// Counts one request.
    pub fn record(
        &mut self,
        operation: &'static str,
        status: u16,
        latency: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let tally = self.tallies.entry((operation, status)).or_default();
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        tally.requests += 1;
        tally.bytes_in = tally.bytes_in.saturating_add(bytes_in);
        tally.bytes_out = tally.bytes_out.saturating_add(bytes_out);
        tally.latency_us_sum = tally.latency_us_sum.saturating_add(micros);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        tally.latency_buckets[bucket] += 1;
    }

    /// Every (operation, status) pair seen, with its tally.
    pub fn tallies(&self) -> impl Iterator<Item = (&'static str, u16, &RequestTally)> {
        self.tallies
            .iter()
            .map(|((op, status), t)| (*op, *status, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_fall_into_their_buckets() {
        let mut metrics = RequestMetrics::default();
        metrics.record("GetObject", 200, Duration::from_micros(100), 0, 4096);
        metrics.record("GetObject", 200, Duration::from_millis(3), 0, 4096);
        metrics.record("GetObject", 200, Duration::from_secs(60), 0, 1);
        metrics.record("PutObject", 503, Duration::from_micros(300), 10, 0);
        let tallies: Vec<_> = metrics.tallies().collect();
        assert_eq!(tallies.len(), 2);
        let (op, status, get) = tallies[0];
        assert_eq!(
            (op, status, get.requests, get.bytes_out),
            ("GetObject", 200, 3, 8193)
        );
        assert_eq!(get.latency_buckets[0], 1);
        assert_eq!(get.latency_buckets[4], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(get.latency_buckets[LATENCY_BUCKETS_US.len()], 1);
        assert_eq!(tallies[1].2.latency_buckets[1], 1);
    }
}

/// The gateway's object cache on one core (kept by the gateway, read with the core's stats):
/// what it holds and what it did. Only the core's own thread writes it.
#[derive(Debug, Default)]
pub struct ObjectCacheMetrics {
    /// Reads answered from the cache (its version confirmed current by the replicas).
    pub hits: std::cell::Cell<u64>,
    /// Reads of objects it did not hold.
    pub misses: std::cell::Cell<u64>,
    /// Reads of objects it held in an older version than the replicas' (dropped, read again).
    pub stale: std::cell::Cell<u64>,
    /// Digest reads made to confirm a version held (in memory or on disk) as the newest.
    pub revalidations: std::cell::Cell<u64>,
    /// Entries dropped to make room.
    pub evictions: std::cell::Cell<u64>,
    /// Entries held now.
    pub entries: std::cell::Cell<u64>,
    /// Bytes held now (bodies and metadata).
    pub bytes: std::cell::Cell<u64>,
    /// Reads answered from the disk cache (gateway-only nodes), the version confirmed.
    pub disk_hits: std::cell::Cell<u64>,
    /// Disk cache entries found damaged on read (checksum, lengths, key) and dropped.
    pub disk_dropped: std::cell::Cell<u64>,
    /// Entries not written to the disk cache because its writer's queue was full.
    pub disk_skipped: std::cell::Cell<u64>,
    /// Disk cache writes that failed (a full or failing cache disk).
    pub disk_write_failures: std::cell::Cell<u64>,
    /// Entries the disk cache holds now.
    pub disk_entries: std::cell::Cell<u64>,
    /// Disk space the disk cache's files take now (whole 4 KiB blocks).
    pub disk_bytes: std::cell::Cell<u64>,
}

impl ObjectCacheMetrics {
    /// Adds one to `counter`.
    pub fn count(counter: &std::cell::Cell<u64>) {
        counter.set(counter.get() + 1);
    }

    /// The figures now.
    pub fn snapshot(&self) -> ObjectCacheStats {
        ObjectCacheStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            stale: self.stale.get(),
            revalidations: self.revalidations.get(),
            evictions: self.evictions.get(),
            entries: self.entries.get(),
            bytes: self.bytes.get(),
            disk_hits: self.disk_hits.get(),
            disk_dropped: self.disk_dropped.get(),
            disk_skipped: self.disk_skipped.get(),
            disk_write_failures: self.disk_write_failures.get(),
            disk_entries: self.disk_entries.get(),
            disk_bytes: self.disk_bytes.get(),
        }
    }
}

/// What one core's lifecycle worker did (the gateway's `lifecycle` module; only the core's
/// own thread writes it).
#[derive(Debug, Default)]
pub struct LifecycleMetrics {
    /// Passes over the core's partitions.
    pub passes: std::cell::Cell<u64>,
    /// Versions (and delete markers) examined.
    pub examined: std::cell::Cell<u64>,
    /// Current versions expired (a delete marker added, or deleted when never versioned).
    pub expired: std::cell::Cell<u64>,
    /// Noncurrent versions deleted for good.
    pub noncurrent_deleted: std::cell::Cell<u64>,
    /// Delete markers that were their key's only version, deleted.
    pub markers_removed: std::cell::Cell<u64>,
    /// Incomplete multipart uploads aborted.
    pub uploads_aborted: std::cell::Cell<u64>,
}

impl LifecycleMetrics {
    /// The figures now.
    pub fn snapshot(&self) -> LifecycleStats {
        LifecycleStats {
            passes: self.passes.get(),
            examined: self.examined.get(),
            expired: self.expired.get(),
            noncurrent_deleted: self.noncurrent_deleted.get(),
            markers_removed: self.markers_removed.get(),
            uploads_aborted: self.uploads_aborted.get(),
        }
    }
}

/// [`LifecycleMetrics`] as read from another thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LifecycleStats {
    /// See [`LifecycleMetrics::passes`].
    pub passes: u64,
    /// See [`LifecycleMetrics::examined`].
    pub examined: u64,
    /// See [`LifecycleMetrics::expired`].
    pub expired: u64,
    /// See [`LifecycleMetrics::noncurrent_deleted`].
    pub noncurrent_deleted: u64,
    /// See [`LifecycleMetrics::markers_removed`].
    pub markers_removed: u64,
    /// See [`LifecycleMetrics::uploads_aborted`].
    pub uploads_aborted: u64,
}

/// [`ObjectCacheMetrics`] as read from another thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectCacheStats {
    /// See [`ObjectCacheMetrics::hits`].
    pub hits: u64,
    /// See [`ObjectCacheMetrics::misses`].
    pub misses: u64,
    /// See [`ObjectCacheMetrics::stale`].
    pub stale: u64,
    /// See [`ObjectCacheMetrics::revalidations`].
    pub revalidations: u64,
    /// See [`ObjectCacheMetrics::evictions`].
    pub evictions: u64,
    /// See [`ObjectCacheMetrics::entries`].
    pub entries: u64,
    /// See [`ObjectCacheMetrics::bytes`].
    pub bytes: u64,
    /// See [`ObjectCacheMetrics::disk_hits`].
    pub disk_hits: u64,
    /// See [`ObjectCacheMetrics::disk_dropped`].
    pub disk_dropped: u64,
    /// See [`ObjectCacheMetrics::disk_skipped`].
    pub disk_skipped: u64,
    /// See [`ObjectCacheMetrics::disk_write_failures`].
    pub disk_write_failures: u64,
    /// See [`ObjectCacheMetrics::disk_entries`].
    pub disk_entries: u64,
    /// See [`ObjectCacheMetrics::disk_bytes`].
    pub disk_bytes: u64,
}
