"""The gateway's object cache (issue 15, first step: in memory, per core, whole objects of at
most one chunk): a gateway-only node serves repeated reads from it, each hit confirmed current
by the replicas' HLC digests (no body read on any storage node), and never answers with bytes
older than an overwrite or delete acknowledged through another gateway."""

from __future__ import annotations

import os

import pytest
import requests
from botocore.exceptions import ClientError

from leofs_harness import DEPLOYMENT
from test_cluster import Cluster
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
        # The first two reads miss (an object enters on its second miss); the rest are hits,
        # served without any storage node reading a body.
        reads = engine_reads(cluster)
        for _ in range(2):
            assert reader.get_object(Bucket="cached", Key=key)["Body"].read() == first
        assert engine_reads(cluster) >= reads + 2
        hits, reads = metric(cached, "leofs_gateway_cache_hits_total"), engine_reads(cluster)
        for _ in range(10):
            assert reader.get_object(Bucket="cached", Key=key)["Body"].read() == first
        assert metric(cached, "leofs_gateway_cache_hits_total") == hits + 10
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
