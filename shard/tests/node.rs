//! End-to-end tests of a node: real engines on temporary directories, real core threads and
//! io_uring runtimes, real loopback HTTP.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use leofs_shard::{
    DEFAULT_CONNECTIONS_PER_CORE_MAX, EngineConfig, NodeConfig, NodeHandle, OverloadAnswer,
    PutValue, ScanEntry, Shard, ShardError, StorageRequest, StorageResponse, object_hash,
    serve_http, start_node,
};

/// What the test listeners answer over the connection cap.
const OVERLOAD: OverloadAnswer = OverloadAnswer {
    content_type: "text/plain",
    body: "too busy",
};

type Scenario = Box<dyn FnOnce(Shard) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

fn config(dir: &std::path::Path, cores: usize) -> NodeConfig {
    let mut engine = EngineConfig::new(dir.join("unused"));
    engine.segment_size_bytes = 4 * 1024 * 1024;
    engine.cache_bytes = 1024 * 1024;
    engine.background_compaction = false;
    NodeConfig {
        data_dir: dir.to_path_buf(),
        cores,
        partitions: 1024,
        engine,
        pin_cores: true,
        connections_per_core_max: DEFAULT_CONNECTIONS_PER_CORE_MAX,
        gc: Default::default(),
        replication: Default::default(),
        storage: true,
        rpc: None,
        joined: None,
        services: None,
    }
}

/// Starts a node whose core `i` runs `scenarios[i]` (if any) once initialised.
fn start_with(
    dir: &std::path::Path,
    cores: usize,
    scenarios: Vec<(usize, Scenario)>,
) -> NodeHandle {
    let scenarios = Mutex::new(scenarios);
    start_node(config(dir, cores), move |shard| {
        let mut all = scenarios.lock().unwrap();
        if let Some(index) = all.iter().position(|(core, _)| *core == shard.core_id()) {
            let (_, scenario) = all.remove(index);
            monoio::spawn(scenario(shard));
        }
        Ok(())
    })
    .unwrap()
}

fn object(bucket: &str, key: &str) -> (u64, Bytes) {
    (
        object_hash(bucket.as_bytes(), key.as_bytes()),
        Bytes::from(format!("{bucket}/{key}")),
    )
}

fn put_value(body: &str) -> PutValue {
    PutValue {
        body: Bytes::copy_from_slice(body.as_bytes()),
        ..Default::default()
    }
}

#[test]
fn put_on_one_core_for_a_partition_owned_by_another_is_readable_from_both() {
    let dir = tempfile::tempdir().unwrap();
    let (done_tx, done_rx) = mpsc::channel::<(usize, Vec<u8>, u64)>();
    let (stored_tx, stored_rx) = futures_channel::oneshot::channel::<(u32, Bytes)>();
    let done0 = done_tx.clone();
    let writer: Scenario = Box::new(move |shard: Shard| {
        Box::pin(async move {
            // A key owned by core 1, written from core 0.
            let (partition, key) = (0..)
                .map(|i| object("bkt", &format!("key-{i}")))
                .map(|(hash, key)| (shard.partition_of(hash), key))
                .find(|(partition, _)| shard.partition_map().owner_of(*partition) == 1)
                .unwrap();
            shard
                .put(partition, key.clone(), put_value("hello from core 0"))
                .await
                .unwrap();
            let read = shard.get(partition, key.clone()).await.unwrap().unwrap();
            done0
                .send((0, read.body.to_vec(), shard.forwarded_calls()))
                .unwrap();
            stored_tx.send((partition, key)).unwrap();
        })
    });
    let reader: Scenario = Box::new(move |shard: Shard| {
        Box::pin(async move {
            let (partition, key) = stored_rx.await.unwrap();
            assert_eq!(shard.partition_map().owner_of(partition), shard.core_id());
            let read = shard.get(partition, key).await.unwrap().unwrap();
            done_tx
                .send((1, read.body.to_vec(), shard.forwarded_calls()))
                .unwrap();
        })
    });
    let node = start_with(dir.path(), 2, vec![(0, writer), (1, reader)]);
    let mut results: Vec<_> = (0..2)
        .map(|_| done_rx.recv_timeout(Duration::from_secs(20)).unwrap())
        .collect();
    results.sort();
    assert_eq!(
        results[0],
        (0, b"hello from core 0".to_vec(), 2),
        "core 0 forwarded the put and the get"
    );
    assert_eq!(
        results[1],
        (1, b"hello from core 0".to_vec(), 0),
        "core 1 read locally"
    );
    let stats = node.stats();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0].1.live_records, 0);
    assert_eq!(stats[1].1.live_records, 1);
    node.shutdown_trigger().trigger();
    node.wait().unwrap();
}

#[test]
fn more_concurrent_forwards_than_the_in_flight_bound_all_complete() {
    const CALLS: usize = 3 * leofs_shard::cross_core::IN_FLIGHT_PER_PEER_MAX;
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel::<(usize, u64)>();
    let scenario: Scenario = Box::new(move |shard: Shard| {
        Box::pin(async move {
            let (partition, key) = (0..)
                .map(|i| object("bkt", &format!("key-{i}")))
                .map(|(hash, key)| (shard.partition_of(hash), key))
                .find(|(partition, _)| shard.partition_map().owner_of(*partition) == 1)
                .unwrap();
            shard
                .put(partition, key.clone(), put_value("v"))
                .await
                .unwrap();
            let heads = (0..CALLS).map(|_| shard.head(partition, key.clone()));
            let found = futures_util::future::join_all(heads)
                .await
                .into_iter()
                .filter(|head| matches!(head, Ok(Some(h)) if h.body_len == 1))
                .count();
            tx.send((found, shard.forwarded_calls())).unwrap();
        })
    });
    let node = start_with(dir.path(), 2, vec![(0, scenario)]);
    let (found, forwarded) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(found, CALLS);
    assert_eq!(forwarded, CALLS as u64 + 1);
    node.shutdown_trigger().trigger();
    node.wait().unwrap();
}

#[test]
fn requests_cross_cores_as_values_and_a_core_refuses_partitions_it_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let scenario: Scenario = Box::new(move |shard: Shard| {
        Box::pin(async move {
            let (partition, key) = (0..)
                .map(|i| object("bkt", &format!("key-{i}")))
                .map(|(hash, key)| (shard.partition_of(hash), key))
                .find(|(partition, _)| shard.partition_map().owner_of(*partition) == 1)
                .unwrap();
            let mut seen = Vec::new();
            let put = StorageRequest::Put {
                partition,
                key: key.clone(),
                value: put_value("v"),
                fresh: false,
            };
            seen.push(match shard.send_to(1, put).await {
                Ok(StorageResponse::Stored(_)) => "stored on its owner".to_owned(),
                other => format!("{other:?}"),
            });
            let get = StorageRequest::Get {
                partition,
                key: key.clone(),
            };
            seen.push(match shard.send_to(0, get).await {
                Err(ShardError::NotHeldHere { core: 0, .. }) => "refused by core 0".to_owned(),
                other => format!("{other:?}"),
            });
            let get = StorageRequest::Get { partition, key };
            seen.push(match shard.send_to(1, get).await {
                Ok(StorageResponse::Value(Some(v))) => {
                    format!("read {}", String::from_utf8_lossy(&v.body))
                }
                other => format!("{other:?}"),
            });
            let scan = StorageRequest::Scan {
                partitions: std::iter::once(0..1).collect(),
                prefix: Bytes::new(),
                start_after: None,
                limit: leofs_shard::request::SCAN_LIMIT_MAX + 1,
                tombstones: false,
            };
            seen.push(match shard.send_to(0, scan).await {
                Err(ShardError::LimitExceeded { .. }) => "scan limit refused".to_owned(),
                other => format!("{other:?}"),
            });
            tx.send(seen).unwrap();
        })
    });
    let node = start_with(dir.path(), 2, vec![(0, scenario)]);
    let seen = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(
        seen,
        [
            "stored on its owner",
            "refused by core 0",
            "read v",
            "scan limit refused"
        ]
    );
    node.shutdown_trigger().trigger();
    node.wait().unwrap();
}

#[test]
fn objects_spread_over_all_shards_and_scan_all_merges_them_in_key_order() {
    const OBJECTS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel::<(Vec<ScanEntry>, Vec<Vec<ScanEntry>>)>();
    let scenario: Scenario = Box::new(move |shard: Shard| {
        Box::pin(async move {
            let puts = (0..OBJECTS).map(|i| {
                let (hash, key) = object("b", &format!("k{:05}", (i * 7919) % OBJECTS));
                let shard = shard.clone();
                async move {
                    shard
                        .put(shard.partition_of(hash), key, put_value("x"))
                        .await
                        .unwrap()
                }
            });
            futures_util::future::join_all(puts).await;
            // Keys outside the prefix must not show up.
            let (hash, other) = object("c", "k00001");
            shard
                .put(shard.partition_of(hash), other, put_value("y"))
                .await
                .unwrap();
            let all = shard
                .scan_all(Bytes::from_static(b"b/"), None, 10_000)
                .await
                .unwrap();
            let mut pages = Vec::new();
            let mut after = None;
            loop {
                let page = shard
                    .scan_all(Bytes::from_static(b"b/"), after.clone(), 33)
                    .await
                    .unwrap();
                if page.is_empty() {
                    break;
                }
                after = Some(page.last().unwrap().key.clone());
                pages.push(page);
            }
            tx.send((all, pages)).unwrap();
        })
    });
    let node = start_with(dir.path(), 4, vec![(2, scenario)]);
    let (all, pages) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let expected: Vec<Bytes> = (0..OBJECTS)
        .map(|i| Bytes::from(format!("b/k{i:05}")))
        .collect();
    assert_eq!(
        all.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(pages.iter().all(|p| p.len() <= 33));
    let paged: Vec<Bytes> = pages.into_iter().flatten().map(|e| e.key).collect();
    assert_eq!(paged, expected);
    let stats = node.stats();
    assert_eq!(stats.len(), 4);
    for (core, engine, owned) in &stats {
        assert_eq!(*owned, 256, "core {core}");
        assert!(
            engine.live_records > 50,
            "core {core} holds {} objects",
            engine.live_records
        );
    }
    assert_eq!(
        stats.iter().map(|s| s.1.live_records).sum::<u64>(),
        OBJECTS as u64 + 1
    );
    node.shutdown_trigger().trigger();
    node.wait().unwrap();
}

#[test]
fn data_survives_a_clean_restart_and_the_core_count_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let (hash, key) = object("b", "persisted");
    let (tx, rx) = mpsc::channel::<Option<Bytes>>();
    let tx2 = tx.clone();
    let key2 = key.clone();
    let writer: Scenario = Box::new(move |shard: Shard| {
        Box::pin(async move {
            shard
                .put(shard.partition_of(hash), key2, put_value("kept"))
                .await
                .unwrap();
            tx2.send(None).unwrap();
        })
    });
    let node = start_with(dir.path(), 2, vec![(0, writer)]);
    rx.recv_timeout(Duration::from_secs(20)).unwrap();
    node.shutdown_trigger().trigger();
    node.wait().unwrap();

    let err = start_node(config(dir.path(), 3), |_| Ok(())).err().unwrap();
    assert!(
        matches!(
            err,
            ShardError::LayoutMismatch {
                stored_cores: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--cores 2"), "{err}");

    let reader: Scenario = Box::new(move |shard: Shard| {
        Box::pin(async move {
            let value = shard.get(shard.partition_of(hash), key).await.unwrap();
            tx.send(value.map(|v| v.body)).unwrap();
        })
    });
    let node = start_with(dir.path(), 2, vec![(1, reader)]);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)).unwrap(),
        Some(Bytes::from_static(b"kept"))
    );
    node.shutdown_trigger().trigger();
    node.wait().unwrap();
}

/// A node whose every core serves `delay_ms`-delayed "core <i>" answers on one loopback port.
fn start_http_node(
    dir: &std::path::Path,
    cores: usize,
    delay: Duration,
) -> (NodeHandle, SocketAddr) {
    start_http_node_with(config(dir, cores), delay)
}

/// [`start_http_node`] with any node configuration.
fn start_http_node_with(config: NodeConfig, delay: Duration) -> (NodeHandle, SocketAddr) {
    let node = start_node(config, move |shard| {
        let core = shard.core_id();
        let service = hyper::service::service_fn(
            move |_request: http::Request<hyper::body::Incoming>| async move {
                monoio::time::sleep(delay).await;
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                    format!("core {core}"),
                ))))
            },
        );
        serve_http(&shard, "127.0.0.1:0".parse().unwrap(), service, OVERLOAD)?;
        Ok(())
    })
    .unwrap();
    let addr = node.bound_addrs()[0];
    (node, addr)
}

fn read_response(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if response.len() >= head_end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8(response).unwrap()
}

/// TCP_NODELAY of this process's socket whose local address is `local` and peer is `peer`.
fn server_socket_nodelay(local: SocketAddr, peer: SocketAddr) -> Option<bool> {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: the fd is only borrowed for the duration of the calls; ManuallyDrop keeps it open.
        let socket = std::mem::ManuallyDrop::new(unsafe {
            <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd)
        });
        if socket.local_addr().ok() == Some(local) && socket.peer_addr().ok() == Some(peer) {
            return Some(socket.nodelay().unwrap());
        }
    }
    None
}

#[test]
fn serve_http_answers_on_loopback_with_tcp_nodelay_and_keep_alive() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = start_http_node(dir.path(), 2, Duration::ZERO);
    let mut stream = TcpStream::connect(addr).unwrap();
    for _ in 0..3 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .unwrap();
        let response = read_response(&mut stream);
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(
            response.ends_with("core 0") || response.ends_with("core 1"),
            "{response}"
        );
    }
    let nodelay = server_socket_nodelay(addr, stream.local_addr().unwrap());
    assert_eq!(nodelay, Some(true));
    // Every core listens on the same port: other connections are answered too.
    for _ in 0..8 {
        let mut other = TcpStream::connect(addr).unwrap();
        other
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .unwrap();
        assert!(read_response(&mut other).starts_with("HTTP/1.1 200 OK"));
    }
    node.shutdown_trigger().trigger();
    node.wait().unwrap();
}

#[test]
fn keep_alive_connections_are_spread_evenly_over_the_cores() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = start_http_node(dir.path(), 2, Duration::ZERO);
    // Whatever listener the kernel picks for each, every core ends up serving half of them.
    let mut streams = Vec::new();
    let mut per_core = [0usize; 2];
    for _ in 0..8 {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .unwrap();
        let response = read_response(&mut stream);
        let core = if response.ends_with("core 0") { 0 } else { 1 };
        assert!(response.ends_with(&format!("core {core}")), "{response}");
        per_core[core] += 1;
        // Moved connections keep being served by the core they were moved to.
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .unwrap();
        assert!(read_response(&mut stream).ends_with(&format!("core {core}")));
        streams.push(stream);
    }
    assert_eq!(per_core, [4, 4]);
    drop(streams);
    node.shutdown_trigger().trigger();
    node.wait().unwrap();
}

#[test]
fn oversized_request_headers_get_431() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = start_http_node(dir.path(), 1, Duration::ZERO);
    let mut stream = TcpStream::connect(addr).unwrap();
    let big = "a".repeat(leofs_shard::http::MAX_HEADER_BYTES + 1024);
    stream
        .write_all(format!("GET / HTTP/1.1\r\nhost: test\r\nx-big: {big}\r\n\r\n").as_bytes())
        .unwrap();
    let response = read_response(&mut stream);
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    node.shutdown_trigger().trigger();
    node.wait().unwrap();
}

#[test]
fn connections_over_the_cap_get_the_overload_answer_and_an_orderly_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut capped = config(dir.path(), 2);
    capped.connections_per_core_max = 2;
    let (node, addr) = start_http_node_with(capped, Duration::ZERO);
    // Four served connections fill both cores.
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
                .unwrap();
            assert!(read_response(&mut stream).contains("core "));
            stream
        })
        .collect();
    // The fifth gets 503 and the overload body, then an orderly close: its unread request
    // body (larger than the socket buffers) is read and dropped rather than reset.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let body = vec![b'x'; 1 << 20];
    stream
        .write_all(b"PUT / HTTP/1.1\r\nhost: test\r\ncontent-length: 1048576\r\n\r\n")
        .unwrap();
    stream.write_all(&body).unwrap();
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("an answer and a close, not a reset");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.ends_with("too busy"), "{answer}");
    // The held connections are still served.
    held[0]
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut held[0]).contains("core "));
    // A slot frees when a served connection closes.
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .unwrap();
        let response = read_response(&mut stream);
        if response.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        assert!(std::time::Instant::now() < deadline, "no slot freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(held);
    node.shutdown_trigger().trigger();
    node.wait().unwrap();
}

#[test]
fn binding_a_port_another_process_listens_on_fails_with_address_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = start_node(config(dir.path(), 2), move |shard| {
        Ok(serve_http(
            &shard,
            addr,
            hyper::service::service_fn(|_r: http::Request<hyper::body::Incoming>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
            }),
            OVERLOAD,
        )?)
    })
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        format!("initialising core 0 failed: cannot bind {addr}: address in use")
    );
}

#[test]
fn graceful_shutdown_finishes_an_in_flight_request_and_stops_accepting() {
    let dir = tempfile::tempdir().unwrap();
    let (node, addr) = start_http_node(dir.path(), 2, Duration::from_millis(500));
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let trigger = node.shutdown_trigger();
    let stopped = Arc::new(Mutex::new(None));
    let stopped2 = stopped.clone();
    let waiter = std::thread::spawn(move || {
        let result = node.wait();
        *stopped2.lock().unwrap() = Some(std::time::Instant::now());
        result
    });
    trigger.trigger();
    let response = read_response(&mut stream);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    waiter.join().unwrap().unwrap();
    assert!(stopped.lock().unwrap().is_some());
    assert!(
        TcpStream::connect(addr).is_err(),
        "listeners are closed after shutdown"
    );
}
