"""Bucket lifecycle (issue 16, shard/VERSIONING.md §10): Put/Get/DeleteBucketLifecycleConfiguration
with S3's checks (and 501 for what the node cannot honour: transitions), filters on prefix, tags
and size, and the lifecycle worker of the storage nodes, with a lifecycle "day" of one second
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
        "two conditions without And": (
            {"ID": "t", "Status": "Enabled",
             "Filter": {"Prefix": "a", "Tag": {"Key": "k", "Value": "v"}},
             "Expiration": {"Days": 1}},
            (400, "MalformedXML"),
        ),
        "ExpiredObjectDeleteMarker with tags": (
            {"ID": "t", "Status": "Enabled", "Filter": {"Tag": {"Key": "k", "Value": "v"}},
             "Expiration": {"ExpiredObjectDeleteMarker": True}},
            (400, "InvalidArgument"),
        ),
        "AbortIncompleteMultipartUpload with tags": (
            {"ID": "t", "Status": "Enabled", "Filter": {"Tag": {"Key": "k", "Value": "v"}},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
            (400, "InvalidArgument"),
        ),
        "ExpiredObjectDeleteMarker with a size": (
            {"ID": "t", "Status": "Enabled", "Filter": {"ObjectSizeGreaterThan": 5},
             "Expiration": {"ExpiredObjectDeleteMarker": True}},
            (400, "InvalidArgument"),
        ),
        "a size range that is empty": (
            {"ID": "t", "Status": "Enabled",
             "Filter": {"And": {"ObjectSizeGreaterThan": 10, "ObjectSizeLessThan": 10}},
             "Expiration": {"Days": 1}},
            (400, "InvalidArgument"),
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
    # Filters on tags and size, alone or in an And, read back as given.
    filters = [
        {"Tag": {"Key": "tier", "Value": "tmp"}},
        {"ObjectSizeGreaterThan": 1024},
        {"And": {"Prefix": "logs/", "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}],
                 "ObjectSizeGreaterThan": 10, "ObjectSizeLessThan": 1000}},
    ]
    put_rules(s3, bucket, *[
        {"ID": f"f{n}", "Status": "Enabled", "Filter": f, "Expiration": {"Days": 5}}
        for n, f in enumerate(filters)
    ])
    got = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["Filter"] for r in got] == filters
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


def test_tag_and_size_filters_choose_the_versions_that_expire(make_server):
    server = make_server(extra_env=FAST)
    s3 = server.client()
    s3.create_bucket(Bucket="tagexp")
    s3.put_object(Bucket="tagexp", Key="t/tmp", Body=b"x", Tagging="tier=tmp&team=a")
    s3.put_object(Bucket="tagexp", Key="t/keep", Body=b"x", Tagging="tier=keep")
    s3.put_object(Bucket="tagexp", Key="t/untagged", Body=b"x")
    s3.put_object(Bucket="tagexp", Key="t/changed", Body=b"x", Tagging="tier=keep")
    s3.put_object_tagging(Bucket="tagexp", Key="t/changed",
                          Tagging={"TagSet": [{"Key": "tier", "Value": "tmp"}]})
    s3.put_object(Bucket="tagexp", Key="s/small", Body=b"x" * 10)
    s3.put_object(Bucket="tagexp", Key="s/large", Body=b"x" * 5000)
    s3.create_bucket(Bucket="tagver")
    s3.put_bucket_versioning(Bucket="tagver", VersioningConfiguration={"Status": "Enabled"})
    old_tmp = s3.put_object(Bucket="tagver", Key="v", Body=b"1", Tagging="tier=tmp")["VersionId"]
    old_keep = s3.put_object(Bucket="tagver", Key="v", Body=b"2", Tagging="tier=keep")["VersionId"]
    latest = s3.put_object(Bucket="tagver", Key="v", Body=b"3")["VersionId"]
    # Tags changed on a version after it was written are the ones the rules see.
    now_tmp = s3.put_object(Bucket="tagver", Key="w", Body=b"1", Tagging="tier=keep")["VersionId"]
    s3.put_object_tagging(Bucket="tagver", Key="w", VersionId=now_tmp,
                          Tagging={"TagSet": [{"Key": "tier", "Value": "tmp"}]})
    now_keep = s3.put_object(Bucket="tagver", Key="x", Body=b"1", Tagging="tier=tmp")["VersionId"]
    s3.put_object_tagging(Bucket="tagver", Key="x", VersionId=now_keep,
                          Tagging={"TagSet": [{"Key": "tier", "Value": "keep"}]})
    w_latest = s3.put_object(Bucket="tagver", Key="w", Body=b"2")["VersionId"]
    x_latest = s3.put_object(Bucket="tagver", Key="x", Body=b"2")["VersionId"]
    put_rules(
        s3, "tagexp",
        {"ID": "tags", "Status": "Enabled", "Filter": {"Tag": {"Key": "tier", "Value": "tmp"}},
         "Expiration": {"Days": 1}},
        {"ID": "size", "Status": "Enabled",
         "Filter": {"And": {"Prefix": "s/", "ObjectSizeGreaterThan": 1000}},
         "Expiration": {"Days": 1}},
    )
    put_rules(
        s3, "tagver",
        {"ID": "old", "Status": "Enabled", "Filter": {"Tag": {"Key": "tier", "Value": "tmp"}},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
    )

    def keys():
        return [o["Key"] for o in s3.list_objects_v2(Bucket="tagexp").get("Contents", [])]

    def versions():
        return [v["VersionId"] for v in s3.list_object_versions(Bucket="tagver").get("Versions", [])]

    eventually("the tagged and the large objects expired", 20,
               lambda: keys() == ["s/small", "t/keep", "t/untagged"])
    eventually("the noncurrent versions tagged tmp deleted", 20,
               lambda: versions() == [latest, old_keep, w_latest, x_latest, now_keep])
    assert old_tmp not in versions() and now_tmp not in versions()
    import time

    time.sleep(2)  # more passes change nothing more
    assert keys() == ["s/small", "t/keep", "t/untagged"]
    assert versions() == [latest, old_keep, w_latest, x_latest, now_keep]


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
    # The rule filters on a tag: the deciding replica reads each version's tags.
    cluster = Cluster(make_server, storage=3, gateways=1, replicas=3, storage_env=FAST)
    s3 = cluster.gateways[0].client()
    s3.create_bucket(Bucket="cexp")
    s3.put_bucket_versioning(Bucket="cexp", VersioningConfiguration={"Status": "Enabled"})
    keys = [f"e/{i:02d}" for i in range(20)]
    for n, key in enumerate(keys):
        s3.put_object(Bucket="cexp", Key=key, Body=key.encode(),
                      Tagging="expire=yes" if n % 2 == 0 else "expire=no")
    put_rules(s3, "cexp", {"ID": "tagged", "Status": "Enabled",
                           "Filter": {"And": {"Prefix": "e/", "Tags": [{"Key": "expire", "Value": "yes"}]}},
                           "Expiration": {"Days": 1}})
    expiring = keys[::2]

    def markers_by_key():
        out: dict[str, int] = {}
        for page in s3.get_paginator("list_object_versions").paginate(Bucket="cexp"):
            for m in page.get("DeleteMarkers", []):
                out[m["Key"]] = out.get(m["Key"], 0) + 1
        return out

    eventually("every tagged object expired", 30, lambda: len(markers_by_key()) == len(expiring))
    import time

    time.sleep(3)  # more passes, on every node
    assert markers_by_key() == {key: 1 for key in expiring}
    assert metric_sum(cluster, "leofs_lifecycle_expired_total") == len(expiring)
