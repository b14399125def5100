"""The fast path for plain requests (gateway/src/fast_path.rs).

A GetObject or HeadObject of a whole object, and a PutObject with a Content-Length and no
checksum, metadata or precondition headers, signed in the Authorization header, are answered in
front of s3s. Each answer must carry exactly the status, headers and body the s3s path sends, and
every read the fast path cannot answer with 200 (bad signature, unknown key, missing object, ACL
refusal, skewed clock, ranges, preconditions, virtual hosts) must still get s3s's answer. Which
path served a request is read from the server's trace log.
"""

from __future__ import annotations

import datetime
import hashlib
from email.utils import parsedate_to_datetime
import json
import os
import socket

import pytest
from botocore.exceptions import ClientError

from leofs_harness import raw_request, sigv4_headers

MIB = 1 << 20
FAST_LOG = "plain read served on the fast path"
FAST_WRITE_LOG = "plain write served on the fast path"
TRACE_ENV = {"RUST_LOG": "info,s3s=off,leofs_gateway::fast_path=trace"}


def fast_reads(srv) -> int:
    """Reads the fast path has served so far."""
    return srv.stderr_path.read_text(errors="replace").count(FAST_LOG)


def fast_writes(srv) -> int:
    """Writes the fast path has served so far."""
    return srv.stderr_path.read_text(errors="replace").count(FAST_WRITE_LOG)


PER_RESPONSE = {"date", "x-amz-request-id", "x-amz-id-2"}


def comparable(headers: dict[str, str]) -> dict[str, str]:
    """Response headers without the per-response ones (Date, the request ids)."""
    return {k.lower(): v for k, v in headers.items() if k.lower() not in PER_RESPONSE}


@pytest.fixture
def traced(make_server):
    """A server that logs every read the fast path serves, with a bucket `fast-reads`."""
    srv = make_server(extra_env=TRACE_ENV)
    srv.client().create_bucket(Bucket="fast-reads")
    return srv


def owner_of_buckets(s3) -> str:
    """The id of the buckets' owner: an `x-amz-expected-bucket-owner` naming it is honoured by
    every request, and sends the request to s3s."""
    return s3.list_buckets()["Owner"]["ID"]


def read_both_ways(srv, s3, key: str, head: bool = False, **kwargs):
    """The same read on the fast path and (forced by a header it does not take) on the s3s
    path: asserts which path served each, returns both (headers, body)."""
    call = s3.head_object if head else s3.get_object
    before = fast_reads(srv)
    fast = call(Bucket="fast-reads", Key=key, **kwargs)
    fast_body = b"" if head else fast["Body"].read()
    assert fast_reads(srv) == before + 1, "the plain read did not take the fast path"
    slow = call(Bucket="fast-reads", Key=key, ExpectedBucketOwner=owner_of_buckets(s3), **kwargs)
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


def put_raw(srv, key: str, body: bytes, headers: dict[str, str] | None = None):
    """A PUT the way leofs-bench and simple clients send it: UNSIGNED-PAYLOAD, Content-Length."""
    return raw_request(srv, "PUT", f"/fast-reads/{key}", headers=headers or {}, body=body,
                       payload_sha256="UNSIGNED-PAYLOAD")


def test_plain_puts_match_the_s3s_path(traced):
    s3 = traced.client()
    owner = owner_of_buckets(s3)
    for size in (0, 5000, 9 * MIB + 5):  # empty, inline, more than two 4 MiB chunks
        body = os.urandom(size)
        before = fast_writes(traced)
        fast = put_raw(traced, f"fast-{size}", body, {"content-type": "text/plain"})
        assert fast.status == 200, fast.body
        assert fast_writes(traced) == before + 1, "the plain PUT did not take the fast path"
        slow = put_raw(traced, f"slow-{size}", body, {"content-type": "text/plain",
                                                      "x-amz-expected-bucket-owner": owner})
        assert slow.status == 200, slow.body
        assert fast_writes(traced) == before + 1, "a PUT with an extra header took the fast path"
        assert comparable(fast.headers) == comparable(slow.headers)
        assert fast.headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
        for key in (f"fast-{size}", f"slow-{size}"):
            got = s3.get_object(Bucket="fast-reads", Key=key)
            assert got["Body"].read() == body
            assert got["ContentType"] == "text/plain"
        fast_head = comparable(
            s3.head_object(Bucket="fast-reads", Key=f"fast-{size}")["ResponseMetadata"]["HTTPHeaders"])
        slow_head = comparable(
            s3.head_object(Bucket="fast-reads", Key=f"slow-{size}")["ResponseMetadata"]["HTTPHeaders"])
        # Two objects written one after the other: their Last-Modified may straddle a second.
        written = [parsedate_to_datetime(h.pop("last-modified")) for h in (fast_head, slow_head)]
        assert abs((written[1] - written[0]).total_seconds()) <= 2
        assert fast_head == slow_head

    # An overwrite through the fast path replaces the chunked object (and collects its chunks).
    put_raw(traced, "fast-9437189", b"small now")
    assert s3.get_object(Bucket="fast-reads", Key="fast-9437189")["Body"].read() == b"small now"

    # An empty Content-Type is an absent one on both paths (GET then says binary/octet-stream).
    for key, extra in (("fast-untyped", {}), ("slow-untyped", {"x-amz-expected-bucket-owner": owner})):
        assert put_raw(traced, key, b"x", {"content-type": "", **extra}).status == 200
        got = s3.get_object(Bucket="fast-reads", Key=key)
        assert got["ContentType"] == "binary/octet-stream", key

    # Expect: 100-continue is answered by hyper on either path.
    resp = put_raw(traced, "expect", b"body", {"expect": "100-continue"})
    assert resp.status == 200
    assert s3.get_object(Bucket="fast-reads", Key="expect")["Body"].read() == b"body"


def test_refused_puts_get_the_s3s_answers(traced):
    before = fast_writes(traced)
    creds = json.loads(traced.adm("create-user", "eve", json_output=True).stdout)
    resp = raw_request(traced, "PUT", "/fast-reads/k", body=b"x", payload_sha256="UNSIGNED-PAYLOAD",
                       access_key=creds["access_key_id"], secret_key=creds["secret_access_key"])
    assert (resp.status, resp.error_code()) == (403, "AccessDenied")
    resp = raw_request(traced, "PUT", "/no-such-bucket-x/k", body=b"x",
                       payload_sha256="UNSIGNED-PAYLOAD")
    assert (resp.status, resp.error_code()) == (404, "NoSuchBucket")
    resp = raw_request(traced, "PUT", "/fast-reads/k", body=b"x", payload_sha256="UNSIGNED-PAYLOAD",
                       secret_key="wrong")
    assert (resp.status, resp.error_code()) == (403, "SignatureDoesNotMatch")
    assert fast_writes(traced) == before


def test_a_truncated_plain_put_stores_nothing(traced):
    """The client promises 1000 bytes, sends 10 and hangs up: nothing may be acknowledged."""
    host = f"127.0.0.1:{traced.s3_port}"
    headers = sigv4_headers("PUT", host, "/fast-reads/cut", None, {"content-length": "1000"},
                            "UNSIGNED-PAYLOAD", traced.access_key, traced.secret_key)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", traced.s3_port), timeout=10) as sock:
        sock.sendall(f"PUT /fast-reads/cut HTTP/1.1\r\n{head}\r\n".encode() + b"0123456789")
        sock.shutdown(socket.SHUT_WR)
        reply = sock.recv(4096)
    assert not reply.startswith(b"HTTP/1.1 200"), reply
    assert error_of(lambda: traced.client().head_object(Bucket="fast-reads", Key="cut"))[0] == 404
