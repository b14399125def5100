"""Object tagging (S3 PutObjectTagging, GetObjectTagging, DeleteObjectTagging, `x-amz-tagging` on
PutObject, CopyObject with its tagging directive and CreateMultipartUpload), written from the S3
API reference: S3's limits and errors, tags kept with the object's body untouched, a tag change
racing overwrites never reverting one, aws-cli's s3api commands, and tags set through one gateway
of a 3-node cluster read through another."""

from __future__ import annotations

import json
import os
import threading

import pytest
from botocore.exceptions import ClientError

from leofs_harness import DEPLOYMENT, error_of, tag_set
from test_cluster import Cluster, eventually

MIB = 1 << 20


def tags_of(s3, bucket, key, **kw) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key, **kw)["TagSet"]}


def test_tags_given_on_put_are_read_back_and_counted_on_get(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"body", Tagging="team=storage&cost%20center=a%2Fb&empty=")
    assert tags_of(s3, bucket, "k") == {"team": "storage", "cost center": "a/b", "empty": ""}
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["TagCount"] == 3 and got["Body"].read() == b"body"
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    assert s3.get_object_tagging(Bucket=bucket, Key="plain")["TagSet"] == []
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="plain")
    assert error_of(lambda: s3.get_object_tagging(Bucket=bucket, Key="missing")) == (404, "NoSuchKey")


def test_put_and_delete_object_tagging_keep_the_body(server, s3, bucket):
    big = os.urandom(6 * MIB)  # chunked: the new record references the same chunks
    for key, body in [("small", b"small body"), ("big", big)]:
        etag = s3.put_object(Bucket=bucket, Key=key, Body=body, Tagging="a=1")["ETag"]
        s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tag_set({"b": "2", "c": "3"})})
        assert tags_of(s3, bucket, key) == {"b": "2", "c": "3"}
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == body and got["ETag"] == etag and got["TagCount"] == 2
        s3.delete_object_tagging(Bucket=bucket, Key=key)
        assert tags_of(s3, bucket, key) == {}
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        # Ranged reads of the rewritten record see the same bytes.
        part = s3.get_object(Bucket=bucket, Key=key, Range="bytes=3-6")["Body"].read()
        assert part == body[3:7]
    # The record each change replaced was queued as garbage: once the collector has been
    # through the queue, the chunks the new record references are still there.
    def garbage_pending():
        shards = json.loads(server.adm("status", json_output=True).stdout)["shards"]
        return sum(shard["garbage_pending"] for shard in shards)

    eventually("the garbage queue is empty", 20, lambda: garbage_pending() == 0)
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == big
    assert error_of(lambda: s3.put_object_tagging(
        Bucket=bucket, Key="missing", Tagging={"TagSet": tag_set({"a": "b"})})) == (404, "NoSuchKey")


def test_tag_sets_s3_refuses(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", Tagging="keep=me")
    bad = {
        "eleven tags": {f"k{i}": "v" for i in range(11)},
        "a 129-character key": {"k" * 129: "v"},
        "a 257-character value": {"k": "v" * 257},
        "an aws: key": {"aws:cloudformation": "v"},
    }
    for what, tags in bad.items():
        assert error_of(lambda: s3.put_object_tagging(
            Bucket=bucket, Key="k", Tagging={"TagSet": tag_set(tags)})) == (400, "InvalidTag"), what
        assert error_of(lambda: s3.put_object(
            Bucket=bucket, Key="new", Body=b"x",
            Tagging="&".join(f"{k}={v}" for k, v in tags.items()))) == (400, "InvalidTag"), what
    duplicate = [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]
    assert error_of(lambda: s3.put_object_tagging(
        Bucket=bucket, Key="k", Tagging={"TagSet": duplicate})) == (400, "InvalidTag")
    # The limits themselves are fine; nothing refused changed anything.
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": tag_set({f"k{i}": "v" for i in range(10)})})
    assert len(tags_of(s3, bucket, "k")) == 10
    s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": tag_set({"k" * 128: "v" * 256})})
    assert tags_of(s3, bucket, "k") == {"k" * 128: "v" * 256}
    assert error_of(lambda: s3.head_object(Bucket=bucket, Key="new"))[0] == 404


def test_copy_tagging_directive_and_multipart_tags(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source", Tagging="from=src")
    s3.copy_object(Bucket=bucket, Key="copied", CopySource=f"{bucket}/src")
    assert tags_of(s3, bucket, "copied") == {"from": "src"}
    s3.copy_object(Bucket=bucket, Key="copied2", CopySource=f"{bucket}/src", TaggingDirective="COPY")
    assert tags_of(s3, bucket, "copied2") == {"from": "src"}
    s3.copy_object(Bucket=bucket, Key="replaced", CopySource=f"{bucket}/src",
                   TaggingDirective="REPLACE", Tagging="to=dst")
    assert tags_of(s3, bucket, "replaced") == {"to": "dst"}
    s3.copy_object(Bucket=bucket, Key="cleared", CopySource=f"{bucket}/src", TaggingDirective="REPLACE")
    assert tags_of(s3, bucket, "cleared") == {}
    assert error_of(lambda: s3.copy_object(
        Bucket=bucket, Key="bad", CopySource=f"{bucket}/src", TaggingDirective="MERGE"))[0] == 400
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", Tagging="kind=multipart")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"p" * 100)
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert tags_of(s3, bucket, "mp") == {"kind": "multipart"}
    assert error_of(lambda: s3.create_multipart_upload(
        Bucket=bucket, Key="mp2", Tagging="&".join(f"k{i}=v" for i in range(11)))) == (400, "InvalidTag")


def test_tags_of_versions_change_version_by_version_and_versions_are_not_rewritten(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    big = os.urandom(6 * MIB)
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=big, Tagging="v=1")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"two", Tagging="v=2")["VersionId"]
    assert tags_of(s3, bucket, "k") == {"v": "2"}
    assert tags_of(s3, bucket, "k", VersionId=v1) == {"v": "1"}
    assert s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=v1)["VersionId"] == v1
    before = s3.head_object(Bucket=bucket, Key="k", VersionId=v1)

    # A noncurrent version named by id: its tags change, and nothing else does.
    answer = s3.put_object_tagging(Bucket=bucket, Key="k", VersionId=v1,
                                   Tagging={"TagSet": tag_set({"v": "x", "extra": "y"})})
    assert answer["VersionId"] == v1
    assert tags_of(s3, bucket, "k", VersionId=v1) == {"v": "x", "extra": "y"}
    assert tags_of(s3, bucket, "k") == {"v": "2"}
    got = s3.get_object(Bucket=bucket, Key="k", VersionId=v1)
    assert got["Body"].read() == big and got["TagCount"] == 2
    after = s3.head_object(Bucket=bucket, Key="k", VersionId=v1)
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert [v["VersionId"] for v in versions] == [v2, v1]

    # Without an id: the latest version's, answered with its id; changed again, and removed.
    assert s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": tag_set({"v": "z"})})[
        "VersionId"] == v2
    assert s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": tag_set({"v": "w"})})[
        "VersionId"] == v2
    assert tags_of(s3, bucket, "k") == {"v": "w"}
    assert s3.delete_object_tagging(Bucket=bucket, Key="k")["VersionId"] == v2
    assert tags_of(s3, bucket, "k") == {}
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="k")
    assert tags_of(s3, bucket, "k", VersionId=v1) == {"v": "x", "extra": "y"}

    # A copy of a version takes the tags it has now.
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k", "VersionId": v1})
    assert tags_of(s3, bucket, "copy") == {"v": "x", "extra": "y"}

    # A version deleted for good has no tags to change; neither has a delete marker.
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v1)
    assert error_of(lambda: s3.put_object_tagging(
        Bucket=bucket, Key="k", VersionId=v1, Tagging={"TagSet": tag_set({"a": "b"})}))[:2] == (404, "NoSuchVersion")
    assert error_of(lambda: s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=v1))[:2] == (404, "NoSuchVersion")
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    assert error_of(lambda: s3.put_object_tagging(
        Bucket=bucket, Key="k", Tagging={"TagSet": tag_set({"a": "b"})}))[:2] == (404, "NoSuchKey")
    assert error_of(lambda: s3.put_object_tagging(
        Bucket=bucket, Key="k", VersionId=marker, Tagging={"TagSet": tag_set({"a": "b"})}))[:2] == (405, "MethodNotAllowed")
    assert tags_of(s3, bucket, "k", VersionId=v2) == {}


def test_the_null_version_s_tags_change_until_a_write_replaces_it(s3, bucket):
    s3.put_object(Bucket=bucket, Key="n", Body=b"before versioning", Tagging="era=old")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="n", Body=b"a version")
    answer = s3.put_object_tagging(Bucket=bucket, Key="n", VersionId="null",
                                   Tagging={"TagSet": tag_set({"era": "changed"})})
    assert answer["VersionId"] == "null"
    assert tags_of(s3, bucket, "n", VersionId="null") == {"era": "changed"}
    assert tags_of(s3, bucket, "n") == {}
    # Suspended: writes replace the null version, which starts with the tags it is written with.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=bucket, Key="n", Body=b"replaced", Tagging="era=new")
    assert tags_of(s3, bucket, "n") == {"era": "new"}
    assert s3.put_object_tagging(Bucket=bucket, Key="n", Tagging={"TagSet": tag_set({"era": "newer"})})[
        "VersionId"] == "null"
    assert tags_of(s3, bucket, "n", VersionId="null") == {"era": "newer"}
    s3.put_object(Bucket=bucket, Key="n", Body=b"replaced again")
    assert tags_of(s3, bucket, "n") == {}
    assert s3.get_object(Bucket=bucket, Key="n")["Body"].read() == b"replaced again"


def test_a_tag_change_racing_overwrites_never_reverts_one(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"0")
    written: list[bytes] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def overwrite():
        try:
            for n in range(1, 60):
                body = str(n).encode()
                s3.put_object(Bucket=bucket, Key="k", Body=body)
                written.append(body)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            stop.set()

    writer = threading.Thread(target=overwrite)
    writer.start()
    changes = 0
    while not stop.is_set():
        try:
            s3.put_object_tagging(Bucket=bucket, Key="k", Tagging={"TagSet": tag_set({"n": str(changes)})})
            changes += 1
        except ClientError as e:
            # Replaced under every attempt: S3's SlowDown, nothing written.
            assert e.response["Error"]["Code"] == "SlowDown", e.response
    writer.join()
    assert not errors, errors
    assert changes > 0
    # The last acknowledged overwrite is what the object holds.
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == written[-1]


def test_aws_cli_s3api_tagging(aws, s3, bucket):
    s3.put_object(Bucket=bucket, Key="cli", Body=b"x")
    aws("s3api", "put-object-tagging", "--bucket", bucket, "--key", "cli",
        "--tagging", "TagSet=[{Key=env,Value=prod},{Key=owner,Value=ops}]")
    got = json.loads(aws("s3api", "get-object-tagging", "--bucket", bucket, "--key", "cli").stdout)
    assert got["TagSet"] == [{"Key": "env", "Value": "prod"}, {"Key": "owner", "Value": "ops"}]
    aws("s3api", "put-object", "--bucket", bucket, "--key", "cli2", "--tagging", "a=b")
    assert tags_of(s3, bucket, "cli2") == {"a": "b"}
    aws("s3api", "delete-object-tagging", "--bucket", bucket, "--key", "cli")
    got = json.loads(aws("s3api", "get-object-tagging", "--bucket", bucket, "--key", "cli").stdout)
    assert got["TagSet"] == []
    # A version named by id, in a versioned bucket.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="cli", Body=b"1")["VersionId"]
    s3.put_object(Bucket=bucket, Key="cli", Body=b"2")
    answer = json.loads(aws("s3api", "put-object-tagging", "--bucket", bucket, "--key", "cli",
                            "--version-id", first, "--tagging", "TagSet=[{Key=gen,Value=first}]").stdout)
    assert answer["VersionId"] == first
    got = json.loads(aws("s3api", "get-object-tagging", "--bucket", bucket, "--key", "cli",
                         "--version-id", first).stdout)
    assert got == {"VersionId": first, "TagSet": [{"Key": "gen", "Value": "first"}]}
    assert tags_of(s3, bucket, "cli") == {}


@pytest.mark.skipif(DEPLOYMENT == "split", reason="starts its own cluster; run in the all-in-one pass")
def test_tags_set_through_one_gateway_are_read_through_another(make_server):
    cluster = Cluster(make_server, storage=3, gateways=2, replicas=3)
    a, b = (g.client() for g in cluster.gateways)
    a.create_bucket(Bucket="tags")
    keys = [f"k{i:02d}" for i in range(12)]
    for key in keys:
        a.put_object(Bucket="tags", Key=key, Body=key.encode(), Tagging=f"key={key}")
    for key in keys:
        assert tags_of(b, "tags", key) == {"key": key}
        b.put_object_tagging(Bucket="tags", Key=key, Tagging={"TagSet": tag_set({"by": "b"})})
    for key in keys:
        assert tags_of(a, "tags", key) == {"by": "b"}
        got = a.get_object(Bucket="tags", Key=key)
        assert got["Body"].read() == key.encode() and got["TagCount"] == 1
    # Versions: the tags set on one version through one gateway are that version's through the
    # other, on every key's replicas.
    a.create_bucket(Bucket="vtags")
    a.put_bucket_versioning(Bucket="vtags", VersioningConfiguration={"Status": "Enabled"})
    first = {key: a.put_object(Bucket="vtags", Key=key, Body=b"1")["VersionId"] for key in keys}
    for key in keys:
        a.put_object(Bucket="vtags", Key=key, Body=b"2", Tagging="n=2")
    for key in keys:
        b.put_object_tagging(Bucket="vtags", Key=key, VersionId=first[key],
                             Tagging={"TagSet": tag_set({"n": "1"})})
    for key in keys:
        assert tags_of(a, "vtags", key, VersionId=first[key]) == {"n": "1"}
        assert tags_of(a, "vtags", key) == {"n": "2"}
