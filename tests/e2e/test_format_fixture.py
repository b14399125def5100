"""Data directories written by earlier releases keep opening and reading.

Each fixture in tests/fixtures/ was written by an earlier release with
tests/fixtures/make_datadir_fixture.py (its `expected.json` lists every object's size, MD5 and
metadata, and the deleted keys). The current build must open it, serve every object byte for byte,
keep deleted keys deleted, accept new writes, and survive a clean restart and a crash on it.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from leofs_harness import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "fixtures"
#: Fixture name -> the release that wrote it.
WRITTEN_BY = {"datadir-v1": "be8c07d (segment format 1, checkpoint format 1)"}
CONFIG = """
[engine]
segment_size_bytes = 16777216
"""


def unpack(name: str, into: Path) -> tuple[Path, dict]:
    with tarfile.open(FIXTURES / f"{name}.tar.gz") as tar:
        tar.extractall(into, filter="data")
    data = into / name
    return data, json.loads((data / "expected.json").read_text())


def check_all(client, expected: dict) -> None:
    by_bucket: dict[str, list[str]] = {}
    for obj in expected["objects"]:
        got = client.get_object(Bucket=obj["bucket"], Key=obj["key"])
        body = got["Body"].read()
        assert len(body) == obj["size"], obj["key"]
        assert hashlib.md5(body).hexdigest() == obj["md5"], obj["key"]
        assert got["Metadata"] == obj["metadata"], obj["key"]
        by_bucket.setdefault(obj["bucket"], []).append(obj["key"])
    for bucket, keys in by_bucket.items():
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        listed = [o["Key"] for page in pages for o in page.get("Contents", [])]
        assert listed == sorted(keys), f"listing of {bucket}"
    for path in expected["deleted"]:
        bucket, key = path.split("/", 1)
        with pytest.raises(client.exceptions.NoSuchKey):
            client.get_object(Bucket=bucket, Key=key)


@pytest.mark.parametrize("name", sorted(WRITTEN_BY))
def test_data_dir_of_an_earlier_release_opens_and_reads(make_server, name):
    srv = make_server(start=False, config_toml=CONFIG)
    data, expected = unpack(name, srv.data_dir.parent / "fixture")
    srv.data_dir.rmdir()
    data.rename(srv.data_dir)
    srv.start()
    log = srv.stderr_tail()
    for complaint in ("skipping invalid checkpoint", "set aside", "corrupt record"):
        assert complaint not in log, f"opening the {name} fixture logged {complaint!r}:\n{log}"
    client = srv.client()
    check_all(client, expected)

    added = {"bucket": "fixture", "key": "added/by-this-build", "metadata": {"n": "1"}}
    payload = b"written on an upgraded data dir\n" * 50_000
    client.put_object(Bucket="fixture", Key=added["key"], Body=payload, Metadata=added["metadata"])
    added.update(size=len(payload), md5=hashlib.md5(payload).hexdigest())
    expected["objects"].append(added)
    overwrite = next(o for o in expected["objects"] if o["key"] == "over/write")
    client.put_object(Bucket="fixture-two", Key="over/write", Body=b"third", Metadata={})
    overwrite.update(size=5, md5=hashlib.md5(b"third").hexdigest(), metadata={})
    check_all(client, expected)

    assert srv.stop() == 0
    srv.start()
    check_all(srv.client(), expected)
    srv.crash_restart()
    check_all(srv.client(), expected)
