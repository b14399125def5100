"""leofs-adm against a real server's admin API: users, buckets, ACLs, status, token checks."""

from __future__ import annotations

import json

import pytest
import requests
from botocore.exceptions import ClientError


def find_strings(value) -> set[str]:
    """Every string anywhere in a parsed JSON value."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(find_strings(v) for v in value.values()), set(value.keys()))
    if isinstance(value, list):
        return set().union(set(), *(find_strings(v) for v in value))
    return set()


def records(value, field: str) -> list[dict]:
    """The list of objects in a --json answer (a bare list or one list inside an object)."""
    if isinstance(value, list):
        return value
    lists = [v for v in value.values() if isinstance(v, list)]
    assert len(lists) == 1, value
    return lists[0]


def test_status(make_server):
    srv = make_server()
    human = srv.adm("status")
    assert human.stdout.strip()
    status = json.loads(srv.adm("status", json_output=True).stdout)
    assert status["cores"] == 2
    assert status["partitions"] >= 2
    if srv.gateway is None:
        assert status["s3_endpoint"] in (srv.endpoint, f"127.0.0.1:{srv.s3_port}")
    else:
        # The admin API is the storage process's, which serves no S3.
        assert status["s3_endpoint"] == ""
    assert sorted(s["core"] for s in status["shards"]) == [0, 1]
    assert sum(s["partitions_owned"] for s in status["shards"]) == status["partitions"]
    assert status["version"]


def test_users_buckets_acl_lifecycle(make_server):
    srv = make_server()
    root = srv.client()
    root.create_bucket(Bucket="root-private")
    root.put_object(Bucket="root-private", Key="secret.txt", Body=b"root only")

    creds = json.loads(srv.adm("create-user", "alice", json_output=True).stdout)
    assert creds["user_id"] == "alice"
    ak, sk = creds["access_key_id"], creds["secret_access_key"]
    human = srv.adm("create-user", "bob")
    assert "bob" in human.stdout

    users = json.loads(srv.adm("get-users", json_output=True).stdout)
    assert {"alice", "bob"} <= find_strings(users)
    assert "alice" in srv.adm("get-users").stdout
    dup = srv.adm("create-user", "alice", check=False)
    assert dup.returncode == 1 and dup.stderr.strip()

    alice = srv.client(ak, sk)
    alice.create_bucket(Bucket="alice-bucket")
    alice.put_object(Bucket="alice-bucket", Key="a.txt", Body=b"alice data")
    assert alice.get_object(Bucket="alice-bucket", Key="a.txt")["Body"].read() == b"alice data"
    with pytest.raises(ClientError) as e:
        alice.get_object(Bucket="root-private", Key="secret.txt")
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as e:
        root.create_bucket(Bucket="alice-bucket")
    assert e.value.response["Error"]["Code"] == "BucketAlreadyExists"
    assert [b["Name"] for b in alice.list_buckets()["Buckets"]] == ["alice-bucket"]

    # add-bucket on behalf of a key; get-buckets shows owner.
    srv.adm("add-bucket", "alice-second", ak)
    assert "alice-second" in {b["Name"] for b in alice.list_buckets()["Buckets"]}
    buckets = records(json.loads(srv.adm("get-buckets", json_output=True).stdout), "buckets")
    by_name = {b["name"]: b for b in buckets}
    assert {"root-private", "alice-bucket", "alice-second"} <= set(by_name)
    assert by_name["alice-second"]["owner"] == "alice"
    assert "alice-second" in srv.adm("get-buckets").stdout

    # update-acl: public-read lets anonymous clients list the bucket; its objects keep their own
    # ACLs (S3's meaning).
    r = requests.get(f"{srv.endpoint}/alice-bucket", timeout=30)
    assert r.status_code == 403
    srv.adm("update-acl", "alice-bucket", ak, "public-read")
    r = requests.get(f"{srv.endpoint}/alice-bucket", timeout=30)
    assert r.status_code == 200 and b"<Key>a.txt</Key>" in r.content
    assert requests.get(f"{srv.endpoint}/alice-bucket/a.txt", timeout=30).status_code == 403
    buckets = records(json.loads(srv.adm("get-buckets", json_output=True).stdout), "buckets")
    assert {b["name"]: b for b in buckets}["alice-bucket"]["acl"] == "public-read"

    # Deleting a user who owns buckets is refused.
    refused = srv.adm("delete-user", "alice", check=False)
    assert refused.returncode == 1 and refused.stderr.strip()
    alice.delete_object(Bucket="alice-bucket", Key="a.txt")
    srv.adm("delete-bucket", "alice-bucket")
    srv.adm("delete-bucket", "alice-second")
    assert not {"alice-bucket", "alice-second"} & {
        b["name"] for b in records(json.loads(srv.adm("get-buckets", json_output=True).stdout), "buckets")}
    srv.adm("delete-user", "alice")
    assert "alice" not in find_strings(json.loads(srv.adm("get-users", json_output=True).stdout))
    with pytest.raises(ClientError) as e:
        srv.client(ak, sk).list_buckets()
    assert e.value.response["Error"]["Code"] == "InvalidAccessKeyId"

    # Users and buckets survive a restart.
    srv.restart()
    assert "bob" in find_strings(json.loads(srv.adm("get-users", json_output=True).stdout))
    assert srv.client().get_object(Bucket="root-private", Key="secret.txt")["Body"].read() == b"root only"


def test_wrong_token_and_errors(make_server):
    srv = make_server()
    bad = srv.adm("get-users", token="not-the-token", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() and len(bad.stderr.strip().splitlines()) <= 3
    bad = srv.adm("status", json_output=True, token="not-the-token", check=False)
    assert bad.returncode == 1
    missing = srv.adm("delete-user", "nobody", check=False)
    assert missing.returncode == 1 and missing.stderr.strip()
    bad_bucket = srv.adm("add-bucket", "Bad_Name", srv.access_key, check=False)
    assert bad_bucket.returncode == 1
    # The admin API itself refuses unauthenticated calls.
    for path in ("/v1/status", "/v1/users", "/v1/buckets"):
        r = requests.get(f"http://{srv.admin_addr}{path}", timeout=10)
        assert r.status_code in (401, 403), (path, r.status_code)
        r = requests.get(f"http://{srv.admin_addr}{path}", headers={"authorization": "Bearer wrong"},
                         timeout=10)
        assert r.status_code in (401, 403), (path, r.status_code)
    token = (srv.data_dir / "manager" / "admin.token").read_text().strip()
    r = requests.get(f"http://{srv.admin_addr}/v1/status", headers={"authorization": f"Bearer {token}"},
                     timeout=10)
    assert r.status_code == 200 and r.json()["cores"] == 2


def test_one_definition_of_empty_for_s3_and_admin(make_server):
    """A multipart upload in progress keeps a bucket from being deleted, through S3 and through
    the admin API alike (one definition of "empty"); once it is aborted both may delete. A
    bucket created again under the same name starts empty."""
    srv = make_server()
    s3 = srv.client()
    s3.create_bucket(Bucket="pending-upload")
    upload = s3.create_multipart_upload(Bucket="pending-upload", Key="big")["UploadId"]
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="pending-upload")
    assert e.value.response["Error"]["Code"] == "BucketNotEmpty"
    refused = srv.adm("delete-bucket", "pending-upload", check=False)
    assert refused.returncode == 1 and "not empty" in refused.stderr
    s3.abort_multipart_upload(Bucket="pending-upload", Key="big", UploadId=upload)
    s3.delete_bucket(Bucket="pending-upload")

    s3.create_bucket(Bucket="pending-upload")
    s3.put_object(Bucket="pending-upload", Key="k", Body=b"v")
    refused = srv.adm("delete-bucket", "pending-upload", check=False)
    assert refused.returncode == 1 and "not empty" in refused.stderr
    s3.delete_object(Bucket="pending-upload", Key="k")
    srv.adm("delete-bucket", "pending-upload")
    s3.create_bucket(Bucket="pending-upload")
    assert s3.list_objects_v2(Bucket="pending-upload").get("KeyCount") == 0
    assert s3.list_multipart_uploads(Bucket="pending-upload").get("Uploads", []) == []


def _metric(text: str, name: str, core: int | None = None) -> float:
    wanted = name if core is None else f'{name}{{core="{core}"}}'
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{wanted} not in\n{text}")


def test_metrics_are_served_to_prometheus_without_the_token(make_server):
    # One process with every role: a gateway-only process has no admin listener (yet), so in
    # the split deployment the S3 requests would be counted where no /metrics shows them.
    srv = make_server(cores=2, deployment="all-in-one")
    url = f"http://{srv.admin_addr}/metrics"
    before = requests.get(url, timeout=10)
    assert before.status_code == 200, before.text
    assert before.headers["content-type"].startswith("application/openmetrics-text")
    assert before.text.endswith("# EOF\n")
    assert _metric(before.text, "leofs_raft_is_leader") == 1
    assert _metric(before.text, "leofs_raft_members") == 1
    records_before = sum(_metric(before.text, "leofs_live_records", c) for c in range(2))
    s3 = srv.client()
    s3.create_bucket(Bucket="metrics")
    for i in range(20):
        s3.put_object(Bucket="metrics", Key=f"k{i}", Body=b"x" * 1000)
    after = requests.get(url, timeout=10).text
    records_after = sum(_metric(after, "leofs_live_records", c) for c in range(2))
    assert records_after >= records_before + 20, (records_before, records_after)
    assert _metric(after, "leofs_buckets") >= 1
    puts = 'leofs_s3_requests_total{operation="PutObject",status="200"}'
    assert _metric(after, puts) >= 20, after
    assert _metric(after, 'leofs_s3_request_bytes_total{operation="PutObject"}') >= 20 * 1000
    assert _metric(after, 'leofs_s3_request_duration_seconds_count{operation="PutObject"}') >= 20
    assert _metric(after, 'leofs_s3_requests_total{operation="CreateBucket",status="200"}') == 1
    # Everything else on the admin listener still needs the token.
    assert requests.get(f"http://{srv.admin_addr}/v1/status", timeout=10).status_code == 401
