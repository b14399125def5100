//! What the `Shard` API tests share: a real node (real engines and core threads, two cores)
//! in a temporary directory, a scenario run on core 0, and chunked versions written and
//! counted as the gateway writes them.

#![allow(dead_code)] // Each test file uses what it needs.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use leofs_shard::object::{BodyLayout, ChunkRun, Headers, ObjectMeta, VersionId, chunk_key};
use leofs_shard::{
    DEFAULT_CONNECTIONS_PER_CORE_MAX, EngineConfig, GcConfig, NodeConfig, PutValue, Shard,
    hash_bytes, start_node,
};

/// A test's body, run on core 0 of the node.
pub type Scenario = Box<dyn FnOnce(Shard) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Bytes of each chunk written.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks of each version written.
pub const CHUNKS: u32 = 3;

/// Runs `scenario` on core 0 of a fresh two-core node, then stops the node.
pub fn run_on_core0(scenario: Scenario) {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = EngineConfig::new(dir.path().join("unused"));
    engine.segment_size_bytes = 4 * 1024 * 1024;
    engine.background_compaction = false;
    let config = NodeConfig {
        data_dir: dir.path().to_path_buf(),
        cores: 2,
        partitions: 1024,
        engine,
        pin_cores: false,
        connections_per_core_max: DEFAULT_CONNECTIONS_PER_CORE_MAX,
        gc: GcConfig::with_grace(Duration::from_secs(20)),
        replication: Default::default(),
        storage: true,
        rpc: None,
        joined: None,
        services: None,
    };
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let scenario = Mutex::new(Some((scenario, done_tx)));
    let node = start_node(config, move |shard| {
        if shard.core_id() == 0
            && let Some((scenario, done)) = scenario.lock().unwrap().take()
        {
            monoio::spawn(async move {
                scenario(shard).await;
                let _ = done.send(());
            });
        }
        Ok(())
    })
    .unwrap();
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("scenario finished (a panic in it shows in the log above)");
    node.shutdown_trigger().trigger();
    node.wait().unwrap();
}

/// Writes `CHUNKS` chunks of a new registered version and returns the registration and layout.
pub async fn write_chunks(
    shard: &Shard,
    bucket: &str,
    key: &str,
) -> (leofs_shard::WriteRegistration, ChunkRun) {
    let mut registration = shard.begin_write(bucket, key).await.unwrap();
    let version = registration.version();
    for index in 0..CHUNKS {
        registration.chunk_written();
        put_chunk(shard, bucket, key, &version, index).await;
    }
    let segment = ChunkRun {
        version,
        size_bytes: u64::from(CHUNKS) * CHUNK_BYTES as u64,
        chunk_size_bytes: CHUNK_BYTES as u64,
        md5: [1; 16],
    };
    (registration, segment)
}

/// Stores chunk `index` of `version` of (bucket, key).
pub async fn put_chunk(shard: &Shard, bucket: &str, key: &str, version: &VersionId, index: u32) {
    let ckey = chunk_key(bucket, key, version, index);
    let value = PutValue {
        body: Bytes::from(vec![index as u8; CHUNK_BYTES]),
        ..Default::default()
    };
    shard
        .put(shard.partition_of(hash_bytes(&ckey)), ckey, value)
        .await
        .unwrap();
}

/// An object record whose body is laid out as `layout`.
pub fn manifest(layout: BodyLayout, size_bytes: u64) -> PutValue {
    let meta = ObjectMeta {
        completed_upload: None,
        part_checksums: Vec::new(),
        size_bytes,
        md5: [2; 16],
        parts_count: 0,
        headers: Headers::default(),
        checksums: Vec::new(),
        layout,
    };
    PutValue {
        meta: meta.encode().unwrap(),
        summary: meta.summary(),
        ..Default::default()
    }
}

/// How many chunks of `version` exist.
pub async fn chunks_left(shard: &Shard, bucket: &str, key: &str, version: &VersionId) -> u32 {
    let mut left = 0;
    for index in 0..CHUNKS {
        let ckey = chunk_key(bucket, key, version, index);
        if shard
            .get(shard.partition_of(hash_bytes(&ckey)), ckey)
            .await
            .unwrap()
            .is_some()
        {
            left += 1;
        }
    }
    left
}

/// Waits (≤ 15 s) until every chunk of `version` is collected.
pub async fn wait_for_collection(shard: &Shard, bucket: &str, key: &str, version: &VersionId) {
    let start = Instant::now();
    while chunks_left(shard, bucket, key, version).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "chunks of {version:?} still there after 15 s"
        );
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
}
