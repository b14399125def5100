"""SSE-C (issue 17), written from the S3 API reference: objects written with a customer-provided key
are stored encrypted (the plaintext is nowhere in the data dir) and read back only with that key
(none: 400 InvalidRequest; a wrong one: 403 AccessDenied), whole, by range and by HEAD; multipart
uploads whose parts all give the upload's key; copies from and to encrypted objects with the copy
source's key; S3's errors for malformed keys. boto3 computes the key's MD5 and base64 itself."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from pathlib import Path

import pytest
import requests

from leofs_harness import error_of, raw_request

KEY = b"k" * 32
OTHER = b"o" * 32
MIB = 1 << 20


def sse(key: bytes = KEY) -> dict:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def sse_encoded(key: bytes = KEY) -> dict:
    """The key as the headers carry it (botocore encodes it itself for some operations only)."""
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64encode(key).decode(),
            "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(key).digest()).decode()}


def source_sse(key: bytes = KEY) -> dict:
    return {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}


def data_dir_holds(root: Path, marker: bytes) -> bool:
    """Whether any file under `root` holds `marker`."""
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        with path.open("rb") as f:
            tail = b""
            while block := f.read(8 * MIB):
                if marker in tail + block:
                    return True
                tail = block[-len(marker):]
    return False


def test_encrypted_objects_are_read_only_with_their_key(s3, bucket):
    body = os.urandom(3 * MIB + 12345)  # chunked (several chunks)
    put = s3.put_object(Bucket=bucket, Key="big", Body=body, **sse())
    assert put["SSECustomerAlgorithm"] == "AES256" and put["SSECustomerKeyMD5"]
    assert put["ETag"].strip('"') != hashlib.md5(body).hexdigest(), "the ETag tells nothing of the plaintext"
    got = s3.get_object(Bucket=bucket, Key="big", **sse())
    assert got["Body"].read() == body and got["SSECustomerAlgorithm"] == "AES256"
    for first, last in ((0, 0), (5, 1_000_000), (1 * MIB - 3, 2 * MIB + 7), (len(body) - 10, len(body) - 1)):
        part = s3.get_object(Bucket=bucket, Key="big", Range=f"bytes={first}-{last}", **sse())["Body"].read()
        assert part == body[first:last + 1], (first, last)
    head = s3.head_object(Bucket=bucket, Key="big", **sse())
    assert head["ContentLength"] == len(body) and head["SSECustomerKeyMD5"] == put["SSECustomerKeyMD5"]
    assert error_of(lambda: s3.get_object(Bucket=bucket, Key="big")) == (400, "InvalidRequest")
    assert error_of(lambda: s3.get_object(Bucket=bucket, Key="big", **sse(OTHER))) == (403, "AccessDenied")
    assert error_of(lambda: s3.head_object(Bucket=bucket, Key="big"))[0] == 400
    assert error_of(lambda: s3.head_object(Bucket=bucket, Key="big", **sse(OTHER)))[0] == 403
    assert error_of(lambda: s3.get_object_attributes(
        Bucket=bucket, Key="big", ObjectAttributes=["ObjectSize"])) == (400, "InvalidRequest")
    # A small (inline) body, and an empty one.
    s3.put_object(Bucket=bucket, Key="small", Body=b"tiny secret", **sse())
    assert s3.get_object(Bucket=bucket, Key="small", **sse())["Body"].read() == b"tiny secret"
    assert s3.get_object(Bucket=bucket, Key="small", Range="bytes=5-9", **sse())["Body"].read() == b"secre"
    s3.put_object(Bucket=bucket, Key="empty", Body=b"", **sse())
    assert s3.get_object(Bucket=bucket, Key="empty", **sse())["Body"].read() == b""
    # Overwritten without a key, the object is plain again.
    s3.put_object(Bucket=bucket, Key="small", Body=b"open")
    assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == b"open"


def test_malformed_keys_and_cluster_keys_are_refused(server, s3, bucket):
    for extra, code in [
        ({"SSECustomerAlgorithm": "AES128", "SSECustomerKey": KEY}, (400, "InvalidEncryptionAlgorithmError")),
        ({"SSECustomerAlgorithm": "AES256", "SSECustomerKey": b"short"}, (400, "InvalidArgument")),
        ({"ServerSideEncryption": "AES256"}, (501, "NotImplemented")),
    ]:
        assert error_of(lambda: s3.put_object(Bucket=bucket, Key="refused", Body=b"x", **extra)) == code, extra
    key_b64 = base64.b64encode(KEY).decode()
    for md5 in ("AAAAAAAAAAAAAAAAAAAAAA==", None):
        headers = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
                   "x-amz-server-side-encryption-customer-key": key_b64}
        if md5:
            headers["x-amz-server-side-encryption-customer-key-md5"] = md5
        r = raw_request(server, "PUT", f"/{bucket}/refused", body=b"x", headers=headers)
        assert (r.status, r.error_code()) == (400, "InvalidArgument"), r
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_multipart_uploads_and_copies(s3, bucket):
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="SHA256", **sse())
    assert up["SSECustomerAlgorithm"] == "AES256"
    parts = [os.urandom(5 * MIB), os.urandom(1 * MIB + 7)]
    assert error_of(lambda: s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=1,
                                           Body=parts[0])) == (400, "InvalidRequest")
    assert error_of(lambda: s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=1,
                                           Body=parts[0], **sse(OTHER))) == (403, "AccessDenied")
    done = [s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=n + 1, Body=p,
                           ChecksumAlgorithm="SHA256", **sse()) for n, p in enumerate(parts)]
    assert done[0]["SSECustomerAlgorithm"] == "AES256"
    # The parts' checksums are of the plaintext: listed only with the key.
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=up["UploadId"])["Parts"]
    assert [p["PartNumber"] for p in listed] == [1, 2] and not any("ChecksumSHA256" in p for p in listed)
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=up["UploadId"], **sse_encoded())["Parts"]
    assert [p["ChecksumSHA256"] for p in listed] == [d["ChecksumSHA256"] for d in done]
    assert error_of(lambda: s3.list_parts(Bucket=bucket, Key="mp", UploadId=up["UploadId"],
                                          **sse_encoded(OTHER)))[0] == 403
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": n + 1, "ETag": d["ETag"], "ChecksumSHA256": d["ChecksumSHA256"]}
                  for n, d in enumerate(done)]})
    whole = b"".join(parts)
    assert s3.get_object(Bucket=bucket, Key="mp", **sse())["Body"].read() == whole
    across = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={5 * MIB - 10}-{5 * MIB + 10}", **sse())
    assert across["Body"].read() == whole[5 * MIB - 10:5 * MIB + 11]
    assert error_of(lambda: s3.get_object(Bucket=bucket, Key="mp"))[0] == 400
    # Copies: from an encrypted source (its key), to plain or to another key; into a part.
    s3.copy_object(Bucket=bucket, Key="plain-copy", CopySource={"Bucket": bucket, "Key": "mp"}, **source_sse())
    assert s3.get_object(Bucket=bucket, Key="plain-copy")["Body"].read() == whole
    s3.copy_object(Bucket=bucket, Key="rekeyed", CopySource={"Bucket": bucket, "Key": "mp"},
                   **source_sse(), **sse(OTHER))
    assert s3.get_object(Bucket=bucket, Key="rekeyed", **sse(OTHER))["Body"].read() == whole
    assert error_of(lambda: s3.copy_object(Bucket=bucket, Key="no", CopySource={"Bucket": bucket, "Key": "mp"})) == (
        400, "InvalidRequest")
    s3.put_object(Bucket=bucket, Key="plain", Body=b"made secret")
    s3.copy_object(Bucket=bucket, Key="sealed", CopySource={"Bucket": bucket, "Key": "plain"}, **sse())
    assert s3.get_object(Bucket=bucket, Key="sealed", **sse())["Body"].read() == b"made secret"
    # Re-keyed onto itself (allowed: the encryption changes).
    s3.copy_object(Bucket=bucket, Key="sealed", CopySource={"Bucket": bucket, "Key": "sealed"},
                   **source_sse(), **sse(OTHER))
    assert s3.get_object(Bucket=bucket, Key="sealed", **sse(OTHER))["Body"].read() == b"made secret"
    up2 = s3.create_multipart_upload(Bucket=bucket, Key="mp2", **sse())
    part = s3.upload_part_copy(Bucket=bucket, Key="mp2", UploadId=up2["UploadId"], PartNumber=1,
                               CopySource={"Bucket": bucket, "Key": "rekeyed"}, CopySourceRange="bytes=0-99",
                               **source_sse(OTHER), **sse())
    s3.complete_multipart_upload(Bucket=bucket, Key="mp2", UploadId=up2["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="mp2", **sse())["Body"].read() == whole[:100]


def test_the_plaintext_is_nowhere_on_disk(make_server):
    srv = make_server(deployment="all-in-one", rest=True)
    s3 = srv.client()
    s3.create_bucket(Bucket="secrets")
    marker = f"PLAINTEXT-MARKER-{uuid.uuid4().hex}".encode()
    plain_marker = f"PLAIN-CONTROL-{uuid.uuid4().hex}".encode()
    s3.put_object(Bucket="secrets", Key="small", Body=marker, **sse())
    s3.put_object(Bucket="secrets", Key="big", Body=marker * (2 * MIB // len(marker)), **sse())
    s3.put_object(Bucket="secrets", Key="control", Body=plain_marker)
    srv.stop()  # everything on disk, nothing left in memory
    assert data_dir_holds(srv.data_dir, plain_marker), "the search finds an unencrypted body"
    assert not data_dir_holds(srv.data_dir, marker)
    srv.start()
    s3 = srv.client()
    assert s3.get_object(Bucket="secrets", Key="small", **sse())["Body"].read() == marker
    # The REST API reads no encrypted object, with or without the key.
    s3.put_object_acl(Bucket="secrets", Key="small", ACL="public-read")
    key_headers = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
                   "x-amz-server-side-encryption-customer-key": base64.b64encode(KEY).decode(),
                   "x-amz-server-side-encryption-customer-key-md5":
                       base64.b64encode(hashlib.md5(KEY).digest()).decode()}
    for headers in ({}, key_headers):
        r = requests.get(f"{srv.rest_endpoint}/secrets/small", headers=headers, timeout=10)
        assert r.status_code == 400 and marker not in r.content, r.text
