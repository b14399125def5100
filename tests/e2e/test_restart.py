"""Durability across restarts: graceful (SIGTERM, exit 0) and crash (kill -9) of a real server."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import signal
import threading
import time

import pytest

from leofs_harness import multipart_etag

MIB = 1 << 20


def write_objects(client, bucket: str, count: int, big_every: int = 0) -> dict[str, str]:
    """PUTs `count` objects (every `big_every`-th one 20 MiB, multi-chunk); returns key -> md5.

    Only objects whose PUT returned 200 are returned: those were acknowledged."""
    def one(i):
        size = 20 * MIB + 3 if big_every and i % big_every == 0 else 1 + (i * 7919) % 50_000
        body = os.urandom(size)
        key = f"obj/{i:05}"
        client.put_object(Bucket=bucket, Key=key, Body=body)
        return key, hashlib.md5(body).hexdigest()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, range(count)))


def verify_objects(client, bucket: str, expected: dict[str, str]) -> None:
    pag = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    listed = [o["Key"] for page in pag for o in page.get("Contents", [])]
    assert listed == sorted(expected), "listing differs after restart"

    def check(item):
        key, md5 = item
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.md5(body).hexdigest() == md5, key

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(check, expected.items()))


def test_graceful_sigterm_exits_zero_and_keeps_data(make_server):
    srv = make_server()
    client = srv.client()
    client.create_bucket(Bucket="grace")
    expected = write_objects(client, "grace", 60, big_every=30)
    client.delete_object(Bucket="grace", Key="obj/00001")
    del expected["obj/00001"]
    assert srv.stop() == 0
    srv.start()
    client = srv.client()
    assert "grace" in {b["Name"] for b in client.list_buckets()["Buckets"]}
    verify_objects(client, "grace", expected)
    # SIGINT is graceful too.
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(timeout=60) == 0
    srv.start()
    verify_objects(srv.client(), "grace", expected)


def test_kill9_loses_nothing_acknowledged(make_server):
    srv = make_server()
    client = srv.client()
    client.create_bucket(Bucket="crash")
    expected = write_objects(client, "crash", 200, big_every=50)
    client.delete_objects(Bucket="crash", Delete={"Objects": [{"Key": "obj/00002"}, {"Key": "obj/00003"}]})
    del expected["obj/00002"], expected["obj/00003"]
    # Overwrites: the newest acknowledged version must win after the crash.
    newer = os.urandom(1000)
    client.put_object(Bucket="crash", Key="obj/00004", Body=newer)
    expected["obj/00004"] = hashlib.md5(newer).hexdigest()
    srv.crash_restart()
    client = srv.client()
    verify_objects(client, "crash", expected)
    # Write more after recovery, crash again: both generations survive.
    client.put_object(Bucket="crash", Key="after/one", Body=b"after recovery")
    expected["after/one"] = hashlib.md5(b"after recovery").hexdigest()
    srv.crash_restart()
    verify_objects(srv.client(), "crash", expected)


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_multipart_upload_survives_restart(make_server, how):
    srv = make_server()
    client = srv.client()
    client.create_bucket(Bucket="mpu")
    p1, p2, p3 = os.urandom(5 * MIB), os.urandom(6 * MIB), os.urandom(100)
    uid = client.create_multipart_upload(Bucket="mpu", Key="resumed")["UploadId"]
    e1 = client.upload_part(Bucket="mpu", Key="resumed", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
    e2 = client.upload_part(Bucket="mpu", Key="resumed", UploadId=uid, PartNumber=2, Body=p2)["ETag"]
    if how == "sigterm":
        srv.restart()
    else:
        srv.crash_restart()
    client = srv.client()
    uploads = client.list_multipart_uploads(Bucket="mpu").get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("resumed", uid)]
    parts = client.list_parts(Bucket="mpu", Key="resumed", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(1, e1, len(p1)), (2, e2, len(p2))]
    e3 = client.upload_part(Bucket="mpu", Key="resumed", UploadId=uid, PartNumber=3, Body=p3)["ETag"]
    done = client.complete_multipart_upload(
        Bucket="mpu", Key="resumed", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2},
                                   {"PartNumber": 3, "ETag": e3}]})
    assert done["ETag"] == multipart_etag([p1, p2, p3])
    body = client.get_object(Bucket="mpu", Key="resumed")["Body"].read()
    assert body == p1 + p2 + p3
    # And the completed object survives another crash.
    srv.crash_restart()
    assert srv.client().get_object(Bucket="mpu", Key="resumed")["Body"].read() == p1 + p2 + p3


def test_kill9_during_writes_keeps_acknowledged(make_server):
    """Writers keep PUTting while the server is killed; every PUT that got 200 must survive."""
    srv = make_server()
    client = srv.client()
    client.create_bucket(Bucket="inflight")
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w):
        c = srv.client()
        i = 0
        while not stop.is_set():
            body = os.urandom(2000 + i % 3000) if i % 10 else os.urandom(5 * MIB)
            key = f"w{w}/{i:06}"
            try:
                c.put_object(Bucket="inflight", Key=key, Body=body)
            except Exception:
                return
            with lock:
                acked[key] = hashlib.md5(body).hexdigest()
            i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    srv.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert len(acked) > 20, "too few writes were acknowledged to make the test meaningful"
    srv.start()
    client = srv.client()
    pag = client.get_paginator("list_objects_v2").paginate(Bucket="inflight")
    listed = {o["Key"] for page in pag for o in page.get("Contents", [])}
    missing = sorted(set(acked) - listed)
    assert not missing, f"{len(missing)} acknowledged objects lost, e.g. {missing[:5]}"
    for key, md5 in acked.items():
        body = client.get_object(Bucket="inflight", Key=key)["Body"].read()
        assert hashlib.md5(body).hexdigest() == md5, key
    # Unacknowledged ones that made it are whole, never torn.
    for key in listed - set(acked):
        head = client.head_object(Bucket="inflight", Key=key)
        body = client.get_object(Bucket="inflight", Key=key)["Body"].read()
        assert len(body) == head["ContentLength"]
        assert f'"{hashlib.md5(body).hexdigest()}"' == head["ETag"], key
