//! The object layout: how storage lays objects out in engine records. Storage owns it (DESIGN
//! §4a): it must know which chunks a manifest or a part references to collect the garbage an
//! overwrite, a delete or an abort leaves (`collector`), and the gateway builds its records with
//! it. It does no I/O. The formats are documented in `shard/FORMAT.md`.
//!
//! - [`keys`]: the engine key namespaces (object, chunk, upload, part, garbage records), bucket
//!   identities with their incarnation, version ids;
//! - [`manifest`]: an object record's metadata (the manifest), its body layout in chunk runs,
//!   headers, checksums, ETags and `Summary` tags;
//! - [`records`]: multipart upload and part records;
//! - [`reads`]: planning the chunk reads that cover a byte range;
//! - [`versions`]: versioned buckets' version keys, version ids and delete markers;
//! - `codec`: the binary encoding shared by manifests, upload and part records.

mod codec;
pub mod keys;
pub mod manifest;
pub mod reads;
pub mod records;
pub mod versions;

pub use codec::{EncodeError, FORMAT_VERSION, FORMAT_VERSION_SSE_C};
pub use keys::*;
pub use manifest::*;
pub use reads::*;
pub use records::*;
pub use versions::*;

/// A stored record of the object layout that does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {what}: {detail}")]
pub struct LayoutError {
    /// Which kind of record.
    pub what: &'static str,
    /// What is wrong.
    pub detail: &'static str,
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    #[test]
    fn bucket_ids_carry_the_incarnation_and_old_buckets_keep_their_bare_name() {
        assert_eq!(BucketId::new("photos", 0).as_str(), "photos");
        assert_eq!(
            BucketId::new("photos", 0xab).as_str(),
            "photos~00000000000000ab"
        );
        let (old, new) = (BucketId::new("photos", 1), BucketId::new("photos", 2));
        assert_ne!(object_key(old.as_str(), "k"), object_key(new.as_str(), "k"));
        assert!(!object_key(new.as_str(), "k").starts_with(&object_prefix(old.as_str())));
        assert!(!object_key(old.as_str(), "k").starts_with(&object_prefix("photos")));
    }

    fn seg(size: u64, cs: u64) -> ChunkRun {
        ChunkRun {
            version: VersionId([7; 16]),
            size_bytes: size,
            chunk_size_bytes: cs,
            md5: [1; 16],
        }
    }

    #[test]
    fn manifest_round_trips() {
        let meta = ObjectMeta {
            completed_upload: None,
            part_checksums: Vec::new(),
            size_bytes: 25,
            md5: [9; 16],
            parts_count: 2,
            headers: Headers {
                content_type: Some("text/plain".into()),
                expires: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
                user_meta: vec![("a".into(), "b".into())],
                ..Headers::default()
            },
            checksums: vec![StoredChecksum {
                kind: ChecksumKind::Crc32,
                value: "AAAAAA==".into(),
            }],
            layout: BodyLayout::Chunked(vec![seg(10, 4), seg(15, 4)]),
        };
        let decoded = ObjectMeta::decode(&meta.encode().unwrap()).unwrap();
        assert_eq!(decoded, meta);
        assert_eq!(decoded.part_range(2), Some(10..25));
        assert_eq!(decoded.part_range(3), None);
    }

    #[test]
    fn optional_fields_end_the_record_and_records_without_them_are_unchanged() {
        let mut meta = ObjectMeta {
            completed_upload: None,
            part_checksums: Vec::new(),
            size_bytes: 3,
            md5: [2; 16],
            parts_count: 0,
            headers: Headers::default(),
            checksums: vec![],
            layout: BodyLayout::Inline,
        };
        let untagged = meta.encode().unwrap();
        meta.headers.tags = vec![("team".into(), "a b".into()), ("k".into(), String::new())];
        let tagged = meta.encode().unwrap();
        assert_eq!(&tagged[..untagged.len()], &untagged[..]);
        assert_eq!(ObjectMeta::decode(&tagged).unwrap(), meta);
        assert!(
            ObjectMeta::decode(&untagged)
                .unwrap()
                .headers
                .tags
                .is_empty()
        );
        assert!(ObjectMeta::decode(&tagged[..tagged.len() - 1]).is_err());
        let mut extra = tagged.to_vec();
        extra.push(0);
        assert!(ObjectMeta::decode(&extra).is_err());
        // A field of an id this release does not know is skipped whole.
        let mut unknown = tagged.to_vec();
        unknown.extend_from_slice(&[99, 2, 0, 0, 0, 7, 7]);
        assert_eq!(ObjectMeta::decode(&unknown).unwrap(), meta);
        meta.completed_upload = Some("upload-1".into());
        assert_eq!(ObjectMeta::decode(&meta.encode().unwrap()).unwrap(), meta);
        meta.completed_upload = None;
        // An ACL: absent in older records (decoded as None), kept whole when given.
        assert_eq!(ObjectMeta::decode(&untagged).unwrap().headers.acl, None);
        meta.headers.acl = Some(ObjectAcl {
            owner: "alice".into(),
            grants: vec![
                Grant {
                    grantee: Grantee::User("bob".into()),
                    permission: Permission::ReadAcp,
                },
                Grant {
                    grantee: Grantee::AllUsers,
                    permission: Permission::Read,
                },
                Grant {
                    grantee: Grantee::AuthenticatedUsers,
                    permission: Permission::FullControl,
                },
            ],
        });
        assert_eq!(ObjectMeta::decode(&meta.encode().unwrap()).unwrap(), meta);
        meta.headers.sse_c = Some(SseC {
            salt: [7; 16],
            key_hmac: [9; 32],
        });
        let sealed = meta.encode().unwrap();
        assert_eq!(
            sealed[0],
            codec::FORMAT_VERSION_SSE_C,
            "older releases refuse it"
        );
        assert_eq!(ObjectMeta::decode(&sealed).unwrap(), meta);
        meta.headers.sse_c = None;
        meta.headers.acl = None;
        meta.headers.tags = vec![(String::new(), String::new()); MAX_OBJECT_TAGS + 1];
        assert!(matches!(meta.encode(), Err(EncodeError::TooMany { .. })));
        let upload = UploadMeta {
            headers: Headers {
                tags: vec![("x".into(), "y".into())],
                ..Headers::default()
            },
            checksum_algorithm: None,
            checksum_type: None,
            initiator: "me".into(),
        };
        assert_eq!(
            UploadMeta::decode(&upload.encode().unwrap()).unwrap(),
            upload
        );
    }

    #[test]
    fn checksum_types_and_part_checksums_round_trip() {
        let mut upload = UploadMeta {
            headers: Headers::default(),
            checksum_algorithm: Some(ChecksumKind::Crc32),
            checksum_type: Some(ChecksumType::FullObject),
            initiator: "me".into(),
        };
        assert_eq!(
            UploadMeta::decode(&upload.encode().unwrap()).unwrap(),
            upload
        );
        // An upload written before checksum types existed takes S3's default for its algorithm.
        upload.checksum_type = None;
        let decoded = UploadMeta::decode(&upload.encode().unwrap()).unwrap();
        assert_eq!(decoded.checksum_type, Some(ChecksumType::Composite));

        let sum = |value: &str| StoredChecksum {
            kind: ChecksumKind::Crc32,
            value: value.into(),
        };
        let mut meta = ObjectMeta {
            completed_upload: None,
            part_checksums: vec![sum("AAAAAQ=="), sum("/////w==")],
            size_bytes: 25,
            md5: [9; 16],
            parts_count: 2,
            headers: Headers::default(),
            checksums: vec![sum("q83vEg==-2")],
            layout: BodyLayout::Chunked(vec![seg(10, 4), seg(15, 4)]),
        };
        let decoded = ObjectMeta::decode(&meta.encode().unwrap()).unwrap();
        assert_eq!(decoded, meta);
        assert_eq!(decoded.checksum_type(), Some(ChecksumType::Composite));
        assert_eq!(decoded.checksums[0].digest(), "q83vEg==");
        // Part checksums are stored as digests: one that is not base64 of the algorithm's
        // digest is refused, and a record whose count differs from the parts is corrupt.
        meta.part_checksums[1] = sum("AAAA");
        assert_eq!(meta.encode(), Err(EncodeError::BadChecksum));
        meta.part_checksums.pop();
        assert!(ObjectMeta::decode(&meta.encode().unwrap()).is_err());
    }

    #[test]
    fn a_manifest_takes_48_bytes_a_part_and_its_digest_with_part_checksums() {
        let manifest = |parts: usize, kind: Option<ChecksumKind>| {
            let part_checksums = kind.map_or_else(Vec::new, |kind| {
                vec![
                    StoredChecksum {
                        kind,
                        value: base64_encode(&vec![7; kind.digest_len()]),
                    };
                    parts
                ]
            });
            ObjectMeta {
                completed_upload: Some(new_upload_id()),
                part_checksums,
                size_bytes: 10 * parts as u64,
                md5: [1; 16],
                parts_count: parts as u32,
                headers: Headers::default(),
                checksums: vec![],
                layout: BodyLayout::Chunked(vec![seg(10, 4); parts]),
            }
            .encode()
            .unwrap()
            .len()
        };
        let base = manifest(1, None) - 48;
        assert!(base < 200, "{base}");
        assert_eq!(manifest(1000, None), base + 48 * 1000);
        for kind in ChecksumKind::ALL {
            // The field's id, length and kind once, then each part's digest.
            assert_eq!(
                manifest(1000, Some(kind)),
                base + 48 * 1000 + 6 + kind.digest_len() * 1000,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn base64_matches_known_vectors() {
        for (raw, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xff, 0xfe, 0x00], "//4A"),
        ] {
            assert_eq!(base64_encode(raw), text);
            assert_eq!(base64_decode(text).as_deref(), Some(raw));
        }
        for bad in [
            "Zg=", "Z===", "Zg==Zg==", "Zh==", "Zm9v!A==", "====", "Zm8=Zm8=",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn truncated_manifest_is_corrupt_not_a_panic() {
        let meta = ObjectMeta {
            completed_upload: None,
            part_checksums: Vec::new(),
            size_bytes: 0,
            md5: [0; 16],
            parts_count: 0,
            headers: Headers::default(),
            checksums: vec![],
            layout: BodyLayout::Inline,
        };
        let bytes = meta.encode().unwrap();
        for len in 0..bytes.len() {
            assert!(ObjectMeta::decode(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn read_plan_covers_exactly_the_range() {
        let runs: Rc<[ChunkRun]> = Rc::from(vec![seg(10, 4), seg(7, 4)]);
        let plan: Vec<_> = plan_reads(runs.clone(), 3..12).collect();
        let pieces: Vec<_> = plan
            .iter()
            .map(|p| (p.run, p.chunk, p.range.clone()))
            .collect();
        assert_eq!(
            pieces,
            vec![(0, 0, 3..4), (0, 1, 0..4), (0, 2, 0..2), (1, 0, 0..2)]
        );
        let total: u64 = plan_reads(runs.clone(), 0..17)
            .map(|p| p.range.end - p.range.start)
            .sum();
        assert_eq!(total, 17);
        assert_eq!(plan_reads(runs, 5..5).count(), 0);
    }

    #[test]
    fn chunk_and_garbage_keys_parse_back() {
        let v = VersionId([9; 16]);
        let k = chunk_key("bkt", "a/\u{0}odd key", &v, 7);
        assert_eq!(parse_chunk_key(&k), Some(("bkt", "a/\u{0}odd key", v, 7)));
        assert_eq!(parse_chunk_key(&object_key("bkt", "x")), None);
        assert_eq!(parse_chunk_key(b"c"), None);
        let g = garbage_key("bkt", "some/key", &[3; 16]);
        assert_eq!(parse_garbage_key(&g), Some(("bkt", "some/key")));
        assert_eq!(parse_garbage_key(&k), None);
    }

    #[test]
    fn keys_sort_by_object_key_within_a_bucket() {
        assert!(object_key("b", "a") < object_key("b", "a/b"));
        assert!(object_key("b", "a/b") < object_key("b", "ab"));
        assert!(object_key("b", "zz") < object_key("b0", ""));
        let upload = upload_key("b", "some/key", "0123");
        let suffix = &upload[upload_prefix("b").len()..];
        assert_eq!(split_upload_suffix(suffix), Some(("some/key", "0123")));
    }

    #[test]
    fn fields_too_long_to_store_are_refused_never_truncated() {
        let meta = |content_type: String, user_meta: Vec<(String, String)>| ObjectMeta {
            completed_upload: None,
            part_checksums: Vec::new(),
            size_bytes: 0,
            md5: [0; 16],
            parts_count: 0,
            headers: Headers {
                content_type: Some(content_type),
                user_meta,
                ..Default::default()
            },
            checksums: Vec::new(),
            layout: BodyLayout::Inline,
        };
        let longest = "t".repeat(codec::MAX_FIELD_BYTES);
        let stored = meta(longest.clone(), Vec::new()).encode().unwrap();
        assert_eq!(
            ObjectMeta::decode(&stored).unwrap().headers.content_type,
            Some(longest)
        );
        assert_eq!(
            meta("t".repeat(codec::MAX_FIELD_BYTES + 1), Vec::new()).encode(),
            Err(EncodeError::FieldTooLong {
                field: "Content-Type",
                bytes: codec::MAX_FIELD_BYTES + 1,
                limit: codec::MAX_FIELD_BYTES,
            })
        );
        let pairs = vec![(String::new(), String::new()); codec::MAX_USER_META_PAIRS + 1];
        assert!(matches!(
            meta(String::new(), pairs).encode(),
            Err(EncodeError::TooMany { .. })
        ));
    }
}
