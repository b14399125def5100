//! Nodes in one process over real loopback sockets.
//!
//! - A node routing by an older ring sends a write to a node that no longer holds its
//!   partition; the write is refused there ("not held here", never applied to the wrong
//!   owner), the sender takes the newer ring from that peer and sends the write again, to the
//!   owner the newer ring names.
//! - A node routing by a newer ring sends a write to a node whose ring is older: the receiver
//!   asks for the newer ring and serves only once it has it; when it cannot get it, the write
//!   is refused ("ring behind") and applied nowhere.
//! - A second node given the port a node serves its peers on fails to start (it never shares
//!   the port's connections).

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use leofs_engine::{EngineConfig, PutValue};
use leofs_shard::ring::{RingView, Vnode};
use leofs_shard::{
    DEFAULT_CONNECTIONS_PER_CORE_MAX, ErrorClass, InstalledRing, JoinedCluster, NodeConfig,
    NodeHandle, PeersConfig, RpcConfig, start_node,
};
use leofs_wire::{ClusterAuth, ClusterId, ClusterSecret};

const PARTITIONS: u32 = 2;
const NODE_A: u32 = 1;
const NODE_C: u32 = 2;
const NODE_B: u32 = 9;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

fn ring(epoch: u64, owner_of_partition_1: u32) -> RingView {
    let table = vec![
        Vnode {
            node: NODE_A,
            shard: 0,
        },
        Vnode {
            node: owner_of_partition_1,
            shard: 0,
        },
    ];
    RingView::new(epoch, PARTITIONS, 1, table).expect("a valid ring")
}

fn node_config(
    dir: &std::path::Path,
    node: u32,
    ring: RingView,
    rpc: Option<SocketAddr>,
    peers: Vec<(u32, SocketAddr)>,
    auth: &ClusterAuth,
) -> NodeConfig {
    let mut engine = EngineConfig::new(dir.join("unused"));
    engine.segment_size_bytes = 4 * 1024 * 1024;
    engine.cache_bytes = 1024 * 1024;
    engine.background_compaction = false;
    NodeConfig {
        data_dir: dir.to_path_buf(),
        cores: 1,
        partitions: PARTITIONS,
        engine,
        pin_cores: false,
        connections_per_core_max: DEFAULT_CONNECTIONS_PER_CORE_MAX,
        gc: Default::default(),
        replication: Default::default(),
        storage: rpc.is_some(),
        rpc: rpc.map(|listen| RpcConfig {
            listen,
            auth: auth.clone(),
        }),
        joined: Some(JoinedCluster {
            node_id: node,
            ring,
            peers: PeersConfig {
                nodes: peers,
                auth: auth.clone(),
                request_timeout: Duration::from_secs(5),
            },
        }),
        services: None,
    }
}

fn live_records(node: &NodeHandle) -> u64 {
    node.stats()
        .iter()
        .map(|(_, engine, _)| engine.live_records)
        .sum()
}

/// Storage nodes A and C on loopback, each routing by its own ring, and the directory of
/// node B (the sender, started by the test).
struct StorageNodes {
    auth: ClusterAuth,
    peers: Vec<(u32, SocketAddr)>,
    node_a: NodeHandle,
    node_c: NodeHandle,
    dir_b: tempfile::TempDir,
    _dirs: [tempfile::TempDir; 2],
}

fn storage_nodes(cluster: u8, ring_a: RingView, ring_c: RingView) -> StorageNodes {
    let auth = ClusterAuth {
        secret: ClusterSecret::generate(),
        cluster: ClusterId([cluster; 16]),
    };
    let (a_addr, c_addr) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let peers = vec![(NODE_A, a_addr), (NODE_C, c_addr)];
    let (dir_a, dir_c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config_a = node_config(
        dir_a.path(),
        NODE_A,
        ring_a,
        Some(a_addr),
        peers.clone(),
        &auth,
    );
    let node_a = start_node(config_a, |_| Ok(())).unwrap();
    let config_c = node_config(
        dir_c.path(),
        NODE_C,
        ring_c,
        Some(c_addr),
        peers.clone(),
        &auth,
    );
    let node_c = start_node(config_c, |_| Ok(())).unwrap();
    StorageNodes {
        auth,
        peers,
        node_a,
        node_c,
        dir_b: tempfile::tempdir().unwrap(),
        _dirs: [dir_a, dir_c],
    }
}

#[test]
fn a_write_routed_by_a_stale_ring_is_refused_then_sent_to_the_new_owner() {
    // A and C route by epoch 2 (partition 1 moved from A to C); B still by epoch 1.
    let nodes = storage_nodes(3, ring(2, NODE_C), ring(2, NODE_C));

    let key = Bytes::from_static(b"moved-partition-key");
    let (done, outcome) = mpsc::channel();
    let config_b = node_config(
        nodes.dir_b.path(),
        NODE_B,
        ring(1, NODE_A),
        None,
        nodes.peers.clone(),
        &nodes.auth,
    );
    let node_b = start_node(config_b, move |shard| {
        let (done, key) = (done.clone(), key.clone());
        monoio::spawn(async move {
            assert_eq!(shard.ring().epoch(), 1);
            let value = PutValue {
                body: Bytes::from_static(b"body"),
                ..Default::default()
            };
            let put = shard.put(1, key.clone(), value).await;
            let epoch_after = shard.ring().epoch();
            let read = shard.get(1, key).await;
            let _ = done.send((
                put.map(drop).map_err(|e| e.to_string()),
                epoch_after,
                read.map(|v| v.map(|v| v.body)),
            ));
        });
        Ok(())
    })
    .unwrap();
    let (put_ok, epoch_after, read) = outcome.recv_timeout(Duration::from_secs(20)).unwrap();
    put_ok.expect("the write succeeds once sent to the new owner");
    assert_eq!(
        epoch_after, 2,
        "the sender took the newer ring from the peer that refused"
    );
    assert_eq!(read.unwrap(), Some(Bytes::from_static(b"body")));
    assert_eq!(
        live_records(&nodes.node_a),
        0,
        "never applied to the old owner"
    );
    assert_eq!(
        live_records(&nodes.node_c),
        1,
        "applied where the newer ring says"
    );
    drop(node_b);
    drop(nodes);
}

/// Node C routes by epoch 1 (partition 1 on A); node B by epoch 2 (partition 1 on C) and sends
/// C a write. With `fetches`, C's ring source brings epoch 2 when asked; without, nothing
/// does. The write's outcome (its error class if it failed), and the records on A and C.
fn write_to_a_receiver_behind(fetches: bool) -> (Result<(), ErrorClass>, u64, u64) {
    let nodes = storage_nodes(4, ring(1, NODE_A), ring(1, NODE_A));
    let (asked_tx, asked) = mpsc::channel();
    let installer = nodes.node_c.ring_installer();
    let newer = InstalledRing {
        ring: std::sync::Arc::new(ring(2, NODE_C)),
        nodes: nodes.peers.clone(),
        unavailable: Vec::new(),
    };
    assert!(
        nodes
            .node_c
            .ring_installer()
            .when_ring_wanted(std::sync::Arc::new(move |epoch| {
                let _ = asked_tx.send(epoch);
                if fetches {
                    installer.install(newer.clone());
                }
            }))
    );

    let (done, outcome) = mpsc::channel();
    let config_b = node_config(
        nodes.dir_b.path(),
        NODE_B,
        ring(2, NODE_C),
        None,
        nodes.peers.clone(),
        &nodes.auth,
    );
    let node_b = start_node(config_b, move |shard| {
        let done = done.clone();
        monoio::spawn(async move {
            let value = PutValue {
                body: Bytes::from_static(b"body"),
                ..Default::default()
            };
            let put = shard.put(1, Bytes::from_static(b"behind-key"), value).await;
            let _ = done.send(put.map(drop).map_err(|e| e.class()));
        });
        Ok(())
    })
    .unwrap();
    let put = outcome.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(
        asked.recv_timeout(Duration::from_secs(1)),
        Ok(2),
        "the receiver asked for the sender's ring"
    );
    let counts = (live_records(&nodes.node_a), live_records(&nodes.node_c));
    drop(node_b);
    drop(nodes);
    (put, counts.0, counts.1)
}

#[test]
fn a_receiver_with_an_older_ring_takes_the_newer_one_before_it_serves() {
    let (put, on_a, on_c) = write_to_a_receiver_behind(true);
    put.expect("served once the receiver has the sender's ring");
    assert_eq!((on_a, on_c), (0, 1), "applied where the newer ring says");
}

#[test]
fn a_receiver_that_cannot_get_the_newer_ring_serves_nothing() {
    let (put, on_a, on_c) = write_to_a_receiver_behind(false);
    assert_eq!(put, Err(ErrorClass::Unavailable), "refused: ring behind");
    assert_eq!((on_a, on_c), (0, 0), "applied nowhere");
}

#[test]
fn a_second_node_given_a_port_a_node_serves_peers_on_fails_to_start() {
    let auth = ClusterAuth {
        secret: ClusterSecret::generate(),
        cluster: ClusterId([5; 16]),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let peers = vec![(NODE_A, addr)];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &std::path::Path, node| {
        node_config(dir, node, ring(1, NODE_A), Some(addr), peers.clone(), &auth)
    };
    let node_a = start_node(config(dir_a.path(), NODE_A), |_| Ok(())).unwrap();
    match start_node(config(dir_b.path(), NODE_C), |_| Ok(())) {
        Err(e) => assert!(
            e.to_string().contains(&addr.to_string()),
            "the error names the port: {e}"
        ),
        Ok(_) => panic!("a second node started on {addr}, where node A serves its peers"),
    }
    drop(node_a);
}
