"""Bucket ACLs beyond the canned three (issue 17), written from the S3 API reference:
`authenticated-read`, grants to user ids, e-mail addresses and the AllUsers and AuthenticatedUsers
groups, by `x-amz-grant-*` headers on CreateBucket and PutBucketAcl or by an AccessControlPolicy
document, with S3's meaning of each bucket permission (READ lists, WRITE writes and deletes objects,
READ_ACP reads the ACL, WRITE_ACP changes it); a canned ACL replaces every grant."""

from __future__ import annotations

import uuid

import pytest
import requests

from leofs_harness import error_of, make_user

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"


@pytest.fixture
def trio(server):
    users = [make_user(server, n) for n in ("alice", "bob", "carol")]
    bucket = f"bacl-{uuid.uuid4().hex[:12]}"
    yield users, bucket
    alice = users[0][1]
    alice.put_bucket_acl(Bucket=bucket, ACL="private")
    for obj in alice.list_objects_v2(Bucket=bucket).get("Contents", []):
        alice.delete_object(Bucket=bucket, Key=obj["Key"])
    alice.delete_bucket(Bucket=bucket)


def grants(acl: dict) -> set[tuple[str, str]]:
    return {(g["Grantee"].get("ID") or g["Grantee"].get("URI"), g["Permission"]) for g in acl["Grants"]}


def test_grants_to_users_and_groups(server, trio):
    ((alice_name, alice), (bob_name, bob), (carol_name, carol)), bucket = trio
    alice.create_bucket(Bucket=bucket, GrantRead=f'id="{bob_name}"', GrantReadACP=f"emailAddress={carol_name}")
    alice.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert [o["Key"] for o in bob.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
    assert error_of(lambda: bob.get_object(Bucket=bucket, Key="k")) == (403, "AccessDenied"), \
        "a bucket's READ lists it; the object is private"
    assert error_of(lambda: carol.list_objects_v2(Bucket=bucket)) == (403, "AccessDenied")
    assert grants(carol.get_bucket_acl(Bucket=bucket)) == {
        (alice_name, "FULL_CONTROL"), (bob_name, "READ"), (carol_name, "READ_ACP")}
    assert error_of(lambda: bob.get_bucket_acl(Bucket=bucket)) == (403, "AccessDenied")
    assert error_of(lambda: bob.put_object(Bucket=bucket, Key="b", Body=b"x")) == (403, "AccessDenied")
    # WRITE to AllUsers: anyone writes and deletes; authenticated-read: any signed user lists.
    alice.put_bucket_acl(Bucket=bucket, GrantWrite=f'uri="{ALL_USERS}"', GrantRead=f'uri="{AUTHENTICATED}"')
    assert requests.put(f"{server.endpoint}/{bucket}/anon", data=b"a", timeout=10).status_code == 200
    assert carol.list_objects_v2(Bucket=bucket)["KeyCount"] == 2
    assert requests.get(f"{server.endpoint}/{bucket}?list-type=2", timeout=10).status_code == 403
    assert requests.delete(f"{server.endpoint}/{bucket}/anon", timeout=10).status_code == 204
    assert error_of(lambda: carol.get_bucket_acl(Bucket=bucket)) == (403, "AccessDenied"), "grants replaced"
    # A canned ACL replaces every grant.
    alice.put_bucket_acl(Bucket=bucket, ACL="authenticated-read")
    assert grants(alice.get_bucket_acl(Bucket=bucket)) == {(alice_name, "FULL_CONTROL"), (AUTHENTICATED, "READ")}
    assert bob.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
    assert requests.put(f"{server.endpoint}/{bucket}/anon", data=b"a", timeout=10).status_code == 403
    alice.put_bucket_acl(Bucket=bucket, ACL="private")
    assert error_of(lambda: bob.list_objects_v2(Bucket=bucket)) == (403, "AccessDenied")
    for extra, code in [({"GrantRead": 'id="nobody-here"'}, (400, "InvalidArgument")),
                        ({"GrantRead": "emailAddress=nobody@example.com"}, (400, "UnresolvableGrantByEmailAddress")),
                        ({"ACL": "log-delivery-write"}, (501, "NotImplemented")),
                        ({"ACL": "private", "GrantRead": f'id="{bob_name}"'}, (400, "InvalidRequest"))]:
        assert error_of(lambda: alice.put_bucket_acl(Bucket=bucket, **extra)) == code, extra


def test_acl_documents_and_write_acp(server, trio):
    ((alice_name, alice), (bob_name, bob), (_, carol)), bucket = trio
    alice.create_bucket(Bucket=bucket, ACL="authenticated-read")
    assert carol.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    alice.put_bucket_acl(Bucket=bucket, AccessControlPolicy={"Owner": {"ID": alice_name}, "Grants": [
        {"Grantee": {"Type": "CanonicalUser", "ID": alice_name}, "Permission": "FULL_CONTROL"},
        {"Grantee": {"Type": "CanonicalUser", "ID": bob_name}, "Permission": "WRITE_ACP"}]})
    assert grants(alice.get_bucket_acl(Bucket=bucket)) == {(alice_name, "FULL_CONTROL"), (bob_name, "WRITE_ACP")}
    assert error_of(lambda: carol.list_objects_v2(Bucket=bucket)) == (403, "AccessDenied")
    # bob may change the ACL (and so give himself more), not read it.
    assert error_of(lambda: bob.get_bucket_acl(Bucket=bucket)) == (403, "AccessDenied")
    bob.put_bucket_acl(Bucket=bucket, GrantFullControl=f'id="{bob_name}"')
    bob.put_object(Bucket=bucket, Key="bobs", Body=b"b")
    assert grants(bob.get_bucket_acl(Bucket=bucket)) == {(alice_name, "FULL_CONTROL"), (bob_name, "FULL_CONTROL")}
    assert error_of(lambda: bob.put_bucket_acl(Bucket=bucket, AccessControlPolicy={
        "Owner": {"ID": bob_name}, "Grants": []})) == (400, "InvalidArgument"), "the owner stays alice"
    assert error_of(lambda: carol.put_bucket_acl(Bucket=bucket, ACL="public-read")) == (403, "AccessDenied")
