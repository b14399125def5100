//! SSE-C: server-side encryption with customer-provided keys (S3's meaning). A write that gives
//! a key (`x-amz-server-side-encryption-customer-{algorithm,key,key-MD5}`) stores its body
//! encrypted with AES-256 in counter mode; the key itself is never stored, only a random salt
//! and an HMAC-SHA256 of the salt under the key ([`SseC`]), which tells the right key from a
//! wrong one. Every read of such an object (GET, HEAD, GetObjectAttributes, a copy's source)
//! must give the same key; a wrong one is `403 AccessDenied`, none `400 InvalidRequest`.
//!
//! Each chunk run (a single PUT's body, or one multipart part) has its own IV, derived from the
//! salt and the run's version id (unique per run), so no two runs under one key share a key
//! stream; an inline body has the salt's own IV. Checksums and Content-MD5 are of the plaintext,
//! as S3 computes them; the stored MD5 (the ETag) is keyed ([`BodyCipher::etag_md5`]), so that
//! it tells nothing of the plaintext.

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use leofs_shard::object::{SseC, VersionId, base64_decode, base64_encode};
use s3s::{S3Error, S3ErrorCode, S3Result};
use sha2::{Digest as _, Sha256};

use crate::md5::Md5;

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// The only SSE-C algorithm S3 has.
pub const SSE_C_ALGORITHM: &str = "AES256";

/// The headers of a request's own key.
const OWN_PREFIX: &str = "x-amz-server-side-encryption-customer-";
/// The headers of a copy source's key.
const SOURCE_PREFIX: &str = "x-amz-copy-source-server-side-encryption-customer-";

fn invalid_argument(message: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, message.to_owned())
}

/// A customer key given with a request, checked against its MD5.
pub struct CustomerKey {
    key: [u8; 32],
    /// The key's MD5, base64 (what S3 answers in `...-customer-key-MD5`).
    key_md5: String,
}

impl CustomerKey {
    /// The key of a request's headers (`source`: the copy source's), if it gives one; S3's
    /// errors for a partial, malformed or mismatched one.
    pub fn from_headers(headers: &HeaderMap, source: bool) -> S3Result<Option<CustomerKey>> {
        let prefix = if source { SOURCE_PREFIX } else { OWN_PREFIX };
        let get = |suffix: &str| {
            headers
                .get(format!("{prefix}{suffix}").as_str())
                .map(|v| v.to_str().unwrap_or(""))
        };
        let (algorithm, key, key_md5) = (get("algorithm"), get("key"), get("key-md5"));
        if algorithm.is_none() && key.is_none() && key_md5.is_none() {
            return Ok(None);
        }
        let Some(algorithm) = algorithm else {
            return Err(invalid_argument(
                "Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.",
            ));
        };
        if algorithm != SSE_C_ALGORITHM {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidEncryptionAlgorithmError,
                "The encryption request you specified is not valid. The valid value is AES256.",
            ));
        }
        let key = key
            .and_then(base64_decode)
            .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
            .ok_or_else(|| {
                invalid_argument("The secret key was invalid for the specified algorithm.")
            })?;
        let computed = base64_encode(&Md5::digest(&key));
        match key_md5 {
            Some(given) if given == computed => Ok(Some(CustomerKey {
                key,
                key_md5: computed,
            })),
            Some(_) => Err(invalid_argument(
                "The calculated MD5 hash of the key did not match the hash that was provided.",
            )),
            None => Err(invalid_argument(
                "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key.",
            )),
        }
    }

    fn salt_hmac(&self, salt: &[u8; 16]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(b"leofs sse-c key check");
        mac.update(salt);
        mac.finalize().into_bytes().into()
    }

    /// What a new object (or upload) encrypted with this key keeps: a fresh salt and the key's
    /// HMAC of it.
    pub fn seal(&self) -> SseC {
        let salt: [u8; 16] = rand::random();
        SseC {
            salt,
            key_hmac: self.salt_hmac(&salt),
        }
    }

    /// The cipher of an object sealed with `sse`, if this is its key (`403 AccessDenied`
    /// otherwise, as S3 answers a wrong key).
    pub fn open(&self, sse: &SseC) -> S3Result<BodyCipher> {
        let expected = self.salt_hmac(&sse.salt);
        // Compared in constant time: the comparison must not tell how much of a guess matched.
        let differ = expected
            .iter()
            .zip(sse.key_hmac.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differ != 0 {
            return Err(S3Error::with_message(
                S3ErrorCode::AccessDenied,
                "The provided encryption key does not match the key the object was stored with.",
            ));
        }
        Ok(BodyCipher {
            key: self.key,
            salt: sse.salt,
            key_md5: self.key_md5.clone(),
        })
    }
}

/// The key stream of one object's body.
pub struct BodyCipher {
    key: [u8; 32],
    salt: [u8; 16],
    key_md5: String,
}

/// What S3 answers about the encryption of an object written or read with `cipher`: the
/// algorithm and the key's MD5 (`x-amz-server-side-encryption-customer-{algorithm,key-MD5}`).
pub fn answered(cipher: Option<&BodyCipher>) -> (Option<String>, Option<String>) {
    match cipher {
        Some(c) => (Some(SSE_C_ALGORITHM.to_owned()), Some(c.key_md5.clone())),
        None => (None, None),
    }
}

impl BodyCipher {
    fn iv(&self, run: Option<&VersionId>) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(b"leofs sse-c iv");
        h.update(self.salt);
        match run {
            Some(version) => {
                h.update([1u8]);
                h.update(version.0);
            }
            None => h.update([0u8]),
        }
        let digest = h.finalize();
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&digest[..16]);
        iv
    }

    /// Encrypts or decrypts (the same in counter mode) `data`, which sits at byte `offset` of
    /// run `run` (None: of an inline body).
    pub fn apply(&self, run: Option<&VersionId>, offset: u64, data: &mut [u8]) {
        let mut stream = Aes256Ctr::new(&self.key.into(), &self.iv(run).into());
        stream.seek(offset);
        stream.apply_keystream(data);
    }

    /// The MD5 stored for a body whose plaintext MD5 is `md5` (its ETag): keyed, so that the
    /// ETag of an encrypted object tells nothing of its plaintext (as S3's does not).
    pub fn etag_md5(&self, md5: &[u8; 16]) -> [u8; 16] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(b"leofs sse-c etag");
        mac.update(&self.salt);
        mac.update(md5);
        let out: [u8; 32] = mac.finalize().into_bytes().into();
        let mut etag = [0u8; 16];
        etag.copy_from_slice(&out[..16]);
        etag
    }
}

/// The cipher a read of an object with `stored` needs, from the request's key headers
/// (`source`: a copy source's): none for an object stored as sent (a key given for it is
/// `400 InvalidRequest`, as in S3); for an encrypted one, the right key or an S3 error.
pub fn reader(
    headers: &HeaderMap,
    source: bool,
    stored: Option<&SseC>,
) -> S3Result<Option<BodyCipher>> {
    match (CustomerKey::from_headers(headers, source)?, stored) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "The encryption parameters are not applicable to this object.",
        )),
        (None, Some(_)) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.",
        )),
        (Some(key), Some(sse)) => key.open(sse).map(Some),
    }
}

/// The cipher of a part of an upload sealed with `stored` (None: not encrypted), from the
/// part request's key headers: the key the upload was started with, or none for an upload
/// started without one.
pub fn part_cipher(headers: &HeaderMap, stored: Option<&SseC>) -> S3Result<Option<BodyCipher>> {
    match (CustomerKey::from_headers(headers, false)?, stored) {
        (None, None) => Ok(None),
        (Some(key), Some(sse)) => key.open(sse).map(Some),
        (None, Some(_)) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "The multipart upload initiate requested encryption. Subsequent part requests must include the appropriate encryption parameters.",
        )),
        (Some(_), None) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "The multipart upload initiate did not request encryption: its part requests may not give encryption parameters.",
        )),
    }
}

/// A new object's (or upload's) encryption from the request's key headers: what it keeps and
/// its cipher; none without a key.
pub fn sealed_for_write(headers: &HeaderMap) -> S3Result<Option<(SseC, BodyCipher)>> {
    let Some(key) = CustomerKey::from_headers(headers, false)? else {
        return Ok(None);
    };
    let sealed = key.seal();
    let cipher = key.open(&sealed)?;
    Ok(Some((sealed, cipher)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(key: &[u8; 32]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-server-side-encryption-customer-algorithm",
            "AES256".parse().unwrap(),
        );
        h.insert(
            "x-amz-server-side-encryption-customer-key",
            base64_encode(key).parse().unwrap(),
        );
        h.insert(
            "x-amz-server-side-encryption-customer-key-md5",
            base64_encode(&Md5::digest(key)).parse().unwrap(),
        );
        h
    }

    #[test]
    fn the_right_key_opens_what_it_sealed_and_a_wrong_one_does_not() {
        let key = CustomerKey::from_headers(&headers(&[7; 32]), false)
            .unwrap()
            .unwrap();
        let sealed = key.seal();
        let cipher = key.open(&sealed).unwrap();
        let plain = b"attack at dawn, and again at dusk".to_vec();
        let mut data = plain.clone();
        let run = VersionId([3; 16]);
        cipher.apply(Some(&run), 0, &mut data);
        assert_ne!(data, plain);
        // Any piece decrypts on its own, from its offset.
        let mut tail = data[17..].to_vec();
        cipher.apply(Some(&run), 17, &mut tail);
        assert_eq!(tail, plain[17..]);
        // Another run's key stream differs.
        let mut other = plain.clone();
        cipher.apply(Some(&VersionId([4; 16])), 0, &mut other);
        assert_ne!(other, data);
        let wrong = CustomerKey::from_headers(&headers(&[8; 32]), false)
            .unwrap()
            .unwrap();
        assert_eq!(
            wrong.open(&sealed).err().unwrap().code(),
            &S3ErrorCode::AccessDenied
        );
    }

    #[test]
    fn malformed_keys_are_refused_as_s3_refuses_them() {
        let code = |h: &HeaderMap| {
            CustomerKey::from_headers(h, false)
                .err()
                .map(|e| e.code().as_str().to_owned())
        };
        assert!(
            CustomerKey::from_headers(&HeaderMap::new(), false)
                .unwrap()
                .is_none()
        );
        let mut h = headers(&[1; 32]);
        h.insert(
            "x-amz-server-side-encryption-customer-key-md5",
            "AAAA".parse().unwrap(),
        );
        assert_eq!(code(&h).as_deref(), Some("InvalidArgument"));
        let mut h = headers(&[1; 32]);
        h.insert(
            "x-amz-server-side-encryption-customer-algorithm",
            "AES128".parse().unwrap(),
        );
        assert_eq!(code(&h).as_deref(), Some("InvalidEncryptionAlgorithmError"));
        let mut h = headers(&[1; 32]);
        h.insert(
            "x-amz-server-side-encryption-customer-key",
            "c2hvcnQ=".parse().unwrap(),
        );
        assert_eq!(code(&h).as_deref(), Some("InvalidArgument"));
        let mut h = headers(&[1; 32]);
        h.remove("x-amz-server-side-encryption-customer-algorithm");
        assert_eq!(code(&h).as_deref(), Some("InvalidArgument"));
        assert!(reader(&headers(&[1; 32]), false, None).is_err());
    }
}
