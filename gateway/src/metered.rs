//! Counts every S3 and REST request a core answers (for `/metrics`): its operation, named from
//! the method, the path's shape and the query as the S3 API names them (REST ones as
//! `RestGetObject` and the like), its status, the time to the answer's head, and the bytes
//! declared in and out.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use http::{Method, Request, Response, header};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use leofs_shard::Shard;

/// A service that counts what `inner` answers on this core.
#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    shard: Shard,
    /// The virtual-host domain: requests to `<bucket>.<domain>` name the bucket in the host.
    domain: Option<String>,
    /// Names a request's operation.
    name: fn(&Request<Incoming>, Option<&str>) -> &'static str,
}

impl<S> Metered<S> {
    /// Counts the S3 requests `inner` answers on `shard`'s core.
    pub fn new(inner: S, shard: Shard, domain: Option<String>) -> Self {
        Self {
            inner,
            shard,
            domain,
            name: operation,
        }
    }

    /// Counts the LeoFS REST requests `inner` answers on `shard`'s core.
    pub fn rest(inner: S, shard: Shard) -> Self {
        Self {
            inner,
            shard,
            domain: None,
            name: |request, _| rest_operation(request),
        }
    }
}

impl<S, B> Service<Request<Incoming>> for Metered<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: 'static,
    B: Body,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>>>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let operation = (self.name)(&request, self.domain.as_deref());
        let bytes_in = declared_length(request.headers());
        let started = Instant::now();
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
            answer
        })
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
            Method::GET if query.contains("list-type=2") => "ListObjectsV2",
            Method::GET => "ListObjects",
            Method::HEAD => "HeadBucket",
            Method::PUT if has("acl") => "PutBucketAcl",
            Method::PUT => "CreateBucket",
            Method::DELETE => "DeleteBucket",
            Method::POST if has("delete") => "DeleteObjects",
            _ => "Other",
        },
        2 => match *method {
            Method::GET if has("acl") => "GetObjectAcl",
            Method::GET if has("uploadId") => "ListParts",
            Method::GET if has("attributes") => "GetObjectAttributes",
            Method::GET => "GetObject",
            Method::HEAD => "HeadObject",
            Method::PUT if has("partNumber") && copy => "UploadPartCopy",
            Method::PUT if has("partNumber") => "UploadPart",
            Method::PUT if has("acl") => "PutObjectAcl",
            Method::PUT if copy => "CopyObject",
            Method::PUT => "PutObject",
            Method::DELETE if has("uploadId") => "AbortMultipartUpload",
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
