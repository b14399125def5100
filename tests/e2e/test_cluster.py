"""Many nodes on one RING (issue 12): manager-only processes, storage-only processes started
with `leofs-adm start`, and gateway-only processes, all on loopback. Objects spread over the
storage nodes in proportion to their shards; S3 clients see one store through any gateway;
listing is complete and ordered across nodes; node states follow heartbeats and operators;
the data path goes on while every manager is down (nodes restarted then start from the catalog
they saved); a node with another secret is refused.
These tests start their own processes, whatever LEOFS_E2E_DEPLOYMENT says."""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import signal
import subprocess
import threading
import time

import pytest
import requests
from botocore.exceptions import ClientError

from leofs_harness import (
    DEPLOYMENT, AwsCli, Rclone, ServerError, clean_env, free_rpc_ports, leofs_bin,
)

# These tests start their own processes: once per suite run is enough.
pytestmark = pytest.mark.skipif(DEPLOYMENT == "split",
                                reason="starts its own cluster; run in the all-in-one pass")

#: A node silent for NODE_STOPPED_AFTER (5 s) is marked stopped by the leader's next look
#: (every second); the gateway learns node states with its catalog copy (every second).
STATE_DEADLINE_S = 15.0


def eventually(what: str, within_s: float, check) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        time.sleep(0.2)


# Segments of 32 MiB instead of 256: each core keeps its head and the next segments allocated
# ahead, about 0.8 GiB a core at the default, and the suite runs several clusters at once.
STORAGE_CONFIG = "[engine]\nsegment_size_bytes = 33554432\n"


class Cluster:
    """Managers, storage nodes and gateways, each a `leofs server` process of its own."""

    def __init__(self, make_server, *, managers: int = 1, storage: int = 3, gateways: int = 1,
                 cores: int = 1, replicas: int = 1, storage_env: dict | None = None,
                 storage_config: str | None = None, storage_dirs: dict | None = None):
        """`storage_dirs` maps a storage node's index to a data directory of its own (e.g. on
        a small file system); `storage_config` replaces STORAGE_CONFIG."""
        self.make_server = make_server
        self.cores = cores
        self.storage_env = storage_env
        self.storage_config = storage_config or STORAGE_CONFIG
        self.managers = []
        first_port = free_rpc_ports(1)
        first = make_server(deployment="all-in-one", cores=1, extra_args=[
            "--roles", "manager", "--rpc-listen", f"127.0.0.1:{first_port}"])
        first.rpc_port = first_port
        self.managers.append(first)
        self.secret = first.data_dir / "cluster.secret"
        for _ in range(managers - 1):
            port = free_rpc_ports(1)
            manager = make_server(deployment="all-in-one", cores=1, root_keys=False,
                                  extra_args=["--roles", "manager",
                                              "--rpc-listen", f"127.0.0.1:{port}",
                                              "--join", f"127.0.0.1:{first_port}",
                                              "--cluster-secret-file", str(self.secret)])
            manager.rpc_port = port
            first.adm("add-manager", f"127.0.0.1:{port}")
            self.managers.append(manager)
        self.join = ",".join(f"127.0.0.1:{m.rpc_port}" for m in self.managers)
        self.storage = [self.new_storage(data_dir=(storage_dirs or {}).get(i))
                        for i in range(storage)]
        starts = [threading.Thread(target=node.start) for node in self.storage]
        for thread in starts:
            thread.start()
        eventually("every storage node registered", 60, lambda: len(self.nodes(storage=True)) == storage)
        started = first.adm("start", "--replicas", str(replicas)).stdout
        assert "the cluster is started" in started, started
        for thread in starts:
            thread.join()
        assert all(node.running() for node in self.storage), "a storage node did not start"
        self.gateways = [self.new_gateway() for _ in range(gateways)]

    def new_storage(self, secret=None, data_dir=None):
        port = free_rpc_ports(self.cores)
        node = self.make_server(start=False, deployment="all-in-one", cores=self.cores,
                                root_keys=False, listen_flag=False, extra_env=self.storage_env,
                                config_toml=self.storage_config,
                                extra_args=["--roles", "storage", "--join", self.join,
                                            "--rpc-listen", f"127.0.0.1:{port}",
                                            "--cluster-secret-file", str(secret or self.secret)])
        if data_dir is not None:
            node.data_dir.rmdir()
            node.data_dir = data_dir
        node.rpc_port = port
        return node

    def new_gateway(self, extra_env=None):
        gateway = self.make_server(deployment="all-in-one", cores=1, extra_env=extra_env,
                                   extra_args=["--roles", "gateway", "--join", self.join,
                                               "--cluster-secret-file", str(self.secret)])
        return gateway

    @property
    def manager(self):
        return next(m for m in self.managers if m.running())

    def status(self) -> dict:
        return json.loads(self.manager.adm("status", json_output=True).stdout)["cluster"]

    def nodes(self, storage: bool | None = None) -> list[dict]:
        nodes = self.status()["nodes"]
        if storage is not None:
            nodes = [n for n in nodes if n["member"]["storage"] == storage]
        return nodes

    def node_of(self, server) -> dict:
        addr = f"127.0.0.1:{server.rpc_port}"
        return next(n for n in self.nodes() if n["member"]["addr"] == addr)

    def state_of(self, server) -> str:
        return self.node_of(server)["member"]["state"]


def put_many(client, bucket: str, keys: list[str], body=lambda key: key.encode()) -> None:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=body(key)), keys))


def list_all(client, bucket: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def records_by_node(cluster: Cluster) -> dict[int, int]:
    return {n["member"]["id"]: sum(s["live_records"] for s in n["heartbeat"]["shards"])
            for n in cluster.nodes(storage=True)}


def test_objects_spread_over_the_nodes_and_clients_see_one_store(make_server, tmp_path):
    cluster = Cluster(make_server, storage=3, gateways=2)
    gateway, other = cluster.gateways
    status = cluster.status()
    assert status["ring_epoch"] == 1 and status["partitions"] >= 1024, status
    partitions = {n["member"]["id"]: n["partitions"] for n in cluster.nodes(storage=True)}
    assert sum(partitions.values()) == status["partitions"]
    assert max(partitions.values()) - min(partitions.values()) <= 2, partitions

    s3 = gateway.client(max_pool_connections=32)
    s3.create_bucket(Bucket="spread")
    keys = [f"obj/{i:05d}" for i in range(600)]
    before = records_by_node(cluster)
    put_many(s3, "spread", keys)
    eventually("every node's heartbeat counts the new records", 10,
               lambda: sum(records_by_node(cluster).values()) - sum(before.values()) >= 600)
    counts = {node: after - before[node] for node, after in records_by_node(cluster).items()}
    print(f"records per storage node after 600 PUTs: {counts}")
    # One shard each: a third each, within what 600 random keys allow.
    assert all(140 <= count <= 260 for count in counts.values()), counts

    # The other gateway sees the bucket and the objects at once.
    s3b = other.client()
    assert s3b.get_object(Bucket="spread", Key="obj/00042")["Body"].read() == b"obj/00042"
    assert list_all(s3b, "spread") == keys

    # A bucket created through one gateway is usable through another at once.
    s3b.create_bucket(Bucket="made-on-b")
    s3.put_object(Bucket="made-on-b", Key="k", Body=b"v")
    assert s3b.get_object(Bucket="made-on-b", Key="k")["Body"].read() == b"v"

    # aws-cli and rclone against the cluster.
    aws = AwsCli(gateway, tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}.bin").write_bytes(os.urandom(1000 + 97_000 * i))
    aws("s3", "cp", "--recursive", str(src), "s3://spread/cli/")
    rclone = Rclone(other, tmp_path)
    rclone("check", str(src), "leo:spread/cli")
    back = tmp_path / "back"
    rclone("copy", "leo:spread/cli", str(back))
    assert sorted(p.name for p in back.iterdir()) == sorted(p.name for p in src.iterdir())
    big = os.urandom(24 * 1024 * 1024 + 5)
    s3.put_object(Bucket="spread", Key="big", Body=big)
    assert s3b.get_object(Bucket="spread", Key="big")["Body"].read() == big

    # whereis names the one replica; dump-ring lists every partition.
    where = json.loads(cluster.manager.adm("whereis", "spread/obj/00042", json_output=True).stdout)
    (replica,) = where["replicas"]
    assert replica["found"] and replica["size"] == len(b"obj/00042"), where
    ring = json.loads(cluster.manager.adm("dump-ring", json_output=True).stdout)
    assert len(ring["ring"]["table"]) == status["partitions"]
    du = cluster.manager.adm("du", str(replica["node"])).stdout
    assert "records" in du, du

    # Every node serves /metrics on its admin listener; only managers serve the admin API.
    for node in (gateway, cluster.storage[0]):
        metrics = requests.get(f"http://{node.admin_addr}/metrics", timeout=10)
        assert metrics.status_code == 200 and "leofs_live_bytes" in metrics.text, metrics.text[:500]
    assert "leofs_s3_requests_total" in requests.get(
        f"http://{gateway.admin_addr}/metrics", timeout=10).text
    refused = requests.get(f"http://{gateway.admin_addr}/v1/users", timeout=10)
    assert refused.status_code == 404 and "NoManagerRole" in refused.text

    # DeleteBucket is refused while any node holds one of the bucket's objects.
    s3.create_bucket(Bucket="to-delete")
    s3.put_object(Bucket="to-delete", Key="x", Body=b"1")
    not_empty = cluster.manager.adm("delete-bucket", "to-delete", check=False)
    assert not_empty.returncode != 0 and "BucketNotEmpty" in not_empty.stderr, not_empty.stderr
    with pytest.raises(ClientError) as s3_not_empty:
        s3b.delete_bucket(Bucket="to-delete")
    assert s3_not_empty.value.response["Error"]["Code"] == "BucketNotEmpty"
    s3.delete_object(Bucket="to-delete", Key="x")
    s3b.delete_bucket(Bucket="to-delete")

    def gone_everywhere():
        try:
            s3.head_bucket(Bucket="to-delete")
            return False
        except ClientError:
            return True
    # Another gateway's catalog copy follows within a second.
    eventually("the deleted bucket is gone through the other gateway", 3, gone_everywhere)


def test_listing_of_ten_thousand_keys_is_complete_and_ordered_across_nodes(make_server):
    cluster = Cluster(make_server, storage=3, gateways=1, cores=2)
    s3 = cluster.gateways[0].client(max_pool_connections=32)
    s3.create_bucket(Bucket="many")
    keys = [f"{prefix}/{i:05d}" for prefix in ("a", "b/c", "d") for i in range(3334)][:10_000]
    put_many(s3, "many", keys, body=lambda key: b"")
    listed = list_all(s3, "many")
    assert len(listed) == 10_000
    assert listed == sorted(keys)
    delimited = s3.list_objects_v2(Bucket="many", Delimiter="/")
    assert [p["Prefix"] for p in delimited["CommonPrefixes"]] == ["a/", "b/", "d/"]
    # Every node holds some of them.
    assert all(count > 2000 for count in records_by_node(cluster).values()), records_by_node(cluster)


def test_delete_bucket_is_two_phase_and_loses_no_acknowledged_write(make_server):
    """A writer puts and deletes keys through one gateway while another gateway deletes the
    bucket: no PUT sent after the deletion was acknowledged succeeds (the writer's gateway had
    seen the mark before the bucket went), and no acknowledged PUT is left behind in the
    deleted bucket. Gateways refuse writes while a deletion is under way (409)."""
    cluster = Cluster(make_server, storage=3, gateways=2)
    writer_gw, deleter_gw = cluster.gateways
    writes, deletes = writer_gw.client(), deleter_gw.client()
    deletes.create_bucket(Bucket="racing")
    writes.head_bucket(Bucket="racing")
    stop = threading.Event()
    puts, orphans = [], []

    def writer():
        i = 0
        while not stop.is_set():
            key = f"k{i}"
            i += 1
            sent = time.monotonic()
            try:
                writes.put_object(Bucket="racing", Key=key, Body=b"x")
            except ClientError as e:
                puts.append((sent, e.response["Error"]["Code"]))
                continue
            puts.append((sent, "ok"))
            while not stop.is_set():
                try:
                    writes.delete_object(Bucket="racing", Key=key)
                    break
                except ClientError as e:
                    code = e.response["Error"]["Code"]
                    if code == "NoSuchBucket":
                        orphans.append(key)
                        break
                    assert code == "OperationAborted", code
                    time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(1)
    outcomes, deleted_at = [], None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            deletes.delete_bucket(Bucket="racing")
            deleted_at = time.monotonic()
            outcomes.append("deleted")
            break
        except ClientError as e:
            outcomes.append(e.response["Error"]["Code"])
    time.sleep(1.5)  # longer than a gateway's catalog may lag
    stop.set()
    thread.join(timeout=30)
    codes = [code for _, code in puts]
    print(f"delete attempts: {outcomes}; PUT outcomes: "
          f"{ {c: codes.count(c) for c in set(codes)} }")
    assert deleted_at is not None, outcomes
    assert set(outcomes[:-1]) <= {"BucketNotEmpty"}, outcomes
    assert set(codes) <= {"ok", "OperationAborted", "NoSuchBucket"}, set(codes)
    late = [code for sent, code in puts if sent > deleted_at and code == "ok"]
    assert not late, f"{len(late)} PUTs sent after the bucket was deleted were acknowledged"
    assert not orphans, f"PUTs acknowledged into the deleted bucket: {orphans}"


def test_node_states_follow_heartbeats_and_operators(make_server):
    cluster = Cluster(make_server, storage=3, gateways=1)
    s3 = cluster.gateways[0].client()
    s3.create_bucket(Bucket="states")
    keys = [f"k{i}" for i in range(60)]
    put_many(s3, "states", keys)
    victim = cluster.storage[1]
    victim_id = cluster.node_of(victim)["member"]["id"]
    on_victim = [k for k in keys if json.loads(cluster.manager.adm(
        "whereis", f"states/{k}", json_output=True).stdout)["replicas"][0]["node"] == victim_id]
    elsewhere = [k for k in keys if k not in on_victim]
    assert on_victim and elsewhere

    # Suspended by an operator: its keys fail at once with 503, the others are served.
    cluster.manager.adm("suspend", str(victim_id))
    assert cluster.state_of(victim) == "suspended"

    def refused():
        try:
            s3.get_object(Bucket="states", Key=on_victim[0])
            return False
        except ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    eventually("the gateway refuses the suspended node's keys", STATE_DEADLINE_S, refused)
    started = time.monotonic()
    with pytest.raises(ClientError):
        s3.get_object(Bucket="states", Key=on_victim[0])
    assert time.monotonic() - started < 2.0, "a suspended node's key should fail at once"
    assert s3.get_object(Bucket="states", Key=elsewhere[0])["Body"].read() == elsewhere[0].encode()
    refused_twice = cluster.manager.adm("suspend", str(victim_id), check=False)
    assert refused_twice.returncode != 0 and "suspended" in refused_twice.stderr
    cluster.manager.adm("resume", str(victim_id))
    eventually("the resumed node's keys are served", STATE_DEADLINE_S,
               lambda: not refused())

    # kill -9: stopped after its heartbeats stop; back: restarted, then running.
    victim.kill9()
    eventually("the killed node is stopped", STATE_DEADLINE_S,
               lambda: cluster.state_of(victim) == "stopped")
    victim.start()
    eventually("the restarted node runs again", STATE_DEADLINE_S,
               lambda: cluster.state_of(victim) == "running")
    for key in keys:
        assert s3.get_object(Bucket="states", Key=key)["Body"].read() == key.encode()


def test_the_data_path_goes_on_while_every_manager_is_down(make_server):
    cluster = Cluster(make_server, storage=3, gateways=1)
    s3 = cluster.gateways[0].client()
    s3.create_bucket(Bucket="nomanager")
    s3.put_object(Bucket="nomanager", Key="before", Body=b"1")
    (manager,) = cluster.managers
    manager.kill9()
    # Longer than any catalog-age limit: the gateway serves from its last catalog and ring.
    deadline = time.monotonic() + 15
    i = 0
    while time.monotonic() < deadline:
        s3.put_object(Bucket="nomanager", Key=f"during/{i}", Body=str(i).encode())
        assert s3.get_object(Bucket="nomanager", Key=f"during/{i}")["Body"].read() == str(i).encode()
        i += 1
        time.sleep(0.05)
    listed = list_all(s3, "nomanager")
    assert len(listed) == i + 1
    # A bucket nobody has seen cannot be checked without a manager: 503, not NoSuchBucket.
    with pytest.raises(ClientError) as unknown:
        s3.list_objects_v2(Bucket="never-made")
    assert unknown.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503

    # A storage node and the gateway crash and restart while no manager answers: each starts
    # from the catalog and ring it saved on disk, and every object is served again.
    storage, gateway = cluster.storage[0], cluster.gateways[0]
    storage.kill9()
    gateway.kill9()
    storage.start()
    gateway.start()
    for server in (storage, gateway):
        log = server.stderr_path.read_text()
        assert "starting from the catalog and ring this node saved" in log, log[-2000:]
    s3 = gateway.client()
    listed = list_all(s3, "nomanager")
    assert len(listed) == i + 1
    for key in listed:
        expected = b"1" if key == "before" else key.split("/")[1].encode()
        assert s3.get_object(Bucket="nomanager", Key=key)["Body"].read() == expected
    for j in range(30):
        s3.put_object(Bucket="nomanager", Key=f"restarted/{j}", Body=b"r")

    manager.start()
    s3.put_object(Bucket="nomanager", Key="after", Body=b"2")
    assert s3.get_object(Bucket="nomanager", Key="before")["Body"].read() == b"1"
    eventually("the restarted storage node runs again", STATE_DEADLINE_S,
               lambda: cluster.state_of(storage) == "running")


def test_clock_offsets_are_measured_and_one_beyond_the_bound_is_reported(make_server):
    cluster = Cluster(make_server, storage=2, gateways=1)
    # A gateway whose clock reads 3 s ahead (the cluster's bound is 500 ms).
    skewed = cluster.new_gateway(extra_env={"LEOFS_TEST_CLOCK_OFFSET_MS": "3000"})
    name = lambda server: server.data_dir.joinpath("node.name").read_text().strip()

    def info(addr):
        return next((n for n in cluster.nodes() if n["member"]["addr"] == addr), None)

    def offset_ms(addr):
        node = info(addr)
        beat = node and node["heartbeat"]
        return None if not beat or beat.get("clock_offset_us") is None \
            else beat["clock_offset_us"] / 1000
    skewed_addr, plain_addr = name(skewed), name(cluster.gateways[0])
    eventually("both gateways report a clock offset", STATE_DEADLINE_S,
               lambda: offset_ms(skewed_addr) is not None and offset_ms(plain_addr) is not None)
    assert 2_500 < offset_ms(skewed_addr) < 3_500, offset_ms(skewed_addr)
    assert abs(offset_ms(plain_addr)) < 250, offset_ms(plain_addr)
    assert info(skewed_addr)["clock_beyond_bound"] is True
    assert info(plain_addr)["clock_beyond_bound"] is False
    table = cluster.manager.adm("status").stdout
    assert "(beyond the bound)" in table, table
    log = skewed.stderr_path.read_text()
    assert "clock is off the managers' by more than the cluster's bound" in log, log[-2000:]

    # Each node also measures its clock against every storage node directly (issue 13: the
    # offset per peer): the skewed gateway finds both 3 s behind it, the others find none.
    storage_ids = {n["member"]["id"] for n in cluster.nodes(storage=True)}

    def peer_offsets_ms(addr) -> dict[int, float]:
        beat = info(addr)["heartbeat"] or {}
        return {c["node"]: c["offset_us"] / 1000 for c in beat.get("peer_clocks", [])}
    eventually("the skewed gateway measured every storage node's clock", STATE_DEADLINE_S,
               lambda: set(peer_offsets_ms(skewed_addr)) == storage_ids)
    assert all(2_500 < ms < 3_500 for ms in peer_offsets_ms(skewed_addr).values()), \
        peer_offsets_ms(skewed_addr)
    first_storage = f"127.0.0.1:{cluster.storage[0].rpc_port}"
    for addr in [plain_addr, first_storage]:
        eventually(f"{addr} measured its peers' clocks", STATE_DEADLINE_S,
                   lambda: peer_offsets_ms(addr))
        assert all(abs(ms) < 250 for ms in peer_offsets_ms(addr).values()), peer_offsets_ms(addr)
    assert set(peer_offsets_ms(first_storage)) == storage_ids - {info(first_storage)["member"]["id"]}
    skewed_id = info(skewed_addr)["member"]["id"]
    table = cluster.manager.adm("status").stdout
    row = next(line for line in table.splitlines() if line.split()[:1] == [str(skewed_id)])
    assert "+3" in row and "(node " in row, row
    detail = cluster.manager.adm("status", str(skewed_id)).stdout
    assert "[peer clocks]" in detail, detail
    assert "clock and a peer's differ by more than the cluster's bound" in \
        skewed.stderr_path.read_text()


def test_three_managers_lose_their_leader_under_load_and_nothing_fails(make_server):
    cluster = Cluster(make_server, managers=3, storage=3, gateways=1)
    s3 = cluster.gateways[0].client()
    s3.create_bucket(Bucket="failover")
    stop = threading.Event()
    failures, acked_users, s3_ops = [], [], [0]

    def s3_load():
        i = 0
        while not stop.is_set():
            key = f"k{i}"
            try:
                s3.put_object(Bucket="failover", Key=key, Body=key.encode())
                assert s3.get_object(Bucket="failover", Key=key)["Body"].read() == key.encode()
                s3_ops[0] += 1
            except Exception as e:  # noqa: BLE001 - every failure is reported
                failures.append(f"{key}: {e}")
            i += 1

    def admin_load():
        i = 0
        while not stop.is_set():
            name = f"user{i}"
            live = [m for m in cluster.managers if m.running()]
            result = live[i % len(live)].adm("create-user", name, check=False)
            if result.returncode == 0:
                acked_users.append(name)
            i += 1
            time.sleep(0.1)

    threads = [threading.Thread(target=s3_load), threading.Thread(target=admin_load)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    leader_id = json.loads(cluster.managers[0].adm("managers", json_output=True).stdout)["leader"]
    leader = next(m for m in cluster.managers
                  if json.loads(m.adm("managers", json_output=True).stdout)["node_id"] == leader_id)
    leader.kill9()
    killed_at = time.monotonic()

    def new_leader():
        views = [json.loads(m.adm("managers", json_output=True).stdout)
                 for m in cluster.managers if m.running()]
        return any(v["leader"] not in (None, leader_id) for v in views)
    eventually("a new leader", 10, new_leader)
    print(f"new leader after {time.monotonic() - killed_at:.1f} s; {s3_ops[0]} S3 round trips so far")
    time.sleep(3)
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures, failures[:5]
    survivor = next(m for m in cluster.managers if m.running())
    users = {u["user_id"] for u in json.loads(survivor.adm("get-users", json_output=True).stdout)}
    assert set(acked_users) <= users, sorted(set(acked_users) - users)
    leader.start()


def test_a_storage_node_with_another_secret_is_refused(make_server, tmp_path):
    cluster = Cluster(make_server, storage=1, gateways=0)
    other_secret = tmp_path / "other.secret"
    other_secret.write_text(secrets.token_hex(32))
    stranger = cluster.new_storage(secret=other_secret)
    started = time.monotonic()
    with pytest.raises(ServerError) as refused:
        stranger.start()
    assert time.monotonic() - started < 30, "a wrong secret should be refused at once"
    assert "another cluster secret" in str(refused.value), str(refused.value)[-2000:]
    assert len(cluster.nodes(storage=True)) == 1


def test_leofs_demo_starts_a_cluster_and_stops_it_on_ctrl_c(tmp_path):
    demo_dir = tmp_path / "demo"
    proc = subprocess.Popen([str(leofs_bin()), "demo", "--nodes", "3", "--dir", str(demo_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env())
    printed = {}
    try:
        for line in proc.stdout:
            if ": " in line:
                label, value = line.rstrip("\n").split(": ", 1)
                printed[label] = value
            if line.startswith("leofs demo ready"):
                break
        assert "S3 endpoints" in printed, printed
        import boto3
        s3 = boto3.client("s3", endpoint_url=printed["S3 endpoints"].split()[0],
                          aws_access_key_id=printed["Access key"],
                          aws_secret_access_key=printed["Secret key"], region_name="us-east-1")
        s3.create_bucket(Bucket="demo")
        s3.put_object(Bucket="demo", Key="k", Body=b"hello")
        assert s3.get_object(Bucket="demo", Key="k")["Body"].read() == b"hello"
        admin = printed["Admin"].split()
        assert admin[0] == "leofs-adm" and "--token" in admin, admin
        status = subprocess.run([str(leofs_bin().parent / "leofs-adm"), *admin[1:], "--json"],
                                capture_output=True, text=True, check=True)
        nodes = json.loads(status.stdout)["cluster"]["nodes"]
        assert sum(n["member"]["storage"] for n in nodes) == 3, nodes
        assert all(n["member"]["state"] == "running" for n in nodes), nodes
        pids = [int(p) for p in subprocess.run(["pgrep", "-f", str(demo_dir)],
                                                capture_output=True, text=True).stdout.split()]
        assert len(pids) >= 5, pids
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()
    left = subprocess.run(["pgrep", "-f", str(demo_dir)], capture_output=True, text=True).stdout
    assert not left.strip(), f"processes left: {left}"
