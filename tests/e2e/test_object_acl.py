"""Object ACLs (issue 17), written from the S3 API reference: `x-amz-acl` and `x-amz-grant-*` on PUT,
COPY and CreateMultipartUpload, Get/PutObjectAcl (canned, grant headers, AccessControlPolicy
documents), the owner of what another user or an anonymous client writes, and S3's meaning of each
grant (a bucket's READ lists it; an object's READ reads it, READ_ACP reads its ACL, WRITE_ACP
changes it). Two users besides the bucket owner and anonymous requests, through boto3 (signed and
unsigned), raw HTTP and the REST API. Objects without an ACL of their own (written through the REST
API, or before object ACLs existed) keep their bucket's canned ACL: the migration of existing data."""

from __future__ import annotations

import json
import uuid

import pytest
import requests
from botocore import UNSIGNED

from leofs_harness import DEPLOYMENT, error_of, make_user
from test_cluster import Cluster, eventually

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"


@pytest.fixture
def people(server):
    """(alice, bob, carol): names and clients of three plain users; alice owns a public-read
    bucket and a public-read-write one."""
    users = [make_user(server, n) for n in ("alice", "bob", "carol")]
    alice = users[0][1]
    read, write = f"acl-r-{uuid.uuid4().hex[:10]}", f"acl-w-{uuid.uuid4().hex[:10]}"
    alice.create_bucket(Bucket=read, ACL="public-read")
    alice.create_bucket(Bucket=write, ACL="public-read-write")
    yield users, read, write
    for b in (read, write):
        for obj in alice.list_objects_v2(Bucket=b).get("Contents", []):
            alice.delete_object(Bucket=b, Key=obj["Key"])
        alice.delete_bucket(Bucket=b)


def anon_get(server, bucket, key, method="GET"):
    return requests.request(method, f"{server.endpoint}/{bucket}/{key}", timeout=10)


def grants(acl: dict) -> set[tuple[str, str]]:
    """The grants of a GetObjectAcl answer as (who, permission)."""
    out = set()
    for g in acl["Grants"]:
        who = g["Grantee"].get("ID") or g["Grantee"].get("URI")
        out.add((who, g["Permission"]))
    return out


def test_a_public_read_bucket_lists_but_its_new_objects_are_private(server, people):
    (alice_name, alice), _, _ = people[0]
    _, read, _ = people
    alice.put_object(Bucket=read, Key="private", Body=b"p")
    assert anon_get(server, read, "private").status_code == 403
    assert anon_get(server, read, "private", "HEAD").status_code == 403
    r = requests.get(f"{server.endpoint}/{read}?list-type=2", timeout=10)
    assert r.status_code == 200 and "<Key>private</Key>" in r.text
    acl = alice.get_object_acl(Bucket=read, Key="private")
    assert acl["Owner"]["ID"] == alice_name
    assert grants(acl) == {(alice_name, "FULL_CONTROL")}
    # A missing key: 404 to whoever may list the bucket, 403 to others.
    assert anon_get(server, read, "missing").status_code == 404


def test_canned_acls_and_grant_headers_on_put(server, people):
    (_, alice), (bob_name, bob), (carol_name, carol) = people[0]
    _, read, _ = people
    alice.put_object(Bucket=read, Key="public", Body=b"pub", ACL="public-read")
    r = anon_get(server, read, "public")
    assert (r.status_code, r.content) == (200, b"pub")
    assert grants(alice.get_object_acl(Bucket=read, Key="public")) >= {(ALL_USERS, "READ")}
    alice.put_object(Bucket=read, Key="signed-only", Body=b"s", ACL="authenticated-read")
    assert bob.get_object(Bucket=read, Key="signed-only")["Body"].read() == b"s"
    assert anon_get(server, read, "signed-only").status_code == 403
    alice.put_object(Bucket=read, Key="for-bob", Body=b"b", GrantRead=f'id="{bob_name}"',
                     GrantReadACP=f"emailAddress={carol_name}")
    assert bob.get_object(Bucket=read, Key="for-bob")["Body"].read() == b"b"
    assert bob.head_object(Bucket=read, Key="for-bob")["ContentLength"] == 1
    assert error_of(lambda: carol.get_object(Bucket=read, Key="for-bob")) == (403, "AccessDenied")
    assert grants(carol.get_object_acl(Bucket=read, Key="for-bob")) >= {
        (bob_name, "READ"), (carol_name, "READ_ACP")}
    assert error_of(lambda: bob.get_object_acl(Bucket=read, Key="for-bob")) == (403, "AccessDenied")
    attrs = bob.get_object_attributes(Bucket=read, Key="for-bob", ObjectAttributes=["ObjectSize"])
    assert attrs["ObjectSize"] == 1
    assert error_of(lambda: carol.get_object_attributes(
        Bucket=read, Key="for-bob", ObjectAttributes=["ObjectSize"])) == (403, "AccessDenied")
    for extra, code in [({"ACL": "no-such-acl"}, (400, "InvalidArgument")),
                        ({"ACL": "aws-exec-read"}, (501, "NotImplemented")),
                        ({"GrantRead": 'id="nobody-here"'}, (400, "InvalidArgument")),
                        ({"GrantRead": "emailAddress=nobody@example.com"}, (400, "UnresolvableGrantByEmailAddress")),
                        ({"ACL": "private", "GrantRead": f'id="{bob_name}"'}, (400, "InvalidRequest"))]:
        assert error_of(lambda: alice.put_object(Bucket=read, Key="refused", Body=b"x", **extra)) == code, extra
    assert error_of(lambda: alice.head_object(Bucket=read, Key="refused"))[0] == 404


def test_put_object_acl_by_owner_and_by_a_write_acp_grantee(server, people):
    (alice_name, alice), (bob_name, bob), (carol_name, carol) = people[0]
    _, read, _ = people
    alice.put_object(Bucket=read, Key="k", Body=b"v", GrantWriteACP=f'id="{bob_name}"')
    assert anon_get(server, read, "k").status_code == 403
    alice.put_object_acl(Bucket=read, Key="k", ACL="public-read")
    assert anon_get(server, read, "k").status_code == 200
    # bob lost WRITE_ACP with the canned ACL; alice gives it back with a document.
    assert error_of(lambda: bob.put_object_acl(Bucket=read, Key="k", ACL="private")) == (403, "AccessDenied")
    owner = {"ID": alice_name}
    alice.put_object_acl(Bucket=read, Key="k", AccessControlPolicy={"Owner": owner, "Grants": [
        {"Grantee": {"Type": "CanonicalUser", "ID": alice_name}, "Permission": "FULL_CONTROL"},
        {"Grantee": {"Type": "CanonicalUser", "ID": bob_name}, "Permission": "WRITE_ACP"},
        {"Grantee": {"Type": "Group", "URI": AUTHENTICATED}, "Permission": "READ"}]})
    assert grants(alice.get_object_acl(Bucket=read, Key="k")) == {
        (alice_name, "FULL_CONTROL"), (bob_name, "WRITE_ACP"), (AUTHENTICATED, "READ")}
    assert anon_get(server, read, "k").status_code == 403
    assert carol.get_object(Bucket=read, Key="k")["Body"].read() == b"v"
    bob.put_object_acl(Bucket=read, Key="k", GrantRead=f'id="{bob_name}"')
    assert error_of(lambda: carol.get_object(Bucket=read, Key="k")) == (403, "AccessDenied")
    assert alice.get_object(Bucket=read, Key="k")["Body"].read() == b"v", "the object body is kept"
    assert error_of(lambda: carol.put_object_acl(Bucket=read, Key="k", ACL="public-read")) == (403, "AccessDenied")
    assert error_of(lambda: alice.put_object_acl(Bucket=read, Key="k", AccessControlPolicy={
        "Owner": {"ID": bob_name}, "Grants": []})) == (400, "InvalidArgument")
    assert error_of(lambda: alice.put_object_acl(Bucket=read, Key="missing", ACL="private"))[0] == 404


def test_owners_of_objects_others_write(server, people):
    (alice_name, alice), (bob_name, bob), (_, carol) = people[0]
    _, _, write = people
    bob.put_object(Bucket=write, Key="bobs", Body=b"b")
    acl = alice.get_object_acl(Bucket=write, Key="bobs")
    assert acl["Owner"]["ID"] == bob_name and grants(acl) == {(bob_name, "FULL_CONTROL")}
    assert bob.get_object(Bucket=write, Key="bobs")["Body"].read() == b"b"
    assert alice.get_object(Bucket=write, Key="bobs")["Body"].read() == b"b", "the bucket owner reads all"
    assert error_of(lambda: carol.get_object(Bucket=write, Key="bobs")) == (403, "AccessDenied")
    bob.put_object(Bucket=write, Key="shared", Body=b"s", ACL="bucket-owner-read")
    assert grants(bob.get_object_acl(Bucket=write, Key="shared")) == {
        (bob_name, "FULL_CONTROL"), (alice_name, "READ")}
    # An anonymous upload is owned by anonymous requests (as in S3), not by signed users.
    r = requests.put(f"{server.endpoint}/{write}/anon", data=b"a", timeout=10)
    assert r.status_code == 200
    assert anon_get(server, write, "anon").content == b"a"
    assert error_of(lambda: bob.get_object(Bucket=write, Key="anon")) == (403, "AccessDenied")
    assert alice.get_object_acl(Bucket=write, Key="anon")["Owner"]["ID"] == "65a011a29cdf8ec533ec3d1ccaae921c"
    anon = server.client(signature_version=UNSIGNED)
    anon.put_object(Bucket=write, Key="anon-public", Body=b"ap", ACL="public-read")
    assert bob.get_object(Bucket=write, Key="anon-public")["Body"].read() == b"ap"


def test_copies_and_multipart_uploads_take_the_acl_of_their_request(server, people):
    (_, alice), (bob_name, bob), _ = people[0]
    _, read, _ = people
    alice.put_object(Bucket=read, Key="src", Body=b"source", ACL="public-read")
    alice.copy_object(Bucket=read, Key="copy", CopySource={"Bucket": read, "Key": "src"})
    assert anon_get(server, read, "copy").status_code == 403, "a copy does not take the source's ACL"
    alice.copy_object(Bucket=read, Key="copy-public", CopySource={"Bucket": read, "Key": "src"}, ACL="public-read")
    assert anon_get(server, read, "copy-public").content == b"source"
    # A copy's source is read under its ACL: bob may copy the public source, not the private copy.
    bob_bucket = f"acl-bob-{uuid.uuid4().hex[:8]}"
    bob.create_bucket(Bucket=bob_bucket)
    try:
        bob.copy_object(Bucket=bob_bucket, Key="mine", CopySource={"Bucket": read, "Key": "src"})
        assert error_of(lambda: bob.copy_object(Bucket=bob_bucket, Key="no",
                                                CopySource={"Bucket": read, "Key": "copy"})) == (403, "AccessDenied")
    finally:
        bob.delete_object(Bucket=bob_bucket, Key="mine")
        bob.delete_bucket(Bucket=bob_bucket)
    up = alice.create_multipart_upload(Bucket=read, Key="mp", GrantRead=f'id="{bob_name}"')
    part = alice.upload_part(Bucket=read, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"m" * 100)
    alice.complete_multipart_upload(Bucket=read, Key="mp", UploadId=up["UploadId"],
                                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert bob.get_object(Bucket=read, Key="mp")["Body"].read() == b"m" * 100
    assert anon_get(server, read, "mp").status_code == 403


def test_objects_without_an_acl_keep_their_buckets(make_server):
    """The migration: an object written with no ACL of its own (here through the REST API, as
    every object was before object ACLs existed) has its bucket's canned ACL."""
    srv = make_server(rest=True)
    s3 = srv.client()
    s3.create_bucket(Bucket="legacy", ACL="public-read-write")
    assert requests.put(f"{srv.rest_endpoint}/legacy/old", data=b"old", timeout=10).status_code == 200
    assert requests.get(f"{srv.endpoint}/legacy/old", timeout=10).content == b"old"
    acl = s3.get_object_acl(Bucket="legacy", Key="old")
    assert (ALL_USERS, "READ") in grants(acl)
    s3.put_bucket_acl(Bucket="legacy", ACL="private")
    assert requests.get(f"{srv.endpoint}/legacy/old", timeout=10).status_code == 403
    # An ACL put on it is its own from then on; the REST API honours object ACLs too.
    s3.put_object_acl(Bucket="legacy", Key="old", ACL="public-read")
    assert requests.get(f"{srv.rest_endpoint}/legacy/old", timeout=10).content == b"old"
    s3.put_object(Bucket="legacy", Key="new", Body=b"new")
    assert requests.get(f"{srv.rest_endpoint}/legacy/new", timeout=10).status_code == 403


def test_acls_of_versions_change_version_by_version(server, people):
    (alice_name, alice), (bob_name, bob), _ = people[0]
    _, read, _ = people
    alice.put_bucket_versioning(Bucket=read, VersioningConfiguration={"Status": "Enabled"})
    v1 = alice.put_object(Bucket=read, Key="v", Body=b"1", GrantRead=f'id="{bob_name}"')["VersionId"]
    v2 = alice.put_object(Bucket=read, Key="v", Body=b"2")["VersionId"]
    assert bob.get_object(Bucket=read, Key="v", VersionId=v1)["Body"].read() == b"1"
    assert error_of(lambda: bob.get_object(Bucket=read, Key="v")) == (403, "AccessDenied")
    before = alice.head_object(Bucket=read, Key="v")["LastModified"]

    # The latest version made public: anyone reads it; the other version keeps its own ACL.
    alice.put_object_acl(Bucket=read, Key="v", ACL="public-read")
    assert anon_get(server, read, "v").content == b"2"
    assert (ALL_USERS, "READ") in grants(alice.get_object_acl(Bucket=read, Key="v"))
    assert alice.head_object(Bucket=read, Key="v")["LastModified"] == before
    assert grants(alice.get_object_acl(Bucket=read, Key="v", VersionId=v1)) == {
        (alice_name, "FULL_CONTROL"), (bob_name, "READ")}

    # The noncurrent version named by id made private: bob no longer reads it.
    alice.put_object_acl(Bucket=read, Key="v", VersionId=v1, ACL="private")
    assert error_of(lambda: bob.get_object(Bucket=read, Key="v", VersionId=v1)) == (403, "AccessDenied")
    assert anon_get(server, read, "v").content == b"2"
    # Bob may not change it (no WRITE_ACP); given WRITE_ACP on v2, he may change v2 only.
    assert error_of(lambda: bob.put_object_acl(Bucket=read, Key="v", VersionId=v1, ACL="public-read")) == (
        403, "AccessDenied")
    alice.put_object_acl(Bucket=read, Key="v", VersionId=v2, GrantWriteACP=f'id="{bob_name}"')
    assert anon_get(server, read, "v").status_code == 403
    bob.put_object_acl(Bucket=read, Key="v", VersionId=v2, GrantRead=f'id="{bob_name}"')
    assert bob.get_object(Bucket=read, Key="v")["Body"].read() == b"2"
    assert error_of(lambda: bob.put_object_acl(Bucket=read, Key="v", VersionId=v2, ACL="public-read")) == (
        403, "AccessDenied")
    for v in alice.list_object_versions(Bucket=read).get("Versions", []):
        alice.delete_object(Bucket=read, Key=v["Key"], VersionId=v["VersionId"])


@pytest.mark.skipif(DEPLOYMENT == "split", reason="starts its own cluster; run in the all-in-one pass")
def test_acls_and_encryption_hold_across_gateways(make_server):
    """Object ACLs travel with the object, bucket grants with the catalog, SSE-C with the object:
    what is set through one gateway holds on the other."""
    cluster = Cluster(make_server, storage=2, gateways=2, replicas=2)
    ga, gb = cluster.gateways
    a, b = ga.client(), gb.client()
    a.create_bucket(Bucket="acls")
    a.put_object(Bucket="acls", Key="open", Body=b"o", ACL="public-read")
    a.put_object(Bucket="acls", Key="closed", Body=b"c")
    assert requests.get(f"{gb.endpoint}/acls/open", timeout=10).content == b"o"
    assert requests.get(f"{gb.endpoint}/acls/closed", timeout=10).status_code == 403
    b.put_object_acl(Bucket="acls", Key="closed", ACL="public-read")
    assert requests.get(f"{ga.endpoint}/acls/closed", timeout=10).content == b"c"
    # A bucket grant made through b lets a user list through a.
    name = f"carol-{uuid.uuid4().hex[:8]}"
    creds = json.loads(cluster.manager.adm("create-user", name, json_output=True).stdout)
    carol = ga.client(creds["access_key_id"], creds["secret_access_key"])
    b.put_bucket_acl(Bucket="acls", GrantRead=f'id="{name}"')
    eventually("the grant is seen through a", 10,
               lambda: carol.list_objects_v2(Bucket="acls")["KeyCount"] == 2)
    # SSE-C written through a is read through b with the key, and only with it.
    key = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": b"c" * 32}
    a.put_object(Bucket="acls", Key="secret", Body=b"s" * 3_000_000, **key)
    assert b.get_object(Bucket="acls", Key="secret", **key)["Body"].read() == b"s" * 3_000_000
    assert error_of(lambda: b.get_object(Bucket="acls", Key="secret"))[0] == 400
