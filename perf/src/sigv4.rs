//! AWS Signature Version 4 (header form) for the requests leofs-bench sends.
//!
//! Owns the canonical request, the string to sign, the signing-key derivation (cached per day) and
//! the `Authorization` header value. It implements exactly the subset S3 clients use: path-style
//! URIs whose segments are already encoded by [`uri_encode`], a query string, lower-case headers,
//! and a payload hash that is either the SHA-256 of the body or [`UNSIGNED_PAYLOAD`]. It never
//! implements chunked (streaming) payload signatures. Verified against AWS's published examples
//! in the tests below.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The `x-amz-content-sha256` value that tells the server the body is not covered by the signature.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The SigV4 algorithm name, first word of the `Authorization` header.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Why a signature could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum SigV4Error {
    /// The HMAC implementation refused a key (cannot happen for HMAC-SHA256, kept typed anyway).
    #[error("HMAC key rejected: {0}")]
    HmacKey(String),
    /// A header value cannot be part of a canonical request.
    #[error("header {name} has a value that is not visible ASCII")]
    HeaderValue {
        /// Lower-case header name.
        name: String,
    },
}

/// One request to sign. Header names must be lower case; `host`, `x-amz-date` and
/// `x-amz-content-sha256` must be among them for S3.
#[derive(Debug)]
pub struct SignRequest<'a> {
    /// HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// Canonical URI: the request path, each segment already encoded with [`uri_encode`].
    pub canonical_uri: &'a str,
    /// Query parameters, raw (not encoded); they are encoded and sorted here.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign, lower-case names.
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body, or [`UNSIGNED_PAYLOAD`].
    pub payload_hash: &'a str,
    /// `YYYYMMDDTHHMMSSZ`, the same value as the `x-amz-date` header.
    pub amz_date: &'a str,
}

/// Signs requests for one access key, region and service; caches the signing key of the day.
#[derive(Clone, Debug)]
pub struct Signer {
    access_key: String,
    secret_key: String,
    region: String,
    service: String,
    cached_key: Option<(String, [u8; 32])>,
}

impl Signer {
    /// A signer for `service` (`s3` for S3) in `region`.
    pub fn new(access_key: &str, secret_key: &str, region: &str, service: &str) -> Self {
        Self {
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            cached_key: None,
        }
    }

    /// The `Authorization` header value for `request`.
    pub fn authorization(&mut self, request: &SignRequest<'_>) -> Result<String, SigV4Error> {
        let (canonical, signed_headers) = canonical_request(request)?;
        let date = request.amz_date.get(..8).unwrap_or(request.amz_date);
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "{ALGORITHM}\n{}\n{scope}\n{}",
            request.amz_date,
            sha256_hex(canonical.as_bytes())
        );
        let key = self.signing_key(date)?;
        let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes())?);
        Ok(format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        ))
    }

    fn signing_key(&mut self, date: &str) -> Result<[u8; 32], SigV4Error> {
        if let Some((cached_date, key)) = &self.cached_key
            && cached_date == date
        {
            return Ok(*key);
        }
        let k_secret = format!("AWS4{}", self.secret_key);
        let k_date = hmac_sha256(k_secret.as_bytes(), date.as_bytes())?;
        let k_region = hmac_sha256(&k_date, self.region.as_bytes())?;
        let k_service = hmac_sha256(&k_region, self.service.as_bytes())?;
        let key = hmac_sha256(&k_service, b"aws4_request")?;
        self.cached_key = Some((date.to_owned(), key));
        Ok(key)
    }
}

/// The canonical request text and the `SignedHeaders` list.
fn canonical_request(request: &SignRequest<'_>) -> Result<(String, String), SigV4Error> {
    let mut query: Vec<(String, String)> = request
        .query
        .iter()
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");

    let mut headers: Vec<(&str, String)> = Vec::with_capacity(request.headers.len());
    for (name, value) in request.headers {
        if !value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) || b == b'\t')
        {
            return Err(SigV4Error::HeaderValue {
                name: (*name).to_owned(),
            });
        }
        headers.push((name, value.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    headers.sort();
    let mut canonical_headers = String::new();
    for (name, value) in &headers {
        let _ = writeln!(canonical_headers, "{name}:{value}");
    }
    let signed_headers = headers
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{}\n{}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method, request.canonical_uri, request.payload_hash
    );
    Ok((canonical, signed_headers))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<[u8; 32], SigV4Error> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .map_err(|e| SigV4Error::HmacKey(e.to_string()))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

/// Lower-case hex SHA-256 of `data` (the signed-payload hash and the canonical-request hash).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// S3's URI encoding: every byte but `A-Z a-z 0-9 - . _ ~` becomes `%XX`; `/` is kept when
/// `encode_slash` is false (object keys in paths) and encoded otherwise (query values).
pub fn uri_encode(input: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for byte in input.bytes() {
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
        if unreserved || (byte == b'/' && !encode_slash) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` (UTC) for `time`, the `x-amz-date` format.
pub fn amz_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let secs_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// AWS S3 API reference, "Signature Calculations for the Authorization Header", example
    /// "GET Object" (bytes 0-9 of examplebucket/test.txt).
    #[test]
    fn s3_get_object_example_from_aws_docs() {
        let mut signer = Signer::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "s3",
        );
        let request = SignRequest {
            method: "GET",
            canonical_uri: "/test.txt",
            query: &[],
            headers: &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ],
            payload_hash: EMPTY_SHA256,
            amz_date: "20130524T000000Z",
        };
        let auth = signer.authorization(&request).unwrap();
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// Same reference, example "GET Bucket (List Objects)": exercises query canonicalization.
    #[test]
    fn s3_list_objects_example_from_aws_docs() {
        let mut signer = Signer::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "s3",
        );
        let request = SignRequest {
            method: "GET",
            canonical_uri: "/",
            query: &[("prefix", "J"), ("max-keys", "2")],
            headers: &[
                ("host", "examplebucket.s3.amazonaws.com"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ],
            payload_hash: EMPTY_SHA256,
            amz_date: "20130524T000000Z",
        };
        let auth = signer.authorization(&request).unwrap();
        assert!(
            auth.ends_with(
                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
            ),
            "{auth}"
        );
    }

    /// AWS SigV4 test suite, `get-vanilla` (service "service").
    #[test]
    fn sigv4_test_suite_get_vanilla() {
        let mut signer = Signer::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "service",
        );
        let request = SignRequest {
            method: "GET",
            canonical_uri: "/",
            query: &[],
            headers: &[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ],
            payload_hash: EMPTY_SHA256,
            amz_date: "20150830T123600Z",
        };
        let auth = signer.authorization(&request).unwrap();
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn a_different_secret_changes_the_signature() {
        let request = SignRequest {
            method: "PUT",
            canonical_uri: "/b/k",
            query: &[],
            headers: &[("host", "h"), ("x-amz-date", "20240101T000000Z")],
            payload_hash: UNSIGNED_PAYLOAD,
            amz_date: "20240101T000000Z",
        };
        let a = Signer::new("a", "s1", "us-east-1", "s3")
            .authorization(&request)
            .unwrap();
        let b = Signer::new("a", "s2", "us-east-1", "s3")
            .authorization(&request)
            .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn uri_encoding_follows_s3_rules() {
        assert_eq!(uri_encode("a b/c~d+e", false), "a%20b/c~d%2Be");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(uri_encode("é", true), "%C3%A9");
    }

    #[test]
    fn amz_date_formats_utc() {
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_369_353_600 + 3_723);
        assert_eq!(amz_date(t), "20130524T010203Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(amz_date(leap), "20000229T000000Z");
    }
}
