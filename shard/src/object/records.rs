//! Multipart upload records (what CreateMultipartUpload was given) and part records (one
//! uploaded part's chunk run and checksums).

use bytes::{BufMut, Bytes};

use super::codec::{Extras, Reader, Writer};
use super::{
    ChecksumKind, ChecksumType, ChunkRun, EncodeError, Headers, LayoutError, StoredChecksum,
};

/// An upload record's metadata: what CreateMultipartUpload was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadMeta {
    /// Headers and user metadata for the final object.
    pub headers: Headers,
    /// Checksum algorithm requested at creation, if any.
    pub checksum_algorithm: Option<ChecksumKind>,
    /// How the object's checksum is made from the parts (set when an algorithm is).
    pub checksum_type: Option<ChecksumType>,
    /// User id of the initiator.
    pub initiator: String,
}

/// A part record's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartMeta {
    /// Where the part's bytes are (its `md5` is the part ETag).
    pub run: ChunkRun,
    /// Checksums computed for the part.
    pub checksums: Vec<StoredChecksum>,
}

impl UploadMeta {
    /// Serializes an upload record's metadata.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut w = Writer::for_headers(&self.headers);
        w.headers(&self.headers)?;
        w.0.put_u8(self.checksum_algorithm.map_or(0, |k| k as u8));
        w.str("the initiator", &self.initiator)?;
        w.extras(&Extras {
            tags: self.headers.tags.clone(),
            acl: self.headers.acl.clone(),
            sse_c: self.headers.sse_c.clone(),
            completed_upload: None,
            checksum_type: self.checksum_type,
            part_checksums: Vec::new(),
        })?;
        Ok(w.0.freeze())
    }

    /// Parses an upload record's metadata.
    pub fn decode(buf: &[u8]) -> Result<Self, LayoutError> {
        let mut r = Reader::new(buf, "upload record")?;
        let mut headers = r.headers()?;
        let checksum_algorithm = match r.u8()? {
            0 => None,
            v => Some(ChecksumKind::from_u8(v).ok_or_else(|| r.corrupt("unknown checksum kind"))?),
        };
        let initiator = r.str()?;
        let extras = r.extras()?;
        headers.tags = extras.tags;
        headers.acl = extras.acl;
        headers.sse_c = extras.sse_c;
        // An upload recorded before checksum types existed makes S3's default for its algorithm.
        let checksum_type = checksum_algorithm.map(|kind| {
            extras
                .checksum_type
                .unwrap_or(kind.default_multipart_type())
        });
        Ok(Self {
            headers,
            checksum_algorithm,
            checksum_type,
            initiator,
        })
    }
}

impl PartMeta {
    /// Serializes a part record's metadata.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut w = Writer::new();
        w.run(&self.run);
        w.checksums(&self.checksums)?;
        Ok(w.0.freeze())
    }

    /// Parses a part record's metadata.
    pub fn decode(buf: &[u8]) -> Result<Self, LayoutError> {
        let mut r = Reader::new(buf, "part record")?;
        let run = r.run()?;
        let checksums = r.checksums()?;
        Ok(Self { run, checksums })
    }
}
