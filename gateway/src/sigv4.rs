//! SigV4 verification of requests signed in the `Authorization` header, for the fast read path
//! ([`crate::fast_path`]): parsing the header, the canonical request, the string to sign, and a
//! per-core cache of signing keys.
//!
//! s3s derives the signing key (four HMACs) on every request; the key only changes with the
//! access key, its secret, the day and the region, so [`SigningKeys`] keeps it. Every function
//! here answers "valid" or "not shown valid" (`None`/`false`); it never builds an error, because
//! its caller hands anything it cannot verify to s3s, which reports the precise S3 error.

use std::cell::RefCell;

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// The only algorithm verified here.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Most seconds between a request's `x-amz-date` and the server clock (s3s's default too).
pub const CLOCK_SKEW_MAX_SECS: u64 = 15 * 60;

/// Signing keys kept per core before the oldest is dropped.
const SIGNING_KEYS_MAX: usize = 64;

/// The fields of an `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
/// Signature=…` header value.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthorizationV4<'a> {
    /// Access key id.
    pub access_key: &'a str,
    /// Credential scope date, `YYYYMMDD`.
    pub date: &'a str,
    /// Credential scope region.
    pub region: &'a str,
    /// Credential scope service (`s3`).
    pub service: &'a str,
    /// `;`-separated lower-case header names, as sent.
    pub signed_headers: &'a str,
    /// Lower-case hex signature.
    pub signature: &'a str,
}

impl<'a> AuthorizationV4<'a> {
    /// Parses a header value; `None` unless it is exactly `AWS4-HMAC-SHA256 Credential=…,
    /// SignedHeaders=…, Signature=<64 lower-case hex digits>` (s3s's grammar: whitespace only
    /// after the algorithm and after each comma) with a region that s3s accepts (empty or
    /// `[a-z0-9-]+`).
    pub fn parse(value: &'a str) -> Option<Self> {
        let is_space = |c: char| c.is_ascii_whitespace();
        let after_algorithm = value.strip_prefix(ALGORITHM)?;
        let rest = after_algorithm.trim_start_matches(is_space);
        if rest.len() == after_algorithm.len() {
            return None;
        }
        let (credential, rest) = rest.strip_prefix("Credential=")?.split_once(',')?;
        let (signed_headers, rest) = rest
            .trim_start_matches(is_space)
            .strip_prefix("SignedHeaders=")?
            .split_once(',')?;
        let signature = rest
            .trim_start_matches(is_space)
            .strip_prefix("Signature=")?
            .trim_end_matches(is_space);
        if signature.len() != 64
            || !signature
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let mut scope = credential.split('/');
        let parsed = Self {
            access_key: scope.next()?,
            date: scope.next()?,
            region: scope.next()?,
            service: scope.next()?,
            signed_headers,
            signature,
        };
        let region_ok = parsed
            .region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        (region_ok
            && !parsed.service.is_empty()
            && scope.next() == Some("aws4_request")
            && scope.next().is_none())
        .then_some(parsed)
    }
}

/// The canonical request of a request without a query string: `None` if a signed header is
/// missing, repeated in the list, not a lower-case token or its value not visible ASCII (s3s
/// then decides).
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    headers: &HeaderMap,
    signed_headers: &str,
    payload_hash: &str,
) -> Option<String> {
    let mut names: Vec<&str> = signed_headers
        .split(';')
        .filter(|name| *name != "authorization")
        .collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let mut out = String::with_capacity(256);
    out.push_str(method);
    out.push('\n');
    out.push_str(canonical_uri);
    out.push_str("\n\n");
    for name in &names {
        let token = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        if name.is_empty() || !name.bytes().all(token) {
            return None;
        }
        out.push_str(name);
        out.push(':');
        let mut values = headers.get_all(*name).iter().peekable();
        values.peek()?;
        let mut first = true;
        for value in values {
            if !first {
                out.push(',');
            }
            first = false;
            push_normalized(&mut out, value.to_str().ok()?);
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&names.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Some(out)
}

/// Appends `value` trimmed, with each run of inner whitespace replaced by one space.
fn push_normalized(out: &mut String, value: &str) {
    let mut words = value.split_whitespace();
    if let Some(word) = words.next() {
        out.push_str(word);
    }
    for word in words {
        out.push(' ');
        out.push_str(word);
    }
}

/// The string to sign for `canonical_request`, sent at `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub fn string_to_sign(
    amz_date: &str,
    auth: &AuthorizationV4<'_>,
    canonical_request: &str,
) -> String {
    let hash = hex::encode(Sha256::digest(canonical_request.as_bytes()));
    format!(
        "{ALGORITHM}\n{amz_date}\n{}/{}/{}/aws4_request\n{hash}",
        auth.date, auth.region, auth.service
    )
}

/// Whether `signature_hex` is the signature of `string_to_sign` under `signing_key`; compared
/// in constant time.
pub fn signature_matches(
    signing_key: &[u8; 32],
    string_to_sign: &str,
    signature_hex: &str,
) -> bool {
    let mut expected = [0u8; 32];
    if hex::decode_to_slice(signature_hex, &mut expected).is_err() {
        return false;
    }
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(signing_key) else {
        return false;
    };
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&expected).is_ok()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail; an empty key would only sign wrong.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC-SHA256 takes keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The SigV4 signing key of `secret` for one day, region and service.
pub fn derive_signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// One cached signing key and what it was derived from.
struct CachedKey {
    access_key: String,
    secret: String,
    date: String,
    region: String,
    service: String,
    key: [u8; 32],
}

/// A core's signing keys, most recent last. The secret is part of the match, so a rotated or
/// deleted key is never served from here.
#[derive(Default)]
pub struct SigningKeys {
    keys: RefCell<Vec<CachedKey>>,
}

impl SigningKeys {
    /// The signing key for `auth`'s scope under `secret`, derived at most once per day.
    pub fn get(&self, auth: &AuthorizationV4<'_>, secret: &str) -> [u8; 32] {
        let mut keys = self.keys.borrow_mut();
        let found = keys.iter().find(|k| {
            k.access_key == auth.access_key
                && k.date == auth.date
                && k.region == auth.region
                && k.service == auth.service
                && k.secret == secret
        });
        if let Some(cached) = found {
            return cached.key;
        }
        let key = derive_signing_key(secret, auth.date, auth.region, auth.service);
        if keys.len() >= SIGNING_KEYS_MAX {
            keys.remove(0);
        }
        keys.push(CachedKey {
            access_key: auth.access_key.to_owned(),
            secret: secret.to_owned(),
            date: auth.date.to_owned(),
            region: auth.region.to_owned(),
            service: auth.service.to_owned(),
            key,
        });
        key
    }
}

/// Seconds since the Unix epoch of an `x-amz-date` value (`YYYYMMDDTHHMMSSZ`, a real UTC date).
pub fn amz_date_unix_secs(value: &str) -> Option<u64> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = value.get(range)?;
        digits
            .bytes()
            .all(|d| d.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if year < 1970 || day == 0 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date on or after it (H. Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    /// Verifies a request the way the fast path does; true when the signature holds.
    fn verifies(
        authorization: &str,
        amz_date: &str,
        secret: &str,
        map: &HeaderMap,
        uri: &str,
    ) -> bool {
        let auth = AuthorizationV4::parse(authorization).unwrap();
        let Some(canonical) = canonical_request("GET", uri, map, auth.signed_headers, EMPTY_SHA256)
        else {
            return false;
        };
        let sts = string_to_sign(amz_date, &auth, &canonical);
        let key = SigningKeys::default().get(&auth, secret);
        signature_matches(&key, &sts, auth.signature)
    }

    const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const EXAMPLE_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
    const EXAMPLE_SIGNATURE: &str =
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";

    fn example_headers() -> HeaderMap {
        headers(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ])
    }

    /// AWS S3 API reference, "Signature Calculations for the Authorization Header", example
    /// "GET Object".
    #[test]
    fn aws_get_object_example_verifies() {
        let map = example_headers();
        assert!(verifies(
            EXAMPLE_AUTH,
            "20130524T000000Z",
            EXAMPLE_SECRET,
            &map,
            "/test.txt"
        ));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let map = example_headers();
        assert!(!verifies(
            EXAMPLE_AUTH,
            "20130524T000000Z",
            "wrong",
            &map,
            "/test.txt"
        ));
        assert!(!verifies(
            EXAMPLE_AUTH,
            "20130524T000001Z",
            EXAMPLE_SECRET,
            &map,
            "/test.txt"
        ));
        assert!(!verifies(
            EXAMPLE_AUTH,
            "20130524T000000Z",
            EXAMPLE_SECRET,
            &map,
            "/test.tx"
        ));
        let mut changed = example_headers();
        changed.insert("range", HeaderValue::from_static("bytes=0-10"));
        assert!(!verifies(
            EXAMPLE_AUTH,
            "20130524T000000Z",
            EXAMPLE_SECRET,
            &changed,
            "/test.txt"
        ));
        let forged = EXAMPLE_AUTH.replace("Signature=f0e8", "Signature=f0e9");
        assert!(!verifies(
            &forged,
            "20130524T000000Z",
            EXAMPLE_SECRET,
            &map,
            "/test.txt"
        ));
    }

    #[test]
    fn header_values_are_normalized_and_a_missing_signed_header_is_refused() {
        let mut spaced = example_headers();
        spaced.insert("range", HeaderValue::from_static("  bytes=0-9 "));
        assert!(verifies(
            EXAMPLE_AUTH,
            "20130524T000000Z",
            EXAMPLE_SECRET,
            &spaced,
            "/test.txt"
        ));
        let mut missing = example_headers();
        missing.remove("range");
        assert!(!verifies(
            EXAMPLE_AUTH,
            "20130524T000000Z",
            EXAMPLE_SECRET,
            &missing,
            "/test.txt"
        ));
        let canonical = canonical_request(
            "GET",
            "/",
            &headers(&[("a", "x   y"), ("a", "z")]),
            "a",
            "h",
        );
        assert_eq!(canonical.as_deref(), Some("GET\n/\n\na:x y,z\n\na\nh"));
        assert_eq!(
            canonical_request("GET", "/", &headers(&[("a", "x")]), "a;a", "h"),
            None
        );
        assert_eq!(
            canonical_request("GET", "/", &headers(&[("a", "x")]), "A", "h"),
            None
        );
    }

    #[test]
    fn authorization_parsing_is_strict() {
        let auth = AuthorizationV4::parse(EXAMPLE_AUTH).unwrap();
        assert_eq!(auth.access_key, "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(
            (auth.date, auth.region, auth.service),
            ("20130524", "us-east-1", "s3")
        );
        let spaced = EXAMPLE_AUTH.replace(",", ", ");
        assert_eq!(AuthorizationV4::parse(&spaced), Some(auth));
        let trailing = format!("{EXAMPLE_AUTH} \n");
        assert!(AuthorizationV4::parse(&trailing).is_some());
        let sig = EXAMPLE_SIGNATURE;
        let upper = sig.to_ascii_uppercase();
        for bad in [
            "AWS AKIAIOSFODNN7EXAMPLE:sig".to_owned(),
            format!(
                "AWS4-HMAC-SHA256Credential=a/20130524/r/s3/aws4_request,SignedHeaders=host,Signature={sig}"
            ),
            "AWS4-HMAC-SHA256 Credential=a/20130524/r/s3/aws4_request,SignedHeaders=host"
                .to_owned(),
            format!(
                "AWS4-HMAC-SHA256 Credential=a/20130524/r/s3/other,SignedHeaders=host,Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=a/20130524/r/s3/aws4_request/x,SignedHeaders=host,Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=a/20130524/r//aws4_request,SignedHeaders=host,Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=a/20130524/US-EAST-1/s3/aws4_request,SignedHeaders=host,Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=a/20130524/eu_west/s3/aws4_request,SignedHeaders=host,Signature={sig}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=a/20130524/r/s3/aws4_request,SignedHeaders=host,Signature={upper}"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=a/20130524/r/s3/aws4_request,SignedHeaders=host,Signature={sig}0"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=a/20130524/r/s3/aws4_request,SignedHeaders=host,Signature={sig} x"
            ),
            format!(
                "AWS4-HMAC-SHA256 Signature={sig},Credential=a/20130524/r/s3/aws4_request,SignedHeaders=host"
            ),
            format!(
                "AWS4-HMAC-SHA256 Credential=a/20130524/r/s3/aws4_request ,SignedHeaders=host,Signature={sig}"
            ),
        ] {
            assert_eq!(AuthorizationV4::parse(&bad), None, "{bad}");
        }
        let no_region = format!(
            "AWS4-HMAC-SHA256 Credential=a/20130524//s3/aws4_request,SignedHeaders=host,Signature={sig}"
        );
        assert_eq!(
            AuthorizationV4::parse(&no_region).map(|a| a.region),
            Some("")
        );
    }

    #[test]
    fn a_cached_key_is_reused_only_for_the_same_secret_and_scope() {
        let cache = SigningKeys::default();
        let auth = AuthorizationV4::parse(EXAMPLE_AUTH).unwrap();
        let key = cache.get(&auth, EXAMPLE_SECRET);
        assert_eq!(
            key,
            derive_signing_key(EXAMPLE_SECRET, "20130524", "us-east-1", "s3")
        );
        assert_eq!(cache.get(&auth, EXAMPLE_SECRET), key);
        assert_ne!(cache.get(&auth, "rotated"), key);
        let next_day = EXAMPLE_AUTH.replace("/20130524/", "/20130525/");
        assert_ne!(
            cache.get(&AuthorizationV4::parse(&next_day).unwrap(), EXAMPLE_SECRET),
            key
        );
        assert_eq!(cache.keys.borrow().len(), 3);
    }

    #[test]
    fn amz_dates_are_real_utc_times() {
        assert_eq!(amz_date_unix_secs("19700101T000000Z"), Some(0));
        assert_eq!(
            amz_date_unix_secs("20130524T010203Z"),
            Some(1_369_353_600 + 3_723)
        );
        assert_eq!(amz_date_unix_secs("20000229T000000Z"), Some(951_782_400));
        for bad in [
            "20010229T000000Z",
            "20130524T240000Z",
            "20131324T000000Z",
            "20130524 000000Z",
            "2013052T0000000Z",
            "+0130524T000000Z",
            "20130524T000000",
        ] {
            assert_eq!(amz_date_unix_secs(bad), None, "{bad}");
        }
    }
}
