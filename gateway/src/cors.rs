//! CORS as S3 answers it, from a bucket's rules (`leofs_manager::cors`, set with PutBucketCors):
//! a preflight `OPTIONS` request is answered here, before any other handling (it carries no
//! signature), and a request carrying `Origin` whose bucket has a rule for that origin and
//! method gets the `Access-Control-*` headers on its answer, whichever path answered it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use leofs_manager::ManagerState;
use leofs_manager::cors::{CorsRule, matching_rule};
use s3s::{Body, S3Error, S3ErrorCode};

const ALLOW_ORIGIN: &str = "access-control-allow-origin";
const ALLOW_METHODS: &str = "access-control-allow-methods";
const ALLOW_HEADERS: &str = "access-control-allow-headers";
const EXPOSE_HEADERS: &str = "access-control-expose-headers";
const MAX_AGE: &str = "access-control-max-age";
const ALLOW_CREDENTIALS: &str = "access-control-allow-credentials";
const REQUEST_METHOD: &str = "access-control-request-method";
const REQUEST_HEADERS: &str = "access-control-request-headers";

/// S3's refusal of a CORS request (403 `AccessForbidden`).
fn forbidden(message: &str) -> S3Error {
    let mut err = S3Error::with_message(
        S3ErrorCode::Custom("AccessForbidden".into()),
        message.to_owned(),
    );
    err.set_status_code(StatusCode::FORBIDDEN);
    err
}

/// S3's answer to a preflight that lacks what it must carry (400 `BadRequest`).
fn bad_request(message: &str) -> S3Error {
    let mut err =
        S3Error::with_message(S3ErrorCode::Custom("BadRequest".into()), message.to_owned());
    err.set_status_code(StatusCode::BAD_REQUEST);
    err
}

fn text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The answer to a preflight request for `bucket` (None: the request names no bucket): 200 with
/// the matching rule's headers, or S3's error.
pub fn preflight(
    state: &ManagerState,
    bucket: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, S3Error> {
    let Some(origin) = text(headers, header::ORIGIN.as_str()) else {
        return Err(bad_request(
            "Insufficient information. Origin request header needed.",
        ));
    };
    let Some(method) = text(headers, REQUEST_METHOD) else {
        return Err(bad_request("Invalid Access-Control-Request-Method: null"));
    };
    let Some(bucket) = bucket.and_then(|name| state.bucket(name)) else {
        return Err(forbidden("CORSResponse: Bucket not found"));
    };
    if bucket.cors.is_empty() {
        return Err(forbidden(
            "CORSResponse: CORS is not enabled for this bucket.",
        ));
    }
    let requested: Vec<&str> = text(headers, REQUEST_HEADERS)
        .map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let Some(rule) = matching_rule(&bucket.cors, origin, method, &requested) else {
        return Err(forbidden(
            "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        ));
    };
    let mut resp = Response::new(Body::empty());
    allow(resp.headers_mut(), rule, origin);
    if !requested.is_empty() {
        insert(resp.headers_mut(), ALLOW_HEADERS, &requested.join(", "));
    }
    insert(
        resp.headers_mut(),
        header::VARY.as_str(),
        "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    );
    Ok(resp)
}

/// Adds the CORS headers to the answer (`out`) of a request from `origin` with `method` into
/// `bucket`, when one of the bucket's rules allows them (and `Vary: Origin` whenever the bucket
/// has rules).
pub fn decorate(
    state: &ManagerState,
    bucket: &str,
    method: &str,
    origin: &str,
    out: &mut HeaderMap,
) {
    let Some(bucket) = state.bucket(bucket) else {
        return;
    };
    if bucket.cors.is_empty() {
        return;
    }
    // The answer depends on the origin whether a rule matched it or not (a shared cache must
    // not hand one origin's answer to another).
    out.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(rule) = matching_rule(&bucket.cors, origin, method, &[]) {
        allow(out, rule, origin);
    }
}

/// The headers saying what `rule` allows `origin`.
fn allow(out: &mut HeaderMap, rule: &CorsRule, origin: &str) {
    if rule.allows_any_origin() {
        insert(out, ALLOW_ORIGIN, "*");
    } else {
        insert(out, ALLOW_ORIGIN, origin);
        insert(out, ALLOW_CREDENTIALS, "true");
    }
    insert(out, ALLOW_METHODS, &rule.allowed_methods.join(", "));
    if !rule.expose_headers.is_empty() {
        insert(out, EXPOSE_HEADERS, &rule.expose_headers.join(", "));
    }
    if let Some(age) = rule.max_age_seconds {
        insert(out, MAX_AGE, &age.to_string());
    }
}

/// Sets a header whose value came from a rule or a request (one that cannot be a header value
/// is left out: origins and requested headers came from header values, methods are checked and
/// expose headers are header names, checked when the rule was put).
fn insert(out: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        out.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leofs_manager::{Bucket, BucketAcl};

    fn state(cors: Vec<CorsRule>) -> ManagerState {
        let mut state = ManagerState::default();
        state.buckets.insert(
            "b".into(),
            Bucket {
                name: "b".into(),
                owner: "o".into(),
                acl: BucketAcl::Private,
                grants: Vec::new(),
                created_unix_ms: 0,
                incarnation: 1,
                deleting: false,
                consistency: None,
                versioning: Default::default(),
                lifecycle: Vec::new(),
                tags: Vec::new(),
                cors,
                policy: None,
            },
        );
        state
    }

    fn rule(origin: &str) -> CorsRule {
        CorsRule {
            id: None,
            allowed_origins: vec![origin.into()],
            allowed_methods: vec!["GET".into(), "PUT".into()],
            allowed_headers: vec!["x-amz-*".into()],
            expose_headers: vec!["ETag".into()],
            max_age_seconds: Some(600),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn preflights_are_answered_from_the_first_matching_rule() {
        let s = state(vec![rule("https://*.example"), rule("*")]);
        let ok = preflight(
            &s,
            Some("b"),
            &headers(&[
                ("origin", "https://a.example"),
                (REQUEST_METHOD, "PUT"),
                (REQUEST_HEADERS, "X-Amz-Date, x-amz-meta-a"),
            ]),
        )
        .unwrap();
        let h = ok.headers();
        assert_eq!(h[ALLOW_ORIGIN], "https://a.example");
        assert_eq!(h[ALLOW_CREDENTIALS], "true");
        assert_eq!(h[ALLOW_METHODS], "GET, PUT");
        assert_eq!(h[ALLOW_HEADERS], "X-Amz-Date, x-amz-meta-a");
        assert_eq!(h[EXPOSE_HEADERS], "ETag");
        assert_eq!(h[MAX_AGE], "600");
        let any = preflight(
            &s,
            Some("b"),
            &headers(&[("origin", "http://other"), (REQUEST_METHOD, "GET")]),
        )
        .unwrap();
        assert_eq!(any.headers()[ALLOW_ORIGIN], "*");
        let code = |h: &[(&str, &str)], bucket: Option<&str>, s: &ManagerState| {
            preflight(s, bucket, &headers(h))
                .unwrap_err()
                .code()
                .as_str()
                .to_owned()
        };
        assert_eq!(
            code(&[(REQUEST_METHOD, "GET")], Some("b"), &s),
            "BadRequest"
        );
        assert_eq!(code(&[("origin", "x")], Some("b"), &s), "BadRequest");
        let refused = [("origin", "http://other"), (REQUEST_METHOD, "DELETE")];
        assert_eq!(code(&refused, Some("b"), &s), "AccessForbidden");
        let no_rules = state(Vec::new());
        let get = [("origin", "http://other"), (REQUEST_METHOD, "GET")];
        assert_eq!(code(&get, Some("b"), &no_rules), "AccessForbidden");
        assert_eq!(code(&get, Some("missing"), &s), "AccessForbidden");
    }

    #[test]
    fn answers_to_allowed_origins_carry_the_headers() {
        let s = state(vec![rule("https://a.example")]);
        let mut out = HeaderMap::new();
        decorate(&s, "b", "GET", "https://a.example", &mut out);
        assert_eq!(out[ALLOW_ORIGIN], "https://a.example");
        assert_eq!(out[header::VARY], "Origin");
        let mut out = HeaderMap::new();
        decorate(&s, "b", "DELETE", "https://a.example", &mut out);
        assert!(out.get(ALLOW_ORIGIN).is_none());
        assert_eq!(out[header::VARY], "Origin");
        let mut out = HeaderMap::new();
        decorate(&s, "missing", "GET", "https://a.example", &mut out);
        decorate(
            &state(Vec::new()),
            "b",
            "GET",
            "https://a.example",
            &mut out,
        );
        assert!(out.is_empty());
    }
}
