"""s3cmd 2.x (SigV4, path-style, plain HTTP) against a real server."""

from __future__ import annotations

import hashlib
import os

from conftest import unique_bucket_name
from leofs_harness import empty_bucket
from treeutil import SAMPLE_TREE, make_tree, tree_digests

MIB = 1 << 20


def test_s3cmd_round_trip(s3cmd, s3, tmp_path):
    name = unique_bucket_name("s3cmd")
    s3cmd("mb", f"s3://{name}")
    try:
        assert f"s3://{name}" in s3cmd("ls").stdout

        small = tmp_path / "small.txt"
        small.write_bytes(b"s3cmd small object\n")
        s3cmd("put", str(small), f"s3://{name}/small.txt")
        assert s3.get_object(Bucket=name, Key="small.txt")["Body"].read() == b"s3cmd small object\n"

        # 20 MiB: s3cmd uses multipart above 15 MiB.
        big = tmp_path / "big.bin"
        data = os.urandom(20 * MIB)
        big.write_bytes(data)
        s3cmd("put", str(big), f"s3://{name}/dir/big.bin")
        body = s3.get_object(Bucket=name, Key="dir/big.bin")["Body"].read()
        assert hashlib.md5(body).hexdigest() == hashlib.md5(data).hexdigest()

        out = s3cmd("ls", f"s3://{name}/").stdout
        assert f"s3://{name}/small.txt" in out and f"s3://{name}/dir/" in out
        out = s3cmd("ls", "--recursive", f"s3://{name}").stdout
        assert f"s3://{name}/dir/big.bin" in out and str(20 * MIB) in out

        got = tmp_path / "got.bin"
        s3cmd("get", f"s3://{name}/dir/big.bin", str(got))
        assert hashlib.md5(got.read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()
        got_small = tmp_path / "got-small.txt"
        s3cmd("get", f"s3://{name}/small.txt", str(got_small))
        assert got_small.read_bytes() == b"s3cmd small object\n"

        info = s3cmd("info", f"s3://{name}/small.txt").stdout
        assert hashlib.md5(b"s3cmd small object\n").hexdigest() in info

        s3cmd("del", f"s3://{name}/small.txt")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=name).get("Contents", [])]
        assert keys == ["dir/big.bin"]
        s3cmd("del", f"s3://{name}/dir/big.bin")
        s3cmd("rb", f"s3://{name}")
        assert f"s3://{name}" not in s3cmd("ls").stdout
    finally:
        try:
            empty_bucket(s3, name)
            s3.delete_bucket(Bucket=name)
        except Exception:
            pass


def test_s3cmd_sync(s3cmd, s3, bucket, tmp_path):
    src = tmp_path / "src"
    digests = make_tree(src, SAMPLE_TREE)
    s3cmd("sync", f"{src}/", f"s3://{bucket}/tree/")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(f"tree/{k}" for k in SAMPLE_TREE)
    for rel, md5 in digests.items():
        assert hashlib.md5(s3.get_object(Bucket=bucket, Key=f"tree/{rel}")["Body"].read()).hexdigest() == md5

    (src / "a.txt").write_bytes(b"modified by the test")
    (src / "dir/b.bin").unlink()
    s3cmd("sync", "--delete-removed", f"{src}/", f"s3://{bucket}/tree/")
    expected = tree_digests(src)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(f"tree/{k}" for k in expected)

    dst = tmp_path / "dst"
    dst.mkdir()
    s3cmd("sync", f"s3://{bucket}/tree/", f"{dst}/")
    assert tree_digests(dst) == expected
