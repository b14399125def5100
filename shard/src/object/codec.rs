//! The binary encoding of manifests, upload and part records (little-endian; strings are a u16
//! length and UTF-8; `opt` is a 0/1 byte then the value). Encoding refuses what it cannot
//! store whole ([`EncodeError`]) rather than truncating it; decoding refuses anything
//! malformed ([`LayoutError`]).

use bytes::{BufMut, BytesMut};

use super::{
    ChecksumKind, ChecksumType, ChunkRun, Grant, Grantee, Headers, LayoutError, MAX_ACL_GRANTS,
    MAX_OBJECT_TAGS, ObjectAcl, Permission, SseC, StoredChecksum, VERSION_ID_BYTES, VersionId,
    base64_decode, base64_encode,
};

/// Current version of the manifest/upload/part encodings.
pub const FORMAT_VERSION: u8 = 1;
/// The version of a manifest or upload record that carries SSE-C (field 6): the same encoding,
/// numbered so that a release that would skip the field (and serve ciphertext, or rewrite the
/// record without its salt) refuses the record instead.
pub const FORMAT_VERSION_SSE_C: u8 = 2;
/// Longest string field the codec stores (bytes).
pub const MAX_FIELD_BYTES: usize = 8 * 1024;
/// Most user metadata pairs stored with an object.
pub const MAX_USER_META_PAIRS: usize = u16::MAX as usize;

/// A record the codec cannot store whole: it is refused, never truncated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string field is longer than [`MAX_FIELD_BYTES`].
    #[error("{field} is {bytes} bytes long; at most {limit} bytes can be stored")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A part checksum that is not base64 of its algorithm's digest, or not of the others'
    /// algorithm.
    #[error("a part checksum is not a base64 digest of the upload's algorithm")]
    BadChecksum,
    /// More items than the encoding can count.
    #[error("{count} {what} given; at most {limit} can be stored")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// How many were given.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

/// Field id of an object's tags in a record's optional fields.
const FIELD_TAGS: u8 = 1;
/// Field id of the multipart upload a manifest completed.
const FIELD_COMPLETED_UPLOAD: u8 = 2;
/// Field id of an upload's checksum type.
const FIELD_CHECKSUM_TYPE: u8 = 3;
/// Field id of a multipart object's part checksums.
const FIELD_PART_CHECKSUMS: u8 = 4;
/// Field id of an object's (or an upload's object's) ACL.
const FIELD_ACL: u8 = 5;
/// Field id of an object's (or an upload's) SSE-C salt and key hash.
const FIELD_SSE_C: u8 = 6;

/// Grantee kinds in an ACL field.
const GRANTEE_USER: u8 = 0;
const GRANTEE_ALL_USERS: u8 = 1;
const GRANTEE_AUTHENTICATED_USERS: u8 = 2;

/// The optional fields at the end of a manifest or an upload record.
#[derive(Debug, Default)]
pub(super) struct Extras {
    /// The object's tags.
    pub(super) tags: Vec<(String, String)>,
    /// The object's ACL.
    pub(super) acl: Option<ObjectAcl>,
    /// The object's SSE-C salt and key hash.
    pub(super) sse_c: Option<SseC>,
    /// The id of the multipart upload whose completion wrote the manifest.
    pub(super) completed_upload: Option<String>,
    /// How an upload's object checksum is to be made.
    pub(super) checksum_type: Option<ChecksumType>,
    /// A multipart object's part checksums, all of one algorithm, in part order.
    pub(super) part_checksums: Vec<StoredChecksum>,
}

/// Builds one encoded record, starting with the format version.
pub(super) struct Writer(pub(super) BytesMut);

impl Writer {
    pub(super) fn new() -> Self {
        Self::with_version(FORMAT_VERSION)
    }

    /// A record of format `version` ([`FORMAT_VERSION`], or [`FORMAT_VERSION_SSE_C`] for one a
    /// release without SSE-C must not read).
    pub(super) fn with_version(version: u8) -> Self {
        let mut out = BytesMut::with_capacity(128);
        out.put_u8(version);
        Self(out)
    }

    /// A record carrying `headers`: of [`FORMAT_VERSION_SSE_C`] when they hold SSE-C.
    pub(super) fn for_headers(headers: &Headers) -> Self {
        Self::with_version(if headers.sse_c.is_some() {
            FORMAT_VERSION_SSE_C
        } else {
            FORMAT_VERSION
        })
    }

    /// A count of `count` items in the integer type `T`, or the error naming `what`.
    pub(super) fn count<T: TryFrom<usize>>(
        count: usize,
        what: &'static str,
        limit: usize,
    ) -> Result<T, EncodeError> {
        T::try_from(count)
            .ok()
            .filter(|_| count <= limit)
            .ok_or(EncodeError::TooMany { what, count, limit })
    }

    pub(super) fn str(&mut self, field: &'static str, s: &str) -> Result<(), EncodeError> {
        if s.len() > MAX_FIELD_BYTES {
            return Err(EncodeError::FieldTooLong {
                field,
                bytes: s.len(),
                limit: MAX_FIELD_BYTES,
            });
        }
        // MAX_FIELD_BYTES fits a u16.
        self.0.put_u16_le(s.len() as u16);
        self.0.put_slice(s.as_bytes());
        Ok(())
    }

    pub(super) fn opt_str(
        &mut self,
        field: &'static str,
        s: Option<&String>,
    ) -> Result<(), EncodeError> {
        match s {
            Some(s) => {
                self.0.put_u8(1);
                self.str(field, s)
            }
            None => {
                self.0.put_u8(0);
                Ok(())
            }
        }
    }

    pub(super) fn headers(&mut self, h: &Headers) -> Result<(), EncodeError> {
        self.opt_str("Content-Type", h.content_type.as_ref())?;
        self.opt_str("Cache-Control", h.cache_control.as_ref())?;
        self.opt_str("Content-Disposition", h.content_disposition.as_ref())?;
        self.opt_str("Content-Encoding", h.content_encoding.as_ref())?;
        self.opt_str("Content-Language", h.content_language.as_ref())?;
        self.opt_str("Expires", h.expires.as_ref())?;
        let pairs: u16 = Self::count(
            h.user_meta.len(),
            "user metadata pairs",
            MAX_USER_META_PAIRS,
        )?;
        self.0.put_u16_le(pairs);
        for (k, v) in &h.user_meta {
            self.str("a user metadata name", k)?;
            self.str("a user metadata value", v)?;
        }
        Ok(())
    }

    pub(super) fn checksums(&mut self, c: &[StoredChecksum]) -> Result<(), EncodeError> {
        let count: u8 = Self::count(c.len(), "checksums", ChecksumKind::ALL.len())?;
        self.0.put_u8(count);
        for cs in c {
            self.0.put_u8(cs.kind as u8);
            self.str("a checksum", &cs.value)?;
        }
        Ok(())
    }

    /// The optional fields that end a manifest or an upload record, each as a u8 field id, a
    /// u32 length and that many bytes (a reader skips ids it does not know). Nothing is written
    /// for a field that is empty, so records without them are what they were before they
    /// existed.
    pub(super) fn extras(&mut self, extras: &Extras) -> Result<(), EncodeError> {
        if !extras.tags.is_empty() {
            let count: u8 = Self::count(extras.tags.len(), "tags", MAX_OBJECT_TAGS)?;
            let at = self.open_field(FIELD_TAGS);
            self.0.put_u8(count);
            for (k, v) in &extras.tags {
                self.str("a tag key", k)?;
                self.str("a tag value", v)?;
            }
            self.close_field(at);
        }
        if let Some(acl) = &extras.acl {
            let count: u8 = Self::count(acl.grants.len(), "ACL grants", MAX_ACL_GRANTS)?;
            let at = self.open_field(FIELD_ACL);
            self.str("the object owner", &acl.owner)?;
            self.0.put_u8(count);
            for grant in &acl.grants {
                match &grant.grantee {
                    Grantee::User(id) => {
                        self.0.put_u8(GRANTEE_USER);
                        self.str("a grantee", id)?;
                    }
                    Grantee::AllUsers => self.0.put_u8(GRANTEE_ALL_USERS),
                    Grantee::AuthenticatedUsers => self.0.put_u8(GRANTEE_AUTHENTICATED_USERS),
                }
                self.0.put_u8(grant.permission as u8);
            }
            self.close_field(at);
        }
        if let Some(sse) = &extras.sse_c {
            let at = self.open_field(FIELD_SSE_C);
            self.0.put_slice(&sse.salt);
            self.0.put_slice(&sse.key_hmac);
            self.close_field(at);
        }
        if let Some(upload_id) = &extras.completed_upload {
            let at = self.open_field(FIELD_COMPLETED_UPLOAD);
            self.str("the completed upload's id", upload_id)?;
            self.close_field(at);
        }
        if let Some(how) = extras.checksum_type {
            let at = self.open_field(FIELD_CHECKSUM_TYPE);
            self.0.put_u8(how as u8);
            self.close_field(at);
        }
        if let Some(first) = extras.part_checksums.first() {
            let at = self.open_field(FIELD_PART_CHECKSUMS);
            self.0.put_u8(first.kind as u8);
            for sum in &extras.part_checksums {
                let digest = base64_decode(&sum.value)
                    .filter(|d| sum.kind == first.kind && d.len() == first.kind.digest_len())
                    .ok_or(EncodeError::BadChecksum)?;
                self.0.put_slice(&digest);
            }
            self.close_field(at);
        }
        Ok(())
    }

    /// Starts a field: its id and a length filled in by [`Writer::close_field`].
    fn open_field(&mut self, id: u8) -> usize {
        self.0.put_u8(id);
        self.0.put_u32_le(0);
        self.0.len()
    }

    fn close_field(&mut self, start: usize) {
        // A field holds at most a few strings of MAX_FIELD_BYTES: its length fits a u32.
        let len = (self.0.len() - start) as u32;
        self.0[start - 4..start].copy_from_slice(&len.to_le_bytes());
    }

    pub(super) fn run(&mut self, s: &ChunkRun) {
        self.0.put_slice(&s.version.0);
        self.0.put_u64_le(s.size_bytes);
        self.0.put_u64_le(s.chunk_size_bytes);
        self.0.put_slice(&s.md5);
    }
}

/// Reads one encoded record, after checking its format version.
pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8], what: &'static str) -> Result<Self, LayoutError> {
        let mut r = Self { buf, what };
        let version = r.u8()?;
        if version != FORMAT_VERSION && version != FORMAT_VERSION_SSE_C {
            return Err(r.corrupt("unknown format version"));
        }
        Ok(r)
    }
    pub(super) fn corrupt(&self, detail: &'static str) -> LayoutError {
        LayoutError {
            what: self.what,
            detail,
        }
    }
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], LayoutError> {
        if self.buf.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(super) fn u8(&mut self) -> Result<u8, LayoutError> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, LayoutError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub(super) fn u32(&mut self) -> Result<u32, LayoutError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    pub(super) fn u64(&mut self) -> Result<u64, LayoutError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub(super) fn md5(&mut self) -> Result<[u8; 16], LayoutError> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(a)
    }
    pub(super) fn str(&mut self) -> Result<String, LayoutError> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("string is not UTF-8"))
    }
    pub(super) fn opt_str(&mut self) -> Result<Option<String>, LayoutError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(self.corrupt("bad option tag")),
        }
    }
    pub(super) fn headers(&mut self) -> Result<Headers, LayoutError> {
        let content_type = self.opt_str()?;
        let cache_control = self.opt_str()?;
        let content_disposition = self.opt_str()?;
        let content_encoding = self.opt_str()?;
        let content_language = self.opt_str()?;
        let expires = self.opt_str()?;
        let n = usize::from(self.u16()?);
        let mut user_meta = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            user_meta.push((self.str()?, self.str()?));
        }
        Ok(Headers {
            content_type,
            cache_control,
            content_disposition,
            content_encoding,
            content_language,
            expires,
            user_meta,
            tags: Vec::new(),
            acl: None,
            sse_c: None,
        })
    }
    pub(super) fn checksums(&mut self) -> Result<Vec<StoredChecksum>, LayoutError> {
        let n = self.u8()?;
        let mut out = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let kind = ChecksumKind::from_u8(self.u8()?)
                .ok_or_else(|| self.corrupt("unknown checksum kind"))?;
            out.push(StoredChecksum {
                kind,
                value: self.str()?,
            });
        }
        Ok(out)
    }
    /// The optional fields at the end of a record ([`Writer::extras`]); fields of an unknown
    /// id are skipped.
    pub(super) fn extras(&mut self) -> Result<Extras, LayoutError> {
        let mut extras = Extras::default();
        while !self.buf.is_empty() {
            let id = self.u8()?;
            let len = usize::try_from(self.u32()?).map_err(|_| self.corrupt("field length"))?;
            let body = self.take(len)?;
            let mut field = Reader {
                buf: body,
                what: self.what,
            };
            match id {
                FIELD_TAGS => {
                    let n = usize::from(field.u8()?);
                    if n == 0 || n > MAX_OBJECT_TAGS {
                        return Err(self.corrupt("bad tag count"));
                    }
                    extras.tags = Vec::with_capacity(n);
                    for _ in 0..n {
                        extras.tags.push((field.str()?, field.str()?));
                    }
                }
                FIELD_ACL => {
                    let owner = field.str()?;
                    let n = usize::from(field.u8()?);
                    if n > MAX_ACL_GRANTS {
                        return Err(self.corrupt("bad grant count"));
                    }
                    let mut grants = Vec::with_capacity(n);
                    for _ in 0..n {
                        let grantee = match field.u8()? {
                            GRANTEE_USER => Grantee::User(field.str()?),
                            GRANTEE_ALL_USERS => Grantee::AllUsers,
                            GRANTEE_AUTHENTICATED_USERS => Grantee::AuthenticatedUsers,
                            _ => return Err(self.corrupt("unknown grantee kind")),
                        };
                        let permission = Permission::from_u8(field.u8()?)
                            .ok_or_else(|| self.corrupt("unknown permission"))?;
                        grants.push(Grant {
                            grantee,
                            permission,
                        });
                    }
                    extras.acl = Some(ObjectAcl { owner, grants });
                }
                FIELD_SSE_C => {
                    let mut salt = [0u8; 16];
                    salt.copy_from_slice(field.take(16)?);
                    let mut key_hmac = [0u8; 32];
                    key_hmac.copy_from_slice(field.take(32)?);
                    extras.sse_c = Some(SseC { salt, key_hmac });
                }
                FIELD_COMPLETED_UPLOAD => extras.completed_upload = Some(field.str()?),
                FIELD_CHECKSUM_TYPE => {
                    let v = field.u8()?;
                    extras.checksum_type = Some(
                        ChecksumType::from_u8(v)
                            .ok_or_else(|| self.corrupt("unknown checksum type"))?,
                    );
                }
                FIELD_PART_CHECKSUMS => {
                    let kind = ChecksumKind::from_u8(field.u8()?)
                        .ok_or_else(|| self.corrupt("unknown checksum kind"))?;
                    let digests = std::mem::take(&mut field.buf);
                    if digests.is_empty() || !digests.len().is_multiple_of(kind.digest_len()) {
                        return Err(self.corrupt("bad part checksums length"));
                    }
                    extras.part_checksums = digests
                        .chunks(kind.digest_len())
                        .map(|d| StoredChecksum {
                            kind,
                            value: base64_encode(d),
                        })
                        .collect();
                }
                _ => continue,
            }
            if !field.buf.is_empty() {
                return Err(self.corrupt("a field is longer than its content"));
            }
        }
        Ok(extras)
    }

    pub(super) fn run(&mut self) -> Result<ChunkRun, LayoutError> {
        let mut version = [0u8; VERSION_ID_BYTES];
        version.copy_from_slice(self.take(VERSION_ID_BYTES)?);
        let size_bytes = self.u64()?;
        let chunk_size_bytes = self.u64()?;
        if chunk_size_bytes == 0 && size_bytes > 0 {
            return Err(self.corrupt("zero chunk size"));
        }
        Ok(ChunkRun {
            version: VersionId(version),
            size_bytes,
            chunk_size_bytes,
            md5: self.md5()?,
        })
    }
}
