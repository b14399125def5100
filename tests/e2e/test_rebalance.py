"""Rebalance and recovery (DESIGN §4, §7; issue 14): a storage node attached to a loaded N=3
cluster, or detached from it, and `leofs-adm rebalance` moves partitions online: writes go to
the old and the new replicas until every moved partition is filled, then the ring flips and
the former owners hand over and drop what they no longer hold; a kill -9 of the source, the
target or the manager mid-move; a wiped node recovered (`recover-file`, `recover-node`); a
stopped node re-replicated automatically; and the compaction commands. Real processes on
loopback, real S3 clients, continuous mixed load through two gateways; no request may fail,
nothing may be lost, nothing deleted may come back."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError

from leofs_harness import DEPLOYMENT, sigv4_headers
from test_cluster import Cluster, eventually, list_all, put_many, records_by_node
from test_replication import Worker, error_code

pytestmark = pytest.mark.skipif(DEPLOYMENT == "split",
                                reason="clusters of their own; run once, in the all-in-one pass")


# Requests a second per worker, at most: the load's disk use grows with the test's length (on
# a slow machine a rebalance under load takes minutes, and unpaced workers wrote 25 GB there).
WORKER_STEPS_PER_SEC_MAX = 40


class Load:
    """Workers running in threads until stopped (also when the test fails: a context manager
    whose exit stops them), each paced to `WORKER_STEPS_PER_SEC_MAX`."""

    def __init__(self, workers: list[Worker]):
        self.workers = workers
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(w,), daemon=True)
                        for w in workers]
        for thread in self.threads:
            thread.start()

    def __enter__(self) -> "Load":
        return self

    def __exit__(self, *_) -> None:
        self.finish()

    def _loop(self, worker: Worker) -> None:
        step_s = 1 / WORKER_STEPS_PER_SEC_MAX
        next_at = time.monotonic()
        while not self.stop.is_set():
            worker.step()
            next_at = max(next_at + step_s, time.monotonic() - step_s)
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def finish(self) -> list[str]:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        return [f for w in self.workers for f in w.failures]


def rebalance_status(cluster: Cluster) -> dict:
    return json.loads(cluster.manager.adm("rebalance-status", json_output=True).stdout)


def partitions_by_node(cluster: Cluster) -> dict[int, int]:
    """How many partitions each storage node is the first replica of."""
    return {n["member"]["id"]: n["partitions"] for n in cluster.nodes(storage=True)}


def check_replicas_identical(cluster: Cluster, bucket: str, workers: list[Worker]) -> None:
    """Every key's three replicas identical (HLC and checksum), on the ring's replicas."""
    ring = json.loads(cluster.manager.adm("dump-ring", json_output=True).stdout)["ring"]
    assert ring.get("rebalance") is None
    for worker in workers:
        for key in worker.keys:
            where = json.loads(cluster.manager.adm(
                "whereis", f"{bucket}/{key}", json_output=True).stdout)
            replicas = [(r["found"], r["hlc"], r["checksum"]) for r in where["replicas"]]
            assert len(replicas) == 3 and len(set(replicas)) == 1, (key, where["replicas"])
            assert replicas[0][0] == (key in worker.expected), key


def versions_of(cluster: Cluster, bucket: str, keys) -> dict[str, set]:
    """Each key's replicas as `whereis` shows them: the set of (found, HLC, checksum)."""
    versions = {}
    for key in keys:
        where = json.loads(cluster.manager.adm("whereis", f"{bucket}/{key}", json_output=True).stdout)
        versions[key] = {(r["found"], r["hlc"], r["checksum"]) for r in where["replicas"]}
    return versions


def cluster_state(cluster: Cluster, also: tuple[str, ...] = ()) -> AssertionError:
    """What the next reader of a stalled rebalance needs, as the error to raise: the rebalance's
    phase and counts, `leofs-adm status`, and every node's last warnings and errors (and lines
    containing any of `also`)."""
    def plain(server) -> list[str]:
        text = re.sub(r"\x1b\[[0-9;]*m", "", server.stderr_path.read_text(errors="replace"))
        return [line[:300] for line in text.splitlines()
                if any(mark in line for mark in (" WARN ", " ERROR ", *also))][-8:]
    warnings = {str(s.data_dir): plain(s)
                for s in [*cluster.storage, *cluster.gateways, *cluster.managers]}
    return AssertionError(json.dumps({
        "rebalance": rebalance_status(cluster),
        "status": cluster.manager.adm("status").stdout,
        "warnings": warnings}, indent=1)[:20000])


def rebalance_or_explain(cluster: Cluster, timeout_s: float):
    """`leofs-adm rebalance` (which waits until the ring is settled); if it does not finish in
    `timeout_s` (below pytest's own timeout, so that this runs), fails with the cluster's state
    and its nodes' hand-over lines."""
    try:
        return cluster.manager.adm("rebalance", timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise cluster_state(cluster, also=("handed a partition over",)) from None


def test_a_node_attached_to_a_loaded_cluster_and_detached_again_loses_nothing(make_server):
    # Anti-entropy every 20 ms: every partition's repaired-at watermark is raised soon.
    cluster = Cluster(make_server, storage=3, gateways=2, replicas=3, cores=2,
                      storage_env={"LEOFS_ANTI_ENTROPY_INTERVAL_MS": "20"})
    clients = [g.client() for g in cluster.gateways]
    clients[0].create_bucket(Bucket="moving")
    # Keys written and deleted before the move, that no worker touches during it; old enough
    # that the watermarks lie above them (a watermark lags its pass by 60 s): a new replica
    # must get them all the same, and keep them through a second move.
    settled = Worker("settled", clients[0], "moving", keys=60, seed=99)
    for _ in range(300):
        settled.step()
    assert not settled.failures, settled.failures[:5]
    time.sleep(70)
    epoch_before = rebalance_status(cluster)["ring_epoch"]
    # What the settled keys' replicas hold before the move: one version each, which every
    # replica keeps, with the same HLC and checksum, through both moves.
    settled_before = versions_of(cluster, "moving", settled.keys)
    assert all(len(v) == 1 for v in settled_before.values()), settled_before

    # Attach: a fourth storage node starts (it registers as attached) and the ring is
    # rebalanced onto it while four workers keep writing, reading, deleting and listing.
    workers = [Worker(f"w{i}", clients[i % 2], "moving", keys=40, seed=i) for i in range(4)]
    with Load(workers) as load:
        eventually("the load runs", 60, lambda: sum(w.ops for w in workers) >= 100)
        fourth = cluster.new_storage()
        fourth.start()
        cluster.storage.append(fourth)
        eventually("the fourth node is attached", 30,
                   lambda: cluster.state_of(fourth) == "attached")
        out = rebalance_or_explain(cluster, 200)
    failures = load.finish()
    assert not failures, f"{len(failures)} failed of {sum(w.ops for w in workers)}: {failures[:10]}"
    assert sum(w.ops for w in workers) > 100
    assert "idle" in out.stdout, out.stdout
    status = rebalance_status(cluster)
    assert status["phase"] == "idle" and status["ring_epoch"] >= epoch_before + 2, status
    assert cluster.state_of(fourth) == "running"
    partitions = partitions_by_node(cluster)
    assert len(partitions) == 4 and min(partitions.values()) > 0, partitions
    assert max(partitions.values()) - min(partitions.values()) <= max(partitions.values()) // 4 + 1, partitions
    for worker in [settled, *workers]:
        assert not worker.check_all(clients[1]), worker.name
    listed = list_all(clients[0], "moving")
    assert sorted(listed) == sorted(k for w in [settled, *workers] for k in w.expected)
    check_replicas_identical(cluster, "moving", [settled, *workers])
    assert versions_of(cluster, "moving", settled.keys) == settled_before
    fourth_id = cluster.node_of(fourth)["member"]["id"]
    eventually("the fourth node holds records", 10, lambda: records_by_node(cluster)[fourth_id] > 0)

    # Detach it again, under the same load: its partitions move back to the three others,
    # and once the ring is settled it holds nothing.
    cluster.manager.adm("detach", str(fourth_id))
    with Load(workers) as load:
        ops = sum(w.ops for w in workers)
        eventually("the load runs", 60, lambda: sum(w.ops for w in workers) >= ops + 100)
        out = rebalance_or_explain(cluster, 200)
    failures = load.finish()
    assert not failures, f"{len(failures)} failed of {sum(w.ops for w in workers)}: {failures[:10]}"
    assert "idle" in out.stdout, out.stdout
    assert cluster.state_of(fourth) == "detached"
    partitions = partitions_by_node(cluster)
    assert partitions[fourth_id] == 0, partitions
    for worker in [settled, *workers]:
        assert not worker.check_all(clients[0]), worker.name
    check_replicas_identical(cluster, "moving", [settled, *workers])
    assert versions_of(cluster, "moving", settled.keys) == settled_before
    eventually("the detached node holds no record", 30,
               lambda: records_by_node(cluster)[fourth_id] == 0)

    # `leofs-adm attach` takes the detached node back as attached (the next rebalance would
    # give it partitions); a node running in the ring is not attached.
    out = cluster.manager.adm("attach", str(fourth_id))
    assert "attached" in out.stdout, out.stdout
    assert cluster.state_of(fourth) == "attached"
    first_id = cluster.node_of(cluster.storage[0])["member"]["id"]
    refused = cluster.manager.adm("attach", str(first_id), check=False)
    assert refused.returncode != 0 and "only a detached node" in refused.stderr, refused.stderr


@pytest.mark.parametrize("victim", ["source", "target", "manager"])
def test_a_rebalance_resumes_after_a_kill_in_the_middle_and_loses_nothing(make_server, victim):
    # Pushes capped at 1 MiB/s a core: the move of the 50 MB below takes several seconds, so
    # it is caught in the middle (uncapped, it can be over between two looks at its status).
    cluster = Cluster(make_server, storage=3, gateways=2, replicas=3, cores=2,
                      storage_env={"LEOFS_PUSH_BYTES_PER_SEC_PER_CORE": str(1 << 20)})
    clients = [g.client() for g in cluster.gateways]
    clients[0].create_bucket(Bucket="moving")
    bulk = [f"bulk/{i:05d}" for i in range(2500)]
    put_many(clients[0], "moving", bulk, body=lambda key: key.encode() * 2000)
    workers = [Worker(f"w{i}", clients[i % 2], "moving", keys=40, seed=i) for i in range(4)]
    with Load(workers) as load:
        fourth = cluster.new_storage()
        fourth.start()
        cluster.storage.append(fourth)
        eventually("the fourth node is attached", 30,
                   lambda: cluster.state_of(fourth) == "attached")
        cluster.manager.adm("rebalance", "--no-wait")
        manager = cluster.manager
        # (Generous: the whole suite runs two passes at once on two cores.)
        try:
            eventually("the move is under way", 180,
                       lambda: rebalance_status(cluster)["filled_partitions"] > 0)
        except AssertionError:
            raise cluster_state(cluster) from None
        status = rebalance_status(cluster)
        assert status["phase"] == "moving", status
        assert status["filled_partitions"] < status["moving_partitions"], status
        target = {"source": cluster.storage[0], "target": fourth, "manager": manager}[victim]
        target.kill9()
        time.sleep(3)
        target.start()
        eventually("the rebalance is done", 300,
                   lambda: rebalance_status(cluster)["phase"] == "idle")
    failures = load.finish()
    assert not failures, f"{len(failures)} failed of {sum(w.ops for w in workers)}: {failures[:10]}"
    assert cluster.state_of(fourth) == "running"
    for key in bulk:
        got = clients[1].get_object(Bucket="moving", Key=key)["Body"].read()
        assert got == key.encode() * 2000, key
    for worker in workers:
        assert not worker.check_all(clients[1]), worker.name
    listed = list_all(clients[0], "moving")
    assert sorted(listed) == sorted(bulk + [k for w in workers for k in w.expected])
    check_replicas_identical(cluster, "moving", workers)


def test_puts_longer_than_the_chunk_grace_survive_a_rebalance_that_moves_their_objects(make_server):
    # A chunk grace of 2 s (the sweepers run every 5 s) and PUTs streamed over 24 s, a 4 MiB
    # chunk every 2 s: the ring changes under them, and their first chunks are older than the
    # grace long before they commit (the sweepers' hold-off after the last ring change ends
    # well before). The objects whose partition moves to the new node must not have those
    # chunks swept as orphans (their writes were registered on the old node).
    chunk, chunks, keys = 4 * 1024 * 1024, 12, [f"long/{i}" for i in range(8)]
    cluster = Cluster(make_server, storage=1, gateways=1, replicas=1, cores=2,
                      storage_env={"LEOFS_CHUNK_GRACE_SECS": "2"})
    gateway = cluster.gateways[0]
    gateway.client().create_bucket(Bucket="long")
    bodies = {key: os.urandom(chunk) * chunks for key in keys}
    conns = {}
    for key in keys:
        path = f"/long/{key}"
        headers = sigv4_headers("PUT", f"127.0.0.1:{gateway.s3_port}", path, None,
                                {"content-length": str(chunk * chunks)}, "UNSIGNED-PAYLOAD",
                                gateway.access_key, gateway.secret_key)
        conn = http.client.HTTPConnection("127.0.0.1", gateway.s3_port, timeout=120)
        conn.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        conns[key] = conn
    epoch_before = rebalance_status(cluster)["ring_epoch"]
    second = cluster.new_storage()
    thread_errors: list[BaseException] = []

    def attach_and_rebalance() -> None:
        try:
            second.start()
            eventually("the second node is attached", 30,
                       lambda: cluster.state_of(second) == "attached")
            cluster.manager.adm("rebalance", timeout=120)
        except BaseException as e:  # reported by the test's own thread below
            thread_errors.append(e)

    rebalanced = threading.Thread(target=attach_and_rebalance)
    for index in range(chunks):
        started = time.monotonic()
        for key in keys:
            conns[key].send(bodies[key][index * chunk:(index + 1) * chunk])
        if index == 2:
            # The writes have begun (registered on the first node alone) before the ring
            # changes.
            cluster.storage.append(second)
            rebalanced.start()
        time.sleep(max(0.0, 2 - (time.monotonic() - started)))
    rebalanced.join()
    assert not thread_errors, thread_errors
    status = rebalance_status(cluster)
    assert status["phase"] == "idle" and status["ring_epoch"] >= epoch_before + 2, status
    for key in keys:
        answer = conns[key].getresponse()
        assert answer.status == 200, (key, answer.status, answer.read()[:300])
    second_id = cluster.node_of(second)["member"]["id"]
    moved = [key for key in keys if any(
        r["node"] == second_id for r in json.loads(cluster.manager.adm(
            "whereis", f"long/{key}", json_output=True).stdout)["replicas"])]
    assert moved, "no object moved to the new node"
    client = gateway.client()
    for key in keys:
        got = client.get_object(Bucket="long", Key=key)["Body"].read()
        assert got == bodies[key], (key, key in moved, len(got))


def test_a_wiped_node_gets_every_replica_back_with_recover_file_and_recover_node(make_server):
    cluster = Cluster(make_server, storage=3, gateways=1, replicas=3, cores=2)
    client = cluster.gateways[0].client()
    client.create_bucket(Bucket="kept")
    writer = Worker("kept", client, "kept", keys=300, seed=7)
    for _ in range(1200):
        writer.step()
    assert not writer.failures, writer.failures[:5]
    big = b"chunked" * (3 * 1024 * 1024)
    client.put_object(Bucket="kept", Key="big", Body=big)
    victim = cluster.storage[2]
    victim_id = cluster.node_of(victim)["member"]["id"]
    victim.kill9()
    shutil.rmtree(victim.data_dir)
    victim.start()
    eventually("the wiped node is running", 60, lambda: cluster.state_of(victim) == "running")
    assert cluster.node_of(victim)["member"]["id"] == victim_id

    def found_on(key: str) -> list[bool]:
        where = json.loads(cluster.manager.adm("whereis", f"kept/{key}", json_output=True).stdout)
        return [r["found"] for r in where["replicas"]]

    # One object (with its chunks) at once.
    assert found_on("big").count(True) == 2
    out = cluster.manager.adm("recover-file", "kept/big")
    assert "repaired" in out.stdout, out.stdout
    assert found_on("big") == [True, True, True]
    # Then the whole node; reads are right all along (the other two replicas answer).
    started = time.monotonic()
    out = cluster.manager.adm("recover-node", str(victim_id), timeout=600)
    took = time.monotonic() - started
    assert "recovery of node" in out.stdout and "idle" in out.stdout, out.stdout
    status = json.loads(cluster.manager.adm("recovery-status", json_output=True).stdout)
    assert status["node"] == victim_id and status["done"] == status["partitions"] > 0, status
    print(f"recover-node: {status['partitions']} partitions in {took:.1f} s")
    assert not writer.check_all(client)
    assert client.get_object(Bucket="kept", Key="big")["Body"].read() == big
    check_replicas_identical(cluster, "kept", [writer])


def test_a_node_stopped_past_auto_recover_after_is_re_replicated_and_its_own_writes_survive(make_server):
    cluster = Cluster(make_server, storage=4, gateways=1, replicas=3, cores=1)
    client = cluster.gateways[0].client()
    manager = cluster.manager
    client.create_bucket(Bucket="kept")
    client.create_bucket(Bucket="fast")
    manager.adm("update-consistency-level", "--bucket", "fast", "1", "1", "1")
    kept = Worker("kept", client, "kept", keys=120, seed=3)
    for _ in range(400):
        kept.step()
    assert not kept.failures, kept.failures[:5]
    victim, b, c, _ = cluster.storage
    ids = {s: cluster.node_of(s)["member"]["id"] for s in cluster.storage}
    # With two of the other three out of service, the victim takes W=1 writes that no other
    # replica of their partitions gets (their hints are on the victim too).
    manager.adm("suspend", str(ids[b]))
    manager.adm("suspend", str(ids[c]))
    own = {f"own/{i:03d}": f"only-{i}".encode() * 100 for i in range(60)}
    for key, body in own.items():
        client.put_object(Bucket="fast", Key=key, Body=body)
    manager.adm("update-auto-recover-after", "5")
    victim.kill9()
    manager.adm("resume", str(ids[b]))
    manager.adm("resume", str(ids[c]))
    # Stopped for 5 s, then 5 s more: its partitions are re-replicated onto the other three.
    eventually("the automatic re-replication starts", 60,
               lambda: rebalance_status(cluster)["recovering_node"] == ids[victim])
    eventually("the automatic re-replication is done", 300,
               lambda: rebalance_status(cluster)["phase"] == "idle")
    assert cluster.state_of(victim) == "detached"
    partitions = partitions_by_node(cluster)
    assert partitions[ids[victim]] == 0 and all(
        count > 0 for node, count in partitions.items() if node != ids[victim]), partitions
    assert not kept.check_all(client)
    check_replicas_identical(cluster, "kept", [kept])
    # Back, it hands over what only it held, then drops it.
    victim.start()

    def reads(key: str, body: bytes) -> bool:
        try:
            return client.get_object(Bucket="fast", Key=key)["Body"].read() == body
        except ClientError as e:
            assert error_code(e) == "NoSuchKey", e
            return False

    for key, body in own.items():
        eventually(f"{key} is back", 60, lambda: reads(key, body))
    eventually("the detached node holds no record", 60,
               lambda: records_by_node(cluster)[ids[victim]] == 0)
    for key in own:
        where = json.loads(manager.adm("whereis", f"fast/{key}", json_output=True).stdout)
        replicas = [(r["found"], r["hlc"]) for r in where["replicas"]]
        assert len(replicas) == 3 and len(set(replicas)) == 1 and replicas[0][0], (key, replicas)


def test_a_node_away_longer_than_the_tombstone_grace_is_re_replicated_and_rejoins_wiped(make_server):
    # Hints expire well within the grace (as they must): none brings a record back.
    cluster = Cluster(make_server, storage=4, gateways=1, replicas=3, cores=1,
                      storage_env={"LEOFS_HINT_TTL_SECS": "1"})
    client = cluster.gateways[0].client()
    manager = cluster.manager
    client.create_bucket(Bucket="fast")
    manager.adm("update-consistency-level", "--bucket", "fast", "1", "1", "1")
    victim, b, c, d = cluster.storage
    ids = {s: cluster.node_of(s)["member"]["id"] for s in cluster.storage}
    # As above: with b and c out of service, the victim takes W=1 writes; those of the
    # partitions d does not hold it alone has.
    manager.adm("suspend", str(ids[b]))
    manager.adm("suspend", str(ids[c]))
    time.sleep(3)  # the gateway knows they are suspended (its catalog, within a second)
    own = {f"own/{i:03d}": f"only-{i}".encode() * 100 for i in range(60)}
    for key, body in own.items():
        client.put_object(Bucket="fast", Key=key, Body=body)

    def replicas(key: str) -> set[int]:
        where = json.loads(manager.adm("whereis", f"fast/{key}", json_output=True).stdout)
        return {r["node"] for r in where["replicas"]}

    # A key whose replicas are the victim, b and c is on the victim alone; one that d is a
    # replica of is on d too.
    alone = {key for key in own if ids[d] not in replicas(key)}
    shared = set(own) - alone
    assert alone and shared, (alone, shared)
    out = manager.adm("update-tombstone-grace", "3").stdout
    assert "rejoins wiped" in out, out
    # Automatic re-replication turned off: the grace alone gives the node's partitions to the
    # others (the cluster waits no longer than the grace for a node's records).
    out = manager.adm("update-auto-recover-after", "0").stdout
    assert "only once it has been away for the tombstone grace (00:00:03)" in out, out
    victim.kill9()
    manager.adm("resume", str(ids[b]))
    manager.adm("resume", str(ids[c]))
    eventually("the automatic re-replication is done", 300,
               lambda: cluster.state_of(victim) == "detached"
               and rebalance_status(cluster)["phase"] == "idle")
    time.sleep(5)  # detached for longer than the 3 s grace

    def read(key: str) -> bytes | str:
        try:
            return client.get_object(Bucket="fast", Key=key)["Body"].read()
        except ClientError as e:
            return error_code(e)

    # Every key is read all along, before and while the node comes back: what it alone held
    # is gone (older than every watermark, as the grace assumes), the rest is served (from
    # replicas that the re-replication may not have reached yet: a miss on one replica is
    # checked against the others), and no read fails.
    wrong: list[str] = []
    stop = threading.Event()

    def keep_reading() -> None:
        while not stop.is_set():
            for key, body in own.items():
                got = read(key)
                if got != ("NoSuchKey" if key in alone else body):
                    wrong.append(f"{key}: {got!r}"[:200])

    reader = threading.Thread(target=keep_reading, daemon=True)
    reader.start()
    try:
        time.sleep(1)
        victim.start()
        # Back after the grace, it drops everything without handing it over.
        eventually("the node back after the grace holds no record", 60,
                   lambda: records_by_node(cluster)[ids[victim]] == 0)
        time.sleep(1)
    finally:
        stop.set()
        reader.join(timeout=60)
    assert not wrong, wrong[:10]
    assert "rejoins wiped" in victim.stderr_path.read_text(errors="replace")
    assert cluster.state_of(victim) == "detached"
    assert "attached" in manager.adm("attach", str(ids[victim])).stdout


def test_compact_suspend_start_status_and_resume_drive_a_nodes_compaction(make_server):
    srv = make_server(config_toml="[engine]\nsegment_size_bytes = 16777216\n")
    client = srv.client()
    client.create_bucket(Bucket="compacted")

    def shards() -> list[dict]:
        info = json.loads(srv.adm("compact-status", "0", json_output=True).stdout)
        return (info.get("heartbeat") or {}).get("shards", [])

    srv.adm("compact-suspend", "0")
    eventually("compaction is paused on every shard", 30,
               lambda: shards() and all(s["compaction_suspended"] for s in shards()))
    body = os.urandom(1 << 20)
    keys = [f"big/{i:03d}" for i in range(48)]
    put_many(client, "compacted", keys, body=lambda _: body)
    for key in keys:
        client.delete_object(Bucket="compacted", Key=key)
    eventually("the deletions show as dead bytes", 30,
               lambda: sum(s["dead_bytes"] for s in shards()) > 32 << 20)
    # Paused: a background pass (every 10 s) reclaims nothing.
    time.sleep(12)
    dead = sum(s["dead_bytes"] for s in shards())
    assert dead > 32 << 20, shards()
    assert all(s["segments_compacted"] == 0 for s in shards()), shards()
    # Asked: every sealed segment of dead records is reclaimed (the head segment of each
    # shard, still being written, is not a candidate).
    srv.adm("compact-start", "0")
    eventually("the asked pass reclaims the sealed segments' dead bytes", 60,
               lambda: sum(s["dead_bytes"] for s in shards()) <= dead - (16 << 20)
               and all(s["last_compaction_unix_ms"] > 0 for s in shards()))
    assert sum(s["segments_compacted"] for s in shards()) > 0
    text = srv.adm("compact-status", "0").stdout
    assert "suspended" in text and "segments compacted" in text, text
    srv.adm("compact-resume", "0")
    eventually("compaction runs again", 30,
               lambda: not any(s["compaction_suspended"] for s in shards()))
