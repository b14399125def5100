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
/// Pause between two pages of a partition's index (the core serves its clients meanwhile).
const PAGE_PAUSE: Duration = Duration::from_millis(1);

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

/// The buckets with lifecycle rules, as the catalog has them now.
fn buckets_with_rules(ctx: &Ctx) -> Vec<Bucket> {
    ctx.manager.with_snapshot(|state| {
        state
            .buckets
            .values()
            .filter(|b| !b.lifecycle.is_empty() && !b.deleting)
            .cloned()
            .collect()
    })
}

/// One pass over the partitions this core decides for, for every bucket with rules. A key,
/// bucket or partition that fails is logged and passed over (the next pass tries it again);
/// the catalog and the ring are read again for each partition, so a long pass follows them.
async fn pass(ctx: &Ctx, shard: &Shard, settings: &LifecycleSettings) -> Result<(), GatewayError> {
    let metrics = shard.lifecycle_metrics();
    if buckets_with_rules(ctx).is_empty() {
        return Ok(());
    }
    let worker = Worker {
        ctx,
        shard,
        settings,
        metrics,
        // The HLC's physical time: the clock every version's stamp was taken from.
        now_ms: shard.now().physical_us / 1000,
    };
    for partition in shard.partitions_led_here() {
        if shard.is_stopping() {
            return Ok(());
        }
        if !shard.leads_partition(partition) {
            continue;
        }
        for bucket in &buckets_with_rules(ctx) {
            if let Err(e) = worker.objects(partition, bucket).await {
                tracing::warn!(error = %e, partition, bucket = %bucket.name, "lifecycle: the bucket's objects in this partition are left to the next pass");
            }
            if let Err(e) = worker.uploads(partition, bucket).await {
                tracing::warn!(error = %e, partition, bucket = %bucket.name, "lifecycle: the bucket's uploads in this partition are left to the next pass");
            }
        }
    }
    count(&metrics.passes);
    Ok(())
}

/// One version of a key as the worker sees it.
#[derive(Clone, Debug)]
struct Seen {
    version: VersionRef,
    hlc: Hlc,
    marker: bool,
    /// The version's size in bytes (0 for a marker).
    size: u64,
    /// Its tags, once read (None: not read; the index does not hold them).
    tags: Option<Vec<(String, String)>>,
    /// With its tags, in a bucket that has had versioning: the stamp of the attribute record
    /// they were read from (None: the version's own).
    attributes: Option<Hlc>,
}

/// Whether `rule` (which matches the key) applies to the version `seen`: a marker is matched by
/// the rules that do not filter on tags or size; a version whose tags are not read yet is taken
/// to carry the rule's.
fn applies(rule: &LifecycleRule, seen: &Seen) -> bool {
    if seen.marker {
        !rule.filters_objects()
    } else {
        rule.applies_to_version(seen.size, seen.tags.as_deref())
    }
}

/// What the rules do to one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Delete this noncurrent version for good.
    DeleteNoncurrent(VersionRef),
    /// Delete this delete marker, the key's only version, while it is the latest.
    RemoveLoneMarker { version: VersionRef, stamp: Hlc },
    /// Expire the current version stamped this, while it is the latest.
    ExpireCurrent { stamp: Hlc },
}

/// The actions `rules` take on a key whose versions are `versions` (newest first) at
/// `now_ms`, with days of `day_ms`.
fn plan(
    versions: &[Seen],
    rules: &[&LifecycleRule],
    versioning: Versioning,
    now_ms: u64,
    day_ms: u64,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let Some(current) = versions.first() else {
        return actions;
    };
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
                || !applies(rule, &versions[j])
                || rank < noncurrent.newer_versions_kept
                || now_ms < due_after(since_ms, noncurrent.days, day_ms)
            {
                continue;
            }
            deleted[j] = true;
            actions.push(Action::DeleteNoncurrent(versions[j].version));
        }
    }
    let created_ms = current.hlc.physical_us / 1000;
    if current.marker {
        // A marker that is its key's only version goes with ExpiredObjectDeleteMarker, or,
        // as in S3, once it is as old as an Expiration in days.
        let alone = deleted.iter().skip(1).all(|d| *d);
        let expired = rules.iter().filter(|r| applies(r, current)).any(|r| {
            r.expired_object_delete_marker
                || matches!(r.expiration, Some(Expiration::Days(days))
                    if now_ms >= due_after(created_ms, days, day_ms))
        });
        if alone && expired && versioning != Versioning::Off {
            actions.push(Action::RemoveLoneMarker {
                version: current.version,
                stamp: current.hlc,
            });
        }
        return actions;
    }
    let due = rules
        .iter()
        .filter(|r| applies(r, current))
        .filter_map(|r| match r.expiration? {
            Expiration::Days(days) => Some(due_after(created_ms, days, day_ms)),
            Expiration::DateUnixMs(ms) => Some(ms),
        })
        .min();
    if due.is_some_and(|due| now_ms >= due) {
        actions.push(Action::ExpireCurrent { stamp: current.hlc });
    }
    actions
}

/// An index entry of a key's version as the worker sees it.
fn seen_of(entry: &ScanEntry) -> Seen {
    Seen {
        version: match parse_version_key(&entry.key) {
            Some((_, _, stamp)) => VersionRef::Stamped(stamp),
            None => VersionRef::Null,
        },
        hlc: entry.hlc,
        marker: is_delete_marker(entry.summary.tag),
        size: entry.summary.size,
        tags: None,
        attributes: None,
    }
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

    /// Every live record of `partition` under `prefix`, page by page (the core serves its
    /// clients between pages).
    async fn scan(&self, partition: u32, prefix: &[u8]) -> Result<Vec<ScanEntry>, ShardError> {
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
            monoio::time::sleep(PAGE_PAUSE).await;
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
        for entry in self.scan(partition, &o_prefix).await? {
            let Some(key) = entry
                .key
                .get(o_prefix.len()..)
                .and_then(|k| std::str::from_utf8(k).ok())
            else {
                continue;
            };
            keys.entry(key.to_owned())
                .or_default()
                .push(seen_of(&entry));
        }
        for entry in self.scan(partition, &v_prefix).await? {
            let Some((_, key, _)) = parse_version_key(&entry.key) else {
                continue;
            };
            keys.entry(key.to_owned())
                .or_default()
                .push(seen_of(&entry));
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
            if let Err(e) = self.key(&id, &key, &versions, &rules).await {
                tracing::warn!(error = %e, bucket = %bucket.name, %key, "lifecycle: the key is left to the next pass");
            }
        }
        Ok(())
    }

    /// The rules for one key: planned on this core's index (`versions`, newest first); when
    /// something is due, planned again on the key's versions merged across its replicas (this
    /// replica may be behind), and only that plan is carried out.
    async fn key(
        &self,
        id: &BucketId,
        key: &str,
        versions: &[Seen],
        rules: &[&LifecycleRule],
    ) -> Result<(), GatewayError> {
        let day_ms = self.day_ms();
        if plan(versions, rules, id.versioning(), self.now_ms, day_ms).is_empty() {
            return Ok(());
        }
        let shard = self.shard.with_levels(id.levels());
        let mut confirmed: Vec<Seen> = shard
            .versions_of(id.as_str(), key)
            .await?
            .iter()
            .map(seen_of)
            .collect();
        if rules.iter().any(|r| !r.tags.is_empty()) {
            for seen in confirmed.iter_mut().filter(|s| !s.marker) {
                let Some((tags, attributes)) = self.tags_of(id, key, seen).await? else {
                    // The version changed since it was listed: the next pass decides.
                    return Ok(());
                };
                seen.tags = Some(tags);
                seen.attributes = attributes;
            }
        }
        for action in plan(&confirmed, rules, id.versioning(), self.now_ms, day_ms) {
            if !self.tags_unchanged(id, key, &confirmed, action).await? {
                // A version's tags changed since the plan (no rewrite of the version tells
                // storage so): the next pass decides the whole key on the new ones (a later
                // action of this plan, such as removing a marker once every noncurrent version
                // is gone, may rest on this one).
                return Ok(());
            }
            let acted = match action {
                Action::DeleteNoncurrent(version) => {
                    shard
                        .delete_object_in(id.as_str(), key, id.versioning(), Some(version))
                        .await?;
                    count(&self.metrics.noncurrent_deleted);
                    true
                }
                Action::RemoveLoneMarker { version, stamp } => {
                    let removed = shard
                        .delete_if_latest(id.as_str(), key, id.versioning(), Some(version), stamp)
                        .await?;
                    if removed {
                        count(&self.metrics.markers_removed);
                    }
                    removed
                }
                Action::ExpireCurrent { stamp } => {
                    let expired = self.expire(&shard, id, key, stamp).await?;
                    if expired {
                        count(&self.metrics.expired);
                    }
                    expired
                }
            };
            if acted {
                self.throttle().await;
            }
        }
        Ok(())
    }

    /// Whether the tags an `action` was planned on (in a bucket that has had versioning, where
    /// a tag change leaves the version's stamp as it is) are still the version's, read again
    /// right before it is carried out. Always true for an action planned without tags.
    async fn tags_unchanged(
        &self,
        id: &BucketId,
        key: &str,
        confirmed: &[Seen],
        action: Action,
    ) -> Result<bool, GatewayError> {
        let seen = confirmed.iter().find(|s| match action {
            Action::DeleteNoncurrent(version) => s.version == version,
            Action::ExpireCurrent { stamp } => s.hlc == stamp,
            Action::RemoveLoneMarker { .. } => false,
        });
        let Some(seen) = seen.filter(|s| s.tags.is_some() && id.versioning() != Versioning::Off)
        else {
            return Ok(true);
        };
        Ok(self
            .tags_of(id, key, seen)
            .await?
            .is_some_and(|(_, attributes)| attributes == seen.attributes))
    }

    /// The tags of the version of a key `seen` names, read from that very record (None when
    /// the record read is not that one: it changed, or is gone, since it was listed), with the
    /// stamp of the attribute record they come from (None: the version's own).
    async fn tags_of(
        &self,
        id: &BucketId,
        key: &str,
        seen: &Seen,
    ) -> Result<Option<(Vec<(String, String)>, Option<Hlc>)>, GatewayError> {
        let found = if id.versioning() == Versioning::Off {
            self.ctx.head_object(id, key).await?
        } else {
            self.ctx
                .read_version(id, key, Some(seen.version), true)
                .await?
                .and_then(|read| read.into_object())
        };
        Ok(found
            .filter(|obj| obj.hlc == seen.hlc)
            .map(|obj| (obj.meta.headers.tags, obj.attributes)))
    }

    /// Expires a key's current version stamped `stamp`, only while it is still the latest: a
    /// delete marker (versioning enabled or suspended), or a delete (never versioned).
    async fn expire(
        &self,
        shard: &Shard,
        id: &BucketId,
        key: &str,
        stamp: Hlc,
    ) -> Result<bool, ShardError> {
        let versioning = id.versioning();
        if versioning == Versioning::Off {
            return shard
                .delete_if_latest(id.as_str(), key, versioning, None, stamp)
                .await;
        }
        let condition = WriteCondition {
            if_latest: Some(stamp),
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
        for entry in self.scan(partition, &prefix).await? {
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
            if let Err(e) = crate::s3::multipart::abort_upload(self.ctx, &id, key, upload_id).await
            {
                tracing::warn!(error = %e, bucket = %bucket.name, %key, "lifecycle: the upload is left to the next pass");
                continue;
            }
            count(&self.metrics.uploads_aborted);
            self.throttle().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leofs_manager::lifecycle::NoncurrentExpiration;

    const DAY: u64 = 1000;

    fn at(ms: u64) -> Hlc {
        Hlc {
            physical_us: ms * 1000,
            logical: 0,
            node_id: 1,
        }
    }

    fn version(ms: u64, marker: bool) -> Seen {
        Seen {
            version: VersionRef::Stamped(at(ms)),
            hlc: at(ms),
            marker,
            size: if marker { 0 } else { 100 },
            tags: None,
            attributes: None,
        }
    }

    fn rule() -> LifecycleRule {
        LifecycleRule {
            id: "r".into(),
            enabled: true,
            prefix: String::new(),
            expiration: None,
            expired_object_delete_marker: false,
            noncurrent: None,
            abort_incomplete_multipart_days: None,
            tags: Vec::new(),
            size_greater_than: None,
            size_less_than: None,
        }
    }

    #[test]
    fn noncurrent_versions_go_once_noncurrent_long_enough_the_newest_kept() {
        let rule = LifecycleRule {
            noncurrent: Some(NoncurrentExpiration {
                days: 1,
                newer_versions_kept: 1,
            }),
            ..rule()
        };
        // Written at 10.5 s, 8.5 s, 6.5 s, 1.5 s: newest first.
        let versions = [
            version(10_500, false),
            version(8_500, false),
            version(6_500, false),
            version(1_500, false),
        ];
        // At 11 s: 6.5 s became noncurrent at 8.5 s, due at 10 s (rounded up); 1.5 s at 6.5 s.
        let actions = plan(&versions, &[&rule], Versioning::Enabled, 11_000, DAY);
        assert_eq!(
            actions,
            [
                Action::DeleteNoncurrent(VersionRef::Stamped(at(6_500))),
                Action::DeleteNoncurrent(VersionRef::Stamped(at(1_500))),
            ]
        );
        // Before 10 s only the oldest is due.
        let actions = plan(&versions, &[&rule], Versioning::Enabled, 9_000, DAY);
        assert_eq!(
            actions,
            [Action::DeleteNoncurrent(VersionRef::Stamped(at(1_500)))]
        );
    }

    #[test]
    fn the_current_version_expires_and_a_lone_marker_goes() {
        let days = LifecycleRule {
            expiration: Some(Expiration::Days(2)),
            ..rule()
        };
        let current = [version(1_500, false)];
        assert!(plan(&current, &[&days], Versioning::Enabled, 3_500, DAY).is_empty());
        assert_eq!(
            plan(&current, &[&days], Versioning::Off, 4_000, DAY),
            [Action::ExpireCurrent { stamp: at(1_500) }]
        );
        // A lone marker: with ExpiredObjectDeleteMarker at once, with Days once as old.
        let marker = [version(1_500, true)];
        let eodm = LifecycleRule {
            expired_object_delete_marker: true,
            ..rule()
        };
        let removed = [Action::RemoveLoneMarker {
            version: VersionRef::Stamped(at(1_500)),
            stamp: at(1_500),
        }];
        assert_eq!(
            plan(&marker, &[&eodm], Versioning::Enabled, 1_600, DAY),
            removed
        );
        assert!(plan(&marker, &[&days], Versioning::Enabled, 3_500, DAY).is_empty());
        assert_eq!(
            plan(&marker, &[&days], Versioning::Enabled, 4_000, DAY),
            removed
        );
        // A marker over a version is not alone; a marker is never expired itself.
        let over = [version(2_000, true), version(1_000, false)];
        assert!(plan(&over, &[&eodm, &days], Versioning::Enabled, 9_000, DAY).is_empty());
    }

    #[test]
    fn tag_and_size_filters_choose_the_versions_a_rule_acts_on() {
        let tagged = LifecycleRule {
            expiration: Some(Expiration::Days(1)),
            noncurrent: Some(NoncurrentExpiration {
                days: 1,
                newer_versions_kept: 0,
            }),
            tags: vec![("tier".into(), "tmp".into())],
            ..rule()
        };
        let with = |ms: u64, tags: &[(&str, &str)]| Seen {
            tags: Some(
                tags.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..version(ms, false)
        };
        let versions = [
            with(5_000, &[("tier", "tmp")]),
            with(4_000, &[("tier", "keep")]),
            with(3_000, &[("tier", "tmp"), ("x", "y")]),
        ];
        assert_eq!(
            plan(&versions, &[&tagged], Versioning::Enabled, 9_000, DAY),
            [
                Action::DeleteNoncurrent(VersionRef::Stamped(at(3_000))),
                Action::ExpireCurrent { stamp: at(5_000) },
            ]
        );
        // Tags not read yet: the first plan takes them to match (it is made again with them).
        let unread = [version(5_000, false)];
        assert_eq!(
            plan(&unread, &[&tagged], Versioning::Off, 9_000, DAY).len(),
            1
        );
        let untagged = [with(5_000, &[])];
        assert!(plan(&untagged, &[&tagged], Versioning::Off, 9_000, DAY).is_empty());
        // Size: strictly between the bounds (test versions are 100 bytes).
        let small = LifecycleRule {
            expiration: Some(Expiration::Days(1)),
            size_less_than: Some(100),
            ..rule()
        };
        assert!(plan(&untagged, &[&small], Versioning::Off, 9_000, DAY).is_empty());
        let large = LifecycleRule {
            size_greater_than: Some(99),
            ..small.clone()
        };
        let large = LifecycleRule {
            size_less_than: None,
            ..large
        };
        assert_eq!(
            plan(&untagged, &[&large], Versioning::Off, 9_000, DAY).len(),
            1
        );
        // A rule filtering on tags or size never removes a lone marker.
        let marker = [version(1_500, true)];
        assert!(plan(&marker, &[&large], Versioning::Enabled, 9_000, DAY).is_empty());
    }
}
