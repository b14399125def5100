//! Listings of a bucket that has (or had) versioning (shard/VERSIONING.md §3, §7): a key's
//! versions are its version records (`v`, newest first) and its null version (the object
//! record, `o`), merged by HLC. ListObjects lists each key's latest version unless it is a
//! delete marker; ListObjectVersions lists every version and marker, paged by key and
//! version-id markers. Both read the two namespaces in pages and merge them in key order,
//! from the in-memory index only (no record read).

use std::cmp::Reverse;

use bytes::Bytes;
use leofs_shard::{Hlc, ScanEntry, Summary};
use s3s::dto::*;
use s3s::{S3Request, S3Response};

use super::list::{
    AFTER_PREFIX, MAX_KEYS, RawEntry, common_prefix, max_keys_of, resume_after, url_encode,
    wants_url,
};
use super::{etag, owner_of, require_bucket, timestamp};
use crate::error::GatewayError;
use crate::layout::{
    BucketId, KEY_SEP, VersionRef, bucket_id, bucket_version_prefix, etag_string, is_delete_marker,
    object_prefix, parse_version_key, parts_count_of_tag,
};
use crate::store::Ctx;

/// One version (or delete marker) of a key, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionItem {
    /// The object key.
    pub key: String,
    /// Which version.
    pub version: VersionRef,
    /// Its timestamp.
    pub hlc: Hlc,
    /// Its summary (size, ETag, kind).
    pub summary: Summary,
    /// The key's newest version.
    pub is_latest: bool,
}

impl VersionItem {
    fn is_marker(&self) -> bool {
        is_delete_marker(self.summary.tag)
    }
}

/// Where a listing resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cursor {
    /// At the first key.
    Start,
    /// After every version of this key (raw key bytes, possibly ending in [`AFTER_PREFIX`]).
    AfterKey(Vec<u8>),
    /// After this key's version stamped `hlc` (its older versions follow).
    AfterVersion(String, Hlc),
}

/// The next versions under `prefix` after `cursor`, in listing order (key ascending, newest
/// version first), at most about `limit` (a page of each namespace), and whether none follow.
async fn fetch_versions(
    ctx: &Ctx,
    bucket: &BucketId,
    prefix: &str,
    cursor: &Cursor,
    limit: usize,
) -> Result<(Vec<VersionItem>, bool), GatewayError> {
    let storage = ctx.storage.for_bucket(bucket);
    let o_ns = object_prefix(bucket);
    let v_ns = bucket_version_prefix(bucket.as_str());
    let with = |ns: &[u8], tail: &[&[u8]]| {
        let mut out = ns.to_vec();
        for part in tail {
            out.extend_from_slice(part);
        }
        Bytes::from(out)
    };
    let (o_after, v_after, within) = match cursor {
        Cursor::Start => (None, None, None),
        Cursor::AfterKey(key) => (
            Some(with(&o_ns, &[key])),
            Some(with(&v_ns, &[key, &[KEY_SEP + 1]])),
            None,
        ),
        Cursor::AfterVersion(key, hlc) => (
            Some(with(&o_ns, &[key.as_bytes()])),
            Some(with(
                &v_ns,
                &[key.as_bytes(), &[KEY_SEP], &crate::layout::inverted(*hlc)],
            )),
            Some((key.clone(), *hlc)),
        ),
    };
    let o_scan = storage.scan(with(&o_ns, &[prefix.as_bytes()]), o_after, limit);
    let v_scan = storage.scan(with(&v_ns, &[prefix.as_bytes()]), v_after, limit);
    let (o_page, v_page) = futures_util::future::try_join(o_scan, v_scan).await?;
    let (o_full, v_full) = (o_page.len() >= limit, v_page.len() >= limit);
    let mut items: Vec<VersionItem> = Vec::with_capacity(o_page.len() + v_page.len() + 1);
    // Resuming inside a key: its null version is listed if older than where the page stopped.
    if let Some((key, hlc)) = within.as_ref().filter(|(key, _)| key.starts_with(prefix)) {
        let okey = crate::layout::object_key(bucket.as_str(), key);
        if let Some(null) = ctx.storage.lookup_version_record(bucket, key, okey).await?
            && !null.tombstone
            && null.hlc < *hlc
        {
            items.push(VersionItem {
                key: key.clone(),
                version: VersionRef::Null,
                hlc: null.hlc,
                summary: null.summary,
                is_latest: false,
            });
        }
    }
    let o_last = o_page.last().and_then(|e| suffix_key(&e.key, o_ns.len()));
    items.extend(o_page.iter().filter_map(|e| {
        Some(VersionItem {
            key: suffix_key(&e.key, o_ns.len())?,
            version: VersionRef::Null,
            hlc: e.hlc,
            summary: e.summary,
            is_latest: false,
        })
    }));
    let v_last = v_page.last().and_then(version_position);
    items.extend(v_page.iter().filter_map(|e| {
        let (key, hlc) = version_position(e)?;
        Some(VersionItem {
            key,
            version: VersionRef::Stamped(hlc),
            hlc,
            summary: e.summary,
            is_latest: false,
        })
    }));
    items.sort_by(|a, b| (&a.key, Reverse(a.hlc)).cmp(&(&b.key, Reverse(b.hlc))));
    // A full page may stop anywhere: only what both namespaces cover is complete.
    items.retain(|item| {
        let position = (&item.key, Reverse(item.hlc));
        let v_ok = !v_full
            || v_last
                .as_ref()
                .is_some_and(|(k, h)| position <= (k, Reverse(*h)));
        let o_ok = !o_full || o_last.as_ref().is_some_and(|k| item.key <= *k);
        v_ok && o_ok
    });
    let mut previous: Option<String> = within.map(|(key, _)| key);
    for item in &mut items {
        item.is_latest = previous.as_deref() != Some(item.key.as_str());
        previous = Some(item.key.clone());
    }
    Ok((items, !o_full && !v_full))
}

/// The object key of an object record's engine key (after its namespace prefix).
fn suffix_key(engine_key: &[u8], ns_len: usize) -> Option<String> {
    std::str::from_utf8(engine_key.get(ns_len..)?)
        .ok()
        .map(str::to_owned)
}

/// The (object key, stamp) of a version record's index entry.
fn version_position(entry: &ScanEntry) -> Option<(String, Hlc)> {
    let (_, key, hlc) = parse_version_key(&entry.key)?;
    Some((key.to_owned(), hlc))
}

/// The next keys of a versioned bucket under `prefix` after `after` (raw key bytes, as
/// [`super::list::list_page`] resumes), each with its latest version unless that is a delete
/// marker; exactly `limit` unless none follow.
pub async fn fetch_latest(
    ctx: &Ctx,
    bucket: &BucketId,
    prefix: &str,
    after: Option<Vec<u8>>,
    limit: usize,
) -> Result<Vec<RawEntry>, GatewayError> {
    let mut cursor = after.map_or(Cursor::Start, Cursor::AfterKey);
    let mut out = Vec::new();
    loop {
        let (items, exhausted) = fetch_versions(ctx, bucket, prefix, &cursor, limit).await?;
        if let Some(last) = items.last() {
            cursor = Cursor::AfterKey(last.key.as_bytes().to_vec());
        }
        out.extend(
            items
                .into_iter()
                .filter(|item| item.is_latest && !item.is_marker())
                .map(|item| RawEntry {
                    key: item.key,
                    summary: item.summary,
                    hlc: item.hlc,
                }),
        );
        if exhausted || out.len() >= limit {
            out.truncate(limit);
            return Ok(out);
        }
    }
}

/// One item of a versions page.
enum Listed {
    Version(VersionItem),
    Prefix(String),
}

/// ListObjectVersions of a bucket that has (or had) versioning.
pub async fn list_object_versions(
    ctx: &Ctx,
    req: S3Request<ListObjectVersionsInput>,
) -> Result<S3Response<ListObjectVersionsOutput>, GatewayError> {
    let input = req.input;
    let bucket = require_bucket(ctx, &input.bucket)?;
    let id = bucket_id(&bucket);
    let url = wants_url(input.encoding_type.as_ref())?;
    let max_keys = max_keys_of(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
    let key_marker = input.key_marker.as_deref().filter(|k| !k.is_empty());
    let mut cursor = match (key_marker, input.version_id_marker.as_deref()) {
        (None, _) => Cursor::Start,
        (Some(key), None | Some("")) => Cursor::AfterKey(resume_after(key, &prefix, delimiter)),
        (Some(key), Some(marker)) => match super::versions::parse_version_id(Some(marker))? {
            Some(VersionRef::Stamped(hlc)) => Cursor::AfterVersion(key.to_owned(), hlc),
            // After the null version: the versions older than it.
            _ => {
                let okey = crate::layout::object_key(id.as_str(), key);
                match ctx.storage.lookup_version_record(&id, key, okey).await? {
                    Some(null) if !null.tombstone => Cursor::AfterVersion(key.to_owned(), null.hlc),
                    _ => Cursor::AfterKey(resume_after(key, &prefix, delimiter)),
                }
            }
        },
    };
    let mut listed: Vec<Listed> = Vec::new();
    let mut truncated = false;
    let fetch_limit = (max_keys + 1).min(MAX_KEYS + 1);
    if max_keys > 0 {
        'pages: loop {
            let (items, exhausted) =
                fetch_versions(ctx, &id, &prefix, &cursor, fetch_limit).await?;
            for item in items {
                if let Some(cp) = common_prefix(&item.key, &prefix, delimiter) {
                    if matches!(listed.last(), Some(Listed::Prefix(p)) if p == cp) {
                        continue;
                    }
                    if listed.len() == max_keys {
                        truncated = true;
                        break 'pages;
                    }
                    let mut after = cp.as_bytes().to_vec();
                    after.push(AFTER_PREFIX);
                    cursor = Cursor::AfterKey(after);
                    listed.push(Listed::Prefix(cp.to_owned()));
                    continue;
                }
                if listed.len() == max_keys {
                    truncated = true;
                    break 'pages;
                }
                cursor = Cursor::AfterVersion(item.key.clone(), item.hlc);
                listed.push(Listed::Version(item));
            }
            if exhausted {
                break;
            }
        }
    }
    let owner = owner_of(&bucket);
    let enc = |s: &str| if url { url_encode(s) } else { s.to_owned() };
    let (mut versions, mut delete_markers, mut common_prefixes) =
        (Vec::new(), Vec::new(), Vec::new());
    for item in &listed {
        match item {
            Listed::Prefix(p) => common_prefixes.push(CommonPrefix {
                prefix: Some(enc(p)),
            }),
            Listed::Version(v) if v.is_marker() => delete_markers.push(DeleteMarkerEntry {
                is_latest: Some(v.is_latest),
                key: Some(enc(&v.key)),
                last_modified: Some(timestamp(v.hlc)),
                owner: Some(owner.clone()),
                version_id: Some(v.version.id()),
            }),
            Listed::Version(v) => versions.push(ObjectVersion {
                e_tag: Some(etag(etag_string(
                    &v.summary.digest,
                    parts_count_of_tag(v.summary.tag),
                ))),
                is_latest: Some(v.is_latest),
                key: Some(enc(&v.key)),
                last_modified: Some(timestamp(v.hlc)),
                owner: Some(owner.clone()),
                size: Some(i64::try_from(v.summary.size).unwrap_or(i64::MAX)),
                storage_class: Some(ObjectVersionStorageClass::from_static(
                    ObjectVersionStorageClass::STANDARD,
                )),
                version_id: Some(v.version.id()),
                ..Default::default()
            }),
        }
    }
    let (next_key_marker, next_version_id_marker) = match (truncated, listed.last()) {
        (true, Some(Listed::Version(v))) => (Some(enc(&v.key)), Some(v.version.id())),
        (true, Some(Listed::Prefix(p))) => (Some(enc(p)), None),
        _ => (None, None),
    };
    Ok(S3Response::new(ListObjectVersionsOutput {
        common_prefixes: Some(common_prefixes),
        delete_markers: Some(delete_markers),
        delimiter: input
            .delimiter
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(enc),
        encoding_type: input.encoding_type,
        is_truncated: Some(truncated),
        key_marker: Some(enc(input.key_marker.as_deref().unwrap_or_default())),
        max_keys: i32::try_from(max_keys).ok(),
        name: Some(input.bucket),
        next_key_marker,
        next_version_id_marker,
        prefix: Some(enc(&prefix)),
        version_id_marker: input.version_id_marker,
        versions: Some(versions),
        ..Default::default()
    }))
}
