//! ListObjects (v1), ListObjectsV2 and ListObjectVersions: pages of object records merged across
//! every core by `Shard::scan_all`, with prefix, delimiter (CommonPrefixes), markers, start-after,
//! continuation tokens, max-keys and encoding-type=url. Listings read only the in-memory index
//! (size, ETag and part count come from the engine `Summary`).

use std::future::Future;

use bytes::Bytes;
use leofs_shard::{Hlc, Summary};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response};

use super::{etag, owner_of, require_bucket, timestamp};
use crate::error::GatewayError;
use crate::layout::{
    BucketId, Versioning, bucket_id, etag_string, object_prefix, parts_count_of_tag,
};
use crate::store::Ctx;

/// Largest and default max-keys (S3's limit).
pub const MAX_KEYS: usize = 1000;
/// A byte that never occurs in UTF-8: `prefix ‖ 0xFF` sorts after every key starting with `prefix`.
pub(crate) const AFTER_PREFIX: u8 = 0xff;
/// Version id of every object while versioning is off.
const NULL_VERSION: &str = "null";

/// One object record as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    /// The object key.
    pub key: String,
    /// The record's summary (size, MD5, part count).
    pub summary: Summary,
    /// The record's timestamp.
    pub hlc: Hlc,
}

/// One listing item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// An object.
    Object(RawEntry),
    /// A common prefix (delimiter roll-up).
    Prefix(String),
}

impl Item {
    fn marker(&self) -> &str {
        match self {
            Item::Object(e) => &e.key,
            Item::Prefix(p) => p,
        }
    }
}

/// A listing page.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Items in key order (objects and common prefixes interleaved).
    pub items: Vec<Item>,
    /// More items follow.
    pub truncated: bool,
}

impl Page {
    /// The marker to resume after (the last item), when truncated.
    pub fn next_marker(&self) -> Option<String> {
        if self.truncated {
            self.items.last().map(|i| i.marker().to_owned())
        } else {
            None
        }
    }
}

/// The common prefix `key` rolls up into at `delimiter` after `prefix`, if any.
pub(crate) fn common_prefix<'a>(
    key: &'a str,
    prefix: &str,
    delimiter: Option<&str>,
) -> Option<&'a str> {
    let d = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    let i = rest.find(d)?;
    key.get(..prefix.len() + i + d.len())
}

/// Where to resume after `marker`: just after it, or after every key under it when the marker
/// is itself a common prefix (so a prefix is never listed twice).
pub(crate) fn resume_after(marker: &str, prefix: &str, delimiter: Option<&str>) -> Vec<u8> {
    let mut out = marker.as_bytes().to_vec();
    if marker.starts_with(prefix) && common_prefix(marker, prefix, delimiter) == Some(marker) {
        out.push(AFTER_PREFIX);
    }
    out
}

/// Lists keys under `prefix` after `marker`, rolling keys up into common prefixes at
/// `delimiter`, at most `max_keys` items. `fetch(start_after, limit)` returns the next sorted
/// object records under `prefix` (keys without namespace).
pub async fn list_page<F, Fut>(
    mut fetch: F,
    prefix: &str,
    delimiter: Option<&str>,
    marker: Option<&str>,
    max_keys: usize,
) -> Result<Page, GatewayError>
where
    F: FnMut(Option<Vec<u8>>, usize) -> Fut,
    Fut: Future<Output = Result<Vec<RawEntry>, GatewayError>>,
{
    let mut page = Page::default();
    if max_keys == 0 {
        return Ok(page);
    }
    let fetch_limit = (max_keys + 1).min(MAX_KEYS + 1);
    let mut cursor = marker
        .filter(|m| !m.is_empty())
        .map(|m| resume_after(m, prefix, delimiter));
    'pages: loop {
        let batch = fetch(cursor.clone(), fetch_limit).await?;
        let exhausted = batch.len() < fetch_limit;
        let mut skip: Option<String> = None;
        for entry in batch {
            if skip.as_deref().is_some_and(|s| entry.key.starts_with(s)) {
                continue;
            }
            let item = match common_prefix(&entry.key, prefix, delimiter) {
                Some(cp) => Item::Prefix(cp.to_owned()),
                None => Item::Object(entry),
            };
            if page.items.len() == max_keys {
                page.truncated = true;
                break 'pages;
            }
            cursor = Some(resume_after(item.marker(), prefix, delimiter));
            if let Item::Prefix(cp) = &item {
                skip = Some(cp.clone());
            }
            page.items.push(item);
        }
        if exhausted {
            break;
        }
    }
    Ok(page)
}

/// Percent-encodes like S3's `encoding-type=url` (everything but unreserved characters and '/').
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `max-keys` of a listing: at most (and by default) [`MAX_KEYS`].
pub(crate) fn max_keys_of(v: Option<i32>) -> Result<usize, GatewayError> {
    match v {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(GatewayError::s3(
            S3ErrorCode::InvalidArgument,
            "max-keys must be non-negative",
        )),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_KEYS).min(MAX_KEYS)),
    }
}

/// Whether the listing asks for `encoding-type=url` (any other type is `InvalidArgument`).
pub(crate) fn wants_url(encoding: Option<&EncodingType>) -> Result<bool, GatewayError> {
    match encoding.map(EncodingType::as_str) {
        None => Ok(false),
        Some(e) if e.eq_ignore_ascii_case(EncodingType::URL) => Ok(true),
        Some(_) => Err(GatewayError::s3(
            S3ErrorCode::InvalidArgument,
            "Invalid Encoding Method specified in Request",
        )),
    }
}

async fn list_bucket(
    ctx: &Ctx,
    bucket: &BucketId,
    prefix: &str,
    delimiter: Option<&str>,
    marker: Option<&str>,
    max_keys: usize,
) -> Result<Page, GatewayError> {
    if bucket.versioning() != Versioning::Off {
        let fetch = |after: Option<Vec<u8>>, limit: usize| {
            super::list_versions::fetch_latest(ctx, bucket, prefix, after, limit)
        };
        return list_page(fetch, prefix, delimiter, marker, max_keys).await;
    }
    let ns = object_prefix(bucket);
    let mut scan_prefix = ns.clone();
    scan_prefix.extend_from_slice(prefix.as_bytes());
    let scan_prefix = Bytes::from(scan_prefix);
    let fetch = |after: Option<Vec<u8>>, limit: usize| {
        let ns = ns.clone();
        let scan_prefix = scan_prefix.clone();
        async move {
            let start_after = after.map(|a| {
                let mut k = ns.clone();
                k.extend_from_slice(&a);
                Bytes::from(k)
            });
            let entries = ctx
                .storage
                .for_bucket(bucket)
                .scan(scan_prefix, start_after, limit)
                .await?;
            Ok(entries
                .into_iter()
                .filter_map(|e| {
                    let key = std::str::from_utf8(e.key.get(ns.len()..)?).ok()?.to_owned();
                    Some(RawEntry {
                        key,
                        summary: e.summary,
                        hlc: e.hlc,
                    })
                })
                .collect())
        }
    };
    list_page(fetch, prefix, delimiter, marker, max_keys).await
}

/// Splits a page into S3 objects and common prefixes.
fn to_contents(page: &Page, owner: Option<&Owner>, url: bool) -> (Vec<Object>, Vec<CommonPrefix>) {
    let enc = |s: &str| if url { url_encode(s) } else { s.to_owned() };
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    for item in &page.items {
        match item {
            Item::Object(e) => objects.push(Object {
                e_tag: Some(etag(etag_string(
                    &e.summary.digest,
                    parts_count_of_tag(e.summary.tag),
                ))),
                key: Some(enc(&e.key)),
                last_modified: Some(timestamp(e.hlc)),
                owner: owner.cloned(),
                size: Some(i64::try_from(e.summary.size).unwrap_or(i64::MAX)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            }),
            Item::Prefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(enc(p)),
            }),
        }
    }
    (objects, prefixes)
}

/// ListObjects (v1).
pub async fn list_objects(
    ctx: &Ctx,
    req: S3Request<ListObjectsInput>,
) -> Result<S3Response<ListObjectsOutput>, GatewayError> {
    let input = req.input;
    let bucket = require_bucket(ctx, &input.bucket)?;
    let url = wants_url(input.encoding_type.as_ref())?;
    let max_keys = max_keys_of(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
    let page = list_bucket(
        ctx,
        &bucket_id(&bucket),
        &prefix,
        delimiter,
        input.marker.as_deref(),
        max_keys,
    )
    .await?;
    let owner = owner_of(&bucket);
    let (contents, common_prefixes) = to_contents(&page, Some(&owner), url);
    let enc = |s: String| if url { url_encode(&s) } else { s };
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(input.bucket),
        // S3 answers a v1 listing's Prefix as given, even with encoding-type=url (clients do
        // not decode it: botocore decodes only Delimiter, Marker, NextMarker and the keys).
        prefix: Some(prefix),
        marker: Some(enc(input.marker.unwrap_or_default())),
        max_keys: i32::try_from(max_keys).ok(),
        is_truncated: Some(page.truncated),
        next_marker: page.next_marker().map(enc),
        contents: Some(contents),
        common_prefixes: Some(common_prefixes),
        delimiter: input.delimiter.filter(|d| !d.is_empty()).map(enc),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

/// ListObjectsV2.
pub async fn list_objects_v2(
    ctx: &Ctx,
    req: S3Request<ListObjectsV2Input>,
) -> Result<S3Response<ListObjectsV2Output>, GatewayError> {
    let input = req.input;
    let bucket = require_bucket(ctx, &input.bucket)?;
    let url = wants_url(input.encoding_type.as_ref())?;
    let max_keys = max_keys_of(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
    let marker = match &input.continuation_token {
        Some(token) => {
            let bytes = hex::decode(token).map_err(|_| {
                GatewayError::s3(
                    S3ErrorCode::InvalidArgument,
                    "The continuation token provided is incorrect",
                )
            })?;
            Some(String::from_utf8(bytes).map_err(|_| {
                GatewayError::s3(
                    S3ErrorCode::InvalidArgument,
                    "The continuation token provided is incorrect",
                )
            })?)
        }
        None => input.start_after.clone(),
    };
    let page = list_bucket(
        ctx,
        &bucket_id(&bucket),
        &prefix,
        delimiter,
        marker.as_deref(),
        max_keys,
    )
    .await?;
    let owner = owner_of(&bucket);
    let (contents, common_prefixes) = to_contents(
        &page,
        input.fetch_owner.unwrap_or(false).then_some(&owner),
        url,
    );
    let enc = |s: String| if url { url_encode(&s) } else { s };
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(enc(prefix)),
        max_keys: i32::try_from(max_keys).ok(),
        key_count: i32::try_from(page.items.len()).ok(),
        continuation_token: input.continuation_token,
        is_truncated: Some(page.truncated),
        next_continuation_token: page.next_marker().map(hex::encode),
        contents: Some(contents),
        common_prefixes: Some(common_prefixes),
        delimiter: input.delimiter.filter(|d| !d.is_empty()).map(enc),
        encoding_type: input.encoding_type,
        start_after: input.start_after.map(enc),
        ..Default::default()
    }))
}

/// ListObjectVersions; with versioning never enabled, every object is version `null`, latest
/// (a versioned bucket's listing is `list_versions`).
pub async fn list_object_versions(
    ctx: &Ctx,
    req: S3Request<ListObjectVersionsInput>,
) -> Result<S3Response<ListObjectVersionsOutput>, GatewayError> {
    if !require_bucket(ctx, &req.input.bucket)?.versioning.is_off() {
        return super::list_versions::list_object_versions(ctx, req).await;
    }
    let input = req.input;
    let bucket = require_bucket(ctx, &input.bucket)?;
    let url = wants_url(input.encoding_type.as_ref())?;
    let max_keys = max_keys_of(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.as_deref().filter(|d| !d.is_empty());
    let page = list_bucket(
        ctx,
        &bucket_id(&bucket),
        &prefix,
        delimiter,
        input.key_marker.as_deref(),
        max_keys,
    )
    .await?;
    let owner = owner_of(&bucket);
    let (contents, common_prefixes) = to_contents(&page, Some(&owner), url);
    let versions = contents
        .into_iter()
        .map(|o| ObjectVersion {
            e_tag: o.e_tag,
            is_latest: Some(true),
            key: o.key,
            last_modified: o.last_modified,
            owner: o.owner,
            size: o.size,
            storage_class: Some(ObjectVersionStorageClass::from_static(
                ObjectVersionStorageClass::STANDARD,
            )),
            version_id: Some(NULL_VERSION.into()),
            ..Default::default()
        })
        .collect();
    let enc = |s: String| if url { url_encode(&s) } else { s };
    let next_key_marker = page.next_marker().map(enc);
    Ok(S3Response::new(ListObjectVersionsOutput {
        common_prefixes: Some(common_prefixes),
        delimiter: input.delimiter.filter(|d| !d.is_empty()).map(enc),
        encoding_type: input.encoding_type,
        is_truncated: Some(page.truncated),
        key_marker: Some(enc(input.key_marker.unwrap_or_default())),
        max_keys: i32::try_from(max_keys).ok(),
        name: Some(input.bucket),
        // A page that ends on a common prefix resumes by its key marker alone.
        next_version_id_marker: next_key_marker
            .as_ref()
            .filter(|_| matches!(page.items.last(), Some(Item::Object(_))))
            .map(|_| NULL_VERSION.to_owned()),
        next_key_marker,
        prefix: Some(enc(prefix)),
        version_id_marker: input.version_id_marker,
        versions: Some(versions),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn store(keys: &[&str]) -> BTreeMap<Vec<u8>, RawEntry> {
        keys.iter()
            .map(|k| {
                (
                    k.as_bytes().to_vec(),
                    RawEntry {
                        key: (*k).into(),
                        summary: Summary::default(),
                        hlc: Hlc::default(),
                    },
                )
            })
            .collect()
    }

    /// Lists an in-memory key set the way `scan_all` does (prefix, exclusive start, limit).
    async fn list(
        s: &BTreeMap<Vec<u8>, RawEntry>,
        prefix: &str,
        delimiter: Option<&str>,
        marker: Option<&str>,
        max_keys: usize,
    ) -> Page {
        let fetch = |after: Option<Vec<u8>>, limit: usize| {
            let out: Vec<RawEntry> = s
                .iter()
                .filter(|(k, _)| {
                    k.starts_with(prefix.as_bytes()) && after.as_ref().is_none_or(|a| *k > a)
                })
                .take(limit)
                .map(|(_, v)| v.clone())
                .collect();
            async move { Ok(out) }
        };
        list_page(fetch, prefix, delimiter, marker, max_keys)
            .await
            .unwrap()
    }

    fn names(p: &Page) -> Vec<String> {
        p.items
            .iter()
            .map(|i| match i {
                Item::Object(e) => e.key.clone(),
                Item::Prefix(p) => format!("P:{p}"),
            })
            .collect()
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        futures_util::FutureExt::now_or_never(f).expect("in-memory listing never waits")
    }

    #[test]
    fn delimiter_rolls_up_common_prefixes() {
        let s = store(&["a/1", "a/2", "b", "c/x/y", "c/z", "d"]);
        let page = block_on(list(&s, "", Some("/"), None, 1000));
        assert_eq!(names(&page), ["P:a/", "b", "P:c/", "d"]);
        assert!(!page.truncated);
        let page = block_on(list(&s, "c/", Some("/"), None, 1000));
        assert_eq!(names(&page), ["P:c/x/", "c/z"]);
    }

    #[test]
    fn max_keys_truncates_and_marker_resumes_without_repeats() {
        let s = store(&["a/1", "a/2", "b", "c/x/y", "c/z", "d"]);
        let mut seen = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = block_on(list(&s, "", Some("/"), marker.as_deref(), 1));
            seen.extend(names(&page));
            match page.next_marker() {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        assert_eq!(seen, ["P:a/", "b", "P:c/", "d"]);
    }

    #[test]
    fn plain_pagination_lists_everything_once() {
        let keys: Vec<String> = (0..25).map(|i| format!("k{i:03}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let s = store(&refs);
        let mut seen = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = block_on(list(&s, "k", None, marker.as_deref(), 7));
            seen.extend(names(&page));
            match page.next_marker() {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        assert_eq!(seen, keys);
        assert!(block_on(list(&s, "", None, None, 0)).items.is_empty());
    }

    #[test]
    fn url_encoding_keeps_slashes() {
        assert_eq!(url_encode("a b/c+d"), "a%20b/c%2Bd");
        assert_eq!(url_encode("é"), "%C3%A9");
    }
}
