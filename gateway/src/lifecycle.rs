//! The lifecycle worker (shard/VERSIONING.md §10): on every storage core, a pass every
//! [`LifecycleSettings::pass_interval`] over the partitions the core is the first replica of
//! (one decider per partition, so the cluster acts once per object), for every bucket with
//! lifecycle rules. It reads the core's own index (no record read) and applies the rules:
//! - Expiration (days, date) of a key's current version: a delete marker (versioning enabled
//!   or suspended) or a delete (never versioned), written only while that version is still
//!   the latest (`WriteCondition::if_latest`, decided by the partition's first replica);
//! - NoncurrentVersionExpiration: noncurrent versions deleted for good once they have been
//!   noncurrent for the days (since the next newer version was written), the newest
//!   `NewerNoncurrentVersions` kept;
//! - ExpiredObjectDeleteMarker: a marker that is its key's only version is deleted;
//! - AbortIncompleteMultipartUpload: an upload initiated that many days ago is aborted.
//!
//! Changes are throttled ([`LifecycleSettings::actions_per_second_max`] per core) and
//! counted (`leofs_shard::metrics::LifecycleMetrics`, in `/metrics` and `leofs-adm status`). A "day" is [`LifecycleSettings::day`] (tests shorten it).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

use leofs_manager::Bucket;
use leofs_manager::lifecycle::{Expiration, LifecycleRule, due_after};
use leofs_shard::metrics::LifecycleMetrics;
use leofs_shard::{Hlc, ScanEntry, Shard, ShardError, WriteCondition};

use crate::error::GatewayError;
use crate::layout::{
    BucketId, VersionRef, Versioning, bucket_id, bucket_version_prefix, delete_marker,
    is_delete_marker, object_prefix, parse_version_key, split_upload_suffix, upload_prefix,
};
use crate::store::Ctx;

/// Index entries read from a partition at a time.
const SCAN_PAGE_KEYS: usize = 1000;

/// How the lifecycle worker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecycleSettings {
    /// The length of a lifecycle "day": rules count days in it, and expiries round up to a
    /// multiple of it since the Unix epoch (S3's midnight UTC). 24 h; tests shorten it.
    pub day: Duration,
    /// Time between two passes of a core over its partitions.
    pub pass_interval: Duration,
    /// Most changes (markers, deletes, aborts) one core makes per second.
    pub actions_per_second_max: u32,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        Self {
            day: Duration::from_secs(86_400),
            pass_interval: Duration::from_secs(3600),
            actions_per_second_max: 100,
        }
    }
}

fn count(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// Starts the worker on the calling core (a storage core), with its own handle to the
/// gateway's object operations (for aborting uploads).
pub fn spawn(ctx: Ctx, shard: Shard, settings: LifecycleSettings) {
    monoio::spawn(async move {
        loop {
            monoio::time::sleep(settings.pass_interval).await;
            if shard.is_stopping() {
                return;
            }
            if let Err(e) = pass(&ctx, &shard, &settings).await {
                tracing::warn!(error = %e, core = shard.core_id(), "a lifecycle pass stopped early; the next one resumes");
            }
        }
    });
}

/// One pass over the partitions this core decides for, for every bucket with rules.
async fn pass(ctx: &Ctx, shard: &Shard, settings: &LifecycleSettings) -> Result<(), GatewayError> {
    let buckets: Vec<Bucket> = ctx.manager.with_snapshot(|state| {
        state
            .buckets
            .values()
            .filter(|b| !b.lifecycle.is_empty() && !b.deleting)
            .cloned()
            .collect()
    });
    let metrics = shard.lifecycle_metrics();
    if buckets.is_empty() {
        return Ok(());
    }
    let worker = Worker {
        ctx,
        shard,
        settings,
        metrics,
        now_ms: leofs_engine_wall_ms(),
    };
    for partition in shard.partitions_led_here() {
        for bucket in &buckets {
            worker.objects(partition, bucket).await?;
            worker.uploads(partition, bucket).await?;
        }
        if shard.is_stopping() {
            return Ok(());
        }
    }
    count(&metrics.passes);
    Ok(())
}

/// Milliseconds since the Unix epoch, by this node's clock.
fn leofs_engine_wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One version of a key as the worker sees it.
#[derive(Clone, Copy, Debug)]
struct Seen {
    version: VersionRef,
    hlc: Hlc,
    marker: bool,
}

struct Worker<'a> {
    ctx: &'a Ctx,
    shard: &'a Shard,
    settings: &'a LifecycleSettings,
    metrics: &'a LifecycleMetrics,
    now_ms: u64,
}

impl Worker<'_> {
    fn day_ms(&self) -> u64 {
        (self.settings.day.as_millis() as u64).max(1)
    }

    /// Every live record of `partition` under `prefix`, page by page.
    fn scan(&self, partition: u32, prefix: &[u8]) -> Result<Vec<ScanEntry>, ShardError> {
        let mut out: Vec<ScanEntry> = Vec::new();
        loop {
            let after = out.last().map(|e| e.key.clone());
            let page =
                self.shard
                    .scan_local(partition, prefix, after.as_deref(), SCAN_PAGE_KEYS)?;
            let done = page.len() < SCAN_PAGE_KEYS;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// After a change: waits its share of the per-second budget.
    async fn throttle(&self) {
        let per_second = self.settings.actions_per_second_max.max(1);
        monoio::time::sleep(Duration::from_secs(1) / per_second).await;
    }

    /// The rules for the objects of `bucket` in `partition`.
    async fn objects(&self, partition: u32, bucket: &Bucket) -> Result<(), GatewayError> {
        let id = bucket_id(bucket);
        let o_prefix = object_prefix(&id);
        let v_prefix = bucket_version_prefix(id.as_str());
        let mut keys: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
        for entry in self.scan(partition, &o_prefix)? {
            let Some(key) = entry
                .key
                .get(o_prefix.len()..)
                .and_then(|k| std::str::from_utf8(k).ok())
            else {
                continue;
            };
            keys.entry(key.to_owned()).or_default().push(Seen {
                version: VersionRef::Null,
                hlc: entry.hlc,
                marker: is_delete_marker(entry.summary.tag),
            });
        }
        for entry in self.scan(partition, &v_prefix)? {
            let Some((_, key, stamp)) = parse_version_key(&entry.key) else {
                continue;
            };
            keys.entry(key.to_owned()).or_default().push(Seen {
                version: VersionRef::Stamped(stamp),
                hlc: entry.hlc,
                marker: is_delete_marker(entry.summary.tag),
            });
        }
        for (key, mut versions) in keys {
            let rules: Vec<&LifecycleRule> = bucket
                .lifecycle
                .iter()
                .filter(|r| r.matches(&key))
                .collect();
            if rules.is_empty() {
                continue;
            }
            versions.sort_by_key(|v| std::cmp::Reverse(v.hlc));
            self.metrics
                .examined
                .set(self.metrics.examined.get() + versions.len() as u64);
            self.key(&id, &key, &versions, &rules).await?;
        }
        Ok(())
    }

    /// The rules for one key, its versions newest first.
    async fn key(
        &self,
        id: &BucketId,
        key: &str,
        versions: &[Seen],
        rules: &[&LifecycleRule],
    ) -> Result<(), GatewayError> {
        let day_ms = self.day_ms();
        let shard = self.shard.with_levels(id.levels());
        // Noncurrent versions: noncurrent since the next newer version was written.
        let mut deleted = vec![false; versions.len()];
        for rule in rules {
            let Some(noncurrent) = rule.noncurrent else {
                continue;
            };
            for j in 1..versions.len() {
                let rank = (j - 1) as u32;
                let since_ms = versions[j - 1].hlc.physical_us / 1000;
                if deleted[j]
                    || rank < noncurrent.newer_versions_kept
                    || self.now_ms < due_after(since_ms, noncurrent.days, day_ms)
                {
                    continue;
                }
                shard
                    .delete_object_in(id.as_str(), key, id.versioning(), Some(versions[j].version))
                    .await?;
                deleted[j] = true;
                count(&self.metrics.noncurrent_deleted);
                self.throttle().await;
            }
        }
        let current = versions[0];
        if current.marker {
            let alone = deleted.iter().skip(1).all(|d| *d);
            if alone
                && id.versioning() != Versioning::Off
                && rules.iter().any(|r| r.expired_object_delete_marker)
            {
                shard
                    .delete_object_in(id.as_str(), key, id.versioning(), Some(current.version))
                    .await?;
                count(&self.metrics.markers_removed);
                self.throttle().await;
            }
            return Ok(());
        }
        let created_ms = current.hlc.physical_us / 1000;
        let due = rules.iter().filter_map(|r| match r.expiration? {
            Expiration::Days(days) => Some(due_after(created_ms, days, day_ms)),
            Expiration::DateUnixMs(ms) => Some(ms),
        });
        if due.min().is_none_or(|due| self.now_ms < due) {
            return Ok(());
        }
        let expired = match id.versioning() {
            Versioning::Off => shard.expire_object(id.as_str(), key, current.hlc).await,
            versioning => {
                let condition = WriteCondition {
                    if_latest: Some(current.hlc),
                    ..WriteCondition::none()
                };
                match shard
                    .commit_object_in(
                        id.as_str(),
                        key,
                        delete_marker(None),
                        condition,
                        None,
                        versioning,
                    )
                    .await
                {
                    Ok(_) => Ok(true),
                    // The key changed since it was examined: the next pass decides again.
                    Err(ShardError::PreconditionFailed | ShardError::NoSuchObject) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }?;
        if expired {
            count(&self.metrics.expired);
            self.throttle().await;
        }
        Ok(())
    }

    /// The rules for the incomplete multipart uploads of `bucket` in `partition`.
    async fn uploads(&self, partition: u32, bucket: &Bucket) -> Result<(), GatewayError> {
        if !bucket
            .lifecycle
            .iter()
            .any(|r| r.abort_incomplete_multipart_days.is_some())
        {
            return Ok(());
        }
        let id = bucket_id(bucket);
        let prefix = upload_prefix(&id);
        for entry in self.scan(partition, &prefix)? {
            let Some((key, upload_id)) =
                entry.key.get(prefix.len()..).and_then(split_upload_suffix)
            else {
                continue;
            };
            let initiated_ms = entry.hlc.physical_us / 1000;
            let due = bucket
                .lifecycle
                .iter()
                .filter(|r| r.matches(key))
                .filter_map(|r| r.abort_incomplete_multipart_days)
                .map(|days| due_after(initiated_ms, days, self.day_ms()))
                .min();
            if due.is_none_or(|due| self.now_ms < due) {
                continue;
            }
            crate::s3::multipart::abort_upload(self.ctx, &id, key, upload_id).await?;
            count(&self.metrics.uploads_aborted);
            self.throttle().await;
        }
        Ok(())
    }
}
