//! A small blocking client of the admin API (HTTP/1.1 over a std `TcpStream`, one connection per
//! call), used by `leofs-adm` and by tests. No runtime, no TLS: the admin API is loopback-only.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::admin::NodeStatus;
use crate::admin::wire::{
    API_PREFIX, AddBucketRequest, AddManagerRequest, ApiError, CachePurged, ClusterStatus,
    CreateUserRequest, Deleted, FileRecovered, ManagerAdded, NodeInfo, PurgeCacheRequest,
    RebalanceStatus, RecoveryStatus, RingDump, RingSummary, StartRequest, UpdateAclRequest,
    UserInfo, Whereabouts, encode_path_segment,
};
use crate::raft::GroupStatus;
use crate::{Bucket, Credentials};

/// How long to wait for the TCP connection.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long to wait for each read or write once connected.
pub const IO_TIMEOUT_MS: u64 = 30_000;
/// Largest answer accepted.
pub const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Every way an admin API call can fail, each with a sentence for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made.
    #[error("cannot reach admin API at {addr}: {reason} — is `leofs server` running?")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// Why, in words.
        reason: String,
    },
    /// The connection broke or timed out mid-call.
    #[error("admin API at {addr}: {source}")]
    Io {
        /// The server address.
        addr: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The server answered something that is not a valid admin API answer.
    #[error("admin API at {addr} sent an invalid answer: {detail}")]
    Protocol {
        /// The server address.
        addr: String,
        /// What is wrong.
        detail: String,
    },
    /// The server refused the call.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code, e.g. `NoSuchUser`.
        code: String,
        /// The server's sentence.
        message: String,
    },
}

/// A client bound to one admin API address and token.
#[derive(Clone, Debug)]
pub struct AdminClient {
    addr: String,
    token: String,
}

impl AdminClient {
    /// A client for the admin API at `addr` (`host:port`) using `token`.
    pub fn new(addr: impl Into<String>, token: impl Into<String>) -> AdminClient {
        AdminClient {
            addr: addr.into(),
            token: token.into(),
        }
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Result<NodeStatus, ClientError> {
        self.call("GET", "/status", None::<&()>)
    }

    /// `GET /v1/users`.
    pub fn users(&self) -> Result<Vec<UserInfo>, ClientError> {
        self.call("GET", "/users", None::<&()>)
    }

    /// `POST /v1/users`: the new user's credentials (the only time the secret is shown).
    pub fn create_user(&self, user_id: &str) -> Result<Credentials, ClientError> {
        let body = CreateUserRequest {
            user_id: user_id.to_owned(),
        };
        self.call("POST", "/users", Some(&body))
    }

    /// `DELETE /v1/users/<id>`.
    pub fn delete_user(&self, user_id: &str) -> Result<Deleted, ClientError> {
        self.call(
            "DELETE",
            &format!("/users/{}", encode_path_segment(user_id)),
            None::<&()>,
        )
    }

    /// `GET /v1/managers`: the manager group as the asked manager sees it.
    pub fn managers(&self) -> Result<GroupStatus, ClientError> {
        self.call("GET", "/managers", None::<&()>)
    }

    /// `POST /v1/managers`: adds the manager at `addr` (its `--rpc-listen`) to the group.
    pub fn add_manager(&self, addr: &str) -> Result<ManagerAdded, ClientError> {
        let body = AddManagerRequest {
            addr: addr.to_owned(),
        };
        self.call("POST", "/managers", Some(&body))
    }

    /// `DELETE /v1/managers/<node id>`.
    pub fn remove_manager(&self, node_id: u64) -> Result<Deleted, ClientError> {
        self.call("DELETE", &format!("/managers/{node_id}"), None::<&()>)
    }

    /// `GET /v1/buckets`.
    pub fn buckets(&self) -> Result<Vec<Bucket>, ClientError> {
        self.call("GET", "/buckets", None::<&()>)
    }

    /// `POST /v1/buckets`: a bucket owned by the user of `access_key_id`.
    pub fn add_bucket(
        &self,
        bucket: &str,
        access_key_id: &str,
        acl: Option<&str>,
    ) -> Result<Bucket, ClientError> {
        let body = AddBucketRequest {
            bucket: bucket.to_owned(),
            access_key_id: access_key_id.to_owned(),
            acl: acl.map(str::to_owned),
        };
        self.call("POST", "/buckets", Some(&body))
    }

    /// `DELETE /v1/buckets/<name>`.
    pub fn delete_bucket(&self, bucket: &str) -> Result<Deleted, ClientError> {
        self.call(
            "DELETE",
            &format!("/buckets/{}", encode_path_segment(bucket)),
            None::<&()>,
        )
    }

    /// `PUT /v1/buckets/<name>/acl`.
    pub fn update_acl(
        &self,
        bucket: &str,
        access_key_id: &str,
        acl: &str,
    ) -> Result<Bucket, ClientError> {
        let body = UpdateAclRequest {
            access_key_id: access_key_id.to_owned(),
            acl: acl.to_owned(),
        };
        self.call(
            "PUT",
            &format!("/buckets/{}/acl", encode_path_segment(bucket)),
            Some(&body),
        )
    }

    /// `PUT /v1/buckets/<name>/consistency`: the bucket's own quorums (None: the cluster's).
    pub fn set_bucket_consistency(
        &self,
        bucket: &str,
        consistency: Option<crate::cluster::Consistency>,
    ) -> Result<Bucket, ClientError> {
        let body = crate::admin::wire::BucketConsistencyRequest { consistency };
        self.call(
            "PUT",
            &format!("/buckets/{}/consistency", encode_path_segment(bucket)),
            Some(&body),
        )
    }

    /// `GET /v1/cluster`: the nodes, their states and the ring.
    pub fn cluster(&self) -> Result<ClusterStatus, ClientError> {
        self.call("GET", "/cluster", None::<&()>)
    }

    /// `POST /v1/cluster/start`: the first ring over the attached storage nodes.
    pub fn start(&self, request: &StartRequest) -> Result<RingSummary, ClientError> {
        self.call("POST", "/cluster/start", Some(request))
    }

    /// `PUT /v1/cluster/consistency`: the cluster's W, R and D.
    pub fn set_consistency(
        &self,
        consistency: &crate::cluster::Consistency,
    ) -> Result<ClusterStatus, ClientError> {
        self.call("PUT", "/cluster/consistency", Some(consistency))
    }

    /// `GET /v1/nodes/<id>`.
    pub fn node(&self, id: u32) -> Result<NodeInfo, ClientError> {
        self.call("GET", &format!("/nodes/{id}"), None::<&()>)
    }

    /// `POST /v1/nodes/<id>/suspend` or `…/resume`.
    pub fn set_node_suspended(&self, id: u32, suspended: bool) -> Result<NodeInfo, ClientError> {
        let verb = if suspended { "suspend" } else { "resume" };
        self.call("POST", &format!("/nodes/{id}/{verb}"), None::<&()>)
    }

    /// `POST /v1/nodes/<id>/attach`.
    pub fn attach_node(&self, id: u32) -> Result<NodeInfo, ClientError> {
        self.call("POST", &format!("/nodes/{id}/attach"), None::<&()>)
    }

    /// `POST /v1/nodes/<id>/detach` or `…/rollback`.
    pub fn detach_node(&self, id: u32, detach: bool) -> Result<NodeInfo, ClientError> {
        let verb = if detach { "detach" } else { "rollback" };
        self.call("POST", &format!("/nodes/{id}/{verb}"), None::<&()>)
    }

    /// `POST /v1/rebalance`: starts a rebalance (if the ring is not balanced already).
    pub fn rebalance(&self) -> Result<RebalanceStatus, ClientError> {
        self.call("POST", "/rebalance", None::<&()>)
    }

    /// `GET /v1/rebalance`.
    pub fn rebalance_status(&self) -> Result<RebalanceStatus, ClientError> {
        self.call("GET", "/rebalance", None::<&()>)
    }

    /// `POST /v1/rebalance/abort`.
    pub fn abort_rebalance(&self) -> Result<RebalanceStatus, ClientError> {
        self.call("POST", "/rebalance/abort", None::<&()>)
    }

    /// `POST /v1/rebalance/suspend` or `…/resume`.
    pub fn suspend_rebalance(&self, suspended: bool) -> Result<RebalanceStatus, ClientError> {
        let verb = if suspended { "suspend" } else { "resume" };
        self.call("POST", &format!("/rebalance/{verb}"), None::<&()>)
    }

    /// `GET /v1/ring`: the whole ring.
    pub fn ring(&self) -> Result<RingDump, ClientError> {
        self.call("GET", "/ring", None::<&()>)
    }

    /// `GET /v1/whereis/<bucket>/<key>`.
    pub fn whereis(&self, bucket: &str, key: &str) -> Result<Whereabouts, ClientError> {
        self.call(
            "GET",
            &format!(
                "/whereis/{}/{}",
                encode_path_segment(bucket),
                encode_path_segment(key)
            ),
            None::<&()>,
        )
    }

    /// `PUT /v1/cluster/auto-recover`.
    pub fn set_auto_recover_after(&self, secs: u64) -> Result<ClusterStatus, ClientError> {
        let body = crate::admin::wire::AutoRecoverRequest { after_secs: secs };
        self.call("PUT", "/cluster/auto-recover", Some(&body))
    }

    /// `PUT /v1/cluster/tombstone-grace`.
    pub fn set_tombstone_grace(&self, secs: u64) -> Result<ClusterStatus, ClientError> {
        let body = crate::admin::wire::TombstoneGraceRequest { grace_secs: secs };
        self.call("PUT", "/cluster/tombstone-grace", Some(&body))
    }

    /// `POST /v1/nodes/<id>/compact/<start|suspend|resume>`.
    pub fn compact(&self, id: u32, verb: &str) -> Result<NodeInfo, ClientError> {
        self.call("POST", &format!("/nodes/{id}/compact/{verb}"), None::<&()>)
    }

    /// `POST /v1/cache/purge`: every gateway drops `bucket`'s `key` (or keys starting with
    /// it) from its object cache.
    pub fn purge_cache(
        &self,
        bucket: &str,
        key: &str,
        prefix: bool,
    ) -> Result<CachePurged, ClientError> {
        let body = PurgeCacheRequest {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            prefix,
        };
        self.call("POST", "/cache/purge", Some(&body))
    }

    /// `POST /v1/nodes/<id>/recover`: compares and repairs every partition the node holds.
    pub fn recover_node(&self, id: u32) -> Result<RecoveryStatus, ClientError> {
        self.call("POST", &format!("/nodes/{id}/recover"), None::<&()>)
    }

    /// `GET /v1/recovery`.
    pub fn recovery_status(&self) -> Result<RecoveryStatus, ClientError> {
        self.call("GET", "/recovery", None::<&()>)
    }

    /// `POST /v1/recover-file/<bucket>/<key>`.
    pub fn recover_file(&self, bucket: &str, key: &str) -> Result<FileRecovered, ClientError> {
        self.call(
            "POST",
            &format!(
                "/recover-file/{}/{}",
                encode_path_segment(bucket),
                encode_path_segment(key)
            ),
            None::<&()>,
        )
    }

    /// One request on a fresh connection; decodes the JSON answer or the JSON error.
    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let payload = match body {
            Some(body) => serde_json::to_vec(body)
                .map_err(|err| self.protocol(format!("cannot encode request: {err}")))?,
            None => Vec::new(),
        };
        let mut request = format!(
            "{method} {API_PREFIX}{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Connection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            self.token,
            payload.len()
        )
        .into_bytes();
        if body.is_some() {
            request.extend_from_slice(b"Content-Type: application/json\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(&payload);

        let mut stream = self.connect()?;
        let io_error = |source| ClientError::Io {
            addr: self.addr.clone(),
            source,
        };
        stream.write_all(&request).map_err(io_error)?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .map_err(io_error)?;
        let (status, body) = parse_response(&raw).map_err(|detail| self.protocol(detail))?;
        if (200..300).contains(&status) {
            serde_json::from_slice(&body)
                .map_err(|err| self.protocol(format!("unexpected JSON: {err}")))
        } else {
            let error: ApiError = serde_json::from_slice(&body)
                .map_err(|_| self.protocol(format!("HTTP {status} without a JSON error body")))?;
            Err(ClientError::Api {
                status,
                code: error.error,
                message: error.message,
            })
        }
    }

    fn connect(&self) -> Result<TcpStream, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            addr: self.addr.clone(),
            reason,
        };
        let candidates = self
            .addr
            .to_socket_addrs()
            .map_err(|err| unreachable(format!("cannot resolve the address: {err}")))?;
        let mut last_error = None;
        for candidate in candidates {
            match TcpStream::connect_timeout(&candidate, Duration::from_millis(CONNECT_TIMEOUT_MS))
            {
                Ok(stream) => {
                    let timeout = Some(Duration::from_millis(IO_TIMEOUT_MS));
                    stream
                        .set_read_timeout(timeout)
                        .and_then(|()| stream.set_write_timeout(timeout))
                        .map_err(|err| unreachable(describe(&err)))?;
                    return Ok(stream);
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(unreachable(last_error.map_or_else(
            || "the address resolves to nothing".to_owned(),
            |err| describe(&err),
        )))
    }

    fn protocol(&self, detail: String) -> ClientError {
        ClientError::Protocol {
            addr: self.addr.clone(),
            detail,
        }
    }
}

/// A connection error in words (`connection refused`, not `Connection refused (os error 111)`).
fn describe(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => err.to_string(),
    }
}

/// Splits a complete HTTP/1.1 answer (read until the server closed) into status and body.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let head_end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or("the answer ended before its headers did")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(length) = content_length {
        rest.get(..length)
            .ok_or_else(|| format!("the body ended after {} of {length} bytes", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn decode_chunked(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("truncated chunk header")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk header")?;
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("truncated chunk")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_answers() {
        let raw = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(raw).unwrap(), (201, b"{}".to_vec()));
    }

    #[test]
    fn parses_chunked_answers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), (200, b"[1,2]".to_vec()));
    }

    #[test]
    fn rejects_truncated_answers() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn refused_connection_names_the_address_and_the_fix() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = AdminClient::new(format!("127.0.0.1:{port}"), "token");
        let message = client.users().unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "cannot reach admin API at 127.0.0.1:{port}: connection refused — is `leofs server` running?"
            )
        );
    }
}
