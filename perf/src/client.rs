//! A minimal S3 client: one keep-alive HTTP/1.1 connection (hyper 1.x over a tokio TCP stream
//! with TCP_NODELAY), SigV4-signed path-style requests, and the few operations the workloads use.
//!
//! It never retries: a failed request is reported to the caller, which counts it, and the
//! connection is re-established for the next request if it broke.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::content::{Content, VerifyError};
use crate::sigv4::{self, SigV4Error, SignRequest, Signer, UNSIGNED_PAYLOAD};

/// Longest time one request (including its body) may take before it counts as a timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest error or listing body read into memory, bytes.
const MAX_TEXT_BODY_BYTES: usize = 16 << 20;

/// Why an operation failed; [`OpError::kind`] is the key errors are counted under.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The server answered with a non-2xx status.
    #[error("HTTP {status} {code}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The S3 error `<Code>` of the body, or empty.
        code: String,
    },
    /// Connect, send or receive failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The operation took longer than [`REQUEST_TIMEOUT`].
    #[error("no complete response within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    /// A GET body did not match the content written.
    #[error("verification failed: {0}")]
    Verify(#[from] VerifyError),
    /// A 2xx response that is not what S3 returns (missing header, unparsable XML, wrong count).
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// The request could not be signed.
    #[error("signing: {0}")]
    Sign(#[from] SigV4Error),
}

impl OpError {
    /// The counter name: `http 503 SlowDown`, `transport`, `verify`, `protocol`, `sign`.
    pub fn kind(&self) -> String {
        match self {
            Self::Status { status, code } if code.is_empty() => format!("http {status}"),
            Self::Status { status, code } => format!("http {status} {code}"),
            Self::Transport(_) => "transport".to_owned(),
            Self::Timeout => "timeout".to_owned(),
            Self::Verify(_) => "verify".to_owned(),
            Self::Protocol(_) => "protocol".to_owned(),
            Self::Sign(_) => "sign".to_owned(),
        }
    }
}

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Resolved server address.
    pub addr: SocketAddr,
    /// `Host` header value (`host:port` from the endpoint URL).
    pub host: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// SigV4 region.
    pub region: String,
    /// Bucket every object operation targets (path-style).
    pub bucket: String,
    /// Sign PUT bodies (SHA-256 of the payload) instead of sending `UNSIGNED-PAYLOAD`.
    pub signed_payload: bool,
}

impl ClientConfig {
    /// Splits `http://host:port` into an address to connect to and a `Host` header.
    pub async fn resolve_endpoint(endpoint: &str) -> Result<(SocketAddr, String), OpError> {
        let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
            OpError::Transport(format!(
                "endpoint {endpoint:?} must start with http:// (TLS is not supported)"
            ))
        })?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&host)
            .await
            .map_err(|e| OpError::Transport(format!("resolving {host}: {e}")))?
            .next()
            .ok_or_else(|| OpError::Transport(format!("{host} resolves to no address")))?;
        Ok((addr, authority.to_owned()))
    }
}

/// One page of a ListObjectsV2 listing.
#[derive(Debug, PartialEq, Eq)]
pub struct ListPage {
    /// Keys on this page.
    pub keys: u64,
    /// Token for the next page, if the listing is truncated.
    pub next_token: Option<String>,
}

/// An S3 client over one keep-alive connection; not shared between tasks.
pub struct S3Client {
    config: Arc<ClientConfig>,
    signer: Signer,
    sender: Option<SendRequest<Full<Bytes>>>,
    connects: u64,
}

impl S3Client {
    /// A client that connects lazily on its first request.
    pub fn new(config: Arc<ClientConfig>) -> Self {
        let signer = Signer::new(&config.access_key, &config.secret_key, &config.region, "s3");
        Self {
            config,
            signer,
            sender: None,
            connects: 0,
        }
    }

    /// TCP connections opened so far (1 when keep-alive held for the whole run).
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Drops the connection (after a timeout, whose request may still be in flight on it).
    pub fn disconnect(&mut self) {
        self.sender = None;
    }

    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, OpError> {
        if let Some(sender) = &mut self.sender
            && sender.ready().await.is_err()
        {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = TcpStream::connect(self.config.addr)
                .await
                .map_err(|e| OpError::Transport(format!("connect {}: {e}", self.config.addr)))?;
            stream
                .set_nodelay(true)
                .map_err(|e| OpError::Transport(format!("TCP_NODELAY: {e}")))?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| OpError::Transport(format!("HTTP handshake: {e}")))?;
            tokio::spawn(async move {
                // The connection ends when the sender is dropped or the peer closes; a broken
                // connection surfaces as an error on the next request, where it is counted.
                let _ = connection.await;
            });
            self.connects += 1;
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| OpError::Transport("no connection".to_owned()))
    }

    /// Signs and sends one request; returns the response with its body unread.
    async fn send(
        &mut self,
        method: Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response<Incoming>, OpError> {
        let mut path = format!("/{}", sigv4::uri_encode(&self.config.bucket, true));
        if let Some(key) = key {
            path.push('/');
            path.push_str(&sigv4::uri_encode(key, false));
        }
        let mut uri = path.clone();
        for (i, (name, value)) in query.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(&sigv4::uri_encode(name, true));
            if !value.is_empty() {
                uri.push('=');
                uri.push_str(&sigv4::uri_encode(value, true));
            }
        }
        let payload_hash = if self.config.signed_payload || body.is_empty() {
            sigv4::sha256_hex(&body)
        } else {
            UNSIGNED_PAYLOAD.to_owned()
        };
        let amz_date = sigv4::amz_date(SystemTime::now());
        let headers = [
            ("host", self.config.host.as_str()),
            ("x-amz-content-sha256", payload_hash.as_str()),
            ("x-amz-date", amz_date.as_str()),
        ];
        let authorization = self.signer.authorization(&SignRequest {
            method: method.as_str(),
            canonical_uri: &path,
            query,
            headers: &headers,
            payload_hash: &payload_hash,
            amz_date: &amz_date,
        })?;
        let mut builder = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        if method != Method::GET && method != Method::HEAD {
            builder = builder.header(http::header::CONTENT_LENGTH, body.len());
        }
        let request = builder
            .header(http::header::AUTHORIZATION, authorization)
            .body(Full::new(body))
            .map_err(|e| OpError::Protocol(format!("building request: {e}")))?;
        let sender = self.ready_sender().await?;
        match sender.send_request(request).await {
            Ok(response) => Ok(response),
            Err(e) => {
                self.sender = None;
                Err(OpError::Transport(format!("request: {e}")))
            }
        }
    }

    /// Sends a request and reads a small body; non-2xx becomes [`OpError::Status`].
    async fn exchange(
        &mut self,
        method: Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(HeaderMap, String), OpError> {
        let response = self.send(method, key, query, body).await?;
        let status = response.status();
        let (parts, body) = response.into_parts();
        let text = self.read_text(body).await?;
        if !status.is_success() {
            return Err(status_error(status.as_u16(), &text));
        }
        Ok((parts.headers, text))
    }

    async fn read_text(&mut self, mut body: Incoming) -> Result<String, OpError> {
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.broken(format!("reading body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_TEXT_BODY_BYTES {
                    self.sender = None;
                    return Err(OpError::Protocol(format!(
                        "response body exceeds {MAX_TEXT_BODY_BYTES} bytes"
                    )));
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn broken(&mut self, message: String) -> OpError {
        self.sender = None;
        OpError::Transport(message)
    }

    /// HEAD of the bucket: its status code (200 exists, 404 missing, 403 not ours).
    pub async fn head_bucket(&mut self) -> Result<u16, OpError> {
        let response = self.send(Method::HEAD, None, &[], Bytes::new()).await?;
        let status = response.status().as_u16();
        self.read_text(response.into_body()).await?;
        Ok(status)
    }

    /// Creates the bucket (CreateBucket with no configuration body).
    pub async fn create_bucket(&mut self) -> Result<(), OpError> {
        self.exchange(Method::PUT, None, &[], Bytes::new()).await?;
        Ok(())
    }

    /// PutObject.
    pub async fn put_object(&mut self, key: &str, body: Bytes) -> Result<(), OpError> {
        self.exchange(Method::PUT, Some(key), &[], body).await?;
        Ok(())
    }

    /// GetObject, streaming the body through a verifier of `expected` (or only counting it when
    /// `expected` is `None`); returns bytes read.
    pub async fn get_object(
        &mut self,
        key: &str,
        expected: Option<&Content>,
    ) -> Result<u64, OpError> {
        let response = self.send(Method::GET, Some(key), &[], Bytes::new()).await?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let text = self.read_text(body).await?;
            return Err(status_error(status.as_u16(), &text));
        }
        let mut verifier = expected.map(Content::verifier);
        let mut bytes_read = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.broken(format!("reading body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                bytes_read += data.len() as u64;
                if let Some(verifier) = &mut verifier {
                    verifier.update(&data);
                }
            }
        }
        match verifier {
            Some(verifier) => Ok(verifier.finish()?),
            None => Ok(bytes_read),
        }
    }

    /// DeleteObject.
    pub async fn delete_object(&mut self, key: &str) -> Result<(), OpError> {
        self.exchange(Method::DELETE, Some(key), &[], Bytes::new())
            .await?;
        Ok(())
    }

    /// One ListObjectsV2 page of at most `max_keys` keys under `prefix`.
    pub async fn list_page(
        &mut self,
        prefix: &str,
        token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, OpError> {
        let max_keys = max_keys.to_string();
        let mut query = vec![
            ("list-type", "2"),
            ("max-keys", max_keys.as_str()),
            ("prefix", prefix),
        ];
        if let Some(token) = token {
            query.push(("continuation-token", token));
        }
        let (_, text) = self
            .exchange(Method::GET, None, &query, Bytes::new())
            .await?;
        let keys = text.matches("<Contents>").count() as u64;
        let truncated = xml_text(&text, "IsTruncated").is_some_and(|v| v == "true");
        let next_token = if truncated {
            Some(xml_text(&text, "NextContinuationToken").ok_or_else(|| {
                OpError::Protocol("truncated listing without NextContinuationToken".to_owned())
            })?)
        } else {
            None
        };
        Ok(ListPage { keys, next_token })
    }

    /// CreateMultipartUpload; returns the upload id.
    pub async fn create_multipart(&mut self, key: &str) -> Result<String, OpError> {
        let (_, text) = self
            .exchange(Method::POST, Some(key), &[("uploads", "")], Bytes::new())
            .await?;
        xml_text(&text, "UploadId")
            .ok_or_else(|| OpError::Protocol("CreateMultipartUpload without UploadId".to_owned()))
    }

    /// UploadPart; returns the part's ETag.
    pub async fn upload_part(
        &mut self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: Bytes,
    ) -> Result<String, OpError> {
        let part = part_number.to_string();
        let query = [("partNumber", part.as_str()), ("uploadId", upload_id)];
        let (headers, _) = self.exchange(Method::PUT, Some(key), &query, body).await?;
        headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| OpError::Protocol("UploadPart without ETag".to_owned()))
    }

    /// CompleteMultipartUpload with `(part number, ETag)` pairs in order.
    pub async fn complete_multipart(
        &mut self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<(), OpError> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (number, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
                xml_escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let (_, text) = self
            .exchange(
                Method::POST,
                Some(key),
                &[("uploadId", upload_id)],
                Bytes::from(xml),
            )
            .await?;
        // S3 may report a failed completion inside a 200 response.
        if text.contains("<Error>") {
            return Err(status_error(200, &text));
        }
        Ok(())
    }
}

fn status_error(status: u16, body: &str) -> OpError {
    OpError::Status {
        status,
        code: xml_text(body, "Code").unwrap_or_default(),
    }
}

/// The unescaped text of the first `<tag>…</tag>` in `xml`.
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml_unescape(&xml[start..end]))
}

fn xml_unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_finds_and_unescapes() {
        let xml = "<R><IsTruncated>true</IsTruncated><NextContinuationToken>a&amp;b&lt;</NextContinuationToken></R>";
        assert_eq!(xml_text(xml, "IsTruncated").as_deref(), Some("true"));
        assert_eq!(
            xml_text(xml, "NextContinuationToken").as_deref(),
            Some("a&b<")
        );
        assert_eq!(xml_text(xml, "Missing"), None);
    }

    #[test]
    fn error_kinds_name_status_and_code() {
        let e = status_error(503, "<Error><Code>SlowDown</Code></Error>");
        assert_eq!(e.kind(), "http 503 SlowDown");
        assert_eq!(status_error(500, "").kind(), "http 500");
        assert_eq!(OpError::Transport("x".into()).kind(), "transport");
    }
}
