//! The admin API end to end: a real server thread on loopback, a real manager on disk, driven
//! through the real client (and raw HTTP where the client would not send such a request).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use leofs_manager::admin::{
    AdminServer, NodeStatus, NodeStatusSource, ShardStatus, spawn_admin_server,
};
use leofs_manager::client::{AdminClient, ClientError};
use leofs_manager::{BucketAcl, Manager};

/// A node whose figures are fixed; buckets listed in `non_empty` hold objects.
struct FixedNode {
    non_empty: Mutex<HashSet<String>>,
}

impl NodeStatusSource for FixedNode {
    fn node_status(&self) -> NodeStatus {
        NodeStatus {
            version: "0.1.0-test".to_owned(),
            s3_endpoint: "http://127.0.0.1:8080".to_owned(),
            cores: 2,
            partitions: 1024,
            uptime_secs: 3_723,
            shards: (0..2)
                .map(|core| ShardStatus {
                    core,
                    partitions_owned: 512,
                    live_records: 10 + core as u64,
                    tombstones: 1,
                    live_bytes: 4096,
                    dead_bytes: 512,
                    segments: 3,
                    index_bytes: 2048,
                    corrupt_records: 0,
                    free_segments: 1,
                    disk_full: false,
                    writes_refused_disk_full: 0,
                    segments_set_aside: 0,
                    garbage_pending: 0,
                    chunks_collected: 5,
                    orphan_chunks_swept: 0,
                    wire_requests_sent: 0,
                    wire_requests_served: 0,
                    cache_hits: 0,
                    cache_misses: 0,
                    cross_core_calls: 0,
                    open_connections: 0,
                    hints_pending: Vec::new(),
                    hints_replayed: 0,
                    hints_dropped: 0,
                    anti_entropy_passes: 0,
                    anti_entropy_repaired: 0,
                    partitions_under_replicated: 0,
                    oldest_unrepaired_partition_seconds: 0,
                    requests: Vec::new(),
                    gateway_cache: Default::default(),
                    lifecycle: Default::default(),
                })
                .collect(),
            latency_buckets_us: Vec::new(),
            clock_offset_us: None,
            peer_clocks: Vec::new(),
        }
    }

    fn bucket_is_empty(&self, bucket: &leofs_manager::Bucket) -> Option<bool> {
        Some(!self.non_empty.lock().unwrap().contains(&bucket.name))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    server: AdminServer,
    client: AdminClient,
    node: Arc<FixedNode>,
    root_key: String,
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let (manager, root) = Manager::open(&data_dir, None).unwrap();
    let manager = Arc::new(manager);
    let node = Arc::new(FixedNode {
        non_empty: Mutex::new(HashSet::new()),
    });
    let server = spawn_admin_server(
        "127.0.0.1:0".parse().unwrap(),
        Arc::clone(&manager),
        node.clone(),
    )
    .unwrap();
    let client = AdminClient::new(server.local_addr().to_string(), manager.admin_token());
    Fixture {
        _dir: dir,
        data_dir,
        server,
        client,
        node,
        root_key: root.unwrap().access_key_id,
    }
}

fn api_error<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api { status, code, .. }) => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// One raw request; returns the status code and the body.
fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[test]
fn users_and_buckets_through_the_admin_api() {
    let fx = start();
    let client = &fx.client;

    let alice = client.create_user("alice").unwrap();
    assert_eq!(alice.user_id, "alice");
    let bob = client.create_user("bob").unwrap();
    assert_eq!(
        api_error(client.create_user("alice")),
        (409, "UserAlreadyExists".to_owned())
    );
    assert_eq!(
        api_error(client.create_user("bad id")),
        (400, "InvalidUserId".to_owned())
    );

    let users = client.users().unwrap();
    let ids: Vec<&str> = users.iter().map(|u| u.user_id.as_str()).collect();
    assert_eq!(ids, ["admin", "alice", "bob"]);
    assert!(users[0].is_admin && !users[1].is_admin);
    assert_eq!(users[0].access_key_ids, vec![fx.root_key.clone()]);
    assert_eq!(users[1].access_key_ids, vec![alice.access_key_id.clone()]);

    let bucket = client
        .add_bucket("photos", &alice.access_key_id, None)
        .unwrap();
    assert_eq!(
        (bucket.owner.as_str(), bucket.acl),
        ("alice", BucketAcl::Private)
    );
    assert_eq!(
        api_error(client.add_bucket("photos", &alice.access_key_id, None)),
        (409, "BucketAlreadyOwnedByYou".to_owned())
    );
    assert_eq!(
        api_error(client.add_bucket("photos", &bob.access_key_id, None)),
        (409, "BucketAlreadyExists".to_owned())
    );
    assert_eq!(
        api_error(client.add_bucket("Not_Valid", &alice.access_key_id, None)),
        (400, "InvalidBucketName".to_owned())
    );
    assert_eq!(
        api_error(client.add_bucket("other", "NOSUCHKEY", None)),
        (404, "NoSuchAccessKey".to_owned())
    );
    client
        .add_bucket("logs", &bob.access_key_id, Some("public-read"))
        .unwrap();
    let buckets = client.buckets().unwrap();
    let listed: Vec<(&str, &str, BucketAcl)> = buckets
        .iter()
        .map(|b| (b.name.as_str(), b.owner.as_str(), b.acl))
        .collect();
    assert_eq!(
        listed,
        [
            ("logs", "bob", BucketAcl::PublicRead),
            ("photos", "alice", BucketAcl::Private)
        ]
    );

    assert_eq!(
        api_error(client.update_acl("photos", &bob.access_key_id, "public-read")),
        (403, "AccessDenied".to_owned())
    );
    assert_eq!(
        api_error(client.update_acl("photos", &alice.access_key_id, "world-writable")),
        (400, "InvalidAcl".to_owned())
    );
    let updated = client
        .update_acl("photos", &alice.access_key_id, "public-read-write")
        .unwrap();
    assert_eq!(updated.acl, BucketAcl::PublicReadWrite);
    // An administrator's key may change any bucket's ACL.
    client.update_acl("logs", &fx.root_key, "private").unwrap();

    assert_eq!(
        api_error(client.delete_user("alice")),
        (409, "UserOwnsBuckets".to_owned())
    );
    fx.node
        .non_empty
        .lock()
        .unwrap()
        .insert("photos".to_owned());
    assert_eq!(
        api_error(client.delete_bucket("photos")),
        (409, "BucketNotEmpty".to_owned())
    );
    fx.node.non_empty.lock().unwrap().clear();
    client.delete_bucket("photos").unwrap();
    assert_eq!(
        api_error(client.delete_bucket("photos")),
        (404, "NoSuchBucket".to_owned())
    );
    client.delete_user("alice").unwrap();
    assert_eq!(
        api_error(client.delete_user("alice")),
        (404, "NoSuchUser".to_owned())
    );
    assert_eq!(
        api_error(client.delete_user("admin")),
        (409, "CannotDeleteAdmin".to_owned())
    );

    // Everything above is durable: a fresh manager on the same directory sees it.
    fx.server.shutdown();
    let (reopened, created) = Manager::open(&fx.data_dir, None).unwrap();
    assert!(created.is_none());
    let state = reopened.snapshot();
    assert!(state.user("alice").is_none() && state.access_key(&alice.access_key_id).is_none());
    assert_eq!(state.access_key(&bob.access_key_id).unwrap().user_id, "bob");
    assert!(state.bucket("photos").is_none());
    assert_eq!(state.bucket("logs").unwrap().acl, BucketAcl::Private);
}

#[test]
fn status_reports_the_node() {
    let fx = start();
    let status = fx.client.status().unwrap();
    assert_eq!(status.version, "0.1.0-test");
    assert_eq!(status.shards.len(), 2);
    assert_eq!(status.shards[1].live_records, 11);
    fx.server.shutdown();
}

#[test]
fn wrong_or_missing_token_is_refused_with_401() {
    let fx = start();
    let addr = fx.server.local_addr();
    let intruder = AdminClient::new(addr.to_string(), "not-the-token");
    assert_eq!(
        api_error(intruder.users()),
        (401, "Unauthorized".to_owned())
    );
    assert_eq!(
        api_error(intruder.create_user("mallory")),
        (401, "Unauthorized".to_owned())
    );
    let (status, body) = raw(
        addr,
        "GET /v1/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 401);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"], "Unauthorized");
    assert!(
        fx.client
            .users()
            .unwrap()
            .iter()
            .all(|u| u.user_id != "mallory")
    );
    fx.server.shutdown();
}

#[test]
fn bad_requests_get_json_errors() {
    let fx = start();
    let addr = fx.server.local_addr();
    let token = format!(
        "Authorization: Bearer {}\r\n",
        Manager::open(&fx.data_dir, None).unwrap().0.admin_token()
    );
    let (status, body) = raw(
        addr,
        &format!("GET /v2/nothing HTTP/1.1\r\nHost: x\r\n{token}Connection: close\r\n\r\n"),
    );
    assert_eq!(status, 404);
    assert!(body.contains("\"NotFound\""));
    let (status, body) = raw(
        addr,
        &format!("PATCH /v1/users HTTP/1.1\r\nHost: x\r\n{token}Connection: close\r\n\r\n"),
    );
    assert_eq!(status, 405);
    assert!(body.contains("\"MethodNotAllowed\""));
    let (status, body) = raw(
        addr,
        &format!(
            "POST /v1/users HTTP/1.1\r\nHost: x\r\n{token}Content-Length: 5\r\nConnection: close\r\n\r\n{{oops"
        ),
    );
    assert_eq!(status, 400);
    assert!(body.contains("\"InvalidJson\""));
    fx.server.shutdown();
}

#[test]
fn shutdown_closes_the_listener() {
    let fx = start();
    let addr = fx.server.local_addr();
    fx.server.shutdown();
    let message = fx.client.users().unwrap_err().to_string();
    assert!(
        message.starts_with(&format!(
            "cannot reach admin API at {addr}: connection refused"
        )),
        "{message}"
    );
}

#[test]
fn concurrent_clients_are_all_served_and_recorded() {
    let fx = start();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let client = fx.client.clone();
            std::thread::spawn(move || {
                let user = client.create_user(&format!("user{i}")).unwrap();
                client
                    .add_bucket(&format!("bucket-{i}"), &user.access_key_id, None)
                    .unwrap();
                client.users().unwrap().len()
            })
        })
        .collect();
    for thread in threads {
        assert!(thread.join().unwrap() >= 2);
    }
    assert_eq!(fx.client.users().unwrap().len(), 9);
    assert_eq!(fx.client.buckets().unwrap().len(), 8);
    fx.server.shutdown();
}

#[test]
fn idle_connections_cannot_lock_the_admin_api_out() {
    let fx = start();
    let addr = fx.server.local_addr();
    // Twice the connection limit, idle or stopped halfway through a request head.
    let mut idle: Vec<TcpStream> = (0..2 * leofs_manager::admin::MAX_ADMIN_CONNECTIONS)
        .map(|i| {
            let mut stream = TcpStream::connect(addr).unwrap();
            if i % 4 == 0 {
                stream
                    .write_all(b"GET /v1/status HTTP/1.1\r\nhost: x\r\n")
                    .unwrap();
            }
            stream
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert_eq!(fx.client.status().unwrap().cores, 2);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The connections replaced are those idle the longest: the newest still serves a request.
    let token = admin_token(&fx);
    let newest = idle.last_mut().unwrap();
    newest
        .write_all(
            format!("GET /v1/users HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut answer = String::new();
    newest.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle);
    fx.server.shutdown();
}

/// The admin token the fixture's manager wrote.
fn admin_token(fx: &Fixture) -> String {
    std::fs::read_to_string(fx.data_dir.join("manager").join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}
