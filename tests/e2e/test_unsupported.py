"""Requests the node cannot honour are refused in S3's error format, never accepted and ignored
(gateway/src/s3/unsupported.rs): server-side encryption headers, ACLs granting to AWS service
groups, presigned URLs valid for more
than 7 days or with a negative expiry, Object Lock, storage classes other than
STANDARD, website redirects, appends, version ids other than "null", conditional deletes and
aborts, object-level checksums of multipart uploads, bucket object ownership and directory-bucket
settings. What the node honours keeps working, and some settings that used to be ignored are now
honoured: x-amz-expected-bucket-owner (and the copy source's), If-Match/If-None-Match on
CopyObject, the response-* overrides of GetObject/HeadObject, ListBuckets pagination and
ListMultipartUploads' encoding-type.
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


def test_sse_s3_and_kms_are_not_implemented(server, s3, bucket):
    for key, extra in (
        ("sse-s3", {"ServerSideEncryption": "AES256"}),
        ("sse-kms", {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "key-1"}),
        ("sse-kms-ctx", {"ServerSideEncryption": "aws:kms", "SSEKMSEncryptionContext": base64.b64encode(b"{}").decode()}),
        ("sse-bucket-key", {"ServerSideEncryption": "aws:kms", "BucketKeyEnabled": True}),
    ):
        refused(lambda: s3.put_object(Bucket=bucket, Key=key, Body=b"secret", **extra), 501, "NotImplemented")
        assert absent(s3, bucket, key), key
        refused(lambda: s3.create_multipart_upload(Bucket=bucket, Key=key, **extra), 501, "NotImplemented")
        assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), key

    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain text")
    # An SSE-C key for an object stored as sent would claim a decryption that never happens
    # (SSE-C itself: test_sse_c.py).
    refused(lambda: s3.get_object(Bucket=bucket, Key="plain", **sse_c()), 400, "InvalidRequest")
    refused(lambda: s3.head_object(Bucket=bucket, Key="plain", **sse_c()), 400, "400")
    refused(lambda: s3.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/plain",
                                   CopySourceSSECustomerAlgorithm="AES256",
                                   CopySourceSSECustomerKey=SSE_C_KEY), 400, "InvalidRequest")
    refused(lambda: s3.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/plain",
                                   ServerSideEncryption="AES256"), 501, "NotImplemented")
    assert absent(s3, bucket, "copy")
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    refused(lambda: s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=b"p", **sse_c()),
            400, "InvalidRequest")
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
        refused(lambda: s3.put_object(Bucket=bucket, Key=f"k{n}", Body=b"x", ACL="aws-exec-read"),
                501, "NotImplemented")
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# -- object settings the node has no place for --------------------------------------------------


def test_object_lock_is_refused_as_on_a_bucket_without_it(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    for extra in ({"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until},
                  {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until},
                  {"ObjectLockLegalHoldStatus": "ON"}):
        e = refused(lambda: s3.put_object(Bucket=bucket, Key="locked", Body=b"x", **extra), 400, "InvalidRequest")
        assert "Object Lock" in e.response["Error"]["Message"], e.response
        refused(lambda: s3.copy_object(Bucket=bucket, Key="locked", CopySource=f"{bucket}/src", **extra),
                400, "InvalidRequest")
        refused(lambda: s3.create_multipart_upload(Bucket=bucket, Key="locked", **extra), 400, "InvalidRequest")
    assert absent(s3, bucket, "locked")
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")

    name = unique_bucket_name("lock")
    refused(lambda: s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True), 501, "NotImplemented")
    assert name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=False)
    s3.delete_bucket(Bucket=name)


def test_only_the_standard_storage_class_is_taken(server, s3, bucket, aws, s3cmd, tmp_path):
    s3.put_object(Bucket=bucket, Key="std", Body=b"standard", StorageClass="STANDARD")
    s3.copy_object(Bucket=bucket, Key="std-copy", CopySource=f"{bucket}/std", StorageClass="STANDARD")
    uid = s3.create_multipart_upload(Bucket=bucket, Key="std-mp", StorageClass="STANDARD")["UploadId"]
    s3.abort_multipart_upload(Bucket=bucket, Key="std-mp", UploadId=uid)
    for cls in ("REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER",
                "GLACIER_IR", "DEEP_ARCHIVE", "EXPRESS_ONEZONE"):
        e = refused(lambda: s3.put_object(Bucket=bucket, Key="cold", Body=b"x", StorageClass=cls),
                    501, "NotImplemented")
        assert cls in e.response["Error"]["Message"], e.response
        refused(lambda: s3.copy_object(Bucket=bucket, Key="cold", CopySource=f"{bucket}/std", StorageClass=cls),
                501, "NotImplemented")
        refused(lambda: s3.create_multipart_upload(Bucket=bucket, Key="cold", StorageClass=cls),
                501, "NotImplemented")
    assert absent(s3, bucket, "cold")
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    r = raw_request(server, "PUT", f"/{bucket}/odd", body=b"x", headers={"x-amz-storage-class": "FASTEST"})
    assert r.status == 400 and r.error_code() == "InvalidStorageClass", r
    assert absent(s3, bucket, "odd")

    # s3cmd sends x-amz-storage-class: STANDARD with every upload; the CLIs send a class when asked.
    f = tmp_path / "f.txt"
    f.write_bytes(b"from a client")
    s3cmd("put", str(f), f"s3://{bucket}/s3cmd-default")
    # s3cmd retries an upload answered with any 5xx (3 + 6 + … seconds): once is enough here.
    res = s3cmd("put", "--max-retries=1", "--storage-class=STANDARD_IA", str(f), f"s3://{bucket}/s3cmd-ia",
                check=False)
    assert res.returncode != 0 and "NotImplemented" in res.stdout + res.stderr, res
    aws("s3", "cp", str(f), f"s3://{bucket}/aws-standard", "--storage-class", "STANDARD")
    res = aws("s3", "cp", str(f), f"s3://{bucket}/aws-glacier", "--storage-class", "GLACIER", check=False)
    assert res.returncode != 0 and "NotImplemented" in res.stdout + res.stderr, res
    assert absent(s3, bucket, "s3cmd-ia") and absent(s3, bucket, "aws-glacier")
    assert s3.get_object(Bucket=bucket, Key="aws-standard")["Body"].read() == b"from a client"


def test_website_redirects_and_appends_are_not_implemented(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    refused(lambda: s3.put_object(Bucket=bucket, Key="r", Body=b"x", WebsiteRedirectLocation="/elsewhere"),
            501, "NotImplemented")
    refused(lambda: s3.copy_object(Bucket=bucket, Key="r", CopySource=f"{bucket}/src", MetadataDirective="REPLACE",
                                   WebsiteRedirectLocation="/elsewhere"), 501, "NotImplemented")
    refused(lambda: s3.create_multipart_upload(Bucket=bucket, Key="r", WebsiteRedirectLocation="/elsewhere"),
            501, "NotImplemented")
    assert absent(s3, bucket, "r")
    # An append (x-amz-write-offset-bytes) would otherwise replace the object with the appended bytes.
    refused(lambda: s3.put_object(Bucket=bucket, Key="src", Body=b" and more", WriteOffsetBytes=6),
            501, "NotImplemented")
    r = raw_request(server, "PUT", f"/{bucket}/src", body=b"!", headers={"x-amz-write-offset-bytes": "6"})
    assert r.status == 501 and r.error_code() == "NotImplemented", r
    assert s3.get_object(Bucket=bucket, Key="src")["Body"].read() == b"source"


def test_checksums_the_node_does_not_compute_are_not_implemented(server, s3, bucket):
    for name in ("md5", "sha512", "xxhash64", "xxhash3", "xxhash128"):
        r = raw_request(server, "PUT", f"/{bucket}/sum", body=b"x", headers={f"x-amz-checksum-{name}": "AAAAAAAAAAA="})
        assert r.status == 501 and r.error_code() == "NotImplemented", (name, r)
        assert f"x-amz-checksum-{name}".encode() in r.body, r
    r = raw_request(server, "PUT", f"/{bucket}/sum", body=b"x", headers={"x-amz-sdk-checksum-algorithm": "SHA512"})
    assert r.status == 501 and r.error_code() == "NotImplemented", r
    assert absent(s3, bucket, "sum")
    # What it computes keeps working.
    s3.put_object(Bucket=bucket, Key="sum", Body=b"x", ChecksumAlgorithm="SHA256")


# -- conditions and owners ----------------------------------------------------------------------


def test_expected_bucket_owners_are_checked(s3, bucket):
    owner = s3.list_buckets()["Owner"]["ID"]
    other = "123456789012"
    s3.put_object(Bucket=bucket, Key="k", Body=b"mine", ExpectedBucketOwner=owner)
    assert s3.get_object(Bucket=bucket, Key="k", ExpectedBucketOwner=owner)["Body"].read() == b"mine"
    s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=owner)
    assert s3.list_objects_v2(Bucket=bucket, ExpectedBucketOwner=owner)["KeyCount"] == 1

    refused(lambda: s3.put_object(Bucket=bucket, Key="o", Body=b"x", ExpectedBucketOwner=other), 403, "AccessDenied")
    refused(lambda: s3.get_object(Bucket=bucket, Key="k", ExpectedBucketOwner=other), 403, "AccessDenied")
    refused(lambda: s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=other), 403, "403")
    refused(lambda: s3.list_objects_v2(Bucket=bucket, ExpectedBucketOwner=other), 403, "AccessDenied")
    refused(lambda: s3.delete_object(Bucket=bucket, Key="k", ExpectedBucketOwner=other), 403, "AccessDenied")
    refused(lambda: s3.create_multipart_upload(Bucket=bucket, Key="o", ExpectedBucketOwner=other),
            403, "AccessDenied")
    assert absent(s3, bucket, "o") and not absent(s3, bucket, "k")

    s3.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/k", ExpectedBucketOwner=owner,
                   ExpectedSourceBucketOwner=owner)
    refused(lambda: s3.copy_object(Bucket=bucket, Key="copy2", CopySource=f"{bucket}/k",
                                   ExpectedSourceBucketOwner=other), 403, "AccessDenied")
    assert absent(s3, bucket, "copy2")
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    refused(lambda: s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1,
                                        CopySource=f"{bucket}/k", ExpectedSourceBucketOwner=other),
            403, "AccessDenied")
    assert not s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid).get("Parts")
    s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, CopySource=f"{bucket}/k",
                        ExpectedSourceBucketOwner=owner)
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid)


def test_requester_pays_acknowledgement_is_taken(server, s3, bucket):
    # Nobody is charged for requests, so a requester's consent to pay changes nothing.
    s3.put_object(Bucket=bucket, Key="k", Body=b"paid", RequestPayer="requester")
    assert s3.get_object(Bucket=bucket, Key="k", RequestPayer="requester")["Body"].read() == b"paid"
    r = raw_request(server, "GET", f"/{bucket}/k", headers={"x-amz-request-payer": "bucket-owner"})
    assert r.status == 400 and r.error_code() == "InvalidArgument", r


def test_copy_object_destination_conditions_are_honoured(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"new")
    old = s3.put_object(Bucket=bucket, Key="dst", Body=b"old")["ETag"]
    refused(lambda: s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", IfNoneMatch="*"),
            412, "PreconditionFailed")
    refused(lambda: s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src",
                                   IfMatch='"0123456789abcdef0123456789abcdef"'), 412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"old"
    refused(lambda: s3.copy_object(Bucket=bucket, Key="missing", CopySource=f"{bucket}/src", IfMatch=old),
            404, "NoSuchKey")
    assert absent(s3, bucket, "missing")
    s3.copy_object(Bucket=bucket, Key="fresh", CopySource=f"{bucket}/src", IfNoneMatch="*")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", IfMatch=old)
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"new"
    assert s3.get_object(Bucket=bucket, Key="fresh")["Body"].read() == b"new"


def test_version_ids_other_than_null_are_invalid(s3, bucket):
    s3.put_object(Bucket=bucket, Key="v", Body=b"the only version")
    bogus = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
    assert s3.get_object(Bucket=bucket, Key="v", VersionId="null")["Body"].read() == b"the only version"
    s3.head_object(Bucket=bucket, Key="v", VersionId="null")
    refused(lambda: s3.get_object(Bucket=bucket, Key="v", VersionId=bogus), 400, "InvalidArgument")
    refused(lambda: s3.head_object(Bucket=bucket, Key="v", VersionId=bogus), 400, "400")
    refused(lambda: s3.delete_object(Bucket=bucket, Key="v", VersionId=bogus), 400, "InvalidArgument")
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "v", "VersionId": bogus}]})
    assert [e["Code"] for e in out.get("Errors", [])] == ["InvalidArgument"], out
    assert not out.get("Deleted"), out
    assert not absent(s3, bucket, "v")
    refused(lambda: s3.list_object_versions(Bucket=bucket, KeyMarker="v", VersionIdMarker=bogus),
            400, "InvalidArgument")
    refused(lambda: s3.list_object_versions(Bucket=bucket, VersionIdMarker="null"), 400, "InvalidArgument")
    s3.list_object_versions(Bucket=bucket, KeyMarker="v", VersionIdMarker="null")
    s3.put_object(Bucket=bucket, Key="w", Body=b"w")
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "w", "VersionId": "null"},
                                                              {"Key": "v", "VersionId": bogus}]})
    assert [d["Key"] for d in out["Deleted"]] == ["w"] and [e["Key"] for e in out["Errors"]] == ["v"], out
    s3.delete_object(Bucket=bucket, Key="v", VersionId="null")
    assert absent(s3, bucket, "v") and absent(s3, bucket, "w")


def test_conditional_deletes_and_aborts_are_not_implemented(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"abc")["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    refused(lambda: s3.delete_object(Bucket=bucket, Key="c", IfMatch=etag), 501, "NotImplemented")
    refused(lambda: s3.delete_object(Bucket=bucket, Key="c", IfMatchSize=3), 501, "NotImplemented")
    refused(lambda: s3.delete_object(Bucket=bucket, Key="c", IfMatchLastModifiedTime=modified),
            501, "NotImplemented")
    for cond in ({"ETag": etag}, {"Size": 3}, {"LastModifiedTime": modified}):
        out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "c", **cond}]})
        assert [e["Code"] for e in out.get("Errors", [])] == ["NotImplemented"], (cond, out)
    assert not absent(s3, bucket, "c")
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    initiated = s3.list_multipart_uploads(Bucket=bucket)["Uploads"][0]["Initiated"]
    refused(lambda: s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, IfMatchInitiatedTime=initiated),
            501, "NotImplemented")
    assert s3.list_multipart_uploads(Bucket=bucket)["Uploads"][0]["UploadId"] == uid
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid)


# -- reads ---------------------------------------------------------------------------------------


def test_response_header_overrides_are_honoured(server, s3):
    name = unique_bucket_name("overrides")
    s3.create_bucket(Bucket=name, ACL="public-read")
    try:
        s3.put_object(Bucket=name, Key="doc", Body=b"body", ContentType="application/octet-stream",
                      ACL="public-read")
        overrides = {
            "ResponseContentType": "text/plain",
            "ResponseContentDisposition": 'attachment; filename="doc.txt"',
            "ResponseCacheControl": "no-cache",
            "ResponseContentEncoding": "identity",
            "ResponseContentLanguage": "fr",
            "ResponseExpires": datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc),
        }
        want = {
            "content-type": "text/plain",
            "content-disposition": 'attachment; filename="doc.txt"',
            "cache-control": "no-cache",
            "content-encoding": "identity",
            "content-language": "fr",
            "expires": "Tue, 01 Jan 2030 00:00:00 GMT",
        }
        got = s3.get_object(Bucket=name, Key="doc", **overrides)
        assert got["Body"].read() == b"body"
        headers = got["ResponseMetadata"]["HTTPHeaders"]
        assert {k: headers.get(k) for k in want} == want, headers
        headers = s3.head_object(Bucket=name, Key="doc", **overrides)["ResponseMetadata"]["HTTPHeaders"]
        assert {k: headers.get(k) for k in want} == want, headers
        # The stored headers are unchanged.
        assert s3.get_object(Bucket=name, Key="doc")["ContentType"] == "application/octet-stream"
        url = s3.generate_presigned_url("get_object", Params={"Bucket": name, "Key": "doc",
                                                              "ResponseContentDisposition": "attachment"})
        r = requests.get(url, timeout=30)
        assert r.status_code == 200 and r.headers["content-disposition"] == "attachment", r.text
        # As in S3, an anonymous request may not choose response headers.
        r = requests.get(f"{server.endpoint}/{name}/doc", params={"response-content-type": "text/html"}, timeout=30)
        assert r.status_code == 400 and ET.fromstring(r.content).findtext("Code") == "InvalidRequest", r.text
        assert requests.get(f"{server.endpoint}/{name}/doc", timeout=30).content == b"body"
    finally:
        empty_bucket(s3, name)
        s3.delete_bucket(Bucket=name)


def test_listing_options_are_honoured_or_refused(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    # Objects in STANDARD have no restore status to report: asking for it is answered.
    s3.list_objects_v2(Bucket=bucket, OptionalObjectAttributes=["RestoreStatus"])
    r = raw_request(server, "GET", f"/{bucket}", query={"list-type": "2"},
                    headers={"x-amz-optional-object-attributes": "Owner"})
    assert r.status == 400 and r.error_code() == "InvalidArgument", r

    key = "dir/a b+c%d"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        r = raw_request(server, "GET", f"/{bucket}", query={"uploads": "", "encoding-type": "url", "prefix": "dir/a b"})
        assert r.status == 200, r
        assert b"<Key>dir/a%20b%2Bc%25d</Key>" in r.body and b"<Prefix>dir/a%20b</Prefix>" in r.body, r
        assert b"<EncodingType>url</EncodingType>" in r.body, r
        r = raw_request(server, "GET", f"/{bucket}", query={"uploads": "", "encoding-type": "base64"})
        assert r.status == 400 and r.error_code() == "InvalidArgument", r
        assert s3.list_multipart_uploads(Bucket=bucket)["Uploads"][0]["Key"] == key
    finally:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)


def test_list_buckets_pages_and_filters_by_region(server, s3):
    prefix = unique_bucket_name("pages")
    names = [f"{prefix}-{i}" for i in range(3)]
    for name in names:
        s3.create_bucket(Bucket=name)
    try:
        page = s3.list_buckets(Prefix=prefix, MaxBuckets=2)
        assert [b["Name"] for b in page["Buckets"]] == names[:2] and page.get("ContinuationToken"), page
        rest = s3.list_buckets(Prefix=prefix, MaxBuckets=2, ContinuationToken=page["ContinuationToken"])
        assert [b["Name"] for b in rest["Buckets"]] == names[2:] and not rest.get("ContinuationToken"), rest
        pages = s3.get_paginator("list_buckets").paginate(Prefix=prefix, PaginationConfig={"PageSize": 1})
        assert [b["Name"] for p in pages for b in p["Buckets"]] == names
        assert [b["Name"] for b in s3.list_buckets(Prefix=prefix, BucketRegion=REGION)["Buckets"]] == names
        assert s3.list_buckets(Prefix=prefix, BucketRegion="eu-west-3")["Buckets"] == []
        for bad in ("0", "10001", "many"):
            r = raw_request(server, "GET", "/", query={"max-buckets": bad})
            assert r.status == 400 and r.error_code() == "InvalidArgument", (bad, r)
    finally:
        for name in names:
            s3.delete_bucket(Bucket=name)


# -- buckets -------------------------------------------------------------------------------------


def test_bucket_settings_the_node_lacks_are_not_implemented(server, s3):
    name = unique_bucket_name("settings")
    for ownership in ("BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter"):
        refused(lambda: s3.create_bucket(Bucket=name, ObjectOwnership=ownership), 501, "NotImplemented")
    directory = (b"<CreateBucketConfiguration><Location><Type>AvailabilityZone</Type><Name>usw2-az1</Name>"
                 b"</Location><Bucket><DataRedundancy>SingleAvailabilityZone</DataRedundancy>"
                 b"<Type>Directory</Type></Bucket></CreateBucketConfiguration>")
    r = raw_request(server, "PUT", f"/{name}", body=directory)
    assert r.status == 501 and r.error_code() == "NotImplemented", r
    assert name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}

    s3.create_bucket(Bucket=name)
    try:
        owner = s3.list_buckets()["Owner"]["ID"]
        policy = (f'<AccessControlPolicy><Owner><ID>{owner}</ID></Owner><AccessControlList><Grant>'
                  f'<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">'
                  f'<ID>{owner}</ID></Grantee><Permission>FULL_CONTROL</Permission></Grant>'
                  f'</AccessControlList></AccessControlPolicy>').encode()
        r = raw_request(server, "PUT", f"/{name}", query={"acl": ""}, headers={"x-amz-acl": "public-read"},
                        body=policy)
        assert r.status == 400 and r.error_code() == "UnexpectedContent", r
        assert [g["Permission"] for g in s3.get_bucket_acl(Bucket=name)["Grants"]] == ["FULL_CONTROL"]
    finally:
        s3.delete_bucket(Bucket=name)
