//! Multipart checksums, as S3 makes them: what CreateMultipartUpload asks for (an algorithm and
//! a checksum type), and the object checksum CompleteMultipartUpload makes from the parts'
//! checksums without reading the object: *composite* (the checksum of the concatenated part
//! digests, written with a `-N` part count suffix) or *full-object* (the parts' CRCs combined
//! into the CRC of the whole object's bytes).

use s3s::S3ErrorCode;
use s3s::crypto::Checksum as _;

use crate::error::GatewayError;
use crate::layout::{ChecksumKind, ChecksumType, StoredChecksum, base64_decode, base64_encode};

fn invalid_request(message: String) -> GatewayError {
    GatewayError::s3(S3ErrorCode::InvalidRequest, message)
}

/// The algorithm and checksum type of a new upload from CreateMultipartUpload's
/// `x-amz-checksum-algorithm` and `x-amz-checksum-type`, refused as S3 refuses them: a type
/// without an algorithm, an unknown type, or a type the algorithm cannot make.
pub fn upload_checksum(
    algorithm: Option<&s3s::dto::ChecksumAlgorithm>,
    how: Option<&s3s::dto::ChecksumType>,
) -> Result<Option<(ChecksumKind, ChecksumType)>, GatewayError> {
    let kind = match algorithm {
        Some(a) => Some(ChecksumKind::from_name(a.as_str()).ok_or_else(|| {
            GatewayError::s3(
                S3ErrorCode::InvalidArgument,
                format!("unknown checksum algorithm {}", a.as_str()),
            )
        })?),
        None => None,
    };
    let how = how.map(|t| checksum_type_of(t.as_str())).transpose()?;
    match (kind, how) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(invalid_request(
            "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.".into(),
        )),
        (Some(kind), how) => {
            let how = how.unwrap_or(kind.default_multipart_type());
            if !kind.supports(how) {
                return Err(invalid_request(format!(
                    "The {} checksum type cannot be used with the {} checksum algorithm.",
                    how.name(),
                    kind.name().to_ascii_lowercase()
                )));
            }
            Ok(Some((kind, how)))
        }
    }
}

/// An `x-amz-checksum-type` value.
pub fn checksum_type_of(value: &str) -> Result<ChecksumType, GatewayError> {
    ChecksumType::from_name(value)
        .ok_or_else(|| invalid_request("Value for x-amz-checksum-type header is invalid.".into()))
}

/// The object checksum of a multipart object from its parts' checksums of `kind` (with each
/// part's length in bytes), made `how`.
pub fn object_checksum(
    kind: ChecksumKind,
    how: ChecksumType,
    parts: &[(&StoredChecksum, u64)],
) -> Result<StoredChecksum, GatewayError> {
    let digests = parts
        .iter()
        .map(|(sum, _)| {
            base64_decode(&sum.value)
                .filter(|d| sum.kind == kind && d.len() == kind.digest_len())
                .ok_or(GatewayError::Corrupt {
                    what: "part record",
                    detail: "a part checksum is not a digest of the upload's algorithm",
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let value = match how {
        ChecksumType::Composite => {
            let joined = digests.concat();
            let digest = match kind {
                ChecksumKind::Crc32 => s3s::crypto::Crc32::checksum(&joined).to_vec(),
                ChecksumKind::Crc32c => s3s::crypto::Crc32c::checksum(&joined).to_vec(),
                ChecksumKind::Crc64Nvme => s3s::crypto::Crc64Nvme::checksum(&joined).to_vec(),
                ChecksumKind::Sha1 => s3s::crypto::Sha1::checksum(&joined).to_vec(),
                ChecksumKind::Sha256 => s3s::crypto::Sha256::checksum(&joined).to_vec(),
            };
            format!("{}-{}", base64_encode(&digest), parts.len())
        }
        ChecksumType::FullObject => {
            let algorithm = match kind {
                ChecksumKind::Crc32 => crc_fast::CrcAlgorithm::Crc32IsoHdlc,
                ChecksumKind::Crc32c => crc_fast::CrcAlgorithm::Crc32Iscsi,
                ChecksumKind::Crc64Nvme => crc_fast::CrcAlgorithm::Crc64Nvme,
                // Refused at creation (ChecksumKind::supports): only a corrupt record asks.
                ChecksumKind::Sha1 | ChecksumKind::Sha256 => {
                    return Err(GatewayError::Corrupt {
                        what: "upload record",
                        detail: "a full-object checksum of a hash algorithm",
                    });
                }
            };
            let mut whole = 0u64;
            for (digest, (_, size_bytes)) in digests.iter().zip(parts) {
                let part = digest.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b));
                whole = crc_fast::checksum_combine(algorithm, whole, part, *size_bytes);
            }
            let bytes = whole.to_be_bytes();
            base64_encode(&bytes[bytes.len() - kind.digest_len()..])
        }
    };
    Ok(StoredChecksum { kind, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum_of(kind: ChecksumKind, data: &[u8]) -> StoredChecksum {
        let digest = match kind {
            ChecksumKind::Crc32 => s3s::crypto::Crc32::checksum(data).to_vec(),
            ChecksumKind::Crc32c => s3s::crypto::Crc32c::checksum(data).to_vec(),
            ChecksumKind::Crc64Nvme => s3s::crypto::Crc64Nvme::checksum(data).to_vec(),
            ChecksumKind::Sha1 => s3s::crypto::Sha1::checksum(data).to_vec(),
            ChecksumKind::Sha256 => s3s::crypto::Sha256::checksum(data).to_vec(),
        };
        StoredChecksum {
            kind,
            value: base64_encode(&digest),
        }
    }

    #[test]
    fn full_object_crcs_combine_to_the_crc_of_the_whole_body() {
        let body: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for kind in [
            ChecksumKind::Crc32,
            ChecksumKind::Crc32c,
            ChecksumKind::Crc64Nvme,
        ] {
            for cuts in [&[][..], &[1][..], &[4096, 4097, 9999][..], &[0, 5000][..]] {
                let mut bounds = vec![0];
                bounds.extend_from_slice(cuts);
                bounds.push(body.len());
                let sums: Vec<_> = bounds
                    .windows(2)
                    .map(|w| sum_of(kind, &body[w[0]..w[1]]))
                    .collect();
                let parts: Vec<_> = sums
                    .iter()
                    .zip(bounds.windows(2))
                    .map(|(s, w)| (s, (w[1] - w[0]) as u64))
                    .collect();
                let whole = object_checksum(kind, ChecksumType::FullObject, &parts).unwrap();
                assert_eq!(whole, sum_of(kind, &body), "{kind:?} cut at {cuts:?}");
            }
        }
    }

    #[test]
    fn composite_checksums_hash_the_part_digests_and_name_the_part_count() {
        let (a, b) = (b"first part".as_slice(), b"second".as_slice());
        for kind in ChecksumKind::ALL {
            if !kind.supports(ChecksumType::Composite) {
                continue;
            }
            let (sa, sb) = (sum_of(kind, a), sum_of(kind, b));
            let mut joined = base64_decode(&sa.value).unwrap();
            joined.extend(base64_decode(&sb.value).unwrap());
            let expected = format!("{}-2", sum_of(kind, &joined).value);
            let got = object_checksum(kind, ChecksumType::Composite, &[(&sa, 10), (&sb, 6)]);
            assert_eq!(got.unwrap().value, expected);
        }
        // A stored digest of the wrong algorithm is an internal error, never a made-up value.
        let wrong = sum_of(ChecksumKind::Sha256, a);
        assert!(
            object_checksum(
                ChecksumKind::Crc32,
                ChecksumType::Composite,
                &[(&wrong, 10)]
            )
            .is_err()
        );
    }

    #[test]
    fn upload_settings_are_checked_as_s3_checks_them() {
        use s3s::dto::{ChecksumAlgorithm as A, ChecksumType as T};
        let settings = |a: Option<&str>, t: Option<&str>| {
            upload_checksum(
                a.map(|a| A::from(a.to_owned())).as_ref(),
                t.map(|t| T::from(t.to_owned())).as_ref(),
            )
        };
        assert_eq!(settings(None, None).unwrap(), None);
        assert_eq!(
            settings(Some("CRC32"), None).unwrap(),
            Some((ChecksumKind::Crc32, ChecksumType::Composite))
        );
        assert_eq!(
            settings(Some("CRC64NVME"), None).unwrap(),
            Some((ChecksumKind::Crc64Nvme, ChecksumType::FullObject))
        );
        assert_eq!(
            settings(Some("CRC32C"), Some("FULL_OBJECT")).unwrap(),
            Some((ChecksumKind::Crc32c, ChecksumType::FullObject))
        );
        for (a, t) in [
            (None, Some("COMPOSITE")),
            (Some("SHA256"), Some("FULL_OBJECT")),
            (Some("CRC64NVME"), Some("COMPOSITE")),
            (Some("CRC32"), Some("composite")),
        ] {
            assert!(settings(a, t).is_err(), "{a:?} {t:?}");
        }
    }
}
