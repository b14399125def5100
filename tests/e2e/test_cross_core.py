"""Objects spread over both cores' shards; listings merge them in key order."""

from __future__ import annotations

import concurrent.futures
import json
import threading


def shard_live(srv) -> dict[int, int]:
    status = json.loads(srv.adm("status", json_output=True).stdout)
    assert status["cores"] == 2
    assert len(status["shards"]) == 2
    return {s["core"]: s["live_records"] for s in status["shards"]}


def test_objects_spread_over_both_shards(make_server):
    srv = make_server(cores=2)
    client = srv.client()
    client.create_bucket(Bucket="spread")
    client.create_bucket(Bucket="spread-other")
    before = shard_live(srv)
    keys = [f"key-{i:04}" for i in range(200)]

    local = threading.local()

    def put(k):
        # One client per thread: many connections, so both cores also accept requests (SO_REUSEPORT).
        if not hasattr(local, "client"):
            local.client = srv.client()
        local.client.put_object(Bucket="spread", Key=k, Body=k.encode())

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))
    client.put_object(Bucket="spread-other", Key="key-0000x", Body=b"other bucket")
    after = shard_live(srv)
    grown = {core: after[core] - before.get(core, 0) for core in after}
    assert all(v > 0 for v in grown.values()), f"per-shard live_records growth {grown}"
    assert sum(grown.values()) >= 200

    listed = [o["Key"] for p in client.get_paginator("list_objects_v2").paginate(
        Bucket="spread", PaginationConfig={"PageSize": 37}) for o in p["Contents"]]
    assert listed == sorted(keys)
    for k in keys[::17]:
        assert client.get_object(Bucket="spread", Key=k)["Body"].read() == k.encode()
    r = client.list_objects_v2(Bucket="spread", Prefix="key-01")
    assert [o["Key"] for o in r["Contents"]] == [k for k in keys if k.startswith("key-01")]

    client.delete_objects(Bucket="spread", Delete={"Objects": [{"Key": k} for k in keys[:100]]})
    listed = [o["Key"] for p in client.get_paginator("list_objects_v2").paginate(Bucket="spread")
              for o in p["Contents"]]
    assert listed == keys[100:]
    final = shard_live(srv)
    assert sum(final.values()) < sum(after.values())
