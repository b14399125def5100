"""Storage owns its garbage (issue: a GET racing an overwrite got a 200 and a truncated body;
chunks of crashed or aborted uploads stayed on disk forever).

- A GET that started before an overwrite completes with the old body, every time: it holds a
  lease on the chunks it streams, where they live.
- The chunks an overwrite or a delete leaves are collected as soon as no GET streams them.
- An aborted multipart upload, and a PUT whose client went away mid-body, free their chunks.
- After `kill -9` in the middle of a 200 MiB upload, the orphaned chunks are swept within the
  grace period (`chunk_grace_secs`).
- `leofs-adm status` shows live and dead bytes per shard.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time

from leofs_harness import sigv4_headers

MIB = 1 << 20
BUCKET = "garbage"


def live_bytes(srv) -> int:
    status = json.loads(srv.adm("status", json_output=True).stdout)
    return sum(s["live_bytes"] for s in status["shards"])


def status(srv) -> list[dict]:
    return json.loads(srv.adm("status", json_output=True).stdout)["shards"]


def wait_until(predicate, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def start_raw_put(srv, key: str, length: int) -> http.client.HTTPConnection:
    """Opens a PUT of `length` bytes (unsigned payload) and sends its headers only."""
    path = f"/{BUCKET}/{key}"
    headers = sigv4_headers(
        "PUT", f"127.0.0.1:{srv.s3_port}", path, None, {"content-length": str(length)},
        "UNSIGNED-PAYLOAD", srv.access_key, srv.secret_key,
    )
    conn = http.client.HTTPConnection("127.0.0.1", srv.s3_port, timeout=60)
    conn.putrequest("PUT", path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    return conn


def test_gets_racing_overwrites_always_complete_with_a_whole_version(make_server):
    srv = make_server()
    client = srv.client()
    client.create_bucket(Bucket=BUCKET)
    key = "racing/object"
    versions: set[bytes] = set()
    first = os.urandom(13 * MIB + 17)
    client.put_object(Bucket=BUCKET, Key=key, Body=first)
    versions.add(hashlib.md5(first).digest())
    stop = threading.Event()
    problems: list[str] = []
    gets = [0]

    def overwrite():
        writer = srv.client()
        n = 0
        while not stop.is_set():
            body = os.urandom(9 * MIB + (n * 7919) % (11 * MIB))
            versions.add(hashlib.md5(body).digest())
            writer.put_object(Bucket=BUCKET, Key=key, Body=body)
            n += 1

    def read():
        reader = srv.client()
        while not stop.is_set():
            got = reader.get_object(Bucket=BUCKET, Key=key)
            length = got["ContentLength"]
            body = bytearray()
            stream = got["Body"]
            try:
                while True:
                    piece = stream.read(MIB)
                    if not piece:
                        break
                    body += piece
                    time.sleep(0.03)  # a slow reader: overwrites commit while it streams
            except Exception as e:  # a body cut short
                problems.append(f"GET cut after {len(body)} of {length} bytes: {e}")
                continue
            if len(body) != length:
                problems.append(f"GET returned {len(body)} of {length} bytes")
            elif hashlib.md5(body).digest() not in versions:
                problems.append("GET returned bytes of no version ever written")
            gets[0] += 1

    threads = [threading.Thread(target=overwrite)] + [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(25)
    stop.set()
    for t in threads:
        t.join(120)
    assert gets[0] >= 10, f"only {gets[0]} GETs completed"
    assert not problems, f"{len(problems)} of {gets[0] + len(problems)} GETs failed: {problems[:5]}"
    # Every replaced version was collected once its readers were done.
    last = client.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
    wait_until(lambda: live_bytes(srv) < last + 2 * MIB, 30,
               f"live bytes back to one object (last {last}): {status(srv)}")


def test_overwritten_and_deleted_objects_free_their_chunks_at_once(make_server):
    srv = make_server()
    client = srv.client()
    client.create_bucket(Bucket=BUCKET)
    base = live_bytes(srv)
    for _ in range(6):
        client.put_object(Bucket=BUCKET, Key="big", Body=os.urandom(20 * MIB))
    wait_until(lambda: live_bytes(srv) < base + 21 * MIB, 10,
               f"overwritten chunks not collected: {status(srv)}")
    client.delete_object(Bucket=BUCKET, Key="big")
    wait_until(lambda: live_bytes(srv) < base + MIB, 10,
               f"deleted object's chunks not collected: {status(srv)}")
    table = srv.adm("status").stdout
    assert "live" in table and "dead" in table, table
    assert all(s["garbage_pending"] == 0 for s in status(srv)), status(srv)


def test_aborted_upload_and_a_put_cut_off_mid_body_free_their_chunks(make_server):
    srv = make_server()
    client = srv.client()
    client.create_bucket(Bucket=BUCKET)
    base = live_bytes(srv)
    up = client.create_multipart_upload(Bucket=BUCKET, Key="aborted")["UploadId"]
    for n in (1, 2, 3):
        client.upload_part(Bucket=BUCKET, Key="aborted", UploadId=up, PartNumber=n,
                           Body=os.urandom(5 * MIB))
    assert live_bytes(srv) > base + 14 * MIB
    client.abort_multipart_upload(Bucket=BUCKET, Key="aborted", UploadId=up)
    wait_until(lambda: live_bytes(srv) < base + MIB, 10,
               f"aborted upload's chunks not collected: {status(srv)}")

    conn = start_raw_put(srv, "cut-off", 64 * MIB)
    for _ in range(30):
        conn.send(os.urandom(MIB))
    time.sleep(0.5)
    assert live_bytes(srv) > base + 20 * MIB
    conn.close()
    wait_until(lambda: live_bytes(srv) < base + MIB, 10,
               f"a cut-off PUT's chunks not collected: {status(srv)}")
    assert client.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_kill9_mid_upload_orphans_are_swept_within_the_grace(make_server):
    grace_s = 30
    srv = make_server(extra_args=["--chunk-grace-secs", str(grace_s)])
    client = srv.client()
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="kept", Body=os.urandom(9 * MIB))
    base = live_bytes(srv)
    conn = start_raw_put(srv, "interrupted", 200 * MIB)
    for _ in range(120):
        conn.send(os.urandom(MIB))
    time.sleep(0.5)
    grown = live_bytes(srv)
    assert grown > base + 100 * MIB, f"the upload wrote {grown - base} bytes before the crash"
    srv.kill9()
    conn.close()
    srv.start()
    restarted = time.monotonic()
    took = wait_until(lambda: live_bytes(srv) < base + MIB, grace_s,
                      f"orphans of the interrupted upload not swept: {status(srv)}")
    print(f"orphans swept {took:.1f} s after the restart (grace {grace_s} s)")
    assert sum(s["orphan_chunks_swept"] for s in status(srv)) >= 25
    assert time.monotonic() - restarted < grace_s
    kept = srv.client().get_object(Bucket=BUCKET, Key="kept")["Body"].read()
    assert len(kept) == 9 * MIB
