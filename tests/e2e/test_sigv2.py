"""Signature Version 2 (header and query), as LeoFS took it, for older clients: boto3 signing
with `s3` (HMAC-SHA1), including bucket-level requests (signed as `/bucket/` whatever path is
sent, as S3 takes them), presigned URLs with an absolute `Expires`, and refusals."""

from __future__ import annotations

import requests

from leofs_harness import error_of


def v2_client(server, secret: str | None = None):
    """A boto3 client signing with SigV2 (`s3`), with the server's keys or another secret."""
    return server.client(server.access_key, secret or server.secret_key, signature_version="s3")


def test_sigv2_bucket_and_object_requests(server):
    s3 = v2_client(server)
    s3.create_bucket(Bucket="sigv2-bucket")
    try:
        s3.put_object(Bucket="sigv2-bucket", Key="a b+c", Body=b"hello v2", ContentType="text/plain",
                      Metadata={"color": "blue"})
        got = s3.get_object(Bucket="sigv2-bucket", Key="a b+c")
        assert got["Body"].read() == b"hello v2" and got["Metadata"] == {"color": "blue"}
        assert [o["Key"] for o in s3.list_objects(Bucket="sigv2-bucket")["Contents"]] == ["a b+c"]
        assert s3.list_objects_v2(Bucket="sigv2-bucket", Prefix="a")["KeyCount"] == 1
        assert s3.get_bucket_acl(Bucket="sigv2-bucket")["Owner"]["ID"]
        assert "Status" not in s3.get_bucket_versioning(Bucket="sigv2-bucket")
        s3.put_bucket_tagging(Bucket="sigv2-bucket", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
        assert s3.get_bucket_tagging(Bucket="sigv2-bucket")["TagSet"] == [{"Key": "k", "Value": "v"}]
        uid = s3.create_multipart_upload(Bucket="sigv2-bucket", Key="mp")["UploadId"]
        etag = s3.upload_part(Bucket="sigv2-bucket", Key="mp", UploadId=uid, PartNumber=1, Body=b"part")["ETag"]
        s3.complete_multipart_upload(Bucket="sigv2-bucket", Key="mp", UploadId=uid,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
        assert s3.get_object(Bucket="sigv2-bucket", Key="mp")["Body"].read() == b"part"
        deleted = s3.delete_objects(Bucket="sigv2-bucket", Delete={"Objects": [{"Key": "a b+c"}, {"Key": "mp"}]})
        assert len(deleted["Deleted"]) == 2
    finally:
        server.client().delete_bucket(Bucket="sigv2-bucket")


def test_sigv2_presigned_urls_and_refusals(server):
    s3 = v2_client(server)
    s3.create_bucket(Bucket="sigv2-presigned")
    try:
        s3.put_object(Bucket="sigv2-presigned", Key="k", Body=b"shared")
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "sigv2-presigned", "Key": "k"},
                                        ExpiresIn=60)
        assert "AWSAccessKeyId=" in url and "Signature=" in url
        r = requests.get(url, timeout=10)
        assert r.status_code == 200 and r.content == b"shared"
        expired = s3.generate_presigned_url("get_object", Params={"Bucket": "sigv2-presigned", "Key": "k"},
                                            ExpiresIn=-10)
        assert requests.get(expired, timeout=10).status_code == 403
        tampered = url.replace("/k?", "/other?")
        assert requests.get(tampered, timeout=10).status_code == 403
        bad = v2_client(server, secret="not-the-secret")
        assert error_of(lambda: bad.get_object(Bucket="sigv2-presigned", Key="k")) == (403, "SignatureDoesNotMatch")
        assert error_of(lambda: bad.list_objects(Bucket="sigv2-presigned")) == (403, "SignatureDoesNotMatch")
    finally:
        s3.delete_object(Bucket="sigv2-presigned", Key="k")
        s3.delete_bucket(Bucket="sigv2-presigned")
