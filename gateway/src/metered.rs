//! Counts every S3 and REST request a core answers (for `/metrics`): its operation, named from
//! the method, the path's shape and the query as the S3 API names them (REST ones as
//! `RestGetObject` and the like), its status, the time to the answer's head, and the bytes
//! declared in and out. With an access log ([`crate::access_log`]), it also writes each
//! request's line once the answer's body is sent.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http::{Method, Request, Response, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use leofs_manager::Manager;
use leofs_shard::{PeerAddr, Shard};

use crate::access_log::{AccessLog, Entry, ErrorCode, Started, VerifiedRequester, operation_name};

/// A service that counts what `inner` answers on this core.
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    shard: Shard,
    /// The virtual-host domain: requests to `<bucket>.<domain>` name the bucket in the host.
    domain: Option<String>,
    /// Names a request's operation.
    name: fn(&Request<Incoming>, Option<&str>) -> &'static str,
    /// The node's access log, if it keeps one.
    access_log: Option<Rc<LogWriter>>,
}

/// What writing access log lines takes: the log and the catalog (bucket owners, key owners).
struct LogWriter {
    log: AccessLog,
    manager: Arc<Manager>,
}

impl<S> Metered<S> {
    /// Counts the S3 requests `inner` answers on `shard`'s core.
    pub fn new(inner: S, shard: Shard, domain: Option<String>) -> Self {
        Self {
            inner,
            shard,
            domain,
            name: operation,
            access_log: None,
        }
    }

    /// Counts the LeoFS REST requests `inner` answers on `shard`'s core.
    pub fn rest(inner: S, shard: Shard) -> Self {
        Self {
            inner,
            shard,
            domain: None,
            name: |request, _| rest_operation(request),
            access_log: None,
        }
    }

    /// Also writes every request's line to `log` (bucket owners and requesters from
    /// `manager`'s catalog).
    pub fn with_access_log(mut self, log: Option<AccessLog>, manager: Arc<Manager>) -> Self {
        self.access_log = log.map(|log| Rc::new(LogWriter { log, manager }));
        self
    }
}

impl<S, B> Service<Request<Incoming>> for Metered<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: 'static,
    B: Body,
{
    type Response = Response<LoggedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<LoggedBody<B>>, S::Error>>>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let operation = (self.name)(&request, self.domain.as_deref());
        let bytes_in = declared_length(request.headers());
        let started = Instant::now();
        let mut request = request;
        let logging = self.access_log.clone().map(|writer| {
            let requester = VerifiedRequester::default();
            request.extensions_mut().insert(requester.clone());
            let entry = request_entry(&request, self.domain.as_deref(), operation, &writer);
            (writer, entry, requester)
        });
        let answer = self.inner.call(request);
        let shard = self.shard.clone();
        Box::pin(async move {
            let answer = answer.await;
            if let Ok(response) = &answer {
                let bytes_out = response
                    .body()
                    .size_hint()
                    .exact()
                    .unwrap_or_else(|| declared_length(response.headers()));
                shard.record_request(
                    operation,
                    response.status().as_u16(),
                    started.elapsed(),
                    bytes_in,
                    bytes_out,
                );
            }
            answer.map(|response| {
                let line = logging.map(|(writer, (mut entry, start), requester)| {
                    entry.requester = requester.0.get().cloned();
                    answered(entry, start, &response, &writer)
                });
                response.map(|inner| LoggedBody { inner, line })
            })
        })
    }
}

/// The access log's view of a request, taken before it is served.
fn request_entry(
    request: &Request<Incoming>,
    domain: Option<&str>,
    operation: &str,
    writer: &LogWriter,
) -> (Entry, Started) {
    let start = Started::now();
    let headers = request.headers();
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let host = text(header::HOST);
    let (bucket, key) = bucket_and_key(request.uri().path(), host.as_deref(), domain);
    let query = request.uri().query().unwrap_or("");
    let (signature_version, authentication_type) = credentials_of(headers, query);
    let bucket_owner = writer.manager.with_snapshot(|state| {
        bucket
            .as_deref()
            .and_then(|b| state.bucket(b))
            .map(|b| b.owner.clone())
    });
    let object_size = match *request.method() {
        Method::PUT if key.is_some() && !headers.contains_key("x-amz-copy-source") => headers
            .get("x-amz-decoded-content-length")
            .or_else(|| headers.get(header::CONTENT_LENGTH))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
        _ => None,
    };
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let entry = Entry {
        bucket_owner,
        operation: operation_name(operation, request.method(), query, key.is_some()),
        bucket,
        key,
        received: start.received,
        remote: request.extensions().get::<PeerAddr>().map(|p| p.0),
        requester: None,
        request_id: None,
        request_uri: format!(
            "{} {path_and_query} {:?}",
            request.method(),
            request.version()
        ),
        status: 0,
        error_code: None,
        bytes_sent: 0,
        object_size,
        total: std::time::Duration::ZERO,
        turn_around: std::time::Duration::ZERO,
        referer: text(header::REFERER),
        user_agent: text(header::USER_AGENT),
        version_id: None,
        host_id: None,
        signature_version,
        authentication_type,
        host,
    };
    (entry, start)
}

/// The rest of a request's entry, from its answer's head.
fn answered<B>(
    mut entry: Entry,
    start: Started,
    response: &Response<B>,
    writer: &Rc<LogWriter>,
) -> PendingLine {
    let headers = response.headers();
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    entry.turn_around = start.at.elapsed();
    entry.status = response.status().as_u16();
    entry.request_id = text("x-amz-request-id");
    entry.host_id = text("x-amz-id-2");
    entry.version_id = text("x-amz-version-id");
    entry.error_code = response
        .extensions()
        .get::<ErrorCode>()
        .map(|c| c.0.clone());
    if entry.bucket_owner.is_none() {
        // A bucket this request created has its owner now.
        entry.bucket_owner = writer.manager.with_snapshot(|state| {
            entry
                .bucket
                .as_deref()
                .and_then(|b| state.bucket(b))
                .map(|b| b.owner.clone())
        });
    }
    if entry.object_size.is_none()
        && entry.key.is_some()
        && response.status().is_success()
        && (entry.operation == "REST.GET.OBJECT" || entry.operation == "REST.HEAD.OBJECT")
    {
        // A whole read's length, or a partial one's total after the slash of Content-Range.
        entry.object_size = text("content-range")
            .and_then(|r| r.rsplit('/').next()?.parse().ok())
            .or_else(|| text("content-length").and_then(|v| v.parse().ok()));
    }
    PendingLine {
        entry,
        started: start.at,
        log: writer.log.clone(),
    }
}

/// The signature version a request claims and how it was sent (`AuthHeader`, `QueryString`).
fn credentials_of(
    headers: &http::HeaderMap,
    query: &str,
) -> (Option<&'static str>, Option<&'static str>) {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let auth = auth.as_bytes();
        if auth.starts_with(b"AWS4-HMAC-SHA256 ") {
            return (Some("SigV4"), Some("AuthHeader"));
        }
        if auth.starts_with(b"AWS ") {
            return (Some("SigV2"), Some("AuthHeader"));
        }
    }
    let has = |name: &str| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(name))
    };
    if has("X-Amz-Credential") {
        return (Some("SigV4"), Some("QueryString"));
    }
    if has("AWSAccessKeyId") {
        return (Some("SigV2"), Some("QueryString"));
    }
    (None, None)
}

/// The bucket and key a request names (path style, or the bucket in a virtual host).
fn bucket_and_key(
    path: &str,
    host: Option<&str>,
    domain: Option<&str>,
) -> (Option<String>, Option<String>) {
    let decode = |s: &str| crate::rest::percent_decode(s).unwrap_or_else(|| s.to_owned());
    let path = path.strip_prefix('/').unwrap_or(path);
    let host_bucket = match (host.map(|h| h.split(':').next().unwrap_or(h)), domain) {
        (Some(host), Some(domain)) => host
            .strip_suffix(domain)
            .and_then(|rest| rest.strip_suffix('.'))
            .filter(|b| !b.is_empty())
            .map(str::to_owned),
        _ => None,
    };
    if let Some(bucket) = host_bucket {
        return (Some(bucket), (!path.is_empty()).then(|| decode(path)));
    }
    match path.split_once('/') {
        None if path.is_empty() => (None, None),
        None => (Some(decode(path)), None),
        Some((bucket, key)) => (Some(decode(bucket)), (!key.is_empty()).then(|| decode(key))),
    }
}

/// An access log line waiting for its answer's body to be sent: written when dropped.
pub struct PendingLine {
    entry: Entry,
    started: Instant,
    log: AccessLog,
}

impl Drop for PendingLine {
    fn drop(&mut self) {
        self.entry.total = self.started.elapsed();
        self.log.record(self.entry.line());
    }
}

pin_project_lite::pin_project! {
    /// An answer's body, with its access log line (if the node keeps a log): the bytes sent
    /// are counted, and the line is written when the body is dropped (sent whole, or the
    /// client went away).
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        line: Option<PendingLine>,
    }
}

impl<B: Body> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Some(line), Poll::Ready(Some(Ok(frame)))) = (this.line.as_mut(), &polled)
            && let Some(data) = frame.data_ref()
        {
            line.entry.bytes_sent += data.remaining() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn declared_length(headers: &http::HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The REST operation a request asks for (the REST API reads, writes, checks and deletes
/// objects at `/<bucket>/<key>`).
pub fn rest_operation<B>(request: &Request<B>) -> &'static str {
    match *request.method() {
        Method::GET => "RestGetObject",
        Method::PUT => "RestPutObject",
        Method::HEAD => "RestHeadObject",
        Method::DELETE => "RestDeleteObject",
        _ => "RestOther",
    }
}

/// The S3 operation a request asks for (`Other` when its shape is none of them).
pub fn operation<B>(request: &Request<B>, domain: Option<&str>) -> &'static str {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| h.split(':').next().unwrap_or(h));
    let bucket_in_host = match (host, domain) {
        (Some(host), Some(domain)) => host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        _ => false,
    };
    let path = request.uri().path().trim_start_matches('/');
    let segments = if path.is_empty() {
        0
    } else if path.contains('/') && !path.ends_with('/') || path.matches('/').count() > 1 {
        2
    } else {
        1
    };
    let depth = segments + usize::from(bucket_in_host);
    let query = request.uri().query().unwrap_or("");
    // Counted on every request: no allocation here.
    let has = |name: &str| {
        query.split('&').any(|pair| {
            pair.strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
        })
    };
    let copy = request.headers().contains_key("x-amz-copy-source");
    let method = request.method();
    match depth.min(2) {
        0 if method == Method::GET => "ListBuckets",
        1 => match *method {
            Method::GET if has("acl") => "GetBucketAcl",
            Method::GET if has("location") => "GetBucketLocation",
            Method::GET if has("uploads") => "ListMultipartUploads",
            Method::GET if has("versioning") => "GetBucketVersioning",
            Method::GET if has("versions") => "ListObjectVersions",
            Method::GET if has("tagging") => "GetBucketTagging",
            Method::GET if has("cors") => "GetBucketCors",
            Method::GET if has("lifecycle") => "GetBucketLifecycleConfiguration",
            Method::GET if has("policy") => "GetBucketPolicy",
            Method::GET if query.contains("list-type=2") => "ListObjectsV2",
            Method::GET => "ListObjects",
            Method::HEAD => "HeadBucket",
            Method::PUT if has("acl") => "PutBucketAcl",
            Method::PUT if has("versioning") => "PutBucketVersioning",
            Method::PUT if has("tagging") => "PutBucketTagging",
            Method::PUT if has("cors") => "PutBucketCors",
            Method::PUT if has("lifecycle") => "PutBucketLifecycleConfiguration",
            Method::PUT if has("policy") => "PutBucketPolicy",
            Method::PUT => "CreateBucket",
            Method::DELETE if has("tagging") => "DeleteBucketTagging",
            Method::DELETE if has("cors") => "DeleteBucketCors",
            Method::DELETE if has("lifecycle") => "DeleteBucketLifecycle",
            Method::DELETE if has("policy") => "DeleteBucketPolicy",
            Method::DELETE => "DeleteBucket",
            Method::POST if has("delete") => "DeleteObjects",
            _ => "Other",
        },
        2 => match *method {
            Method::GET if has("acl") => "GetObjectAcl",
            Method::GET if has("uploadId") => "ListParts",
            Method::GET if has("attributes") => "GetObjectAttributes",
            Method::GET if has("tagging") => "GetObjectTagging",
            Method::GET => "GetObject",
            Method::HEAD => "HeadObject",
            Method::PUT if has("partNumber") && copy => "UploadPartCopy",
            Method::PUT if has("partNumber") => "UploadPart",
            Method::PUT if has("acl") => "PutObjectAcl",
            Method::PUT if has("tagging") => "PutObjectTagging",
            Method::PUT if copy => "CopyObject",
            Method::PUT => "PutObject",
            Method::DELETE if has("uploadId") => "AbortMultipartUpload",
            Method::DELETE if has("tagging") => "DeleteObjectTagging",
            Method::DELETE => "DeleteObject",
            Method::POST if has("uploads") => "CreateMultipartUpload",
            Method::POST if has("uploadId") => "CompleteMultipartUpload",
            _ => "Other",
        },
        _ => "Other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: &str, uri: &str, host: &str, copy: bool) -> &'static str {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", host);
        if copy {
            builder = builder.header("x-amz-copy-source", "/b/k");
        }
        operation(&builder.body(()).unwrap(), Some("s3.example.com"))
    }

    #[test]
    fn requests_are_named_as_the_s3_api_names_them() {
        let h = "localhost:8080";
        assert_eq!(op("GET", "/", h, false), "ListBuckets");
        assert_eq!(op("PUT", "/b", h, false), "CreateBucket");
        assert_eq!(
            op("GET", "/b?list-type=2&prefix=a", h, false),
            "ListObjectsV2"
        );
        assert_eq!(op("GET", "/b/", h, false), "ListObjects");
        assert_eq!(op("POST", "/b?delete", h, false), "DeleteObjects");
        assert_eq!(op("GET", "/b/k/with/slashes", h, false), "GetObject");
        assert_eq!(op("PUT", "/b/k", h, true), "CopyObject");
        assert_eq!(
            op("PUT", "/b/k?partNumber=1&uploadId=u", h, false),
            "UploadPart"
        );
        assert_eq!(
            op("POST", "/b/k?uploads", h, false),
            "CreateMultipartUpload"
        );
        assert_eq!(
            op("POST", "/b/k?uploadId=u", h, false),
            "CompleteMultipartUpload"
        );
        assert_eq!(
            op("DELETE", "/b/k?uploadId=u", h, false),
            "AbortMultipartUpload"
        );
        assert_eq!(op("HEAD", "/b/k", h, false), "HeadObject");
        // Virtual-host style: the bucket is in the host.
        let vh = "bucket.s3.example.com";
        assert_eq!(op("GET", "/", vh, false), "ListObjects");
        assert_eq!(op("GET", "/k", vh, false), "GetObject");
        assert_eq!(op("PATCH", "/b/k", h, false), "Other");
    }
}
