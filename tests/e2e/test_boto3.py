"""S3 API through boto3 (default checksum settings of the installed release) against a real server.

Over plain HTTP botocore sends its default CRC32 as an `x-amz-checksum-crc32` header (it only uses
aws-chunked trailers over TLS); test_errors.py drives trailers with raw requests.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import os
import re
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

import botocore
import pytest
import requests
from botocore.exceptions import ClientError

from checksums import s3_checksum
from conftest import unique_bucket_name
from leofs_harness import empty_bucket, md5_etag, multipart_etag, raw_request

MIB = 1 << 20


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def http_status(excinfo) -> int:
    return excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def put_many(s3, bucket: str, keys: list[str], body_of=lambda k: k.encode()) -> None:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=body_of(k)), keys))


# -- buckets ----------------------------------------------------------------------------------
def test_bucket_lifecycle(s3):
    name = unique_bucket_name("life")
    s3.create_bucket(Bucket=name)
    s3.head_bucket(Bucket=name)
    listed = {b["Name"]: b for b in s3.list_buckets()["Buckets"]}
    assert name in listed
    created = listed[name]["CreationDate"]
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - created).total_seconds()) < 300
    location = s3.get_bucket_location(Bucket=name).get("LocationConstraint")
    assert location in (None, "", "us-east-1")

    s3.put_object(Bucket=name, Key="k", Body=b"v")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=name)
    assert error_code(e) == "BucketNotEmpty"
    assert http_status(e) == 409
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"v"

    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    assert name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=name)
    assert http_status(e) == 404
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket=name)
    assert error_code(e) == "NoSuchBucket"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=name, Key="k", Body=b"v")
    assert error_code(e) == "NoSuchBucket"


@pytest.mark.parametrize(
    "name",
    ["ab", "UpperCase", "a" * 64, "-dash-first", "dash-last-", "a..b", "192.168.1.1", "xn--punycode",
     "under_score", "my-s3alias"],
)
def test_bucket_name_rules_reject(s3, name):
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=name)
    assert error_code(e) == "InvalidBucketName"
    assert http_status(e) == 400


@pytest.mark.parametrize("name", ["abc", "a.b-c.1", "9" * 63])
def test_bucket_name_rules_accept(s3, name):
    s3.create_bucket(Bucket=name)
    try:
        s3.head_bucket(Bucket=name)
        assert name in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    finally:
        s3.delete_bucket(Bucket=name)


def test_create_existing_own_bucket(s3, bucket):
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        assert e.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    s3.head_bucket(Bucket=bucket)


# -- objects ----------------------------------------------------------------------------------
def test_put_get_head_delete(s3, bucket):
    body = os.urandom(100_000)
    put = s3.put_object(Bucket=bucket, Key="dir/obj.bin", Body=body)
    assert put["ETag"] == md5_etag(body)
    got = s3.get_object(Bucket=bucket, Key="dir/obj.bin")
    assert got["Body"].read() == body
    assert got["ETag"] == md5_etag(body)
    assert got["ContentLength"] == len(body)
    head = s3.head_object(Bucket=bucket, Key="dir/obj.bin")
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == md5_etag(body)
    age = datetime.datetime.now(datetime.timezone.utc) - head["LastModified"]
    assert abs(age.total_seconds()) < 300

    s3.delete_object(Bucket=bucket, Key="dir/obj.bin")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="dir/obj.bin")
    assert error_code(e) == "NoSuchKey"
    assert http_status(e) == 404
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="dir/obj.bin")
    assert http_status(e) == 404
    # Deleting a missing key succeeds (S3 semantics).
    assert s3.delete_object(Bucket=bucket, Key="dir/obj.bin")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_empty_and_overwrite(s3, bucket):
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    got = s3.get_object(Bucket=bucket, Key="empty")
    assert got["Body"].read() == b""
    assert got["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    s3.put_object(Bucket=bucket, Key="over", Body=b"first version")
    s3.put_object(Bucket=bucket, Key="over", Body=b"second")
    assert s3.get_object(Bucket=bucket, Key="over")["Body"].read() == b"second"
    # A large object overwritten by a small one and back.
    big = os.urandom(9 * MIB)
    s3.put_object(Bucket=bucket, Key="over", Body=big)
    assert s3.get_object(Bucket=bucket, Key="over")["Body"].read() == big
    s3.put_object(Bucket=bucket, Key="over", Body=b"tiny")
    assert s3.get_object(Bucket=bucket, Key="over")["Body"].read() == b"tiny"
    assert s3.head_object(Bucket=bucket, Key="over")["ContentLength"] == 4


def test_metadata_and_standard_headers(s3, bucket):
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    s3.put_object(
        Bucket=bucket,
        Key="meta",
        Body=b"<html/>",
        Metadata={"color": "blue", "multi-word": "Hello World"},
        ContentType="text/html; charset=utf-8",
        CacheControl="max-age=60",
        ContentDisposition='attachment; filename="x.html"',
        ContentEncoding="identity",
        ContentLanguage="en-GB",
        Expires=expires,
    )
    for resp in (s3.head_object(Bucket=bucket, Key="meta"), s3.get_object(Bucket=bucket, Key="meta")):
        assert resp["Metadata"] == {"color": "blue", "multi-word": "Hello World"}
        assert resp["ContentType"] == "text/html; charset=utf-8"
        assert resp["CacheControl"] == "max-age=60"
        assert resp["ContentDisposition"] == 'attachment; filename="x.html"'
        assert resp["ContentEncoding"] == "identity"
        assert resp["ContentLanguage"] == "en-GB"
        assert resp["Expires"] == expires
    # Default content type when none is given.
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    assert s3.head_object(Bucket=bucket, Key="plain")["ContentType"] in (
        "binary/octet-stream", "application/octet-stream")


def test_delete_objects(s3, bucket):
    keys = [f"del/{i:03}" for i in range(20)]
    put_many(s3, bucket, keys)
    s3.put_object(Bucket=bucket, Key="keep", Body=b"k")
    resp = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": k} for k in keys] + [{"Key": "missing"}], "Quiet": False},
    )
    assert sorted(d["Key"] for d in resp["Deleted"]) == sorted(keys + ["missing"])
    assert not resp.get("Errors")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert listed == ["keep"]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "keep"}], "Quiet": True})
    assert not quiet.get("Deleted") and not quiet.get("Errors")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_copy_object_copy_and_replace(s3, bucket):
    other = unique_bucket_name("dst")
    s3.create_bucket(Bucket=other)
    try:
        for size in (1000, 9 * MIB):
            body = os.urandom(size)
            src = f"src-{size}"
            s3.put_object(Bucket=bucket, Key=src, Body=body, Metadata={"a": "1"}, ContentType="text/x-src")
            r = s3.copy_object(Bucket=other, Key="copied", CopySource={"Bucket": bucket, "Key": src})
            assert r["CopyObjectResult"]["ETag"] == md5_etag(body)
            got = s3.get_object(Bucket=other, Key="copied")
            assert got["Body"].read() == body
            assert got["Metadata"] == {"a": "1"}
            assert got["ContentType"] == "text/x-src"

            s3.copy_object(Bucket=bucket, Key="replaced", CopySource=f"{bucket}/{src}",
                           MetadataDirective="REPLACE", Metadata={"b": "2"}, ContentType="text/x-new")
            got = s3.get_object(Bucket=bucket, Key="replaced")
            assert got["Body"].read() == body
            assert got["Metadata"] == {"b": "2"}
            assert got["ContentType"] == "text/x-new"
            # The source is untouched.
            assert s3.get_object(Bucket=bucket, Key=src)["Body"].read() == body
        with pytest.raises(ClientError) as e:
            s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "nope"})
        assert error_code(e) == "NoSuchKey"
    finally:
        empty_bucket(s3, other)
        s3.delete_bucket(Bucket=other)


# -- listing ----------------------------------------------------------------------------------
def test_list_prefix_delimiter(s3, bucket):
    keys = ["a/1", "a/2", "a/b/3", "b/4", "c", "d/"]
    put_many(s3, bucket, keys)
    r = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in r["Contents"]] == sorted(keys)
    assert r["KeyCount"] == len(keys)
    sizes = {o["Key"]: o["Size"] for o in r["Contents"]}
    assert sizes == {k: len(k) for k in keys}
    etags = {o["Key"]: o["ETag"] for o in r["Contents"]}
    assert etags == {k: md5_etag(k.encode()) for k in keys}

    r = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in r.get("Contents", [])] == ["c"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "b/", "d/"]
    assert r["KeyCount"] == 4

    r = s3.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/b/"]

    r = s3.list_objects(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/b/"]

    r = s3.list_objects_v2(Bucket=bucket, Prefix="zzz")
    assert r["KeyCount"] == 0 and "Contents" not in r

    # Delimiter paging: max-keys counts common prefixes too.
    r = s3.list_objects_v2(Bucket=bucket, Delimiter="/", MaxKeys=2)
    assert r["IsTruncated"]
    first = [p["Prefix"] for p in r.get("CommonPrefixes", [])] + [o["Key"] for o in r.get("Contents", [])]
    r2 = s3.list_objects_v2(Bucket=bucket, Delimiter="/", ContinuationToken=r["NextContinuationToken"])
    second = [p["Prefix"] for p in r2.get("CommonPrefixes", [])] + [o["Key"] for o in r2.get("Contents", [])]
    assert sorted(first + second) == ["a/", "b/", "c", "d/"]
    assert not r2["IsTruncated"]


def test_list_pagination_2500(s3, bucket):
    keys = [f"k/{i:05}" for i in range(2500)]
    put_many(s3, bucket, keys, body_of=lambda k: b"")
    # v2 with continuation tokens.
    seen, token, pages = [], None, 0
    while True:
        kw = {"ContinuationToken": token} if token else {}
        r = s3.list_objects_v2(Bucket=bucket, MaxKeys=1000, **kw)
        pages += 1
        seen += [o["Key"] for o in r["Contents"]]
        assert r["KeyCount"] == len(r["Contents"])
        if not r["IsTruncated"]:
            break
        token = r["NextContinuationToken"]
    assert pages == 3
    assert seen == keys
    # Default page size is 1000.
    r = s3.list_objects_v2(Bucket=bucket)
    assert r["KeyCount"] == 1000 and r["IsTruncated"]
    # StartAfter.
    r = s3.list_objects_v2(Bucket=bucket, StartAfter="k/02490")
    assert [o["Key"] for o in r["Contents"]] == keys[2491:]
    # v1 with markers.
    seen, marker = [], ""
    while True:
        r = s3.list_objects(Bucket=bucket, Marker=marker, MaxKeys=700)
        page = [o["Key"] for o in r["Contents"]]
        seen += page
        if not r["IsTruncated"]:
            break
        marker = r.get("NextMarker") or page[-1]
    assert seen == keys
    # Paginators of boto3 agree.
    pag = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 333})
    assert [o["Key"] for page in pag for o in page["Contents"]] == keys


ODD_KEYS = [
    "space key",
    "plus+key",
    "percent%20literal",
    "unicodé/ключ/鍵",
    "amp&eq=q?hash#",
    "tab\there",
    "semi;colon,comma",
    "tilde~star*paren(1)",
    "quote'\"",
    "a/../b",
    "trailing-slash/",
    "ctrl\x01char",
]


def test_list_odd_keys_encoding_url(s3, server, bucket):
    for k in ODD_KEYS:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    for k in ODD_KEYS:
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == k.encode()
    # botocore asks for encoding-type=url and decodes (v1 and v2).
    expected = sorted(ODD_KEYS, key=lambda k: k.encode())
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == expected
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == expected
    # Raw: every <Key> is URL-encoded and decodes back.
    resp = raw_request(server, "GET", f"/{bucket}", query={"list-type": "2", "encoding-type": "url"})
    assert resp.status == 200, resp
    root = ET.fromstring(resp.body)
    raw_keys = [el.text for el in root.iter() if el.tag.split("}")[-1] == "Key"]
    assert all("\x01" not in k and "\t" not in k and " " not in k for k in raw_keys)
    assert [urllib.parse.unquote_plus(k) for k in raw_keys] == expected
    enc = [el.text for el in root.iter() if el.tag.split("}")[-1] == "EncodingType"]
    assert enc == ["url"]


def test_list_fetch_owner(s3, bucket):
    s3.put_object(Bucket=bucket, Key="o", Body=b"1")
    r = s3.list_objects_v2(Bucket=bucket, FetchOwner=True)
    assert r["Contents"][0]["Owner"]["ID"]
    r = s3.list_objects_v2(Bucket=bucket)
    assert "Owner" not in r["Contents"][0]
    r = s3.list_objects(Bucket=bucket)  # v1 always includes the owner
    assert r["Contents"][0]["Owner"]["ID"]


def test_list_object_versions_null(s3, bucket):
    put_many(s3, bucket, ["v1", "v2"])
    r = s3.list_object_versions(Bucket=bucket)
    versions = r["Versions"]
    assert [v["Key"] for v in versions] == ["v1", "v2"]
    for v in versions:
        assert v["VersionId"] == "null"
        assert v["IsLatest"] is True
        assert v["Size"] == 2
        assert v["ETag"] == md5_etag(v["Key"].encode())
    assert not r.get("DeleteMarkers")


# -- ranges and partNumber --------------------------------------------------------------------
def test_range_gets(s3, bucket):
    size = 9 * MIB + 123
    body = os.urandom(size)
    s3.put_object(Bucket=bucket, Key="r", Body=body)
    cases = {
        "bytes=0-0": (0, 0),
        "bytes=100-199": (100, 199),
        "bytes=4194300-4194400": (4194300, 4194400),  # across a 4 MiB chunk boundary
        "bytes=-500": (size - 500, size - 1),
        f"bytes={size - 1000}-": (size - 1000, size - 1),
        f"bytes=5-{size + 1000}": (5, size - 1),  # end past the object is clamped
        "bytes=0-": (0, size - 1),
    }
    for rng, (start, end) in cases.items():
        got = s3.get_object(Bucket=bucket, Key="r", Range=rng)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, rng
        assert got["ContentRange"] == f"bytes {start}-{end}/{size}", rng
        assert got["ContentLength"] == end - start + 1, rng
        assert got["Body"].read() == body[start : end + 1], rng
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="r", Range=f"bytes={size}-")
    assert error_code(e) == "InvalidRange"
    assert http_status(e) == 416
    # Small object too.
    s3.put_object(Bucket=bucket, Key="small", Body=b"0123456789")
    assert s3.get_object(Bucket=bucket, Key="small", Range="bytes=3-5")["Body"].read() == b"345"
    assert s3.get_object(Bucket=bucket, Key="small", Range="bytes=-3")["Body"].read() == b"789"


def test_part_number_get(s3, bucket):
    parts = [os.urandom(5 * MIB), os.urandom(3 * MIB)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    etags = [
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=i + 1, Body=p)["ETag"]
        for i, p in enumerate(parts)
    ]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )
    for n, part in enumerate(parts, start=1):
        got = s3.get_object(Bucket=bucket, Key="mp", PartNumber=n)
        assert got["Body"].read() == part
        assert got["ContentLength"] == len(part)
        assert got.get("PartsCount") == 2
    head = s3.head_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert head["ContentLength"] == len(parts[1])
    s3.put_object(Bucket=bucket, Key="single", Body=b"whole")
    assert s3.get_object(Bucket=bucket, Key="single", PartNumber=1)["Body"].read() == b"whole"


# -- conditional requests ---------------------------------------------------------------------
def test_conditional_get_head(s3, bucket):
    s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")
    etag = md5_etag(b"conditional")
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    for op in (s3.get_object, s3.head_object):
        ok = op(Bucket=bucket, Key="c", IfMatch=etag)
        assert ok["ETag"] == etag
        assert op(Bucket=bucket, Key="c", IfNoneMatch='"0123"')["ETag"] == etag
        assert op(Bucket=bucket, Key="c", IfModifiedSince=past)["ETag"] == etag
        assert op(Bucket=bucket, Key="c", IfUnmodifiedSince=future)["ETag"] == etag
        for kw, status in (
            ({"IfMatch": '"0123456789abcdef0123456789abcdef"'}, 412),
            ({"IfNoneMatch": etag}, 304),
            ({"IfModifiedSince": future}, 304),
            ({"IfUnmodifiedSince": past}, 412),
        ):
            with pytest.raises(ClientError) as e:
                op(Bucket=bucket, Key="c", **kw)
            assert http_status(e) == status, (op.__name__, kw)
            if status == 412 and op is s3.get_object:
                assert error_code(e) == "PreconditionFailed"
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"conditional"


def test_conditional_put(s3, bucket):
    s3.put_object(Bucket=bucket, Key="p", Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="p", Body=b"two", IfNoneMatch="*")
    assert error_code(e) == "PreconditionFailed"
    assert http_status(e) == 412
    assert s3.get_object(Bucket=bucket, Key="p")["Body"].read() == b"one"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="p", Body=b"three", IfMatch=md5_etag(b"wrong"))
    assert http_status(e) == 412
    assert s3.get_object(Bucket=bucket, Key="p")["Body"].read() == b"one"
    s3.put_object(Bucket=bucket, Key="p", Body=b"four", IfMatch=md5_etag(b"one"))
    assert s3.get_object(Bucket=bucket, Key="p")["Body"].read() == b"four"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="never", Body=b"x", IfMatch=md5_etag(b"x"))
    assert http_status(e) in (404, 412)


# -- multipart --------------------------------------------------------------------------------
def test_multipart_full(s3, bucket):
    source = os.urandom(7 * MIB)
    s3.put_object(Bucket=bucket, Key="copy-src", Body=source)
    p1, p2, p4 = os.urandom(5 * MIB), os.urandom(5 * MIB + 17), os.urandom(1234)
    p3 = source[MIB : 6 * MIB + 5]  # UploadPartCopy of a range
    up = s3.create_multipart_upload(Bucket=bucket, Key="big/mp", ContentType="application/x-mp",
                                    Metadata={"m": "v"})
    uid = up["UploadId"]
    assert uid
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("big/mp", uid)]
    e1 = s3.upload_part(Bucket=bucket, Key="big/mp", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="big/mp", UploadId=uid, PartNumber=2, Body=p2)["ETag"]
    c3 = s3.upload_part_copy(Bucket=bucket, Key="big/mp", UploadId=uid, PartNumber=3,
                             CopySource={"Bucket": bucket, "Key": "copy-src"},
                             CopySourceRange=f"bytes={MIB}-{6 * MIB + 4}")
    e3 = c3["CopyPartResult"]["ETag"]
    e4 = s3.upload_part(Bucket=bucket, Key="big/mp", UploadId=uid, PartNumber=4, Body=p4)["ETag"]
    assert [e1, e2, e3, e4] == [md5_etag(p) for p in (p1, p2, p3, p4)]
    # Re-uploading a part replaces it.
    e2 = s3.upload_part(Bucket=bucket, Key="big/mp", UploadId=uid, PartNumber=2, Body=p2)["ETag"]

    listed = s3.list_parts(Bucket=bucket, Key="big/mp", UploadId=uid)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed["Parts"]] == [
        (1, e1, len(p1)), (2, e2, len(p2)), (3, e3, len(p3)), (4, e4, len(p4))]
    paged = s3.list_parts(Bucket=bucket, Key="big/mp", UploadId=uid, MaxParts=2)
    assert [p["PartNumber"] for p in paged["Parts"]] == [1, 2] and paged["IsTruncated"]
    rest = s3.list_parts(Bucket=bucket, Key="big/mp", UploadId=uid,
                         PartNumberMarker=paged["NextPartNumberMarker"])
    assert [p["PartNumber"] for p in rest["Parts"]] == [3, 4]

    # Not visible before completion.
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="big/mp")
    assert http_status(e) == 404

    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="big/mp", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": t} for n, t in
                                   ((1, e1), (2, e2), (3, e3), (4, e4))]},
    )
    whole = p1 + p2 + p3 + p4
    assert done["ETag"] == multipart_etag([p1, p2, p3, p4])
    got = s3.get_object(Bucket=bucket, Key="big/mp")
    assert got["ETag"] == done["ETag"]
    assert got["ContentLength"] == len(whole)
    assert got["ContentType"] == "application/x-mp"
    assert got["Metadata"] == {"m": "v"}
    assert hashlib.md5(got["Body"].read()).hexdigest() == hashlib.md5(whole).hexdigest()
    ranged = s3.get_object(Bucket=bucket, Key="big/mp", Range=f"bytes={5 * MIB - 10}-{5 * MIB + 10}")
    assert ranged["Body"].read() == whole[5 * MIB - 10 : 5 * MIB + 11]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="big/mp", UploadId=uid)
    assert error_code(e) == "NoSuchUpload"


def test_multipart_errors(s3, bucket):
    big, small = os.urandom(5 * MIB), os.urandom(1000)

    def new_upload(key):
        uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        e1 = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1, Body=big)["ETag"]
        e2 = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=2, Body=big)["ETag"]
        return uid, e1, e2

    uid, e1, e2 = new_upload("bad")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="bad", UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1},
                                       {"PartNumber": 2, "ETag": md5_etag(b"other")}]})
    assert error_code(e) == "InvalidPart"
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="bad", UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e2}]})
    assert error_code(e) == "InvalidPart"
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="bad", UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})
    assert error_code(e) == "InvalidPartOrder"
    # The failed completes left the upload usable.
    s3.complete_multipart_upload(
        Bucket=bucket, Key="bad", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert s3.get_object(Bucket=bucket, Key="bad")["Body"].read() == big + big

    uid = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    s1 = s3.upload_part(Bucket=bucket, Key="small", UploadId=uid, PartNumber=1, Body=small)["ETag"]
    s2 = s3.upload_part(Bucket=bucket, Key="small", UploadId=uid, PartNumber=2, Body=small)["ETag"]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="small", UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": s1}, {"PartNumber": 2, "ETag": s2}]})
    assert error_code(e) == "EntityTooSmall"
    # A single small part is fine (the last part may be small).
    s3.complete_multipart_upload(Bucket=bucket, Key="small", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": s2}]})
    assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == small

    uid, _, _ = new_upload("aborted")
    s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=uid)
    for call in (
        lambda: s3.list_parts(Bucket=bucket, Key="aborted", UploadId=uid),
        lambda: s3.upload_part(Bucket=bucket, Key="aborted", UploadId=uid, PartNumber=3, Body=b"x"),
        lambda: s3.complete_multipart_upload(Bucket=bucket, Key="aborted", UploadId=uid,
                                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]}),
        lambda: s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=uid),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "NoSuchUpload"
        assert http_status(e) == 404
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="aborted")
    assert http_status(e) == 404
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="x", UploadId="no-such-upload-id", PartNumber=1, Body=b"x")
    assert error_code(e) == "NoSuchUpload"


# -- presigned URLs ---------------------------------------------------------------------------
@pytest.mark.parametrize("signature_version", ["s3", "s3v4"])
def test_presigned_get_put_and_expiry(server, bucket, signature_version):
    """boto3 presigns with SigV2 query auth by default ("s3"); "s3v4" gives X-Amz-Signature URLs."""
    s3 = server.client(signature_version=signature_version)
    s3.put_object(Bucket=bucket, Key="pre", Body=b"presigned body")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=300)
    r = requests.get(url, timeout=30)
    assert r.status_code == 200
    assert r.content == b"presigned body"

    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "up"}, ExpiresIn=300)
    r = requests.put(put_url, data=b"uploaded via url", timeout=30)
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket=bucket, Key="up")["Body"].read() == b"uploaded via url"

    # A signature changed in one character (still well-formed) is refused.
    sig = re.search(r"Signature=([^&]+)", url).group(1)
    flipped = ("1" if sig[0] != "1" else "2") + sig[1:]
    r = requests.get(url.replace(f"Signature={sig}", f"Signature={flipped}"), timeout=30)
    assert r.status_code == 403
    assert ET.fromstring(r.content).findtext("Code") == "SignatureDoesNotMatch", r.text
    # So is a URL signed with the wrong secret.
    wrong = server.client(secret_key="w" * 40, signature_version=signature_version)
    r = requests.get(wrong.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre"}),
                     timeout=30)
    assert r.status_code == 403 and b"presigned body" not in r.content

    expired = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=1)
    time.sleep(2.5)
    r = requests.get(expired, timeout=30)
    assert r.status_code == 403
    assert ET.fromstring(r.content).findtext("Code") == "AccessDenied", r.text


# -- checksums --------------------------------------------------------------------------------
def _algorithms():
    algos = ["CRC32", "CRC32C", "SHA1", "SHA256"]
    if "crc64nvme" in botocore.httpchecksum._CHECKSUM_CLS:  # needs awscrt
        algos.append("CRC64NVME")
    return algos


@pytest.mark.parametrize("algorithm", _algorithms())
def test_checksum_algorithms(s3, bucket, algorithm):
    body = os.urandom(300_000)
    expected = s3_checksum(algorithm, body)
    put = s3.put_object(Bucket=bucket, Key=f"ck-{algorithm}", Body=body, ChecksumAlgorithm=algorithm)
    field = f"Checksum{algorithm}"
    assert put.get(field) == expected
    got = s3.get_object(Bucket=bucket, Key=f"ck-{algorithm}", ChecksumMode="ENABLED")
    assert got.get(field) == expected
    assert got["Body"].read() == body  # botocore also validates the body against the checksum
    head = s3.head_object(Bucket=bucket, Key=f"ck-{algorithm}", ChecksumMode="ENABLED")
    assert head.get(field) == expected


def test_default_checksum_is_crc32(s3, bucket):
    body = b"default checksum body" * 100
    put = s3.put_object(Bucket=bucket, Key="dflt", Body=body)
    assert put.get("ChecksumCRC32") == s3_checksum("CRC32", body)
    got = s3.get_object(Bucket=bucket, Key="dflt", ChecksumMode="ENABLED")
    assert got.get("ChecksumCRC32") == s3_checksum("CRC32", body)
    assert got["Body"].read() == body


# -- canned ACLs ------------------------------------------------------------------------------
def test_canned_acls_anonymous_access(s3, server):
    pub = unique_bucket_name("pub")
    priv = unique_bucket_name("priv")
    s3.create_bucket(Bucket=pub, ACL="public-read")
    s3.create_bucket(Bucket=priv)
    try:
        s3.put_object(Bucket=pub, Key="hello.txt", Body=b"public hello", ACL="public-read")
        s3.put_object(Bucket=priv, Key="hello.txt", Body=b"private hello")
        r = requests.get(f"{server.endpoint}/{pub}/hello.txt", timeout=30)
        assert r.status_code == 200 and r.content == b"public hello"
        r = requests.head(f"{server.endpoint}/{pub}/hello.txt", timeout=30)
        assert r.status_code == 200 and int(r.headers["content-length"]) == len(b"public hello")
        r = requests.get(f"{server.endpoint}/{pub}", timeout=30)
        assert r.status_code == 200 and b"<Key>hello.txt</Key>" in r.content
        r = requests.put(f"{server.endpoint}/{pub}/anon.txt", data=b"x", timeout=30)
        assert r.status_code == 403
        assert ET.fromstring(r.content).findtext("Code") == "AccessDenied"

        r = requests.get(f"{server.endpoint}/{priv}/hello.txt", timeout=30)
        assert r.status_code == 403
        assert ET.fromstring(r.content).findtext("Code") == "AccessDenied"
        assert b"private hello" not in r.content
        r = requests.get(f"{server.endpoint}/{priv}", timeout=30)
        assert r.status_code == 403

        # Switching the ACL takes effect: a bucket's public-read lets anyone list it, not read
        # the objects (each has its own ACL, private here), as in S3.
        s3.put_bucket_acl(Bucket=priv, ACL="public-read")
        r = requests.get(f"{server.endpoint}/{priv}", timeout=30)
        assert r.status_code == 200 and b"<Key>hello.txt</Key>" in r.content
        assert requests.get(f"{server.endpoint}/{priv}/hello.txt", timeout=30).status_code == 403
        s3.put_bucket_acl(Bucket=priv, ACL="private")
        r = requests.get(f"{server.endpoint}/{priv}", timeout=30)
        assert r.status_code == 403
    finally:
        for b in (pub, priv):
            empty_bucket(s3, b)
            s3.delete_bucket(Bucket=b)


# -- virtual-host-style addressing ------------------------------------------------------------
def test_virtual_host_style(make_server):
    srv = make_server(domain="localhost")
    client = srv.client()
    name = unique_bucket_name("vh")
    client.create_bucket(Bucket=name)
    vhost = f"{name}.localhost:{srv.s3_port}"
    r = raw_request(srv, "PUT", "/dir/vhost.txt", body=b"virtual host body", host=vhost)
    assert r.status == 200, r
    assert client.get_object(Bucket=name, Key="dir/vhost.txt")["Body"].read() == b"virtual host body"
    r = raw_request(srv, "GET", "/dir/vhost.txt", host=vhost)
    assert r.status == 200 and r.body == b"virtual host body"
    r = raw_request(srv, "GET", "/", query={"list-type": "2"}, host=vhost)
    assert r.status == 200, r
    assert b"<Key>dir/vhost.txt</Key>" in r.body
    # Path style keeps working on the same server.
    r = raw_request(srv, "GET", f"/{name}/dir/vhost.txt")
    assert r.status == 200 and r.body == b"virtual host body"
    client.delete_object(Bucket=name, Key="dir/vhost.txt")
    client.delete_bucket(Bucket=name)


def test_concurrent_writers_same_key(server, s3, bucket):
    """Concurrent PUTs of one key (small and multi-chunk) leave exactly one whole version."""
    bodies = [os.urandom(1000 + i) for i in range(6)] + [os.urandom(5 * MIB + i) for i in range(3)]
    local = threading.local()

    def put(body):
        if not hasattr(local, "client"):
            local.client = server.client()
        local.client.put_object(Bucket=bucket, Key="contended", Body=body)

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        list(pool.map(put, bodies))
    got = s3.get_object(Bucket=bucket, Key="contended")
    data = got["Body"].read()
    assert data in bodies
    assert got["ETag"] == md5_etag(data)
    assert got["ContentLength"] == len(data)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["contended"]
