"""Multipart checksums and GetObjectAttributes, written from the S3 API reference and the S3 user
guide's "Checking object integrity": composite checksums (the checksum of the part digests, `-N`)
and full-object ones (the CRC of the whole body, made from the parts' CRCs), checked on
CompleteMultipartUpload and returned on HEAD/GET with checksum mode (a part's own with
`partNumber`); S3's refusals; GetObjectAttributes with each attribute, parts paging and versions;
ListMultipartUploads naming each upload's initiator. Against a single node and a cluster."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os

import pytest

from checksums import s3_checksum
from conftest import unique_bucket_name
from leofs_harness import error_of
from test_cluster import Cluster

MIB = 1 << 20
PART = os.urandom(5 * MIB)  # the smallest part S3 takes that is not the last
TAIL = os.urandom(1000)


@functools.lru_cache(maxsize=64)
def checksum(algorithm: str, data: bytes) -> str:
    """`s3_checksum`, computed once per body (the pure-Python CRCs take seconds per part)."""
    return s3_checksum(algorithm, data)


def raw(algorithm: str, data: bytes) -> bytes:
    return base64.b64decode(checksum(algorithm, data))


def composite(algorithm: str, parts: list[bytes]) -> str:
    joined = b"".join(raw(algorithm, p) for p in parts)
    return f"{checksum(algorithm, joined)}-{len(parts)}"


def upload(s3, bucket, key, parts, algorithm=None, checksum_type=None, with_checksums=True, **complete):
    """Creates an upload, uploads `parts` (checksummed by boto3 with `algorithm`), completes it
    naming each part (with its checksum unless told not to); returns the Complete answer."""
    create = {"ChecksumAlgorithm": algorithm} if algorithm else {}
    if checksum_type:
        create["ChecksumType"] = checksum_type
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    listed = []
    for n, body in enumerate(parts, 1):
        extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
        out = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=body, **extra)
        part = {"PartNumber": n, "ETag": out["ETag"]}
        if algorithm and with_checksums:
            part[f"Checksum{algorithm}"] = out[f"Checksum{algorithm}"]
        listed.append(part)
    return uid, listed, lambda **more: s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": listed}, **{**complete, **more})


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
def test_composite_checksums_are_made_checked_and_returned(s3, bucket, algorithm):
    field = f"Checksum{algorithm}"
    expected = composite(algorithm, [PART, TAIL])
    _, _, complete = upload(s3, bucket, "mp", [PART, TAIL], algorithm)
    done = complete()
    assert done[field] == expected and done["ChecksumType"] == "COMPOSITE"
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert head[field] == expected and head["ChecksumType"] == "COMPOSITE"
    got = s3.get_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert got[field] == expected and got["Body"].read() == PART + TAIL
    # A part read carries that part's checksum, which botocore checks against the body.
    part = s3.get_object(Bucket=bucket, Key="mp", PartNumber=2, ChecksumMode="ENABLED")
    assert part[field] == checksum(algorithm, TAIL) and part["Body"].read() == TAIL
    # No checksum on a range, none unless asked for.
    assert field not in s3.get_object(Bucket=bucket, Key="mp", Range="bytes=0-9", ChecksumMode="ENABLED")
    assert field not in s3.head_object(Bucket=bucket, Key="mp")
    # ListParts and the upload listing say how the upload checksums.
    uid, _, _ = upload(s3, bucket, "listed", [TAIL], algorithm)
    parts = s3.list_parts(Bucket=bucket, Key="listed", UploadId=uid)
    assert parts["ChecksumAlgorithm"] == algorithm and parts["ChecksumType"] == "COMPOSITE"
    assert [p[field] for p in parts["Parts"]] == [checksum(algorithm, TAIL)]
    [listed] = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert listed["ChecksumAlgorithm"] == algorithm and listed["ChecksumType"] == "COMPOSITE"
    s3.abort_multipart_upload(Bucket=bucket, Key="listed", UploadId=uid)


def test_a_composite_upload_needs_every_part_checksum_and_the_right_one(s3, bucket):
    uid, listed, complete = upload(s3, bucket, "mp", [PART, TAIL], "SHA256", with_checksums=False)
    assert error_of(complete) == (400, "InvalidRequest")
    listed[0]["ChecksumSHA256"] = checksum("SHA256", PART)
    listed[1]["ChecksumSHA256"] = checksum("SHA256", PART)  # the wrong part's
    assert error_of(complete) == (400, "InvalidPart")
    listed[1]["ChecksumSHA256"] = checksum("SHA256", TAIL)
    # The object checksum may be sent, with or without its part count; a wrong one is refused.
    wrong = composite("SHA256", [TAIL, PART])
    assert error_of(lambda: complete(ChecksumSHA256=wrong)) == (400, "BadDigest")
    assert error_of(lambda: complete(ChecksumCRC32=checksum("CRC32", PART))) == (400, "InvalidRequest")
    assert error_of(lambda: complete(ChecksumType="FULL_OBJECT")) == (400, "BadDigest")  # S3's code
    assert error_of(lambda: s3.head_object(Bucket=bucket, Key="mp")) == (404, "404")
    right = composite("SHA256", [PART, TAIL])
    assert complete(ChecksumSHA256=right.split("-")[0], ChecksumType="COMPOSITE")["ChecksumSHA256"] == right
    # Repeated, the completion answers as the first did.
    assert complete(ChecksumSHA256=right)["ChecksumSHA256"] == right


@pytest.mark.parametrize("algorithm,checksum_type", [
    ("CRC32", "FULL_OBJECT"), ("CRC32C", "FULL_OBJECT"), ("CRC64NVME", None)])
def test_full_object_checksums_are_the_crc_of_the_whole_body(s3, bucket, algorithm, checksum_type):
    field = f"Checksum{algorithm}"
    body = PART + TAIL
    whole = checksum(algorithm, body)
    _, _, complete = upload(s3, bucket, "mp", [PART, TAIL], algorithm, checksum_type, with_checksums=False)
    wrong = base64.b64encode(bytes(len(base64.b64decode(whole)))).decode()
    assert error_of(lambda: complete(**{field: wrong})) == (400, "BadDigest")
    assert error_of(lambda: complete(MpuObjectSize=len(body) + 1)) == (400, "InvalidRequest")
    assert error_of(lambda: complete(ChecksumType="COMPOSITE")) == (400, "BadDigest")
    done = complete(**{field: whole}, ChecksumType="FULL_OBJECT", MpuObjectSize=len(body))
    assert done[field] == whole and done["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert got[field] == whole and got["ChecksumType"] == "FULL_OBJECT"
    assert got["Body"].read() == body  # botocore validates the whole body against it
    attrs = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["Checksum"])
    assert attrs["Checksum"] == {field: whole, "ChecksumType": "FULL_OBJECT"}


def test_checksum_settings_s3_refuses(s3, bucket):
    for algorithm, checksum_type in [("SHA256", "FULL_OBJECT"), ("SHA1", "FULL_OBJECT"),
                                     ("CRC64NVME", "COMPOSITE"), ("CRC32", "BOTH")]:
        assert error_of(lambda: s3.create_multipart_upload(
            Bucket=bucket, Key="k", ChecksumAlgorithm=algorithm, ChecksumType=checksum_type)) == (
            400, "InvalidRequest"), (algorithm, checksum_type)
    assert error_of(lambda: s3.create_multipart_upload(
        Bucket=bucket, Key="k", ChecksumType="COMPOSITE")) == (400, "InvalidRequest")
    # An upload without an algorithm makes no object checksum, and takes none to check.
    _, _, complete = upload(s3, bucket, "plain", [TAIL])
    assert error_of(lambda: complete(ChecksumCRC32=checksum("CRC32", TAIL))) == (400, "InvalidRequest")
    done = complete()
    assert "ChecksumCRC32" not in done and "ChecksumType" not in done
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_get_object_attributes_of_a_single_object(s3, bucket):
    body = os.urandom(3000)
    s3.put_object(Bucket=bucket, Key="one", Body=body, ChecksumAlgorithm="SHA256")
    everything = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
    attrs = s3.get_object_attributes(Bucket=bucket, Key="one", ObjectAttributes=everything)
    assert attrs["ETag"] == hashlib.md5(body).hexdigest()  # S3 writes it without quotes here
    assert attrs["Checksum"] == {"ChecksumSHA256": checksum("SHA256", body), "ChecksumType": "FULL_OBJECT"}
    assert attrs["ObjectSize"] == 3000 and attrs["StorageClass"] == "STANDARD"
    assert "ObjectParts" not in attrs
    assert attrs["LastModified"] == s3.head_object(Bucket=bucket, Key="one")["LastModified"]
    only = s3.get_object_attributes(Bucket=bucket, Key="one", ObjectAttributes=["ObjectSize"])
    assert only["ObjectSize"] == 3000 and not {"ETag", "Checksum", "StorageClass"} & only.keys()
    assert error_of(lambda: s3.get_object_attributes(
        Bucket=bucket, Key="missing", ObjectAttributes=["ETag"])) == (404, "NoSuchKey")
    assert error_of(lambda: s3.get_object_attributes(
        Bucket=bucket, Key="one", ObjectAttributes=["Colour"])) == (400, "InvalidArgument")


def test_get_object_attributes_lists_the_parts_of_a_checksummed_upload(s3, bucket):
    parts = [PART, PART[::-1], TAIL]
    upload(s3, bucket, "sums", parts, "CRC32")[2]()
    attrs = s3.get_object_attributes(Bucket=bucket, Key="sums", ObjectAttributes=["ObjectParts", "Checksum"])
    assert attrs["Checksum"] == {"ChecksumCRC32": composite("CRC32", parts).split("-")[0],
                                 "ChecksumType": "COMPOSITE"}
    got = attrs["ObjectParts"]
    assert got["TotalPartsCount"] == 3 and got["IsTruncated"] is False
    assert [(p["PartNumber"], p["Size"], p["ChecksumCRC32"]) for p in got["Parts"]] == [
        (n, len(p), checksum("CRC32", p)) for n, p in enumerate(parts, 1)]
    first = s3.get_object_attributes(Bucket=bucket, Key="sums", ObjectAttributes=["ObjectParts"],
                                     MaxParts=2)["ObjectParts"]
    assert [p["PartNumber"] for p in first["Parts"]] == [1, 2]
    assert first["IsTruncated"] is True and first["NextPartNumberMarker"] == 2
    rest = s3.get_object_attributes(Bucket=bucket, Key="sums", ObjectAttributes=["ObjectParts"],
                                    PartNumberMarker=2)["ObjectParts"]
    assert [p["PartNumber"] for p in rest["Parts"]] == [3] and rest["IsTruncated"] is False
    # An upload without checksums: S3 gives the part count, not the parts.
    upload(s3, bucket, "plain", [PART, TAIL])[2]()
    plain = s3.get_object_attributes(Bucket=bucket, Key="plain", ObjectAttributes=["ObjectParts", "ETag"])
    assert plain["ObjectParts"] == {"TotalPartsCount": 2} and plain["ETag"].endswith("-2")
    assert "Checksum" not in s3.get_object_attributes(Bucket=bucket, Key="plain", ObjectAttributes=["Checksum"])


def test_get_object_attributes_of_versions_and_delete_markers(s3):
    name = unique_bucket_name("attrs")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=name, Key="k", Body=b"first")["VersionId"]
    s3.put_object(Bucket=name, Key="k", Body=b"second!")
    attrs = s3.get_object_attributes(Bucket=name, Key="k", VersionId=first, ObjectAttributes=["ObjectSize"])
    assert attrs["ObjectSize"] == 5 and attrs["VersionId"] == first
    marker = s3.delete_object(Bucket=name, Key="k")["VersionId"]
    assert error_of(lambda: s3.get_object_attributes(
        Bucket=name, Key="k", ObjectAttributes=["ObjectSize"])) == (404, "NoSuchKey")
    assert error_of(lambda: s3.get_object_attributes(
        Bucket=name, Key="k", VersionId=marker, ObjectAttributes=["ObjectSize"])) == (405, "MethodNotAllowed")


def test_aws_cli_get_object_attributes(aws, s3, bucket):
    s3.put_object(Bucket=bucket, Key="cli", Body=b"from the cli")
    out = json.loads(aws("s3api", "get-object-attributes", "--bucket", bucket, "--key", "cli",
                         "--object-attributes", "ETag", "ObjectSize").stdout)
    assert out["ETag"] == hashlib.md5(b"from the cli").hexdigest() and out["ObjectSize"] == 12


def test_list_multipart_uploads_names_each_initiator(server, s3):
    name = unique_bucket_name("initiators")
    s3.create_bucket(Bucket=name, ACL="public-read-write")
    user = unique_bucket_name("user")
    creds = json.loads(server.adm("create-user", user, json_output=True).stdout)
    other = server.client(creds["access_key_id"], creds["secret_access_key"])
    mine = s3.create_multipart_upload(Bucket=name, Key="a")["UploadId"]
    theirs = other.create_multipart_upload(Bucket=name, Key="b")["UploadId"]
    owner = s3.list_buckets()["Owner"]["ID"]
    uploads = {u["UploadId"]: u for u in s3.list_multipart_uploads(Bucket=name)["Uploads"]}
    assert uploads[mine]["Initiator"]["ID"] == owner and uploads[mine]["Owner"]["ID"] == owner
    assert uploads[theirs]["Initiator"]["ID"] == user != owner
    assert uploads[theirs]["Owner"]["ID"] == owner  # the bucket's owner owns what is written in it
    assert s3.list_parts(Bucket=name, Key="b", UploadId=theirs)["Initiator"]["ID"] == user
    s3.abort_multipart_upload(Bucket=name, Key="a", UploadId=mine)
    s3.abort_multipart_upload(Bucket=name, Key="b", UploadId=theirs)
    s3.delete_bucket(Bucket=name)


def test_checksums_and_attributes_across_a_cluster(make_server):
    cluster = Cluster(make_server, storage=3, gateways=2, replicas=3)
    a, b = (g.client() for g in cluster.gateways)
    a.create_bucket(Bucket="sums")
    upload(a, "sums", "mp", [PART, TAIL], "CRC32C", "FULL_OBJECT", with_checksums=False)[2]()
    whole = checksum("CRC32C", PART + TAIL)
    got = b.get_object(Bucket="sums", Key="mp", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32C"] == whole and got["Body"].read() == PART + TAIL
    attrs = b.get_object_attributes(Bucket="sums", Key="mp", ObjectAttributes=["ObjectParts", "ObjectSize"])
    assert attrs["ObjectSize"] == len(PART + TAIL)
    assert [p["Size"] for p in attrs["ObjectParts"]["Parts"]] == [len(PART), len(TAIL)]
