//! A bucket's CORS rules (S3 PutBucketCors), as the catalog keeps them and every gateway answers
//! from them: which origins, methods and request headers a rule allows, and how an origin or a
//! header name matches a rule's entry (one `*` wildcard, anywhere; header names compared without
//! regard to case).

/// Most rules one bucket's CORS configuration holds (S3's limit).
pub const CORS_RULES_MAX: usize = 100;

/// The methods a CORS rule may allow (S3's set).
pub const CORS_METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// One CORS rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CorsRule {
    /// The rule's id, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Origins allowed (each may hold one `*`).
    pub allowed_origins: Vec<String>,
    /// Methods allowed (of [`CORS_METHODS`]).
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for (each may hold one `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Response headers the browser may expose to the page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

/// Whether `value` matches `pattern`, which may hold one `*` standing for any run of
/// characters (S3's wildcard in origins and header names).
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len()
                && value.starts_with(head)
                && value.ends_with(tail)
        }
    }
}

impl CorsRule {
    /// Whether the rule allows `origin`.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|pattern| wildcard_match(pattern, origin))
    }

    /// Whether the rule allows `method` (exact, as S3 compares it).
    pub fn allows_method(&self, method: &str) -> bool {
        self.allowed_methods.iter().any(|m| m == method)
    }

    /// Whether the rule allows every one of `headers` (compared without regard to case).
    pub fn allows_headers<'a>(&self, mut headers: impl Iterator<Item = &'a str>) -> bool {
        headers.all(|header| {
            let header = header.to_ascii_lowercase();
            self.allowed_headers
                .iter()
                .any(|pattern| wildcard_match(&pattern.to_ascii_lowercase(), &header))
        })
    }

    /// Whether the rule allows `origin` with any origin (`*`): the answer then names `*`
    /// rather than the origin, as S3's does.
    pub fn allows_any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }
}

/// The first of `rules` that allows a request from `origin` with `method` and `headers` (S3
/// takes the first match).
pub fn matching_rule<'r>(
    rules: &'r [CorsRule],
    origin: &str,
    method: &str,
    headers: &[&str],
) -> Option<&'r CorsRule> {
    rules.iter().find(|rule| {
        rule.allows_origin(origin)
            && rule.allows_method(method)
            && rule.allows_headers(headers.iter().copied())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            id: None,
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            expose_headers: Vec::new(),
            max_age_seconds: None,
        }
    }

    #[test]
    fn wildcards_stand_for_any_run_of_characters() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*", "https://a.example"));
        assert!(wildcard_match("https://*.example", "https://a.b.example"));
        assert!(!wildcard_match("https://*.example", "http://a.example"));
        assert!(!wildcard_match("https://*.example", "https://.exampl"));
        assert!(wildcard_match("x-amz-*", "x-amz-date"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
    }

    #[test]
    fn the_first_rule_allowing_origin_method_and_headers_matches() {
        let rules = [
            rule(&["https://a.example"], &["GET"], &[]),
            rule(
                &["https://*.example"],
                &["PUT", "GET"],
                &["X-Amz-*", "content-type"],
            ),
            rule(&["*"], &["GET"], &["*"]),
        ];
        let found = |o: &str, m: &str, h: &[&str]| {
            matching_rule(&rules, o, m, h).map(|r| rules.iter().position(|x| x == r).unwrap())
        };
        assert_eq!(found("https://a.example", "GET", &[]), Some(0));
        assert_eq!(found("https://a.example", "GET", &["x-amz-date"]), Some(1));
        assert_eq!(
            found("https://b.example", "PUT", &["Content-Type"]),
            Some(1)
        );
        assert_eq!(found("https://b.example", "PUT", &["x-other"]), None);
        assert_eq!(found("https://elsewhere", "GET", &["x-other"]), Some(2));
        assert_eq!(found("https://elsewhere", "DELETE", &[]), None);
        // Methods compare exactly.
        assert_eq!(found("https://a.example", "get", &[]), None);
    }
}
