//! A bucket deleted and created again under the same name never sees the old bucket's objects,
//! even those written afterwards through a late catalog (under the old incarnation), on a real
//! node: real engines, core threads and cross-core requests.

use std::sync::{Mutex, mpsc};
use std::time::Duration;

use bytes::Bytes;
use leofs_gateway::layout::{BucketId, object_prefix};
use leofs_gateway::storage::Storage;
use leofs_shard::{
    DEFAULT_CONNECTIONS_PER_CORE_MAX, EngineConfig, NodeConfig, PutValue, Shard, WriteCondition,
    start_node,
};

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut engine = EngineConfig::new(dir.join("unused"));
    engine.segment_size_bytes = 4 * 1024 * 1024;
    engine.cache_bytes = 1024 * 1024;
    engine.background_compaction = false;
    NodeConfig {
        data_dir: dir.to_path_buf(),
        cores: 2,
        partitions: 1024,
        engine,
        pin_cores: false,
        connections_per_core_max: DEFAULT_CONNECTIONS_PER_CORE_MAX,
        gc: Default::default(),
        replication: Default::default(),
        storage: true,
        rpc: None,
        joined: None,
        services: None,
    }
}

async fn scenario(shard: Shard) -> Vec<String> {
    let storage = Storage::new(shard);
    let old = BucketId::new("photos", 0x1111);
    let new = BucketId::new("photos", 0x2222);
    let mut seen = Vec::new();
    for key in ["a.jpg", "b.jpg", "c.jpg"] {
        let value = PutValue {
            body: Bytes::from_static(b"old bytes"),
            ..Default::default()
        };
        storage
            .commit_object(&old, key, value, WriteCondition::none(), None)
            .await
            .expect("late write under the old incarnation");
    }
    let listed = |bucket: &BucketId| {
        let storage = storage.clone();
        let prefix = Bytes::from(object_prefix(bucket));
        async move { storage.scan(prefix, None, 100).await.expect("scan").len() }
    };
    seen.push(format!("old lists {}", listed(&old).await));
    seen.push(format!("new lists {}", listed(&new).await));
    let got = storage.get_object_record(&new, "a.jpg").await.expect("get");
    seen.push(format!("new reads a.jpg: {}", got.is_some()));
    let got = storage.get_object_record(&old, "a.jpg").await.expect("get");
    seen.push(format!("old reads a.jpg: {}", got.is_some()));
    seen
}

#[test]
fn a_recreated_bucket_never_sees_objects_of_its_old_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(Some(tx));
    let node = start_node(config(dir.path()), move |shard| {
        if shard.core_id() == 0
            && let Some(tx) = tx.lock().unwrap().take()
        {
            monoio::spawn(async move {
                let _ = tx.send(scenario(shard).await);
            });
        }
        Ok(())
    })
    .unwrap();
    let seen = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(
        seen,
        [
            "old lists 3",
            "new lists 0",
            "new reads a.jpg: false",
            "old reads a.jpg: true"
        ]
    );
    node.shutdown_trigger().trigger();
    node.wait().unwrap();
}
