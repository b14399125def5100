//! Small pipelined round trips per second over one leofs-wire connection on one core pair: a
//! client core and a serving core (each a pinned thread with its own monoio runtime), the real
//! handshake, frames and flatbuffers codec, a `Lookup` request and its `NotFound` answer (no
//! storage behind it: this measures the wire alone). Run with
//! `cargo bench -p leofs-shard --bench wire_round_trips`; knobs: LEOFS_WIRE_BENCH_SECS
//! (default 5), LEOFS_WIRE_BENCH_IN_FLIGHT (requests in flight, default 256).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use leofs_shard::remote::codec::{self, Expect, NodeAnswer, NodeRequest};
use leofs_shard::{StorageRequest, StorageResponse};
use leofs_wire::connection::{ClientConnection, serve_connection};
use leofs_wire::{ClusterAuth, ClusterId, ClusterSecret};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime(cpu: usize) -> monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>> {
    let _ = monoio::utils::bind_to_cpu_set([cpu]);
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .enable_timer()
        .build()
        .expect("an io_uring runtime")
}

fn main() {
    let seconds = env_u64("LEOFS_WIRE_BENCH_SECS", 5);
    let in_flight = env_u64("LEOFS_WIRE_BENCH_IN_FLIGHT", 256) as usize;
    let auth = ClusterAuth {
        secret: ClusterSecret::generate(),
        cluster: ClusterId([7; 16]),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let server_auth = auth.clone();
    std::thread::spawn(move || {
        runtime(1).block_on(async move {
            let listener = monoio::net::TcpListener::from_std(listener).expect("monoio listener");
            let (stream, peer) = listener.accept().await.expect("the client");
            serve_connection(stream, peer, &server_auth, |message| async move {
                let id = message.request_id();
                let answer = match codec::decode_request(&message) {
                    Ok(NodeRequest::Storage(StorageRequest::Lookup { .. })) => {
                        Ok(NodeAnswer::Storage(StorageResponse::Lookup(None)))
                    }
                    other => panic!("unexpected request {other:?}"),
                };
                Some(codec::encode_answer(id, 1, answer))
            })
            .await;
        });
    });
    let done = runtime(0).block_on(async move {
        let connection = Rc::new(
            ClientConnection::connect(addr, &auth, Duration::from_secs(2))
                .await
                .expect("connect"),
        );
        let request = Rc::new(NodeRequest::Storage(StorageRequest::Lookup {
            partition: 3,
            key: Bytes::from_static(b"bucket~0123456789abcdef\0some/object/key"),
        }));
        let counted = Rc::new(Cell::new(0u64));
        let counting = Rc::new(Cell::new(false));
        let stop = Instant::now() + Duration::from_millis(500) + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..in_flight)
            .map(|_| {
                let (connection, request) = (connection.clone(), request.clone());
                let (counted, counting) = (counted.clone(), counting.clone());
                monoio::spawn(async move {
                    while Instant::now() < stop {
                        let message = connection
                            .call(
                                |id| codec::encode_request(id, 1, &request),
                                Duration::from_secs(10),
                            )
                            .await
                            .expect("a round trip");
                        let answer = codec::decode_answer(&message, Expect::Storage("lookup"));
                        assert!(matches!(
                            answer,
                            Ok(NodeAnswer::Storage(StorageResponse::Lookup(None)))
                        ));
                        if counting.get() {
                            counted.set(counted.get() + 1);
                        }
                    }
                })
            })
            .collect();
        monoio::time::sleep(Duration::from_millis(500)).await;
        counting.set(true);
        let started = Instant::now();
        for task in tasks {
            task.await;
        }
        (counted.get(), started.elapsed())
    });
    let (round_trips, elapsed) = done;
    println!(
        "wire round trips: {round_trips} in {:.2} s = {:.0}/s ({in_flight} in flight, one connection, client core 0, server core 1)",
        elapsed.as_secs_f64(),
        round_trips as f64 / elapsed.as_secs_f64()
    );
}
