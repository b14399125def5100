//! The changes the manager's replicated state machine makes, as values: each is proposed to the
//! Raft group, written to its log and applied in log order by every manager. Everything random
//! or time-dependent (key pairs, incarnations, creation times) is chosen by the proposer and
//! carried in the command, so applying it is a pure function of the state and the command and
//! every manager reaches the same state.
//!
//! Compatibility: commands are stored in the Raft log as JSON tagged by `op`; a newer manager
//! must apply every command an older one wrote, so variants and fields are only ever added
//! (new fields with a serde default), never renamed or removed.

use crate::{AccessKey, Bucket, BucketAcl, ManagerError, ManagerState, User};

/// One change to the catalog.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Command {
    /// Creates `bucket` (its name, owner, ACL, creation time and incarnation as proposed).
    CreateBucket {
        /// The bucket record.
        bucket: Bucket,
    },
    /// Removes bucket `name` if it is still at `incarnation`.
    DeleteBucket {
        /// Bucket name.
        name: String,
        /// The incarnation that was checked empty.
        incarnation: u64,
    },
    /// Replaces a bucket's canned ACL.
    SetBucketAcl {
        /// Bucket name.
        name: String,
        /// The new ACL.
        acl: BucketAcl,
    },
    /// Creates `user` with its first access key.
    CreateUser {
        /// The user record.
        user: User,
        /// Its key pair.
        key: AccessKey,
    },
    /// Deletes a user and its keys (refused while it owns buckets).
    DeleteUser {
        /// User id.
        user_id: String,
    },
    /// The catalog a group starts from: proposed once, as the first command, by the manager
    /// that bootstraps the group (its first start's admin user and key, or the catalog of a
    /// single node from before Raft), so that every manager added later replays it.
    Seed {
        /// The whole catalog.
        state: ManagerState,
    },
    /// `command`, proposed under `id` (random, drawn once per change): a proposal applied
    /// again (forwarded anew after its answer was lost) is answered with its first outcome and
    /// not applied twice.
    Proposal {
        /// The proposal's id (32 hex characters).
        id: String,
        /// The change.
        command: Box<Command>,
    },
    /// Gives a group bootstrapped before cluster ids existed its id (a no-op once it has one).
    AdoptClusterId {
        /// 32 hex characters.
        id: String,
    },
}

/// Why a command was not applied: the state it was proposed against changed (or never allowed
/// it). The state is left as it was. Serializable because openraft carries it back to the
/// proposer as the command's result.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "refused", content = "name", rename_all = "kebab-case")]
pub enum Refusal {
    /// The user does not exist.
    NoSuchUser(String),
    /// A user with this id exists.
    UserExists(String),
    /// The user still owns buckets.
    UserOwnsBuckets(String),
    /// Another owner has a bucket of this name.
    BucketAlreadyExists(String),
    /// The proposer's user already has a bucket of this name.
    BucketAlreadyOwnedByYou(String),
    /// No bucket of this name (or not at the incarnation given).
    NoSuchBucket(String),
    /// The generated access key id is taken (the proposer generates another).
    AccessKeyTaken(String),
}

impl From<Refusal> for ManagerError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NoSuchUser(id) => ManagerError::NoSuchUser(id),
            Refusal::UserExists(id) => ManagerError::UserExists(id),
            Refusal::UserOwnsBuckets(id) => ManagerError::UserOwnsBuckets(id),
            Refusal::BucketAlreadyExists(name) => ManagerError::BucketAlreadyExists(name),
            Refusal::BucketAlreadyOwnedByYou(name) => ManagerError::BucketAlreadyOwnedByYou(name),
            Refusal::NoSuchBucket(name) => ManagerError::NoSuchBucket(name),
            Refusal::AccessKeyTaken(id) => {
                ManagerError::Remote(format!("access key id {id} is already taken"))
            }
        }
    }
}

/// The result of applying one log entry: `Ok` also for entries that carry no command (Raft's
/// own blank and membership entries).
pub type Outcome = Result<(), Refusal>;

/// A fresh proposal id: 16 random bytes as 32 hex characters.
pub fn new_proposal_id() -> Result<String, ManagerError> {
    crate::persist::random_hex(16)
}

impl Command {
    /// Applies the command to `state`, or refuses it and leaves `state` unchanged.
    pub fn apply(&self, state: &mut ManagerState) -> Outcome {
        match self {
            Command::CreateBucket { bucket } => {
                if state.user(&bucket.owner).is_none() {
                    return Err(Refusal::NoSuchUser(bucket.owner.clone()));
                }
                if let Some(existing) = state.bucket(&bucket.name) {
                    return Err(if existing.owner == bucket.owner {
                        Refusal::BucketAlreadyOwnedByYou(bucket.name.clone())
                    } else {
                        Refusal::BucketAlreadyExists(bucket.name.clone())
                    });
                }
                state.buckets.insert(bucket.name.clone(), bucket.clone());
                Ok(())
            }
            Command::DeleteBucket { name, incarnation } => match state.buckets.get(name) {
                Some(bucket) if bucket.incarnation == *incarnation => {
                    state.buckets.remove(name);
                    Ok(())
                }
                _ => Err(Refusal::NoSuchBucket(name.clone())),
            },
            Command::SetBucketAcl { name, acl } => match state.buckets.get_mut(name) {
                Some(bucket) => {
                    bucket.acl = *acl;
                    Ok(())
                }
                None => Err(Refusal::NoSuchBucket(name.clone())),
            },
            Command::CreateUser { user, key } => {
                if state.user(&user.id).is_some() {
                    return Err(Refusal::UserExists(user.id.clone()));
                }
                if state.access_key(&key.access_key_id).is_some() {
                    return Err(Refusal::AccessKeyTaken(key.access_key_id.clone()));
                }
                state.users.insert(user.id.clone(), user.clone());
                state.keys.insert(key.access_key_id.clone(), key.clone());
                Ok(())
            }
            // The state machine answers a repeated proposal without applying it again.
            Command::Proposal { command, .. } => command.apply(state),
            Command::AdoptClusterId { id } => {
                if state.cluster_id.is_none() {
                    state.cluster_id = Some(id.clone());
                }
                Ok(())
            }
            Command::Seed { state: seed } => {
                *state = seed.clone();
                Ok(())
            }
            Command::DeleteUser { user_id } => {
                if state.user(user_id).is_none() {
                    return Err(Refusal::NoSuchUser(user_id.clone()));
                }
                if state
                    .buckets
                    .values()
                    .any(|bucket| &bucket.owner == user_id)
                {
                    return Err(Refusal::UserOwnsBuckets(user_id.clone()));
                }
                state.users.remove(user_id);
                state.keys.retain(|_, key| &key.user_id != user_id);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> (User, AccessKey) {
        (
            User {
                id: id.into(),
                is_admin: false,
                created_unix_ms: 1,
            },
            AccessKey {
                access_key_id: format!("KEY{id}"),
                secret_access_key: "secret".into(),
                user_id: id.into(),
            },
        )
    }

    fn bucket(name: &str, owner: &str, incarnation: u64) -> Bucket {
        Bucket {
            name: name.into(),
            owner: owner.into(),
            acl: BucketAcl::Private,
            created_unix_ms: 2,
            incarnation,
        }
    }

    #[test]
    fn commands_apply_or_refuse_without_changing_the_state() {
        let mut state = ManagerState::default();
        let (alice, key) = user("alice");
        let create_alice = Command::CreateUser {
            user: alice.clone(),
            key: key.clone(),
        };
        assert_eq!(create_alice.apply(&mut state), Ok(()));
        assert_eq!(
            create_alice.apply(&mut state),
            Err(Refusal::UserExists("alice".into()))
        );
        let (bob, _) = user("bob");
        let same_key = Command::CreateUser { user: bob, key };
        assert!(matches!(
            same_key.apply(&mut state),
            Err(Refusal::AccessKeyTaken(_))
        ));
        assert!(state.user("bob").is_none());

        let create = Command::CreateBucket {
            bucket: bucket("b1", "alice", 7),
        };
        assert_eq!(create.apply(&mut state), Ok(()));
        assert_eq!(
            create.apply(&mut state),
            Err(Refusal::BucketAlreadyOwnedByYou("b1".into()))
        );
        let by_nobody = Command::CreateBucket {
            bucket: bucket("b2", "nobody", 8),
        };
        assert_eq!(
            by_nobody.apply(&mut state),
            Err(Refusal::NoSuchUser("nobody".into()))
        );
        let delete_alice = Command::DeleteUser {
            user_id: "alice".into(),
        };
        assert_eq!(
            delete_alice.apply(&mut state),
            Err(Refusal::UserOwnsBuckets("alice".into()))
        );
        let stale_delete = Command::DeleteBucket {
            name: "b1".into(),
            incarnation: 6,
        };
        assert_eq!(
            stale_delete.apply(&mut state),
            Err(Refusal::NoSuchBucket("b1".into()))
        );
        let acl = Command::SetBucketAcl {
            name: "b1".into(),
            acl: BucketAcl::PublicRead,
        };
        assert_eq!(acl.apply(&mut state), Ok(()));
        assert_eq!(state.bucket("b1").unwrap().acl, BucketAcl::PublicRead);
        let delete = Command::DeleteBucket {
            name: "b1".into(),
            incarnation: 7,
        };
        assert_eq!(delete.apply(&mut state), Ok(()));
        assert_eq!(delete_alice.apply(&mut state), Ok(()));
        assert!(state.keys.is_empty() && state.users.is_empty() && state.buckets.is_empty());
    }

    #[test]
    fn commands_keep_their_stored_form() {
        // The Raft log holds this form: a newer manager must read what an older one wrote.
        let command = Command::DeleteBucket {
            name: "b".into(),
            incarnation: 3,
        };
        let json = serde_json::to_string(&command).unwrap();
        assert_eq!(json, r#"{"op":"delete-bucket","name":"b","incarnation":3}"#);
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), command);
        let refusal: Outcome = Err(Refusal::NoSuchBucket("b".into()));
        let json = serde_json::to_string(&refusal).unwrap();
        assert_eq!(
            serde_json::from_str::<Outcome>(&json).unwrap(),
            refusal,
            "{json}"
        );
    }
}
