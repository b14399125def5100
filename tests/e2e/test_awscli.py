"""aws-cli (v1, from PyPI) against a real server: s3 cp/ls/rm/sync/mb/rb and s3api multipart."""

from __future__ import annotations

import hashlib
import json
import os
import time

from conftest import unique_bucket_name
from leofs_harness import multipart_etag
from treeutil import SAMPLE_TREE, make_tree, tree_digests

MIB = 1 << 20


def listed_keys(s3, bucket: str) -> list[str]:
    pag = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pag for o in page.get("Contents", [])]


def test_mb_ls_rb(aws, s3):
    name = unique_bucket_name("cli")
    aws("s3", "mb", f"s3://{name}")
    assert name in aws("s3", "ls").stdout.split()
    aws("s3", "rb", f"s3://{name}")
    assert name not in aws("s3", "ls").stdout.split()


def test_cp_small_and_50mib_multipart(aws, s3, bucket, tmp_path):
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello from aws-cli\n")
    aws("s3", "cp", str(small), f"s3://{bucket}/small.txt")
    assert s3.get_object(Bucket=bucket, Key="small.txt")["Body"].read() == b"hello from aws-cli\n"

    big = tmp_path / "big.bin"
    data = os.urandom(50 * MIB)
    big.write_bytes(data)
    aws("s3", "cp", str(big), f"s3://{bucket}/dir/big.bin")
    # Default aws-cli multipart: 8 MiB parts -> 7 parts.
    head = s3.head_object(Bucket=bucket, Key="dir/big.bin")
    assert head["ContentLength"] == len(data)
    parts = [data[i : i + 8 * MIB] for i in range(0, len(data), 8 * MIB)]
    assert head["ETag"] == multipart_etag(parts)

    out = tmp_path / "out.bin"
    aws("s3", "cp", f"s3://{bucket}/dir/big.bin", str(out))
    assert hashlib.md5(out.read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()
    out_small = tmp_path / "out-small.txt"
    aws("s3", "cp", f"s3://{bucket}/small.txt", str(out_small))
    assert out_small.read_bytes() == b"hello from aws-cli\n"


def test_ls_and_rm_recursive(aws, s3, bucket):
    for key in ("top.txt", "d1/a", "d1/b", "d1/d2/c", "keep/x"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    out = aws("s3", "ls", f"s3://{bucket}/").stdout
    lines = [line.split() for line in out.splitlines()]
    assert ["PRE", "d1/"] in lines and ["PRE", "keep/"] in lines
    assert any(line[-1] == "top.txt" and line[-2] == "7" for line in lines)
    rec = aws("s3", "ls", "--recursive", f"s3://{bucket}").stdout
    assert sorted(line.split()[-1] for line in rec.splitlines()) == sorted(
        ["top.txt", "d1/a", "d1/b", "d1/d2/c", "keep/x"])
    aws("s3", "rm", "--recursive", f"s3://{bucket}/d1/")
    assert listed_keys(s3, bucket) == ["keep/x", "top.txt"]
    aws("s3", "rm", f"s3://{bucket}/top.txt")
    assert listed_keys(s3, bucket) == ["keep/x"]


def test_sync_both_ways(aws, s3, bucket, tmp_path):
    src = tmp_path / "src"
    digests = make_tree(src, SAMPLE_TREE)
    aws("s3", "sync", str(src), f"s3://{bucket}/tree")
    assert sorted(listed_keys(s3, bucket)) == sorted(f"tree/{k}" for k in SAMPLE_TREE)
    for rel, md5 in digests.items():
        body = s3.get_object(Bucket=bucket, Key=f"tree/{rel}")["Body"].read()
        assert hashlib.md5(body).hexdigest() == md5, rel

    # Change one file, delete one, add one: sync --delete mirrors it.
    (src / "a.txt").write_bytes(b"changed content, longer than before")
    (src / "other/g.bin").unlink()
    (src / "new.txt").write_bytes(b"new")
    # aws s3 sync uploads when the local mtime is newer than LastModified (second precision):
    # date the local files in the past so the second sync below is deterministic.
    past = time.time() - 60
    for path in src.rglob("*"):
        os.utime(path, (past, past))
    aws("s3", "sync", "--delete", str(src), f"s3://{bucket}/tree")
    expected = tree_digests(src)
    assert sorted(listed_keys(s3, bucket)) == sorted(f"tree/{k}" for k in expected)
    assert s3.get_object(Bucket=bucket, Key="tree/a.txt")["Body"].read() == b"changed content, longer than before"

    # A second sync uploads nothing.
    again = aws("s3", "sync", str(src), f"s3://{bucket}/tree").stdout
    assert "upload:" not in again

    dst = tmp_path / "dst"
    aws("s3", "sync", f"s3://{bucket}/tree", str(dst))
    assert tree_digests(dst) == expected


def test_s3api_multipart(aws, s3, bucket, tmp_path):
    p1, p2 = os.urandom(5 * MIB), os.urandom(MIB + 3)
    (tmp_path / "p1").write_bytes(p1)
    (tmp_path / "p2").write_bytes(p2)
    up = json.loads(aws("s3api", "create-multipart-upload", "--bucket", bucket, "--key", "api/mp").stdout)
    uid = up["UploadId"]
    etags = []
    for n, name in ((1, "p1"), (2, "p2")):
        res = json.loads(aws("s3api", "upload-part", "--bucket", bucket, "--key", "api/mp",
                             "--upload-id", uid, "--part-number", str(n),
                             "--body", str(tmp_path / name)).stdout)
        etags.append(res["ETag"])
    listed = json.loads(aws("s3api", "list-parts", "--bucket", bucket, "--key", "api/mp",
                            "--upload-id", uid).stdout)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, len(p1)), (2, len(p2))]
    parts = {"Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]}
    (tmp_path / "parts.json").write_text(json.dumps(parts))
    done = json.loads(aws("s3api", "complete-multipart-upload", "--bucket", bucket, "--key", "api/mp",
                          "--upload-id", uid, "--multipart-upload",
                          f"file://{tmp_path / 'parts.json'}").stdout)
    assert done["ETag"] == multipart_etag([p1, p2])
    aws("s3api", "get-object", "--bucket", bucket, "--key", "api/mp", str(tmp_path / "got"))
    assert (tmp_path / "got").read_bytes() == p1 + p2
    head = json.loads(aws("s3api", "head-object", "--bucket", bucket, "--key", "api/mp").stdout)
    assert head["ContentLength"] == len(p1) + len(p2)
