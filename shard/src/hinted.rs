//! Durable hinted handoff on the data path (DESIGN §7): when a replica misses a write or delete
//! (it was down, or its call failed), the coordinator stores a **hint** on another replica of
//! the partition, a record in the partition's engine under the `h` namespace, durable like
//! any record (never only in a gateway's memory). Each storage core replays the hints it holds
//! once their target answers again, oldest first, and deletes each hint once its target stored
//! it. Hints are capped in bytes per target on each core, and a hint older than
//! [`HINT_TTL`] (well within the tombstone grace) is dropped with a log line: the partition is
//! then left to anti-entropy.
//!
//! Hint key: `h` ‖ target node (u32 BE) ‖ target shard (u16 BE) ‖ HLC (physical u64 BE,
//! logical u32 BE, issuer u32 BE) ‖ the record's key. Keys sort by target, then by HLC, so a
//! target's hints replay in the order they were stamped, and a newer hint never replaces an
//! older one (each is its own key). Hint value: metadata = [`HINT_FORMAT_VERSION`] ‖ kind (0:
//! a put, 1: a delete) ‖ the record's metadata; body and summary are the record's.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use leofs_engine::{EngineError, Hlc, PartitionId, PutValue};

use crate::request::StorageRequest;
use crate::ring::Vnode;
use crate::{Shard, ShardError};

/// Namespace byte of hint records.
pub const NS_HINT: u8 = b'h';
/// Format of a hint's metadata.
const HINT_FORMAT_VERSION: u8 = 1;
/// Bytes before the record's key in a hint key: namespace, node, shard, HLC.
const HINT_KEY_HEADER_BYTES: usize = 1 + 4 + 2 + 8 + 4 + 4;
/// Most bytes of hints (bodies and metadata) one core holds for one target vnode; past it a
/// missed write gets no hint and is left to anti-entropy.
pub const HINT_BYTES_PER_TARGET_MAX: u64 = 1 << 30;
/// How long a hint is kept: past it, it is dropped (anti-entropy repairs the partition).
/// Well below the shortest tombstone grace, so that no hint can bring back an object whose
/// tombstone is gone.
pub const HINT_TTL: Duration = Duration::from_secs(3 * 3600);
/// How often a core looks for hints to replay.
pub const HINT_REPLAY_INTERVAL: Duration = Duration::from_millis(500);
/// Hints read per page of a replay pass.
const HINT_PAGE_KEYS: usize = 256;
/// How long a target that refused a hint for lack of room gets no further hint from this
/// core: each try ships a whole body to a disk that must first be freed by deletes.
pub const HINT_FULL_TARGET_BACKOFF: Duration = Duration::from_secs(5);

/// The hints one core holds, by target (metrics, and the cap).
#[derive(Default)]
pub(crate) struct HintBook {
    /// Bytes and count of the hints held for each target vnode.
    held: RefCell<HashMap<Vnode, (u64, u64)>>,
    /// Hints replayed to their target since start.
    pub(crate) replayed: std::cell::Cell<u64>,
    /// Hints dropped since start (expired, or refused over the cap).
    pub(crate) dropped: std::cell::Cell<u64>,
    /// Targets that refused a hint for lack of room, and until when they get none.
    full_until: RefCell<HashMap<Vnode, std::time::Instant>>,
}

impl HintBook {
    /// Hints held now, by target: (target, count, bytes).
    pub(crate) fn by_target(&self) -> Vec<(Vnode, u64, u64)> {
        let mut out: Vec<(Vnode, u64, u64)> = self
            .held
            .borrow()
            .iter()
            .map(|(v, (bytes, count))| (*v, *count, *bytes))
            .collect();
        out.sort_unstable();
        out
    }
}

/// The engine key of the hint of `key` (stamped `hlc`) for `target`.
fn hint_key(target: Vnode, hlc: Hlc, key: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HINT_KEY_HEADER_BYTES + key.len());
    out.put_u8(NS_HINT);
    out.put_u32(target.node);
    out.put_u16(target.shard);
    out.put_u64(hlc.physical_us);
    out.put_u32(hlc.logical);
    out.put_u32(hlc.node_id);
    out.put_slice(key);
    out.freeze()
}

/// The target, HLC and record key a hint key names.
fn parse_hint_key(hint: &[u8]) -> Option<(Vnode, Hlc, Bytes)> {
    if hint.first() != Some(&NS_HINT) || hint.len() < HINT_KEY_HEADER_BYTES {
        return None;
    }
    let u32_at = |at: usize| Some(u32::from_be_bytes(hint.get(at..at + 4)?.try_into().ok()?));
    let target = Vnode {
        node: u32_at(1)?,
        shard: u16::from_be_bytes(hint.get(5..7)?.try_into().ok()?),
    };
    let hlc = Hlc {
        physical_us: u64::from_be_bytes(hint.get(7..15)?.try_into().ok()?),
        logical: u32_at(15)?,
        node_id: u32_at(19)?,
    };
    Some((
        target,
        hlc,
        Bytes::copy_from_slice(&hint[HINT_KEY_HEADER_BYTES..]),
    ))
}

/// The hint record of a stamped Put or Delete for `target`: (partition, hint key, value), or
/// None for any other request (nothing else is hinted).
fn hint_of(target: Vnode, request: &StorageRequest) -> Option<(PartitionId, Bytes, PutValue)> {
    let (partition, key, hlc, kind, value) = match request {
        StorageRequest::Put {
            partition,
            key,
            value,
            ..
        } => (*partition, key, value.hlc?, 0u8, Some(value)),
        StorageRequest::Delete {
            partition,
            key,
            hlc,
            ..
        } => (*partition, key, (*hlc)?, 1u8, None),
        _ => return None,
    };
    let original_meta = value.map_or(&[][..], |v| &v.meta[..]);
    let mut meta = BytesMut::with_capacity(2 + original_meta.len());
    meta.put_u8(HINT_FORMAT_VERSION);
    meta.put_u8(kind);
    meta.put_slice(original_meta);
    let hint = PutValue {
        meta: meta.freeze(),
        body: value.map(|v| v.body.clone()).unwrap_or_default(),
        summary: value.map(|v| v.summary).unwrap_or_default(),
        hlc: None,
    };
    Some((partition, hint_key(target, hlc, key), hint))
}

/// The request a hint replays to its target, from its key and stored value.
fn replay_of(
    partition: PartitionId,
    hlc: Hlc,
    key: Bytes,
    stored: leofs_engine::Value,
) -> Option<StorageRequest> {
    let (&version, rest) = stored.meta.split_first()?;
    let (&kind, _) = rest.split_first()?;
    if version != HINT_FORMAT_VERSION {
        return None;
    }
    match kind {
        0 => Some(StorageRequest::Put {
            partition,
            key,
            value: PutValue {
                meta: stored.meta.slice(2..),
                body: stored.body,
                summary: stored.summary,
                hlc: Some(hlc),
            },
            fresh: false,
        }),
        1 => Some(StorageRequest::Delete {
            partition,
            key,
            hlc: Some(hlc),
            fresh: false,
        }),
        _ => None,
    }
}

/// Whether `key` is a hint's key (the executor counts hints it stores against their cap).
pub(crate) fn is_hint_key(key: &[u8]) -> bool {
    key.first() == Some(&NS_HINT)
}

impl Shard {
    /// Stores, in the background, a hint of `request` (a stamped Put or Delete that `target`
    /// missed) on another replica of its partition that is up: the first in ring order, or the
    /// next when one has no room for it.
    pub(crate) fn hint(&self, target: Vnode, request: &StorageRequest) {
        let Some((partition, key, value)) = hint_of(target, request) else {
            return;
        };
        let holders: Vec<Vnode> = match self.replicas_up(partition) {
            Ok(up) => up.into_iter().filter(|v| *v != target).collect(),
            Err(_) => Vec::new(),
        };
        if holders.is_empty() {
            tracing::warn!(
                partition,
                node = target.node,
                "a replica missed a write and no other replica is up to hold its hint; anti-entropy will repair it"
            );
            return;
        }
        let shard = self.clone();
        monoio::spawn(async move {
            let request = StorageRequest::Put {
                partition,
                key,
                value,
                fresh: false,
            };
            for holder in holders {
                match shard.send_to_vnode(holder, request.clone()).await {
                    Ok(_) => return,
                    Err(e) if e.class() == crate::ErrorClass::DiskFull => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, partition, node = target.node, holder = holder.node, "a hint could not be stored; anti-entropy will repair the replica");
                        return;
                    }
                }
            }
            tracing::debug!(
                partition,
                node = target.node,
                "no replica has room for a hint; anti-entropy will repair the replica"
            );
        });
    }

    /// The executor's check before it stores a hint record of `bytes` for its target: refused
    /// past the target's cap; counted otherwise.
    pub(crate) fn admit_hint(&self, key: &[u8], bytes: u64) -> Result<(), ShardError> {
        let Some((target, _, _)) = parse_hint_key(key) else {
            return Err(ShardError::BadAnswer("a malformed hint key".into()));
        };
        let mut held = self.core.hints.held.borrow_mut();
        let entry = held.entry(target).or_default();
        if entry.0 + bytes > HINT_BYTES_PER_TARGET_MAX {
            self.core
                .hints
                .dropped
                .set(self.core.hints.dropped.get() + 1);
            return Err(ShardError::LimitExceeded {
                what: "hints held for one replica (bytes)",
                limit: HINT_BYTES_PER_TARGET_MAX,
                got: entry.0 + bytes,
            });
        }
        entry.0 += bytes;
        entry.1 += 1;
        Ok(())
    }

    /// One pass over this core's hints: each whose target is up is replayed to it and then
    /// deleted; expired ones are dropped. Recounts what is held by target.
    pub(crate) async fn replay_hints(&self) -> Result<(), ShardError> {
        let engine = self.core.engine()?;
        let mut held: HashMap<Vnode, (u64, u64)> = HashMap::new();
        let mut unreachable: Vec<Vnode> = Vec::new();
        let mut after: Option<Bytes> = None;
        let ttl = self.core.replication.hint_ttl;
        let expired_before = leofs_engine::wall_us().saturating_sub(ttl.as_micros() as u64);
        let now = std::time::Instant::now();
        self.core
            .hints
            .full_until
            .borrow_mut()
            .retain(|_, until| *until > now);
        let full: Vec<Vnode> = self
            .core
            .hints
            .full_until
            .borrow()
            .keys()
            .copied()
            .collect();
        unreachable.extend(full);
        loop {
            let page = engine.scan(&[NS_HINT], after.as_deref(), HINT_PAGE_KEYS);
            let done = page.len() < HINT_PAGE_KEYS;
            after = page.last().map(|e| e.key.clone());
            for entry in page {
                let Some((target, hlc, key)) = parse_hint_key(&entry.key) else {
                    tracing::warn!("a malformed hint key; dropped");
                    engine.delete(entry.partition, &entry.key, None).await?;
                    continue;
                };
                if hlc.physical_us < expired_before {
                    tracing::warn!(
                        partition = entry.partition,
                        node = target.node,
                        "a hint expired before its replica came back; dropped (anti-entropy repairs the partition)"
                    );
                    self.core
                        .hints
                        .dropped
                        .set(self.core.hints.dropped.get() + 1);
                    engine.delete(entry.partition, &entry.key, None).await?;
                    continue;
                }
                let delivery = if unreachable.contains(&target) || !self.is_up(target) {
                    Delivery::Unreachable
                } else {
                    self.deliver_hint(entry.partition, &entry.key, target, hlc, key)
                        .await
                };
                match delivery {
                    Delivery::Done => {
                        let replayed = &self.core.hints.replayed;
                        replayed.set(replayed.get() + 1);
                        engine.delete(entry.partition, &entry.key, None).await?;
                        continue;
                    }
                    // Its later hints wait for the next pass too (they replay in order).
                    Delivery::Unreachable if !unreachable.contains(&target) => {
                        unreachable.push(target);
                    }
                    // No room on the target: nothing more for it until deletes may have made
                    // some (its refusals are in its own log and stats).
                    Delivery::Full => {
                        self.core
                            .hints
                            .full_until
                            .borrow_mut()
                            .insert(target, std::time::Instant::now() + HINT_FULL_TARGET_BACKOFF);
                        unreachable.push(target);
                    }
                    // The target answered but refused this one: only it waits.
                    Delivery::Unreachable | Delivery::Refused => {}
                }
                let counted = held.entry(target).or_default();
                counted.0 += entry.body_len + entry.key.len() as u64;
                counted.1 += 1;
            }
            if done {
                break;
            }
        }
        *self.core.hints.held.borrow_mut() = held;
        Ok(())
    }

    /// Sends one hint to its target: done when the target stored it (or holds newer), or
    /// when the hint is unreadable (then dropped).
    async fn deliver_hint(
        &self,
        partition: PartitionId,
        hint: &Bytes,
        target: Vnode,
        hlc: Hlc,
        key: Bytes,
    ) -> Delivery {
        let stored = match self.core.engine() {
            Ok(engine) => engine.get(partition, hint).await,
            Err(_) => return Delivery::Refused,
        };
        let request = match stored {
            Ok(Some(stored)) => replay_of(partition, hlc, key, stored),
            Ok(None) => return Delivery::Done,
            Err(EngineError::Corrupt { .. }) => {
                tracing::warn!(
                    partition,
                    "a corrupt hint; dropped (anti-entropy repairs the partition)"
                );
                return Delivery::Done;
            }
            Err(_) => return Delivery::Refused,
        };
        let Some(request) = request else {
            tracing::warn!(partition, "a hint of an unknown format; dropped");
            return Delivery::Done;
        };
        match self
            .send_to_vnode_as(target, request, crate::shard::Traffic::Background)
            .await
        {
            Ok(_) => Delivery::Done,
            // A rebalance moved the partition away from the target: its new replicas have the
            // write (from the old ones' fill, or written to both rings).
            Err(e)
                if e.class() == crate::ErrorClass::NotHeldHere
                    && !self.ring().holds(target, partition) =>
            {
                tracing::debug!(error = %e, node = target.node, partition, "a hint's replica no longer holds its partition; dropped");
                Delivery::Done
            }
            Err(e @ ShardError::Wire(_)) => {
                tracing::debug!(error = %e, node = target.node, "a hint's replica cannot be reached yet");
                Delivery::Unreachable
            }
            Err(e) if e.class() == crate::ErrorClass::DiskFull => {
                tracing::debug!(error = %e, node = target.node, "a hint's replica has no room for it");
                Delivery::Full
            }
            Err(e) => {
                tracing::debug!(error = %e, node = target.node, "a hint's replica refused it for now");
                Delivery::Refused
            }
        }
    }
}

/// How one hint's delivery went.
enum Delivery {
    /// Stored by its target (or dropped as unreadable): the hint is deleted.
    Done,
    /// Its target cannot be reached: it and the target's later hints wait for the next pass.
    Unreachable,
    /// Its target answered but did not store it: it waits for the next pass.
    Refused,
    /// Its target has no room: it and the target's later hints wait for
    /// [`HINT_FULL_TARGET_BACKOFF`].
    Full,
}

/// Replays this core's hints every [`HINT_REPLAY_INTERVAL`] until the core stops (on a ring
/// of one replica there are none, and it only waits).
pub(crate) async fn run_replayer(shard: Shard) {
    loop {
        monoio::time::sleep(HINT_REPLAY_INTERVAL).await;
        if shard.core.objects.stopping.get() {
            return;
        }
        if !shard.replicated() {
            continue;
        }
        match shard.replay_hints().await {
            Ok(()) => {}
            Err(ShardError::Engine(EngineError::Closed)) => return,
            Err(e) => tracing::warn!(error = %e, "replaying hints failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_names_its_target_and_replays_the_write_it_holds() {
        let target = Vnode { node: 7, shard: 3 };
        let hlc = Hlc {
            physical_us: 1_700_000_000_000_000,
            logical: 4,
            node_id: 1025,
        };
        let put = StorageRequest::Put {
            partition: 9,
            key: Bytes::from_static(b"o-b\0k"),
            value: PutValue {
                meta: Bytes::from_static(b"meta"),
                body: Bytes::from_static(b"body"),
                summary: Default::default(),
                hlc: Some(hlc),
            },
            fresh: true,
        };
        let (partition, key, value) = hint_of(target, &put).unwrap();
        assert_eq!(partition, 9);
        assert_eq!(
            parse_hint_key(&key),
            Some((target, hlc, Bytes::from_static(b"o-b\0k")))
        );
        let stored = leofs_engine::Value {
            meta: value.meta,
            body: value.body.clone(),
            body_len: value.body.len() as u64,
            summary: value.summary,
            hlc: Hlc::default(),
        };
        match replay_of(9, hlc, Bytes::from_static(b"o-b\0k"), stored) {
            Some(StorageRequest::Put { key, value, .. }) => {
                assert_eq!(&key[..], b"o-b\0k");
                assert_eq!(
                    (&value.meta[..], &value.body[..]),
                    (&b"meta"[..], &b"body"[..])
                );
                assert_eq!(value.hlc, Some(hlc));
            }
            other => panic!("{other:?}"),
        }
        // Hint keys of one target sort by HLC.
        let later = Hlc {
            physical_us: hlc.physical_us + 1,
            ..hlc
        };
        assert!(hint_key(target, hlc, b"z") < hint_key(target, later, b"a"));
        // Only stamped writes are hinted.
        let unstamped = StorageRequest::Delete {
            partition: 1,
            key: Bytes::from_static(b"k"),
            hlc: None,
            fresh: false,
        };
        assert!(hint_of(target, &unstamped).is_none());
        assert!(parse_hint_key(b"h\0\0").is_none());
    }
}
