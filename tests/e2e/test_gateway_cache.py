"""The gateway's object cache (issue 15: in memory per core, whole objects of at most one chunk
and the chunks of larger ones, and on disk beneath it): a gateway-only node serves repeated
reads from it, each hit confirmed current by the replicas' HLC digests (no body read on any
storage node), and never answers with bytes older than an overwrite or delete acknowledged
through another gateway; its disk cache serves after a restart, drops a damaged entry, and a
full cache disk fails no request; `leofs-adm purge-cache` empties it of an object or a prefix;
buckets read at R=1 may be served unconfirmed for a bounded time."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from leofs_harness import DEPLOYMENT
from test_cluster import Cluster, eventually
from test_replication import error_code

pytestmark = pytest.mark.skipif(DEPLOYMENT == "split",
                                reason="clusters of their own; run once, in the all-in-one pass")


def metric(servers, name: str) -> int:
    """A metric's sum over every core of `servers`' /metrics."""
    total = 0
    for server in servers:
        text = requests.get(f"http://{server.admin_addr}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


def engine_reads(cluster: Cluster) -> int:
    """Body reads the storage nodes' engines served (from their own cache or the disk)."""
    return (metric(cluster.storage, "leofs_cache_hits_total")
            + metric(cluster.storage, "leofs_cache_misses_total"))


def test_a_gateway_serves_repeated_reads_from_its_cache_and_never_older_bytes(make_server):
    cluster = Cluster(make_server, storage=3, gateways=2, replicas=3)
    writer, reader = (g.client() for g in cluster.gateways)
    cached = [cluster.gateways[1]]
    writer.create_bucket(Bucket="cached")
    for size in (100, 1 << 20):
        key = f"hot-{size}"
        first = os.urandom(size)
        writer.put_object(Bucket="cached", Key=key, Body=first)
        # The first read misses (a cache with room takes an object on its first miss); the
        # rest are hits, served without any storage node reading a body.
        reads = engine_reads(cluster)
        assert reader.get_object(Bucket="cached", Key=key)["Body"].read() == first
        assert engine_reads(cluster) >= reads + 1
        hits, reads = metric(cached, "leofs_gateway_cache_hits_total"), engine_reads(cluster)
        revalidations = metric(cached, "leofs_gateway_cache_revalidations_total")
        for _ in range(10):
            assert reader.get_object(Bucket="cached", Key=key)["Body"].read() == first
        assert metric(cached, "leofs_gateway_cache_hits_total") == hits + 10
        assert metric(cached, "leofs_gateway_cache_revalidations_total") == revalidations + 10
        assert engine_reads(cluster) == reads
        assert metric(cached, "leofs_gateway_cache_entries") >= 1

        # Overwrites through the other gateway: each read after the acknowledgement gets the
        # new bytes (the cached version is refused by the replicas' digests), then caches them.
        stale = metric(cached, "leofs_gateway_cache_stale_total")
        for version in range(20):
            body = os.urandom(size)
            writer.put_object(Bucket="cached", Key=key, Body=body)
            for _ in range(3):
                assert reader.get_object(Bucket="cached", Key=key)["Body"].read() == body, version
        assert metric(cached, "leofs_gateway_cache_stale_total") >= stale + 20
        # A delete through the other gateway: the next read is a 404, never the cached bytes.
        writer.delete_object(Bucket="cached", Key=key)
        with pytest.raises(ClientError) as gone:
            reader.get_object(Bucket="cached", Key=key)
        assert error_code(gone.value) == "NoSuchKey"

    # A gateway with the cache turned off caches nothing.
    plain = cluster.new_gateway(extra_env={"LEOFS_GATEWAY_CACHE_BYTES_PER_CORE": "0"})
    client = plain.client()
    writer.put_object(Bucket="cached", Key="plain", Body=b"x" * 1000)
    for _ in range(4):
        assert client.get_object(Bucket="cached", Key="plain")["Body"].read() == b"x" * 1000
    assert metric([plain], "leofs_gateway_cache_hits_total") == 0
    assert metric([plain], "leofs_gateway_cache_entries") == 0


def test_a_chunked_object_held_whole_is_read_ranged_or_whole_without_storage_reads(make_server):
    cluster = Cluster(make_server, storage=3, gateways=2, replicas=3)
    writer, reader = (g.client() for g in cluster.gateways)
    cached = [cluster.gateways[1]]
    writer.create_bucket(Bucket="chunks")
    body = os.urandom(9 * 1024 * 1024 + 5)  # three chunks
    writer.put_object(Bucket="chunks", Key="big", Body=body)
    # Two reads: the manifest enters the cache (it has room) on its first miss, each chunk on
    # its second (one large read does not fill the cache).
    for _ in range(2):
        assert reader.get_object(Bucket="chunks", Key="big")["Body"].read() == body
    hits, reads = metric(cached, "leofs_gateway_cache_hits_total"), engine_reads(cluster)
    for _ in range(3):
        assert reader.get_object(Bucket="chunks", Key="big")["Body"].read() == body
    got = reader.get_object(Bucket="chunks", Key="big", Range="bytes=4194000-8388000")
    assert got["Body"].read() == body[4194000:8388001]
    # Whole reads: the manifest and three chunks each; the ranged one: the manifest, two chunks.
    assert metric(cached, "leofs_gateway_cache_hits_total") == hits + 3 * 4 + 3
    assert engine_reads(cluster) == reads, "a read of an object held whole read storage"
    # Overwritten through the other gateway: the next read has the new bytes.
    new = os.urandom(9 * 1024 * 1024 + 5)
    writer.put_object(Bucket="chunks", Key="big", Body=new)
    assert reader.get_object(Bucket="chunks", Key="big")["Body"].read() == new
    assert reader.get_object(Bucket="chunks", Key="big", Range="bytes=5-9")["Body"].read() == new[5:10]

    # purge-cache: the next read of the purged object misses and reads storage again.
    for _ in range(3):
        assert reader.get_object(Bucket="chunks", Key="big")["Body"].read() == new
    writer.put_object(Bucket="chunks", Key="small", Body=b"s" * 100)
    for _ in range(3):
        assert reader.get_object(Bucket="chunks", Key="small")["Body"].read() == b"s" * 100
    entries = metric(cached, "leofs_gateway_cache_entries")
    assert entries >= 5, entries  # the two records and the three chunks (and the old chunks)
    out = cluster.manager.adm("purge-cache", "chunks/big").stdout
    assert "purge 1 recorded" in out and "(2 of 2 running gateway(s) have it)" in out, out
    hits, reads = metric(cached, "leofs_gateway_cache_hits_total"), engine_reads(cluster)
    assert reader.get_object(Bucket="chunks", Key="big")["Body"].read() == new
    assert metric(cached, "leofs_gateway_cache_hits_total") == hits
    assert engine_reads(cluster) >= reads + 3
    # The purge dropped the object's record and its chunks, the old version's too; the read
    # took the record again (its chunks wait for a second miss); "small" stays.
    assert metric(cached, "leofs_gateway_cache_entries") == 2
    assert reader.get_object(Bucket="chunks", Key="small")["Body"].read() == b"s" * 100
    assert metric(cached, "leofs_gateway_cache_hits_total") == hits + 1
    # A prefix: the whole bucket.
    cluster.manager.adm("purge-cache", "--prefix", "chunks/")
    with pytest.raises(ClientError):
        reader.get_object(Bucket="chunks", Key="absent")
    assert metric(cached, "leofs_gateway_cache_entries") == 0
    refused = cluster.manager.adm("purge-cache", "nosuch/key", check=False)
    assert refused.returncode != 0 and "nosuch" in refused.stderr, refused


def test_r1_staleness_is_bounded_and_applies_to_buckets_read_at_r1_only(make_server):
    cluster = Cluster(make_server, storage=3, gateways=1, replicas=3)
    writer = cluster.gateways[0].client()
    lenient = cluster.new_gateway(extra_env={"LEOFS_GATEWAY_CACHE_R1_STALENESS_MS": "5000"})
    reader = lenient.client()
    for bucket in ("fast", "strict"):
        writer.create_bucket(Bucket=bucket)
    cluster.manager.adm("update-consistency-level", "--bucket", "fast", "3", "1", "3")
    for bucket in ("fast", "strict"):
        writer.put_object(Bucket=bucket, Key="k", Body=b"old")
        for _ in range(2):
            assert reader.get_object(Bucket=bucket, Key="k")["Body"].read() == b"old"
    for bucket in ("fast", "strict"):
        writer.put_object(Bucket=bucket, Key="k", Body=b"new")
    # The default R: the overwrite is seen at once. R=1: the cached bytes are served, without
    # asking the replicas, until the window since the last confirmation ends, never after.
    assert reader.get_object(Bucket="strict", Key="k")["Body"].read() == b"new"
    hits = metric([lenient], "leofs_gateway_cache_hits_total")
    assert reader.get_object(Bucket="fast", Key="k")["Body"].read() == b"old"
    assert metric([lenient], "leofs_gateway_cache_hits_total") == hits + 1
    time.sleep(5.5)
    assert reader.get_object(Bucket="fast", Key="k")["Body"].read() == b"new"


def versioned(version: int, size: int) -> bytes:
    """A body that names its version in its first 8 bytes and is checkable whole."""
    stamp = f"{version:08d}".encode()
    return (stamp * (size // 8 + 1))[:size]


def test_no_read_through_another_gateway_is_older_than_an_acknowledged_write_under_load(make_server):
    cluster = Cluster(make_server, storage=3, gateways=2, replicas=3)
    writer_gateway, cached = cluster.gateways
    writer_gateway.client().create_bucket(Bucket="load")
    sizes = {"small": 2048, "chunked": 5 * 1024 * 1024 + 3}  # the second: two chunks
    acked = {key: 0 for key in sizes}
    stop = threading.Event()
    failures: list[str] = []
    reads = {key: 0 for key in sizes}

    def write(key: str) -> None:
        client = writer_gateway.client()
        version = 0
        try:
            while not stop.is_set():
                version += 1
                client.put_object(Bucket="load", Key=key, Body=versioned(version, sizes[key]))
                acked[key] = version
        except Exception as e:  # noqa: BLE001 - any failure of the writer fails the test
            failures.append(f"{key}: a write failed: {e!r}")

    def read(key: str) -> None:
        client = cached.client()
        try:
            while not stop.is_set():
                floor = acked[key]
                if floor == 0:
                    time.sleep(0.01)
                    continue
                body = client.get_object(Bucket="load", Key=key)["Body"].read()
                got = int(body[:8]) if body[:8].isdigit() else -1
                if body != versioned(got, sizes[key]):
                    failures.append(f"{key}: a torn body (version {got})")
                elif got < floor:
                    failures.append(f"{key}: version {got} read after {floor} was acknowledged")
                reads[key] += 1
        except Exception as e:  # noqa: BLE001 - any failure of a reader fails the test
            failures.append(f"{key}: a read failed: {e!r}")

    threads = [threading.Thread(target=write, args=(key,)) for key in sizes]
    threads += [threading.Thread(target=read, args=(key,)) for key in sizes for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(8)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a client thread hung"
    assert not failures, failures[:5]
    assert min(acked.values()) >= 3 and min(reads.values()) >= 20, (acked, reads)
    # The cache was in use: the reads between two overwrites were hits.
    assert metric([cached], "leofs_gateway_cache_hits_total") > 0
    assert metric([cached], "leofs_gateway_cache_stale_total") > 0
    # Deleted through the writing gateway: never read again through the other.
    reader = cached.client()
    for key in sizes:
        writer_gateway.client().delete_object(Bucket="load", Key=key)
        for _ in range(3):
            with pytest.raises(ClientError) as gone:
                reader.get_object(Bucket="load", Key=key)
            assert error_code(gone.value) == "NoSuchKey"


def test_one_large_read_does_not_push_the_hot_set_out(make_server):
    cluster = Cluster(make_server, storage=1, gateways=0, replicas=1)
    gateway = cluster.new_gateway(extra_env={
        "LEOFS_GATEWAY_CACHE_BYTES_PER_CORE": str(64 << 20),
        "LEOFS_GATEWAY_DISK_CACHE_BYTES_PER_CORE": "0"})
    client = gateway.client()
    client.create_bucket(Bucket="scan")
    hot = {f"hot-{i}": os.urandom(1 << 20) for i in range(4)}
    for key, body in hot.items():
        client.put_object(Bucket="scan", Key=key, Body=body)
        assert client.get_object(Bucket="scan", Key=key)["Body"].read() == body
    large = os.urandom(200 << 20)  # fifty chunks: three times the cache
    client.put_object(Bucket="scan", Key="large", Body=large)
    assert client.get_object(Bucket="scan", Key="large")["Body"].read() == large
    assert metric([gateway], "leofs_gateway_cache_evictions_total") == 0
    hits, reads = metric([gateway], "leofs_gateway_cache_hits_total"), engine_reads(cluster)
    for key, body in hot.items():
        assert client.get_object(Bucket="scan", Key=key)["Body"].read() == body
    assert metric([gateway], "leofs_gateway_cache_hits_total") == hits + 4
    assert engine_reads(cluster) == reads


def disk_cache_files(gateway) -> list[Path]:
    """The entry files of a gateway's disk cache (named by a 32-digit hash)."""
    root = gateway.data_dir / "gateway-cache"
    return sorted(p for p in root.rglob("*") if p.is_file() and len(p.name) == 32)


def read_back(gateway, entries: int = 6) -> None:
    """Waits until a restarted gateway's disk cache has read its files back (it serves from
    the start; entries not read back yet are misses) and checks how many it holds."""
    eventually("the disk cache's files read back", 30,
               lambda: metric([gateway], "leofs_gateway_disk_cache_entries") == entries)


def test_the_disk_cache_serves_after_a_restart_and_drops_a_damaged_entry(make_server):
    cluster = Cluster(make_server, storage=3, gateways=2, replicas=3)
    writer = cluster.gateways[0].client()
    cached = cluster.gateways[1]
    writer.create_bucket(Bucket="disk")
    small, big, changed = os.urandom(100 * 1024), os.urandom(9 * 1024 * 1024 + 5), os.urandom(1000)
    writer.put_object(Bucket="disk", Key="small", Body=small)
    writer.put_object(Bucket="disk", Key="big", Body=big)  # a manifest and three chunks
    writer.put_object(Bucket="disk", Key="changed", Body=changed)
    reader = cached.client()
    # "big" twice: its chunks are taken on their second miss.
    for key, body in (("small", small), ("big", big), ("big", big), ("changed", changed)):
        assert reader.get_object(Bucket="disk", Key=key)["Body"].read() == body
    eventually("six entries written to disk", 30, lambda: len(disk_cache_files(cached)) == 6)
    assert metric([cached], "leofs_gateway_disk_cache_entries") == 6

    # Overwritten while the gateway is down: its copy on disk is refused by the replicas.
    cached.stop()
    new = os.urandom(1000)
    writer.put_object(Bucket="disk", Key="changed", Body=new)
    cached.start()
    reader = cached.client()
    # The gateway serves at once; its entries come back from disk in the background.
    read_back(cached)
    reads = engine_reads(cluster)
    assert reader.get_object(Bucket="disk", Key="small")["Body"].read() == small
    assert reader.get_object(Bucket="disk", Key="big")["Body"].read() == big
    got = reader.get_object(Bucket="disk", Key="big", Range="bytes=4194000-8388000")
    assert got["Body"].read() == big[4194000:8388001]
    assert engine_reads(cluster) == reads, "the disk cache did not serve after the restart"
    # From disk: "small", big's record and its three chunks; then the ranged read from memory.
    assert metric([cached], "leofs_gateway_disk_cache_hits_total") == 5
    assert metric([cached], "leofs_gateway_cache_hits_total") == 3
    assert reader.get_object(Bucket="disk", Key="changed")["Body"].read() == new
    assert metric([cached], "leofs_gateway_cache_stale_total") == 1
    assert engine_reads(cluster) > reads

    # The new version of "changed" replaces the old one's file once its write delay (2 s) is
    # over; the old one's removal was queued before it.
    time.sleep(3)
    eventually("six entries on disk again", 30, lambda: len(disk_cache_files(cached)) == 6)

    # A flipped byte in an entry's file: detected on read, the entry dropped, storage read.
    cached.stop()
    victim = next(p for p in disk_cache_files(cached) if 100 * 1024 < p.stat().st_size < 200 * 1024)
    with open(victim, "r+b") as f:
        f.seek(50 * 1024)
        byte = f.read(1)
        f.seek(50 * 1024)
        f.write(bytes([byte[0] ^ 0x01]))
    cached.start()
    reader = cached.client()
    read_back(cached)
    reads = engine_reads(cluster)
    assert reader.get_object(Bucket="disk", Key="small")["Body"].read() == small
    assert metric([cached], "leofs_gateway_disk_cache_dropped_total") == 1
    assert metric([cached], "leofs_gateway_disk_cache_hits_total") == 0
    assert engine_reads(cluster) > reads
    # The damaged file was removed, and the object read from storage written again in its place.

    def repaired() -> bool:
        try:
            with open(victim, "rb") as f:
                f.seek(50 * 1024)
                return f.read(1) == byte
        except FileNotFoundError:
            return False

    eventually("the entry written again, whole", 30, repaired)
    assert len(disk_cache_files(cached)) == 6
    assert reader.get_object(Bucket="disk", Key="small")["Body"].read() == small
    assert metric([cached], "leofs_gateway_cache_hits_total") == 1

    # A purge made while the gateway is down reaches its disk when it comes back.
    cached.stop()
    cluster.manager.adm("purge-cache", "disk/big")
    cached.start()
    reader = cached.client()
    read_back(cached)
    reads = engine_reads(cluster)
    assert reader.get_object(Bucket="disk", Key="big")["Body"].read() == big
    assert metric([cached], "leofs_gateway_disk_cache_hits_total") == 0
    assert engine_reads(cluster) >= reads + 3
    assert reader.get_object(Bucket="disk", Key="small")["Body"].read() == small
    assert metric([cached], "leofs_gateway_disk_cache_hits_total") == 1


def test_a_full_cache_disk_fails_no_request(make_server):
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system under the cache needs root")
    cluster = Cluster(make_server, storage=1, gateways=1, replicas=1)
    gateway = cluster.gateways[0]
    core_dir = gateway.data_dir / "gateway-cache" / "core-0"
    assert core_dir.is_dir()
    # 1 MiB of space under the running gateway's cache: every write past the first fills it.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(core_dir)],
                   check=True, capture_output=True, timeout=30)
    try:
        client = gateway.client()
        client.create_bucket(Bucket="full")
        bodies = {f"k{i}": os.urandom(600 * 1024) for i in range(8)}
        for key, body in bodies.items():
            client.put_object(Bucket="full", Key=key, Body=body)
        for _ in range(3):
            for key, body in bodies.items():
                assert client.get_object(Bucket="full", Key=key)["Body"].read() == body
        eventually("writes refused by the full disk are counted", 30,
                   lambda: metric([gateway], "leofs_gateway_disk_cache_write_failures_total") >= 1)
        for key, body in bodies.items():
            assert client.get_object(Bucket="full", Key=key)["Body"].read() == body
        assert "disk cache: an entry could not be written" in gateway.stderr_path.read_text()
    finally:
        if subprocess.run(["umount", str(core_dir)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(core_dir)], capture_output=True)
