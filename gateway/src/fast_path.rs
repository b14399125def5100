//! The fast path for plain requests: GetObject and HeadObject of a whole object, and PutObject
//! of a body with a Content-Length and no checksum, metadata or precondition headers; path
//! style, signed in the `Authorization` header, no query string. That is most of what S3 clients
//! send, and on it s3s spent as much time (routing, parsing every possible header, deriving the
//! signing key on every request, serializing a 40-field output) as the operation itself.
//!
//! [`FastPath`] wraps the s3s service. A plain request is verified here (SigV4 with a per-core
//! signing-key cache, clock skew, the bucket ACL) and answered with the same status, headers and
//! body the s3s path produces:
//! - a plain read is answered only with 200; any request it cannot answer so (a signature it
//!   cannot verify, an unknown key, a missing bucket or object, any error) goes to s3s unchanged;
//! - a plain write that passes the checks runs the same `put_object` the s3s path runs; errors
//!   met once the body is being read (a bad body, a full disk) can no longer go to s3s and are
//!   written here as s3s writes them (status, XML document, headers).
//!
//! Every other request goes to s3s as it is, except a presigned URL valid for longer than S3
//! allows, refused here ([`unsupported::check_presigned_expiry`]). No plain request carries a
//! header `unsupported` checks (encryption, ACLs, tags, storage class, expected owner, …) or a
//! query: such requests go to s3s, whose access check refuses or honours them.
//!
//! Every request body, on either path, is a [`WatchedBody`]: a body that stops arriving for the
//! configured idle time ends the request with `RequestTimeout`, and an answer sent before the
//! body was read to its end closes the connection (see [`crate::body`]).
//!
//! Three things are done here for every request, whichever path answers it: a CORS preflight
//! (`OPTIONS`) is answered from the bucket's rules ([`crate::cors`]), an answer to a request
//! whose `Origin` a rule allows gets the `Access-Control-*` headers, and every answer gets
//! `x-amz-request-id` and `x-amz-id-2` (and an error document its `<RequestId>`).
//!
//! Must never: answer a request s3s would refuse, or answer differently from s3s, with one
//! deliberate exception: a plain PUT with `Transfer-Encoding: chunked` and no Content-Length,
//! which s3s refuses (411), is taken here, its signed SHA-256 checked as the body arrives.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::Service;
use s3s::dto::{PutObjectInput, StreamingBlob, Timestamp, TimestampFormat};
use s3s::host::S3Host;
use s3s::service::S3Service;
use s3s::{Body, HttpError, S3Error, S3ErrorCode, S3Request};
use send_wrapper::SendWrapper;

use crate::auth::{Access, DomainHost, Requester, Verdict, authorize};
use crate::body::WatchedBody;
use crate::layout::{BodyLayout, BucketId, ChecksumKind, bucket_id};
use crate::rest::split_path;
use crate::s3::{header_fields, timestamp, unsupported};
use crate::sigv4::{
    AuthorizationV4, CLOCK_SKEW_MAX_SECS, SigningKeys, amz_date_unix_secs, canonical_request,
    signature_matches, string_to_sign,
};
use crate::store::{Ctx, StoredObject};
use leofs_shard::PeerAddr;

/// Request headers any plain request may carry. Any other header (a range, a precondition, a
/// security token, SSE-C keys, checksums, metadata, Content-MD5) sends the request to s3s.
const PLAIN_HEADERS: &[&str] = &[
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
    "x-amz-content-sha256",
    "x-amz-date",
    "x-amz-user-agent",
];

/// Headers a plain read may carry besides [`PLAIN_HEADERS`].
const PLAIN_READ_HEADERS: &[&str] = &["x-amz-checksum-mode"];

/// Headers a plain write may carry besides [`PLAIN_HEADERS`] (`expect` only as
/// `100-continue`, which hyper answers when the body is first read, on either path;
/// `transfer-encoding` only as `chunked`, in place of a Content-Length).
const PLAIN_WRITE_HEADERS: &[&str] = &["content-type", "expect", "transfer-encoding"];

/// Most bytes a PUT whose length is not given (`Transfer-Encoding: chunked`) may send: S3's
/// largest single PUT, 5 GiB.
const CHUNKED_PUT_BYTES_MAX: u64 = 5 << 30;

/// SHA-256 of the empty body, the one signed payload hash a GET without a body may declare.
const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The payload hash of a body the signature does not cover (the only kind a plain write has:
/// s3s would hash a signed body, and refuse it on a mismatch).
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The s3s service with plain requests answered in front of it.
#[derive(Clone)]
pub struct FastPath {
    inner: S3Service,
    ctx: Ctx,
    domain: Option<Rc<DomainHost>>,
    signing_keys: Rc<SigningKeys>,
}

impl FastPath {
    /// Wraps `inner` (the s3s service of this core).
    pub fn new(inner: S3Service, ctx: Ctx) -> Self {
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

/// S3's message for a request whose body stopped arriving.
const REQUEST_TIMEOUT_MESSAGE: &str = "Your socket connection to the server was not read from or \
     written to within the timeout period. Idle connections will be closed.";

impl Service<Request<Incoming>> for FastPath {
    type Response = Response<Body>;
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, HttpError>>>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let (body, watch) = WatchedBody::new(body, self.ctx.config.body_idle_timeout);
        let req = Request::from_parts(parts, body.into_s3s_body());
        let this = self.clone();
        // A cross-origin request's answer carries what the bucket's CORS rules allow it.
        let cross_origin = (req.method() != Method::OPTIONS)
            .then(|| req.headers().get(header::ORIGIN)?.to_str().ok())
            .flatten()
            .and_then(|origin| Some((origin.to_owned(), self.bucket_of(&req)?)))
            .map(|(origin, bucket)| (origin, bucket, req.method().as_str().to_owned()));
        Box::pin(async move {
            let answer = this.answer(req).await;
            let mut resp = if watch.timed_out() {
                tracing::debug!(
                    idle_secs = this.ctx.config.body_idle_timeout.as_secs(),
                    "request body made no progress: RequestTimeout"
                );
                let mut resp = error_response(S3Error::with_message(
                    S3ErrorCode::RequestTimeout,
                    REQUEST_TIMEOUT_MESSAGE,
                ));
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                resp
            } else {
                let mut resp = answer?;
                watch.close_if_unread(resp.headers_mut());
                resp
            };
            if let Some((origin, bucket, method)) = cross_origin {
                this.ctx.manager.with_snapshot(|state| {
                    crate::cors::decorate(state, &bucket, &method, &origin, resp.headers_mut())
                });
            }
            stamp_request_id(&mut resp);
            Ok(resp)
        })
    }
}

/// Gives a response S3's request identification: `x-amz-request-id` (16 upper-case hex digits,
/// fresh for each request) and `x-amz-id-2` (base64), and, in an error document that lacks
/// it, `<RequestId>` with the same id (s3s writes none).
fn stamp_request_id(resp: &mut Response<Body>) {
    let [id, host]: [u64; 2] = rand::random();
    let id = format!("{id:016X}");
    let mut id2 = [0u8; 24];
    id2[..8].copy_from_slice(&host.to_be_bytes());
    id2[8..].copy_from_slice(id.as_bytes());
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-amz-request-id", value);
    }
    if let Ok(value) = HeaderValue::from_str(&crate::layout::base64_encode(&id2)) {
        resp.headers_mut().insert("x-amz-id-2", value);
    }
    if resp.status().is_success() {
        return;
    }
    let Some(document) = resp.body().bytes() else {
        return;
    };
    if let Some(code) = error_code_of(&document) {
        resp.extensions_mut()
            .insert(crate::access_log::ErrorCode(code.to_owned()));
    }
    if let Some(with_id) = error_document_with_request_id(&document, &id) {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(with_id.len()));
        *resp.body_mut() = Body::from(with_id);
    }
}

/// A path-style SigV2 request to a bucket (`/bucket`) is answered as `/bucket/`: SigV2 clients
/// (botocore, s3cmd, the Java SDK) sign a bucket's resource as `/bucket/` whatever path they
/// send, as S3 takes it, and s3s signs the path as sent.
fn sigv2_bucket_path<B>(req: &mut Request<B>) {
    let authorization = req.headers().get(header::AUTHORIZATION);
    let header_v2 = authorization.is_some_and(|v| v.as_bytes().starts_with(b"AWS "));
    let query = req.uri().query().unwrap_or("");
    let param = |name: &str| query.split('&').any(|p| p.split('=').next() == Some(name));
    let query_v2 = authorization.is_none()
        && param("AWSAccessKeyId")
        && !param("X-Amz-Signature")
        && !param("X-Amz-Credential");
    if !(header_v2 || query_v2) {
        return;
    }
    // Decoded as s3s decodes it: `/bucket%2Fkey` names an object.
    let one_segment = crate::rest::percent_decode(req.uri().path())
        .is_some_and(|path| path.len() > 1 && !path[1..].contains('/'));
    if !one_segment {
        return;
    }
    let path = req.uri().path();
    let rewritten = match req.uri().query() {
        Some(q) => format!("{path}/?{q}"),
        None => format!("{path}/"),
    };
    if let Ok(uri) = rewritten.parse() {
        *req.uri_mut() = uri;
    }
}

/// GetObjectAttributes' ETag is written without quotes by S3 (s3s quotes every ETag).
fn unquote_attributes_etag(resp: &mut Response<Body>) {
    if !resp.status().is_success() {
        return;
    }
    rewrite_document(resp, |text| {
        Some(
            text.replacen("<ETag>\"", "<ETag>", 1)
                .replacen("\"</ETag>", "</ETag>", 1),
        )
    });
}

/// The `<Code>` of an S3 error document.
fn error_code_of(document: &[u8]) -> Option<&str> {
    xml_element(std::str::from_utf8(document).ok()?, "Code")
}

/// The text of the first `<name>` element of an XML document s3s wrote (as written: entities
/// are not decoded).
pub(crate) fn xml_element<'a>(document: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = document.find(&open)? + open.len();
    let len = document[start..].find(&format!("</{name}>"))?;
    Some(&document[start..start + len])
}

/// Replaces an answer's document (a body s3s built whole) with what `edit` makes of it; an
/// answer with a streamed body, or an `edit` giving None, is left as it is.
pub(crate) fn rewrite_document(
    resp: &mut Response<Body>,
    edit: impl FnOnce(&str) -> Option<String>,
) {
    let Some(document) = resp.body().bytes() else {
        return;
    };
    let Some(rewritten) = std::str::from_utf8(&document).ok().and_then(edit) else {
        return;
    };
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
    *resp.body_mut() = Body::from(rewritten);
}

/// An S3 error document with `<RequestId>id</RequestId>` added before its end, or None when
/// `document` is not one or already has one.
fn error_document_with_request_id(document: &[u8], id: &str) -> Option<bytes::Bytes> {
    const END: &[u8] = b"</Error>";
    let text = std::str::from_utf8(document).ok()?;
    if text.contains("<RequestId>") {
        return None;
    }
    let at = text.trim_end().strip_suffix("</Error>")?.len();
    let mut out = Vec::with_capacity(document.len() + id.len() + 24);
    out.extend_from_slice(&document[..at]);
    out.extend_from_slice(b"<RequestId>");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"</RequestId>");
    out.extend_from_slice(END);
    Some(out.into())
}

impl FastPath {
    /// The answer to one request: a refusal, the fast path's, or s3s's.
    async fn answer(&self, mut req: Request<Body>) -> Result<Response<Body>, HttpError> {
        if self.bucket_in_host(&req).is_none() {
            sigv2_bucket_path(&mut req);
        }
        // A CORS preflight carries no signature: it is answered from the bucket's rules.
        if req.method() == Method::OPTIONS {
            let bucket = self.bucket_of(&req);
            let answer = self.ctx.manager.with_snapshot(|state| {
                crate::cors::preflight(state, bucket.as_deref(), req.headers())
            });
            return Ok(answer.unwrap_or_else(error_response));
        }
        // s3s answers a negative expiry with 400 and takes any positive one: S3's 403 comes
        // from here, before s3s parses the URL.
        if let Some(query) = req.uri().query()
            && let Err(refused) = unsupported::check_presigned_expiry(query)
        {
            return Ok(error_response(refused));
        }
        if crate::post_form::is_form_upload(&req) {
            let req = match crate::post_form::with_filename(req).await {
                Ok(req) => req,
                Err(e) => {
                    return Ok(error_response(S3Error::with_message(
                        S3ErrorCode::IncompleteBody,
                        format!("the form could not be read: {e}"),
                    )));
                }
            };
            let mut resp = self.inner.call(req).await?;
            crate::post_form::answer_as_s3(&mut resp);
            return Ok(resp);
        }
        if req.uri().query().is_some_and(|q| q.contains("attributes"))
            && crate::metered::operation(&req, self.ctx.config.virtual_host_domain.as_deref())
                == "GetObjectAttributes"
        {
            let mut resp = self.inner.call(req).await?;
            unquote_attributes_etag(&mut resp);
            return Ok(resp);
        }
        let Some(plain) = self.plain_request(&req) else {
            return self.inner.call(req).await;
        };
        let Some(bucket) = self.allowed(&plain, &req) else {
            return self.inner.call(req).await;
        };
        if req
            .extensions()
            .get::<crate::access_log::VerifiedRequester>()
            .is_some()
        {
            self.ctx.manager.with_snapshot(|state| {
                crate::access_log::VerifiedRequester::record(
                    req.extensions(),
                    state,
                    &plain.access_key,
                )
            });
        }
        match plain.kind {
            PlainKind::Read { head, checksums } => {
                match self.serve_read(&bucket, &plain, head, checksums).await {
                    Some(resp) => Ok(resp),
                    None => self.inner.call(req).await,
                }
            }
            PlainKind::Write {
                content_length,
                body_sha256,
            } => Ok(self
                .serve_write(plain, content_length, body_sha256, req)
                .await),
        }
    }
}

/// What a verified plain request asks for.
enum PlainKind {
    /// GetObject (`head` false) or HeadObject of the whole object.
    Read { head: bool, checksums: bool },
    /// PutObject with a Content-Length (as s3s parses it), or of a chunked body (None); with
    /// the body's SHA-256 when the signature covers it (a chunked body only).
    Write {
        content_length: Option<i64>,
        body_sha256: Option<[u8; 32]>,
    },
}

/// The payload hashes a plain request may be signed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Payload {
    /// A read: `UNSIGNED-PAYLOAD` or the empty body's hash.
    Empty,
    /// A write with a Content-Length: `UNSIGNED-PAYLOAD` (s3s hashes a signed body).
    Unsigned,
    /// A chunked write: `UNSIGNED-PAYLOAD`, or the body's SHA-256, checked as it arrives.
    UnsignedOrSigned,
}

/// The 32 bytes of a SHA-256 in 64 lower-case hex digits (as SigV4 writes it).
fn lower_hex_sha256(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let bytes = hex::decode(text).ok()?;
    <[u8; 32]>::try_from(bytes).ok()
}

/// A plain request whose signature verified.
struct PlainRequest {
    kind: PlainKind,
    bucket: String,
    key: String,
    access_key: String,
    /// The credential scope's region (s3s passes it to the operation).
    region: String,
}

impl FastPath {
    /// The request as a verified plain request, or `None` for s3s.
    fn plain_request(&self, req: &Request<Body>) -> Option<PlainRequest> {
        let method = req.method();
        let extra_headers = match *method {
            Method::GET | Method::HEAD => PLAIN_READ_HEADERS,
            Method::PUT => PLAIN_WRITE_HEADERS,
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
                let name = name.as_str();
                (PLAIN_HEADERS.contains(&name) || extra_headers.contains(&name))
                    && value.to_str().is_ok()
            })
        {
            return None;
        }
        let content_length = headers
            .get(header::CONTENT_LENGTH)
            .map(HeaderValue::as_bytes);
        let kind = if *method == Method::PUT {
            // A Content-Length that is not an i64 is refused by s3s before it reads the body.
            // Without one, the body is chunked (s3s refuses that: it must know the length of a
            // body whose SHA-256 it checks); the length is then learnt as it arrives.
            let chunked = headers.get(header::TRANSFER_ENCODING);
            let content_length = match (content_length, chunked) {
                (Some(length), None) => {
                    Some(std::str::from_utf8(length).ok()?.parse::<i64>().ok()?)
                }
                (None, Some(te)) if te.as_bytes().eq_ignore_ascii_case(b"chunked") => None,
                _ => return None,
            };
            if headers
                .get(header::EXPECT)
                .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
            {
                return None;
            }
            PlainKind::Write {
                content_length,
                body_sha256: None,
            }
        } else {
            if content_length.is_some_and(|v| v != b"0") {
                return None;
            }
            let checksums = headers
                .get("x-amz-checksum-mode")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"ENABLED"));
            PlainKind::Read {
                head: *method == Method::HEAD,
                checksums,
            }
        };
        if let (Some(domain), Some(host)) = (&self.domain, headers.get(header::HOST)) {
            let host = host.to_str().ok()?;
            if !is_ip_address(host) && domain.parse_host_header(host).ok()?.bucket().is_some() {
                return None;
            }
        }
        // The same split (and key length limit) as s3s and the REST API.
        let (bucket, key) = split_path(req.uri().path())?;
        leofs_manager::validate_bucket_name(&bucket).ok()?;
        let payload = match kind {
            PlainKind::Read { .. } => Payload::Empty,
            PlainKind::Write {
                content_length: Some(_),
                ..
            } => Payload::Unsigned,
            PlainKind::Write {
                content_length: None,
                ..
            } => Payload::UnsignedOrSigned,
        };
        let decoded_path = format!("/{bucket}/{key}");
        let (access_key, region, body_sha256) =
            self.verify_signature(req, &decoded_path, payload)?;
        let kind = match kind {
            PlainKind::Write { content_length, .. } => PlainKind::Write {
                content_length,
                body_sha256,
            },
            read => read,
        };
        Some(PlainRequest {
            kind,
            bucket,
            key,
            access_key,
            region,
        })
    }

    /// The bucket a request names: by its host (virtual-host style, with a domain set) or the
    /// first segment of its path.
    fn bucket_of(&self, req: &Request<Body>) -> Option<String> {
        if let Some(bucket) = self.bucket_in_host(req) {
            return Some(bucket);
        }
        let path = crate::rest::percent_decode(req.uri().path())?;
        let bucket = path.trim_start_matches('/').split('/').next()?;
        (!bucket.is_empty()).then(|| bucket.to_owned())
    }

    /// The bucket a virtual-host-style request names in its `Host`.
    fn bucket_in_host<B>(&self, req: &Request<B>) -> Option<String> {
        let (domain, host) = (self.domain.as_ref()?, req.headers().get(header::HOST)?);
        let host = host.to_str().ok().filter(|h| !is_ip_address(h))?;
        let parsed = domain.parse_host_header(host).ok()?;
        parsed.bucket().map(str::to_owned)
    }

    /// The access key whose signature `req` carries, its scope's region and the body's SHA-256
    /// when the signature covers the body, if it verifies now with a payload hash `payload`
    /// allows.
    fn verify_signature(
        &self,
        req: &Request<Body>,
        decoded_path: &str,
        payload: Payload,
    ) -> Option<(String, String, Option<[u8; 32]>)> {
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
        let body_sha256 = match payload {
            _ if payload_hash == UNSIGNED_PAYLOAD => None,
            Payload::Empty if payload_hash == EMPTY_PAYLOAD_SHA256 => None,
            Payload::UnsignedOrSigned => Some(lower_hex_sha256(payload_hash)?),
            _ => return None,
        };
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
        signature_matches(&signing_key, &to_sign, auth.signature).then(|| {
            (
                auth.access_key.to_owned(),
                auth.region.to_owned(),
                body_sha256,
            )
        })
    }

    /// The bucket's storage identity, if it exists, never had versioning (a versioned bucket's
    /// answers carry version ids and delete markers, which s3s writes), and the ACL lets the
    /// caller do what the request asks.
    fn allowed(&self, plain: &PlainRequest, req: &Request<Body>) -> Option<BucketId> {
        let op = match plain.kind {
            PlainKind::Read { head: true, .. } => "HeadObject",
            PlainKind::Read { head: false, .. } => "GetObject",
            PlainKind::Write { .. } => "PutObject",
        };
        let requester = Requester {
            access_key: Some(&plain.access_key),
            source_ip: req.extensions().get::<PeerAddr>().map(|p| p.0.ip()),
            headers: Some(req.headers()),
        };
        let access = Access::new(op, requester, Some(&plain.bucket), Some(&plain.key));
        self.ctx.manager.with_snapshot(|state| {
            let bucket = state.bucket(&plain.bucket)?;
            if !bucket.versioning.is_off() {
                return None;
            }
            // An object read by someone else than the bucket owner is judged by the object's ACL:
            // s3s's operations read it.
            if authorize(state, &access).ok()? != Verdict::Allowed {
                return None;
            }
            Some(bucket_id(bucket))
        })
    }

    /// Answers a verified, allowed plain read with 200, or `None` for s3s.
    async fn serve_read(
        &self,
        bucket: &BucketId,
        read: &PlainRequest,
        head: bool,
        checksums: bool,
    ) -> Option<Response<Body>> {
        let found = if head {
            self.ctx.head_object(bucket, &read.key).await
        } else {
            self.ctx.get_object(bucket, &read.key).await
        };
        let obj = found.ok()??;
        if obj.meta.headers.sse_c.is_some() {
            // Encrypted with a customer key this request does not carry: s3s answers.
            return None;
        }
        let mut resp = Response::new(Body::empty());
        object_headers(resp.headers_mut(), &obj, checksums)?;
        if !head {
            *resp.body_mut() = match &obj.meta.layout {
                BodyLayout::Inline if obj.inline.len() as u64 == obj.meta.size_bytes => {
                    Body::from(obj.inline.clone())
                }
                BodyLayout::Inline => return None,
                BodyLayout::Chunked(_) => {
                    let stream = self
                        .ctx
                        .open_body(bucket, &read.key, &obj, 0..obj.meta.size_bytes, None)
                        .await
                        .ok()?;
                    // Sound: the stream is polled and dropped by this core's hyper connection
                    // task, like the s3s path's body (see `s3::get`).
                    Body::from(StreamingBlob::wrap(SendWrapper::new(stream)))
                }
            };
        }
        tracing::trace!(bucket = %read.bucket, key = %read.key, head, "plain read served on the fast path");
        *resp.status_mut() = StatusCode::OK;
        Some(resp)
    }

    /// Runs a verified, allowed plain write through the same `put_object` as the s3s path and
    /// writes its answer (or error) as s3s would.
    async fn serve_write(
        &self,
        write: PlainRequest,
        content_length: Option<i64>,
        body_sha256: Option<[u8; 32]>,
        req: Request<Body>,
    ) -> Response<Body> {
        let PlainRequest {
            bucket,
            key,
            access_key,
            region,
            ..
        } = write;
        let (parts, body) = req.into_parts();
        let credentials = self.ctx.manager.with_snapshot(|state| {
            state
                .access_key(&access_key)
                .map(|k| s3s::auth::Credentials {
                    access_key: k.access_key_id.clone(),
                    secret_key: k.secret_access_key.as_str().into(),
                })
        });
        // s3s reads an empty header as an absent one.
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let body = match content_length {
            Some(_) => StreamingBlob::from(body),
            None => StreamingBlob::wrap(CheckedBody::new(body, body_sha256)),
        };
        let input = PutObjectInput {
            bucket: bucket.clone(),
            key: key.clone(),
            body: Some(body),
            content_length,
            content_type,
            ..PutObjectInput::default()
        };
        let request = S3Request {
            input,
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            extensions: parts.extensions,
            credentials,
            region: s3s::region::Region::new(region.into()).ok(),
            service: Some("s3".to_owned()),
            trailing_headers: None,
        };
        match crate::s3::put::put_object(&self.ctx, request).await {
            Ok(done) => match put_response(&done.output) {
                Ok(resp) => {
                    tracing::trace!(%bucket, %key, "plain write served on the fast path");
                    resp
                }
                Err(e) => error_response(S3Error::internal_error(e)),
            },
            Err(e) => error_response(S3Error::from(e)),
        }
    }
}

/// A chunked PUT's body: at most [`CHUNKED_PUT_BYTES_MAX`] bytes (then `EntityTooLarge`),
/// and, when the signature covers it, the SHA-256 it was signed with (checked at its end:
/// `XAmzContentSHA256Mismatch`, and the PUT commits nothing).
struct CheckedBody {
    inner: Body,
    hasher: Option<sha2::Sha256>,
    expected: [u8; 32],
    received: u64,
}

impl CheckedBody {
    fn new(inner: Body, sha256: Option<[u8; 32]>) -> Self {
        use sha2::Digest;
        Self {
            inner,
            hasher: sha256.map(|_| sha2::Sha256::new()),
            expected: sha256.unwrap_or_default(),
            received: 0,
        }
    }
}

impl futures_util::Stream for CheckedBody {
    type Item = Result<bytes::Bytes, S3Error>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use sha2::Digest;
        use std::task::Poll;
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(piece))) => {
                this.received += piece.len() as u64;
                if this.received > CHUNKED_PUT_BYTES_MAX {
                    let too_large = S3Error::with_message(
                        S3ErrorCode::EntityTooLarge,
                        "Your proposed upload exceeds the maximum allowed object size.",
                    );
                    return Poll::Ready(Some(Err(too_large)));
                }
                if let Some(hasher) = &mut this.hasher {
                    hasher.update(&piece);
                }
                Poll::Ready(Some(Ok(piece)))
            }
            Poll::Ready(None) => {
                let matches = this
                    .hasher
                    .take()
                    .is_none_or(|hasher| <[u8; 32]>::from(hasher.finalize()) == this.expected);
                if matches {
                    return Poll::Ready(None);
                }
                let mut mismatch = S3Error::with_message(
                    S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                );
                mismatch.set_status_code(StatusCode::BAD_REQUEST);
                Poll::Ready(Some(Err(mismatch)))
            }
            // The body stopped (the client went away, or it was idle too long).
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                e.to_string(),
            )))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// PutObject's answer as s3s's `serialize_http` writes it (a value that cannot be a header is
/// an internal error there too).
fn put_response(
    out: &s3s::dto::PutObjectOutput,
) -> Result<Response<Body>, http::header::InvalidHeaderValue> {
    let mut resp = Response::new(Body::empty());
    let headers = resp.headers_mut();
    let sums = [
        &out.checksum_crc32,
        &out.checksum_crc32c,
        &out.checksum_crc64nvme,
        &out.checksum_sha1,
        &out.checksum_sha256,
    ];
    for (kind, value) in ChecksumKind::ALL.into_iter().zip(sums) {
        if let Some(value) = value {
            headers.insert(
                HeaderName::from_static(kind.header()),
                HeaderValue::from_str(value)?,
            );
        }
    }
    if let Some(etag) = &out.e_tag {
        headers.insert(header::ETAG, etag.to_http_header()?);
    }
    Ok(resp)
}

/// An S3 error as s3s writes it: its status, the XML `<Error>` document, and the error's own
/// headers instead of the defaults when it carries some.
pub(crate) fn error_response(error: S3Error) -> Response<Body> {
    let mut xml = Vec::with_capacity(256);
    let written = {
        let mut ser = s3s::xml::Serializer::new(&mut xml);
        ser.decl()
            .and_then(|()| s3s::xml::Serialize::serialize(&error, &mut ser))
    };
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = error
        .status_code()
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if written.is_ok() {
        *resp.body_mut() = Body::from(xml);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
    } else {
        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    if let Some(headers) = error.headers() {
        *resp.headers_mut() = headers.clone();
    }
    resp
}

/// The headers GetObject and HeadObject answer a whole-object read with, in s3s's order;
/// `None` if a stored value cannot be written as s3s would write it.
fn object_headers(out: &mut http::HeaderMap, obj: &StoredObject, checksums: bool) -> Option<()> {
    // A tagged object's GET answers `x-amz-tagging-count`: s3s writes it.
    if !obj.meta.headers.tags.is_empty() {
        return None;
    }
    let h = header_fields(&obj.meta.headers);
    let value = |text: &str| HeaderValue::from_str(text).ok();
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(v) = &h.cache_control {
        out.insert(header::CACHE_CONTROL, value(v)?);
    }
    if checksums {
        for kind in ChecksumKind::ALL {
            if let Some(sum) = obj.meta.checksums.iter().find(|c| c.kind == kind) {
                out.insert(HeaderName::from_static(kind.header()), value(&sum.value)?);
            }
        }
        if let Some(how) = obj.meta.checksum_type() {
            out.insert(
                HeaderName::from_static("x-amz-checksum-type"),
                HeaderValue::from_static(how.name()),
            );
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
    fn sigv2_bucket_requests_are_answered_as_their_signers_name_them() {
        let rewritten = |uri: &str, auth: Option<&str>| {
            let mut builder = Request::builder().uri(uri);
            if let Some(auth) = auth {
                builder = builder.header(header::AUTHORIZATION, auth);
            }
            let mut req = builder.body(()).unwrap();
            sigv2_bucket_path(&mut req);
            req.uri().to_string()
        };
        let v2 = Some("AWS AKID:c2lnbmF0dXJl");
        assert_eq!(rewritten("/photos", v2), "/photos/");
        assert_eq!(rewritten("/photos?acl", v2), "/photos/?acl");
        assert_eq!(rewritten("/photos/", v2), "/photos/");
        assert_eq!(rewritten("/photos/a.jpg", v2), "/photos/a.jpg");
        assert_eq!(rewritten("/photos%2Fa.jpg", v2), "/photos%2Fa.jpg");
        assert_eq!(rewritten("/", v2), "/");
        assert_eq!(
            rewritten("/photos?AWSAccessKeyId=AKID&Expires=1&Signature=x", None),
            "/photos/?AWSAccessKeyId=AKID&Expires=1&Signature=x"
        );
        let v4 = Some("AWS4-HMAC-SHA256 Credential=AKID/20261207/us-east-1/s3/aws4_request");
        assert_eq!(rewritten("/photos", v4), "/photos");
        assert_eq!(
            rewritten(
                "/photos?X-Amz-Credential=a&X-Amz-Signature=b&AWSAccessKeyId=c",
                None
            ),
            "/photos?X-Amz-Credential=a&X-Amz-Signature=b&AWSAccessKeyId=c"
        );
        assert_eq!(rewritten("/photos", None), "/photos");
    }

    #[test]
    fn error_documents_get_their_request_id() {
        let doc = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code><Message>m</Message></Error>";
        let with = error_document_with_request_id(doc, "ABC").unwrap();
        assert_eq!(
            &with[..],
            &b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code><Message>m</Message><RequestId>ABC</RequestId></Error>"[..]
        );
        assert_eq!(error_document_with_request_id(&with, "DEF"), None);
        assert_eq!(error_document_with_request_id(b"", "DEF"), None);
        assert_eq!(
            error_document_with_request_id(b"<ListBucketResult/>", "DEF"),
            None
        );
    }

    #[test]
    fn errors_are_written_as_s3s_writes_them() {
        let resp = error_response(S3Error::with_message(
            s3s::S3ErrorCode::NoSuchBucket,
            "The specified bucket does not exist",
        ));
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/xml");
        let body = resp.body().bytes().unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchBucket</Code>\
             <Message>The specified bucket does not exist</Message></Error>"
        );
        let disk_full = crate::GatewayError::Shard(leofs_shard::ShardError::Engine(
            leofs_shard::EngineError::DiskFull { dir: "/x".into() },
        ));
        assert_eq!(
            error_response(S3Error::from(disk_full)).status(),
            StatusCode::INSUFFICIENT_STORAGE
        );
    }

    #[test]
    fn plain_requests_never_carry_a_header_the_node_refuses() {
        for name in unsupported::sse_headers()
            .chain(unsupported::ACL_HEADERS)
            .chain(unsupported::CHECKED_HEADERS)
        {
            assert!(
                !PLAIN_HEADERS.contains(name)
                    && !PLAIN_READ_HEADERS.contains(name)
                    && !PLAIN_WRITE_HEADERS.contains(name),
                "{name} would bypass s3::unsupported on the fast path"
            );
        }
    }

    #[test]
    fn canonical_uris_encode_all_but_unreserved_and_slash() {
        assert_eq!(uri_encode_path("/b/k x/ü+~*"), "/b/k%20x/%C3%BC%2B~%2A");
    }
}
