//! The S3 bucket naming rules: [`validate_new_bucket_name`] when a bucket is created, and the
//! rules every existing bucket was created under, [`validate_bucket_name`], when a request names
//! one (a rule added later must not make a bucket created before it unreachable).

use crate::ManagerError;

/// Shortest bucket name S3 accepts.
pub const BUCKET_NAME_MIN_CHARS: usize = 3;
/// Longest bucket name S3 accepts.
pub const BUCKET_NAME_MAX_CHARS: usize = 63;

/// Prefixes S3 reserves.
const RESERVED_PREFIXES: [&str; 2] = ["xn--", "sthree-"];
/// Suffixes S3 reserves.
const RESERVED_SUFFIXES: [&str; 3] = ["-s3alias", "--ol-s3", "--x-s3"];

/// Checks a bucket name against the S3 rules (3–63 chars, lowercase letters, digits, '.', '-',
/// starts and ends with a letter or digit, not an IP address, no "..", no "xn--" or "sthree-"
/// prefix, no "-s3alias", "--ol-s3" or "--x-s3" suffix).
pub fn validate_bucket_name(name: &str) -> Result<(), ManagerError> {
    let reject = |reason: &'static str| {
        Err(ManagerError::InvalidBucketName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.len() < BUCKET_NAME_MIN_CHARS {
        return reject("shorter than 3 characters");
    }
    if name.len() > BUCKET_NAME_MAX_CHARS {
        return reject("longer than 63 characters");
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
    if !name.bytes().all(allowed) {
        return reject("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return reject("must start and end with a letter or digit");
    }
    if name.contains("..") {
        return reject("must not contain two adjacent periods");
    }
    if looks_like_ipv4(name) {
        return reject("must not be formatted as an IP address");
    }
    if RESERVED_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
    {
        return reject("uses a reserved prefix (xn--, sthree-)");
    }
    if RESERVED_SUFFIXES
        .iter()
        .any(|suffix| name.ends_with(suffix))
    {
        return reject("uses a reserved suffix (-s3alias, --ol-s3, --x-s3)");
    }
    Ok(())
}

/// Checks the name of a bucket about to be created: [`validate_bucket_name`]'s rules, and those
/// added since (no period next to a hyphen).
pub fn validate_new_bucket_name(name: &str) -> Result<(), ManagerError> {
    validate_bucket_name(name)?;
    if name.contains(".-") || name.contains("-.") {
        return Err(ManagerError::InvalidBucketName {
            name: name.to_owned(),
            reason: "must not contain a period next to a hyphen",
        });
    }
    Ok(())
}

/// Four dot-separated groups of 1–3 digits, like `192.168.5.4` (S3 rejects these whatever the
/// group values).
fn looks_like_ipv4(name: &str) -> bool {
    let groups: Vec<&str> = name.split('.').collect();
    groups.len() == 4
        && groups.iter().all(|group| {
            (1..=3).contains(&group.len()) && group.bytes().all(|b| b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason_of(name: &str) -> &'static str {
        match validate_bucket_name(name) {
            Err(ManagerError::InvalidBucketName {
                name: rejected,
                reason,
            }) => {
                assert_eq!(rejected, name);
                reason
            }
            other => panic!("{name:?} should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn accepts_valid_names() {
        let max = "a".repeat(63);
        for name in [
            "abc",
            "my-bucket",
            "my.bucket.example",
            "0bucket9",
            "123",
            "a-b.c-d",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.a",
            "xn-abc",
            "bucket-s3alia",
            "s3alias-bucket",
            max.as_str(),
        ] {
            assert!(
                validate_bucket_name(name).is_ok(),
                "{name:?} should be valid"
            );
        }
    }

    #[test]
    fn length_bounds() {
        assert!(reason_of("").contains("shorter"));
        assert!(reason_of("ab").contains("shorter"));
        assert!(reason_of(&"a".repeat(64)).contains("longer"));
    }

    #[test]
    fn character_set() {
        for name in [
            "MyBucket",
            "my_bucket",
            "my bucket",
            "bücket",
            "my/bucket",
            "a+b",
        ] {
            assert!(reason_of(name).contains("only lowercase"), "{name:?}");
        }
    }

    #[test]
    fn a_period_next_to_a_hyphen_is_refused_for_new_buckets_only() {
        for name in ["a.-b", "a-.b", "ab-.-cd"] {
            let Err(ManagerError::InvalidBucketName { reason, .. }) =
                validate_new_bucket_name(name)
            else {
                panic!("{name:?} accepted");
            };
            assert!(reason.contains("period next to a hyphen"), "{name:?}");
            // A bucket created before the rule stays reachable.
            assert!(validate_bucket_name(name).is_ok(), "{name:?}");
        }
        assert!(validate_new_bucket_name("a-b.c").is_ok());
    }

    #[test]
    fn first_and_last_character() {
        for name in ["-abc", "abc-", ".abc", "abc."] {
            assert!(reason_of(name).contains("start and end"), "{name:?}");
        }
    }

    #[test]
    fn adjacent_periods() {
        assert!(reason_of("my..bucket").contains("adjacent"));
    }

    #[test]
    fn ip_addresses() {
        for name in ["192.168.5.4", "10.0.0.1", "999.999.999.999", "1.2.3.4"] {
            assert!(reason_of(name).contains("IP address"), "{name:?}");
        }
    }

    #[test]
    fn reserved_prefixes_and_suffixes() {
        assert!(reason_of("xn--bucket").contains("prefix"));
        assert!(reason_of("sthree-bucket").contains("prefix"));
        assert!(reason_of("bucket-s3alias").contains("suffix"));
        assert!(reason_of("bucket--ol-s3").contains("suffix"));
        assert!(reason_of("bucket--x-s3").contains("suffix"));
    }
}
