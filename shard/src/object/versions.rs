//! Versioned buckets (`shard/VERSIONING.md`): the keys of a key's versions, version ids as S3
//! clients see them, delete markers, and a bucket's versioning state as storage acts on it.
//!
//! A version of (bucket, key) is the record `v` bucket 0x00 key 0x00 inverted-HLC(16), placed
//! in the partition of the key's object record (`object_hash(bucket, key)`): a key's versions
//! are one contiguous range, newest first. The key's object record (`o`) is its `null` version.

use bytes::{BufMut, Bytes, BytesMut};
use leofs_engine::{Hlc, PutValue, Summary};

use super::codec::{Extras, FORMAT_VERSION, Reader, Writer};
use super::{EncodeError, KEY_SEP, LayoutError, ObjectAcl};

/// Namespace byte of version records.
pub const NS_VERSION: u8 = b'v';
/// Bytes of a version's stamp in its key (physical u64, logical u32, issuer u32, inverted).
pub const VERSION_STAMP_BYTES: usize = 16;
/// `Summary::tag` kind of a delete marker (a version with no data).
pub const TAG_DELETE_MARKER: u32 = 8;
/// Characters of a version id in base32hex (16 bytes, no padding).
pub const VERSION_ID_CHARS: usize = 26;
/// The version id of a key's object record.
pub const NULL_VERSION_ID: &str = "null";

/// A bucket's versioning state, as storage acts on a write into it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Versioning {
    /// Never enabled: writes replace the object record (no version is kept).
    #[default]
    Off,
    /// Every write creates a version.
    Enabled,
    /// Writes replace the null version (the object record); other versions stay.
    Suspended,
}

impl Versioning {
    /// Its number in a wire frame (0 off, 1 enabled, 2 suspended).
    pub fn to_wire(self) -> u8 {
        match self {
            Versioning::Off => 0,
            Versioning::Enabled => 1,
            Versioning::Suspended => 2,
        }
    }

    /// The state a wire frame names; None for an unknown number.
    pub fn from_wire(value: u8) -> Option<Self> {
        match value {
            0 => Some(Versioning::Off),
            1 => Some(Versioning::Enabled),
            2 => Some(Versioning::Suspended),
            _ => None,
        }
    }
}

/// One version of a key: its null version (the object record) or a stamped version record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VersionRef {
    /// The object record (`versionId=null`).
    Null,
    /// The version record stamped with this HLC.
    Stamped(Hlc),
}

/// A version id a client sent that is not one this store issues (S3 `InvalidArgument`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid version id: {0:?}")]
pub struct BadVersionId(pub String);

impl VersionRef {
    /// Its S3 version id: `null`, or the inverted stamp in base32hex (ids sort newest first).
    pub fn id(&self) -> String {
        match self {
            VersionRef::Null => NULL_VERSION_ID.to_owned(),
            VersionRef::Stamped(hlc) => base32hex(&inverted(*hlc)),
        }
    }

    /// Parses an S3 version id issued by [`VersionRef::id`].
    pub fn parse(id: &str) -> Result<Self, BadVersionId> {
        if id == NULL_VERSION_ID {
            return Ok(VersionRef::Null);
        }
        let bytes = from_base32hex(id).ok_or_else(|| BadVersionId(id.to_owned()))?;
        Ok(VersionRef::Stamped(uninverted(&bytes)))
    }
}

/// The 16 key bytes of a version stamped `hlc`: each field's complement, big-endian.
pub fn inverted(hlc: Hlc) -> [u8; VERSION_STAMP_BYTES] {
    let mut out = [0u8; VERSION_STAMP_BYTES];
    out[..8].copy_from_slice(&(!hlc.physical_us).to_be_bytes());
    out[8..12].copy_from_slice(&(!hlc.logical).to_be_bytes());
    out[12..].copy_from_slice(&(!hlc.node_id).to_be_bytes());
    out
}

/// The HLC of a version's 16 key bytes (the inverse of [`inverted`]).
pub fn uninverted(bytes: &[u8; VERSION_STAMP_BYTES]) -> Hlc {
    let field = |range: std::ops::Range<usize>| {
        let mut word = [0u8; 8];
        word[8 - range.len()..].copy_from_slice(&bytes[range]);
        !u64::from_be_bytes(word)
    };
    Hlc {
        physical_us: field(0..8),
        logical: field(8..12) as u32,
        node_id: field(12..16) as u32,
    }
}

const BASE32HEX: &[u8; 32] = b"0123456789ABCDEFGHIJKLMNOPQRSTUV";

/// RFC 4648 §7 base32hex without padding: 16 bytes are 26 characters that sort as the bytes.
fn base32hex(bytes: &[u8; VERSION_STAMP_BYTES]) -> String {
    let mut out = String::with_capacity(VERSION_ID_CHARS);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32HEX[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32HEX[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes [`base32hex`]'s output; None unless `text` is exactly such an id (the unused low
/// bits of the last character zero, so that every id has one spelling).
fn from_base32hex(text: &str) -> Option<[u8; VERSION_STAMP_BYTES]> {
    if text.len() != VERSION_ID_CHARS {
        return None;
    }
    let mut out = [0u8; VERSION_STAMP_BYTES];
    let (mut acc, mut bits, mut at) = (0u32, 0u32, 0usize);
    for c in text.bytes() {
        let value = BASE32HEX.iter().position(|&d| d == c)? as u32;
        acc = (acc << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(at)? = (acc >> bits) as u8;
            at += 1;
        }
        acc &= (1 << bits) - 1;
    }
    (at == VERSION_STAMP_BYTES && acc == 0).then_some(out)
}

/// Engine key prefix of every version of (bucket, key): `v` bucket 0x00 key 0x00.
pub fn version_prefix(bucket: &str, key: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(3 + bucket.len() + key.len() + VERSION_STAMP_BYTES);
    out.put_u8(NS_VERSION);
    out.put_slice(bucket.as_bytes());
    out.put_u8(KEY_SEP);
    out.put_slice(key.as_bytes());
    out.put_u8(KEY_SEP);
    out.freeze()
}

/// Engine key of the version of (bucket, key) stamped `hlc`.
pub fn version_key(bucket: &str, key: &str, hlc: Hlc) -> Bytes {
    stamped_key(NS_VERSION, bucket, key, hlc)
}

/// `namespace` bucket 0x00 key 0x00 inverted-HLC(16): the key of a record of the version of
/// (bucket, key) stamped `hlc`.
fn stamped_key(namespace: u8, bucket: &str, key: &str, hlc: Hlc) -> Bytes {
    let mut out = BytesMut::with_capacity(3 + bucket.len() + key.len() + VERSION_STAMP_BYTES);
    out.put_u8(namespace);
    out.put_slice(bucket.as_bytes());
    out.put_u8(KEY_SEP);
    out.put_slice(key.as_bytes());
    out.put_u8(KEY_SEP);
    out.put_slice(&inverted(hlc));
    out.freeze()
}

/// Engine key prefix of every version of every key of `bucket`: `v` bucket 0x00.
pub fn bucket_version_prefix(bucket: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bucket.len() + 2);
    out.push(NS_VERSION);
    out.extend_from_slice(bucket.as_bytes());
    out.push(KEY_SEP);
    out
}

/// Namespace byte of version attribute records: the tags and ACL a version has been given since
/// it was written (a version record is never rewritten; shard/VERSIONING.md §10a).
pub const NS_ATTRIBUTES: u8 = b'a';
/// `Summary::tag` kind of a version attribute record.
pub const TAG_ATTRIBUTES: u32 = 9;

/// Engine key of the attribute record of the version of (bucket, key) stamped `hlc` (a version
/// record's stamp, or the object record's HLC for the null version): `a` bucket 0x00 key 0x00
/// inverted-HLC(16), placed in the partition of the key's object record. A stamp names one
/// record for ever, so an attribute record never applies to another version.
pub fn attributes_key(bucket: &str, key: &str, hlc: Hlc) -> Bytes {
    stamped_key(NS_ATTRIBUTES, bucket, key, hlc)
}

/// What a version attribute record holds: the version's tags and ACL as they now are, in place
/// of those its own record was written with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionAttributes {
    /// The version's tags (S3 object tagging).
    pub tags: Vec<(String, String)>,
    /// The version's ACL (None: its bucket's canned ACL, as for a record written without one).
    pub acl: Option<ObjectAcl>,
}

impl VersionAttributes {
    /// The record that stores them: the format version, then the manifest's optional fields 1
    /// (tags) and 5 (ACL); summary kind [`TAG_ATTRIBUTES`].
    pub fn to_record(&self) -> Result<PutValue, EncodeError> {
        let mut w = Writer::new();
        w.extras(&Extras {
            tags: self.tags.clone(),
            acl: self.acl.clone(),
            ..Extras::default()
        })?;
        Ok(PutValue {
            meta: w.0.freeze(),
            body: Bytes::new(),
            summary: Summary {
                size: 0,
                digest: [0; 16],
                tag: TAG_ATTRIBUTES,
            },
            hlc: None,
        })
    }

    /// Parses the meta of a record written by [`VersionAttributes::to_record`].
    pub fn decode(meta: &[u8]) -> Result<Self, LayoutError> {
        let extras = Reader::new(meta, "version attributes")?.extras()?;
        Ok(Self {
            tags: extras.tags,
            acl: extras.acl,
        })
    }
}

/// The (bucket, key, stamp) a version key names; None if `version_key` is not one.
pub fn parse_version_key(version_key: &[u8]) -> Option<(&str, &str, Hlc)> {
    if version_key.first() != Some(&NS_VERSION) || version_key.len() < 3 + VERSION_STAMP_BYTES {
        return None;
    }
    let (names, stamp) = version_key[1..].split_at(version_key.len() - 1 - VERSION_STAMP_BYTES);
    let (names, last) = names.split_at(names.len() - 1);
    if last != [KEY_SEP] {
        return None;
    }
    let sep = names.iter().position(|&b| b == KEY_SEP)?;
    let bucket = std::str::from_utf8(&names[..sep]).ok()?;
    let key = std::str::from_utf8(&names[sep + 1..]).ok()?;
    Some((bucket, key, uninverted(stamp.try_into().ok()?)))
}

/// The record of a delete marker: no data, kind [`TAG_DELETE_MARKER`] in its summary, so that
/// the index alone tells a marker from an object.
pub fn delete_marker(hlc: Option<Hlc>) -> PutValue {
    PutValue {
        meta: Bytes::from_static(&[FORMAT_VERSION]),
        body: Bytes::new(),
        summary: Summary {
            size: 0,
            digest: [0; 16],
            tag: TAG_DELETE_MARKER,
        },
        hlc,
    }
}

/// Whether a record's summary tag is a delete marker's.
pub fn is_delete_marker(tag: u32) -> bool {
    tag & 0xff == TAG_DELETE_MARKER
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hlc(physical_us: u64, logical: u32, node_id: u32) -> Hlc {
        Hlc {
            physical_us,
            logical,
            node_id,
        }
    }

    #[test]
    fn version_ids_round_trip_and_sort_newest_first() {
        let stamps = [
            hlc(1_700_000_000_000_000, 0, 1),
            hlc(1_700_000_000_000_000, 0, 2),
            hlc(1_700_000_000_000_000, 1, 0),
            hlc(1_700_000_000_000_001, 0, 0),
            hlc(u64::MAX, u32::MAX, u32::MAX),
            hlc(0, 0, 0),
        ];
        let mut ids = Vec::new();
        for s in stamps {
            let id = VersionRef::Stamped(s).id();
            assert_eq!(id.len(), VERSION_ID_CHARS);
            assert!(id.bytes().all(|b| BASE32HEX.contains(&b)));
            assert_eq!(VersionRef::parse(&id), Ok(VersionRef::Stamped(s)));
            ids.push((s, id));
        }
        let mut by_id = ids.clone();
        by_id.sort_by(|a, b| a.1.cmp(&b.1));
        let mut by_stamp = ids;
        by_stamp.sort_by_key(|b| std::cmp::Reverse(b.0));
        assert_eq!(by_id, by_stamp);
        assert_eq!(VersionRef::parse("null"), Ok(VersionRef::Null));
        assert_eq!(VersionRef::Null.id(), "null");
    }

    #[test]
    fn version_attributes_round_trip_and_sort_beside_nothing_else() {
        use crate::object::{Grant, Grantee, Permission};
        let attributes = VersionAttributes {
            tags: vec![("team".into(), "web".into())],
            acl: Some(ObjectAcl {
                owner: "alice".into(),
                grants: vec![Grant {
                    grantee: Grantee::AllUsers,
                    permission: Permission::Read,
                }],
            }),
        };
        let record = attributes.to_record().unwrap();
        assert_eq!(record.summary.tag, TAG_ATTRIBUTES);
        assert_eq!(VersionAttributes::decode(&record.meta).unwrap(), attributes);
        let none = VersionAttributes::default().to_record().unwrap();
        assert_eq!(&none.meta[..], &[FORMAT_VERSION]);
        assert_eq!(
            VersionAttributes::decode(&none.meta).unwrap(),
            VersionAttributes::default()
        );
        assert!(VersionAttributes::decode(&[FORMAT_VERSION, 1, 9]).is_err());
        // Its key is the version key's but for the namespace: it is in no version range.
        let stamp = hlc(5, 1, 2);
        let (akey, vkey) = (
            attributes_key("b", "k", stamp),
            version_key("b", "k", stamp),
        );
        assert_eq!(akey[0], NS_ATTRIBUTES);
        assert_eq!(akey[1..], vkey[1..]);
        assert!(!akey.starts_with(&version_prefix("b", "k")));
    }

    #[test]
    fn malformed_version_ids_are_refused() {
        let good = VersionRef::Stamped(hlc(5, 6, 7)).id();
        for bad in [
            "",
            "NULL",
            &good[1..],
            &format!("{good}0"),
            &good.to_lowercase(),
            &format!("{}W", &good[..25]),
            // The last character's unused low bits set: a second spelling of an id.
            &format!("{}1", &good[..25]),
        ] {
            if bad == good {
                continue;
            }
            assert!(VersionRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn version_keys_parse_back_and_a_keys_versions_are_one_range_newest_first() {
        let older = version_key("b", "photo", hlc(10, 0, 1));
        let newer = version_key("b", "photo", hlc(11, 0, 1));
        assert!(newer < older);
        assert!(older.starts_with(&version_prefix("b", "photo")));
        assert!(
            !version_key("b", "photo2", hlc(1, 0, 0)).starts_with(&version_prefix("b", "photo"))
        );
        assert!(older.starts_with(&bucket_version_prefix("b")));
        assert_eq!(
            parse_version_key(&older),
            Some(("b", "photo", hlc(10, 0, 1)))
        );
        assert_eq!(parse_version_key(b"o b\0photo"), None);
        let marker = delete_marker(None);
        assert!(is_delete_marker(marker.summary.tag));
        assert!(!is_delete_marker(super::super::TAG_INLINE));
    }
}
