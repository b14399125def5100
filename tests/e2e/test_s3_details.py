"""The details S3 clients and conformance suites trip on (issue 18), each written from the S3 API
reference: request ids on every response and in every error document, an empty delimiter not
echoed, a v1 listing's Prefix as given under encoding-type=url, NoSuchBucket for anonymous
requests, aws-chunked never stored as a Content-Encoding, a repeated CompleteMultipartUpload
answered as the first, a signed PUT with a chunked body and no Content-Length, ListBuckets'
prefix echoed, bucket names with ".-" or "-.", and CreateBucket of a bucket its owner has."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import xml.etree.ElementTree as ET

import requests
from botocore.exceptions import ClientError

from conftest import unique_bucket_name
from leofs_harness import error_of, raw_request, signed_chunks, sigv4_headers
from test_errors import put_signed_chunks


def elements(body: bytes, name: str) -> list[str]:
    return [el.text or "" for el in ET.fromstring(body).iter() if el.tag.split("}")[-1] == name]


def test_every_response_carries_request_ids_and_errors_carry_theirs(server, s3, bucket):
    seen = set()
    for method, path, status in [("PUT", f"/{bucket}/k", 200), ("GET", f"/{bucket}/k", 200),
                                 ("HEAD", f"/{bucket}/k", 200), ("GET", f"/{bucket}", 200),
                                 ("GET", f"/{bucket}/missing", 404), ("HEAD", f"/{bucket}/missing", 404)]:
        r = raw_request(server, method, path, body=b"x" if method == "PUT" else b"")
        assert r.status == status, r
        request_id = r.headers["x-amz-request-id"]
        assert re.fullmatch(r"[0-9A-F]{16}", request_id), request_id
        assert r.headers["x-amz-id-2"]
        seen.add(request_id)
        if status == 404 and method == "GET":
            assert elements(r.body, "RequestId") == [request_id], r.body
    assert len(seen) == 6  # a fresh id per request
    # Errors s3s answers itself (a bad signature) carry one too; boto3 reads it.
    bad = raw_request(server, "GET", f"/{bucket}/k", secret_key="wrong")
    assert bad.status == 403 and elements(bad.body, "RequestId") == [bad.headers["x-amz-request-id"]]
    try:
        s3.get_object(Bucket=bucket, Key="missing")
    except ClientError as e:
        assert re.fullmatch(r"[0-9A-F]{16}", e.response["ResponseMetadata"]["RequestId"])


def test_an_empty_delimiter_is_not_echoed(server, bucket):
    raw_request(server, "PUT", f"/{bucket}/a/b", body=b"x")
    for query in [{"list-type": "2", "delimiter": ""}, {"delimiter": ""}, {"versions": "", "delimiter": ""}]:
        r = raw_request(server, "GET", f"/{bucket}", query=query)
        assert r.status == 200, r
        assert elements(r.body, "Delimiter") == [], (query, r.body)
    r = raw_request(server, "GET", f"/{bucket}", query={"list-type": "2", "delimiter": "/"})
    assert elements(r.body, "Delimiter") == ["/"]


def test_a_v1_listing_answers_its_prefix_as_given_under_url_encoding(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="dir one/k +x", Body=b"x")
    r = raw_request(server, "GET", f"/{bucket}", query={"prefix": "dir one/", "encoding-type": "url"})
    assert r.status == 200, r
    assert elements(r.body, "Prefix") == ["dir one/"], r.body
    assert elements(r.body, "Key") == ["dir%20one/k%20%2Bx"], r.body
    # boto3 (which asks for url encoding) sees the prefix and keys as they are.
    got = s3.list_objects(Bucket=bucket, Prefix="dir one/")
    assert got["Prefix"] == "dir one/" and [o["Key"] for o in got["Contents"]] == ["dir one/k +x"]
    got = s3.list_objects_v2(Bucket=bucket, Prefix="dir one/")
    assert got["Prefix"] == "dir one/" and [o["Key"] for o in got["Contents"]] == ["dir one/k +x"]


def test_anonymous_requests_to_a_missing_bucket_are_no_such_bucket(server, bucket):
    for method in ["GET", "HEAD", "PUT"]:
        r = requests.request(method, f"{server.endpoint}/no-such-bucket-{os.getpid()}/k", timeout=10)
        assert r.status_code == 404, (method, r.status_code, r.text)
        if method == "GET":
            assert "<Code>NoSuchBucket</Code>" in r.text
    # An existing private bucket still says nothing to them.
    r = requests.get(f"{server.endpoint}/{bucket}/k", timeout=10)
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text


def test_aws_chunked_is_not_stored_as_the_content_encoding(server, s3, bucket):
    body = os.urandom(100_000)
    r = put_signed_chunks(server, bucket, "framed", body)
    assert r.status == 200, r
    assert "ContentEncoding" not in s3.head_object(Bucket=bucket, Key="framed")
    signer: dict = {}
    length = len(signed_chunks(body, {"seed": "0" * 64, "amz_date": "", "scope": "", "key": b""}))
    headers = sigv4_headers(
        "PUT", f"127.0.0.1:{server.s3_port}", f"/{bucket}/gz", None,
        {"content-encoding": "aws-chunked,gzip", "x-amz-decoded-content-length": str(len(body)),
         "content-length": str(length)},
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", server.access_key, server.secret_key, chunk_signer=signer)
    r = raw_request(server, "PUT", f"/{bucket}/gz", headers=headers, body=signed_chunks(body, signer), sign=False)
    assert r.status == 200, r
    assert s3.head_object(Bucket=bucket, Key="gz")["ContentEncoding"] == "gzip"
    # A multipart upload created with it stores what is left too.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", ContentEncoding="aws-chunked")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"p")
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert "ContentEncoding" not in s3.head_object(Bucket=bucket, Key="mp")


def test_a_repeated_complete_multipart_upload_is_answered_as_the_first(s3, bucket):
    for versioned in [False, True]:
        key = f"mp-{versioned}"
        if versioned:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts = []
        for n, size in [(1, 5 << 20), (2, 1000)]:
            etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n,
                                  Body=os.urandom(size))["ETag"]
            parts.append({"PartNumber": n, "ETag": etag})
        first = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                             MultipartUpload={"Parts": parts})
        again = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                             MultipartUpload={"Parts": parts})
        assert again["ETag"] == first["ETag"] and again.get("VersionId") == first.get("VersionId")
        # Other parts, an unknown upload, or an object written since: the upload is gone.
        assert error_of(lambda: s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts[:1]})) == (404, "NoSuchUpload")
        assert error_of(lambda: s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId="0" * len(upload),
            MultipartUpload={"Parts": parts})) == (404, "NoSuchUpload")
        s3.put_object(Bucket=bucket, Key=key, Body=b"newer")
        assert error_of(lambda: s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})) == (404, "NoSuchUpload")


def chunked_put(server, path: str, body: bytes, payload_sha256: str) -> tuple[int, bytes]:
    headers = sigv4_headers("PUT", f"127.0.0.1:{server.s3_port}", path, None,
                            {"transfer-encoding": "chunked"}, payload_sha256,
                            server.access_key, server.secret_key)
    sock = socket.create_connection(("127.0.0.1", server.s3_port), timeout=30)
    try:
        request = f"PUT {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        pieces = [body[i:i + 7000] for i in range(0, len(body), 7000)] or [b""]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
        sock.sendall(request.encode() + framed)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith((b">", b"\r\n\r\n")):
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer


def test_a_signed_put_with_a_chunked_body_and_no_content_length(server, s3, bucket):
    for name, body in [("small", b"hello chunked world"), ("large", os.urandom(9 << 20))]:
        digest = hashlib.sha256(body).hexdigest()
        status, answer = chunked_put(server, f"/{bucket}/{name}", body, digest)
        assert status == 200, answer[:500]
        got = s3.get_object(Bucket=bucket, Key=name)
        assert got["Body"].read() == body and got["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    status, answer = chunked_put(server, f"/{bucket}/unsigned", b"unsigned body", "UNSIGNED-PAYLOAD")
    assert status == 200, answer[:500]
    assert s3.get_object(Bucket=bucket, Key="unsigned")["Body"].read() == b"unsigned body"
    # A body that is not the one signed is refused and stores nothing.
    status, answer = chunked_put(server, f"/{bucket}/forged", b"other bytes", hashlib.sha256(b"x").hexdigest())
    assert status == 400 and b"XAmzContentSHA256Mismatch" in answer, answer[:500]
    assert error_of(lambda: s3.head_object(Bucket=bucket, Key="forged"))[0] == 404


def test_list_buckets_echoes_its_prefix(s3):
    names = [unique_bucket_name("lbp") for _ in range(2)]
    for name in names:
        s3.create_bucket(Bucket=name)
    try:
        got = s3.list_buckets(Prefix="lbp")
        assert got["Prefix"] == "lbp"
        assert {b["Name"] for b in got["Buckets"]} >= set(names)
        assert all(b["Name"].startswith("lbp") for b in got["Buckets"])
    finally:
        for name in names:
            s3.delete_bucket(Bucket=name)


def test_bucket_names_with_a_period_next_to_a_hyphen_are_refused(s3):
    for name in ["a.-b", "a-.b", "my-.bucket"]:
        assert error_of(lambda: s3.create_bucket(Bucket=name)) == (400, "InvalidBucketName"), name


def test_create_bucket_of_an_existing_bucket(make_server):
    server = make_server()
    s3 = server.client()
    s3.create_bucket(Bucket="mine", ACL="public-read")
    # us-east-1: the owner "creates" it again (200); nothing changes (S3 would reset the ACL:
    # asking for another ACL than the bucket's is BucketAlreadyOwnedByYou here, never ignored).
    s3.create_bucket(Bucket="mine")
    s3.create_bucket(Bucket="mine", ACL="public-read")
    assert error_of(lambda: s3.create_bucket(Bucket="mine", ACL="private")) == (409, "BucketAlreadyOwnedByYou")
    assert requests.get(f"{server.endpoint}/mine", timeout=10).status_code == 200
    creds = json.loads(server.adm("create-user", "other", json_output=True).stdout)
    other = server.client(creds["access_key_id"], creds["secret_access_key"])
    assert error_of(lambda: other.create_bucket(Bucket="mine")) == (409, "BucketAlreadyExists")
    # Elsewhere: BucketAlreadyOwnedByYou.
    west = make_server(extra_args=["--region", "eu-west-1"])
    client = west.client(region_name="eu-west-1")
    location = {"LocationConstraint": "eu-west-1"}
    client.create_bucket(Bucket="mine", CreateBucketConfiguration=location)
    assert error_of(lambda: client.create_bucket(
        Bucket="mine", CreateBucketConfiguration=location)) == (409, "BucketAlreadyOwnedByYou")
