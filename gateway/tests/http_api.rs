//! End-to-end tests of the gateway over real HTTP on loopback: a real node (`start_node`, real
//! engines on a temp dir, 2 cores), `serve_core` on each core, and a minimal HTTP/1.1 client on
//! `std::net::TcpStream`. Requests are anonymous against a public-read-write bucket (SigV4 is
//! exercised by the boto3/aws-cli suites in tests/e2e); a private bucket checks that anonymous
//! access is refused. A small chunk size makes modest bodies span many chunks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use leofs_gateway::{GatewayConfig, serve_core};
use leofs_manager::{BucketAcl, Manager};
use leofs_shard::{EngineConfig, NodeConfig, NodeHandle, start_node};
use md5::{Digest, Md5};

const CHUNK_BYTES: u64 = 64 * 1024;

struct Node {
    handle: Option<NodeHandle>,
    s3: SocketAddr,
    rest: SocketAddr,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown_trigger().trigger();
            h.wait().unwrap();
        }
    }
}

fn start() -> Node {
    start_at(tempfile::tempdir().unwrap())
}

impl Node {
    /// Stops the node gracefully and starts it again on the same data directory.
    fn restart(mut self) -> Node {
        let dir = self.dir.take().unwrap();
        drop(self);
        start_at(dir)
    }
}

fn start_at(dir: tempfile::TempDir) -> Node {
    let (manager, creds) = Manager::open(dir.path(), None).unwrap();
    if let Some(creds) = creds {
        let owner = creds.user_id;
        manager
            .create_bucket("pub", &owner, BucketAcl::PublicReadWrite)
            .unwrap();
        manager
            .create_bucket("priv", &owner, BucketAcl::Private)
            .unwrap();
    }
    let manager = Arc::new(manager);
    let config = Arc::new(GatewayConfig {
        chunk_size_bytes: CHUNK_BYTES,
        ..GatewayConfig::default()
    });
    let mut engine = EngineConfig::new(dir.path());
    engine.segment_size_bytes = 16 * 1024 * 1024;
    engine.cache_bytes = 4 * 1024 * 1024;
    let node_config = NodeConfig {
        data_dir: dir.path().to_path_buf(),
        cores: 2,
        partitions: 64,
        engine,
        pin_cores: true,
        connections_per_core_max: leofs_shard::DEFAULT_CONNECTIONS_PER_CORE_MAX,
        gc: Default::default(),
        replication: Default::default(),
        storage: true,
        rpc: None,
        joined: None,
        services: None,
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (catalog, _thread) = leofs_manager::CatalogWriter::start(manager.clone()).unwrap();
    let handle = start_node(node_config, move |shard| {
        serve_core(
            shard,
            manager.clone(),
            catalog.clone(),
            config.clone(),
            any,
            Some(any),
        )
        .map_err(Into::into)
    })
    .unwrap();
    let addrs = handle.bound_addrs();
    Node {
        s3: addrs[0],
        rest: addrs[1],
        handle: Some(handle),
        dir: Some(dir),
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if method == "HEAD" || status == 204 || status == 304 {
    } else if let Some(len) = find("content-length") {
        body.resize(len.parse().unwrap(), 0);
        r.read_exact(&mut body).unwrap();
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut piece = vec![0; n + 2];
            r.read_exact(&mut piece).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&piece[..n]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    s.split(open)
        .skip(1)
        .filter_map(|p| p.split(close).next())
        .collect()
}

#[test]
fn put_get_small_and_chunked_objects_round_trip_with_md5_etags() {
    let node = start();
    for (key, len) in [
        ("small", 1000usize),
        ("big", 300 * 1024 + 7),
        ("exact", CHUNK_BYTES as usize),
        ("empty", 0),
    ] {
        let body = data(len, 3);
        let put = request(
            node.s3,
            "PUT",
            &format!("/pub/{key}"),
            &[("Content-Type", "text/x-test")],
            &body,
        );
        assert_eq!(put.status, 200, "{}", put.text());
        assert_eq!(
            put.header("etag"),
            Some(format!("\"{}\"", md5_hex(&body)).as_str())
        );
        let get = request(node.s3, "GET", &format!("/pub/{key}"), &[], &[]);
        assert_eq!(get.status, 200);
        assert_eq!(get.body, body, "{key}");
        assert_eq!(get.header("content-type"), Some("text/x-test"));
        let head = request(node.s3, "HEAD", &format!("/pub/{key}"), &[], &[]);
        assert_eq!(
            head.header("content-length"),
            Some(len.to_string().as_str())
        );
    }
    // An overwrite replaces the data (and its old chunks are collected).
    let v2 = data(200 * 1024, 9);
    assert_eq!(request(node.s3, "PUT", "/pub/big", &[], &v2).status, 200);
    assert_eq!(request(node.s3, "GET", "/pub/big", &[], &[]).body, v2);
}

#[test]
fn ranges_and_conditions_follow_s3() {
    let node = start();
    let body = data(200 * 1024, 1);
    let put = request(node.s3, "PUT", "/pub/r", &[], &body);
    let etag = put.header("etag").unwrap().to_owned();
    let r = request(
        node.s3,
        "GET",
        "/pub/r",
        &[("Range", "bytes=65530-65545")],
        &[],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[65530..65546]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 65530-65545/{}", body.len()).as_str())
    );
    let r = request(node.s3, "GET", "/pub/r", &[("Range", "bytes=-10")], &[]);
    assert_eq!(r.body, &body[body.len() - 10..]);
    let r = request(node.s3, "GET", "/pub/r", &[("Range", "bytes=204700-")], &[]);
    assert_eq!(r.body, &body[204700..]);
    let r = request(node.s3, "GET", "/pub/r", &[("Range", "bytes=999999-")], &[]);
    assert_eq!(r.status, 416);
    assert!(r.text().contains("InvalidRange"));
    assert_eq!(
        request(node.s3, "GET", "/pub/r", &[("If-None-Match", &etag)], &[]).status,
        304
    );
    assert_eq!(
        request(node.s3, "HEAD", "/pub/r", &[("If-Match", "\"nope\"")], &[]).status,
        412
    );
    let put = request(node.s3, "PUT", "/pub/r", &[("If-None-Match", "*")], b"x");
    assert_eq!(put.status, 412);
    assert_eq!(
        request(node.s3, "PUT", "/pub/new", &[("If-None-Match", "*")], b"x").status,
        200
    );
    let bad = request(
        node.s3,
        "PUT",
        "/pub/md5",
        &[("Content-MD5", "AAAAAAAAAAAAAAAAAAAAAA==")],
        b"hello",
    );
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("BadDigest"));
    assert_eq!(request(node.s3, "GET", "/pub/md5", &[], &[]).status, 404);
    let big_meta = "m".repeat(3000);
    let r = request(
        node.s3,
        "PUT",
        "/pub/meta",
        &[("x-amz-meta-big", &big_meta)],
        b"x",
    );
    assert!(
        r.status == 400 && r.text().contains("MetadataTooLarge"),
        "{}",
        r.text()
    );
    let r = request(
        node.s3,
        "PUT",
        &format!("/pub/{}", "k".repeat(1025)),
        &[],
        b"x",
    );
    assert!(
        r.status == 400 && r.text().contains("KeyTooLongError"),
        "{}",
        r.text()
    );
    assert_eq!(
        request(
            node.s3,
            "PUT",
            &format!("/pub/{}", "k".repeat(1024)),
            &[],
            b"x"
        )
        .status,
        200
    );
}

#[test]
fn listing_rolls_up_prefixes_and_paginates() {
    let node = start();
    for key in ["a/1", "a/2", "b", "c/x/y", "c/z", "d"] {
        assert_eq!(
            request(node.s3, "PUT", &format!("/pub/{key}"), &[], b"v").status,
            200
        );
    }
    let list = request(node.s3, "GET", "/pub?list-type=2&delimiter=/", &[], &[]).text();
    assert_eq!(between(&list, "<Key>", "</Key>"), ["b", "d"]);
    assert_eq!(
        between(&list, "<Prefix>", "</Prefix>")
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>(),
        ["a/", "c/"]
    );
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/pub?list-type=2&max-keys=2&continuation-token={t}"),
            None => "/pub?list-type=2&max-keys=2".to_owned(),
        };
        let page = request(node.s3, "GET", &path, &[], &[]).text();
        keys.extend(
            between(&page, "<Key>", "</Key>")
                .into_iter()
                .map(str::to_owned),
        );
        match between(&page, "<NextContinuationToken>", "</NextContinuationToken>").first() {
            Some(t) => token = Some((*t).to_owned()),
            None => break,
        }
    }
    assert_eq!(keys, ["a/1", "a/2", "b", "c/x/y", "c/z", "d"]);
    let v1 = request(node.s3, "GET", "/pub?prefix=c/&marker=c/x/y", &[], &[]).text();
    assert_eq!(between(&v1, "<Key>", "</Key>"), ["c/z"]);
    // A non-empty bucket cannot be deleted.
    assert_eq!(
        request(node.s3, "GET", "/priv?list-type=2", &[], &[]).status,
        403
    );
}

#[test]
fn multipart_upload_completes_with_md5_of_md5s_etag_and_serves_parts() {
    let node = start();
    let created = request(
        node.s3,
        "POST",
        "/pub/mp?uploads",
        &[("Content-Type", "app/x")],
        &[],
    )
    .text();
    let upload_id = between(&created, "<UploadId>", "</UploadId>")[0].to_owned();
    let p1 = data(5 * 1024 * 1024, 1);
    let p2 = data(100 * 1024 + 3, 2);
    let mut etags = Vec::new();
    for (n, p) in [(1, &p1), (2, &p2)] {
        let r = request(
            node.s3,
            "PUT",
            &format!("/pub/mp?partNumber={n}&uploadId={upload_id}"),
            &[],
            p,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        etags.push(r.header("etag").unwrap().to_owned());
    }
    let parts = request(
        node.s3,
        "GET",
        &format!("/pub/mp?uploadId={upload_id}"),
        &[],
        &[],
    )
    .text();
    assert_eq!(between(&parts, "<PartNumber>", "</PartNumber>"), ["1", "2"]);
    let uploads = request(node.s3, "GET", "/pub?uploads", &[], &[]).text();
    assert!(uploads.contains(&upload_id));
    // Parts out of order are refused.
    let xml = |order: &[usize]| {
        let mut x = String::from("<CompleteMultipartUpload>");
        for &i in order {
            x.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                etags[i]
            ));
        }
        x + "</CompleteMultipartUpload>"
    };
    let bad = request(
        node.s3,
        "POST",
        &format!("/pub/mp?uploadId={upload_id}"),
        &[],
        xml(&[1, 0]).as_bytes(),
    );
    assert!(bad.text().contains("InvalidPartOrder"), "{}", bad.text());
    let done = request(
        node.s3,
        "POST",
        &format!("/pub/mp?uploadId={upload_id}"),
        &[],
        xml(&[0, 1]).as_bytes(),
    );
    assert_eq!(done.status, 200, "{}", done.text());
    let mut cat = Vec::new();
    cat.extend_from_slice(&Md5::digest(&p1));
    cat.extend_from_slice(&Md5::digest(&p2));
    let expected_etag = format!("{}-2", md5_hex(&cat));
    assert!(done.text().contains(&expected_etag), "{}", done.text());
    let get = request(node.s3, "GET", "/pub/mp", &[], &[]);
    assert_eq!(get.body.len(), p1.len() + p2.len());
    assert!(get.body[..p1.len()] == p1[..] && get.body[p1.len()..] == p2[..]);
    assert_eq!(get.header("content-type"), Some("app/x"));
    let part2 = request(node.s3, "GET", "/pub/mp?partNumber=2", &[], &[]);
    assert_eq!(part2.status, 206);
    assert_eq!(part2.body, p2);
    assert_eq!(part2.header("x-amz-mp-parts-count"), Some("2"));
    // A repeated completion with the same parts is answered as the first (S3); with other
    // parts, the upload is gone.
    let again = request(
        node.s3,
        "POST",
        &format!("/pub/mp?uploadId={upload_id}"),
        &[],
        xml(&[0, 1]).as_bytes(),
    );
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(again.text().contains(&expected_etag), "{}", again.text());
    let other = request(
        node.s3,
        "POST",
        &format!("/pub/mp?uploadId={upload_id}"),
        &[],
        xml(&[0]).as_bytes(),
    );
    assert!(other.text().contains("NoSuchUpload"));
}

#[test]
fn copy_delete_acl_and_rest_share_one_store() {
    let node = start();
    let body = data(150 * 1024, 5);
    request(
        node.s3,
        "PUT",
        "/pub/src%20key",
        &[("x-amz-meta-color", "blue")],
        &body,
    );
    let copy = request(
        node.s3,
        "PUT",
        "/pub/dst",
        &[("x-amz-copy-source", "/pub/src%20key")],
        &[],
    );
    assert_eq!(copy.status, 200, "{}", copy.text());
    let get = request(node.s3, "GET", "/pub/dst", &[], &[]);
    assert_eq!(get.body, body);
    assert_eq!(get.header("x-amz-meta-color"), Some("blue"));
    let self_copy = request(
        node.s3,
        "PUT",
        "/pub/dst",
        &[("x-amz-copy-source", "/pub/dst")],
        &[],
    );
    assert!(self_copy.text().contains("InvalidRequest"));
    assert_eq!(request(node.s3, "DELETE", "/pub/dst", &[], &[]).status, 204);
    assert_eq!(request(node.s3, "GET", "/pub/dst", &[], &[]).status, 404);
    let del = b"<Delete><Quiet>true</Quiet><Object><Key>src key</Key></Object></Delete>";
    let md5 = leofs_gateway::layout::base64_encode(&Md5::digest(del));
    let multi = request(
        node.s3,
        "POST",
        "/pub?delete",
        &[("Content-MD5", &md5)],
        del,
    );
    assert_eq!(multi.status, 200, "{}", multi.text());
    assert_eq!(
        request(node.s3, "GET", "/pub/src%20key", &[], &[]).status,
        404
    );
    // Anonymous access to a private bucket is refused.
    assert_eq!(request(node.s3, "PUT", "/priv/k", &[], b"x").status, 403);
    // REST: same data, public ACL rules.
    assert_eq!(
        request(node.rest, "PUT", "/pub/rest%2Fkey", &[], &body).status,
        200
    );
    assert_eq!(
        request(node.s3, "GET", "/pub/rest/key", &[], &[]).body,
        body
    );
    assert_eq!(
        request(node.rest, "GET", "/pub/rest/key", &[], &[]).body,
        body
    );
    assert_eq!(request(node.rest, "GET", "/priv/x", &[], &[]).status, 403);
    assert_eq!(
        request(node.rest, "DELETE", "/pub/rest/key", &[], &[]).status,
        204
    );
    assert_eq!(
        request(node.rest, "GET", "/pub/rest/key", &[], &[]).status,
        404
    );
}

#[test]
fn multipart_upload_in_progress_survives_a_restart() {
    let node = start();
    let created = request(node.s3, "POST", "/pub/later?uploads", &[], &[]).text();
    let upload_id = between(&created, "<UploadId>", "</UploadId>")[0].to_owned();
    let p1 = data(300 * 1024, 4);
    let r = request(
        node.s3,
        "PUT",
        &format!("/pub/later?partNumber=1&uploadId={upload_id}"),
        &[],
        &p1,
    );
    let etag = r.header("etag").unwrap().to_owned();
    request(node.s3, "PUT", "/pub/kept", &[], b"kept");
    let node = node.restart();
    assert_eq!(request(node.s3, "GET", "/pub/kept", &[], &[]).body, b"kept");
    let xml = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    );
    let done = request(
        node.s3,
        "POST",
        &format!("/pub/later?uploadId={upload_id}"),
        &[],
        xml.as_bytes(),
    );
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(request(node.s3, "GET", "/pub/later", &[], &[]).body, p1);
}
