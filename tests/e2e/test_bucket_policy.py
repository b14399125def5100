"""Bucket policies (issue 17), written from the S3 API reference and the IAM policy language: Put/Get/
DeleteBucketPolicy and GetBucketPolicyStatus with S3's errors; Allow and Deny to anyone and to
users; actions with wildcards; resource prefixes; the s3:prefix and aws:SourceIp conditions; S3's
order (an explicit deny refuses even the owner, except for the policy itself; an allow admits
anyone); and what cannot be evaluated refused when it is put. Two users and anonymous requests,
through boto3 (signed: the fast path for plain GET/PUT/HEAD, s3s otherwise) and raw HTTP, against
the shared server, and on a cluster through two gateways."""

from __future__ import annotations

import json
import uuid

import pytest
import requests
from botocore import UNSIGNED

from leofs_harness import DEPLOYMENT, error_of, raw_request, make_user
from test_cluster import Cluster, eventually


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.fixture
def owned(server):
    """(server, alice's client, alice's bucket, bob's name, bob's client): alice is a plain user."""
    _, alice = make_user(server, "alice")
    bob_name, bob = make_user(server, "bob")
    bucket = f"pol-{uuid.uuid4().hex[:12]}"
    alice.create_bucket(Bucket=bucket)
    yield server, alice, bucket, bob_name, bob
    alice.delete_bucket_policy(Bucket=bucket)
    for obj in alice.list_objects_v2(Bucket=bucket).get("Contents", []):
        alice.delete_object(Bucket=bucket, Key=obj["Key"])
    alice.delete_bucket(Bucket=bucket)


def anonymous(server, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, f"{server.endpoint}{path}", timeout=10, **kw)


def test_policy_documents_and_errors(owned):
    server, alice, bucket, bob_name, bob = owned
    assert error_of(lambda: alice.get_bucket_policy(Bucket=bucket)) == (404, "NoSuchBucketPolicy")
    assert error_of(lambda: alice.get_bucket_policy_status(Bucket=bucket)) == (404, "NoSuchBucketPolicy")
    doc = policy({"Sid": "read", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                  "Resource": f"arn:aws:s3:::{bucket}/public/*"})
    alice.put_bucket_policy(Bucket=bucket, Policy=doc)
    assert alice.get_bucket_policy(Bucket=bucket)["Policy"] == doc
    assert alice.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is True
    # Only the owner reads or changes the policy (no policy can grant that to anyone else).
    assert error_of(lambda: bob.get_bucket_policy(Bucket=bucket)) == (403, "AccessDenied")
    assert error_of(lambda: bob.put_bucket_policy(Bucket=bucket, Policy=doc)) == (403, "AccessDenied")
    assert error_of(lambda: bob.delete_bucket_policy(Bucket=bucket)) == (403, "AccessDenied")
    stmt = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    for what, document, code in [
        ("not JSON", "{", "MalformedPolicy"),
        ("no statement", json.dumps({"Version": "2012-10-17"}), "MalformedPolicy"),
        ("a bad effect", policy({**stmt, "Effect": "Maybe"}), "MalformedPolicy"),
        ("an unknown action", policy({**stmt, "Action": "s3:Teleport"}), "MalformedPolicy"),
        ("another bucket", policy({**stmt, "Resource": "arn:aws:s3:::someone-else/*"}), "MalformedPolicy"),
        ("an object action on the bucket", policy({**stmt, "Resource": f"arn:aws:s3:::{bucket}"}), "MalformedPolicy"),
        ("an unknown user", policy({**stmt, "Principal": {"AWS": "nobody-here"}}), "MalformedPolicy"),
        ("a bad address range", policy({**stmt, "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}}),
         "MalformedPolicy"),
        ("over 20 KB", policy(*[stmt] * 200), "MalformedPolicy"),
        ("a policy variable", policy({**stmt, "Resource": f"arn:aws:s3:::{bucket}/${{aws:username}}/*"}),
         "NotImplemented"),
        ("NotPrincipal", policy({**{k: v for k, v in stmt.items() if k != "Principal"},
                                 "NotPrincipal": {"AWS": bob_name}}), "NotImplemented"),
        ("a condition key it cannot evaluate",
         policy({**stmt, "Condition": {"StringEquals": {"s3:ExistingObjectTag/team": "x"}}}), "NotImplemented"),
        ("a condition operator it cannot evaluate",
         policy({**stmt, "Condition": {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}}}),
         "NotImplemented"),
    ]:
        status, got = error_of(lambda: alice.put_bucket_policy(Bucket=bucket, Policy=document))
        assert got == code and status == (501 if code == "NotImplemented" else 400), what
    assert alice.get_bucket_policy(Bucket=bucket)["Policy"] == doc, "a refused policy changes nothing"
    private = policy({"Effect": "Allow", "Principal": {"AWS": [bob_name]}, "Action": "s3:GetObject",
                      "Resource": f"arn:aws:s3:::{bucket}/*"})
    alice.put_bucket_policy(Bucket=bucket, Policy=private)
    assert alice.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is False
    alice.delete_bucket_policy(Bucket=bucket)
    assert error_of(lambda: alice.get_bucket_policy(Bucket=bucket)) == (404, "NoSuchBucketPolicy")


def test_allow_to_anyone_on_a_prefix(owned):
    server, alice, bucket, _, bob = owned
    alice.put_object(Bucket=bucket, Key="public/a.txt", Body=b"open")
    alice.put_object(Bucket=bucket, Key="private/b.txt", Body=b"closed")
    assert anonymous(server, "GET", f"/{bucket}/public/a.txt").status_code == 403
    alice.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
         "Resource": [f"arn:aws:s3:::{bucket}/public/*"]}))
    r = anonymous(server, "GET", f"/{bucket}/public/a.txt")
    assert (r.status_code, r.content) == (200, b"open")
    assert anonymous(server, "HEAD", f"/{bucket}/public/a.txt").status_code == 200
    assert bob.get_object(Bucket=bucket, Key="public/a.txt")["Body"].read() == b"open"  # fast path
    assert error_of(lambda: bob.get_object(Bucket=bucket, Key="private/b.txt")) == (403, "AccessDenied")
    r = anonymous(server, "GET", f"/{bucket}/private/b.txt")
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
    # GetObject grants neither listing nor writing.
    assert anonymous(server, "GET", f"/{bucket}?list-type=2").status_code == 403
    assert anonymous(server, "PUT", f"/{bucket}/public/new", data=b"x").status_code == 403
    assert error_of(lambda: bob.put_object(Bucket=bucket, Key="public/new", Body=b"x")) == (403, "AccessDenied")
    # A copy reads its source as a GetObject of it by the copier.
    bob_bucket = f"pol-bob-{uuid.uuid4().hex[:8]}"
    bob.create_bucket(Bucket=bob_bucket)
    try:
        bob.copy_object(Bucket=bob_bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "public/a.txt"})
        assert error_of(lambda: bob.copy_object(
            Bucket=bob_bucket, Key="copy2", CopySource={"Bucket": bucket, "Key": "private/b.txt"})) == (
            403, "AccessDenied")
    finally:
        bob.delete_object(Bucket=bob_bucket, Key="copy")
        bob.delete_bucket(Bucket=bob_bucket)


def test_user_grants_wildcards_and_the_prefix_condition(owned):
    server, alice, bucket, bob_name, bob = owned
    alice.put_object(Bucket=bucket, Key="home/bob/notes", Body=b"n")
    alice.put_object(Bucket=bucket, Key="home/carol/notes", Body=b"c")
    alice.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Sid": "list-home", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::000000000000:user/{bob_name}"},
         "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": ["home/bob/*"]}}},
        {"Sid": "own-home", "Effect": "Allow", "Principal": {"AWS": [bob_name]},
         "Action": ["s3:Get*", "s3:PutObject", "s3:DeleteObject"], "Resource": f"arn:aws:s3:::{bucket}/home/bob/*"}))
    listed = bob.list_objects_v2(Bucket=bucket, Prefix="home/bob/")
    assert [o["Key"] for o in listed["Contents"]] == ["home/bob/notes"]
    assert error_of(lambda: bob.list_objects_v2(Bucket=bucket)) == (403, "AccessDenied")
    assert error_of(lambda: bob.list_objects_v2(Bucket=bucket, Prefix="home/carol/")) == (403, "AccessDenied")
    bob.put_object(Bucket=bucket, Key="home/bob/new", Body=b"mine")
    assert bob.get_object(Bucket=bucket, Key="home/bob/new")["Body"].read() == b"mine"
    assert bob.get_object_tagging(Bucket=bucket, Key="home/bob/new")["TagSet"] == []  # s3:Get*
    assert error_of(lambda: bob.put_object(Bucket=bucket, Key="home/carol/x", Body=b"x")) == (403, "AccessDenied")
    assert error_of(lambda: bob.get_object(Bucket=bucket, Key="home/carol/notes")) == (403, "AccessDenied")
    # DeleteObjects is judged key by key.
    out = bob.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "home/bob/new"}, {"Key": "home/carol/notes"}]})
    assert [d["Key"] for d in out.get("Deleted", [])] == ["home/bob/new"]
    assert [(e["Key"], e["Code"]) for e in out["Errors"]] == [("home/carol/notes", "AccessDenied")]
    assert alice.get_object(Bucket=bucket, Key="home/carol/notes")["Body"].read() == b"c"
    # A multipart upload is a PutObject of its key.
    up = bob.create_multipart_upload(Bucket=bucket, Key="home/bob/big")
    part = bob.upload_part(Bucket=bucket, Key="home/bob/big", UploadId=up["UploadId"], PartNumber=1, Body=b"p" * 10)
    bob.complete_multipart_upload(Bucket=bucket, Key="home/bob/big", UploadId=up["UploadId"],
                                  MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert error_of(lambda: bob.create_multipart_upload(Bucket=bucket, Key="elsewhere")) == (403, "AccessDenied")
    # Tags given with a write are a PutObjectTagging too, which the policy does not grant bob.
    assert error_of(lambda: bob.put_object(Bucket=bucket, Key="home/bob/tagged", Body=b"t",
                                           Tagging="a=b")) == (403, "AccessDenied")
    # A user named in a policy is not deleted (a new user of that id would inherit the grants).
    refused = server.adm("delete-user", bob_name, check=False)
    assert refused.returncode != 0 and "policy" in refused.stderr, refused.stderr


def test_an_explicit_deny_wins_even_over_the_owner(owned):
    server, alice, bucket, bob_name, bob = owned
    alice.put_object(Bucket=bucket, Key="keep/me", Body=b"k")
    alice.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]},
        {"Effect": "Deny", "Principal": "*", "Action": ["s3:DeleteObject", "s3:PutObject"],
         "Resource": f"arn:aws:s3:::{bucket}/keep/*"}))
    # Allowed to anyone: bob lists and writes elsewhere, anonymous reads; the policy itself stays
    # the owner's.
    assert error_of(lambda: bob.delete_bucket_policy(Bucket=bucket)) == (403, "AccessDenied")
    assert anonymous(server, "DELETE", f"/{bucket}?policy").status_code == 403
    bob.put_object(Bucket=bucket, Key="drop/box", Body=b"d")
    assert anonymous(server, "GET", f"/{bucket}/drop/box").content == b"d"
    assert {o["Key"] for o in bob.list_objects_v2(Bucket=bucket)["Contents"]} == {"keep/me", "drop/box"}
    for client in (alice, bob):
        assert error_of(lambda: client.delete_object(Bucket=bucket, Key="keep/me")) == (403, "AccessDenied")
        assert error_of(lambda: client.put_object(Bucket=bucket, Key="keep/me", Body=b"x")) == (403, "AccessDenied")
    assert anonymous(server, "DELETE", f"/{bucket}/keep/me").status_code == 403
    assert alice.get_object(Bucket=bucket, Key="keep/me")["Body"].read() == b"k"
    # A policy that locks everyone out, the owner included, except the policy's own actions.
    alice.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}))
    assert error_of(lambda: alice.get_object(Bucket=bucket, Key="keep/me")) == (403, "AccessDenied")
    assert error_of(lambda: alice.list_objects_v2(Bucket=bucket)) == (403, "AccessDenied")
    assert json.loads(alice.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"][0]["Effect"] == "Deny"
    assert error_of(lambda: bob.delete_bucket_policy(Bucket=bucket)) == (403, "AccessDenied")
    alice.delete_bucket_policy(Bucket=bucket)
    assert alice.get_object(Bucket=bucket, Key="keep/me")["Body"].read() == b"k"
    alice.delete_object(Bucket=bucket, Key="drop/box")


def test_source_address_conditions(owned):
    server, alice, bucket, _, bob = owned
    alice.put_object(Bucket=bucket, Key="k", Body=b"v")
    # The suite's clients are on 127.0.0.1.
    alice.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*",
         "Condition": {"IpAddress": {"aws:SourceIp": ["127.0.0.0/8", "::1/128"]}}}))
    assert anonymous(server, "GET", f"/{bucket}/k").status_code == 200
    assert alice.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is False
    alice.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*",
         "Condition": {"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}}))
    assert anonymous(server, "GET", f"/{bucket}/k").status_code == 403
    assert error_of(lambda: bob.get_object(Bucket=bucket, Key="k")) == (403, "AccessDenied")
    # Deny everything from outside a range the suite is not in: the owner too, on the fast path.
    alice.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": f"arn:aws:s3:::{bucket}/*",
         "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}))
    assert error_of(lambda: alice.get_object(Bucket=bucket, Key="k")) == (403, "AccessDenied")
    r = raw_request(server, "GET", f"/{bucket}/k", payload_sha256="UNSIGNED-PAYLOAD",
                    access_key=alice._request_signer._credentials.access_key,
                    secret_key=alice._request_signer._credentials.secret_key)
    assert (r.status, r.error_code()) == (403, "AccessDenied")
    alice.delete_bucket_policy(Bucket=bucket)
    assert alice.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


def test_anonymous_boto3_and_post_forms_follow_the_policy(owned):
    server, alice, bucket, _, _ = owned
    alice.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": ["s3:PutObject", "s3:GetObject"],
         "Resource": f"arn:aws:s3:::{bucket}/uploads/*"}))
    anon = server.client(signature_version=UNSIGNED)
    anon.put_object(Bucket=bucket, Key="uploads/a", Body=b"anon")
    assert anon.get_object(Bucket=bucket, Key="uploads/a")["Body"].read() == b"anon"
    assert error_of(lambda: anon.put_object(Bucket=bucket, Key="other", Body=b"x")) == (403, "AccessDenied")
    # A browser form without a signature: its key is judged as a PutObject of it.
    r = requests.post(f"{server.endpoint}/{bucket}", files={"key": (None, "uploads/form"), "file": ("f", b"form")},
                      timeout=10)
    assert r.status_code == 204, r.text
    r = requests.post(f"{server.endpoint}/{bucket}", files={"key": (None, "elsewhere"), "file": ("f", b"form")},
                      timeout=10)
    assert r.status_code == 403 and "AccessDenied" in r.text
    assert alice.get_object(Bucket=bucket, Key="uploads/form")["Body"].read() == b"form"


def test_the_rest_api_follows_the_policy(make_server):
    srv = make_server(rest=True)
    s3 = srv.client()
    s3.create_bucket(Bucket="rest-policed")
    s3.put_object(Bucket="rest-policed", Key="public/a", Body=b"open")
    s3.put_object(Bucket="rest-policed", Key="private/b", Body=b"closed")
    assert requests.get(f"{srv.rest_endpoint}/rest-policed/public/a", timeout=10).status_code == 403
    s3.put_bucket_policy(Bucket="rest-policed", Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::rest-policed/public/*"}))
    r = requests.get(f"{srv.rest_endpoint}/rest-policed/public/a", timeout=10)
    assert (r.status_code, r.content) == (200, b"open")
    assert requests.get(f"{srv.rest_endpoint}/rest-policed/private/b", timeout=10).status_code == 403
    assert requests.put(f"{srv.rest_endpoint}/rest-policed/public/c", data=b"x", timeout=10).status_code == 403


@pytest.mark.skipif(DEPLOYMENT == "split", reason="starts its own cluster; run in the all-in-one pass")
def test_a_policy_put_through_one_gateway_holds_on_another(make_server):
    cluster = Cluster(make_server, storage=2, gateways=2, replicas=2)
    a, b = (g.client() for g in cluster.gateways)
    a.create_bucket(Bucket="policed")
    a.put_object(Bucket="policed", Key="open/k", Body=b"v")
    url = f"{cluster.gateways[1].endpoint}/policed/open/k"
    assert requests.get(url, timeout=10).status_code == 403
    a.put_bucket_policy(Bucket="policed", Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::policed/open/*"}))
    eventually("gateway b serves anonymous reads", 10, lambda: requests.get(url, timeout=10).status_code == 200)
    assert json.loads(b.get_bucket_policy(Bucket="policed")["Policy"])["Statement"][0]["Effect"] == "Allow"
    b.delete_bucket_policy(Bucket="policed")
    eventually("gateway a refuses them again", 10, lambda: requests.get(
        f"{cluster.gateways[0].endpoint}/policed/open/k", timeout=10).status_code == 403)
