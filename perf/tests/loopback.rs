//! Client plumbing of leofs-bench against a tiny in-memory S3-like server on loopback.
//!
//! The server here is NOT an S3 implementation under test: it exists only to check that the load
//! generator connects, keeps connections alive, signs, streams, verifies, lists, uploads in parts
//! and counts errors. Real servers are measured by perf/compare.sh.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use leofs_perf::bench::{self, BenchConfig, Report, Workload};
use leofs_perf::size::SizeDist;
use tokio::net::TcpListener;

const BUCKET: &str = "b";
const ACCESS_KEY: &str = "test-access";

/// How the test server misbehaves.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// Flip one byte of every GET body.
    corrupt_reads: bool,
    /// Answer every n-th GET with 503 SlowDown.
    slow_down_every: Option<u64>,
}

#[derive(Default)]
struct Store {
    bucket_exists: bool,
    objects: BTreeMap<String, Bytes>,
    uploads: BTreeMap<String, BTreeMap<u32, Bytes>>,
    next_upload: u64,
}

struct Server {
    store: Mutex<Store>,
    faults: Faults,
    gets: AtomicU64,
    connections: AtomicU64,
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.replace("%2F", "/")),
            None => (p.to_owned(), String::new()),
        })
        .collect()
}

async fn handle(server: Arc<Server>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")));
    let payload = request
        .headers()
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !authorized || payload.is_empty() {
        return respond(
            StatusCode::FORBIDDEN,
            "<Error><Code>AccessDenied</Code></Error>",
        );
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = query_map(request.uri().query());
    let body = request.into_body().collect().await.unwrap().to_bytes();
    if method == Method::PUT && !body.is_empty() && payload != "UNSIGNED-PAYLOAD" {
        return respond(
            StatusCode::BAD_REQUEST,
            "<Error><Code>ExpectedUnsigned</Code></Error>",
        );
    }
    let rest = path.trim_start_matches('/');
    let (bucket, key) = match rest.split_once('/') {
        Some((b, k)) => (b, Some(k.to_owned())),
        None => (rest, None),
    };
    if bucket != BUCKET {
        return respond(
            StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchBucket</Code></Error>",
        );
    }
    let mut store = server.store.lock().unwrap();
    match (method, key) {
        (Method::HEAD, None) if store.bucket_exists => respond(StatusCode::OK, ""),
        (Method::HEAD, None) => respond(StatusCode::NOT_FOUND, ""),
        (Method::PUT, None) => {
            store.bucket_exists = true;
            respond(StatusCode::OK, "")
        }
        (Method::GET, None) => {
            let prefix = query.get("prefix").cloned().unwrap_or_default();
            let max_keys: usize = query["max-keys"].parse().unwrap();
            let after = query.get("continuation-token").cloned().unwrap_or_default();
            let keys: Vec<&String> = store
                .objects
                .keys()
                .filter(|k| k.starts_with(&prefix) && **k > after)
                .take(max_keys + 1)
                .collect();
            let truncated = keys.len() > max_keys;
            let page = &keys[..keys.len().min(max_keys)];
            let mut xml = format!("<ListBucketResult><IsTruncated>{truncated}</IsTruncated>");
            for key in page {
                xml.push_str(&format!("<Contents><Key>{key}</Key></Contents>"));
            }
            if truncated {
                xml.push_str(&format!(
                    "<NextContinuationToken>{}</NextContinuationToken>",
                    page[page.len() - 1]
                ));
            }
            xml.push_str("</ListBucketResult>");
            respond(StatusCode::OK, xml)
        }
        (Method::PUT, Some(key)) => {
            if let Some(upload) = query.get("uploadId") {
                let part: u32 = query["partNumber"].parse().unwrap();
                store.uploads.get_mut(upload).unwrap().insert(part, body);
                let mut response = respond(StatusCode::OK, "");
                response
                    .headers_mut()
                    .insert("etag", format!("\"part-{part}\"").parse().unwrap());
                return response;
            }
            store.objects.insert(key, body);
            respond(StatusCode::OK, "")
        }
        (Method::POST, Some(key)) => {
            if query.contains_key("uploads") {
                store.next_upload += 1;
                let id = format!("upload-{}", store.next_upload);
                store.uploads.insert(id.clone(), BTreeMap::new());
                return respond(
                    StatusCode::OK,
                    format!(
                        "<InitiateMultipartUploadResult><UploadId>{id}</UploadId></InitiateMultipartUploadResult>"
                    ),
                );
            }
            let parts = store.uploads.remove(&query["uploadId"]).unwrap();
            let listed = String::from_utf8_lossy(&body).matches("<Part>").count();
            assert_eq!(listed, parts.len(), "complete lists every uploaded part");
            let whole: Vec<u8> = parts.values().flat_map(|b| b.iter().copied()).collect();
            store.objects.insert(key, Bytes::from(whole));
            respond(StatusCode::OK, "<CompleteMultipartUploadResult/>")
        }
        (Method::GET, Some(key)) => {
            let n = server.gets.fetch_add(1, Ordering::Relaxed) + 1;
            if server
                .faults
                .slow_down_every
                .is_some_and(|every| n.is_multiple_of(every))
            {
                return respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "<Error><Code>SlowDown</Code></Error>",
                );
            }
            match store.objects.get(&key) {
                Some(data) if server.faults.corrupt_reads && !data.is_empty() => {
                    let mut bad = data.to_vec();
                    let middle = bad.len() / 2;
                    bad[middle] ^= 0x40;
                    respond(StatusCode::OK, bad)
                }
                Some(data) => respond(StatusCode::OK, data.clone()),
                None => respond(
                    StatusCode::NOT_FOUND,
                    "<Error><Code>NoSuchKey</Code></Error>",
                ),
            }
        }
        (Method::DELETE, Some(key)) => {
            store.objects.remove(&key);
            respond(StatusCode::NO_CONTENT, "")
        }
        _ => respond(StatusCode::METHOD_NOT_ALLOWED, ""),
    }
}

async fn start_server(faults: Faults) -> (SocketAddr, Arc<Server>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(Server {
        store: Mutex::new(Store::default()),
        faults,
        gets: AtomicU64::new(0),
        connections: AtomicU64::new(0),
    });
    let accepting = Arc::clone(&server);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            accepting.connections.fetch_add(1, Ordering::Relaxed);
            let server = Arc::clone(&accepting);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let server = Arc::clone(&server);
                    async move { Ok::<_, Infallible>(handle(server, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, server)
}

fn config(addr: SocketAddr, workload: Workload, size: &str) -> BenchConfig {
    BenchConfig {
        endpoint: format!("http://{addr}"),
        access_key: ACCESS_KEY.to_owned(),
        secret_key: "test-secret".to_owned(),
        region: "us-east-1".to_owned(),
        bucket: BUCKET.to_owned(),
        workload,
        size: size.parse::<SizeDist>().unwrap(),
        concurrency: 4,
        threads: 2,
        duration: Duration::from_millis(400),
        warmup: Duration::from_millis(100),
        objects: 50,
        preload_concurrency: 8,
        preload: true,
        read_ratio: 0.5,
        part_size_bytes: 100_000,
        signed_payload: false,
        verify: true,
        prefix: format!("run-{workload:?}/"),
        seed: 7,
        progress: false,
    }
}

fn op<'a>(report: &'a Report, name: &str) -> &'a leofs_perf::stats::OpSummary {
    report
        .results
        .iter()
        .find(|r| r.op == name)
        .unwrap_or_else(|| panic!("no {name} row in {:?}", report.results))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_clean_over_keep_alive_connections() {
    let (addr, server) = start_server(Faults::default()).await;

    let put = bench::run(config(addr, Workload::Put, "1KiB..8KiB"))
        .await
        .unwrap();
    assert_eq!(put.total_errors(), 0, "{:?}", put.error_examples);
    assert!(op(&put, "PUT").ops > 10);
    assert_eq!(put.connections, 4, "one keep-alive connection per worker");
    assert!(
        server.store.lock().unwrap().bucket_exists,
        "bucket was created"
    );

    let get = bench::run(config(addr, Workload::Get, "4KiB"))
        .await
        .unwrap();
    assert_eq!(get.total_errors(), 0, "{:?}", get.error_examples);
    let gets = op(&get, "GET");
    assert!(gets.ops > 10);
    assert_eq!(
        gets.bytes,
        gets.ops * 4096,
        "every GET returned the full object"
    );
    assert_eq!(get.preload.as_ref().unwrap().objects, 50);

    let mixed = bench::run(config(addr, Workload::Mixed, "2KiB"))
        .await
        .unwrap();
    assert_eq!(mixed.total_errors(), 0, "{:?}", mixed.error_examples);
    assert!(op(&mixed, "GET").ops > 0 && op(&mixed, "PUT").ops > 0);

    let mut list_config = config(addr, Workload::List, "1");
    list_config.objects = 2_500;
    list_config.concurrency = 2;
    let list = bench::run(list_config).await.unwrap();
    assert_eq!(list.total_errors(), 0, "{:?}", list.error_examples);
    let pages = op(&list, "LIST");
    assert!(pages.items >= 1000 && pages.items <= pages.ops * 1000);

    let mut mpu_config = config(addr, Workload::Multipart, "250000");
    mpu_config.concurrency = 1;
    let mpu = bench::run(mpu_config).await.unwrap();
    assert_eq!(mpu.total_errors(), 0, "{:?}", mpu.error_examples);
    let uploads = op(&mpu, "MULTIPART").ops;
    assert!(uploads > 0);
    assert!(
        op(&mpu, "PART").ops >= 3 * uploads,
        "250000 B in 100000 B parts is 3 parts"
    );
    {
        let store = server.store.lock().unwrap();
        let (key, assembled) = store
            .objects
            .iter()
            .find(|(k, _)| k.starts_with("run-Multipart/"))
            .unwrap();
        assert_eq!(
            assembled[..],
            leofs_perf::content::Content::new(key.as_bytes(), 250_000).bytes()[..],
            "parts reassemble into the object's content"
        );
    }

    let mut delete_config = config(addr, Workload::Delete, "1KiB");
    delete_config.duration = Duration::from_secs(5);
    let delete = bench::run(delete_config).await.unwrap();
    assert_eq!(delete.total_errors(), 0, "{:?}", delete.error_examples);
    let left = server
        .store
        .lock()
        .unwrap()
        .objects
        .keys()
        .filter(|k| k.starts_with("run-Delete/"))
        .count();
    assert_eq!(
        left, 0,
        "every preloaded object was deleted, then the run ended early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_reads_are_counted_as_verification_errors() {
    let (addr, _server) = start_server(Faults {
        corrupt_reads: true,
        ..Faults::default()
    })
    .await;
    let report = bench::run(config(addr, Workload::Get, "4KiB"))
        .await
        .unwrap();
    assert!(
        report.results.iter().all(|r| r.op != "GET"),
        "no GET succeeded"
    );
    assert!(report.errors["verify"] > 10, "{:?}", report.errors);
    assert!(report.error_examples["verify"].contains("byte 2048"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_counted_by_status_and_code() {
    let (addr, _server) = start_server(Faults {
        slow_down_every: Some(3),
        ..Faults::default()
    })
    .await;
    let report = bench::run(config(addr, Workload::Get, "4KiB"))
        .await
        .unwrap();
    let failed = report.errors["http 503 SlowDown"];
    let succeeded = op(&report, "GET").ops;
    assert!(
        failed > 0 && succeeded > failed,
        "{failed} failed, {succeeded} succeeded"
    );
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert_eq!(report.connections, 4, "a 503 does not cost the connection");
}
