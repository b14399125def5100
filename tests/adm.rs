//! `leofs-adm` end to end: the real binary against a real admin API server (in this test process,
//! over a real manager on disk), reading the token from the data directory as operators do.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use leofs_manager::Manager;
use leofs_manager::admin::{NodeStatus, NodeStatusSource, ShardStatus, spawn_admin_server};

/// A node whose figures are fixed; buckets in `non_empty` hold objects.
struct FixedNode {
    non_empty: Mutex<HashSet<String>>,
}

impl NodeStatusSource for FixedNode {
    fn node_status(&self) -> NodeStatus {
        NodeStatus {
            version: "0.1.0".to_owned(),
            s3_endpoint: "http://127.0.0.1:8080".to_owned(),
            cores: 2,
            partitions: 1024,
            uptime_secs: 93_784,
            shards: (0..2)
                .map(|core| ShardStatus {
                    core,
                    partitions_owned: 512,
                    live_records: 1_000 + core as u64,
                    tombstones: 7,
                    live_bytes: 3 * 1024 * 1024,
                    dead_bytes: 1536,
                    segments: 4,
                    index_bytes: 65_536,
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

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("leofs-adm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn adm(admin: SocketAddr, data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leofs-adm"))
        .env_remove("LEOFS_ADMIN_TOKEN")
        .env_remove("LEOFS_ADMIN_LISTEN")
        .env_remove("LEOFS_DATA_DIR")
        .arg("--admin")
        .arg(admin.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(admin: SocketAddr, data_dir: &Path, args: &[&str]) -> String {
    let out = adm(admin, data_dir, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with exit code 1 and one line on stderr; returns that line.
fn fails(admin: SocketAddr, data_dir: &Path, args: &[&str]) -> String {
    let out = adm(admin, data_dir, args);
    assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    stderr.trim_end().to_owned()
}

#[test]
fn leofs_adm_manages_users_and_buckets() {
    let dir = TempDir::new("main");
    let (manager, _) = Manager::open(&dir.0, None).unwrap();
    let node = Arc::new(FixedNode {
        non_empty: Mutex::new(HashSet::new()),
    });
    let server = spawn_admin_server(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(manager),
        node.clone(),
    )
    .unwrap();
    let addr = server.local_addr();
    let data = dir.0.as_path();

    let created = ok(addr, data, &["create-user", "alice"]);
    let key = created
        .lines()
        .find_map(|line| line.strip_prefix("access-key-id: "))
        .expect("create-user prints the access key id")
        .to_owned();
    assert!(
        created
            .lines()
            .any(|line| line.starts_with("secret-access-key: "))
    );

    let users = ok(addr, data, &["get-users"]);
    let mut lines = users.lines();
    assert_eq!(
        lines
            .next()
            .unwrap()
            .split(" | ")
            .map(str::trim)
            .collect::<Vec<_>>(),
        ["user_id", "role", "access_key_id", "created_at"]
    );
    assert!(lines.next().unwrap().contains("-+-"));
    assert!(
        users
            .lines()
            .any(|line| line.starts_with("alice ") && line.contains(&key))
    );
    assert!(
        users
            .lines()
            .any(|line| line.starts_with("admin ") && line.contains("| admin |"))
    );

    // JSON output (checked as text: the root package has no JSON dependency).
    let json = ok(addr, data, &["--json", "get-users"]);
    assert!(json.trim_start().starts_with('['), "{json}");
    assert!(json.contains(r#""user_id": "alice""#), "{json}");
    assert!(json.contains(&format!("\"{key}\"")), "{json}");

    assert_eq!(ok(addr, data, &["add-bucket", "photos", &key]).trim(), "OK");
    assert!(fails(addr, data, &["add-bucket", "photos", &key]).contains("BucketAlreadyOwnedByYou"));
    assert!(fails(addr, data, &["add-bucket", "Bad_Bucket", &key]).contains("InvalidBucketName"));
    let buckets = ok(addr, data, &["get-buckets"]);
    let row = buckets
        .lines()
        .find(|line| line.starts_with("photos"))
        .unwrap();
    assert_eq!(
        row.split(" | ").map(str::trim).take(3).collect::<Vec<_>>(),
        ["photos", "alice", "private"]
    );

    assert_eq!(
        ok(addr, data, &["update-acl", "photos", &key, "public-read"]).trim(),
        "OK"
    );
    let json = ok(addr, data, &["get-buckets", "--json"]);
    assert!(json.contains(r#""acl": "public-read""#), "{json}");

    let status = ok(addr, data, &["status"]);
    assert!(status.contains("http://127.0.0.1:8080"));
    assert!(status.contains("1d 02:03:04"));
    assert!(status.contains("[shards]"));
    assert!(
        status.lines().any(|line| line.starts_with("1 ")
            && line.contains("1001")
            && line.contains("3.0 MiB"))
    );
    let json = ok(addr, data, &["status", "--json"]);
    assert!(json.contains(r#""live_records": 1000"#), "{json}");

    node.non_empty.lock().unwrap().insert("photos".to_owned());
    assert!(fails(addr, data, &["delete-bucket", "photos"]).contains("not empty"));
    assert!(fails(addr, data, &["delete-user", "alice"]).contains("still owns buckets"));
    node.non_empty.lock().unwrap().clear();
    assert_eq!(ok(addr, data, &["delete-bucket", "photos"]).trim(), "OK");
    assert_eq!(ok(addr, data, &["delete-user", "alice"]).trim(), "OK");
    assert!(!ok(addr, data, &["get-users"]).contains("alice"));
    assert!(fails(addr, data, &["delete-user", "alice"]).contains("no such user alice"));

    let denied = fails(addr, data, &["--token", "wrong", "get-users"]);
    assert!(
        denied.contains("Unauthorized") && denied.contains("401"),
        "{denied}"
    );
    server.shutdown();
}

#[test]
fn leofs_adm_explains_what_is_missing() {
    let dir = TempDir::new("errors");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let message = fails(closed, &dir.0, &["get-users"]);
    assert_eq!(
        message,
        format!(
            "leofs-adm: admin token not found at {}: pass --token or --data-dir",
            dir.0.join("manager/admin.token").display()
        )
    );
    let message = fails(closed, &dir.0, &["--token", "t", "status"]);
    assert_eq!(
        message,
        format!(
            "leofs-adm: cannot reach admin API at {closed}: connection refused — is `leofs server` running?"
        )
    );
}
