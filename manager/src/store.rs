//! The durable single-node manager: owns `<data_dir>/manager/` (`state.json`, `admin.token`,
//! `credentials`), serializes mutations on a mutex and publishes each new state through an
//! `ArcSwap`, so the data path reads a snapshot without ever taking a lock.
//!
//! Files (directory mode 0700, every file mode 0600, each replaced atomically: write
//! `<name>.tmp`, fsync, rename, fsync the directory; a leftover `.tmp` is ignored):
//! - `state.json`: `{"format_version": 1, "state": {"users": {id: User}, "keys": {access key id:
//!   AccessKey}, "buckets": {name: Bucket}}}`, rewritten whole on every mutation before the
//!   mutation is published. Unparseable content, another version or a dangling reference is
//!   reported as [`ManagerError::Corrupt`]; the file is never reset.
//! - `admin.token`: the admin API bearer token (64 hex characters and a newline).
//! - `credentials`: the root key pair in the AWS shared-credentials format, written at first start.
//!
//! First start is detected by the absence of `state.json`, which is written last.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::persist::{
    ensure_private_dir, new_hex_secret, random_string, read_if_exists, write_atomic,
};
use crate::{
    AccessKey, Bucket, BucketAcl, Credentials, ManagerError, ManagerState, User,
    validate_bucket_name,
};

/// Directory of the manager's files inside the data directory.
pub const MANAGER_DIR: &str = "manager";
/// Users, keys and buckets (JSON, holds secrets).
pub const STATE_FILE: &str = "state.json";
/// The admin API bearer token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The root key pair, in the AWS shared-credentials format.
pub const CREDENTIALS_FILE: &str = "credentials";
/// Version of the `state.json` layout; bumped on any incompatible change.
pub const STATE_FORMAT_VERSION: u32 = 1;
/// Id of the administrator created at first start.
pub const ADMIN_USER_ID: &str = "admin";
/// Length of generated access key ids.
pub const ACCESS_KEY_ID_CHARS: usize = 20;
/// Length of generated secret access keys.
pub const SECRET_KEY_CHARS: usize = 40;
/// Shortest root access key id accepted from the operator.
pub const ROOT_ACCESS_KEY_MIN_CHARS: usize = 3;
/// Longest root access key id accepted from the operator.
pub const ROOT_ACCESS_KEY_MAX_CHARS: usize = 128;
/// Shortest root secret accepted from the operator.
pub const ROOT_SECRET_MIN_CHARS: usize = 8;
/// Longest user id.
pub const USER_ID_MAX_CHARS: usize = 64;

/// Characters of generated access key ids.
const ACCESS_KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Characters of generated secrets.
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The on-disk layout of `state.json`, as read.
#[derive(serde::Deserialize)]
struct StateFile {
    format_version: u32,
    state: ManagerState,
}

/// The on-disk layout of `state.json`, as written (borrows the state instead of cloning it).
#[derive(serde::Serialize)]
struct StateFileRef<'a> {
    format_version: u32,
    state: &'a ManagerState,
}

/// The durable single-node manager: `Send + Sync`, shared as `Arc<Manager>` by every core.
pub struct Manager {
    /// None: a read-only copy of another node's catalog ([`Manager::read_only_copy`]).
    state_path: Option<PathBuf>,
    state: ArcSwap<ManagerState>,
    /// Serializes mutations (admin path only; readers use `state`).
    writer: Mutex<()>,
    admin_token: String,
    /// A copy: when it was last known current (ms since the Unix epoch); 0 for the manager's
    /// own state.
    confirmed_unix_ms: AtomicU64,
}

impl Manager {
    /// Opens `<data_dir>/manager/`, creating it on first start together with the admin user and
    /// its key pair (`root` if given, e.g. from `LEOFS_ROOT_ACCESS_KEY`/`LEOFS_ROOT_SECRET_KEY`,
    /// else generated) and the admin API token. Returns the root credentials when they were
    /// created by this call, so the caller prints them once.
    pub fn open(
        data_dir: &Path,
        root: Option<Credentials>,
    ) -> Result<(Manager, Option<Credentials>), ManagerError> {
        let dir = data_dir.join(MANAGER_DIR);
        ensure_private_dir(&dir)?;
        let admin_token = load_or_create_token(&dir.join(ADMIN_TOKEN_FILE))?;
        let state_path = dir.join(STATE_FILE);
        let (state, created) = match read_if_exists(&state_path)? {
            Some(bytes) => {
                let state = parse_state(&state_path, &bytes)?;
                if let Some(root) = &root {
                    warn_if_root_differs(&state, root);
                }
                (state, None)
            }
            None => {
                let root = match root {
                    Some(root) => validate_root(root)?,
                    None => generate_credentials(ADMIN_USER_ID, &ManagerState::default())?,
                };
                let state = first_state(&root, now_unix_ms());
                write_atomic(
                    &dir.join(CREDENTIALS_FILE),
                    credentials_file(&root).as_bytes(),
                )?;
                persist_state(&state_path, &state)?;
                (state, Some(root))
            }
        };
        let manager = Manager {
            state_path: Some(state_path),
            state: ArcSwap::from_pointee(state),
            writer: Mutex::new(()),
            admin_token,
            confirmed_unix_ms: AtomicU64::new(0),
        };
        Ok((manager, created))
    }

    /// A read-only copy of another node's catalog, for a node without the manager role: it is
    /// replaced whole by [`Manager::install`]; every change through it is refused with
    /// [`ManagerError::ReadOnlyCopy`].
    pub fn read_only_copy(state: ManagerState) -> Manager {
        Manager {
            state_path: None,
            state: ArcSwap::from_pointee(state),
            writer: Mutex::new(()),
            admin_token: String::new(),
            confirmed_unix_ms: AtomicU64::new(now_unix_ms().max(1)),
        }
    }

    /// Records that a copy was found current just now (a fetch answered "unchanged").
    pub fn confirm_current(&self) {
        if self.state_path.is_none() {
            self.confirmed_unix_ms
                .store(now_unix_ms().max(1), Ordering::Release);
        }
    }

    /// How long since a copy was last known current; None for the manager's own state.
    pub fn copy_age(&self) -> Option<std::time::Duration> {
        let confirmed = self.confirmed_unix_ms.load(Ordering::Acquire);
        (confirmed != 0)
            .then(|| std::time::Duration::from_millis(now_unix_ms().saturating_sub(confirmed)))
    }

    /// Replaces a read-only copy's state with a newer snapshot of the catalog.
    pub fn install(&self, state: ManagerState) -> Result<(), ManagerError> {
        if self.state_path.is_some() {
            return Err(ManagerError::Corrupt {
                path: PathBuf::new(),
                detail: "a snapshot can only be installed into a read-only copy".into(),
            });
        }
        self.state.store(Arc::new(state));
        self.confirm_current();
        Ok(())
    }

    /// The state encoded as a snapshot (the `state.json` layout, compact): what a node
    /// without the manager role fetches.
    pub fn encode_snapshot(state: &ManagerState) -> Vec<u8> {
        let file = StateFileRef {
            format_version: STATE_FORMAT_VERSION,
            state,
        };
        // Maps with string keys and plain values always serialize.
        serde_json::to_vec(&file).unwrap_or_default()
    }

    /// Decodes (and checks) a snapshot made by [`Manager::encode_snapshot`].
    pub fn decode_snapshot(bytes: &[u8]) -> Result<ManagerState, ManagerError> {
        parse_state(Path::new("<catalog snapshot>"), bytes)
    }

    /// The current state; lock-free, cheap enough to call on every request.
    pub fn snapshot(&self) -> Arc<ManagerState> {
        self.state.load_full()
    }

    /// Runs `read` on the current state without touching a shared reference count (cheaper than
    /// [`Manager::snapshot`] on hot paths shared by many cores); `read` must not block.
    pub fn with_snapshot<R>(&self, read: impl FnOnce(&ManagerState) -> R) -> R {
        read(&self.state.load())
    }

    /// Creates a bucket owned by `owner` (durable before returning).
    pub fn create_bucket(
        &self,
        name: &str,
        owner: &str,
        acl: BucketAcl,
    ) -> Result<Bucket, ManagerError> {
        validate_bucket_name(name)?;
        self.mutate(|state| {
            if state.user(owner).is_none() {
                return Err(ManagerError::NoSuchUser(owner.to_owned()));
            }
            if let Some(existing) = state.bucket(name) {
                return Err(if existing.owner == owner {
                    ManagerError::BucketAlreadyOwnedByYou(name.to_owned())
                } else {
                    ManagerError::BucketAlreadyExists(name.to_owned())
                });
            }
            let bucket = Bucket {
                name: name.to_owned(),
                owner: owner.to_owned(),
                acl,
                created_unix_ms: now_unix_ms(),
                incarnation: new_incarnation()?,
            };
            state.buckets.insert(name.to_owned(), bucket.clone());
            Ok(bucket)
        })
    }

    /// Removes the record of bucket `name` at `incarnation` (the caller has checked that this
    /// incarnation is empty). A bucket of that name created again since is left alone: the
    /// answer is then NoSuchBucket, as the bucket that was checked is gone.
    pub fn delete_bucket(&self, name: &str, incarnation: u64) -> Result<(), ManagerError> {
        self.mutate(|state| match state.buckets.get(name) {
            Some(bucket) if bucket.incarnation == incarnation => {
                state.buckets.remove(name);
                Ok(())
            }
            _ => Err(ManagerError::NoSuchBucket(name.to_owned())),
        })
    }

    /// Replaces a bucket's canned ACL.
    pub fn set_bucket_acl(&self, name: &str, acl: BucketAcl) -> Result<(), ManagerError> {
        self.mutate(|state| match state.buckets.get_mut(name) {
            Some(bucket) => {
                bucket.acl = acl;
                Ok(())
            }
            None => Err(ManagerError::NoSuchBucket(name.to_owned())),
        })
    }

    /// Creates a user with a fresh key pair.
    pub fn create_user(&self, user_id: &str) -> Result<Credentials, ManagerError> {
        validate_user_id(user_id)?;
        self.mutate(|state| {
            if state.user(user_id).is_some() {
                return Err(ManagerError::UserExists(user_id.to_owned()));
            }
            let credentials = generate_credentials(user_id, state)?;
            state.users.insert(
                user_id.to_owned(),
                User {
                    id: user_id.to_owned(),
                    is_admin: false,
                    created_unix_ms: now_unix_ms(),
                },
            );
            insert_key(state, &credentials);
            Ok(credentials)
        })
    }

    /// Deletes a user and its keys (refused while it owns buckets).
    pub fn delete_user(&self, user_id: &str) -> Result<(), ManagerError> {
        self.mutate(|state| {
            if state.user(user_id).is_none() {
                return Err(ManagerError::NoSuchUser(user_id.to_owned()));
            }
            if state.buckets.values().any(|bucket| bucket.owner == user_id) {
                return Err(ManagerError::UserOwnsBuckets(user_id.to_owned()));
            }
            state.users.remove(user_id);
            state.keys.retain(|_, key| key.user_id != user_id);
            Ok(())
        })
    }

    /// The token that authorizes admin API calls (stored mode 0600 in the data dir).
    pub fn admin_token(&self) -> String {
        self.admin_token.clone()
    }

    /// Applies `change` to a copy of the current state, makes it durable, then publishes it.
    /// Nothing is published if `change` or the write fails.
    fn mutate<T>(
        &self,
        change: impl FnOnce(&mut ManagerState) -> Result<T, ManagerError>,
    ) -> Result<T, ManagerError> {
        let state_path = self.state_path.as_ref().ok_or(ManagerError::ReadOnlyCopy)?;
        // The guarded data is `()`, so a panic in another writer leaves nothing inconsistent.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = ManagerState::clone(&self.state.load());
        let out = change(&mut next)?;
        persist_state(state_path, &next)?;
        self.state.store(Arc::new(next));
        Ok(out)
    }
}

/// A fresh bucket incarnation: random and nonzero (0 marks buckets older than incarnations).
fn new_incarnation() -> Result<u64, ManagerError> {
    loop {
        let mut bytes = [0u8; 8];
        crate::persist::random_bytes(&mut bytes)?;
        let incarnation = u64::from_le_bytes(bytes);
        if incarnation != 0 {
            return Ok(incarnation);
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// User ids: 1–64 characters among ASCII letters, digits, '.', '_', '-', '@'.
fn validate_user_id(user_id: &str) -> Result<(), ManagerError> {
    let reject = |reason: &'static str| {
        Err(ManagerError::InvalidUserId {
            user_id: user_id.to_owned(),
            reason,
        })
    };
    if user_id.is_empty() {
        return reject("must not be empty");
    }
    if user_id.len() > USER_ID_MAX_CHARS {
        return reject("longer than 64 characters");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@');
    if !user_id.bytes().all(allowed) {
        return reject("only ASCII letters, digits, '.', '_', '-' and '@' are allowed");
    }
    Ok(())
}

/// Checks operator-supplied root credentials and binds them to the admin user.
fn validate_root(root: Credentials) -> Result<Credentials, ManagerError> {
    let key_len = root.access_key_id.chars().count();
    if !(ROOT_ACCESS_KEY_MIN_CHARS..=ROOT_ACCESS_KEY_MAX_CHARS).contains(&key_len) {
        return Err(ManagerError::InvalidCredentials(
            "access key id must be 3 to 128 characters",
        ));
    }
    let printable = |s: &str| s.chars().all(|c| c.is_ascii_graphic());
    if !printable(&root.access_key_id) || !printable(&root.secret_access_key) {
        return Err(ManagerError::InvalidCredentials(
            "access key id and secret must be printable ASCII without spaces",
        ));
    }
    if root.secret_access_key.chars().count() < ROOT_SECRET_MIN_CHARS {
        return Err(ManagerError::InvalidCredentials(
            "secret key must be at least 8 characters",
        ));
    }
    Ok(Credentials {
        user_id: ADMIN_USER_ID.to_owned(),
        ..root
    })
}

/// A fresh key pair for `user_id`, with an access key id not used in `state`.
fn generate_credentials(user_id: &str, state: &ManagerState) -> Result<Credentials, ManagerError> {
    let access_key_id = loop {
        let candidate = random_string(ACCESS_KEY_ALPHABET, ACCESS_KEY_ID_CHARS)?;
        if state.access_key(&candidate).is_none() {
            break candidate;
        }
    };
    Ok(Credentials {
        user_id: user_id.to_owned(),
        access_key_id,
        secret_access_key: random_string(SECRET_ALPHABET, SECRET_KEY_CHARS)?,
    })
}

fn insert_key(state: &mut ManagerState, credentials: &Credentials) {
    state.keys.insert(
        credentials.access_key_id.clone(),
        AccessKey {
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: credentials.secret_access_key.clone(),
            user_id: credentials.user_id.clone(),
        },
    );
}

/// The state of a first start: the admin user and its key pair.
fn first_state(root: &Credentials, now_unix_ms: u64) -> ManagerState {
    let mut state = ManagerState::default();
    state.users.insert(
        root.user_id.clone(),
        User {
            id: root.user_id.clone(),
            is_admin: true,
            created_unix_ms: now_unix_ms,
        },
    );
    insert_key(&mut state, root);
    state
}

/// Logs when the operator passes root keys that differ from the stored admin key: the stored
/// key stays (replacing it silently would lock out whoever uses it).
fn warn_if_root_differs(state: &ManagerState, root: &Credentials) {
    let matches = state.access_key(&root.access_key_id).is_some_and(|key| {
        key.secret_access_key == root.secret_access_key
            && state.user(&key.user_id).is_some_and(|user| user.is_admin)
    });
    if !matches {
        tracing::warn!(
            access_key_id = %root.access_key_id,
            "root credentials given at start differ from the stored admin key; keeping the stored key \
             (root credentials only apply on first start)"
        );
    }
}

/// The root key pair in the AWS shared-credentials format (usable as `AWS_SHARED_CREDENTIALS_FILE`).
fn credentials_file(root: &Credentials) -> String {
    format!(
        "# leofs root credentials (user {}), created at first start\n[default]\n\
         aws_access_key_id = {}\naws_secret_access_key = {}\n",
        root.user_id, root.access_key_id, root.secret_access_key
    )
}

fn load_or_create_token(path: &Path) -> Result<String, ManagerError> {
    let (token, _) = load_or_create_secret(path, "admin token", true)?
        .unwrap_or_else(|| unreachable!("a token is created when the file is missing"));
    Ok(token)
}

/// A secret kept in a file of its own (`admin.token`, the cluster secret): the trimmed text of
/// `path`, or, when the file does not exist and `create` is set, a fresh one (32 random bytes,
/// hex-encoded) written there atomically with mode 0600. Returns the text and whether it was
/// created now; None when the file is missing and `create` is not set. `what` names the secret
/// in errors.
pub fn load_or_create_secret(
    path: &Path,
    what: &str,
    create: bool,
) -> Result<Option<(String, bool)>, ManagerError> {
    match read_if_exists(path)? {
        Some(bytes) => {
            let secret = String::from_utf8(bytes)
                .map(|text| text.trim().to_owned())
                .map_err(|_| corrupt(path, format!("{what} is not UTF-8")))?;
            if secret.is_empty() {
                return Err(corrupt(path, format!("{what} file is empty")));
            }
            Ok(Some((secret, false)))
        }
        None if create => {
            let secret = new_hex_secret()?;
            write_atomic(path, format!("{secret}\n").as_bytes())?;
            Ok(Some((secret, true)))
        }
        None => Ok(None),
    }
}

fn parse_state(path: &Path, bytes: &[u8]) -> Result<ManagerState, ManagerError> {
    let file: StateFile =
        serde_json::from_slice(bytes).map_err(|err| corrupt(path, err.to_string()))?;
    if file.format_version != STATE_FORMAT_VERSION {
        return Err(corrupt(
            path,
            format!(
                "format version {} is not supported (expected {STATE_FORMAT_VERSION})",
                file.format_version
            ),
        ));
    }
    check_references(&file.state).map_err(|detail| corrupt(path, detail))?;
    Ok(file.state)
}

/// Every record must point at records that exist, under the id it is filed by.
fn check_references(state: &ManagerState) -> Result<(), String> {
    for (id, user) in &state.users {
        if *id != user.id {
            return Err(format!("user filed as {id:?} has id {:?}", user.id));
        }
    }
    for (id, key) in &state.keys {
        if *id != key.access_key_id {
            return Err(format!(
                "key filed as {id:?} has id {:?}",
                key.access_key_id
            ));
        }
        if state.user(&key.user_id).is_none() {
            return Err(format!(
                "key {id:?} belongs to unknown user {:?}",
                key.user_id
            ));
        }
    }
    for (name, bucket) in &state.buckets {
        if *name != bucket.name {
            return Err(format!(
                "bucket filed as {name:?} has name {:?}",
                bucket.name
            ));
        }
        if state.user(&bucket.owner).is_none() {
            return Err(format!(
                "bucket {name:?} belongs to unknown user {:?}",
                bucket.owner
            ));
        }
    }
    Ok(())
}

fn persist_state(path: &Path, state: &ManagerState) -> Result<(), ManagerError> {
    let file = StateFileRef {
        format_version: STATE_FORMAT_VERSION,
        state,
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|err| corrupt(path, err.to_string()))?;
    write_atomic(path, &bytes)
}

fn corrupt(path: &Path, detail: String) -> ManagerError {
    ManagerError::Corrupt {
        path: path.to_path_buf(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    fn open(dir: &Path) -> (Manager, Option<Credentials>) {
        Manager::open(dir, None).unwrap()
    }

    fn incarnation_of(manager: &Manager, bucket: &str) -> u64 {
        manager.snapshot().bucket(bucket).unwrap().incarnation
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn first_start_creates_admin_with_generated_keys_and_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, created) = open(dir.path());
        let root = created.expect("first start returns the root credentials");
        assert_eq!(root.user_id, ADMIN_USER_ID);
        assert_eq!(root.access_key_id.len(), ACCESS_KEY_ID_CHARS);
        assert!(
            root.access_key_id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
        assert_eq!(root.secret_access_key.len(), SECRET_KEY_CHARS);
        assert!(
            root.secret_access_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );

        let snapshot = manager.snapshot();
        assert!(snapshot.user(ADMIN_USER_ID).unwrap().is_admin);
        let key = snapshot.access_key(&root.access_key_id).unwrap();
        assert_eq!(key.secret_access_key, root.secret_access_key);
        assert_eq!(key.user_id, ADMIN_USER_ID);

        let manager_dir = dir.path().join(MANAGER_DIR);
        assert_eq!(mode_of(&manager_dir), 0o700);
        for file in [STATE_FILE, ADMIN_TOKEN_FILE, CREDENTIALS_FILE] {
            assert_eq!(mode_of(&manager_dir.join(file)), 0o600, "{file}");
        }
        let credentials = fs::read_to_string(manager_dir.join(CREDENTIALS_FILE)).unwrap();
        assert!(credentials.contains(&format!("aws_access_key_id = {}", root.access_key_id)));
        assert!(credentials.contains(&format!(
            "aws_secret_access_key = {}",
            root.secret_access_key
        )));
        let token = fs::read_to_string(manager_dir.join(ADMIN_TOKEN_FILE)).unwrap();
        assert_eq!(token.trim(), manager.admin_token());
        assert_eq!(manager.admin_token().len(), 64);
    }

    #[test]
    fn reopen_keeps_everything_and_returns_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, root) = open(dir.path());
        let root = root.unwrap();
        let alice = manager.create_user("alice").unwrap();
        manager
            .create_bucket("photos", "alice", BucketAcl::PublicRead)
            .unwrap();
        let token = manager.admin_token();
        drop(manager);

        let (manager, created) = open(dir.path());
        assert!(created.is_none());
        assert_eq!(manager.admin_token(), token);
        let snapshot = manager.snapshot();
        assert!(snapshot.access_key(&root.access_key_id).is_some());
        assert_eq!(
            snapshot.access_key(&alice.access_key_id).unwrap().user_id,
            "alice"
        );
        let bucket = snapshot.bucket("photos").unwrap();
        assert_eq!(
            (bucket.owner.as_str(), bucket.acl),
            ("alice", BucketAcl::PublicRead)
        );
    }

    #[test]
    fn given_root_credentials_are_used_on_first_start_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = Credentials {
            user_id: "ignored".to_owned(),
            access_key_id: "ROOTKEY".to_owned(),
            secret_access_key: "rootsecret".to_owned(),
        };
        let (manager, created) = Manager::open(dir.path(), Some(root.clone())).unwrap();
        let created = created.unwrap();
        assert_eq!(created.user_id, ADMIN_USER_ID);
        assert_eq!(created.access_key_id, "ROOTKEY");
        assert_eq!(
            manager
                .snapshot()
                .access_key("ROOTKEY")
                .unwrap()
                .secret_access_key,
            "rootsecret"
        );
        drop(manager);

        let other = Credentials {
            access_key_id: "OTHERKEY".to_owned(),
            ..root
        };
        let (manager, created) = Manager::open(dir.path(), Some(other)).unwrap();
        assert!(created.is_none());
        let snapshot = manager.snapshot();
        assert!(snapshot.access_key("ROOTKEY").is_some());
        assert!(snapshot.access_key("OTHERKEY").is_none());
    }

    #[test]
    fn invalid_root_credentials_are_refused_before_anything_is_stored() {
        for (key, secret) in [
            ("AB", "longenough"),
            (&*"K".repeat(129), "longenough"),
            ("GOODKEY", "short"),
            ("BAD KEY", "longenough"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let root = Credentials {
                user_id: ADMIN_USER_ID.to_owned(),
                access_key_id: key.to_owned(),
                secret_access_key: secret.to_owned(),
            };
            let err = Manager::open(dir.path(), Some(root)).err().unwrap();
            assert!(
                matches!(err, ManagerError::InvalidCredentials(_)),
                "{key:?}/{secret:?}: {err}"
            );
            assert!(!dir.path().join(MANAGER_DIR).join(STATE_FILE).exists());
        }
    }

    #[test]
    fn bucket_creation_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        manager.create_user("alice").unwrap();
        manager.create_user("bob").unwrap();
        let bucket = manager
            .create_bucket("shared", "alice", BucketAcl::Private)
            .unwrap();
        assert_eq!(bucket.owner, "alice");
        assert!(matches!(
            manager.create_bucket("shared", "alice", BucketAcl::Private),
            Err(ManagerError::BucketAlreadyOwnedByYou(name)) if name == "shared"
        ));
        assert!(matches!(
            manager.create_bucket("shared", "bob", BucketAcl::Private),
            Err(ManagerError::BucketAlreadyExists(name)) if name == "shared"
        ));
        assert!(matches!(
            manager.create_bucket("Bad_Name", "alice", BucketAcl::Private),
            Err(ManagerError::InvalidBucketName { .. })
        ));
        assert!(matches!(
            manager.create_bucket("orphan", "nobody", BucketAcl::Private),
            Err(ManagerError::NoSuchUser(_))
        ));
        assert!(manager.snapshot().bucket("orphan").is_none());
    }

    #[test]
    fn delete_and_acl_semantics_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        manager.create_user("alice").unwrap();
        manager
            .create_bucket("keep", "alice", BucketAcl::Private)
            .unwrap();
        manager
            .create_bucket("drop", "alice", BucketAcl::Private)
            .unwrap();
        manager
            .set_bucket_acl("keep", BucketAcl::PublicReadWrite)
            .unwrap();
        manager
            .delete_bucket("drop", incarnation_of(&manager, "drop"))
            .unwrap();
        assert!(matches!(
            manager.delete_bucket("drop", 0),
            Err(ManagerError::NoSuchBucket(_))
        ));
        assert!(matches!(
            manager.set_bucket_acl("drop", BucketAcl::Private),
            Err(ManagerError::NoSuchBucket(_))
        ));
        drop(manager);
        let (manager, _) = open(dir.path());
        let snapshot = manager.snapshot();
        assert!(snapshot.bucket("drop").is_none());
        assert_eq!(
            snapshot.bucket("keep").unwrap().acl,
            BucketAcl::PublicReadWrite
        );
    }

    #[test]
    fn a_bucket_created_again_gets_a_new_incarnation_and_old_buckets_keep_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        manager.create_user("alice").unwrap();
        let first = manager
            .create_bucket("again", "alice", BucketAcl::Private)
            .unwrap();
        manager.delete_bucket("again", first.incarnation).unwrap();
        let second = manager
            .create_bucket("again", "alice", BucketAcl::Private)
            .unwrap();
        assert_ne!(first.incarnation, 0);
        assert_ne!(second.incarnation, 0);
        assert_ne!(first.incarnation, second.incarnation);
        drop(manager);
        // A state file written before incarnations existed: its buckets read as incarnation 0.
        let path = dir.path().join(MANAGER_DIR).join(STATE_FILE);
        let mut state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let reopened_incarnation = state["state"]["buckets"]["again"]["incarnation"].clone();
        assert_eq!(reopened_incarnation, serde_json::json!(second.incarnation));
        state["state"]["buckets"]["again"]
            .as_object_mut()
            .unwrap()
            .remove("incarnation");
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        let (manager, _) = open(dir.path());
        assert_eq!(manager.snapshot().bucket("again").unwrap().incarnation, 0);
    }

    #[test]
    fn user_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        let alice = manager.create_user("alice").unwrap();
        assert!(matches!(
            manager.create_user("alice"),
            Err(ManagerError::UserExists(_))
        ));
        for bad in ["", "has space", "slash/user", &"u".repeat(65)] {
            assert!(
                matches!(
                    manager.create_user(bad),
                    Err(ManagerError::InvalidUserId { .. })
                ),
                "{bad:?}"
            );
        }
        manager
            .create_bucket("alices", "alice", BucketAcl::Private)
            .unwrap();
        assert!(matches!(
            manager.delete_user("alice"),
            Err(ManagerError::UserOwnsBuckets(_))
        ));
        manager
            .delete_bucket("alices", incarnation_of(&manager, "alices"))
            .unwrap();
        manager.delete_user("alice").unwrap();
        assert!(matches!(
            manager.delete_user("alice"),
            Err(ManagerError::NoSuchUser(_))
        ));
        let snapshot = manager.snapshot();
        assert!(snapshot.user("alice").is_none());
        assert!(snapshot.access_key(&alice.access_key_id).is_none());
        drop(manager);
        let (manager, _) = open(dir.path());
        assert!(
            manager
                .snapshot()
                .access_key(&alice.access_key_id)
                .is_none()
        );
    }

    #[test]
    fn snapshots_are_immutable_points_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        let before = manager.snapshot();
        manager.create_user("carol").unwrap();
        assert!(before.user("carol").is_none());
        assert!(manager.snapshot().user("carol").is_some());
        assert!(manager.with_snapshot(|state| state.user("carol").is_some()));
    }

    #[test]
    fn concurrent_mutations_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        let manager = Arc::new(manager);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let manager = Arc::clone(&manager);
                std::thread::spawn(move || {
                    let user = format!("user{i}");
                    manager.create_user(&user).unwrap();
                    manager
                        .create_bucket(&format!("bucket-{i}"), &user, BucketAcl::Private)
                        .unwrap();
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(manager);
        let (manager, _) = open(dir.path());
        let snapshot = manager.snapshot();
        assert_eq!(snapshot.users.len(), 9);
        assert_eq!(snapshot.buckets.len(), 8);
        assert_eq!(snapshot.keys.len(), 9);
    }

    #[test]
    fn corrupt_state_is_reported_never_reset() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        manager.create_user("alice").unwrap();
        drop(manager);
        let state_path = dir.path().join(MANAGER_DIR).join(STATE_FILE);
        let good = fs::read(&state_path).unwrap();

        let truncated = &good[..good.len() / 2];
        let unknown_owner = String::from_utf8(good.clone()).unwrap().replacen(
            "\"buckets\": {}",
            "\"buckets\": {\"b1\": {\"name\": \"b1\", \"owner\": \"ghost\", \"acl\": \"private\", \"created_unix_ms\": 0}}",
            1,
        );
        let future_version = String::from_utf8(good.clone())
            .unwrap()
            .replace("\"format_version\": 1", "\"format_version\": 99");
        for bad in [
            truncated,
            b"not json at all",
            unknown_owner.as_bytes(),
            future_version.as_bytes(),
        ] {
            assert_ne!(bad, good.as_slice());
            fs::write(&state_path, bad).unwrap();
            match Manager::open(dir.path(), None) {
                Err(ManagerError::Corrupt { path, .. }) => assert_eq!(path, state_path),
                Err(other) => panic!("expected Corrupt, got {other}"),
                Ok(_) => panic!("corrupt state accepted: {}", String::from_utf8_lossy(bad)),
            }
            assert_eq!(
                fs::read(&state_path).unwrap(),
                bad,
                "the corrupt file must be left as it is"
            );
        }
    }

    #[test]
    fn leftover_temporary_file_from_a_crash_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (manager, _) = open(dir.path());
        manager.create_user("alice").unwrap();
        drop(manager);
        let state_path = dir.path().join(MANAGER_DIR).join(STATE_FILE);
        fs::write(
            crate::persist::temporary_path(&state_path),
            b"{half written",
        )
        .unwrap();
        let (manager, _) = open(dir.path());
        assert!(manager.snapshot().user("alice").is_some());
        manager.create_user("bob").unwrap();
        assert!(!crate::persist::temporary_path(&state_path).exists());
    }
}
