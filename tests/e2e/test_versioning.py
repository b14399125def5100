"""S3 versioning (issue 16, shard/VERSIONING.md), written from the S3 API reference and checked
with boto3 and aws-cli: Put/GetBucketVersioning; every write into an enabled bucket is a new
version with its id in `x-amz-version-id`; GET/HEAD/DELETE/CopyObject/UploadPartCopy by
`versionId`; delete markers (`x-amz-delete-marker`, 404 NoSuchKey without an id, 405
MethodNotAllowed by id); versions deleted for good (NoSuchVersion); the `null` version written
before versioning and while it is suspended; ListObjectVersions with key and version-id markers,
prefix and delimiter; DeleteObjects with versions; conditional and multipart writes into a
versioned bucket; a bucket holding only versions or markers is not empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
from botocore.exceptions import ClientError

MIB = 1 << 20


def error_of(call):
    try:
        call()
    except ClientError as e:
        return (
            e.response["ResponseMetadata"]["HTTPStatusCode"],
            e.response["Error"]["Code"],
            e.response["ResponseMetadata"]["HTTPHeaders"],
        )
    raise AssertionError("the request succeeded")


def enable(s3, bucket, status="Enabled"):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})


def listing_order(version):
    """A page lists versions and markers apart: this merges them back in listing order for these
    tests: by key, the latest first, then newest first (a version id sorts as its stamp, newest
    first), the `null` version last (in these tests it is always the oldest noncurrent one)."""
    version_id = version["VersionId"]
    return (version["Key"], not version["IsLatest"], version_id == "null", version_id)


def all_versions(s3, bucket, **kwargs):
    """Every version and marker in listing order, as (key, version id, is latest, is marker)."""
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, **kwargs):
        items = [(v, False) for v in page.get("Versions", [])] + [
            (m, True) for m in page.get("DeleteMarkers", [])
        ]
        page_items = sorted(items, key=lambda item: listing_order(item[0]))
        out.extend(
            (v["Key"], v["VersionId"], v["IsLatest"], marker) for v, marker in page_items
        )
    return out


def test_versioning_status_round_trips_and_bad_configurations_are_refused(s3, bucket):
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    enable(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    enable(s3, bucket, "Suspended")
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    enable(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    status, code, _ = error_of(
        lambda: s3.put_bucket_versioning(
            Bucket=bucket,
            VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"},
        )
    )
    assert (status, code) == (501, "NotImplemented")
    status, code, _ = error_of(
        lambda: s3.put_bucket_versioning(
            Bucket="no-such-bucket-here", VersioningConfiguration={"Status": "Enabled"}
        )
    )
    assert (status, code) == (404, "NoSuchBucket")


def test_every_write_is_a_version_readable_by_its_id(s3, bucket):
    enable(s3, bucket)
    bodies = [b"first", os.urandom(3 * MIB), b"third"]
    ids = []
    for body in bodies:
        resp = s3.put_object(Bucket=bucket, Key="doc", Body=body)
        ids.append(resp["VersionId"])
        assert resp["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert len(set(ids)) == 3 and "null" not in ids
    latest = s3.get_object(Bucket=bucket, Key="doc")
    assert latest["Body"].read() == bodies[2]
    assert latest["VersionId"] == ids[2]
    for version_id, body in zip(ids, bodies):
        got = s3.get_object(Bucket=bucket, Key="doc", VersionId=version_id)
        assert got["Body"].read() == body
        assert got["VersionId"] == version_id
        head = s3.head_object(Bucket=bucket, Key="doc", VersionId=version_id)
        assert head["ContentLength"] == len(body)
        assert head["VersionId"] == version_id
    # A ranged read of a noncurrent chunked version.
    ranged = s3.get_object(Bucket=bucket, Key="doc", VersionId=ids[1], Range="bytes=1048570-1048580")
    assert ranged["Body"].read() == bodies[1][1048570:1048581]
    # Its chunks outlive the overwrite (the collector and the sweeper leave them alone).
    time.sleep(2)
    assert s3.get_object(Bucket=bucket, Key="doc", VersionId=ids[1])["Body"].read() == bodies[1]
    listed = all_versions(s3, bucket)
    assert listed == [
        ("doc", ids[2], True, False),
        ("doc", ids[1], False, False),
        ("doc", ids[0], False, False),
    ]


def test_delete_markers_hide_the_object_until_removed(s3, bucket):
    enable(s3, bucket)
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    deleted = s3.delete_object(Bucket=bucket, Key="k")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    assert marker not in (v1, "null")
    status, code, headers = error_of(lambda: s3.get_object(Bucket=bucket, Key="k"))
    assert (status, code) == (404, "NoSuchKey")
    assert headers["x-amz-delete-marker"] == "true"
    assert headers["x-amz-version-id"] == marker
    status, _, headers = error_of(lambda: s3.head_object(Bucket=bucket, Key="k"))
    assert status == 404 and headers["x-amz-delete-marker"] == "true"
    status, code, headers = error_of(
        lambda: s3.get_object(Bucket=bucket, Key="k", VersionId=marker)
    )
    assert (status, code) == (405, "MethodNotAllowed")
    assert headers["x-amz-delete-marker"] == "true"
    # The version under the marker is still there, by id, and listed as noncurrent.
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=v1)["Body"].read() == b"one"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert all_versions(s3, bucket) == [("k", marker, True, True), ("k", v1, False, False)]
    # Deleting the marker brings the object back.
    removed = s3.delete_object(Bucket=bucket, Key="k", VersionId=marker)
    assert removed["DeleteMarker"] is True and removed["VersionId"] == marker
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"one"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]


def test_a_version_deleted_for_good_is_gone_and_bad_ids_are_refused(s3, bucket):
    enable(s3, bucket)
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(2 * MIB))["VersionId"]
    resp = s3.delete_object(Bucket=bucket, Key="k", VersionId=v2)
    assert resp["VersionId"] == v2 and "DeleteMarker" not in resp
    status, code, _ = error_of(lambda: s3.get_object(Bucket=bucket, Key="k", VersionId=v2))
    assert (status, code) == (404, "NoSuchVersion")
    # The next newest is the latest again, with no write.
    got = s3.get_object(Bucket=bucket, Key="k")
    assert (got["Body"].read(), got["VersionId"]) == (b"one", v1)
    # Deleting a version that is not there succeeds, as in S3.
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v2)
    for bad in ["abc", "NULL", v1.lower()]:
        status, code, _ = error_of(
            lambda: s3.get_object(Bucket=bucket, Key="k", VersionId=bad)
        )
        assert (status, code) == (400, "InvalidArgument"), bad
    status, code, _ = error_of(lambda: s3.get_object(Bucket=bucket, Key="k", VersionId="null"))
    assert (status, code) == (404, "NoSuchVersion")


def test_the_null_version_before_enabling_and_while_suspended(s3, bucket):
    before = s3.put_object(Bucket=bucket, Key="k", Body=b"before")
    assert "VersionId" not in before
    enable(s3, bucket)
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["VersionId"]
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"before"
    assert all_versions(s3, bucket) == [("k", v1, True, False), ("k", "null", False, False)]
    enable(s3, bucket, "Suspended")
    suspended = s3.put_object(Bucket=bucket, Key="k", Body=b"s1")
    assert suspended["VersionId"] == "null"
    # The null version was replaced; v1 stays.
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"s1"
    assert all_versions(s3, bucket) == [("k", "null", True, False), ("k", v1, False, False)]
    marker = s3.delete_object(Bucket=bucket, Key="k")
    assert marker["DeleteMarker"] is True and marker["VersionId"] == "null"
    assert all_versions(s3, bucket) == [("k", "null", True, True), ("k", v1, False, False)]
    status, code, _ = error_of(lambda: s3.get_object(Bucket=bucket, Key="k"))
    assert (status, code) == (404, "NoSuchKey")
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=v1)["Body"].read() == b"v1"


def test_list_object_versions_pages_by_key_and_version_id_markers(s3, bucket):
    enable(s3, bucket)
    expected = []
    for key in ["a/1", "a/2", "b", "c"]:
        ids = [s3.put_object(Bucket=bucket, Key=key, Body=key.encode() * i)["VersionId"] for i in range(1, 4)]
        entries = [(key, i, False) for i in reversed(ids)]
        if key == "b":
            marker = s3.delete_object(Bucket=bucket, Key=key)["VersionId"]
            entries.insert(0, (key, marker, True))
        expected.extend(
            (k, i, n == 0, m) for n, (k, i, m) in enumerate(entries)
        )
    assert all_versions(s3, bucket) == expected
    # Page by page, two at a time, resuming on key and version-id markers.
    seen = []
    kwargs = {}
    while True:
        page = s3.list_object_versions(Bucket=bucket, MaxKeys=2, **kwargs)
        items = sorted(
            [(v, False) for v in page.get("Versions", [])]
            + [(m, True) for m in page.get("DeleteMarkers", [])],
            key=lambda item: listing_order(item[0]),
        )
        assert len(items) <= 2
        seen.extend((v["Key"], v["VersionId"], v["IsLatest"], m) for v, m in items)
        if not page["IsTruncated"]:
            break
        kwargs = {
            "KeyMarker": page["NextKeyMarker"],
            "VersionIdMarker": page["NextVersionIdMarker"],
        }
    assert sorted(seen) == sorted(expected) and len(seen) == len(expected)
    # Prefix and delimiter roll the keys of a/ up into one common prefix.
    page = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/"]
    assert {v["Key"] for v in page["Versions"]} == {"b", "c"}
    page = s3.list_object_versions(Bucket=bucket, Prefix="a/2")
    assert {v["Key"] for v in page["Versions"]} == {"a/2"}
    # ListObjects lists each key's latest version, and not a key whose latest is a marker.
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("a/1", 9), ("a/2", 9), ("c", 3)]
    listed = s3.list_objects(Bucket=bucket, MaxKeys=1, Marker="a/1")
    assert [o["Key"] for o in listed["Contents"]] == ["a/2"] and listed["IsTruncated"]


def test_copies_read_and_write_versions(s3, bucket):
    enable(s3, bucket)
    old_body = os.urandom(2 * MIB)
    old = s3.put_object(Bucket=bucket, Key="src", Body=old_body)["VersionId"]
    s3.put_object(Bucket=bucket, Key="src", Body=b"new")
    copied = s3.copy_object(
        Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src", "VersionId": old}
    )
    assert copied["CopySourceVersionId"] == old
    assert copied["VersionId"] not in (old, "null")
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == old_body
    # Restoring an old version onto its own key is allowed (a new version with its bytes).
    restored = s3.copy_object(
        Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src", "VersionId": old}
    )
    assert s3.get_object(Bucket=bucket, Key="src")["Body"].read() == old_body
    assert s3.get_object(Bucket=bucket, Key="src")["VersionId"] == restored["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="src")["VersionId"]
    status, code, _ = error_of(
        lambda: s3.copy_object(
            Bucket=bucket,
            Key="dst2",
            CopySource={"Bucket": bucket, "Key": "src", "VersionId": marker},
        )
    )
    assert (status, code) == (400, "InvalidRequest")
    status, code, _ = error_of(
        lambda: s3.copy_object(Bucket=bucket, Key="dst2", CopySource={"Bucket": bucket, "Key": "src"})
    )
    assert (status, code) == (404, "NoSuchKey")
    # UploadPartCopy from a noncurrent version.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = s3.upload_part_copy(
        Bucket=bucket,
        Key="mp",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src", "VersionId": old},
    )
    assert part["CopySourceVersionId"] == old
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]},
    )
    assert done["VersionId"] not in (None, "null")
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == old_body


def test_multipart_completions_and_conditional_writes_make_versions(s3, bucket):
    enable(s3, bucket)
    versions = []
    for n in range(2):
        upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
        parts = []
        for number, size in [(1, 5 * MIB), (2, MIB)]:
            etag = s3.upload_part(
                Bucket=bucket, Key="mp", UploadId=upload, PartNumber=number, Body=bytes([n]) * size
            )["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})
        done = s3.complete_multipart_upload(
            Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": parts}
        )
        versions.append(done["VersionId"])
    assert len(set(versions)) == 2
    for n, version_id in enumerate(versions):
        body = s3.get_object(Bucket=bucket, Key="mp", VersionId=version_id)["Body"].read()
        assert body == bytes([n]) * (6 * MIB)
    # If-None-Match: * refuses a key with a version, and succeeds once its latest is a marker.
    status, _, _ = error_of(
        lambda: s3.put_object(Bucket=bucket, Key="mp", Body=b"x", IfNoneMatch="*")
    )
    assert status == 412
    s3.delete_object(Bucket=bucket, Key="mp")
    created = s3.put_object(Bucket=bucket, Key="mp", Body=b"x", IfNoneMatch="*")
    assert created["VersionId"] not in versions


def test_delete_objects_with_versions_and_a_versioned_bucket_is_empty_only_without_them(s3, bucket):
    enable(s3, bucket)
    v1 = s3.put_object(Bucket=bucket, Key="x", Body=b"1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="x", Body=b"2")["VersionId"]
    s3.put_object(Bucket=bucket, Key="y", Body=b"y")
    resp = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "x", "VersionId": v1}, {"Key": "y"}, {"Key": "x", "VersionId": "bad"}]},
    )
    deleted = {(d["Key"], d.get("VersionId")): d for d in resp["Deleted"]}
    assert ("x", v1) in deleted
    assert deleted[("y", None)]["DeleteMarker"] is True
    assert deleted[("y", None)]["DeleteMarkerVersionId"]
    assert [(e["Key"], e["Code"]) for e in resp["Errors"]] == [("x", "InvalidArgument")]
    assert [v for _, v, _, _ in all_versions(s3, bucket, Prefix="x")] == [v2]
    # Versions and markers keep the bucket from being deleted.
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "x", "VersionId": v2}]})
    status, code, _ = error_of(lambda: s3.delete_bucket(Bucket=bucket))
    assert (status, code) == (409, "BucketNotEmpty")


def test_aws_cli_turns_versioning_on_and_lists_versions(aws, s3, bucket):
    aws(
        "s3api",
        "put-bucket-versioning",
        "--bucket",
        bucket,
        "--versioning-configuration",
        "Status=Enabled",
    )
    status = json.loads(aws("s3api", "get-bucket-versioning", "--bucket", bucket).stdout)
    assert status["Status"] == "Enabled"
    for body in (b"a", b"bb"):
        s3.put_object(Bucket=bucket, Key="f", Body=body)
    listed = json.loads(
        aws("s3api", "list-object-versions", "--bucket", bucket).stdout
    )
    assert [(v["Key"], v["Size"], v["IsLatest"]) for v in listed["Versions"]] == [
        ("f", 2, True),
        ("f", 1, False),
    ]


def test_a_bucket_never_versioned_knows_only_the_null_version(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"plain")
    well_formed = "VVVVVVVVVVVVVVVVVVVVVVVVVO"
    for call in (
        lambda: s3.get_object(Bucket=bucket, Key="k", VersionId=well_formed),
        lambda: s3.delete_object(Bucket=bucket, Key="k", VersionId=well_formed),
    ):
        status, code, _ = error_of(call)
        assert (status, code) == (400, "InvalidArgument")
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"plain"
    # Copying the null version onto itself without changing anything is still refused.
    status, code, _ = error_of(
        lambda: s3.copy_object(
            Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k", "VersionId": "null"}
        )
    )
    assert (status, code) == (400, "InvalidRequest")
    # Listing versions of a bucket never versioned: every object is `null` and latest.
    page = s3.list_object_versions(Bucket=bucket)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in page["Versions"]] == [
        ("k", "null", True)
    ]
