"""The manager on Raft (issue 12): a group of three managers in separate processes talking over
the node wire, built with `leofs-adm add-manager`, surviving `kill -9` of its leader; managers
that only join never form a group of their own; a manager with another cluster secret cannot
be added. These tests start their own servers, whatever LEOFS_E2E_DEPLOYMENT says."""

from __future__ import annotations

import json
import secrets
import threading
import time

import pytest

from leofs_harness import ServerError, free_rpc_ports

#: A new leader is elected within the election timeout (1–2 s) after the old one's last
#: heartbeat; a change waits for it (WRITE_TIMEOUT 10 s). Room for a loaded machine.
FAILOVER_DEADLINE_S = 10.0


def rpc_addr(port: int) -> str:
    return f"127.0.0.1:{port}"


def start_first(make_server):
    port = free_rpc_ports(1)
    srv = make_server(deployment="all-in-one", cores=1, extra_args=["--rpc-listen", rpc_addr(port)])
    srv.rpc_port = port
    return srv


def start_joining(make_server, join_port: int, secret_file) -> object:
    port = free_rpc_ports(1)
    srv = make_server(
        deployment="all-in-one",
        cores=1,
        root_keys=False,
        listen_flag=False,
        extra_args=[
            "--roles", "manager",
            "--rpc-listen", rpc_addr(port),
            "--join", rpc_addr(join_port),
            "--cluster-secret-file", str(secret_file),
        ],
    )
    srv.rpc_port = port
    return srv


def group(srv) -> dict:
    return json.loads(srv.adm("managers", json_output=True).stdout)


def users(srv) -> set[str]:
    return {u["user_id"] for u in json.loads(srv.adm("get-users", json_output=True).stdout)}


def eventually(what: str, within_s: float, check) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        time.sleep(0.2)


def test_three_managers_replicate_forward_and_survive_kill9_of_their_leader(make_server):
    m1 = start_first(make_server)
    secret = m1.data_dir / "cluster.secret"
    m2 = start_joining(make_server, m1.rpc_port, secret)
    m3 = start_joining(make_server, m1.rpc_port, secret)
    assert any(f"leofs-adm add-manager {rpc_addr(m2.rpc_port)}" in line
               for line in m2.stdout_lines), m2.stdout_lines
    # Before it is added, a joining manager belongs to no group and holds nothing.
    assert group(m2)["members"] == [] and users(m2) == set()

    m1.adm("add-manager", rpc_addr(m2.rpc_port))
    m1.adm("add-manager", rpc_addr(m3.rpc_port))
    view = group(m2)
    assert len(view["members"]) == 3 and all(m["voter"] for m in view["members"]), view
    leader_id = group(m1)["node_id"]
    assert view["leader"] == leader_id, view
    # The first manager's catalog (its admin user) reached the others.
    eventually("m3 has the admin user", 5, lambda: "admin" in users(m3))

    # Changes through followers are forwarded to the leader, under load while it is killed.
    acked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def create_users(srv, prefix):
        n = 0
        while not stop.is_set():
            name = f"{prefix}-{n}"
            res = srv.adm("create-user", name, check=False)
            if res.returncode == 0:
                acked.append(name)
            else:
                failures.append(res.stderr.strip())
            n += 1

    workers = [
        threading.Thread(target=create_users, args=(m2, "via-m2")),
        threading.Thread(target=create_users, args=(m3, "via-m3")),
    ]
    for w in workers:
        w.start()
    time.sleep(1.5)
    before_kill = len(acked)
    m1.kill9()
    killed_at = time.monotonic()
    eventually("a change is made after the leader died", FAILOVER_DEADLINE_S + 5,
               lambda: len(acked) > before_kill + 2)
    failover_s = time.monotonic() - killed_at
    stop.set()
    for w in workers:
        w.join(timeout=60)
        assert not w.is_alive(), "a leofs-adm call hung"
    assert before_kill > 0, "no change was made before the kill"
    assert failover_s < FAILOVER_DEADLINE_S + 5, f"failover took {failover_s:.1f} s"
    new_leader = group(m2)["leader"]
    assert new_leader is not None and new_leader != leader_id, group(m2)

    # Every acknowledged change is on both survivors.
    for srv in (m2, m3):
        eventually(f"every acknowledged user on {srv.admin_addr}", 5,
                   lambda srv=srv: set(acked) <= users(srv))

    # The old leader comes back from its data dir and catches up as a follower.
    m1.start()
    eventually("m1 catches up", 15, lambda: set(acked) <= users(m1))
    assert group(m1)["leader"] == new_leader
    print(f"failover: {failover_s:.1f} s, {len(acked)} users acknowledged, "
          f"{len(failures)} refused while the group had no leader")


def test_managers_that_only_join_never_form_a_group(make_server, tmp_path):
    secret = tmp_path / "cluster.secret"
    secret.write_text(secrets.token_hex(32) + "\n")
    nobody = free_rpc_ports(1)
    a = start_joining(make_server, nobody, secret)
    b = start_joining(make_server, a.rpc_port, secret)
    time.sleep(3)  # longer than an election timeout
    for srv in (a, b):
        view = group(srv)
        assert view["members"] == [] and view["leader"] is None, view
        assert users(srv) == set()


def test_a_manager_with_another_cluster_secret_cannot_be_added(make_server, tmp_path):
    m1 = start_first(make_server)
    other = tmp_path / "other.secret"
    other.write_text(secrets.token_hex(32) + "\n")
    stranger = start_joining(make_server, m1.rpc_port, other)
    res = m1.adm("add-manager", rpc_addr(stranger.rpc_port), check=False)
    assert res.returncode != 0, res.stdout
    assert "ServiceUnavailable" in res.stderr or "unreachable" in res.stderr.lower(), res.stderr
    assert [m["node_id"] for m in group(m1)["members"]] == [group(m1)["node_id"]]
    assert group(stranger)["members"] == []


def test_a_node_of_another_cluster_is_refused_even_with_the_same_secret(make_server):
    a = start_first(make_server)
    secret = a.data_dir / "cluster.secret"
    port_b = free_rpc_ports(1)
    b = make_server(deployment="all-in-one", cores=1,
                    extra_args=["--rpc-listen", rpc_addr(port_b), "--cluster-secret-file", str(secret)])
    b.rpc_port = port_b
    id_a = (a.data_dir / "cluster.id").read_text().strip()
    id_b = (b.data_dir / "cluster.id").read_text().strip()
    assert len(id_a) == 32 and id_a != id_b, (id_a, id_b)

    # A manager of cluster B is not added to cluster A: the handshake refuses it.
    res = a.adm("add-manager", rpc_addr(b.rpc_port), check=False)
    assert res.returncode != 0, res.stdout
    assert [m["node_id"] for m in group(a)["members"]] == [group(a)["node_id"]]
    eventually("B logs the refusal", 5, lambda: "another cluster" in b.stderr_path.read_text())

    # A gateway joins A (its first start presents the joining id and learns A's id) ...
    gw = make_server(deployment="all-in-one", cores=1, root_keys=False,
                     extra_args=["--roles", "gateway", "--join", rpc_addr(a.rpc_port),
                                 "--cluster-secret-file", str(secret)])
    assert (gw.data_dir / "cluster.id").read_text().strip() == id_a
    gw.client(a.access_key, a.secret_key).list_buckets()
    assert gw.stop() == 0
    # ... and from then on cannot join B.
    gw.extra_args[gw.extra_args.index(rpc_addr(a.rpc_port))] = rpc_addr(b.rpc_port)
    with pytest.raises(ServerError):
        gw.start(timeout_s=30)
    assert "another cluster" in b.stderr_path.read_text()
