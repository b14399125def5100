//! Managers in one Raft group, in one process: each manager is real (its own data dir, log,
//! state machine and Raft thread); the transport between them hands a call straight to the
//! addressed manager instead of crossing the node wire (the wire has tests of its own, and
//! the multi-process tests run managers over it).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use leofs_manager::raft::network::{RaftCall, RaftTransport};
use leofs_manager::store::GroupOptions;
use leofs_manager::{BucketAcl, Manager, ManagerError};

/// The id the first manager's group gets.
const CLUSTER_ID: &str = "0123456789abcdef0123456789abcdef";

/// Managers by address; a dropped manager is unreachable.
#[derive(Default)]
struct InProcess {
    managers: Mutex<HashMap<String, Weak<Manager>>>,
}

impl RaftTransport for InProcess {
    fn call(
        &self,
        addr: &str,
        call: RaftCall,
        body: Vec<u8>,
        _timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let manager = self
            .managers
            .lock()
            .unwrap()
            .get(addr)
            .and_then(Weak::upgrade)
            .ok_or_else(|| format!("{addr} is down"))?;
        let answer = manager.serve_raft(call, body).map_err(|e| e.to_string())?;
        drop(manager);
        futures_executor(answer).map_err(|e| e.to_string())
    }
}

/// Runs a `Send` future to completion on this (blocking) thread.
fn futures_executor<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

fn start(net: &Arc<InProcess>, dir: &Path, addr: &str, join: bool) -> Arc<Manager> {
    start_with(net, dir, addr, join, false)
}

fn start_with(
    net: &Arc<InProcess>,
    dir: &Path,
    addr: &str,
    join: bool,
    recover: bool,
) -> Arc<Manager> {
    let options = GroupOptions {
        addr: addr.into(),
        join,
        recover,
        cluster_id: (!join).then(|| CLUSTER_ID.to_owned()),
        transport: Some(net.clone() as Arc<dyn RaftTransport>),
    };
    let (manager, _) = Manager::open_with(dir, None, options).unwrap();
    let manager = Arc::new(manager);
    net.managers
        .lock()
        .unwrap()
        .insert(addr.into(), Arc::downgrade(&manager));
    manager
}

fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_managers_replicate_forward_and_survive_their_leader() {
    let net = Arc::new(InProcess::default());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let m1 = start(&net, dirs[0].path(), "m1", false);
    let m2 = start(&net, dirs[1].path(), "m2", true);
    let m3 = start(&net, dirs[2].path(), "m3", true);
    // Joined managers hold nothing until they are added.
    assert!(m2.snapshot().users.is_empty());
    assert!(m2.group_status().unwrap().members.is_empty());

    let id2 = m1.add_manager("m2").unwrap();
    let id3 = m1.add_manager("m3").unwrap();
    let status = m1.group_status().unwrap();
    assert_eq!(status.members.len(), 3);
    assert!(status.members.iter().all(|member| member.voter));
    assert!(
        status
            .members
            .iter()
            .any(|m| m.node_id == id2 && m.addr == "m2")
    );
    assert!(
        status
            .members
            .iter()
            .any(|m| m.node_id == id3 && m.addr == "m3")
    );

    // The admin user reached the new managers with the leader's state.
    eventually(
        "the catalog reaches m2 and m3",
        Duration::from_secs(5),
        || m2.snapshot().user("admin").is_some() && m3.snapshot().user("admin").is_some(),
    );
    // So did the cluster id, which each manager keeps in its data dir.
    assert_eq!(m3.snapshot().cluster_id.as_deref(), Some(CLUSTER_ID));
    let kept = std::fs::read_to_string(dirs[2].path().join("cluster.id")).unwrap();
    assert_eq!(kept.trim(), CLUSTER_ID);
    m1.create_user("alice").unwrap();
    // A change through a follower is forwarded to the leader.
    m3.create_bucket("shared", "alice", BucketAcl::Private)
        .unwrap();
    assert!(matches!(
        m2.create_bucket("shared", "alice", BucketAcl::Private),
        Err(ManagerError::BucketAlreadyOwnedByYou(_))
    ));
    for manager in [&m1, &m2, &m3] {
        eventually(
            "every manager has the bucket",
            Duration::from_secs(5),
            || manager.snapshot().bucket("shared").is_some(),
        );
    }

    // The leader stops: the other two elect one and keep accepting changes.
    drop(m1);
    let started = Instant::now();
    m2.create_user("bob").unwrap();
    let failover = started.elapsed();
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );
    eventually("m3 has bob", Duration::from_secs(5), || {
        m3.snapshot().user("bob").is_some()
    });

    // The old leader comes back from its data dir and catches up.
    let m1 = start(&net, dirs[0].path(), "m1", false);
    eventually("m1 catches up", Duration::from_secs(10), || {
        m1.snapshot().user("bob").is_some()
    });
    m1.set_bucket_acl("shared", BucketAcl::PublicRead).unwrap();

    // A member is removed from the group through its leader.
    let managers = [&m1, &m2, &m3];
    let leader_id = m2.group_status().unwrap().leader.unwrap();
    let leader = managers
        .iter()
        .find(|m| m.group_status().unwrap().node_id == leader_id)
        .unwrap();
    let removed = if leader_id == id2 { id3 } else { id2 };
    leader.remove_manager(removed).unwrap();
    eventually("two members left", Duration::from_secs(5), || {
        leader.group_status().unwrap().members.len() == 2
    });
    leader.create_user("carol").unwrap();
}

#[test]
fn managers_that_only_join_never_form_a_group_of_their_own() {
    let net = Arc::new(InProcess::default());
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ma = start(&net, a.path(), "a", true);
    let mb = start(&net, b.path(), "b", true);
    std::thread::sleep(Duration::from_secs(3));
    for manager in [&ma, &mb] {
        let status = manager.group_status().unwrap();
        assert!(
            status.members.is_empty() && status.leader.is_none(),
            "{status:?}"
        );
        assert!(manager.snapshot().users.is_empty());
    }
}

#[test]
fn a_group_that_lost_its_quorum_is_recovered_from_one_managers_catalog() {
    let net = Arc::new(InProcess::default());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let m1 = start(&net, dirs[0].path(), "m1", false);
    let m2 = start(&net, dirs[1].path(), "m2", true);
    let m3 = start(&net, dirs[2].path(), "m3", true);
    m1.add_manager("m2").unwrap();
    m1.add_manager("m3").unwrap();
    m1.create_user("alice").unwrap();
    eventually("m2 has alice", Duration::from_secs(5), || {
        m2.snapshot().user("alice").is_some()
    });
    // Two of three managers are lost for good: m2 alone cannot make a change.
    drop((m1, m3));
    assert!(m2.create_user("bob").is_err());
    drop(m2);

    // Without its log, a manager that was in a group refuses to start a group on its own...
    let manager_dir = dirs[1].path().join("manager");
    let log = manager_dir.join(leofs_manager::raft::log::LOG_FILE);
    let saved = std::fs::read(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    std::fs::remove_file(manager_dir.join(leofs_manager::raft::log::META_FILE)).unwrap();
    let refused = Manager::open_with(
        dirs[1].path(),
        None,
        GroupOptions {
            addr: "m2".into(),
            ..GroupOptions::default()
        },
    );
    assert!(matches!(refused, Err(ManagerError::Corrupt { .. })));
    std::fs::write(&log, saved).unwrap();

    // ...and with --recover-group it starts a new group of one from its catalog.
    let m2 = start_with(&net, dirs[1].path(), "m2", false, true);
    let status = m2.group_status().unwrap();
    assert_eq!(status.members.len(), 1);
    assert_eq!(status.leader, Some(status.node_id));
    assert!(m2.snapshot().user("alice").is_some());
    m2.create_user("bob").unwrap();
    let m4 = start(
        &net,
        tempfile::tempdir().unwrap().keep().as_path(),
        "m4",
        true,
    );
    m2.add_manager("m4").unwrap();
    eventually(
        "m4 has the recovered catalog",
        Duration::from_secs(5),
        || {
            let state = m4.snapshot();
            state.user("alice").is_some() && state.user("bob").is_some()
        },
    );
}
