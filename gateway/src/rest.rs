//! LeoFS's plain REST API (optional listener, `rest_addr`): `GET/HEAD/PUT/DELETE /<bucket>/<key>`
//! on the same storage as S3, without S3's extras (no XML, no multipart, no conditions).
//!
//! Authentication: the REST API carries no signatures, so every request is anonymous and is
//! allowed exactly what the bucket's canned ACL grants to anyone: GET/HEAD on `public-read` and
//! `public-read-write` buckets, PUT/DELETE on `public-read-write` buckets. Private buckets are
//! only reachable through S3 with SigV4. Errors are a status code and the S3 error code as text.
//! A write carrying what the node cannot honour (encryption, an object ACL other than the
//! bucket's) is refused like on S3 ([`unsupported::check_object_write`]). A body that stops
//! arriving ends the request with `RequestTimeout` (see [`crate::body`]).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::stream::LocalBoxStream;
use futures_util::{StreamExt, TryStreamExt, stream};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyStream, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::auth::{Access, Requester, authorize};
use crate::body::WatchedBody;
use crate::error::GatewayError;
use crate::layout::{BodyLayout, Headers, MAX_OBJECT_KEY_BYTES, ObjectMeta};
use crate::s3::{timestamp, unsupported};
use crate::store::Ctx;
use leofs_shard::PeerAddr;

/// Response body of the REST API: a chunk stream (core-local, hence not `Send`).
pub type RestBody = StreamBody<LocalBoxStream<'static, Result<Frame<Bytes>, GatewayError>>>;

fn full(bytes: Bytes) -> RestBody {
    StreamBody::new(stream::once(async move { Ok(Frame::data(bytes)) }).boxed_local())
}

/// The REST API as a hyper service for one core.
#[derive(Clone)]
pub struct RestService {
    ctx: Ctx,
}

impl RestService {
    /// Serves the REST API over `ctx`'s storage.
    pub fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }
}

impl hyper::service::Service<Request<Incoming>> for RestService {
    type Response = Response<RestBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let ctx = self.ctx.clone();
        let (parts, body) = req.into_parts();
        let (body, watch) = WatchedBody::new(body, ctx.config.body_idle_timeout);
        let req = Request::from_parts(parts, body);
        Box::pin(async move {
            let answer = handle(&ctx, req).await;
            let mut resp = if watch.timed_out() {
                let timeout = GatewayError::s3(
                    s3s::S3ErrorCode::RequestTimeout,
                    "the request body made no progress",
                );
                let (status, code) = timeout.status();
                text(status, code.as_str().to_owned())
            } else {
                match answer {
                    Ok(resp) => resp,
                    Err(e) => {
                        let (status, code) = e.status();
                        text(status, code.as_str().to_owned())
                    }
                }
            };
            watch.close_if_unread(resp.headers_mut());
            Ok(resp)
        })
    }
}

fn text(status: StatusCode, body: String) -> Response<RestBody> {
    let len = body.len();
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Decodes `%XX` escapes (and nothing else, like s3s); `None` on a malformed escape or a result
/// that is not UTF-8.
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

fn bad_request(msg: &str) -> GatewayError {
    GatewayError::s3(s3s::S3ErrorCode::InvalidRequest, msg.to_owned())
}

/// Splits `/<bucket>/<key>` (percent-decoded like s3s; a key of at most
/// [`MAX_OBJECT_KEY_BYTES`]); the S3 fast path splits its paths with it too.
pub fn split_path(path: &str) -> Option<(String, String)> {
    let decoded = percent_decode(path)?;
    let rest = decoded.strip_prefix('/')?;
    let (bucket, key) = rest.split_once('/')?;
    if bucket.is_empty() || key.is_empty() || key.len() > MAX_OBJECT_KEY_BYTES {
        return None;
    }
    Some((bucket.to_owned(), key.to_owned()))
}

async fn handle(ctx: &Ctx, req: Request<WatchedBody>) -> Result<Response<RestBody>, GatewayError> {
    let (bucket, key) =
        split_path(req.uri().path()).ok_or_else(|| bad_request("expected /<bucket>/<key>"))?;
    let op = match *req.method() {
        Method::GET => "GetObject",
        Method::HEAD => "HeadObject",
        Method::PUT => "PutObject",
        Method::DELETE => "DeleteObject",
        _ => {
            return Ok(text(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed".into(),
            ));
        }
    };
    if ctx.manager.snapshot().bucket(&bucket).is_none() {
        // A bucket created a moment ago through another node: look again once a copied
        // catalog is up to date.
        ctx.catalog.refresh().await?;
    }
    let requester = Requester {
        access_key: None,
        source_ip: req.extensions().get::<PeerAddr>().map(|p| p.0.ip()),
        headers: Some(req.headers()),
    };
    let access = Access::new(op, requester, Some(&bucket), Some(&key));
    authorize(&ctx.manager.snapshot(), &access)?;
    let bucket_record = crate::s3::require_bucket(ctx, &bucket)?;
    let bucket_id = crate::layout::bucket_id(&bucket_record);
    // Objects written here without ACL headers have their bucket's ACL (LeoFS's meaning).
    let acl = if req.method() == Method::PUT {
        let state = ctx.manager.snapshot();
        unsupported::check_object_write(req.headers(), &bucket_record, &state)?;
        crate::acl::has_acl_headers(req.headers())
            .then(|| crate::acl::acl_for_write(req.headers(), None, &bucket_record, &state))
            .transpose()?
    } else {
        None
    };
    match *req.method() {
        Method::GET | Method::HEAD => {
            let head_only = req.method() == Method::HEAD;
            let obj = if head_only {
                ctx.head_object(&bucket_id, &key).await?
            } else {
                ctx.get_object(&bucket_id, &key).await?
            };
            let state = ctx.manager.snapshot();
            let obj = obj.ok_or_else(|| {
                crate::auth::hide_missing(&state, &access, crate::s3::no_such_key())
            })?;
            crate::auth::authorize_object(&state, &access, obj.meta.headers.acl.as_ref())?;
            // The REST API reads no object encrypted with a customer key (with or without one).
            if obj.meta.headers.sse_c.is_some() {
                return Err(GatewayError::s3(
                    s3s::S3ErrorCode::InvalidRequest,
                    "The object was stored using a form of Server Side Encryption; the REST API does not read such objects (use S3 with the key).",
                ));
            }
            let body: RestBody = if head_only {
                full(Bytes::new())
            } else {
                let chunks = ctx
                    .open_body(&bucket_id, &key, &obj, 0..obj.meta.size_bytes, None)
                    .await?;
                StreamBody::new(chunks.map_ok(Frame::data).boxed_local())
            };
            let mut resp = Response::new(body);
            let h = resp.headers_mut();
            let content_type = obj
                .meta
                .headers
                .content_type
                .as_deref()
                .unwrap_or("application/octet-stream");
            if let Ok(v) = http::HeaderValue::from_str(content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            h.insert(
                header::CONTENT_LENGTH,
                http::HeaderValue::from(obj.meta.size_bytes),
            );
            if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", obj.meta.etag())) {
                h.insert(header::ETAG, v);
            }
            let mut date = Vec::new();
            if timestamp(obj.hlc)
                .format(s3s::dto::TimestampFormat::HttpDate, &mut date)
                .is_ok()
                && let Ok(v) = http::HeaderValue::from_bytes(&date)
            {
                h.insert(header::LAST_MODIFIED, v);
            }
            Ok(resp)
        }
        Method::PUT => {
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = BodyStream::new(req.into_body())
                .filter_map(|frame| async move {
                    match frame {
                        Ok(f) => f.into_data().ok().map(Ok),
                        Err(e) => Some(Err(GatewayError::Body(e.to_string()))),
                    }
                })
                .boxed_local();
            let written = ctx
                .write_body(&bucket_id, &key, body, true, &[], None)
                .await?;
            let meta = ObjectMeta {
                completed_upload: None,
                part_checksums: Vec::new(),
                size_bytes: written.size_bytes,
                md5: written.md5,
                parts_count: 0,
                headers: Headers {
                    content_type,
                    acl,
                    ..Headers::default()
                },
                checksums: written.checksums,
                layout: match written.run {
                    Some(seg) => BodyLayout::Chunked(vec![seg]),
                    None => BodyLayout::Inline,
                },
            };
            ctx.commit_object(
                &bucket_id,
                &key,
                &meta,
                written.inline.unwrap_or_default(),
                leofs_shard::WriteCondition::none(),
                written.registration,
            )
            .await?;
            let mut resp = text(StatusCode::OK, String::new());
            if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", meta.etag())) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            Ok(resp)
        }
        _ => {
            ctx.delete_object(&bucket_id, &key).await?;
            Ok(text(StatusCode::NO_CONTENT, String::new()))
        }
    }
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
    fn rest_paths_split_into_bucket_and_key() {
        assert_eq!(split_path("/b/a%20b/c"), Some(("b".into(), "a b/c".into())));
        assert_eq!(split_path("/b/"), None);
        assert_eq!(split_path("/b"), None);
        assert_eq!(split_path(&format!("/b/{}", "k".repeat(1025))), None);
    }
}
