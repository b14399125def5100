"""Bucket tagging and CORS (issue 18), written from the S3 API reference: Put/Get/DeleteBucketTagging
and Put/Get/DeleteBucketCors with S3's limits and errors, preflight OPTIONS answered from the rules
(unsigned, as browsers send them), and the CORS headers on the answers of signed and presigned
requests from an allowed origin; on a cluster, settings made through one gateway are in effect on
another."""

from __future__ import annotations

import pytest
import requests

from leofs_harness import DEPLOYMENT, error_of, raw_request, tag_set
from test_cluster import Cluster, eventually


def test_bucket_tagging(s3, bucket):
    assert error_of(lambda: s3.get_bucket_tagging(Bucket=bucket)) == (404, "NoSuchTagSet")
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tag_set({"team": "storage", "env": ""})})
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == tag_set({"team": "storage", "env": ""})
    fifty = {f"k{i}": "v" for i in range(50)}
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tag_set(fifty)})
    assert len(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == 50
    for what, tags in {
        "51 tags": tag_set({f"k{i}": "v" for i in range(51)}),
        "an aws: key": tag_set({"aws:x": "v"}),
        "a 129-character key": tag_set({"k" * 129: "v"}),
        "a repeated key": [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}],
    }.items():
        assert error_of(lambda: s3.put_bucket_tagging(
            Bucket=bucket, Tagging={"TagSet": tags})) == (400, "InvalidTag"), what
    assert len(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == 50
    s3.delete_bucket_tagging(Bucket=bucket)
    assert error_of(lambda: s3.get_bucket_tagging(Bucket=bucket)) == (404, "NoSuchTagSet")
    assert error_of(lambda: s3.get_bucket_tagging(Bucket="no-such-bucket-here")) == (404, "NoSuchBucket")


RULES = [
    {"ID": "site", "AllowedOrigins": ["https://*.example.com"], "AllowedMethods": ["GET", "PUT"],
     "AllowedHeaders": ["x-amz-*", "Content-Type"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
]


def test_bucket_cors_configuration(s3, bucket):
    assert error_of(lambda: s3.get_bucket_cors(Bucket=bucket)) == (404, "NoSuchCORSConfiguration")
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES
    for what, rules in {
        "an unsupported method": [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}],
        "two wildcards in an origin": [{"AllowedOrigins": ["https://*.*.com"], "AllowedMethods": ["GET"]}],
        "101 rules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}] * 101,
        "a wildcard ExposeHeader": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "ExposeHeaders": ["*"]}],
        "over 64 KiB": [{"AllowedOrigins": [f"https://{'o' * 700}-{n}.example"], "AllowedMethods": ["GET"]}
                        for n in range(100)],
    }.items():
        assert error_of(lambda: s3.put_bucket_cors(
            Bucket=bucket, CORSConfiguration={"CORSRules": rules})) == (400, "InvalidRequest"), what
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES
    s3.delete_bucket_cors(Bucket=bucket)
    assert error_of(lambda: s3.get_bucket_cors(Bucket=bucket)) == (404, "NoSuchCORSConfiguration")


def preflight(server, path, origin, method, headers=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return requests.options(f"{server.endpoint}{path}", headers={k: v for k, v in h.items() if v}, timeout=10)


def test_preflights_are_answered_from_the_rules(server, s3, bucket):
    r = preflight(server, f"/{bucket}/k", "https://app.example.com", "GET")
    assert r.status_code == 403 and "AccessForbidden" in r.text  # no configuration yet
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    r = preflight(server, f"/{bucket}/k", "https://app.example.com", "PUT", "X-Amz-Date, content-type")
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert r.headers["Access-Control-Allow-Methods"] == "GET, PUT"
    assert r.headers["Access-Control-Allow-Headers"] == "X-Amz-Date, content-type"
    assert r.headers["Access-Control-Expose-Headers"] == "ETag"
    assert r.headers["Access-Control-Max-Age"] == "600"
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    # The second rule: any origin, GET only, no headers.
    r = preflight(server, f"/{bucket}/k", "http://elsewhere", "GET")
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    for origin, method, headers in [("http://elsewhere", "PUT", None),
                                    ("https://app.example.com", "DELETE", None),
                                    ("https://app.example.com", "PUT", "x-other")]:
        r = preflight(server, f"/{bucket}/k", origin, method, headers)
        assert r.status_code == 403 and "AccessForbidden" in r.text, (origin, method, headers)
    assert preflight(server, f"/{bucket}/k", "", "GET").status_code == 400
    assert preflight(server, f"/{bucket}/k", "http://elsewhere", "").status_code == 400


def test_answers_to_allowed_origins_carry_cors_headers(server, s3, bucket):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": RULES})
    s3.put_object(Bucket=bucket, Key="k", Body=b"body")
    r = raw_request(server, "GET", f"/{bucket}/k", headers={"origin": "https://app.example.com"})
    assert r.status == 200 and r.body == b"body"
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert r.headers["access-control-expose-headers"] == "ETag"
    r = raw_request(server, "PUT", f"/{bucket}/k2", body=b"x", headers={"origin": "https://app.example.com"})
    assert r.status == 200 and r.headers["access-control-allow-origin"] == "https://app.example.com"
    # Presigned: what a browser page does with a link.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"})
    r = requests.get(url, headers={"Origin": "http://elsewhere"}, timeout=10)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    # An origin or method no rule allows gets no CORS headers.
    r = raw_request(server, "DELETE", f"/{bucket}/k2", headers={"origin": "http://elsewhere"})
    assert r.status == 204 and "access-control-allow-origin" not in r.headers
    r = raw_request(server, "GET", f"/{bucket}/k")
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.skipif(DEPLOYMENT == "split", reason="starts its own cluster; run in the all-in-one pass")
def test_settings_made_through_one_gateway_hold_on_another(make_server):
    cluster = Cluster(make_server, storage=2, gateways=2, replicas=2)
    a, b = (g.client() for g in cluster.gateways)
    a.create_bucket(Bucket="settings")
    a.put_bucket_tagging(Bucket="settings", Tagging={"TagSet": tag_set({"made": "via-a"})})
    a.put_bucket_cors(Bucket="settings", CORSConfiguration={"CORSRules": RULES})
    eventually("the tags are seen through b", 10,
               lambda: b.get_bucket_tagging(Bucket="settings")["TagSet"] == tag_set({"made": "via-a"}))
    eventually("the rules answer preflights on b", 10,
               lambda: preflight(cluster.gateways[1], "/settings/k", "https://x.example.com", "GET").status_code == 200)
    b.delete_bucket_cors(Bucket="settings")
    eventually("the rules are gone on a", 10,
               lambda: preflight(cluster.gateways[0], "/settings/k", "https://x.example.com", "GET").status_code == 403)
