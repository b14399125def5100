//! Catalog changes off the core threads (on a node without the manager role, forwarded to the
//! manager it joined through a [`CatalogApplier`]). A bucket change rewrites `state.json` and fsyncs it
//! under the manager's writer lock: blocking work that must never run on an io_uring core
//! thread. [`CatalogWriter::start`] runs one thread, the manager's own, that makes every change
//! it is sent; callers on core threads await its answer (a `futures_channel::oneshot`, woken
//! across threads) and read the catalog from the lock-free snapshot meanwhile.
//!
//! Bounds: at most [`CATALOG_CHANGES_QUEUED_MAX`] changes wait; one more is refused at once with
//! [`ManagerError::Busy`] (S3 `SlowDown`), never by blocking the sender.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::oneshot;

use crate::lifecycle::LifecycleRule;
use crate::{Bucket, BucketAcl, BucketSetting, Manager, ManagerError};

/// Most catalog changes waiting for the manager's thread.
pub const CATALOG_CHANGES_QUEUED_MAX: usize = 1024;
/// How long the thread waits for a change before calling [`CatalogApplier::idle`].
pub const CATALOG_IDLE_INTERVAL: Duration = Duration::from_secs(1);

/// Where a node's catalog changes are made: its own manager, or, on a node without the
/// manager role, the manager of the node it joined. Runs on the catalog thread only, so it may
/// block.
pub trait CatalogApplier: Send + 'static {
    /// See [`Manager::create_bucket`].
    fn create_bucket(
        &mut self,
        name: &str,
        owner: &str,
        acl: BucketAcl,
    ) -> Result<Bucket, ManagerError>;
    /// See [`Manager::mark_bucket_deleting`].
    fn mark_bucket_deleting(&mut self, name: &str, incarnation: u64) -> Result<(), ManagerError>;
    /// See [`Manager::delete_bucket`].
    fn delete_bucket(&mut self, name: &str, incarnation: u64) -> Result<(), ManagerError>;
    /// See [`Manager::set_bucket_acl`].
    fn set_bucket_acl(&mut self, name: &str, acl: BucketAcl) -> Result<(), ManagerError>;
    /// See [`Manager::set_bucket_versioning`].
    fn set_bucket_versioning(&mut self, name: &str, enabled: bool) -> Result<(), ManagerError>;
    /// See [`Manager::set_bucket_lifecycle`].
    fn set_bucket_lifecycle(
        &mut self,
        name: &str,
        rules: Vec<LifecycleRule>,
    ) -> Result<(), ManagerError>;
    /// See [`Manager::set_bucket_setting`].
    fn set_bucket_setting(
        &mut self,
        name: &str,
        setting: BucketSetting,
    ) -> Result<(), ManagerError>;
    /// Brings a copy of the catalog up to date (nothing to do for the manager itself).
    fn refresh(&mut self) -> Result<(), ManagerError> {
        Ok(())
    }
    /// Called when no change arrived for [`CATALOG_IDLE_INTERVAL`] (a copy refreshes itself).
    fn idle(&mut self) {}
}

impl CatalogApplier for Arc<Manager> {
    fn create_bucket(
        &mut self,
        name: &str,
        owner: &str,
        acl: BucketAcl,
    ) -> Result<Bucket, ManagerError> {
        Manager::create_bucket(self, name, owner, acl)
    }

    fn mark_bucket_deleting(&mut self, name: &str, incarnation: u64) -> Result<(), ManagerError> {
        Manager::mark_bucket_deleting(self, name, incarnation)
    }

    fn delete_bucket(&mut self, name: &str, incarnation: u64) -> Result<(), ManagerError> {
        Manager::delete_bucket(self, name, incarnation)
    }

    fn set_bucket_acl(&mut self, name: &str, acl: BucketAcl) -> Result<(), ManagerError> {
        Manager::set_bucket_acl(self, name, acl)
    }

    fn set_bucket_versioning(&mut self, name: &str, enabled: bool) -> Result<(), ManagerError> {
        Manager::set_bucket_versioning(self, name, enabled)
    }

    fn set_bucket_lifecycle(
        &mut self,
        name: &str,
        rules: Vec<LifecycleRule>,
    ) -> Result<(), ManagerError> {
        Manager::set_bucket_lifecycle(self, name, rules)
    }

    fn set_bucket_setting(
        &mut self,
        name: &str,
        setting: BucketSetting,
    ) -> Result<(), ManagerError> {
        Manager::set_bucket_setting(self, name, setting)
    }
}

/// One change to the catalog.
enum Change {
    CreateBucket {
        name: String,
        owner: String,
        acl: BucketAcl,
        reply: oneshot::Sender<Result<Bucket, ManagerError>>,
    },
    MarkBucketDeleting {
        name: String,
        incarnation: u64,
        reply: oneshot::Sender<Result<(), ManagerError>>,
    },
    DeleteBucket {
        name: String,
        incarnation: u64,
        reply: oneshot::Sender<Result<(), ManagerError>>,
    },
    SetBucketAcl {
        name: String,
        acl: BucketAcl,
        reply: oneshot::Sender<Result<(), ManagerError>>,
    },
    SetBucketVersioning {
        name: String,
        enabled: bool,
        reply: oneshot::Sender<Result<(), ManagerError>>,
    },
    SetBucketLifecycle {
        name: String,
        rules: Vec<LifecycleRule>,
        reply: oneshot::Sender<Result<(), ManagerError>>,
    },
    SetBucketSetting {
        name: String,
        setting: BucketSetting,
        reply: oneshot::Sender<Result<(), ManagerError>>,
    },
    Refresh {
        reply: oneshot::Sender<Result<(), ManagerError>>,
    },
}

/// Sends catalog changes to the manager's thread. Clone and `Send`: every core holds one; the
/// thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct CatalogWriter {
    changes: SyncSender<Change>,
    /// Whether the catalog read beside it is a copy that [`CatalogWriter::refresh`] updates.
    copy: bool,
}

impl CatalogWriter {
    /// Starts the manager's thread (`leofs-manager`), which makes the changes on `manager`.
    pub fn start(manager: Arc<Manager>) -> Result<(Self, JoinHandle<()>), ManagerError> {
        let (writer, changes) = Self::channel();
        Ok((writer, changes.spawn(manager)?))
    }

    /// The writer and the queue of its changes, without the thread yet: for a process that must
    /// start its thread later (after blocking signals in the thread that spawns it). Changes
    /// sent meanwhile wait in the queue.
    pub fn channel() -> (Self, CatalogChanges) {
        let (changes, queue) = mpsc::sync_channel(CATALOG_CHANGES_QUEUED_MAX);
        (
            Self {
                changes,
                copy: false,
            },
            CatalogChanges { queue },
        )
    }

    /// As [`CatalogWriter::channel`], for a node whose catalog is a copy of another node's:
    /// [`CatalogWriter::refresh`] then asks the catalog thread to bring it up to date.
    pub fn channel_for_copy() -> (Self, CatalogChanges) {
        let (mut writer, changes) = Self::channel();
        writer.copy = true;
        (writer, changes)
    }

    /// Brings a copy of the catalog up to date before answering (a key or bucket created a
    /// moment ago through another node); at once where the catalog is the manager's own.
    /// Concurrent refreshes share one fetch.
    pub async fn refresh(&self) -> Result<(), ManagerError> {
        if !self.copy {
            return Ok(());
        }
        self.ask(|reply| Change::Refresh { reply }).await
    }

    /// Asks for a copy of the catalog to be brought up to date soon, without waiting (a peer
    /// routes by a newer ring than the copy's); nothing where the catalog is the manager's own,
    /// or when the queue is full (a refresh is then due anyway).
    pub fn request_refresh(&self) {
        if self.copy {
            let (reply, _) = oneshot::channel();
            let _ = self.send(Change::Refresh { reply });
        }
    }

    /// Creates a bucket owned by `owner` (see [`Manager::create_bucket`]).
    pub async fn create_bucket(
        &self,
        name: &str,
        owner: &str,
        acl: BucketAcl,
    ) -> Result<Bucket, ManagerError> {
        self.ask(|reply| Change::CreateBucket {
            name: name.to_owned(),
            owner: owner.to_owned(),
            acl,
            reply,
        })
        .await
    }

    /// Marks bucket `name` at `incarnation` as being deleted (see
    /// [`Manager::mark_bucket_deleting`]).
    pub async fn mark_bucket_deleting(
        &self,
        name: &str,
        incarnation: u64,
    ) -> Result<(), ManagerError> {
        self.ask(|reply| Change::MarkBucketDeleting {
            name: name.to_owned(),
            incarnation,
            reply,
        })
        .await
    }

    /// Deletes bucket `name` at `incarnation` (see [`Manager::delete_bucket`]).
    pub async fn delete_bucket(&self, name: &str, incarnation: u64) -> Result<(), ManagerError> {
        self.ask(|reply| Change::DeleteBucket {
            name: name.to_owned(),
            incarnation,
            reply,
        })
        .await
    }

    /// Sets a bucket's canned ACL (see [`Manager::set_bucket_acl`]).
    pub async fn set_bucket_acl(&self, name: &str, acl: BucketAcl) -> Result<(), ManagerError> {
        self.ask(|reply| Change::SetBucketAcl {
            name: name.to_owned(),
            acl,
            reply,
        })
        .await
    }

    /// Enables or suspends a bucket's versioning (see [`Manager::set_bucket_versioning`]).
    pub async fn set_bucket_versioning(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<(), ManagerError> {
        self.ask(|reply| Change::SetBucketVersioning {
            name: name.to_owned(),
            enabled,
            reply,
        })
        .await
    }

    /// Replaces a bucket's lifecycle rules (see [`Manager::set_bucket_lifecycle`]).
    pub async fn set_bucket_lifecycle(
        &self,
        name: &str,
        rules: Vec<LifecycleRule>,
    ) -> Result<(), ManagerError> {
        self.ask(|reply| Change::SetBucketLifecycle {
            name: name.to_owned(),
            rules,
            reply,
        })
        .await
    }

    /// Replaces one of a bucket's settings (see [`Manager::set_bucket_setting`]).
    pub async fn set_bucket_setting(
        &self,
        name: &str,
        setting: BucketSetting,
    ) -> Result<(), ManagerError> {
        self.ask(|reply| Change::SetBucketSetting {
            name: name.to_owned(),
            setting,
            reply,
        })
        .await
    }

    /// Queues the change `make` builds around its reply channel and awaits the answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ManagerError>>) -> Change,
    ) -> Result<T, ManagerError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply))?;
        answer.await.map_err(|_| ManagerError::Stopped)?
    }

    fn send(&self, change: Change) -> Result<(), ManagerError> {
        self.changes.try_send(change).map_err(|e| match e {
            TrySendError::Full(_) => ManagerError::Busy {
                queued_max: CATALOG_CHANGES_QUEUED_MAX,
            },
            TrySendError::Disconnected(_) => ManagerError::Stopped,
        })
    }
}

/// The queue of a [`CatalogWriter`]'s changes, until [`CatalogChanges::spawn`] gives it its thread.
pub struct CatalogChanges {
    queue: mpsc::Receiver<Change>,
}

impl CatalogChanges {
    /// Starts the manager's thread (`leofs-manager`): it makes every queued change on
    /// `manager`, until the last writer is dropped.
    pub fn spawn(self, manager: Arc<Manager>) -> Result<JoinHandle<()>, ManagerError> {
        self.spawn_with(manager)
    }

    /// Starts the catalog thread (`leofs-catalog`) with `applier` making the changes; it calls
    /// [`CatalogApplier::idle`] whenever no change came for [`CATALOG_IDLE_INTERVAL`].
    pub fn spawn_with(
        self,
        mut applier: impl CatalogApplier,
    ) -> Result<JoinHandle<()>, ManagerError> {
        let queue = self.queue;
        std::thread::Builder::new()
            .name("leofs-catalog".into())
            .spawn(move || {
                loop {
                    match queue.recv_timeout(CATALOG_IDLE_INTERVAL) {
                        Ok(Change::Refresh { reply }) => refresh(&mut applier, &queue, reply),
                        Ok(change) => apply(&mut applier, change),
                        Err(RecvTimeoutError::Timeout) => applier.idle(),
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .map_err(ManagerError::Thread)
    }
}

/// Answers every refresh queued so far with one fetch: the queued ones asked before it
/// started, so it is as new as each of them needs. Other changes met in the queue are made in
/// their order.
fn refresh(
    applier: &mut impl CatalogApplier,
    queue: &mpsc::Receiver<Change>,
    first: oneshot::Sender<Result<(), ManagerError>>,
) {
    let mut replies = vec![first];
    while let Ok(change) = queue.try_recv() {
        match change {
            Change::Refresh { reply } => replies.push(reply),
            other => apply(applier, other),
        }
    }
    let refreshed = applier.refresh();
    for reply in replies {
        let answer = match &refreshed {
            Ok(()) => Ok(()),
            Err(e) => Err(ManagerError::Unreachable(e.to_string())),
        };
        let _ = reply.send(answer);
    }
}

/// Makes one change on the catalog thread and answers (the asker may have gone away).
fn apply(manager: &mut impl CatalogApplier, change: Change) {
    match change {
        Change::CreateBucket {
            name,
            owner,
            acl,
            reply,
        } => {
            let _ = reply.send(manager.create_bucket(&name, &owner, acl));
        }
        Change::MarkBucketDeleting {
            name,
            incarnation,
            reply,
        } => {
            let _ = reply.send(manager.mark_bucket_deleting(&name, incarnation));
        }
        Change::DeleteBucket {
            name,
            incarnation,
            reply,
        } => {
            let _ = reply.send(manager.delete_bucket(&name, incarnation));
        }
        Change::SetBucketAcl { name, acl, reply } => {
            let _ = reply.send(manager.set_bucket_acl(&name, acl));
        }
        Change::SetBucketVersioning {
            name,
            enabled,
            reply,
        } => {
            let _ = reply.send(manager.set_bucket_versioning(&name, enabled));
        }
        Change::SetBucketLifecycle { name, rules, reply } => {
            let _ = reply.send(manager.set_bucket_lifecycle(&name, rules));
        }
        Change::SetBucketSetting {
            name,
            setting,
            reply,
        } => {
            let _ = reply.send(manager.set_bucket_setting(&name, setting));
        }
        Change::Refresh { reply } => {
            let _ = reply.send(manager.refresh());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[monoio::test]
    async fn changes_are_made_by_the_manager_thread_and_answered() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = Manager::open(dir.path(), None).unwrap();
        let manager = Arc::new(manager);
        manager.create_user("alice").unwrap();
        let (writer, thread) = CatalogWriter::start(manager.clone()).unwrap();
        let created = writer
            .create_bucket("bucket1", "alice", BucketAcl::Private)
            .await;
        assert_eq!(created.unwrap().name, "bucket1");
        assert!(matches!(
            writer
                .create_bucket("bucket1", "alice", BucketAcl::Private)
                .await,
            Err(ManagerError::BucketAlreadyOwnedByYou(_))
        ));
        writer
            .set_bucket_acl("bucket1", BucketAcl::PublicRead)
            .await
            .unwrap();
        assert_eq!(
            manager.snapshot().bucket("bucket1").unwrap().acl,
            BucketAcl::PublicRead
        );
        let incarnation = manager.snapshot().bucket("bucket1").unwrap().incarnation;
        writer
            .delete_bucket("bucket1", incarnation + 1)
            .await
            .unwrap_err();
        writer.delete_bucket("bucket1", incarnation).await.unwrap();
        assert!(manager.snapshot().bucket("bucket1").is_none());
        let clone = writer.clone();
        drop(writer);
        drop(clone);
        thread.join().unwrap();
    }
}
