"""Requests the node cannot honour are refused in S3's error format, never accepted and ignored
(gateway/src/s3/unsupported.rs): server-side encryption headers, object ACL headers whose effect
would differ from the bucket's canned ACL, bucket grant headers, and presigned URLs valid for
more than 7 days or with a negative expiry. What the node honours keeps working.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
import urllib.parse
import xml.etree.ElementTree as ET

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import unique_bucket_name
from leofs_harness import REGION, empty_bucket, raw_request

ALL_USERS = 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'
SSE_C_KEY = os.urandom(32)


def refused(call, status: int, code: str) -> ClientError:
    with pytest.raises(ClientError) as e:
        call()
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status, e.value.response
    assert e.value.response["Error"]["Code"] == code, e.value.response
    return e.value


def absent(s3, bucket: str, key: str) -> bool:
    return key not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def sse_c() -> dict:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": SSE_C_KEY}


def test_server_side_encryption_is_not_implemented(server, s3, bucket):
    for key, extra in (
        ("sse-s3", {"ServerSideEncryption": "AES256"}),
        ("sse-kms", {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "key-1"}),
        ("sse-kms-ctx", {"ServerSideEncryption": "aws:kms", "SSEKMSEncryptionContext": base64.b64encode(b"{}").decode()}),
        ("sse-bucket-key", {"ServerSideEncryption": "aws:kms", "BucketKeyEnabled": True}),
        ("sse-c", sse_c()),
    ):
        refused(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"secret", **extra), 501, "NotImplemented")
        assert absent(s3, bucket, key), key
        refused(lambda: s3.create_multipart_upload(Bucket=bucket, Key=key, **extra), 501, "NotImplemented")
        assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), key

    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain text")
    # Reading with an SSE-C key would claim a decryption that never happens.
    refused(lambda: s3.get_object(Bucket=bucket, Key="plain", **sse_c()), 501, "NotImplemented")
    refused(lambda: s3.head_object(Bucket=bucket, Key="plain", **sse_c()), 501, "501")
    refused(lambda: s3.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/plain",
                                   CopySourceSSECustomerAlgorithm="AES256",
                                   CopySourceSSECustomerKey=SSE_C_KEY), 501, "NotImplemented")
    refused(lambda: s3.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/plain",
                                   ServerSideEncryption="AES256"), 501, "NotImplemented")
    assert absent(s3, bucket, "copy")
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    refused(lambda: s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=b"p", **sse_c()),
            501, "NotImplemented")
    assert not s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid).get("Parts")
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid)

    # Raw, on the path the fast path would take for a plain PUT: refused all the same.
    r = raw_request(server, "PUT", f"/{bucket}/raw", body=b"x",
                    headers={"x-amz-server-side-encryption": "AES256"})
    assert r.status == 501 and r.error_code() == "NotImplemented", r
    assert b"x-amz-server-side-encryption" in r.body
    assert absent(s3, bucket, "raw")
    # Without the headers everything still works.
    assert s3.get_object(Bucket=bucket, Key="plain")["Body"].read() == b"plain text"


@pytest.fixture
def acl_buckets(s3):
    names = {acl: unique_bucket_name(acl.replace("-", "")[:8]) for acl in
             ("private", "public-read", "public-read-write")}
    for acl, name in names.items():
        s3.create_bucket(Bucket=name, ACL=acl)
    yield names
    for name in names.values():
        empty_bucket(s3, name)
        s3.delete_bucket(Bucket=name)


def test_object_acl_headers_that_would_differ_from_the_bucket_are_refused(server, s3, acl_buckets):
    owner = s3.list_buckets()["Owner"]["ID"]
    private, public, open_ = (acl_buckets[a] for a in ("private", "public-read", "public-read-write"))

    # The case: ACL=private into a public-read bucket would be readable anonymously.
    refused(lambda: s3.put_object(Bucket=public, Key="k", Body=b"not public", ACL="private"),
            501, "NotImplemented")
    assert absent(s3, public, "k")
    assert requests.get(f"{server.endpoint}/{public}/k", timeout=30).status_code == 404

    honoured = [
        (private, {"ACL": "private"}),
        (private, {"ACL": "bucket-owner-full-control"}),
        (private, {"ACL": "bucket-owner-read"}),
        (private, {"GrantFullControl": f'id="{owner}"'}),
        (public, {"ACL": "public-read"}),
        (public, {"GrantRead": ALL_USERS}),
        (open_, {"ACL": "public-read"}),
        (open_, {"ACL": "public-read-write"}),
    ]
    for n, (b, extra) in enumerate(honoured):
        s3.put_object(Bucket=b, Key=f"ok{n}", Body=b"honoured", **extra)
        s3.copy_object(Bucket=b, Key=f"copy{n}", CopySource=f"{b}/ok{n}", **extra)
        uid = s3.create_multipart_upload(Bucket=b, Key=f"mp{n}", **extra)["UploadId"]
        s3.abort_multipart_upload(Bucket=b, Key=f"mp{n}", UploadId=uid)
    r = requests.get(f"{server.endpoint}/{public}/ok4", timeout=30)
    assert r.status_code == 200 and r.content == b"honoured"
    assert requests.get(f"{server.endpoint}/{private}/ok0", timeout=30).status_code == 403

    differing = [
        (private, {"ACL": "public-read"}),
        (private, {"ACL": "public-read-write"}),
        (private, {"ACL": "authenticated-read"}),
        (private, {"GrantRead": ALL_USERS}),
        (private, {"GrantRead": 'id="someone-else"'}),
        (public, {"ACL": "private"}),
        (public, {"ACL": "bucket-owner-full-control"}),
        (public, {"GrantReadACP": ALL_USERS}),
        (open_, {"ACL": "private"}),
        (open_, {"ACL": "authenticated-read"}),
    ]
    for n, (b, extra) in enumerate(differing):
        refused(lambda: s3.put_object(Bucket=b, Key=f"no{n}", Body=b"x", **extra), 501, "NotImplemented")
        assert absent(s3, b, f"no{n}"), (b, extra)
        refused(lambda: s3.copy_object(Bucket=b, Key=f"no{n}", CopySource=f"{private}/ok0", **extra),
                501, "NotImplemented")
        refused(lambda: s3.create_multipart_upload(Bucket=b, Key=f"no{n}", **extra), 501, "NotImplemented")
        assert absent(s3, b, f"no{n}"), (b, extra)
    assert not s3.list_multipart_uploads(Bucket=private).get("Uploads")

    # Canned and grant headers together: InvalidRequest, as S3; an unknown canned ACL is invalid.
    refused(lambda: s3.put_object(Bucket=private, Key="both", Body=b"x", ACL="private",
                                  GrantFullControl=f'id="{owner}"'), 400, "InvalidRequest")
    refused(lambda: s3.put_object(Bucket=private, Key="bad", Body=b"x", ACL="no-such-acl"),
            400, "InvalidArgument")

    # Anonymous writers into a public-read-write bucket are checked the same way.
    r = requests.put(f"{server.endpoint}/{open_}/anon", data=b"a", headers={"x-amz-acl": "private"}, timeout=30)
    assert r.status_code == 501 and ET.fromstring(r.content).findtext("Code") == "NotImplemented"
    r = requests.put(f"{server.endpoint}/{open_}/anon", data=b"a", headers={"x-amz-acl": "public-read"}, timeout=30)
    assert r.status_code == 200, r.text


def test_bucket_grant_headers_are_refused(s3):
    name = unique_bucket_name("grants")
    refused(lambda: s3.create_bucket(Bucket=name, GrantRead=ALL_USERS), 501, "NotImplemented")
    assert name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    s3.create_bucket(Bucket=name)
    try:
        refused(lambda: s3.put_bucket_acl(Bucket=name, GrantRead=ALL_USERS), 501, "NotImplemented")
        grants = s3.get_bucket_acl(Bucket=name)["Grants"]
        assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    finally:
        s3.delete_bucket(Bucket=name)


def presign_v4(server, method: str, path: str, expires: str, query: dict | None = None) -> str:
    """A SigV4 presigned URL with any X-Amz-Expires text (SDKs refuse to make the bad ones)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, date = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{date}/{REGION}/s3/aws4_request"
    params = dict(query or {})
    params.update({
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{server.access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": expires,
        "X-Amz-SignedHeaders": "host",
    })
    quote = lambda s: urllib.parse.quote(s, safe="-_.~")
    canonical_query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(params.items()))
    host = f"127.0.0.1:{server.s3_port}"
    canonical = "\n".join([method, path, canonical_query, f"host:{host}\n", "host", "UNSIGNED-PAYLOAD"])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + server.secret_key).encode()
    for part in (date, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"http://{host}{path}?{canonical_query}&X-Amz-Signature={signature}"


def test_presigned_urls_beyond_a_week_or_negative_are_refused(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="pre", Body=b"presigned body")
    # Up to the limit they work: a plain GET, a PUT and a listing.
    r = requests.get(presign_v4(server, "GET", f"/{bucket}/pre", "604800"), timeout=30)
    assert r.status_code == 200 and r.content == b"presigned body", r.text
    r = requests.put(presign_v4(server, "PUT", f"/{bucket}/put", "3600"), data=b"via url", timeout=30)
    assert r.status_code == 200, r.text
    r = requests.get(presign_v4(server, "GET", f"/{bucket}", "60", {"list-type": "2"}), timeout=30)
    assert r.status_code == 200 and b"<Key>pre</Key>" in r.content, r.text
    for expires, message in (("604801", "less than a week"), (str(10**8), "less than a week"),
                             ("-1", "non-negative"), ("soon", "number")):
        r = requests.get(presign_v4(server, "GET", f"/{bucket}/pre", expires), timeout=30)
        assert r.status_code == 403, (expires, r.text)
        assert ET.fromstring(r.content).findtext("Code") == "AccessDenied", r.text
        assert message in ET.fromstring(r.content).findtext("Message"), r.text
        assert b"presigned body" not in r.content
        r = requests.put(presign_v4(server, "PUT", f"/{bucket}/late", expires), data=b"late", timeout=30)
        assert r.status_code == 403, (expires, r.text)
        r = requests.get(presign_v4(server, "GET", f"/{bucket}", expires, {"list-type": "2"}), timeout=30)
        assert r.status_code == 403, (expires, r.text)
    assert absent(s3, bucket, "late")


def test_a_refused_upload_leaves_the_connection_usable(server, bucket):
    """boto3 sends PutObject with `Expect: 100-continue` and, answered early, never sends the
    body: the answer must close the connection, or the next request's first bytes would be
    taken for that body (it failed with SignatureDoesNotMatch within a few rounds)."""
    s3 = server.client()
    for n in range(30):
        refused(lambda: s3.put_object(Bucket=bucket, Key=f"k{n}", Body=b"x", ACL="public-read"),
                501, "NotImplemented")
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
