"""LeoFS's plain REST API (`--rest-listen`): GET/HEAD/PUT/DELETE /<bucket>/<key>.

The REST API carries no signatures (gateway/src/rest.rs): every request is anonymous and gets what
the bucket's canned ACL grants anyone (write on public-read-write) and, for reads, what the object's
ACL grants anyone (an object written here without ACL headers has its bucket's: read on
public-read and public-read-write, LeoFS's meaning).
"""

from __future__ import annotations

import hashlib
import os

import requests

MIB = 1 << 20


def test_rest_round_trip_and_acls(make_server):
    srv = make_server(rest=True)
    base = srv.rest_endpoint
    s3 = srv.client()
    s3.create_bucket(Bucket="rest-rw", ACL="public-read-write")
    s3.create_bucket(Bucket="rest-ro", ACL="public-read")
    s3.create_bucket(Bucket="rest-priv")

    for key, body in (("small.txt", b"rest body"), ("dir/big.bin", os.urandom(9 * MIB + 1)),
                      ("with space.txt", b"spaced")):
        url = f"{base}/rest-rw/{requests.utils.quote(key)}"
        r = requests.put(url, data=body, headers={"content-type": "text/x-rest"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
        r = requests.get(url, timeout=60)
        assert r.status_code == 200 and r.content == body
        assert r.headers["content-type"] == "text/x-rest"
        r = requests.head(url, timeout=60)
        assert r.status_code == 200
        assert int(r.headers["content-length"]) == len(body)
        assert r.headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
        # Same storage as S3.
        assert s3.get_object(Bucket="rest-rw", Key=key)["Body"].read() == body

    s3.put_object(Bucket="rest-rw", Key="from-s3", Body=b"written by s3", ACL="public-read")
    assert requests.get(f"{base}/rest-rw/from-s3", timeout=30).content == b"written by s3"

    r = requests.delete(f"{base}/rest-rw/small.txt", timeout=30)
    assert r.status_code == 204
    # REST requests are counted on /metrics beside S3's (the gateway process's, when split).
    serving = srv.gateway or srv
    metrics = requests.get(f"http://{serving.admin_addr}/metrics", timeout=10).text
    for line in ('leofs_s3_requests_total{operation="RestPutObject",status="200"} 3',
                 'leofs_s3_requests_total{operation="RestHeadObject",status="200"} 3',
                 'leofs_s3_requests_total{operation="RestDeleteObject",status="204"} 1'):
        assert line in metrics.splitlines(), (line, metrics)
    r = requests.get(f"{base}/rest-rw/small.txt", timeout=30)
    assert r.status_code == 404 and "NoSuchKey" in r.text
    assert "small.txt" not in [o["Key"] for o in s3.list_objects_v2(Bucket="rest-rw")["Contents"]]

    s3.put_object(Bucket="rest-ro", Key="k", Body=b"read only", ACL="public-read")
    assert requests.get(f"{base}/rest-ro/k", timeout=30).content == b"read only"
    r = requests.put(f"{base}/rest-ro/k", data=b"overwrite", timeout=30)
    assert r.status_code == 403 and "AccessDenied" in r.text
    r = requests.delete(f"{base}/rest-ro/k", timeout=30)
    assert r.status_code == 403
    assert s3.get_object(Bucket="rest-ro", Key="k")["Body"].read() == b"read only"

    s3.put_object(Bucket="rest-priv", Key="k", Body=b"private")
    r = requests.get(f"{base}/rest-priv/k", timeout=30)
    assert r.status_code == 403 and b"private" not in r.content

    # Anonymous callers cannot tell a missing bucket from a private one (gateway/src/auth.rs).
    r = requests.get(f"{base}/no-such-bucket/k", timeout=30)
    assert (r.status_code, r.text.strip()) in ((403, "AccessDenied"), (404, "NoSuchBucket"))
    r = requests.get(f"{base}/rest-rw", timeout=30)
    assert r.status_code == 400
