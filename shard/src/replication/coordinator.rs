//! The coordinator's rounds (DESIGN §7): the gateway core that took a request sends it to the
//! replicas and decides from their answers. Both rounds are plain state machines: the caller
//! sends what they ask, feeds them the answers (or the deadline), and does what they conclude.
//!
//! - [`WriteRound`]: a write or delete stamped once, sent to every replica known up;
//!   acknowledged after `needed` (W or D) replicas stored it durably; failed at once when fewer
//!   than `needed` are up; restamped above a newer version a replica holds (so a later client
//!   write never loses to an earlier one stamped by a faster clock); the replicas that did not
//!   store it get hints.
//! - [`ReadRound`]: the body from one replica and HLC digests from `r - 1` others; a newer
//!   digest fetches the newer body; a miss is checked against every replica up before it is a
//!   404; replicas found stale are repaired; an ask of a replica that has stalled is asked of
//!   another as well ([`ReadRound::hedge`]).

use leofs_engine::Hlc;

use super::Version;

/// Fewer replicas are up than the round needs: it fails at once and sends nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{up} of the replicas are up, {needed} are needed")]
pub struct TooFewUp {
    /// Replicas known up.
    pub up: usize,
    /// Replicas the round needs.
    pub needed: usize,
}

/// The replicas among `replicas` that are `up`, in order, or [`TooFewUp`] when fewer than
/// `needed` (a quorum within the replicas).
fn up_among<N: Copy>(
    replicas: &[N],
    up: impl Fn(&N) -> bool,
    needed: usize,
) -> Result<Vec<N>, TooFewUp> {
    assert!(
        needed >= 1 && needed <= replicas.len(),
        "a quorum within the replicas"
    );
    let up: Vec<N> = replicas.iter().copied().filter(|r| up(r)).collect();
    if up.len() < needed {
        return Err(TooFewUp {
            up: up.len(),
            needed,
        });
    }
    Ok(up)
}

/// A replica's answer to a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteAnswer {
    /// Stored durably (or held already).
    Stored,
    /// It holds a newer version (or a newer repaired-at watermark) for the key.
    Newer(Hlc),
    /// Refused or failed (its clock bound, its disk, a timeout).
    Failed,
}

/// Where a write round stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteProgress {
    /// Waiting for more answers.
    Pending,
    /// Enough replicas stored it: acknowledge the client (late replicas may still answer).
    Acknowledged,
    /// A replica holds a newer version: stamp the write above this HLC and start again.
    Restamp {
        /// The newest HLC a replica answered.
        above: Hlc,
    },
    /// It cannot reach its quorum: the client gets an error (the write is indeterminate where
    /// some replicas stored it; repair makes them converge).
    Failed,
}

/// One write (or delete) round over a partition's replicas: during a rebalance, over the
/// replicas of both rings, with its quorum in each.
#[derive(Clone, Debug)]
pub struct WriteRound<N> {
    replicas: Vec<N>,
    /// Each replica set with the stores it needs (one set, or the old and the new one).
    groups: Vec<(Vec<N>, usize)>,
    sent: Vec<N>,
    stored: Vec<N>,
    failed: Vec<N>,
    newest_held: Option<Hlc>,
    progress: WriteProgress,
}

impl<N: Copy + PartialEq> WriteRound<N> {
    /// Starts a round over `replicas` needing `needed` stores: the round and the replicas to
    /// send the write to (those `up`), or [`TooFewUp`] when fewer than `needed` are up.
    pub fn start(
        replicas: &[N],
        up: impl Fn(&N) -> bool,
        needed: usize,
    ) -> Result<(Self, Vec<N>), TooFewUp> {
        Self::start_in_sets(&[(replicas, needed)], up)
    }

    /// Starts a round that needs, in each of `sets`, that many of its replicas to store the
    /// write (DESIGN §4: during a rebalance, W in the old replica set and W in the new): the
    /// round and the replicas to send it to (every replica of any set that is `up`, once),
    /// or [`TooFewUp`] when some set has fewer up than it needs. A set that needs none is
    /// met at once.
    pub fn start_in_sets(
        sets: &[(&[N], usize)],
        up: impl Fn(&N) -> bool,
    ) -> Result<(Self, Vec<N>), TooFewUp> {
        let mut replicas: Vec<N> = Vec::new();
        let mut sent: Vec<N> = Vec::new();
        for (set, needed) in sets {
            let up_here = if *needed == 0 {
                set.iter().copied().filter(|r| up(r)).collect()
            } else {
                up_among(set, &up, *needed)?
            };
            for replica in set.iter() {
                if !replicas.contains(replica) {
                    replicas.push(*replica);
                }
            }
            for replica in up_here {
                if !sent.contains(&replica) {
                    sent.push(replica);
                }
            }
        }
        let round = Self {
            replicas,
            groups: sets.iter().map(|(set, n)| (set.to_vec(), *n)).collect(),
            sent: sent.clone(),
            stored: Vec::new(),
            failed: Vec::new(),
            newest_held: None,
            progress: WriteProgress::Pending,
        };
        Ok((round, sent))
    }

    /// Takes `from`'s answer (a repeated or unexpected one is ignored).
    pub fn answer(&mut self, from: N, answer: WriteAnswer) -> WriteProgress {
        if !self.sent.contains(&from) || self.stored.contains(&from) || self.failed.contains(&from)
        {
            return self.progress;
        }
        match answer {
            WriteAnswer::Stored => self.stored.push(from),
            WriteAnswer::Newer(held) => {
                self.failed.push(from);
                self.newest_held = self.newest_held.max(Some(held));
            }
            WriteAnswer::Failed => self.failed.push(from),
        }
        self.decide()
    }

    /// The deadline passed: replicas that have not answered count as failed.
    pub fn timed_out(&mut self) -> WriteProgress {
        let waiting: Vec<N> = self
            .sent
            .iter()
            .copied()
            .filter(|r| !self.stored.contains(r) && !self.failed.contains(r))
            .collect();
        self.failed.extend(waiting);
        self.decide()
    }

    fn decide(&mut self) -> WriteProgress {
        if self.progress != WriteProgress::Pending {
            // Decided: later answers only change who needs a hint.
            return self.progress;
        }
        let answered = self.stored.len() + self.failed.len();
        let count = |set: &[N], of: &[N]| set.iter().filter(|r| of.contains(r)).count();
        let met = self
            .groups
            .iter()
            .all(|(set, needed)| count(set, &self.stored) >= *needed);
        let hopeless = self
            .groups
            .iter()
            .any(|(set, needed)| count(set, &self.sent) - count(set, &self.failed) < *needed);
        self.progress = if met {
            WriteProgress::Acknowledged
        } else if let Some(above) = self.newest_held {
            WriteProgress::Restamp { above }
        } else if hopeless || answered == self.sent.len() {
            WriteProgress::Failed
        } else {
            WriteProgress::Pending
        };
        self.progress
    }

    /// Replicas that stored the write so far.
    pub fn stored(&self) -> &[N] {
        &self.stored
    }

    /// Replicas that have not stored the write (down when it started, failed, or not answered
    /// yet): once the round is over, each gets a hint.
    pub fn missing(&self) -> Vec<N> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.stored.contains(r))
            .collect()
    }
}

/// A write's precondition, decided by the partition's serializing replica (the first in the
/// ring, one per ring epoch) on the newest version a read round found, while it holds the
/// key: of concurrent conditional writers exactly one can win, and a loser is refused before
/// any replica stores a byte of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `If-None-Match: *`: no object (nothing, or a tombstone).
    Absent,
    /// `If-Match`: the current object is the version stamped so.
    Current(Hlc),
}

impl Condition {
    /// Whether the condition holds on `newest`.
    pub fn holds<V>(&self, newest: Option<&Version<V>>) -> bool {
        match self {
            Self::Absent => newest.is_none_or(Version::is_tombstone),
            Self::Current(hlc) => newest.is_some_and(|v| !v.is_tombstone() && v.hlc == *hlc),
        }
    }
}

/// What a read asks one replica for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAsk {
    /// The version with its value.
    Body,
    /// Only the HLC of the version it holds.
    Digest,
}

/// A replica's answer to a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadAnswer<V> {
    /// What it holds (None: nothing).
    Body(Option<Version<V>>),
    /// The HLC of what it holds (None: nothing).
    Digest(Option<Hlc>),
    /// It failed or timed out.
    Failed,
}

/// Where a read round stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadProgress<N, V> {
    /// Waiting for the answers asked for.
    Pending,
    /// Ask these replicas as well.
    Ask(Vec<(N, ReadAsk)>),
    /// The newest version among the replicas read (None: there is none, or it is deleted
    /// when `Some` is a tombstone); `stale` hold an older one and are to be repaired with it.
    Done {
        /// The answer.
        version: Option<Version<V>>,
        /// Replicas to repair (read repair, in the background).
        stale: Vec<N>,
    },
    /// Fewer than `r` replicas answered.
    Failed,
}

/// One read round over a partition's replicas.
#[derive(Clone, Debug)]
pub struct ReadRound<N, V> {
    /// Replicas up, in the order they are preferred (the local one first).
    up: Vec<N>,
    r: usize,
    asked: Vec<(N, ReadAsk)>,
    /// Asks already sent to another replica as well ([`ReadRound::hedge`]): once each.
    hedged: Vec<(N, ReadAsk)>,
    /// Every answer so far: who, and the HLC it holds.
    held: Vec<(N, Option<Hlc>)>,
    /// Replicas that answered a body ask (a digest answer does not answer the body asked of
    /// the same replica afterwards).
    bodies: Vec<N>,
    failed: Vec<N>,
    body: Option<(N, Option<Version<V>>)>,
    /// The newest HLC a replica named and then failed to read out (a copy that fails its
    /// checksum): the read may not settle for anything older.
    unreadable: Option<Hlc>,
    done: bool,
}

impl<N: Copy + PartialEq, V: Clone> ReadRound<N, V> {
    /// Starts a read of `r` replicas among `replicas` (in preference order): the round and
    /// what to ask whom, or [`TooFewUp`].
    pub fn start(
        replicas: &[N],
        up: impl Fn(&N) -> bool,
        r: usize,
    ) -> Result<(Self, Vec<(N, ReadAsk)>), TooFewUp> {
        let up = up_among(replicas, up, r)?;
        let asks: Vec<(N, ReadAsk)> = up
            .iter()
            .take(r)
            .enumerate()
            .map(|(i, n)| {
                (
                    *n,
                    if i == 0 {
                        ReadAsk::Body
                    } else {
                        ReadAsk::Digest
                    },
                )
            })
            .collect();
        let round = Self {
            up,
            r,
            asked: asks.clone(),
            hedged: Vec::new(),
            held: Vec::new(),
            bodies: Vec::new(),
            failed: Vec::new(),
            body: None,
            unreadable: None,
            done: false,
        };
        Ok((round, asks))
    }

    /// Takes `from`'s answer.
    pub fn answer(&mut self, from: N, answer: ReadAnswer<V>) -> ReadProgress<N, V> {
        if self.done || !self.asked.iter().any(|(n, _)| *n == from) {
            return ReadProgress::Pending;
        }
        match answer {
            ReadAnswer::Body(version) => {
                let hlc = version.as_ref().map(|v| v.hlc);
                self.note(from, hlc);
                if !self.bodies.contains(&from) {
                    self.bodies.push(from);
                }
                let newer = match &self.body {
                    Some((_, Some(best))) => version.as_ref().is_some_and(|v| v.hlc > best.hlc),
                    _ => true,
                };
                if newer {
                    self.body = Some((from, version));
                }
            }
            ReadAnswer::Digest(hlc) => self.note(from, hlc),
            ReadAnswer::Failed => {
                // What it named before (a digest) cannot be read from it: it no longer counts
                // as an answer, and another replica is asked.
                if let Some(at) = self.held.iter().position(|(n, _)| *n == from) {
                    let (_, named) = self.held.remove(at);
                    self.unreadable = self.unreadable.max(named);
                }
                if !self.failed.contains(&from) {
                    self.failed.push(from);
                }
            }
        }
        self.decide()
    }

    /// The deadline passed: replicas that have not answered count as failed.
    pub fn timed_out(&mut self) -> ReadProgress<N, V> {
        let waiting = self.waiting_on();
        self.failed.extend(waiting);
        let progress = self.decide();
        match progress {
            ReadProgress::Pending => {
                self.done = true;
                ReadProgress::Failed
            }
            other => other,
        }
    }

    /// The replicas with an ask not answered yet, each once.
    pub fn waiting_on(&self) -> Vec<N> {
        let mut waiting: Vec<N> = Vec::new();
        for (n, ask) in &self.asked {
            if !self.answered(n, *ask) && !waiting.contains(n) {
                waiting.push(*n);
            }
        }
        waiting
    }

    /// Answers are slow: for each ask still unanswered of a replica that `stalled` names (one
    /// that answers nothing else either: a hung core, a stopped node), and not hedged before,
    /// the same ask of a replica not asked yet, while there is one. The stalled asks stay open
    /// and whichever answer comes counts, so the round needs no more answers than before,
    /// only more asks.
    pub fn hedge(&mut self, stalled: impl Fn(&N) -> bool) -> ReadProgress<N, V> {
        if self.done {
            return ReadProgress::Pending;
        }
        let slow: Vec<(N, ReadAsk)> = self
            .asked
            .iter()
            .copied()
            .filter(|(n, ask)| {
                !self.answered(n, *ask) && !self.hedged.contains(&(*n, *ask)) && stalled(n)
            })
            .collect();
        let spare: Vec<N> = self.unasked().collect();
        let pairs: Vec<((N, ReadAsk), N)> = slow.into_iter().zip(spare).collect();
        self.hedged.extend(pairs.iter().map(|(slow, _)| *slow));
        let asks: Vec<(N, ReadAsk)> = pairs
            .into_iter()
            .map(|((_, ask), spare)| (spare, ask))
            .collect();
        if asks.is_empty() {
            ReadProgress::Pending
        } else {
            self.ask(asks)
        }
    }

    fn note(&mut self, from: N, hlc: Option<Hlc>) {
        if let Some(entry) = self.held.iter_mut().find(|(n, _)| *n == from) {
            entry.1 = entry.1.max(hlc);
        } else {
            self.held.push((from, hlc));
        }
    }

    /// Whether `ask` of `n` is answered: `n` failed, or gave that kind of answer.
    fn answered(&self, n: &N, ask: ReadAsk) -> bool {
        self.failed.contains(n)
            || match ask {
                ReadAsk::Digest => self.held.iter().any(|(m, _)| m == n),
                ReadAsk::Body => self.bodies.contains(n),
            }
    }

    fn unasked(&self) -> impl Iterator<Item = N> + '_ {
        self.up
            .iter()
            .copied()
            .filter(|n| !self.asked.iter().any(|(m, _)| m == n))
    }

    fn ask(&mut self, asks: Vec<(N, ReadAsk)>) -> ReadProgress<N, V> {
        self.asked.extend(asks.iter().copied());
        ReadProgress::Ask(asks)
    }

    fn decide(&mut self) -> ReadProgress<N, V> {
        let waiting = self
            .asked
            .iter()
            .filter(|(n, ask)| !self.answered(n, *ask))
            .count();
        // Too many failed to ever have r answers: ask replicas not asked yet, if any.
        let answers = self.held.len();
        if answers + waiting < self.r {
            let short = self.r - answers - waiting;
            let more: Vec<(N, ReadAsk)> = self
                .unasked()
                .take(short)
                .map(|n| (n, ReadAsk::Digest))
                .collect();
            if more.len() < short {
                self.done = true;
                return ReadProgress::Failed;
            }
            return self.ask(more);
        }
        if answers < self.r {
            return ReadProgress::Pending;
        }
        let newest = self.held.iter().filter_map(|(_, h)| *h).max();
        let body_hlc = self
            .body
            .as_ref()
            .and_then(|(_, v)| v.as_ref().map(|v| v.hlc));
        if newest.is_some() && body_hlc != newest {
            // A newer digest than the body at hand (or no body yet): fetch it from a replica
            // that holds it, unless that is asked already.
            let holder = self
                .held
                .iter()
                .find(|(_, h)| *h == newest)
                .map(|(n, _)| *n);
            let already = |n: N| {
                self.asked
                    .iter()
                    .any(|(m, ask)| *m == n && *ask == ReadAsk::Body)
            };
            return match holder {
                Some(n) if !already(n) => self.ask(vec![(n, ReadAsk::Body)]),
                _ if waiting > 0 => ReadProgress::Pending,
                _ => {
                    self.done = true;
                    ReadProgress::Failed
                }
            };
        }
        if newest.is_none() {
            // A miss: every replica up is asked before it is a 404.
            let more: Vec<(N, ReadAsk)> = self.unasked().map(|n| (n, ReadAsk::Digest)).collect();
            if !more.is_empty() {
                return self.ask(more);
            }
            if waiting > 0 {
                return ReadProgress::Pending;
            }
        }
        if self.unreadable > newest {
            // The newest version a replica named could not be read from it: the others up are
            // asked for it, and if none has it, nothing older may be answered in its place.
            let more: Vec<(N, ReadAsk)> = self.unasked().map(|n| (n, ReadAsk::Digest)).collect();
            if !more.is_empty() {
                return self.ask(more);
            }
            if waiting > 0 {
                return ReadProgress::Pending;
            }
            self.done = true;
            return ReadProgress::Failed;
        }
        self.done = true;
        let version = self.body.take().and_then(|(_, v)| v);
        let stale = self
            .held
            .iter()
            .filter(|(_, h)| *h < newest)
            .map(|(n, _)| *n)
            .collect();
        ReadProgress::Done { version, stale }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hlc(physical_us: u64) -> Hlc {
        crate::replication::test_hlc(physical_us, 1)
    }

    fn version(at: u64, value: u32) -> Version<u32> {
        Version {
            hlc: hlc(at),
            value: Some(value),
        }
    }

    #[test]
    fn a_write_is_acknowledged_at_w_and_the_rest_get_hints() {
        let (mut round, sent) = WriteRound::start(&[1, 2, 3], |n| *n != 3, 2).unwrap();
        assert_eq!(sent, vec![1, 2]);
        assert_eq!(round.answer(1, WriteAnswer::Stored), WriteProgress::Pending);
        assert_eq!(round.answer(1, WriteAnswer::Stored), WriteProgress::Pending);
        assert_eq!(
            round.answer(2, WriteAnswer::Stored),
            WriteProgress::Acknowledged
        );
        assert_eq!(round.missing(), vec![3]);
    }

    #[test]
    fn a_write_fails_fast_or_when_its_quorum_is_out_of_reach() {
        assert_eq!(
            WriteRound::start(&[1, 2, 3], |n| *n == 1, 2).unwrap_err(),
            TooFewUp { up: 1, needed: 2 }
        );
        let (mut round, _) = WriteRound::start(&[1, 2, 3], |_| true, 2).unwrap();
        assert_eq!(round.answer(1, WriteAnswer::Failed), WriteProgress::Pending);
        assert_eq!(round.answer(2, WriteAnswer::Failed), WriteProgress::Failed);
        let (mut round, _) = WriteRound::start(&[1, 2, 3], |_| true, 2).unwrap();
        assert_eq!(round.answer(1, WriteAnswer::Stored), WriteProgress::Pending);
        assert_eq!(round.timed_out(), WriteProgress::Failed);
    }

    #[test]
    fn during_a_rebalance_a_write_needs_its_quorum_in_both_replica_sets() {
        // Partition moving from {1, 2, 3} to {1, 2, 4}: W = 2 in each.
        let old: &[u32] = &[1, 2, 3];
        let new: &[u32] = &[1, 2, 4];
        let (mut round, sent) = WriteRound::start_in_sets(&[(old, 2), (new, 2)], |_| true).unwrap();
        assert_eq!(sent, vec![1, 2, 3, 4]);
        assert_eq!(round.answer(3, WriteAnswer::Stored), WriteProgress::Pending);
        assert_eq!(round.answer(1, WriteAnswer::Stored), WriteProgress::Pending);
        // Two in the old set, one in the new: not yet.
        assert_eq!(round.answer(4, WriteAnswer::Failed), WriteProgress::Pending);
        assert_eq!(
            round.answer(2, WriteAnswer::Stored),
            WriteProgress::Acknowledged
        );
        assert_eq!(round.missing(), vec![4]);
        // Two in the old set are not enough when the new one cannot reach its quorum.
        let (mut round, _) = WriteRound::start_in_sets(&[(old, 2), (new, 2)], |_| true).unwrap();
        round.answer(3, WriteAnswer::Stored);
        round.answer(1, WriteAnswer::Stored);
        round.answer(4, WriteAnswer::Failed);
        assert_eq!(round.answer(2, WriteAnswer::Failed), WriteProgress::Failed);
        // Fails fast when either set has too few up.
        assert_eq!(
            WriteRound::start_in_sets(&[(old, 2), (new, 2)], |n| *n != 2 && *n != 4).unwrap_err(),
            TooFewUp { up: 1, needed: 2 }
        );
    }

    #[test]
    fn a_newer_version_on_a_replica_makes_the_coordinator_restamp() {
        let (mut round, _) = WriteRound::start(&[1, 2, 3], |_| true, 2).unwrap();
        assert_eq!(round.answer(1, WriteAnswer::Stored), WriteProgress::Pending);
        assert_eq!(
            round.answer(2, WriteAnswer::Newer(hlc(50))),
            WriteProgress::Restamp { above: hlc(50) }
        );
        // Once acknowledged, a newer version elsewhere is a concurrent write: last wins.
        let (mut round, _) = WriteRound::start(&[1, 2, 3], |_| true, 2).unwrap();
        round.answer(1, WriteAnswer::Stored);
        round.answer(2, WriteAnswer::Stored);
        assert_eq!(
            round.answer(3, WriteAnswer::Newer(hlc(50))),
            WriteProgress::Acknowledged
        );
    }

    #[test]
    fn conditions_hold_on_the_newest_version() {
        let gone = Version::<u32> {
            hlc: hlc(3),
            value: None,
        };
        assert!(Condition::Absent.holds::<u32>(None));
        assert!(Condition::Absent.holds(Some(&gone)));
        assert!(!Condition::Absent.holds(Some(&version(3, 1))));
        assert!(Condition::Current(hlc(3)).holds(Some(&version(3, 1))));
        assert!(!Condition::Current(hlc(3)).holds(Some(&version(4, 1))));
        assert!(!Condition::Current(hlc(3)).holds(Some(&gone)));
    }

    #[test]
    fn a_read_takes_the_body_of_the_newest_digest_and_repairs_the_stale() {
        let (mut round, asks) = ReadRound::<u8, u32>::start(&[1, 2, 3], |_| true, 2).unwrap();
        assert_eq!(asks, vec![(1, ReadAsk::Body), (2, ReadAsk::Digest)]);
        assert_eq!(
            round.answer(1, ReadAnswer::Body(Some(version(10, 7)))),
            ReadProgress::Pending
        );
        assert_eq!(
            round.answer(2, ReadAnswer::Digest(Some(hlc(20)))),
            ReadProgress::Ask(vec![(2, ReadAsk::Body)])
        );
        assert_eq!(
            round.answer(2, ReadAnswer::Body(Some(version(20, 8)))),
            ReadProgress::Done {
                version: Some(version(20, 8)),
                stale: vec![1],
            }
        );
    }

    #[test]
    fn a_stalled_replica_s_ask_is_hedged_on_one_not_asked_and_the_first_answers_count() {
        let (mut round, asks) = ReadRound::<u8, u32>::start(&[1, 2, 3], |_| true, 2).unwrap();
        assert_eq!(asks, vec![(1, ReadAsk::Body), (2, ReadAsk::Digest)]);
        assert_eq!(
            round.answer(2, ReadAnswer::Digest(Some(hlc(10)))),
            ReadProgress::Pending
        );
        // Replica 1 (the body) is stalled; replica 2 has answered and is not hedged.
        assert_eq!(
            round.hedge(|n| *n != 3),
            ReadProgress::Ask(vec![(3, ReadAsk::Body)])
        );
        // Nobody is left to ask.
        assert_eq!(round.hedge(|_| true), ReadProgress::Pending);
        assert_eq!(
            round.answer(3, ReadAnswer::Body(Some(version(10, 7)))),
            ReadProgress::Done {
                version: Some(version(10, 7)),
                stale: vec![],
            }
        );
        // The stalled replica's late answer changes nothing.
        assert_eq!(
            round.answer(1, ReadAnswer::Body(Some(version(5, 1)))),
            ReadProgress::Pending
        );
    }

    #[test]
    fn a_hedge_asks_only_replicas_not_asked_yet_the_first_stalled_ask_first() {
        let (mut round, _) = ReadRound::<u8, u32>::start(&[1, 2, 3], |_| true, 2).unwrap();
        // Both asks stalled, one replica left: it is asked for the body.
        assert_eq!(
            round.hedge(|_| true),
            ReadProgress::Ask(vec![(3, ReadAsk::Body)])
        );
        assert_eq!(round.waiting_on(), vec![1, 2, 3]);
        assert_eq!(round.hedge(|_| true), ReadProgress::Pending);
        // With five replicas, an ask hedged once is not hedged again; its substitute's is.
        let (mut round, _) = ReadRound::<u8, u32>::start(&[1, 2, 3, 4, 5], |_| true, 2).unwrap();
        assert_eq!(
            round.hedge(|n| *n == 1),
            ReadProgress::Ask(vec![(3, ReadAsk::Body)])
        );
        assert_eq!(round.hedge(|n| *n == 1), ReadProgress::Pending);
        assert_eq!(
            round.hedge(|n| *n == 1 || *n == 3),
            ReadProgress::Ask(vec![(4, ReadAsk::Body)])
        );
    }

    #[test]
    fn a_hedged_miss_still_waits_for_the_stalled_replica() {
        // Every replica up answers before a 404, the stalled one too (or it fails).
        let (mut round, _) = ReadRound::<u8, u32>::start(&[1, 2, 3], |_| true, 2).unwrap();
        assert_eq!(
            round.hedge(|n| *n == 1),
            ReadProgress::Ask(vec![(3, ReadAsk::Body)])
        );
        assert_eq!(
            round.answer(2, ReadAnswer::Digest(None)),
            ReadProgress::Pending
        );
        assert_eq!(
            round.answer(3, ReadAnswer::Body(None)),
            ReadProgress::Pending
        );
        assert_eq!(
            round.answer(1, ReadAnswer::Failed),
            ReadProgress::Done {
                version: None,
                stale: vec![],
            }
        );
    }

    #[test]
    fn a_hedged_read_still_takes_the_newest_of_r_answers() {
        // The stalled replica answers after the hedge was asked: its newer digest still wins
        // over the hedge's older body, as without the hedge.
        let (mut round, _) = ReadRound::<u8, u32>::start(&[1, 2, 3], |_| true, 2).unwrap();
        assert_eq!(
            round.hedge(|n| *n == 2),
            ReadProgress::Ask(vec![(3, ReadAsk::Digest)])
        );
        assert_eq!(
            round.answer(1, ReadAnswer::Body(Some(version(5, 1)))),
            ReadProgress::Pending
        );
        assert_eq!(
            round.answer(2, ReadAnswer::Digest(Some(hlc(9)))),
            ReadProgress::Ask(vec![(2, ReadAsk::Body)])
        );
        assert_eq!(
            round.answer(3, ReadAnswer::Digest(Some(hlc(5)))),
            ReadProgress::Pending
        );
        assert_eq!(
            round.answer(2, ReadAnswer::Body(Some(version(9, 2)))),
            ReadProgress::Done {
                version: Some(version(9, 2)),
                stale: vec![1, 3],
            }
        );
    }

    #[test]
    fn a_miss_is_checked_against_every_replica_before_it_is_a_404() {
        let (mut round, _) = ReadRound::<u8, u32>::start(&[1, 2, 3], |_| true, 2).unwrap();
        round.answer(1, ReadAnswer::Body(None));
        assert_eq!(
            round.answer(2, ReadAnswer::Digest(None)),
            ReadProgress::Ask(vec![(3, ReadAsk::Digest)])
        );
        assert_eq!(
            round.answer(3, ReadAnswer::Digest(Some(hlc(5)))),
            ReadProgress::Ask(vec![(3, ReadAsk::Body)])
        );
        assert_eq!(
            round.answer(3, ReadAnswer::Body(Some(version(5, 1)))),
            ReadProgress::Done {
                version: Some(version(5, 1)),
                stale: vec![1, 2],
            }
        );
    }

    #[test]
    fn a_body_asked_of_a_replica_that_gave_its_digest_is_awaited() {
        // R=1: the first replica misses, the others are asked for digests, one names a version
        // and is asked for its body; the last digest (a miss) comes before that body, and the
        // round waits for it rather than failing.
        let (mut round, asks) = ReadRound::<u8, u32>::start(&[1, 2, 3], |_| true, 1).unwrap();
        assert_eq!(asks, vec![(1, ReadAsk::Body)]);
        assert_eq!(
            round.answer(1, ReadAnswer::Body(None)),
            ReadProgress::Ask(vec![(2, ReadAsk::Digest), (3, ReadAsk::Digest)])
        );
        assert_eq!(
            round.answer(2, ReadAnswer::Digest(Some(hlc(5)))),
            ReadProgress::Ask(vec![(2, ReadAsk::Body)])
        );
        assert_eq!(
            round.answer(3, ReadAnswer::Digest(None)),
            ReadProgress::Pending
        );
        assert_eq!(
            round.answer(2, ReadAnswer::Body(Some(version(5, 1)))),
            ReadProgress::Done {
                version: Some(version(5, 1)),
                stale: vec![1, 3],
            }
        );
    }

    #[test]
    fn a_failed_replica_is_replaced_and_too_few_answers_fail() {
        let (mut round, _) = ReadRound::<u8, u32>::start(&[1, 2, 3], |_| true, 2).unwrap();
        assert_eq!(
            round.answer(1, ReadAnswer::Failed),
            ReadProgress::Ask(vec![(3, ReadAsk::Digest)])
        );
        round.answer(2, ReadAnswer::Digest(Some(hlc(4))));
        assert_eq!(
            round.answer(3, ReadAnswer::Digest(Some(hlc(4)))),
            ReadProgress::Ask(vec![(2, ReadAsk::Body)])
        );
        // With the third replica down, one failure leaves too few to ever answer.
        let (mut round, _) = ReadRound::<u8, u32>::start(&[1, 2, 3], |n| *n != 3, 2).unwrap();
        assert_eq!(round.answer(1, ReadAnswer::Failed), ReadProgress::Failed);
    }

    #[test]
    fn a_newest_version_that_fails_to_read_is_read_elsewhere_or_nothing_older_is_answered() {
        // Replica 2 names the newest version, then its copy fails to read (a bad checksum):
        // replica 3 is asked, has it, and serves it; 1 and 2 are repaired.
        let (mut round, _) = ReadRound::<u8, u32>::start(&[1, 2, 3], |_| true, 2).unwrap();
        round.answer(1, ReadAnswer::Body(Some(version(10, 7))));
        assert_eq!(
            round.answer(2, ReadAnswer::Digest(Some(hlc(20)))),
            ReadProgress::Ask(vec![(2, ReadAsk::Body)])
        );
        assert_eq!(
            round.answer(2, ReadAnswer::Failed),
            ReadProgress::Ask(vec![(3, ReadAsk::Digest)])
        );
        assert_eq!(
            round.answer(3, ReadAnswer::Digest(Some(hlc(20)))),
            ReadProgress::Ask(vec![(3, ReadAsk::Body)])
        );
        assert_eq!(
            round.answer(3, ReadAnswer::Body(Some(version(20, 8)))),
            ReadProgress::Done {
                version: Some(version(20, 8)),
                stale: vec![1],
            }
        );
        // With replica 3 down, the older version of replica 1 is not answered instead.
        let (mut round, _) = ReadRound::<u8, u32>::start(&[1, 2, 3], |n| *n != 3, 2).unwrap();
        round.answer(1, ReadAnswer::Body(Some(version(10, 7))));
        round.answer(2, ReadAnswer::Digest(Some(hlc(20))));
        assert_eq!(round.answer(2, ReadAnswer::Failed), ReadProgress::Failed);
    }
}
