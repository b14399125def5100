"""Error paths over raw HTTP (http.client / sockets, SigV4 signed by tests/e2e/leofs_harness.py).

Every case checks the HTTP status and the S3 XML error <Code>, and that the server keeps serving.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import socket
import time
import zlib

import pytest
from botocore.exceptions import ClientError

from checksums import s3_checksum
from leofs_harness import b64, raw_request, sigv4_headers, signed_chunks

KIB = 1024


def assert_error(resp, status: int, *codes: str) -> None:
    assert resp.status == status, resp
    assert resp.error_code() in codes, resp


def assert_absent(server, bucket: str, key: str) -> None:
    r = raw_request(server, "HEAD", f"/{bucket}/{key}")
    assert r.status == 404, r
    listing = raw_request(server, "GET", f"/{bucket}", query={"list-type": "2", "prefix": key})
    assert listing.status == 200, listing
    assert f"<Key>{key}</Key>".encode() not in listing.body


def assert_still_serves(server, bucket: str) -> None:
    body = os.urandom(1000)
    r = raw_request(server, "PUT", f"/{bucket}/alive-check", body=body)
    assert r.status == 200, r
    r = raw_request(server, "GET", f"/{bucket}/alive-check")
    assert r.status == 200 and r.body == body, r


def test_wrong_secret_signature_does_not_match(server, bucket):
    r = raw_request(server, "GET", f"/{bucket}", secret_key="x" * 40)
    assert_error(r, 403, "SignatureDoesNotMatch")
    r = raw_request(server, "PUT", f"/{bucket}/k", body=b"data", secret_key="y" * 40)
    assert_error(r, 403, "SignatureDoesNotMatch")
    assert_absent(server, bucket, "k")


def test_unknown_access_key(server, bucket):
    r = raw_request(server, "GET", f"/{bucket}", access_key="AKIANOSUCHKEY0000000", secret_key="z" * 40)
    assert_error(r, 403, "InvalidAccessKeyId")


def test_tampered_body_with_signed_payload(server, bucket):
    # The signature covers sha256(body); a different body must be refused.
    headers = sigv4_headers("PUT", f"127.0.0.1:{server.s3_port}", f"/{bucket}/tampered", None,
                            {}, hashlib.sha256(b"original").hexdigest(), server.access_key,
                            server.secret_key)
    r = raw_request(server, "PUT", f"/{bucket}/tampered", headers=headers, body=b"tampered", sign=False)
    assert_absent(server, bucket, "tampered")
    assert_error(r, 400, "XAmzContentSHA256Mismatch")


def test_request_time_too_skewed(server, bucket):
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
    headers = sigv4_headers("GET", f"127.0.0.1:{server.s3_port}", f"/{bucket}", None, {},
                            hashlib.sha256(b"").hexdigest(), server.access_key, server.secret_key,
                            now=old)
    r = raw_request(server, "GET", f"/{bucket}", headers=headers, sign=False)
    assert_error(r, 403, "RequestTimeTooSkewed")


def test_no_such_bucket_raw(server):
    r = raw_request(server, "GET", "/no-such-bucket-e2e/key")
    assert_error(r, 404, "NoSuchBucket")


def test_malformed_xml_complete_multipart(server, s3, bucket):
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=b"x" * 100)
    for body in (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>",
                 b"this is not xml at all", b"<CompleteMultipartUpload><Part><PartNumber>one"
                 b"</PartNumber><ETag>x</ETag></Part></CompleteMultipartUpload>"):
        r = raw_request(server, "POST", f"/{bucket}/mp", query={"uploadId": uid}, body=body)
        assert_error(r, 400, "MalformedXML", "InvalidArgument")
    # An empty part list is malformed too.
    r = raw_request(server, "POST", f"/{bucket}/mp", query={"uploadId": uid},
                    body=b"<CompleteMultipartUpload></CompleteMultipartUpload>")
    assert_error(r, 400, "MalformedXML", "InvalidRequest")
    assert_absent(server, bucket, "mp")
    # The upload is still open.
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid)["Parts"]] == [1]


def test_malformed_xml_delete_objects(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="survivor", Body=b"s")
    body = b"<Delete><Object><Key>survivor</Key>"
    r = raw_request(server, "POST", f"/{bucket}", query={"delete": ""}, body=body,
                    headers={"content-md5": b64(hashlib.md5(body).digest())})
    assert_error(r, 400, "MalformedXML")
    assert s3.get_object(Bucket=bucket, Key="survivor")["Body"].read() == b"s"


def test_key_too_long(server, bucket):
    r = raw_request(server, "PUT", f"/{bucket}/{'k' * 1025}", body=b"x")
    assert_error(r, 400, "KeyTooLongError")
    r = raw_request(server, "PUT", f"/{bucket}/{'k' * 1024}", body=b"max length key")
    assert r.status == 200, r
    r = raw_request(server, "GET", f"/{bucket}/{'k' * 1024}")
    assert r.status == 200 and r.body == b"max length key"


def test_bad_content_md5(server, bucket):
    r = raw_request(server, "PUT", f"/{bucket}/md5", body=b"payload",
                    headers={"content-md5": b64(hashlib.md5(b"other").digest())})
    assert_error(r, 400, "BadDigest")
    assert_absent(server, bucket, "md5")
    r = raw_request(server, "PUT", f"/{bucket}/md5", body=b"payload",
                    headers={"content-md5": b64(hashlib.md5(b"payload").digest())})
    assert r.status == 200 and r.headers["etag"] == f'"{hashlib.md5(b"payload").hexdigest()}"'
    # Not base64 of 16 bytes: S3 answers InvalidDigest.
    r = raw_request(server, "PUT", f"/{bucket}/md5-invalid", body=b"payload",
                    headers={"content-md5": "not!base64"})
    assert_absent(server, bucket, "md5-invalid")
    assert_error(r, 400, "InvalidDigest")


def test_wrong_checksum_header(server, bucket):
    body = os.urandom(5000)
    wrong = s3_checksum("CRC32", b"something else")
    r = raw_request(server, "PUT", f"/{bucket}/ck", body=body, headers={"x-amz-checksum-crc32": wrong})
    assert_error(r, 400, "BadDigest", "InvalidRequest")
    assert_absent(server, bucket, "ck")
    r = raw_request(server, "PUT", f"/{bucket}/ck", body=body,
                    headers={"x-amz-checksum-sha256": s3_checksum("SHA256", b"nope")})
    assert_error(r, 400, "BadDigest", "InvalidRequest")
    assert_absent(server, bucket, "ck")
    r = raw_request(server, "PUT", f"/{bucket}/ck", body=body,
                    headers={"x-amz-checksum-crc32": s3_checksum("CRC32", body)})
    assert r.status == 200, r
    assert r.headers.get("x-amz-checksum-crc32") == s3_checksum("CRC32", body)


def aws_chunked(body: bytes, trailer_name: str, trailer_value: str, chunk_bytes: int = 64 * KIB) -> bytes:
    """An aws-chunked body with an unsigned trailer (what SDKs send over TLS by default)."""
    out = bytearray()
    for i in range(0, len(body), chunk_bytes):
        chunk = body[i : i + chunk_bytes]
        out += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    out += b"0\r\n" + f"{trailer_name}:{trailer_value}\r\n".encode() + b"\r\n"
    return bytes(out)


def put_with_trailer(server, bucket, key, body, value):
    encoded = aws_chunked(body, "x-amz-checksum-crc32", value)
    return raw_request(
        server, "PUT", f"/{bucket}/{key}", body=encoded,
        payload_sha256="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        headers={
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(body)),
            "x-amz-trailer": "x-amz-checksum-crc32",
            "content-length": str(len(encoded)),
        },
    )


def test_checksum_trailer(server, bucket, s3):
    body = os.urandom(300 * KIB + 7)
    good = b64(zlib.crc32(body).to_bytes(4, "big"))
    r = put_with_trailer(server, bucket, "trailer-ok", body, good)
    assert r.status == 200, r
    got = s3.get_object(Bucket=bucket, Key="trailer-ok", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert got.get("ChecksumCRC32") == good

    r = put_with_trailer(server, bucket, "trailer-bad", body, b64(zlib.crc32(b"x").to_bytes(4, "big")))
    assert_error(r, 400, "BadDigest", "InvalidRequest")
    assert_absent(server, bucket, "trailer-bad")


def test_oversized_metadata_header(server, bucket):
    r = raw_request(server, "PUT", f"/{bucket}/bigmeta", body=b"x",
                    headers={"x-amz-meta-big": "m" * (100 * KIB)}, timeout_s=20)
    assert 400 <= r.status < 500, r
    assert r.error_code() in (None, "MetadataTooLarge", "RequestHeaderSectionTooLarge", "InvalidArgument"), r
    assert_absent(server, bucket, "bigmeta")
    assert_still_serves(server, bucket)


def test_oversized_plain_header(server, bucket):
    r = raw_request(server, "GET", f"/{bucket}", headers={"x-junk": "j" * (100 * KIB)}, sign=True,
                    timeout_s=20)
    assert 400 <= r.status < 500, r
    assert_still_serves(server, bucket)


def test_huge_header_is_refused_not_hung(server, bucket):
    """A 2 MiB header line: the server answers 4xx or closes; it must not hang or die."""
    sock = socket.create_connection(("127.0.0.1", server.s3_port), timeout=20)
    try:
        head = (f"GET /{bucket} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-junk: ").encode()
        try:
            sock.sendall(head + b"j" * (2 << 20) + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed early by the server: acceptable
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        if data:
            status = int(data.split(b" ", 2)[1])
            assert 400 <= status < 500, data[:200]
    finally:
        sock.close()
    assert_still_serves(server, bucket)


def test_client_disconnects_mid_upload(server, bucket):
    size = 8 << 20
    body = os.urandom(size)
    headers = sigv4_headers("PUT", f"127.0.0.1:{server.s3_port}", f"/{bucket}/half", None,
                            {"content-length": str(size)}, "UNSIGNED-PAYLOAD",
                            server.access_key, server.secret_key)
    for key_path, payload_len in ((f"/{bucket}/half", size // 2), (f"/{bucket}/half", 10)):
        sock = socket.create_connection(("127.0.0.1", server.s3_port), timeout=20)
        request = f"PUT {key_path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(request.encode() + body[:payload_len])
        time.sleep(0.3)
        sock.close()
    time.sleep(1.0)
    assert_absent(server, bucket, "half")
    # Same for a chunked (aws-chunked, streaming) upload cut in the middle.
    encoded = aws_chunked(body, "x-amz-checksum-crc32", b64(zlib.crc32(body).to_bytes(4, "big")))
    headers = sigv4_headers(
        "PUT", f"127.0.0.1:{server.s3_port}", f"/{bucket}/half-chunked", None,
        {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(size),
         "x-amz-trailer": "x-amz-checksum-crc32", "content-length": str(len(encoded))},
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER", server.access_key, server.secret_key)
    sock = socket.create_connection(("127.0.0.1", server.s3_port), timeout=20)
    request = f"PUT /{bucket}/half-chunked HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(request.encode() + encoded[: len(encoded) // 2])
    time.sleep(0.3)
    sock.close()
    time.sleep(1.0)
    assert_absent(server, bucket, "half-chunked")
    assert_still_serves(server, bucket)
    # An overwrite cut short leaves the previous version intact.
    r = raw_request(server, "PUT", f"/{bucket}/keep", body=b"previous version")
    assert r.status == 200
    sock = socket.create_connection(("127.0.0.1", server.s3_port), timeout=20)
    headers = sigv4_headers("PUT", f"127.0.0.1:{server.s3_port}", f"/{bucket}/keep", None,
                            {"content-length": str(size)}, "UNSIGNED-PAYLOAD",
                            server.access_key, server.secret_key)
    request = f"PUT /{bucket}/keep HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(request.encode() + body[: size // 2])
    sock.close()
    time.sleep(1.0)
    r = raw_request(server, "GET", f"/{bucket}/keep")
    assert r.status == 200 and r.body == b"previous version"


@pytest.mark.parametrize("method", ["PATCH", "TRACE"])
def test_unsupported_method(server, bucket, method):
    r = raw_request(server, method, f"/{bucket}/k")
    assert r.status in (405, 501), r
    assert r.error_code() in ("MethodNotAllowed", "NotImplemented"), r
    assert_still_serves(server, bucket)


def put_signed_chunks(server, bucket, key, body, tamper_chunk=-1):
    signer: dict = {}
    encoded_len = len(signed_chunks(body, {"seed": "0" * 64, "amz_date": "", "scope": "", "key": b""}))
    headers = sigv4_headers(
        "PUT", f"127.0.0.1:{server.s3_port}", f"/{bucket}/{key}", None,
        {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(body)),
         "content-length": str(encoded_len)},
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", server.access_key, server.secret_key,
        chunk_signer=signer)
    encoded = signed_chunks(body, signer, tamper_chunk=tamper_chunk)
    assert len(encoded) == encoded_len
    return raw_request(server, "PUT", f"/{bucket}/{key}", headers=headers, body=encoded, sign=False)


def test_signed_streaming_chunks(server, bucket, s3):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD (per-chunk signatures, as older SDKs send)."""
    body = os.urandom(200 * KIB + 11)
    r = put_signed_chunks(server, bucket, "signed-chunks", body)
    assert r.status == 200, r
    assert r.headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="signed-chunks")["Body"].read() == body
    r = put_signed_chunks(server, bucket, "tampered-chunks", body, tamper_chunk=1)
    assert_absent(server, bucket, "tampered-chunks")
    assert_error(r, 403, "SignatureDoesNotMatch")


def test_an_early_error_to_an_upload_leaves_the_client_usable(make_server):
    """boto3 sends PutObject with `Expect: 100-continue`; answered early (here AccessDenied) it
    never sends the body. The answer must close the connection: kept open, the next request's
    first bytes were taken for that body (SignatureDoesNotMatch within a few rounds)."""
    srv = make_server()
    srv.client().create_bucket(Bucket="root-only")
    creds = json.loads(srv.adm("create-user", "mallory", json_output=True).stdout)
    # On the wire: the early answer says `Connection: close`, and the server closes.
    headers = sigv4_headers("PUT", f"127.0.0.1:{srv.s3_port}", "/root-only/k", None,
                            {"content-length": "5", "expect": "100-continue"}, "UNSIGNED-PAYLOAD",
                            creds["access_key_id"], creds["secret_access_key"])
    sock = socket.create_connection(("127.0.0.1", srv.s3_port), timeout=10)
    try:
        sock.sendall(("PUT /root-only/k HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                      + "\r\n").encode())
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    finally:
        sock.close()
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 403") and "connection: close" in head, answer
    # And through boto3, which reuses connections unless told otherwise.
    other = srv.client(creds["access_key_id"], creds["secret_access_key"])
    other.create_bucket(Bucket="mallory-bucket")
    for n in range(30):
        with pytest.raises(ClientError) as e:
            other.put_object(Bucket="root-only", Key=f"k{n}", Body=b"x")
        assert e.value.response["Error"]["Code"] == "AccessDenied"
        assert other.list_objects_v2(Bucket="mallory-bucket")["KeyCount"] == 0


@pytest.mark.parametrize("multipart", [False, True])
def test_header_too_long_to_store_is_refused_not_truncated(server, s3, bucket, multipart):
    """A standard header longer than a stored field may be (8 KiB) is refused with
    MetadataTooLarge and nothing is written; one at the limit is stored whole."""
    at_limit = "text/" + "x" * (8 * 1024 - 5)
    too_long = at_limit + "y"
    if multipart:
        with pytest.raises(ClientError) as e:
            s3.create_multipart_upload(Bucket=bucket, Key="long-mpu", ContentType=too_long)
        assert e.value.response["Error"]["Code"] == "MetadataTooLarge"
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        upload = s3.create_multipart_upload(Bucket=bucket, Key="long-mpu", ContentType=at_limit)
        s3.abort_multipart_upload(Bucket=bucket, Key="long-mpu", UploadId=upload["UploadId"])
        return
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="long-type", Body=b"v", ContentType=too_long)
    assert e.value.response["Error"]["Code"] == "MetadataTooLarge"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert_absent(server, bucket, "long-type")
    s3.put_object(Bucket=bucket, Key="long-type", Body=b"v", ContentType=at_limit)
    assert s3.head_object(Bucket=bucket, Key="long-type")["ContentType"] == at_limit
