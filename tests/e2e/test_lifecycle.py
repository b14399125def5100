"""Bucket lifecycle (issue 16, shard/VERSIONING.md §10): Put/Get/DeleteBucketLifecycleConfiguration
with S3's checks (and 501 for what the node cannot honour: transitions, tag and size filters),
and the lifecycle worker of the storage nodes, with a lifecycle "day" of one second
(`--lifecycle-day-secs 1`): expiration of current versions (a delete, or a delete marker in a
versioned bucket), noncurrent versions deleted for good with the newest kept, lone delete markers
removed, incomplete multipart uploads aborted; on a 3-node cluster, exactly one delete marker per
expired object, and the work counted in /metrics."""

from __future__ import annotations

import requests
import pytest
from botocore.exceptions import ClientError

from leofs_harness import DEPLOYMENT
from test_cluster import Cluster, eventually
from test_replication import metric_sum

FAST = {"LEOFS_LIFECYCLE_DAY_SECS": "1", "LEOFS_LIFECYCLE_INTERVAL_MS": "300"}


def status_code(call) -> tuple[int, str]:
    try:
        call()
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
    raise AssertionError("the request succeeded")


def rule(rule_id: str, prefix: str, **actions) -> dict:
    return {"ID": rule_id, "Status": "Enabled", "Filter": {"Prefix": prefix}, **actions}


def put_rules(s3, bucket, *rules):
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": list(rules)}
    )


def test_configurations_round_trip_and_what_cannot_be_honoured_is_refused(s3, bucket):
    assert status_code(lambda: s3.get_bucket_lifecycle_configuration(Bucket=bucket)) == (
        404,
        "NoSuchLifecycleConfiguration",
    )
    rules = [
        rule("logs", "logs/", Expiration={"Days": 30}),
        rule(
            "old",
            "",
            NoncurrentVersionExpiration={"NoncurrentDays": 7, "NewerNoncurrentVersions": 2},
            AbortIncompleteMultipartUpload={"DaysAfterInitiation": 3},
        ),
        rule("markers", "tmp/", Expiration={"ExpiredObjectDeleteMarker": True}),
    ]
    put_rules(s3, bucket, *rules)
    got = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["ID"] for r in got] == ["logs", "old", "markers"]
    assert got[0]["Expiration"] == {"Days": 30}
    assert got[0]["Filter"] == {"Prefix": "logs/"}
    assert got[1]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 7,
        "NewerNoncurrentVersions": 2,
    }
    assert got[1]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}
    assert got[2]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    refused = {
        "a tag filter": (
            {"ID": "t", "Status": "Enabled", "Filter": {"Tag": {"Key": "k", "Value": "v"}},
             "Expiration": {"Days": 1}},
            (501, "NotImplemented"),
        ),
        "a transition": (
            rule("tr", "", Transitions=[{"Days": 1, "StorageClass": "GLACIER"}]),
            (501, "NotImplemented"),
        ),
        "no action": (rule("none", ""), (400, "InvalidArgument")),
        "zero days": (rule("zero", "", Expiration={"Days": 0}), (400, "InvalidArgument")),
        "a date not at midnight": (
            rule("date", "", Expiration={"Date": "2030-01-01T12:00:00Z"}),
            (400, "InvalidArgument"),
        ),
    }
    for what, (bad, expected) in refused.items():
        assert status_code(lambda: put_rules(s3, bucket, bad)) == expected, what
    assert status_code(
        lambda: put_rules(s3, bucket, rule("same", "a", Expiration={"Days": 1}),
                          rule("same", "b", Expiration={"Days": 2}))
    ) == (400, "InvalidArgument")
    # What was refused changed nothing.
    assert len(s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]) == 3
    s3.delete_bucket_lifecycle(Bucket=bucket)
    assert status_code(lambda: s3.get_bucket_lifecycle_configuration(Bucket=bucket))[0] == 404


def test_expiration_deletes_the_objects_under_its_prefix(make_server):
    server = make_server(extra_env=FAST)
    s3 = server.client()
    s3.create_bucket(Bucket="exp")
    for key in ["logs/a", "logs/b", "keep/c"]:
        s3.put_object(Bucket="exp", Key=key, Body=key.encode())
    put_rules(s3, "exp", rule("logs", "logs/", Expiration={"Days": 1}))

    def keys():
        return [o["Key"] for o in s3.list_objects_v2(Bucket="exp").get("Contents", [])]

    eventually("the expired objects are gone", 20, lambda: keys() == ["keep/c"])
    assert s3.get_object(Bucket="exp", Key="keep/c")["Body"].read() == b"keep/c"
    text = requests.get(f"http://{server.admin_addr}/metrics", timeout=10).text
    expired = sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("leofs_lifecycle_expired_total")
    )
    assert expired == 2, text


def test_versioned_expiration_noncurrent_versions_lone_markers_and_uploads(make_server):
    server = make_server(extra_env=FAST)
    s3 = server.client()
    s3.create_bucket(Bucket="vexp")
    s3.put_bucket_versioning(Bucket="vexp", VersioningConfiguration={"Status": "Enabled"})
    current = s3.put_object(Bucket="vexp", Key="cur/x", Body=b"x")["VersionId"]
    old = [s3.put_object(Bucket="vexp", Key="old/y", Body=bytes([i]))["VersionId"] for i in range(4)]
    lone = s3.put_object(Bucket="vexp", Key="dm/z", Body=b"z")["VersionId"]
    marker = s3.delete_object(Bucket="vexp", Key="dm/z")["VersionId"]
    s3.delete_object(Bucket="vexp", Key="dm/z", VersionId=lone)
    upload = s3.create_multipart_upload(Bucket="vexp", Key="mp/u")["UploadId"]
    put_rules(
        s3,
        "vexp",
        rule("cur", "cur/", Expiration={"Days": 1}),
        rule("old", "old/", NoncurrentVersionExpiration={"NoncurrentDays": 1, "NewerNoncurrentVersions": 1}),
        rule("dm", "dm/", Expiration={"ExpiredObjectDeleteMarker": True}),
        rule("mp", "mp/", AbortIncompleteMultipartUpload={"DaysAfterInitiation": 1}),
    )

    def versions(prefix):
        page = s3.list_object_versions(Bucket="vexp", Prefix=prefix)
        return (
            [(v["VersionId"], v["IsLatest"]) for v in page.get("Versions", [])],
            [(m["VersionId"], m["IsLatest"]) for m in page.get("DeleteMarkers", [])],
        )

    # The current version expired: one delete marker on top of it, the version kept.
    eventually("cur/x expired", 20, lambda: len(versions("cur/")[1]) == 1)
    kept, markers = versions("cur/")
    assert kept == [(current, False)] and markers[0][1] is True
    assert status_code(lambda: s3.get_object(Bucket="vexp", Key="cur/x"))[0] == 404
    # Noncurrent versions deleted for good, the newest noncurrent one kept.
    eventually("old/y's noncurrent versions deleted", 20, lambda: len(versions("old/")[0]) == 2)
    assert versions("old/")[0] == [(old[3], True), (old[2], False)]
    # The lone delete marker removed; the upload aborted.
    eventually("dm/z's lone marker removed", 20, lambda: versions("dm/") == ([], []))
    eventually("the upload aborted", 20,
               lambda: not s3.list_multipart_uploads(Bucket="vexp").get("Uploads"))
    assert status_code(
        lambda: s3.list_parts(Bucket="vexp", Key="mp/u", UploadId=upload)
    ) == (404, "NoSuchUpload")
    assert marker
    # Later passes change nothing more: still exactly one marker.
    import time

    time.sleep(2)
    assert len(versions("cur/")[1]) == 1


@pytest.mark.skipif(DEPLOYMENT == "split", reason="starts its own cluster; run in the all-in-one pass")
def test_a_three_node_cluster_makes_exactly_one_marker_per_expired_object(make_server):
    cluster = Cluster(make_server, storage=3, gateways=1, replicas=3, storage_env=FAST)
    s3 = cluster.gateways[0].client()
    s3.create_bucket(Bucket="cexp")
    s3.put_bucket_versioning(Bucket="cexp", VersioningConfiguration={"Status": "Enabled"})
    keys = [f"e/{i:02d}" for i in range(20)]
    for key in keys:
        s3.put_object(Bucket="cexp", Key=key, Body=key.encode())
    put_rules(s3, "cexp", rule("all", "e/", Expiration={"Days": 1}))

    def markers_by_key():
        out: dict[str, int] = {}
        for page in s3.get_paginator("list_object_versions").paginate(Bucket="cexp"):
            for m in page.get("DeleteMarkers", []):
                out[m["Key"]] = out.get(m["Key"], 0) + 1
        return out

    eventually("every object expired", 30, lambda: len(markers_by_key()) == len(keys))
    import time

    time.sleep(3)  # more passes, on every node
    assert markers_by_key() == {key: 1 for key in keys}
    assert metric_sum(cluster, "leofs_lifecycle_expired_total") == len(keys)
