//! The fast path for plain reads: GetObject and HeadObject of a whole object, path style, signed
//! in the `Authorization` header, with no query string, range or precondition. That is most of
//! what S3 clients send, and on it s3s spent more time (routing, header parsing, deriving the
//! signing key on every request, serializing a 40-field output) than the read itself.
//!
//! [`FastReads`] wraps the s3s service. A plain read is verified here (SigV4 with a per-core
//! signing-key cache, clock skew, the bucket ACL), read from the shard and answered with the same
//! headers the s3s path writes. Every other request, and every plain read it cannot answer with
//! 200 (a signature it cannot verify, an unknown key, a missing bucket or object, any error), goes
//! to s3s unchanged: errors have one source, and this path only ever says yes.
//!
//! Must never: answer a request s3s would refuse, or answer differently from s3s.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::Service;
use s3s::Body;
use s3s::dto::{StreamingBlob, Timestamp, TimestampFormat};
use s3s::host::S3Host;
use send_wrapper::SendWrapper;

use crate::auth::{DomainHost, OpClass, authorize};
use crate::layout::{BodyLayout, ChecksumKind};
use crate::s3::{header_fields, timestamp};
use crate::sigv4::{
    AuthorizationV4, CLOCK_SKEW_MAX_SECS, SigningKeys, amz_date_unix_secs, canonical_request,
    signature_matches, string_to_sign,
};
use crate::store::{Ctx, StoredObject};

/// Request headers a plain read may carry. Any other header (a range, a precondition, a security
/// token, SSE-C keys, a checksum other than the mode) sends the request to s3s.
const PLAIN_READ_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
    "authorization",
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "user-agent",
    "x-amz-checksum-mode",
    "x-amz-content-sha256",
    "x-amz-date",
    "x-amz-user-agent",
];

/// SHA-256 of the empty body, the one signed payload hash a GET without a body may declare.
const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The longest key s3s accepts (bytes).
const KEY_BYTES_MAX: usize = 1024;

/// The s3s service with plain reads answered in front of it.
#[derive(Clone)]
pub struct FastReads<S> {
    inner: S,
    ctx: Ctx,
    domain: Option<Rc<DomainHost>>,
    signing_keys: Rc<SigningKeys>,
}

impl<S> FastReads<S> {
    /// Wraps `inner` (the s3s service of this core).
    pub fn new(inner: S, ctx: Ctx) -> Self {
        let domain = ctx
            .config
            .virtual_host_domain
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(|d| Rc::new(DomainHost::new(d)));
        Self {
            inner,
            ctx,
            domain,
            signing_keys: Rc::default(),
        }
    }
}

impl<S> Service<Request<Incoming>> for FastReads<S>
where
    S: Service<Request<Incoming>, Response = Response<Body>> + Clone + 'static,
    S::Future: Unpin + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Answer<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        match self.plain_read(&req) {
            Some(read) => {
                let this = self.clone();
                Answer::Fast(Box::pin(async move {
                    match this.serve(&read).await {
                        Some(resp) => Ok(resp),
                        None => this.inner.call(req).await,
                    }
                }))
            }
            None => Answer::Inner(self.inner.call(req)),
        }
    }
}

/// The response future: the fast path's, or s3s's as it is (no extra allocation).
pub enum Answer<F: Future> {
    /// A plain read (falls back to s3s inside if it cannot answer).
    Fast(Pin<Box<dyn Future<Output = F::Output>>>),
    /// Any other request.
    Inner(F),
}

impl<F: Future + Unpin> Future for Answer<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.get_mut() {
            Answer::Fast(fut) => fut.as_mut().poll(cx),
            Answer::Inner(fut) => Pin::new(fut).poll(cx),
        }
    }
}

/// A verified plain read.
struct PlainRead {
    head: bool,
    bucket: String,
    key: String,
    access_key: String,
    checksums: bool,
}

impl<S> FastReads<S> {
    /// The request as a verified plain read, or `None` for s3s.
    fn plain_read(&self, req: &Request<Incoming>) -> Option<PlainRead> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        if req.uri().query().is_some() || req.version() != http::Version::HTTP_11 {
            return None;
        }
        let headers = req.headers();
        // A repeated header is for s3s to judge (it refuses some, joins others), and so is a
        // value that is not visible ASCII (s3s refuses some, drops others from the signature).
        if headers.len() != headers.keys_len()
            || !headers.iter().all(|(name, value)| {
                PLAIN_READ_HEADERS.contains(&name.as_str()) && value.to_str().is_ok()
            })
        {
            return None;
        }
        if headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
        {
            return None;
        }
        if let (Some(domain), Some(host)) = (&self.domain, headers.get(header::HOST)) {
            let host = host.to_str().ok()?;
            if !is_ip_address(host) && domain.parse_host_header(host).ok()?.bucket().is_some() {
                return None;
            }
        }
        let raw_path = req.uri().path();
        let path = percent_decode(raw_path)?;
        let (bucket, key) = path.strip_prefix('/')?.split_once('/')?;
        if key.is_empty()
            || key.len() > KEY_BYTES_MAX
            || leofs_manager::validate_bucket_name(bucket).is_err()
        {
            return None;
        }
        let access_key = self.verify_signature(req, &path)?;
        let checksums = headers
            .get("x-amz-checksum-mode")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"ENABLED"));
        Some(PlainRead {
            head,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            access_key,
            checksums,
        })
    }

    /// The access key whose signature `req` carries, if it verifies now.
    fn verify_signature(&self, req: &Request<Incoming>, decoded_path: &str) -> Option<String> {
        let headers = req.headers();
        let auth = AuthorizationV4::parse(headers.get(header::AUTHORIZATION)?.to_str().ok()?)?;
        if auth.service != "s3" {
            return None;
        }
        let amz_date = headers.get("x-amz-date")?.to_str().ok()?;
        if amz_date.get(..8) != Some(auth.date) {
            return None;
        }
        // Compared in nanoseconds, as s3s does: whole seconds would let a request that is a
        // fraction of a second too old through.
        let sent_ns = u128::from(amz_date_unix_secs(amz_date)?) * 1_000_000_000;
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_nanos();
        if now_ns.abs_diff(sent_ns) > u128::from(CLOCK_SKEW_MAX_SECS) * 1_000_000_000 {
            return None;
        }
        let payload_hash = headers.get("x-amz-content-sha256")?.to_str().ok()?;
        if payload_hash != "UNSIGNED-PAYLOAD" && payload_hash != EMPTY_PAYLOAD_SHA256 {
            return None;
        }
        let canonical = canonical_request(
            req.method().as_str(),
            &uri_encode_path(decoded_path),
            headers,
            auth.signed_headers,
            payload_hash,
        )?;
        let signing_key = self.ctx.manager.with_snapshot(|state| {
            let secret = &state.access_key(auth.access_key)?.secret_access_key;
            Some(self.signing_keys.get(&auth, secret))
        })?;
        let to_sign = string_to_sign(amz_date, &auth, &canonical);
        signature_matches(&signing_key, &to_sign, auth.signature)
            .then(|| auth.access_key.to_owned())
    }

    /// Answers a verified plain read with 200, or `None` for s3s.
    async fn serve(&self, read: &PlainRead) -> Option<Response<Body>> {
        let allowed = self.ctx.manager.with_snapshot(|state| {
            state.bucket(&read.bucket).is_some()
                && authorize(
                    state,
                    Some(&read.access_key),
                    Some(&read.bucket),
                    OpClass::Read,
                )
                .is_ok()
        });
        if !allowed {
            return None;
        }
        let found = if read.head {
            self.ctx.head_object(&read.bucket, &read.key).await
        } else {
            self.ctx.get_object(&read.bucket, &read.key).await
        };
        let obj = found.ok()??;
        let mut resp = Response::new(Body::empty());
        object_headers(resp.headers_mut(), &obj, read.checksums)?;
        if !read.head {
            *resp.body_mut() = match &obj.meta.layout {
                BodyLayout::Inline if obj.inline.len() as u64 == obj.meta.size_bytes => {
                    Body::from(obj.inline.clone())
                }
                BodyLayout::Inline => return None,
                BodyLayout::Chunked(_) => {
                    let stream =
                        self.ctx
                            .read_object(&read.bucket, &read.key, &obj, 0..obj.meta.size_bytes);
                    // Sound: the stream is polled and dropped by this core's hyper connection
                    // task, like the s3s path's body (see `s3::get`).
                    Body::from(StreamingBlob::wrap(SendWrapper::new(stream)))
                }
            };
        }
        tracing::trace!(bucket = %read.bucket, key = %read.key, head = read.head, "plain read served on the fast path");
        *resp.status_mut() = StatusCode::OK;
        Some(resp)
    }
}

/// The headers GetObject and HeadObject answer a whole-object read with, in s3s's order;
/// `None` if a stored value cannot be written as s3s would write it.
fn object_headers(out: &mut http::HeaderMap, obj: &StoredObject, checksums: bool) -> Option<()> {
    let h = header_fields(&obj.meta.headers);
    let value = |text: &str| HeaderValue::from_str(text).ok();
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(v) = &h.cache_control {
        out.insert(header::CACHE_CONTROL, value(v)?);
    }
    if checksums && obj.meta.parts_count == 0 {
        for (kind, name) in [
            (ChecksumKind::Crc32, "x-amz-checksum-crc32"),
            (ChecksumKind::Crc32c, "x-amz-checksum-crc32c"),
            (ChecksumKind::Crc64Nvme, "x-amz-checksum-crc64nvme"),
            (ChecksumKind::Sha1, "x-amz-checksum-sha1"),
            (ChecksumKind::Sha256, "x-amz-checksum-sha256"),
        ] {
            if let Some(sum) = obj.meta.checksums.iter().find(|c| c.kind == kind) {
                out.insert(HeaderName::from_static(name), value(&sum.value)?);
            }
        }
    }
    for (name, v) in [
        (header::CONTENT_DISPOSITION, &h.content_disposition),
        (header::CONTENT_ENCODING, &h.content_encoding),
        (header::CONTENT_LANGUAGE, &h.content_language),
    ] {
        if let Some(v) = v {
            out.insert(name, value(v)?);
        }
    }
    out.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(obj.meta.size_bytes),
    );
    if let Some(v) = &h.content_type {
        out.insert(header::CONTENT_TYPE, value(v)?);
    }
    out.insert(header::ETAG, value(&format!("\"{}\"", obj.meta.etag()))?);
    if let Some(expires) = &h.expires {
        out.insert(header::EXPIRES, http_date(expires)?);
    }
    out.insert(header::LAST_MODIFIED, http_date(&timestamp(obj.hlc))?);
    for (name, v) in &obj.meta.headers.user_meta {
        // s3s writes other values RFC 2047-encoded; those objects take the s3s path.
        if !v.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return None;
        }
        let name = HeaderName::from_bytes(format!("x-amz-meta-{name}").as_bytes()).ok()?;
        out.insert(name, value(v)?);
    }
    Some(())
}

fn http_date(t: &Timestamp) -> Option<HeaderValue> {
    let mut buf = Vec::with_capacity(29);
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    HeaderValue::from_bytes(&buf).ok()
}

/// Whether a Host value is an IP address, with or without a port (s3s then parses path style).
fn is_ip_address(host: &str) -> bool {
    host.parse::<std::net::SocketAddr>().is_ok() || host.parse::<std::net::IpAddr>().is_ok()
}

/// Decodes `%XX` escapes (and nothing else, like s3s); `None` on a malformed escape or a result
/// that is not UTF-8. The REST API decodes its paths with it too.
pub(crate) fn percent_decode(path: &str) -> Option<String> {
    if !path.contains('%') {
        return Some(path.to_owned());
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let digit = |at: usize| char::from(*bytes.get(at)?).to_digit(16);
            out.push(u8::try_from(digit(i + 1)? * 16 + digit(i + 2)?).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// S3's canonical URI of a decoded path: every byte but `A-Z a-z 0-9 - . _ ~ /` as `%XX`.
fn uri_encode_path(path: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(path.len() + 16);
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 15)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_like_s3s() {
        assert_eq!(
            percent_decode("/b/k%20x/%C3%BC+~").as_deref(),
            Some("/b/k x/ü+~")
        );
        assert_eq!(percent_decode("/b/plain").as_deref(), Some("/b/plain"));
        assert_eq!(percent_decode("/b/%zz"), None);
        assert_eq!(percent_decode("/b/%4"), None);
        assert_eq!(percent_decode("/b/%+1"), None);
        assert_eq!(percent_decode("/b/%FF"), None);
    }

    #[test]
    fn canonical_uris_encode_all_but_unreserved_and_slash() {
        assert_eq!(uri_encode_path("/b/k x/ü+~*"), "/b/k%20x/%C3%BC%2B~%2A");
    }
}
