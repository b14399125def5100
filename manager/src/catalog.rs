//! Catalog changes off the core threads. A bucket change rewrites `state.json` and fsyncs it
//! under the manager's writer lock: blocking work that must never run on an io_uring core
//! thread. [`CatalogWriter::start`] runs one thread, the manager's own, that makes every change
//! it is sent; callers on core threads await its answer (a `futures_channel::oneshot`, woken
//! across threads) and read the catalog from the lock-free snapshot meanwhile.
//!
//! Bounds: at most [`CATALOG_CHANGES_QUEUED_MAX`] changes wait; one more is refused at once with
//! [`ManagerError::Busy`] (S3 `SlowDown`), never by blocking the sender.

use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::JoinHandle;

use futures_channel::oneshot;

use crate::{Bucket, BucketAcl, Manager, ManagerError};

/// Most catalog changes waiting for the manager's thread.
pub const CATALOG_CHANGES_QUEUED_MAX: usize = 1024;

/// One change to the catalog.
enum Change {
    CreateBucket {
        name: String,
        owner: String,
        acl: BucketAcl,
        reply: oneshot::Sender<Result<Bucket, ManagerError>>,
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
}

/// Sends catalog changes to the manager's thread. Clone and `Send`: every core holds one; the
/// thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct CatalogWriter {
    changes: SyncSender<Change>,
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
        (Self { changes }, CatalogChanges { queue })
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

    /// Removes the record of bucket `name` at `incarnation` (see [`Manager::delete_bucket`]).
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
        let queue = self.queue;
        std::thread::Builder::new()
            .name("leofs-manager".into())
            .spawn(move || {
                for change in queue {
                    apply(&manager, change);
                }
            })
            .map_err(ManagerError::Thread)
    }
}

/// Makes one change on the manager's thread and answers (the asker may have gone away).
fn apply(manager: &Manager, change: Change) {
    match change {
        Change::CreateBucket {
            name,
            owner,
            acl,
            reply,
        } => {
            let _ = reply.send(manager.create_bucket(&name, &owner, acl));
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
