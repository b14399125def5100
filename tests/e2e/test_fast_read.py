"""The plain-read fast path (gateway/src/fast_read.rs).

A GetObject or HeadObject of a whole object, signed in the Authorization header, is answered in
front of s3s. Each answer must carry exactly the status, headers and body the s3s path sends for
the same object, and every request the fast path cannot answer with 200 (bad signature, unknown
key, missing object, ACL refusal, skewed clock, ranges, preconditions, virtual hosts) must still
get s3s's answer. Which path served a request is read from the server's trace log.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os

import pytest
from botocore.exceptions import ClientError

from leofs_harness import raw_request, sigv4_headers

MIB = 1 << 20
FAST_LOG = "plain read served on the fast path"
TRACE_ENV = {"RUST_LOG": "info,s3s=off,leofs_gateway::fast_read=trace"}


def fast_reads(srv) -> int:
    """Reads the fast path has served so far."""
    return srv.stderr_path.read_text(errors="replace").count(FAST_LOG)


def comparable(headers: dict[str, str]) -> dict[str, str]:
    """Response headers without the per-response Date."""
    return {k.lower(): v for k, v in headers.items() if k.lower() != "date"}


@pytest.fixture
def traced(make_server):
    """A server that logs every read the fast path serves, with a bucket `fast-reads`."""
    srv = make_server(extra_env=TRACE_ENV)
    srv.client().create_bucket(Bucket="fast-reads")
    return srv


def read_both_ways(srv, s3, key: str, head: bool = False, **kwargs):
    """The same read on the fast path and (forced by a header it does not take) on the s3s
    path: asserts which path served each, returns both (headers, body)."""
    call = s3.head_object if head else s3.get_object
    before = fast_reads(srv)
    fast = call(Bucket="fast-reads", Key=key, **kwargs)
    fast_body = b"" if head else fast["Body"].read()
    assert fast_reads(srv) == before + 1, "the plain read did not take the fast path"
    slow = call(Bucket="fast-reads", Key=key, ExpectedBucketOwner="123456789012", **kwargs)
    slow_body = b"" if head else slow["Body"].read()
    assert fast_reads(srv) == before + 1, "a read with an extra header took the fast path"
    meta_fast, meta_slow = fast["ResponseMetadata"], slow["ResponseMetadata"]
    assert meta_fast["HTTPStatusCode"] == meta_slow["HTTPStatusCode"] == 200
    assert comparable(meta_fast["HTTPHeaders"]) == comparable(meta_slow["HTTPHeaders"])
    assert fast_body == slow_body
    return meta_fast["HTTPHeaders"], fast_body


def test_answers_match_the_s3s_path(traced):
    s3 = traced.client()
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    key = "dir/ü n+i~c*o%de().txt"
    body = os.urandom(5000)
    s3.put_object(
        Bucket="fast-reads", Key=key, Body=body, ContentType="text/plain",
        CacheControl="no-cache", ContentDisposition='attachment; filename="a.txt"',
        ContentEncoding="identity", ContentLanguage="en", Expires=expires,
        Metadata={"color": "blue", "shape": "a  square"},
    )
    headers, got = read_both_ways(traced, s3, key)
    assert got == body
    assert headers["x-amz-meta-color"] == "blue"
    assert headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert "x-amz-checksum-crc32" in headers  # boto3 asks for checksums on GET
    headers, _ = read_both_ways(traced, s3, key, head=True)
    assert headers["content-length"] == "5000"
    read_both_ways(traced, s3, key, ChecksumMode="ENABLED", head=True)

    s3.put_object(Bucket="fast-reads", Key="empty", Body=b"")
    headers, got = read_both_ways(traced, s3, "empty")
    assert got == b"" and headers["content-length"] == "0"


def test_chunked_and_multipart_objects_stream_alike(traced):
    s3 = traced.client()
    big = os.urandom(9 * MIB + 123)  # more than two 4 MiB chunks
    s3.put_object(Bucket="fast-reads", Key="big", Body=big)
    _, got = read_both_ways(traced, s3, "big")
    assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()

    parts = [os.urandom(5 * MIB), os.urandom(MIB + 7)]
    upload = s3.create_multipart_upload(Bucket="fast-reads", Key="multi")["UploadId"]
    done = [
        {"PartNumber": n, "ETag": s3.upload_part(Bucket="fast-reads", Key="multi", UploadId=upload,
                                                 PartNumber=n, Body=p)["ETag"]}
        for n, p in enumerate(parts, start=1)
    ]
    s3.complete_multipart_upload(Bucket="fast-reads", Key="multi", UploadId=upload,
                                 MultipartUpload={"Parts": done})
    headers, got = read_both_ways(traced, s3, "multi")
    assert got == b"".join(parts)
    assert headers["etag"].endswith('-2"')
    read_both_ways(traced, s3, "multi", head=True)


def test_non_ascii_metadata_takes_the_s3s_path(traced):
    """s3s writes such values RFC 2047-encoded; the fast path leaves those objects to it."""
    encoded = "=?UTF-8?B?Y2Fmw6k=?="  # "café"
    put = raw_request(traced, "PUT", "/fast-reads/k", headers={"x-amz-meta-name": encoded},
                      body=b"v")
    assert put.status == 200, put.body
    before = fast_reads(traced)
    got = traced.client().get_object(Bucket="fast-reads", Key="k")
    assert got["Body"].read() == b"v"
    assert got["ResponseMetadata"]["HTTPHeaders"]["x-amz-meta-name"] == encoded
    assert fast_reads(traced) == before


def error_of(call) -> tuple[int, str]:
    with pytest.raises(ClientError) as e:
        call()
    resp = e.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"]


def test_refusals_and_misses_get_the_s3s_answers(traced):
    s3 = traced.client()
    s3.put_object(Bucket="fast-reads", Key="k", Body=b"value")
    before = fast_reads(traced)

    wrong_secret = traced.client(secret_key="not-the-secret")
    assert error_of(lambda: wrong_secret.get_object(Bucket="fast-reads", Key="k")) == (
        403, "SignatureDoesNotMatch")
    unknown = traced.client(access_key="AKNOSUCHKEY", secret_key="x")
    assert error_of(lambda: unknown.get_object(Bucket="fast-reads", Key="k")) == (
        403, "InvalidAccessKeyId")
    assert error_of(lambda: s3.get_object(Bucket="fast-reads", Key="missing")) == (404, "NoSuchKey")
    assert error_of(lambda: s3.head_object(Bucket="fast-reads", Key="missing"))[0] == 404
    assert error_of(lambda: s3.get_object(Bucket="no-such-bucket-x", Key="k")) == (
        404, "NoSuchBucket")

    creds = json.loads(traced.adm("create-user", "mallory", json_output=True).stdout)
    mallory = traced.client(creds["access_key_id"], creds["secret_access_key"])
    assert error_of(lambda: mallory.get_object(Bucket="fast-reads", Key="k")) == (
        403, "AccessDenied")

    stale = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    host = f"127.0.0.1:{traced.s3_port}"
    headers = sigv4_headers("GET", host, "/fast-reads/k", None, {}, "UNSIGNED-PAYLOAD",
                            traced.access_key, traced.secret_key, now=stale)
    resp = raw_request(traced, "GET", "/fast-reads/k", headers=headers, sign=False)
    assert (resp.status, resp.error_code()) == (403, "RequestTimeTooSkewed")

    # The right signature in upper-case hex: s3s compares the text and refuses it.
    headers = sigv4_headers("GET", host, "/fast-reads/k", None, {}, "UNSIGNED-PAYLOAD",
                            traced.access_key, traced.secret_key)
    auth, signature = headers["authorization"].rsplit("Signature=", 1)
    headers["authorization"] = f"{auth}Signature={signature.upper()}"
    resp = raw_request(traced, "GET", "/fast-reads/k", headers=headers, sign=False)
    assert (resp.status, resp.error_code()) == (403, "SignatureDoesNotMatch")

    ranged = s3.get_object(Bucket="fast-reads", Key="k", Range="bytes=1-2")
    assert ranged["Body"].read() == b"al"
    etag = s3.head_object(Bucket="fast-reads", Key="k")["ETag"]  # the one fast read here
    assert error_of(lambda: s3.get_object(Bucket="fast-reads", Key="k", IfNoneMatch=etag))[0] == 304
    assert fast_reads(traced) == before + 1


def test_virtual_hosted_reads_take_the_s3s_path(make_server):
    srv = make_server(domain="s3.test", extra_env=TRACE_ENV)
    srv.client().create_bucket(Bucket="vhost")
    srv.client().put_object(Bucket="vhost", Key="k", Body=b"value")
    before = fast_reads(srv)
    resp = raw_request(srv, "GET", "/k", host=f"vhost.s3.test:{srv.s3_port}",
                       payload_sha256="UNSIGNED-PAYLOAD")
    assert (resp.status, resp.body) == (200, b"value")
    assert fast_reads(srv) == before
    resp = raw_request(srv, "GET", "/vhost/k", payload_sha256="UNSIGNED-PAYLOAD")
    assert (resp.status, resp.body) == (200, b"value")
    assert fast_reads(srv) == before + 1
