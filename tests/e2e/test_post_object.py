"""POST object (browser form uploads), from the S3 API reference's "POST Object" and "Browser-based
uploads using POST": policies signed with SigV4 (boto3's generate_presigned_post), `${filename}`
in the key, success_action_status and success_action_redirect with the quoted ETag, policy
conditions that fail (403 AccessDenied), a malformed policy expiration (400), an expired policy,
and anonymous uploads to a public-read-write bucket (and not to a private one)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import urllib.parse

import requests

from conftest import unique_bucket_name
from leofs_harness import REGION


def post(url, fields, name="hello.txt", body=b"hello post", **kw):
    return requests.post(url, data=fields, files={"file": (name, body)}, timeout=30, **kw)


def signed_fields(server, bucket, policy: dict) -> dict:
    """Form fields for `policy`, signed with SigV4 by hand (so that a malformed one is signed)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    date = now.strftime("%Y%m%d")
    credential = f"{server.access_key}/{date}/{REGION}/s3/aws4_request"
    policy = dict(policy, conditions=[*policy.get("conditions", []), {"bucket": bucket},
                                      {"x-amz-algorithm": "AWS4-HMAC-SHA256"}, {"x-amz-credential": credential},
                                      {"x-amz-date": now.strftime("%Y%m%dT%H%M%SZ")}])
    encoded = base64.b64encode(json.dumps(policy).encode()).decode()
    key = ("AWS4" + server.secret_key).encode()
    for part in (date, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return {"policy": encoded, "x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-credential": credential,
            "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"),
            "x-amz-signature": hmac.new(key, encoded.encode(), hashlib.sha256).hexdigest()}


def test_signed_form_uploads(server, s3, bucket):
    form = s3.generate_presigned_post(
        bucket, "uploads/${filename}", Fields={"success_action_status": "201"},
        Conditions=[["starts-with", "$key", "uploads/"], {"success_action_status": "201"},
                    ["content-length-range", 1, 100]], ExpiresIn=60)
    r = post(form["url"], form["fields"], name="cat photo.txt")
    assert r.status_code == 201, r.text
    etag = f'"{hashlib.md5(b"hello post").hexdigest()}"'
    assert f"<Key>uploads/cat photo.txt</Key>" in r.text and f"<ETag>{etag}</ETag>" in r.text
    got = s3.get_object(Bucket=bucket, Key="uploads/cat photo.txt")
    assert got["Body"].read() == b"hello post" and got["ETag"] == etag
    # A binary file (its bytes in the read-ahead are no text) named with a path: its last
    # segment goes into the key.
    jpeg = bytes([0xFF, 0xD8, 0xFF, 0xE0]) + bytes(range(256)) * 4
    r = post(form["url"], form["fields"], name="C:\\photos\\cat.jpg", body=jpeg[:100])
    assert r.status_code == 201 and "<Key>uploads/cat.jpg</Key>" in r.text, r.text
    assert s3.get_object(Bucket=bucket, Key="uploads/cat.jpg")["Body"].read() == jpeg[:100]
    # The policy's conditions hold or the upload is refused, and nothing is stored.
    assert post(form["url"], form["fields"], body=b"x" * 200).status_code == 400
    wrong_key = dict(form["fields"], key="elsewhere/${filename}")
    r = post(form["url"], wrong_key)
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
    assert "elsewhere/hello.txt" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    # A redirect carries the bucket, the key and the quoted ETag.
    form = s3.generate_presigned_post(bucket, "redirected", Fields={"success_action_redirect": "http://example.com/done"},
                                      Conditions=[{"success_action_redirect": "http://example.com/done"}], ExpiresIn=60)
    r = post(form["url"], form["fields"], allow_redirects=False)
    assert r.status_code == 303
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(r.headers["location"]).query)
    assert query == {"bucket": [bucket], "key": ["redirected"], "etag": [etag]}
    # Without a status asked for, 204.
    form = s3.generate_presigned_post(bucket, "plain", ExpiresIn=60)
    assert post(form["url"], form["fields"]).status_code == 204


def test_policies_that_are_expired_or_malformed(server, s3, bucket):
    form = s3.generate_presigned_post(bucket, "late", ExpiresIn=-10)
    r = post(form["url"], form["fields"])
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
    url = f"{server.endpoint}/{bucket}"
    fields = signed_fields(server, bucket, {"expiration": "not a date", "conditions": [["starts-with", "$key", ""]]})
    r = post(url, {"key": "bad", **fields})
    assert r.status_code == 400, r.text
    soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z")
    fields = signed_fields(server, bucket, {"expiration": soon, "conditions": [["starts-with", "$key", ""]]})
    assert post(url, {"key": "good", **fields}).status_code == 204
    assert s3.get_object(Bucket=bucket, Key="good")["Body"].read() == b"hello post"
    tampered = dict(fields, **{"x-amz-signature": "0" * 64})
    assert post(url, {"key": "tampered", **tampered}).status_code == 403


def test_anonymous_form_uploads_need_a_public_write_bucket(server, s3):
    public, private = unique_bucket_name("post-pub"), unique_bucket_name("post-priv")
    s3.create_bucket(Bucket=public, ACL="public-read-write")
    s3.create_bucket(Bucket=private)
    r = post(f"{server.endpoint}/{public}", {"key": "anon/${filename}"}, name="a.txt", body=b"anon")
    assert r.status_code == 204, r.text
    assert s3.get_object(Bucket=public, Key="anon/a.txt")["Body"].read() == b"anon"
    r = post(f"{server.endpoint}/{private}", {"key": "anon.txt"}, body=b"anon")
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
    s3.delete_object(Bucket=public, Key="anon/a.txt")
    s3.delete_bucket(Bucket=public)
    s3.delete_bucket(Bucket=private)
