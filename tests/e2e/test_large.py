"""A 1 GiB object through a real server with bounded server memory.

The upload streams from a generator-backed, non-seekable reader (never a 1 GiB buffer in the
test), the download is hashed on the fly, and the server's VmRSS is sampled every 100 ms.
Bound: peak RSS during the transfer stays below baseline + RSS_GROWTH_BOUND_BYTES (300 MiB) with
the engine's object cache capped at 64 MiB. Runs in the normal suite; LEOFS_E2E_SKIP_LARGE=1
skips it.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
from boto3.s3.transfer import TransferConfig

from leofs_harness import PatternReader

MIB = 1 << 20
OBJECT_BYTES = 1 << 30
PART_BYTES = 16 * MIB
CACHE_BYTES = 64 * MIB
RSS_GROWTH_BOUND_BYTES = 300 * MIB
SAMPLE_INTERVAL_S = 0.1

pytestmark = [
    pytest.mark.large,
    pytest.mark.skipif(os.environ.get("LEOFS_E2E_SKIP_LARGE") == "1", reason="LEOFS_E2E_SKIP_LARGE=1"),
    pytest.mark.timeout(900),
]


class RssSampler:
    def __init__(self, server):
        self.server = server
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss_bytes())
            self.samples += 1
            time.sleep(SAMPLE_INTERVAL_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def expected_digests(size: int, part_bytes: int) -> tuple[str, str]:
    """(md5 hex of the whole stream, multipart ETag) recomputed from the generator."""
    reader = PatternReader(size)
    whole, part_digests = hashlib.md5(), []
    while True:
        part = reader.read(part_bytes)
        if not part:
            break
        whole.update(part)
        part_digests.append(hashlib.md5(part).digest())
    etag = f'"{hashlib.md5(b"".join(part_digests)).hexdigest()}-{len(part_digests)}"'
    return whole.hexdigest(), etag


def test_1gib_upload_download_bounded_rss(make_server):
    srv = make_server(config_toml=f"[engine]\ncache_bytes = {CACHE_BYTES}\n")
    client = srv.client()
    client.create_bucket(Bucket="large")
    client.put_object(Bucket="large", Key="warmup", Body=os.urandom(4 * MIB))
    client.get_object(Bucket="large", Key="warmup")["Body"].read()
    baseline = srv.rss_bytes()

    config = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES,
                            max_concurrency=4)
    started = time.monotonic()
    with RssSampler(srv) as up:
        client.upload_fileobj(PatternReader(OBJECT_BYTES), "large", "one-gib", Config=config)
    upload_s = time.monotonic() - started

    whole_md5, etag = expected_digests(OBJECT_BYTES, PART_BYTES)
    head = client.head_object(Bucket="large", Key="one-gib")
    assert head["ContentLength"] == OBJECT_BYTES
    assert head["ETag"] == etag

    started = time.monotonic()
    with RssSampler(srv) as down:
        body = client.get_object(Bucket="large", Key="one-gib")["Body"]
        h, total = hashlib.md5(), 0
        for chunk in body.iter_chunks(MIB):
            h.update(chunk)
            total += len(chunk)
    download_s = time.monotonic() - started
    assert total == OBJECT_BYTES
    assert h.hexdigest() == whole_md5

    print(
        f"\n1 GiB: upload {upload_s:.1f}s ({OBJECT_BYTES / MIB / upload_s:.0f} MiB/s), "
        f"download {download_s:.1f}s ({OBJECT_BYTES / MIB / download_s:.0f} MiB/s); "
        f"RSS baseline {baseline / MIB:.0f} MiB, peak upload {up.peak / MIB:.0f} MiB, "
        f"peak download {down.peak / MIB:.0f} MiB ({up.samples + down.samples} samples)"
    )
    assert up.samples > 5 and down.samples > 5
    assert up.peak - baseline < RSS_GROWTH_BOUND_BYTES, f"upload RSS grew {(up.peak - baseline) / MIB:.0f} MiB"
    assert down.peak - baseline < RSS_GROWTH_BOUND_BYTES, (
        f"download RSS grew {(down.peak - baseline) / MIB:.0f} MiB")
