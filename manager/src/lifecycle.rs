//! A bucket's lifecycle rules (S3 PutBucketLifecycleConfiguration; shard/VERSIONING.md §10),
//! as the catalog keeps them and the lifecycle worker of every storage node applies them: the
//! S3 configuration, checked, reduced to what the worker acts on.

/// Most rules one bucket's configuration holds (S3's limit).
pub const LIFECYCLE_RULES_MAX: usize = 1000;

/// One lifecycle rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LifecycleRule {
    /// The rule's id (unique in the bucket, at most 255 characters).
    pub id: String,
    /// Whether the rule is applied (`Status` Enabled) or kept but not applied (Disabled).
    pub enabled: bool,
    /// The keys it applies to: those starting with this prefix.
    #[serde(default)]
    pub prefix: String,
    /// What happens to a key's current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Expiration>,
    /// Whether a delete marker that is its key's only version is removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired_object_delete_marker: bool,
    /// What happens to noncurrent versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noncurrent: Option<NoncurrentExpiration>,
    /// Days after its initiation an incomplete multipart upload is aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_incomplete_multipart_days: Option<u32>,
    /// The tags (key, value) a version must all carry for the rule to apply to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    /// The rule applies only to versions larger than this many bytes (ObjectSizeGreaterThan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_greater_than: Option<u64>,
    /// The rule applies only to versions smaller than this many bytes (ObjectSizeLessThan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_less_than: Option<u64>,
}

/// When a current version expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expiration {
    /// This many days after the version was written (rounded up to the next midnight UTC, as
    /// S3 rounds).
    Days(u32),
    /// At this instant (a midnight UTC), ms since the Unix epoch.
    DateUnixMs(u64),
}

/// When a noncurrent version is deleted for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NoncurrentExpiration {
    /// Days after the version became noncurrent (rounded up as [`Expiration::Days`]).
    pub days: u32,
    /// The newest noncurrent versions kept whatever their age.
    #[serde(default)]
    pub newer_versions_kept: u32,
}

impl LifecycleRule {
    /// Whether the rule applies to `key` (enabled, and the key under its prefix); whether it
    /// applies to one version of the key is [`LifecycleRule::applies_to_version`]'s answer.
    pub fn matches(&self, key: &str) -> bool {
        self.enabled && key.starts_with(&self.prefix)
    }

    /// Whether the rule filters on what a version holds (tags or size): such a rule never
    /// applies to a delete marker, which holds neither.
    pub fn filters_objects(&self) -> bool {
        !self.tags.is_empty() || self.size_greater_than.is_some() || self.size_less_than.is_some()
    }

    /// Whether the rule's object filters let it apply to a version of `size_bytes` carrying
    /// `tags` (None: not known yet, taken as matching, for a first plan that is made again
    /// with the tags read).
    pub fn applies_to_version(&self, size_bytes: u64, tags: Option<&[(String, String)]>) -> bool {
        self.size_greater_than.is_none_or(|min| size_bytes > min)
            && self.size_less_than.is_none_or(|max| size_bytes < max)
            && tags.is_none_or(|tags| self.tags.iter().all(|want| tags.contains(want)))
    }
}

/// The instant (ms since the Unix epoch) `days` after `from_ms`, rounded up to the next
/// "midnight": a multiple of `day_ms` since the epoch (a real day is 86,400,000 ms; tests
/// shorten it).
pub fn due_after(from_ms: u64, days: u32, day_ms: u64) -> u64 {
    let day_ms = day_ms.max(1);
    let due = from_ms.saturating_add(u64::from(days).saturating_mul(day_ms));
    due.div_ceil(day_ms).saturating_mul(day_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rounds_up_to_the_next_midnight() {
        let day = 86_400_000;
        // Written at 10:00 on day 3: one day later is 10:00 on day 4, rounded to day 5's start.
        assert_eq!(due_after(3 * day + 36_000_000, 1, day), 5 * day);
        // Written exactly at a midnight: due exactly `days` later.
        assert_eq!(due_after(3 * day, 2, day), 5 * day);
        // A shortened day of 1 s.
        assert_eq!(due_after(1_500, 1, 1_000), 3_000);
        assert_eq!(due_after(u64::MAX - 5, 9, day), u64::MAX);
    }

    #[test]
    fn rules_match_their_prefix_when_enabled() {
        let mut rule = LifecycleRule {
            id: "r".into(),
            enabled: true,
            prefix: "logs/".into(),
            expiration: Some(Expiration::Days(1)),
            expired_object_delete_marker: false,
            noncurrent: None,
            abort_incomplete_multipart_days: None,
            tags: Vec::new(),
            size_greater_than: None,
            size_less_than: None,
        };
        assert!(rule.matches("logs/a"));
        assert!(!rule.matches("data/a"));
        rule.enabled = false;
        assert!(!rule.matches("logs/a"));
        let text = serde_json::to_string(&rule).unwrap();
        assert_eq!(serde_json::from_str::<LifecycleRule>(&text).unwrap(), rule);
        // Rules kept before tag and size filters existed read as rules without them.
        assert!(!text.contains("tags") && !text.contains("size"));
    }

    #[test]
    fn tag_and_size_filters_apply_to_versions() {
        let rule = LifecycleRule {
            id: "r".into(),
            enabled: true,
            prefix: String::new(),
            expiration: Some(Expiration::Days(1)),
            expired_object_delete_marker: false,
            noncurrent: None,
            abort_incomplete_multipart_days: None,
            tags: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            size_greater_than: Some(10),
            size_less_than: Some(100),
        };
        assert!(rule.filters_objects());
        let both = [
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ];
        assert!(rule.applies_to_version(11, Some(&both)));
        assert!(!rule.applies_to_version(10, Some(&both)));
        assert!(!rule.applies_to_version(100, Some(&both)));
        assert!(!rule.applies_to_version(50, Some(&both[..1])));
        let other = [
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "3".to_owned()),
        ];
        assert!(!rule.applies_to_version(50, Some(&other)));
        assert!(rule.applies_to_version(50, None));
        let text = serde_json::to_string(&rule).unwrap();
        assert_eq!(serde_json::from_str::<LifecycleRule>(&text).unwrap(), rule);
    }
}
