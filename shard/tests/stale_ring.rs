//! Three nodes in one process over real loopback sockets: a node routing by an older ring sends
//! a write to a node that no longer holds its partition; the write is refused there ("not held
//! here", never applied to the wrong owner), the sender takes the newer ring from that peer and
//! sends the write again, to the owner the newer ring names.

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use leofs_engine::{EngineConfig, PutValue};
use leofs_shard::ring::{RingView, Vnode};
use leofs_shard::{
    DEFAULT_CONNECTIONS_PER_CORE_MAX, JoinedCluster, NodeConfig, NodeHandle, PeersConfig,
    RpcConfig, start_node,
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

#[test]
fn a_write_routed_by_a_stale_ring_is_refused_then_sent_to_the_new_owner() {
    let auth = ClusterAuth {
        secret: ClusterSecret::generate(),
        cluster: ClusterId([3; 16]),
    };
    let (a_addr, c_addr) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let peers = vec![(NODE_A, a_addr), (NODE_C, c_addr)];
    let (dir_a, dir_b, dir_c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    // A and C route by epoch 2 (partition 1 moved from A to C); B still by epoch 1.
    let config_a = node_config(
        dir_a.path(),
        NODE_A,
        ring(2, NODE_C),
        Some(a_addr),
        peers.clone(),
        &auth,
    );
    let node_a = start_node(config_a, |_| Ok(())).unwrap();
    let config_c = node_config(
        dir_c.path(),
        NODE_C,
        ring(2, NODE_C),
        Some(c_addr),
        peers.clone(),
        &auth,
    );
    let node_c = start_node(config_c, |_| Ok(())).unwrap();

    let key = Bytes::from_static(b"moved-partition-key");
    let (done, outcome) = mpsc::channel();
    let config_b = node_config(dir_b.path(), NODE_B, ring(1, NODE_A), None, peers, &auth);
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
    assert_eq!(live_records(&node_a), 0, "never applied to the old owner");
    assert_eq!(
        live_records(&node_c),
        1,
        "applied where the newer ring says"
    );
    drop(node_b);
    drop(node_c);
    drop(node_a);
}
