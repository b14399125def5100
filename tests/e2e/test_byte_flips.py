"""One flipped byte on disk, of every kind, under a real server (issue: silent loss on a damaged
segment header).

After a clean stop, a byte is flipped in a segment header (every segment, as the hostile test
did), a record header, a key, a body, a large object's first and middle chunk, or a checkpoint;
the server is restarted. Whatever was hit: no acknowledged object answers 404, listings keep every
key, every undamaged object reads back byte for byte, a damaged object answers a 5xx (or, for
damage found after the first byte was sent, a body the client sees cut short: never a 200 with
wrong or short bytes it cannot tell apart). Flipping the byte back and restarting restores it.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from pathlib import Path

import pytest

from leofs_harness import raw_request

MIB = 1 << 20
CONFIG = """
[engine]
segment_size_bytes = 16777216
"""
BUCKET = "flips"
#: Bytes of the fixed record header before the key (engine/FORMAT.md §4).
RECORD_HEADER_BYTES = 112
SMALL_COUNT = 24
BIG_KEY = "big/object"
BIG_SIZE = 9 * MIB + 123


def small_body(i: int) -> bytes:
    marker = f"SMALLBODY-{i:03d}-{os.urandom(4).hex()}-".encode()
    return marker + os.urandom(1_000 + 1_777 * i)


def big_body() -> bytes:
    body = bytearray(os.urandom(BIG_SIZE))
    for chunk in range(3):
        marker = f"BIGCHUNK-{chunk}-{os.urandom(4).hex()}-".encode()
        body[chunk * 4 * MIB : chunk * 4 * MIB + len(marker)] = marker
    return bytes(body)


def segments(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("shard-*/log/*.seg"))


def find_once(data_dir: Path, needle: bytes | re.Pattern) -> tuple[Path, int, int]:
    """(segment, offset, length) of the one place `needle` (bytes or a bytes regex) occurs."""
    pattern = needle if isinstance(needle, re.Pattern) else re.compile(re.escape(needle))
    hits = []
    for seg in segments(data_dir):
        data = seg.read_bytes()
        hits.extend((seg, m.start(), m.end() - m.start()) for m in pattern.finditer(data))
    assert len(hits) == 1, f"{pattern.pattern[:40]!r} found {len(hits)} times"
    return hits[0]


def checkpoint_content_len(path: Path) -> int:
    """Bytes of a checkpoint's content (format 2 records it at bytes 88..96; the rest of the
    file is slack of the reserve it was written into; format 1 is the whole file)."""
    head = path.read_bytes()[:96]
    version = struct.unpack_from("<I", head, 8)[0]
    return struct.unpack_from("<Q", head, 88)[0] if version >= 2 else path.stat().st_size


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def object_record(data_dir: Path, key: str) -> tuple[Path, int, int]:
    """(segment, offset of the record, offset of its body) of an object's record."""
    # The storage key: "o", the bucket's name with its incarnation ("~" and 16 hex digits), NUL,
    # the object key.
    engine_key = re.compile(
        b"o" + re.escape(BUCKET.encode()) + b"~[0-9a-f]{16}\x00" + re.escape(key.encode())
    )
    seg, key_at, engine_key_len = find_once(data_dir, engine_key)
    record_at = key_at - RECORD_HEADER_BYTES
    header = seg.read_bytes()[record_at : record_at + RECORD_HEADER_BYTES]
    key_len, meta_len = struct.unpack_from("<II", header, 12)
    assert key_len == engine_key_len
    return seg, record_at, key_at + key_len + meta_len


class Store:
    """The server, the objects it acknowledged, and checks over all of them."""

    def __init__(self, srv):
        self.srv = srv
        self.objects: dict[str, bytes] = {}

    def fill(self) -> None:
        client = self.srv.client()
        client.create_bucket(Bucket=BUCKET)
        for i in range(SMALL_COUNT):
            self.put(client, f"small/{i:03d}", small_body(i))
        self.put(client, BIG_KEY, big_body())
        client.delete_object(Bucket=BUCKET, Key="small/000")
        del self.objects["small/000"]

    def put(self, client, key: str, body: bytes) -> None:
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
        self.objects[key] = body

    def restart(self) -> None:
        assert self.srv.stop() == 0
        self.srv.start()

    def get_status(self, key: str) -> int:
        return raw_request(self.srv, "GET", f"/{BUCKET}/{key}", timeout_s=60).status

    def check(self, damaged: frozenset[str] = frozenset()) -> None:
        client = self.srv.client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        listed = [o["Key"] for page in pages for o in page.get("Contents", [])]
        assert listed == sorted(self.objects), "a listing lost or invented keys"
        for key, body in self.objects.items():
            if key in damaged:
                continue
            got = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            assert len(got) == len(body) and got == body, f"{key} differs"
        assert self.get_status("small/000") == 404, "a deleted object came back"


@pytest.fixture
def store(make_server):
    srv = make_server(config_toml=CONFIG)
    s = Store(srv)
    s.fill()
    assert srv.stop() == 0
    return s


def test_segment_header_byte_20_of_every_segment_loses_nothing(store):
    data = store.srv.data_dir
    for seg in segments(data):
        flip(seg, 20)
    store.srv.start()
    store.check()
    log = store.srv.stderr_tail()
    assert "segment header copy damaged" in log, "the damage was not reported"
    # The copies were rewritten: the next start finds nothing to repair and still loses nothing.
    store.restart()
    store.check()


def test_checkpoint_flip_loses_nothing(store):
    for ckpt in store.srv.data_dir.glob("shard-*/index/*.ckpt"):
        flip(ckpt, checkpoint_content_len(ckpt) // 2)
    store.srv.start()
    store.check()


@pytest.mark.parametrize("where", ["body", "key", "record-lsn", "record-checksum"])
def test_damaged_small_object_answers_5xx_until_repaired(store, where):
    data = store.srv.data_dir
    key = "small/007"
    seg, record_at, body_at = object_record(data, key)
    offset = {
        "body": body_at + 500,
        "key": record_at + RECORD_HEADER_BYTES + 3,
        "record-lsn": record_at + 49,
        "record-checksum": record_at + 100,
    }[where]
    flip(seg, offset)
    store.srv.start()
    status = store.get_status(key)
    assert 500 <= status < 600, f"a damaged object answered {status}"
    store.check(damaged=frozenset({key}))
    assert store.srv.stop() == 0
    flip(seg, offset)
    store.srv.start()
    store.check()


def test_damaged_first_chunk_answers_5xx_before_any_byte(store):
    data = store.srv.data_dir
    marker = store.objects[BIG_KEY][:12]
    seg, at, _ = find_once(data, marker)
    flip(seg, at + 1000)
    store.srv.start()
    status = store.get_status(BIG_KEY)
    assert 500 <= status < 600, f"a damaged first chunk answered {status}"
    store.check(damaged=frozenset({BIG_KEY}))
    assert store.srv.stop() == 0
    flip(seg, at + 1000)
    store.srv.start()
    store.check()


def test_damaged_middle_chunk_is_never_a_complete_wrong_body(store):
    data = store.srv.data_dir
    body = store.objects[BIG_KEY]
    marker = body[4 * MIB : 4 * MIB + 12]
    seg, at, _ = find_once(data, marker)
    flip(seg, at + 5000)
    store.srv.start()
    client = store.srv.client()
    try:
        got = client.get_object(Bucket=BUCKET, Key=BIG_KEY)["Body"].read()
    except Exception as e:  # the client sees the body cut short (or a 5xx)
        print(f"damaged middle chunk: {type(e).__name__}: {e}")
    else:
        assert not (len(got) == len(body) and got != body), "a complete body with wrong bytes"
        assert got == body or len(got) < len(body)
        assert got != body, "damaged bytes were served as if intact"
    store.check(damaged=frozenset({BIG_KEY}))
    assert store.srv.stop() == 0
    flip(seg, at + 5000)
    store.srv.start()
    store.check()
    assert hashlib.md5(client.get_object(Bucket=BUCKET, Key=BIG_KEY)["Body"].read()).digest() == \
        hashlib.md5(body).digest()
