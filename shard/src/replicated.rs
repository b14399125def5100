//! The replicated data path (DESIGN §7): with N > 1 replicas per partition, the core that took
//! a request coordinates it, driving [`crate::replication::coordinator`]'s rounds over the
//! replica vnodes the ring names:
//!
//! - **Writes and deletes** are stamped once by the coordinator (its core's HLC) and sent to
//!   every replica known up in parallel; acknowledged after W (D) stores, failed at once when
//!   fewer than W (D) are up. Replicas that answer late finish in the background (each call is
//!   a task of its own, bounded by the peer's in-flight byte cap and request timeout).
//! - **Object commits and deletes** (preconditions, garbage queues, write registrations) run on
//!   the partition's serializing replica, its first replica known up; the record they wrote is
//!   then stored on the other replicas with the same HLC, and the round needs W stores in all.
//! - **Reads** take the body from one replica and HLC digests from R − 1 others; a newer digest
//!   fetches the newer body, a tombstone outvotes an older copy, a miss is checked against every
//!   replica up before it is a miss, and replicas found stale are repaired in the background.
//!   A replica that has answered nothing at all for [`READ_HEDGE_AFTER`] has its ask sent to
//!   another replica as well (a hedge), so a hung core or a stopped node not yet known down
//!   costs a read that long, not the request timeout (a miss still waits for it: every
//!   replica up must answer one).
//! - **Listings** read each partition from R replicas up (from its first replica up with
//!   N = 1); a listing page whose replicas include some that answered nothing for 500 ms is
//!   planned again without them when every partition is still read from as many replicas,
//!   and the first complete plan answers.
//!
//! A replica is "up" unless its node is suspended or its peer is in the back-off of a recent
//! failure (local failure detection: one failed call, then none until the back-off ends).
//! With N = 1 none of this runs: every request goes to the one replica as before.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::Either;
use futures_util::stream::FuturesUnordered;
use leofs_engine::{Hlc, Lookup, PartitionId, PutValue};

use crate::replication::coordinator::{
    ReadAnswer, ReadAsk, ReadProgress, ReadRound, TooFewUp, WriteAnswer, WriteProgress, WriteRound,
};
use crate::replication::{Levels, Version};
use crate::request::{StorageRequest, StorageResponse};
use crate::ring::Vnode;
use crate::shard::Traffic;
use crate::{ErrorClass, Shard, ShardError};

/// What a replicated read needs to know of the record it reads.
pub(crate) struct ReadOf {
    /// The record's partition.
    pub(crate) partition: PartitionId,
    /// The record's key.
    pub(crate) key: Bytes,
    /// The request that fetches the body (Get, GetRange or Head).
    pub(crate) body: StorageRequest,
    /// Replicas to consult: R, or 1 for records that never change once written (chunks).
    pub(crate) r: usize,
}

/// How long an ask of a replica waits before the same ask goes to another replica as well,
/// if that replica answered no call at all from this core meanwhile (a hung core, a stopped
/// node, not yet known down: its calls would wait for the request timeout); checked every as
/// long while the read waits, each ask hedged once. A replica that answers this core's other
/// calls meanwhile is busy, not stalled, and is not hedged.
pub(crate) const READ_HEDGE_AFTER: Duration = Duration::from_millis(50);

/// How much sooner than [`READ_HEDGE_AFTER`] an ask may have been sent and still be judged
/// when the hedge's timer goes off (the timer wheel ticks in milliseconds and may fire a tick
/// early: an ask sent with the round's first asks is judged at the first firing, not the next).
const HEDGE_TIMER_SLACK: Duration = Duration::from_millis(5);

/// Most tries of a replicated read or write while the ring changes under it (a rebalance
/// changes it twice: when it begins and when it flips).
const RING_CHANGE_TRIES_MAX: u32 = 3;

impl Shard {
    /// How many replicas a read of this handle's bucket consults (R).
    pub fn read_level(&self) -> usize {
        self.levels().r
    }

    /// The replication levels of the ring this core routes by: the bucket's own W, R and D
    /// (on a handle [`Shard::with_levels`] made), else those the managers set for the cluster
    /// (`leofs-adm update-consistency-level`), each only when it fits N; else the defaults.
    pub(crate) fn levels(&self) -> Levels {
        let n = self.core.ring.borrow().replicas();
        let fitting = |(w, r, d): (usize, usize, usize)| Levels::new(n, w, r, d).ok();
        self.bucket_levels
            .map(|(w, r, d)| (usize::from(w), usize::from(r), usize::from(d)))
            .and_then(fitting)
            .or_else(|| self.core.node.levels_set().and_then(fitting))
            .unwrap_or_else(|| Levels::defaults(n))
    }

    /// The cluster's clock bound, in µs.
    pub(crate) fn max_clock_offset_us(&self) -> u64 {
        self.core
            .node
            .max_clock_offset_us
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether requests may go to `vnode` now: always for this node's cores; for another node,
    /// unless it is suspended, or that shard of it failed and has not answered since, or the
    /// whole node has been silent ([`leofs_wire::Peer::is_down`]).
    pub(crate) fn is_up(&self, vnode: Vnode) -> bool {
        vnode.node == self.core.node_id || self.core.remote.is_reachable(vnode.node, vnode.shard)
    }

    /// Whether `vnode` answered any call from this core at or after `at`: as its peer recorded
    /// for another node's shard; always for this node's own cores (a cross-core call keeps no
    /// such record, so a read never hedges around a core of its own node).
    pub(crate) fn answered_since(&self, vnode: Vnode, at: Instant) -> bool {
        vnode.node == self.core.node_id
            || self.core.remote.answered_since(vnode.node, vnode.shard, at)
    }

    /// Every vnode that holds `partition`: its replicas in ring order, then, while a
    /// rebalance moves it, the replicas it moves to.
    fn replicas_of(&self, partition: PartitionId) -> Result<Vec<Vnode>, ShardError> {
        self.core.ring.borrow().holders(partition)
    }

    /// The replica sets a write of `partition` needs its quorum in: its replicas, and while
    /// a rebalance moves it, the replicas it moves to (DESIGN §4).
    fn write_sets(&self, partition: PartitionId) -> Result<Vec<Vec<Vnode>>, ShardError> {
        let ring = self.core.ring.borrow();
        let mut sets = vec![ring.route(partition)?.to_vec()];
        if let Some(next) = ring.next_route(partition) {
            sets.push(next.to_vec());
        }
        Ok(sets)
    }

    /// The vnodes a read of `partition` consults, in the order it asks them, and how many it
    /// needs: `r` of its replicas up; while a rebalance moves it, `r` of the old replicas up
    /// and `r` of the new ones (a write acknowledged by either ring is then seen).
    fn read_targets(
        &self,
        partition: PartitionId,
        r: usize,
    ) -> Result<(Vec<Vnode>, usize), ShardError> {
        let sets = self.write_sets(partition)?;
        // Until the flip the old replicas are the ones known to hold everything: a read
        // answered by unfilled new replicas alone could miss an acknowledged write.
        if sets.len() > 1 && !sets[0].iter().any(|v| self.is_up(*v)) {
            return Err(ShardError::TooFewReplicas {
                partition,
                up: 0,
                needed: 1,
            });
        }
        let mut chosen: Vec<Vnode> = Vec::new();
        for set in &sets {
            let up: Vec<Vnode> = set.iter().copied().filter(|v| self.is_up(*v)).collect();
            let wanted = r.min(up.len()).max(1);
            for vnode in up.into_iter().take(wanted) {
                if !chosen.contains(&vnode) {
                    chosen.push(vnode);
                }
            }
        }
        // Answers from any `needed` of the replicas up include `r` (or all those up) of each
        // set: a replica that fails is replaced by whichever is next, which may belong to one
        // set only.
        let up_in_all: Vec<Vnode> = sets
            .iter()
            .flatten()
            .copied()
            .filter(|v| self.is_up(*v))
            .fold(Vec::new(), |mut all, v| {
                if !all.contains(&v) {
                    all.push(v);
                }
                all
            });
        let needed = sets
            .iter()
            .map(|set| {
                // A set with none up (the new replicas, down) took no write either.
                let up = set.iter().filter(|v| self.is_up(**v)).count();
                if up == 0 {
                    0
                } else {
                    up_in_all.len() - up + r.min(up)
                }
            })
            .max()
            .unwrap_or(1)
            .max(chosen.len())
            .max(1);
        for vnode in sets.iter().flatten() {
            if !chosen.contains(vnode) {
                chosen.push(*vnode);
            }
        }
        Ok((chosen, needed))
    }

    /// Whether requests take the replicated path: the ring has more than one replica per
    /// partition, or a rebalance moves partitions (their writes then go to two rings).
    pub(crate) fn replicated(&self) -> bool {
        let ring = self.core.ring.borrow();
        ring.replicas() > 1 || ring.is_moving()
    }

    /// Stores `request_at(stamp)` (a Put or Delete) on every replica of `partition` known up,
    /// `needed` of them durably; a replica holding a newer version makes the write go again,
    /// stamped above it. The stamp stored and the answers of the replicas that stored it.
    pub(crate) async fn write_everywhere(
        &self,
        partition: PartitionId,
        needed: usize,
        stamp: Hlc,
        request_at: impl Fn(Hlc) -> StorageRequest,
    ) -> Result<(Hlc, Vec<StorageResponse>), ShardError> {
        let mut tries = 0;
        loop {
            let epoch = self.ring().epoch();
            tries += 1;
            match self
                .write_everywhere_once(partition, needed, stamp, &request_at)
                .await
            {
                // Replicas refused it because a newer ring moves the partition (this core
                // took that ring meanwhile): again, over the replica sets it names (a
                // rebalance changes the ring twice, when it begins and when it flips).
                Err(e) if self.ring().epoch() != epoch && tries < RING_CHANGE_TRIES_MAX => {
                    tracing::debug!(error = %e, partition, "a write failed while the ring changed; writing again by the new ring");
                }
                answer => return answer,
            }
        }
    }

    /// One try of [`Shard::write_everywhere`] by the ring routed by now.
    async fn write_everywhere_once(
        &self,
        partition: PartitionId,
        needed: usize,
        mut stamp: Hlc,
        request_at: &impl Fn(Hlc) -> StorageRequest,
    ) -> Result<(Hlc, Vec<StorageResponse>), ShardError> {
        self.check_clock()?;
        let sets = self.write_sets(partition)?;
        let quorums: Vec<(&[Vnode], usize)> =
            sets.iter().map(|set| (set.as_slice(), needed)).collect();
        for _ in 0..=RESTAMPS_MAX {
            let request = request_at(stamp);
            match self
                .write_round(partition, &quorums, stamp, |_| request.clone())
                .await?
            {
                Written::Acknowledged(answers) => return Ok((stamp, answers)),
                Written::Restamp(above) => stamp = self.stamp_above(above),
            }
        }
        Err(restamped_too_often(partition, needed))
    }

    /// Sends a stamped write to `vnode` as a task of its own (it finishes even if the round
    /// is decided without it); if the replica does not store it, another replica gets a hint
    /// of it.
    fn store_or_hint(
        &self,
        vnode: Vnode,
        request: StorageRequest,
    ) -> monoio::task::JoinHandle<Result<StorageResponse, ShardError>> {
        let shard = self.clone();
        monoio::spawn(async move {
            let answer = shard.send_to_vnode(vnode, request.clone()).await;
            if answer.is_err() {
                shard.hint(vnode, &request);
            }
            answer
        })
    }

    /// Refuses to stamp a replicated write while this node's clock is beyond the cluster's
    /// bound (see [`crate::RingInstaller::set_clock_beyond_bound`]).
    pub(crate) fn check_clock(&self) -> Result<(), ShardError> {
        if self
            .core
            .node
            .clock_beyond_bound
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(ShardError::ClockBeyondBound);
        }
        Ok(())
    }

    /// A fresh stamp of this core's clock above `held` (a newer version a replica holds).
    pub(crate) fn stamp_above(&self, held: Hlc) -> Hlc {
        self.observe(held);
        self.now()
    }

    /// A write round over `sets` (each replica set with the stores it needs), each stamped
    /// `stamp`: each replica up gets `request_for(vnode)`, as a task of its own (it finishes
    /// even after the round is decided).
    async fn write_round(
        &self,
        partition: PartitionId,
        sets: &[(&[Vnode], usize)],
        stamp: Hlc,
        request_for: impl Fn(Vnode) -> StorageRequest,
    ) -> Result<Written, ShardError> {
        let needed = sets.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let (mut round, targets) = WriteRound::start_in_sets(sets, |v| self.is_up(*v))
            .map_err(|e| too_few(partition, e))?;
        let mut down: Vec<Vnode> = Vec::new();
        for vnode in sets.iter().flat_map(|(set, _)| set.iter()) {
            if !targets.contains(vnode) && !down.contains(vnode) {
                down.push(*vnode);
            }
        }
        let mut only_full_disks_failed = down.is_empty();
        for vnode in down {
            self.hint(vnode, &request_for(vnode));
        }
        let mut calls: FuturesUnordered<_> = targets
            .into_iter()
            .map(|vnode| {
                let call = self.store_or_hint(vnode, request_for(vnode));
                async move { (vnode, call.await) }
            })
            .collect();
        let mut stored = Vec::with_capacity(needed);
        let mut last_failure = String::new();
        while let Some((vnode, answer)) = calls.next().await {
            let progress = match answer {
                Ok(response) => match answered_hlc(&response) {
                    Some(held) if held > stamp => round.answer(vnode, WriteAnswer::Newer(held)),
                    _ => {
                        stored.push(response);
                        round.answer(vnode, WriteAnswer::Stored)
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, node = vnode.node, partition, "a replica did not store a write");
                    only_full_disks_failed &= e.class() == ErrorClass::DiskFull;
                    last_failure = e.to_string();
                    round.answer(vnode, WriteAnswer::Failed)
                }
            };
            match progress {
                WriteProgress::Pending => {}
                WriteProgress::Acknowledged => return Ok(Written::Acknowledged(stored)),
                WriteProgress::Restamp { above } => return Ok(Written::Restamp(above)),
                WriteProgress::Failed => break,
            }
        }
        Err(ShardError::QuorumFailed {
            partition,
            stored: round.stored().len(),
            needed,
            disk_full: only_full_disks_failed && !last_failure.is_empty(),
            last: last_failure,
        })
    }

    /// Serves `request` (an object commit or delete) on the serializing replica of `partition`:
    /// the first of `candidates` known up, or the next one up when a replica cannot be
    /// reached or has no room for it. The replica that served it and its answer.
    async fn on_serializer(
        &self,
        partition: PartitionId,
        candidates: &[Vnode],
        request: StorageRequest,
    ) -> Result<(Vnode, StorageResponse), ShardError> {
        let up: Vec<Vnode> = candidates
            .iter()
            .copied()
            .filter(|v| self.is_up(*v))
            .collect();
        let mut last = None;
        for vnode in up {
            match self.send_to_vnode(vnode, request.clone()).await {
                Ok(answer) => return Ok((vnode, answer)),
                // The replica could not be reached (or went away mid-call): the request is
                // served by the next one, with the same timestamp, so it applies once.
                // A replica whose disk is full stored nothing either: the next one with room
                // serves it (the full one gets a hint of the copy like any replica that missed
                // it); only when every candidate is full is the write refused (507).
                Err(e) if matches!(e, ShardError::Wire(_)) || e.class() == ErrorClass::DiskFull => {
                    tracing::debug!(error = %e, node = vnode.node, partition, "the serializing replica failed; trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ShardError::TooFewReplicas {
            partition,
            up: 0,
            needed: 1,
        }))
    }

    /// Runs an object commit or delete stamped by this core on the partition's serializing
    /// replica (which stamps it above a newer version it holds), then stores what it wrote
    /// (`copy_at(hlc)`: the same record at the same HLC) on the other replicas, W (D) stores
    /// in all. A replica newer than the serializer knew (one that was behind) makes the whole
    /// write go again above it: `request_at(stamp, superseded)` names the stamp the previous
    /// try wrote (a version record keyed by it is then retracted). The serializer's answer.
    ///
    /// A write with a precondition (`condition_on`: what it is decided on)
    /// is decided by the partition's first replica in the ring and no other, so that every
    /// gateway sends concurrent creators to the same one (while it is down such writes fail
    /// with 503); before it decides, it is brought up to the newest version any replica up
    /// holds, and a replica found newer afterwards fails the write rather than redoing it.
    pub(crate) async fn serialize_then_copy(
        &self,
        partition: PartitionId,
        needed: usize,
        condition_on: Option<DecidedOn<'_>>,
        request_at: impl Fn(Hlc, Option<Hlc>) -> StorageRequest,
        copy_at: impl Fn(Hlc) -> StorageRequest,
    ) -> Result<StorageResponse, ShardError> {
        let epoch = self.ring().epoch();
        match self
            .serialize_then_copy_once(partition, needed, condition_on, &request_at, &copy_at)
            .await
        {
            // Replicas refused the copies because a newer ring moves the partition (taken
            // meanwhile): an unconditional write goes once more by that ring. A conditional
            // one may have been decided already, and fails rather than decide twice.
            Err(e) if condition_on.is_none() && self.ring().epoch() != epoch => {
                tracing::debug!(error = %e, partition, "a write failed while the ring changed; writing again by the new ring");
                self.serialize_then_copy_once(partition, needed, None, &request_at, &copy_at)
                    .await
            }
            answer => answer,
        }
    }

    /// One try of [`Shard::serialize_then_copy`] by the ring routed by now.
    async fn serialize_then_copy_once(
        &self,
        partition: PartitionId,
        needed: usize,
        condition_on: Option<DecidedOn<'_>>,
        request_at: &impl Fn(Hlc, Option<Hlc>) -> StorageRequest,
        copy_at: &impl Fn(Hlc) -> StorageRequest,
    ) -> Result<StorageResponse, ShardError> {
        self.check_clock()?;
        let sets = self.write_sets(partition)?;
        let replicas = sets[0].clone();
        for set in &sets {
            let up = set.iter().filter(|v| self.is_up(**v)).count();
            if up < needed {
                // Fail fast: nothing is written.
                return Err(ShardError::TooFewReplicas {
                    partition,
                    up,
                    needed,
                });
            }
        }
        let serializers = match condition_on {
            Some(DecidedOn::Record(key)) => {
                let first = replicas[..1].to_vec();
                self.catch_up(partition, key, first[0]).await?;
                first
            }
            Some(DecidedOn::LatestVersion { bucket, key }) => {
                let first = replicas[..1].to_vec();
                self.catch_up_versions(partition, bucket, key, first[0])
                    .await?;
                first
            }
            Some(DecidedOn::Attributes { record, attributes }) => {
                let first = replicas[..1].to_vec();
                let (record, attributes) = futures_util::future::join(
                    self.catch_up(partition, record, first[0]),
                    self.catch_up(partition, attributes, first[0]),
                )
                .await;
                record?;
                attributes?;
                first
            }
            None => replicas.clone(),
        };
        let mut stamp = self.now();
        let mut superseded = None;
        for _ in 0..=RESTAMPS_MAX {
            let (serializer, answer) = self
                .on_serializer(partition, &serializers, request_at(stamp, superseded))
                .await?;
            let written = answered_hlc(&answer).unwrap_or(stamp);
            self.observe(written);
            // Each set needs its quorum less the serializer's store, where it is one of it.
            let others: Vec<(Vec<Vnode>, usize)> = sets
                .iter()
                .map(|set| {
                    let rest: Vec<Vnode> =
                        set.iter().copied().filter(|v| *v != serializer).collect();
                    let counted = usize::from(set.contains(&serializer));
                    (rest, needed - counted)
                })
                .collect();
            let copy = copy_at(written);
            if others.iter().all(|(_, n)| *n == 0) {
                // No other store is needed: the copies go in the background.
                let mut sent: Vec<Vnode> = Vec::new();
                for vnode in others.iter().flat_map(|(set, _)| set.iter().copied()) {
                    if sent.contains(&vnode) {
                        continue;
                    }
                    sent.push(vnode);
                    if self.is_up(vnode) {
                        drop(self.store_or_hint(vnode, copy.clone()));
                    } else {
                        self.hint(vnode, &copy);
                    }
                }
                return Ok(answer);
            }
            let quorums: Vec<(&[Vnode], usize)> =
                others.iter().map(|(set, n)| (set.as_slice(), *n)).collect();
            match self
                .write_round(partition, &quorums, written, |_| copy.clone())
                .await?
            {
                Written::Acknowledged(_) => return Ok(answer),
                Written::Restamp(above) if condition_on.is_none() => {
                    stamp = self.stamp_above(above);
                    superseded = Some(written);
                }
                Written::Restamp(above) => {
                    return Err(ShardError::QuorumFailed {
                        partition,
                        stored: 1,
                        needed,
                        last: format!(
                            "a replica holds a newer version ({above:?}) than the serializing replica decided the precondition on"
                        ),
                        disk_full: false,
                    });
                }
            }
        }
        Err(restamped_too_often(partition, needed))
    }

    /// Brings `serializer`'s copy of `key` up to the newest version any replica up holds
    /// (waiting for it to be stored), so that a precondition it decides next is decided on
    /// the newest state: a replica that was down holds an older one until its hints arrive.
    async fn catch_up(
        &self,
        partition: PartitionId,
        key: &Bytes,
        serializer: Vnode,
    ) -> Result<(), ShardError> {
        if !self.is_up(serializer) {
            return Err(ShardError::TooFewReplicas {
                partition,
                up: 0,
                needed: 1,
            });
        }
        let lookup = StorageRequest::Lookup {
            partition,
            key: key.clone(),
        };
        let up = self.replicas_up(partition)?;
        let answers = futures_util::future::join_all(
            up.iter()
                .map(|vnode| self.send_to_vnode(*vnode, lookup.clone())),
        )
        .await;
        let mut held = None;
        let mut newest: Option<(Vnode, Hlc)> = None;
        for (vnode, answer) in up.iter().zip(answers) {
            let Some(found) = answer?.into_lookup()? else {
                continue;
            };
            if *vnode == serializer {
                held = Some(found.hlc);
            }
            if newest.is_none_or(|(_, hlc)| found.hlc > hlc) {
                newest = Some((*vnode, found.hlc));
            }
        }
        let Some((holder, newest)) = newest else {
            return Ok(());
        };
        if held >= Some(newest) {
            return Ok(());
        }
        // Changed since the lookup (gone altogether): the serializer decides on what it has.
        let Some(repair) = self
            .repair_from(partition, key, holder, Traffic::Foreground)
            .await?
        else {
            return Ok(());
        };
        tracing::info!(
            partition,
            node = serializer.node,
            "the serializing replica is behind; bringing it up to date before it decides a precondition"
        );
        self.send_to_vnode(serializer, repair).await?;
        Ok(())
    }

    /// [`Shard::catch_up`] for a versioned key: brings `serializer` up to what every replica up
    /// holds of the key's newest versions (the records, or deletions, it lacks or holds older),
    /// so that the precondition it decides next is decided on the key's latest version.
    async fn catch_up_versions(
        &self,
        partition: PartitionId,
        bucket: &str,
        key: &str,
        serializer: Vnode,
    ) -> Result<(), ShardError> {
        if !self.is_up(serializer) {
            return Err(ShardError::TooFewReplicas {
                partition,
                up: 0,
                needed: 1,
            });
        }
        let request = StorageRequest::LatestVersion {
            partition,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        };
        let up = self.replicas_up(partition)?;
        let answers = futures_util::future::join_all(
            up.iter()
                .map(|vnode| self.send_to_vnode(*vnode, request.clone())),
        )
        .await;
        let mut held: HashMap<Bytes, Hlc> = HashMap::new();
        let mut newest: HashMap<Bytes, (Vnode, Hlc)> = HashMap::new();
        for (vnode, answer) in up.iter().zip(answers) {
            for entry in answer?.into_entries()? {
                if *vnode == serializer {
                    held.insert(entry.key.clone(), entry.hlc);
                }
                if newest
                    .get(&entry.key)
                    .is_none_or(|(_, hlc)| entry.hlc > *hlc)
                {
                    newest.insert(entry.key, (*vnode, entry.hlc));
                }
            }
        }
        for (record, (holder, hlc)) in newest {
            if held.get(&record).is_some_and(|h| *h >= hlc) {
                continue;
            }
            tracing::info!(
                partition,
                node = serializer.node,
                "the serializing replica is behind on a versioned key; bringing it up to date before it decides a precondition"
            );
            if let Some(repair) = self
                .repair_from(partition, &record, holder, Traffic::Foreground)
                .await?
            {
                self.send_to_vnode(serializer, repair).await?;
            }
        }
        Ok(())
    }

    /// A read round: the body from the first replica up, digests from `r − 1` others; the
    /// newest version's answer (a miss answered as `read.body`'s kind of miss). With fewer
    /// than `r` replicas up the read goes on with those that are (degraded: it may miss a
    /// write acknowledged by the replicas that are down). Stale replicas, and those whose copy
    /// failed its checksum, get the newest version in the background when the body read is a
    /// whole record.
    pub(crate) async fn read_newest(&self, read: ReadOf) -> Result<StorageResponse, ShardError> {
        let mut tries = 0;
        loop {
            let epoch = self.ring().epoch();
            tries += 1;
            match self.read_round(&read).await {
                // Replicas failed during the round (they are known down now): once more, over
                // the replicas up.
                Err(ShardError::Wire(e)) if tries == 1 => {
                    tracing::debug!(error = %e, partition = read.partition, "replicas failed during a read; reading again without them");
                }
                // Replicas no longer held the partition (a rebalance moved it, and this core
                // took the new ring meanwhile): again, by the new ring.
                Err(e) if self.ring().epoch() != epoch && tries < RING_CHANGE_TRIES_MAX => {
                    tracing::debug!(error = %e, partition = read.partition, "the ring changed during a read; reading again by the new ring");
                }
                answer => return answer,
            }
        }
    }

    /// One try of [`Shard::read_newest`].
    async fn read_round(&self, read: &ReadOf) -> Result<StorageResponse, ShardError> {
        let ReadOf {
            partition,
            ref key,
            ref body,
            r,
        } = *read;
        let (replicas, r) = self.read_targets(partition, r)?;
        let (mut round, asks) =
            ReadRound::<Vnode, StorageResponse>::start(&replicas, |v| self.is_up(*v), r)
                .map_err(|e| too_few(partition, e))?;
        // When each replica was last asked something: a replica is stalled once an ask of it
        // has waited READ_HEDGE_AFTER and it answered no call from this core since.
        let sent: RefCell<Vec<(Vnode, Instant)>> = RefCell::new(Vec::new());
        let ask = |vnode: Vnode, what: ReadAsk| {
            sent.borrow_mut().push((vnode, Instant::now()));
            let request = match what {
                ReadAsk::Body => body.clone(),
                ReadAsk::Digest => StorageRequest::Lookup {
                    partition,
                    key: key.clone(),
                },
            };
            let shard = self.clone();
            async move { (vnode, shard.send_to_vnode(vnode, request).await) }
        };
        let mut calls: FuturesUnordered<_> = asks
            .into_iter()
            .map(|(vnode, what)| ask(vnode, what))
            .collect();
        let mut last_failure = None;
        let mut corrupt = Vec::new();
        let mut progress = ReadProgress::Pending;
        let mut hedge = std::pin::pin!(monoio::time::sleep(READ_HEDGE_AFTER));
        loop {
            let next = match futures_util::future::select(calls.next(), hedge.as_mut()).await {
                Either::Left((next, _)) => next,
                Either::Right(_) => {
                    let stalled: Vec<Vnode> = round
                        .waiting_on()
                        .into_iter()
                        .filter(|v| {
                            let asked_at = sent
                                .borrow()
                                .iter()
                                .rev()
                                .find(|(n, _)| n == v)
                                .map(|(_, at)| *at);
                            asked_at.is_some_and(|at| {
                                at.elapsed() + HEDGE_TIMER_SLACK >= READ_HEDGE_AFTER
                                    && !self.answered_since(*v, at)
                            })
                        })
                        .collect();
                    for vnode in &stalled {
                        self.core.remote.suspect(vnode.node, vnode.shard);
                    }
                    if let ReadProgress::Ask(more) = round.hedge(|v| stalled.contains(v)) {
                        tracing::debug!(partition, asks = ?more, "replicas answer nothing; asking others as well");
                        calls.extend(more.into_iter().map(|(vnode, what)| ask(vnode, what)));
                    }
                    hedge
                        .as_mut()
                        .reset(monoio::time::Instant::now() + READ_HEDGE_AFTER);
                    continue;
                }
            };
            let Some((vnode, answer)) = next else {
                break;
            };
            let answer = match answer.and_then(read_answer) {
                Ok(answer) => answer,
                Err(e) => {
                    if e.class() == ErrorClass::Corrupt {
                        tracing::warn!(error = %e, node = vnode.node, partition, "a replica's copy is corrupt; reading another and repairing it");
                        corrupt.push(vnode);
                    } else {
                        tracing::debug!(error = %e, node = vnode.node, partition, "a replica did not answer a read");
                    }
                    last_failure = Some(e);
                    ReadAnswer::Failed
                }
            };
            progress = round.answer(vnode, answer);
            match progress {
                ReadProgress::Pending => {}
                ReadProgress::Ask(more) => {
                    calls.extend(more.into_iter().map(|(vnode, what)| ask(vnode, what)));
                    progress = ReadProgress::Pending;
                }
                ReadProgress::Done { .. } | ReadProgress::Failed => break,
            }
        }
        if matches!(progress, ReadProgress::Pending) {
            progress = round.timed_out();
        }
        match progress {
            ReadProgress::Done { version, mut stale } => {
                stale.extend(corrupt);
                self.repair(partition, key, version.as_ref(), stale);
                Ok(match version {
                    Some(Version {
                        value: Some(found), ..
                    }) => found,
                    _ => miss_of(body),
                })
            }
            _ => Err(last_failure.unwrap_or(ShardError::QuorumFailed {
                partition,
                stored: 0,
                needed: r,
                last: "no replica answered".into(),
                disk_full: false,
            })),
        }
    }

    /// Gives `stale` replicas the newest `version` in the background (read repair): a
    /// tombstone, or a whole record read with its body; a part of a record (a range, a head)
    /// repairs nothing.
    fn repair(
        &self,
        partition: PartitionId,
        key: &Bytes,
        version: Option<&Version<StorageResponse>>,
        stale: Vec<Vnode>,
    ) {
        let Some(version) = version else {
            return;
        };
        let request = match &version.value {
            None => repair_request(partition, key, &StorageResponse::Gone(version.hlc)),
            Some(answer) => repair_request(partition, key, answer),
        };
        let Some(request) = request else {
            return;
        };
        for vnode in stale {
            let shard = self.clone();
            let request = request.clone();
            monoio::spawn(async move {
                if let Err(e) = shard.send_to_vnode(vnode, request).await {
                    tracing::debug!(error = %e, node = vnode.node, partition, "read repair failed; anti-entropy will");
                }
            });
        }
    }

    /// Reads `key` from `holder` and returns the request that gives another replica that
    /// version as stamped ([`repair_request`]); None when `holder` no longer has it at all.
    /// The read is sent as `traffic`.
    pub(crate) async fn repair_from(
        &self,
        partition: PartitionId,
        key: &Bytes,
        holder: Vnode,
        traffic: Traffic,
    ) -> Result<Option<StorageRequest>, ShardError> {
        let read = StorageRequest::Get {
            partition,
            key: key.clone(),
        };
        let answer = self.send_to_vnode_as(holder, read, traffic).await?;
        Ok(repair_request(partition, key, &answer))
    }

    /// The newest index entry of `key` among `r` replicas (tombstones included), or among
    /// those up when fewer are (degraded, as [`Shard::read_newest`]).
    pub(crate) async fn lookup_newest(
        &self,
        partition: PartitionId,
        key: Bytes,
    ) -> Result<Option<Lookup>, ShardError> {
        let mut newest: Option<Lookup> = None;
        let request = StorageRequest::Lookup { partition, key };
        for answer in self.answers_of_r(partition, request).await? {
            if let Some(found) = answer.into_lookup()?
                && newest.is_none_or(|n| found.hlc > n.hlc)
            {
                newest = Some(found);
            }
        }
        Ok(newest)
    }

    /// The answers of `r` replicas to `request` (naming `partition`), or of every replica up
    /// when fewer are (degraded, as [`Shard::read_newest`]) or while the partition moves.
    pub(crate) async fn answers_of_r(
        &self,
        partition: PartitionId,
        request: StorageRequest,
    ) -> Result<Vec<StorageResponse>, ShardError> {
        let (targets, r) = self.read_targets(partition, self.levels().r)?;
        let up: Vec<Vnode> = targets.into_iter().filter(|v| self.is_up(*v)).collect();
        // While the partition moves, the first answers might all come from one ring: every
        // replica up is heard instead.
        let moving = self.ring().next_route(partition).is_some();
        let r = if moving { up.len().max(1) } else { r };
        let mut calls: FuturesUnordered<_> = up
            .iter()
            .map(|vnode| self.send_to_vnode(*vnode, request.clone()))
            .collect();
        let (mut answers, mut last) = (Vec::with_capacity(r), None);
        while let Some(answer) = calls.next().await {
            match answer {
                Ok(answer) => {
                    answers.push(answer);
                    if answers.len() >= r {
                        return Ok(answers);
                    }
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ShardError::TooFewReplicas {
            partition,
            up: answers.len(),
            needed: r,
        }))
    }

    /// Asks `request` (naming `partition`) of every replica of the partition; all must answer.
    pub(crate) async fn ask_every_replica(
        &self,
        partition: PartitionId,
        request: StorageRequest,
    ) -> Result<Vec<StorageResponse>, ShardError> {
        let replicas = self.replicas_of(partition)?;
        let calls = replicas
            .into_iter()
            .map(|vnode| self.send_to_vnode(vnode, request.clone()));
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .collect()
    }

    /// The replicas of `partition` known up (for requests every live copy must get, such as
    /// the collection of a chunk).
    pub(crate) fn replicas_up(&self, partition: PartitionId) -> Result<Vec<Vnode>, ShardError> {
        Ok(self
            .replicas_of(partition)?
            .into_iter()
            .filter(|v| self.is_up(*v))
            .collect())
    }
}

/// What a conditional write is decided on, which its deciding replica is brought up to date
/// with first.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DecidedOn<'a> {
    /// One record (an unversioned object's record).
    Record(&'a Bytes),
    /// A versioned key's latest version.
    LatestVersion {
        /// The bucket's storage name.
        bucket: &'a str,
        /// The object key.
        key: &'a str,
    },
    /// A version's record and its attribute record.
    Attributes {
        /// The version's record.
        record: &'a Bytes,
        /// Its attribute record.
        attributes: &'a Bytes,
    },
}

/// Longest a client's write or delete may travel, from its stamp to a replica, and still be
/// stored: a coordinator's call gives up after the peer request timeout (10 s), and a copy
/// from the serializing replica follows the serializer's own call; with the clock bound and a
/// margin, 30 s. A replica refuses an older one ([`ShardError::WriteTooOld`]).
pub(crate) const CLIENT_WRITE_AGE_MAX: std::time::Duration = std::time::Duration::from_secs(30);

const _: () = assert!(
    CLIENT_WRITE_AGE_MAX.as_secs() * 2 <= crate::antientropy::WATERMARK_LAG.as_secs(),
    "a repaired-at watermark lies well behind the oldest client write still stored"
);

/// Most times one write is stamped again above a newer version a replica holds (each time
/// above the newest seen, so more means replicas keep taking newer writes of the key).
const RESTAMPS_MAX: usize = 3;

/// How a write round ended, short of failing.
enum Written {
    /// W (D) replicas stored it: their answers.
    Acknowledged(Vec<StorageResponse>),
    /// A replica holds a newer version: the write goes again, stamped above this.
    Restamp(Hlc),
}

/// The request that gives a replica the version of `key` a read `answer`ed, as stamped (a
/// repair, never a client's fresh write): a whole record is put at its HLC, a deletion is a
/// tombstone at its HLC; a miss or a part of a record (a range, a head) repairs nothing.
pub(crate) fn repair_request(
    partition: PartitionId,
    key: &Bytes,
    answer: &StorageResponse,
) -> Option<StorageRequest> {
    match answer {
        StorageResponse::Value(Some(value)) if value.body.len() as u64 == value.body_len => {
            Some(StorageRequest::Put {
                partition,
                key: key.clone(),
                value: PutValue {
                    meta: value.meta.clone(),
                    body: value.body.clone(),
                    summary: value.summary,
                    hlc: Some(value.hlc),
                },
                fresh: false,
            })
        }
        StorageResponse::Gone(hlc) => Some(StorageRequest::Delete {
            partition,
            key: key.clone(),
            hlc: Some(*hlc),
            fresh: false,
        }),
        _ => None,
    }
}

/// The timestamp a replica's answer to a stamped write names: the version it stored, or the
/// newer one it holds (see [`crate::request`]'s `stamped_write`).
fn answered_hlc(response: &StorageResponse) -> Option<Hlc> {
    match response {
        StorageResponse::Stored(hlc) => Some(*hlc),
        StorageResponse::Deleted(hlc) | StorageResponse::Removed { hlc, .. } => *hlc,
        _ => None,
    }
}

/// The error of a write that found a newer version at every try.
fn restamped_too_often(partition: PartitionId, needed: usize) -> ShardError {
    ShardError::QuorumFailed {
        partition,
        stored: 0,
        needed,
        last: format!(
            "replicas held a newer version {} times in a row",
            RESTAMPS_MAX + 1
        ),
        disk_full: false,
    }
}

/// [`TooFewUp`] as the error a client sees.
fn too_few(partition: PartitionId, e: TooFewUp) -> ShardError {
    ShardError::TooFewReplicas {
        partition,
        up: e.up,
        needed: e.needed,
    }
}

/// A replica's answer to a read, for the read round: a record's version (a tombstone when the
/// record was deleted), or only its timestamp (a digest).
fn read_answer(response: StorageResponse) -> Result<ReadAnswer<StorageResponse>, ShardError> {
    Ok(match response {
        StorageResponse::Value(Some(ref value)) => ReadAnswer::Body(Some(Version {
            hlc: value.hlc,
            value: Some(response),
        })),
        StorageResponse::Head(Some(ref head)) => ReadAnswer::Body(Some(Version {
            hlc: head.hlc,
            value: Some(response),
        })),
        StorageResponse::Gone(hlc) => ReadAnswer::Body(Some(Version { hlc, value: None })),
        StorageResponse::Value(None) | StorageResponse::Head(None) => ReadAnswer::Body(None),
        StorageResponse::Lookup(found) => ReadAnswer::Digest(found.map(|f| f.hlc)),
        other => {
            return Err(ShardError::UnexpectedResponse {
                expected: "a read's answer",
                got: other.kind(),
            });
        }
    })
}

/// The answer to `body` (a Get, GetRange or Head) when the record is absent or deleted.
fn miss_of(body: &StorageRequest) -> StorageResponse {
    match body {
        StorageRequest::Head { .. } => StorageResponse::Head(None),
        _ => StorageResponse::Value(None),
    }
}
