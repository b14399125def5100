"""Conditional PUT is exclusive (issue: 16 concurrent `If-None-Match: *` PUTs, 14.4 succeeded).

Concurrent creators of one new key with `If-None-Match: *`, of every size class (inline, one
chunk, several chunks, multipart completion): exactly one succeeds, the others get 412, and the
object holds the winner's bytes. Concurrent `If-Match` overwrites of one ETag: exactly one wins.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import threading

import pytest
from botocore.exceptions import ClientError

MIB = 1 << 20
CREATORS = 16
SIZES = {"4KiB": 4096, "1MiB": MIB, "9MiB": 9 * MIB}


def race(count, attempt):
    """Runs `attempt(i)` from `count` threads released at once; returns their results."""
    barrier = threading.Barrier(count)

    def run(i):
        barrier.wait()
        return attempt(i)

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def status_of(call) -> int:
    try:
        call()
        return 200
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.mark.parametrize("size_name", sorted(SIZES))
def test_concurrent_if_none_match_creators_exactly_one_wins(server, bucket, size_name):
    size = SIZES[size_name]
    clients = [server.client() for _ in range(CREATORS)]
    for round_no in range(3):
        key = f"race/{size_name}/{round_no}"
        bodies = [os.urandom(size) for _ in range(CREATORS)]
        statuses = race(
            CREATORS,
            lambda i: status_of(
                lambda: clients[i].put_object(
                    Bucket=bucket, Key=key, Body=bodies[i], IfNoneMatch="*"
                )
            ),
        )
        winners = [i for i, s in enumerate(statuses) if s == 200]
        assert len(winners) == 1, f"{size_name} round {round_no}: statuses {statuses}"
        assert sorted(s for s in statuses if s != 200) == [412] * (CREATORS - 1), statuses
        stored = clients[0].get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.md5(stored).digest() == hashlib.md5(bodies[winners[0]]).digest()


def test_concurrent_if_match_overwrites_of_one_etag_exactly_one_wins(server, bucket):
    clients = [server.client() for _ in range(CREATORS)]
    for size in (4096, 9 * MIB):
        key = f"if-match/{size}"
        etag = clients[0].put_object(Bucket=bucket, Key=key, Body=b"original")["ETag"]
        bodies = [os.urandom(size) for _ in range(CREATORS)]
        statuses = race(
            CREATORS,
            lambda i: status_of(
                lambda: clients[i].put_object(Bucket=bucket, Key=key, Body=bodies[i], IfMatch=etag)
            ),
        )
        assert statuses.count(200) == 1, f"size {size}: statuses {statuses}"
        assert statuses.count(412) == CREATORS - 1, statuses


def test_concurrent_multipart_completions_with_if_none_match_exactly_one_wins(server, bucket):
    client = server.client()
    key = "race/multipart"
    uploads = []
    for i in range(6):
        up = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        part = client.upload_part(
            Bucket=bucket, Key=key, UploadId=up, PartNumber=1, Body=os.urandom(MIB + i)
        )
        uploads.append((up, part["ETag"]))
    clients = [server.client() for _ in uploads]
    statuses = race(
        len(uploads),
        lambda i: status_of(
            lambda: clients[i].complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=uploads[i][0],
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": uploads[i][1]}]},
                IfNoneMatch="*",
            )
        ),
    )
    assert statuses.count(200) == 1, statuses
    assert statuses.count(412) == len(uploads) - 1, statuses
    for (up, _), status in zip(uploads, statuses):
        if status != 200:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=up)
