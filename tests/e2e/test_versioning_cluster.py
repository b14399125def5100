"""S3 versioning on a cluster (issue 16): three storage nodes, three replicas, three gateways.
Versions written and deleted through every gateway at once, with a storage node killed with
SIGKILL in the middle and restarted: every acknowledged version is listed and readable through
every gateway, no version deleted for good comes back, each key's latest version is its last
acknowledged write, and version listings page across the nodes. A conditional create on a
versioned key whose first replica was behind is refused (412), never a second creation: the
gateway's pre-check, reading the latest version at R, answers it before the write reaches
storage, so this checks the behaviour, not storage's own catch-up of the deciding replica. Versions and
lifecycle rules through the two gateways of a `leofs demo` cluster.
These tests start their own processes, whatever LEOFS_E2E_DEPLOYMENT says."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from leofs_harness import DEPLOYMENT, clean_env, leofs_bin
from test_cluster import Cluster, eventually
from test_replication import metric_sum

pytestmark = pytest.mark.skipif(DEPLOYMENT == "split",
                                reason="starts its own cluster; run in the all-in-one pass")

SIZES = [0, 100, 4096, 300_000, 5 * 1024 * 1024 + 3]


def body_of(key: str, n: int, size: int) -> bytes:
    seed = f"{key}#{n}".encode()
    return (seed * (size // len(seed) + 1))[:size]


class VersionWorker:
    """Writes versions of its own keys through one gateway, deletes some (markers, and versions
    for good), and remembers what was acknowledged."""

    def __init__(self, name: str, client, bucket: str, seed: int):
        self.name, self.client, self.bucket = name, client, bucket
        self.keys = [f"{name}/k{i}" for i in range(6)]
        self.rng = random.Random(seed)
        self.acknowledged: dict[tuple[str, str], bytes | None] = {}  # None: a delete marker
        self.deleted: set[tuple[str, str]] = set()
        self.latest: dict[str, str] = {}
        self.n = 0
        self.failures: list[str] = []

    def step(self) -> None:
        key = self.rng.choice(self.keys)
        roll = self.rng.random()
        try:
            if roll < 0.6:
                self.n += 1
                body = body_of(key, self.n, self.rng.choice(SIZES[:4]) if self.rng.random() < 0.95 else SIZES[4])
                version = self.client.put_object(Bucket=self.bucket, Key=key, Body=body)["VersionId"]
                self.acknowledged[(key, version)] = body
                self.latest[key] = version
            elif roll < 0.75:
                version = self.client.delete_object(Bucket=self.bucket, Key=key)["VersionId"]
                self.acknowledged[(key, version)] = None
                self.latest[key] = version
            else:
                live = [kv for kv in self.acknowledged if kv[0] == key and kv not in self.deleted]
                if not live:
                    return
                target = self.rng.choice(live)
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=target[1])
                self.deleted.add(target)
                if self.latest.get(key) == target[1]:
                    # The latest is now the newest version left: checked at the end.
                    self.latest.pop(key)
        except ClientError as e:
            self.failures.append(f"{key}: {e.response['Error']['Code']}")
        except Exception as e:  # a connection reset is a failure too
            self.failures.append(f"{key}: {e!r}")


def listed_versions(client, bucket: str, max_keys: int = 1000) -> dict[tuple[str, str], dict]:
    out = {}
    kwargs = {}
    while True:
        page = client.list_object_versions(Bucket=bucket, MaxKeys=max_keys, **kwargs)
        for v in page.get("Versions", []):
            out[(v["Key"], v["VersionId"])] = v
        for m in page.get("DeleteMarkers", []):
            out[(m["Key"], m["VersionId"])] = dict(m, Marker=True)
        if not page["IsTruncated"]:
            return out
        kwargs = {"KeyMarker": page["NextKeyMarker"]}
        if page.get("NextVersionIdMarker"):
            kwargs["VersionIdMarker"] = page["NextVersionIdMarker"]


def test_versions_through_three_gateways_survive_a_killed_node(make_server):
    cluster = Cluster(make_server, storage=3, gateways=3, replicas=3)
    clients = [g.client() for g in cluster.gateways]
    clients[0].create_bucket(Bucket="versioned")
    clients[1].put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    # The setting is in effect on every gateway within a second.
    eventually("every gateway sees versioning enabled", 5, lambda: all(
        c.get_bucket_versioning(Bucket="versioned").get("Status") == "Enabled" for c in clients))
    workers = [VersionWorker(f"w{i}", clients[i % 3], "versioned", seed=i) for i in range(6)]
    stop = threading.Event()

    def loop(worker):
        while not stop.is_set():
            worker.step()

    threads = [threading.Thread(target=loop, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    try:
        time.sleep(4)
        victim = cluster.storage[1]
        victim.kill9()
        time.sleep(4)
        victim.start()
        time.sleep(4)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    failures = [f for w in workers for f in w.failures]
    assert not failures, f"{len(failures)} failed: {failures[:10]}"
    acknowledged = {kv: body for w in workers for kv, body in w.acknowledged.items()}
    deleted = {kv for w in workers for kv in w.deleted}
    assert len(acknowledged) > 100, len(acknowledged)
    eventually("every storage node is running", 30,
               lambda: all(cluster.state_of(n) == "running" for n in cluster.storage))
    # Listed through every gateway (in pages of 7, across the nodes): every acknowledged
    # version not deleted, and none deleted for good.
    for client in clients:
        listed = listed_versions(client, "versioned", max_keys=7)
        missing = [kv for kv in acknowledged if kv not in deleted and kv not in listed]
        assert not missing, f"{len(missing)} acknowledged versions not listed: {missing[:5]}"
        back = [kv for kv in deleted if kv in listed]
        assert not back, f"versions deleted for good came back: {back[:5]}"
    # Readable by id through every gateway, with their bytes.
    for i, (kv, body) in enumerate(sorted(acknowledged.items())):
        if kv in deleted:
            continue
        client = clients[i % 3]
        if body is None:
            with pytest.raises(ClientError) as refused:
                client.head_object(Bucket="versioned", Key=kv[0], VersionId=kv[1])
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405
        else:
            got = client.get_object(Bucket="versioned", Key=kv[0], VersionId=kv[1])["Body"].read()
            assert got == body, kv
    # Each key's latest version is its last acknowledged write (when none was deleted since).
    for worker in workers:
        for key, version in worker.latest.items():
            listed = listed_versions(clients[0], "versioned")
            latest = [kv for kv, v in listed.items() if kv[0] == key and v["IsLatest"]]
            assert latest == [(key, version)], (key, version, latest)


def test_a_conditional_create_on_a_versioned_key_is_decided_on_its_newest_version(make_server):
    cluster = Cluster(make_server, storage=3, gateways=1, replicas=3)
    client = cluster.gateways[0].client()
    client.create_bucket(Bucket="vbehind")
    client.put_bucket_versioning(Bucket="vbehind", VersioningConfiguration={"Status": "Enabled"})
    where = json.loads(cluster.manager.adm("whereis", "vbehind/once", json_output=True).stdout)
    by_addr = {f"127.0.0.1:{n.rpc_port}": n for n in cluster.storage}
    first, second, _ = (by_addr[r["addr"]] for r in where["replicas"])
    # The first replica (it decides preconditions) misses the key's first version, and the
    # replica holding its hint goes down before it is back: it comes back behind.
    first.kill9()
    created = client.put_object(Bucket="vbehind", Key="once", Body=b"created while it was down")
    second.kill9()
    first.start()

    def answer() -> int:
        try:
            client.put_object(Bucket="vbehind", Key="once", Body=b"second creator", IfNoneMatch="*")
            return 200
        except ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"]

    codes = []
    eventually("the conditional create is decided", 30,
               lambda: codes.append(answer()) or codes[-1] != 503)
    assert codes[-1] == 412, codes
    assert set(codes) <= {503, 412}, codes
    got = client.get_object(Bucket="vbehind", Key="once")
    assert got["Body"].read() == b"created while it was down"
    assert got["VersionId"] == created["VersionId"]


def test_tags_changed_on_versions_while_a_replica_is_down_reach_it_by_anti_entropy(make_server):
    # Hints live one second here and each core runs an anti-entropy pass every 20 ms: a
    # replica that missed a version's new tags (or its deletion) gets them from anti-entropy.
    cluster = Cluster(make_server, storage=3, gateways=1, replicas=3,
                      storage_env={"LEOFS_HINT_TTL_SECS": "1",
                                   "LEOFS_ANTI_ENTROPY_INTERVAL_MS": "20"})
    client = cluster.gateways[0].client()
    client.create_bucket(Bucket="vattrs")
    client.put_bucket_versioning(Bucket="vattrs", VersioningConfiguration={"Status": "Enabled"})
    victim = cluster.storage[2]
    by_addr = {f"127.0.0.1:{n.rpc_port}": n for n in cluster.storage}
    # Keys whose deciding replica (the first) stays up: a tag change is decided there.
    keys = []
    for i in range(100):
        where = json.loads(cluster.manager.adm("whereis", f"vattrs/k{i:02d}", json_output=True).stdout)
        if by_addr[where["replicas"][0]["addr"]] is not victim:
            keys.append(f"k{i:02d}")
    keys = keys[:12]
    first = {}
    for key in keys:
        first[key] = client.put_object(Bucket="vattrs", Key=key, Body=b"1", Tagging="n=1")["VersionId"]
        client.put_object(Bucket="vattrs", Key=key, Body=b"2", Tagging="n=2")
    victim.kill9()
    changed, dropped = keys[:8], keys[8:]
    for key in changed:
        client.put_object_tagging(Bucket="vattrs", Key=key, VersionId=first[key],
                                  Tagging={"TagSet": [{"Key": "n", "Value": "changed"}]})
    for key in dropped:
        client.put_object_tagging(Bucket="vattrs", Key=key, VersionId=first[key],
                                  Tagging={"TagSet": [{"Key": "n", "Value": "doomed"}]})
        client.delete_object(Bucket="vattrs", Key=key, VersionId=first[key])
    eventually("the victim's hints are dropped", 30,
               lambda: metric_sum(cluster, "leofs_hints_pending") == 0
               and metric_sum(cluster, "leofs_hints_dropped_total") > 0)
    repaired = metric_sum(cluster, "leofs_anti_entropy_repaired_total")
    victim.start()
    eventually("the restarted node is running", 30, lambda: cluster.state_of(victim) == "running")
    eventually("anti-entropy repaired the victim", 60,
               lambda: metric_sum(cluster, "leofs_anti_entropy_repaired_total") - repaired
               >= len(changed) + 2 * len(dropped))
    # More passes, and the gateway learns the restarted node is up (within its 5 s back-off);
    # then the restarted node alone answers.
    time.sleep(6)
    for node in cluster.storage:
        if node is not victim:
            node.kill9()

    def tags(key, **kw):
        answer = client.get_object_tagging(Bucket="vattrs", Key=key, **kw)
        return {t["Key"]: t["Value"] for t in answer["TagSet"]}

    for key in changed:
        assert tags(key, VersionId=first[key]) == {"n": "changed"}, key
        assert tags(key) == {"n": "2"}, key
    for key in dropped:
        with pytest.raises(ClientError) as gone:
            client.get_object_tagging(Bucket="vattrs", Key=key, VersionId=first[key])
        assert gone.value.response["Error"]["Code"] == "NoSuchVersion", key


def test_versions_and_lifecycle_rules_through_the_gateways_of_a_leofs_demo_cluster(tmp_path):
    demo_dir = tmp_path / "demo"
    proc = subprocess.Popen(
        [str(leofs_bin()), "demo", "--nodes", "3", "--gateways", "2", "--replicas", "3",
         "--dir", str(demo_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    printed = {}
    try:
        for line in proc.stdout:
            if ": " in line:
                label, value = line.rstrip("\n").split(": ", 1)
                printed[label] = value
            if line.startswith("leofs demo ready"):
                break
        endpoints = printed["S3 endpoints"].split()
        assert len(endpoints) >= 2, printed
        clients = [
            boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=printed["Access key"],
                         aws_secret_access_key=printed["Secret key"], region_name="us-east-1")
            for endpoint in endpoints
        ]
        clients[0].create_bucket(Bucket="demo")
        clients[0].put_bucket_versioning(Bucket="demo", VersioningConfiguration={"Status": "Enabled"})
        eventually("both gateways see versioning enabled", 5, lambda: all(
            c.get_bucket_versioning(Bucket="demo").get("Status") == "Enabled" for c in clients))
        written = []
        for i in range(6):
            client = clients[i % 2]
            body = f"version {i}".encode()
            written.append((client.put_object(Bucket="demo", Key="k", Body=body)["VersionId"], body))
        marker = clients[1].delete_object(Bucket="demo", Key="k")["VersionId"]
        for client in clients:
            page = client.list_object_versions(Bucket="demo")
            assert [v["VersionId"] for v in page["Versions"]] == [v for v, _ in reversed(written)]
            assert [(m["VersionId"], m["IsLatest"]) for m in page["DeleteMarkers"]] == [(marker, True)]
            for version_id, body in written:
                got = client.get_object(Bucket="demo", Key="k", VersionId=version_id)
                assert got["Body"].read() == body
        # A version's tags changed through one gateway are read through the other.
        clients[0].put_object_tagging(Bucket="demo", Key="k", VersionId=written[2][0],
                                      Tagging={"TagSet": [{"Key": "pinned", "Value": "yes"}]})
        answer = clients[1].get_object_tagging(Bucket="demo", Key="k", VersionId=written[2][0])
        assert answer["TagSet"] == [{"Key": "pinned", "Value": "yes"}]
        assert clients[1].get_object_tagging(Bucket="demo", Key="k", VersionId=written[3][0])["TagSet"] == []
        clients[1].put_bucket_lifecycle_configuration(Bucket="demo", LifecycleConfiguration={
            "Rules": [{"ID": "tidy", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
                       "NoncurrentVersionExpiration": {"NoncurrentDays": 30}}]})
        def rules_on(client):
            try:
                return [r["ID"] for r in client.get_bucket_lifecycle_configuration(Bucket="demo")["Rules"]]
            except ClientError:
                return []

        eventually("the rules are in effect on both gateways", 5,
                   lambda: all(rules_on(c) == ["tidy"] for c in clients))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()
