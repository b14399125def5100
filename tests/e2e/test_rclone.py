"""rclone (Debian package, s3 backend, provider Other, path-style) against a real server."""

from __future__ import annotations

import hashlib

import requests

from conftest import unique_bucket_name
from leofs_harness import empty_bucket
from treeutil import SAMPLE_TREE, make_tree, tree_digests


def test_rclone_copy_check_lsf_sync(rclone, s3, bucket, tmp_path):
    src = tmp_path / "src"
    digests = make_tree(src, SAMPLE_TREE)
    rclone("copy", str(src), f"leo:{bucket}/tree")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(f"tree/{k}" for k in SAMPLE_TREE)
    for rel, md5 in digests.items():
        assert hashlib.md5(s3.get_object(Bucket=bucket, Key=f"tree/{rel}")["Body"].read()).hexdigest() == md5

    check = rclone("check", str(src), f"leo:{bucket}/tree")
    assert "0 differences found" in check.stderr, check.stderr

    lsf = rclone("lsf", "-R", "--files-only", f"leo:{bucket}/tree").stdout.split("\n")
    assert sorted(x for x in lsf if x) == sorted(SAMPLE_TREE)
    top = rclone("lsf", f"leo:{bucket}/tree").stdout.split("\n")
    assert sorted(x for x in top if x) == sorted(["a.txt", "empty.bin", "dir/", "with space/", "other/"])

    (src / "a.txt").write_bytes(b"rclone changed this file")
    (src / "other/g.bin").unlink()
    (src / "added.bin").write_bytes(b"added")
    rclone("sync", str(src), f"leo:{bucket}/tree")
    expected = tree_digests(src)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(f"tree/{k}" for k in expected)
    check = rclone("check", str(src), f"leo:{bucket}/tree")
    assert "0 differences found" in check.stderr, check.stderr

    # A difference must be reported (the check can fail).
    (src / "a.txt").write_bytes(b"local only change")
    bad = rclone("check", str(src), f"leo:{bucket}/tree", check=False)
    assert bad.returncode != 0 and "1 differences found" in bad.stderr, bad.stderr

    dst = tmp_path / "dst"
    rclone("copy", f"leo:{bucket}/tree", str(dst))
    assert tree_digests(dst) == expected


def test_rclone_large_multipart(rclone, s3, bucket, tmp_path):
    import os

    src = tmp_path / "big"
    src.mkdir()
    data = os.urandom(12 * 1024 * 1024)
    (src / "big.bin").write_bytes(data)
    rclone("copy", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", str(src), f"leo:{bucket}/big")
    head = s3.head_object(Bucket=bucket, Key="big/big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-3"')
    body = s3.get_object(Bucket=bucket, Key="big/big.bin")["Body"].read()
    assert hashlib.md5(body).hexdigest() == hashlib.md5(data).hexdigest()
    check = rclone("check", str(src), f"leo:{bucket}/big")
    assert "0 differences found" in check.stderr, check.stderr


def test_rclone_object_acls(rclone, s3, server, tmp_path):
    """rclone sends `x-amz-acl: private` by default: the object is private, in a public-read
    bucket too (S3's meaning); `--s3-acl public-read` makes it readable by anyone."""
    name = unique_bucket_name("rcpub")
    s3.create_bucket(Bucket=name, ACL="public-read")
    try:
        f = tmp_path / "f.txt"
        f.write_bytes(b"public via rclone")
        rclone("copy", str(f), f"leo:{name}/")
        assert requests.get(f"{server.endpoint}/{name}/f.txt", timeout=30).status_code == 403
        rclone("copy", "--s3-acl", "public-read", str(f), f"leo:{name}/public/")
        r = requests.get(f"{server.endpoint}/{name}/public/f.txt", timeout=30)
        assert r.status_code == 200 and r.content == b"public via rclone"
    finally:
        empty_bucket(s3, name)
        s3.delete_bucket(Bucket=name)
