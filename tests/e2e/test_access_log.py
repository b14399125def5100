"""The access log (`--access-log FILE`): one line per request in S3's server access log format
(fields from the S3 user guide's "Amazon S3 server access log format"), signed, anonymous and
failed requests alike, the REST API's too, rotated by size into FILE.1…FILE.N."""

from __future__ import annotations

import re
import time
from pathlib import Path

import requests

from leofs_harness import error_of

# bucket_owner bucket [time] remote_ip requester request_id operation key "request_uri" status
# error_code bytes_sent object_size total_time turn_around_time "referer" "user_agent" version_id
# host_id signature_version cipher_suite authentication_type host_header tls_version
# access_point_arn acl_required
LINE = re.compile(
    r'^(?P<owner>\S+) (?P<bucket>\S+) \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000)\] '
    r'(?P<ip>\S+) (?P<requester>\S+) (?P<request_id>[0-9A-F]{16}|-) (?P<operation>REST\.[A-Z]+\.[A-Z_]+) '
    r'(?P<key>\S+) "(?P<uri>[^"]*)" (?P<status>\d{3}) (?P<error>\S+) (?P<sent>\S+) (?P<size>\S+) '
    r'(?P<total>\d+) (?P<turn>\d+) "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)" '
    r'(?P<version>\S+) (?P<host_id>\S+) (?P<sig>\S+) - (?P<auth>\S+) (?P<host>\S+) - - - -$'
)


def lines_of(path: Path, count: int, timeout_s: float = 10) -> list[dict]:
    """The log's parsed lines once it has at least `count` (the writer flushes within a second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = path.read_text() if path.exists() else ""
        lines = text.splitlines()
        if len(lines) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    parsed = []
    for line in lines:
        m = LINE.match(line)
        assert m, f"not in S3's access log format: {line!r}"
        parsed.append(m.groupdict())
    assert len(parsed) >= count, parsed
    return parsed


def test_every_request_is_logged_in_s3s_format(make_server, tmp_path):
    log = tmp_path / "access.log"
    srv = make_server(rest=True, deployment="all-in-one", extra_args=["--access-log", str(log)])
    s3 = srv.client()
    s3.create_bucket(Bucket="logged", ACL="public-read")
    body = b"x" * 3000
    s3.put_object(Bucket="logged", Key="dir/a b.txt", Body=body, ACL="public-read")
    assert s3.get_object(Bucket="logged", Key="dir/a b.txt", Range="bytes=0-9")["Body"].read() == body[:10]
    assert error_of(lambda: s3.head_object(Bucket="logged", Key="missing")) == (404, "404")
    got = requests.get(f"{srv.endpoint}/logged/dir/a%20b.txt", headers={"Referer": "http://example.com/"},
                       timeout=10)
    assert got.status_code == 200
    r = requests.put(f"{srv.endpoint}/logged/anonymous", data=b"no", timeout=10)
    assert r.status_code == 403
    r = requests.get(f"http://127.0.0.1:{srv.rest_port}/logged/dir/a%20b.txt", timeout=10)
    assert r.status_code == 200
    # A signature that does not verify never names the key's user; a client-given newline or
    # space never ends a field or a line.
    bad = srv.client(srv.access_key, "not-the-secret")
    assert error_of(lambda: bad.get_object(Bucket="logged", Key="x")) == (403, "SignatureDoesNotMatch")
    r2 = requests.get(f"{srv.endpoint}/logged/a%0Aforged%20line", headers={"Host": "h o s t"}, timeout=10)
    assert r2.status_code in (400, 403, 404)
    lines = lines_of(log, 9)
    owner = s3.list_buckets()["Owner"]["ID"]
    # Lines are written as answers finish, on whichever core served them: each is found by
    # what it is, not by its place.
    def one(**fields):
        found = [line for line in lines if all(line[k] == v for k, v in fields.items())]
        assert len(found) == 1, (fields, lines)
        return found[0]

    create = one(operation="REST.PUT.BUCKET")
    put = one(operation="REST.PUT.OBJECT", status="200")
    ranged = one(operation="REST.GET.OBJECT", status="206")
    head = one(operation="REST.HEAD.OBJECT")
    anonymous = one(operation="REST.GET.OBJECT", status="200", sig="-", request_id=got.headers["x-amz-request-id"])
    refused = one(operation="REST.PUT.OBJECT", status="403")
    rest = one(request_id="-")
    forged = one(error="SignatureDoesNotMatch")
    injected = one(host="h%20o%20s%20t")
    assert (forged["requester"], forged["status"], forged["error"]) == ("-", "403", "SignatureDoesNotMatch")
    assert injected["key"] == "a%0Aforged%20line" and injected["host"] == "h%20o%20s%20t"
    assert (create["operation"], create["bucket"], create["owner"], create["status"]) == (
        "REST.PUT.BUCKET", "logged", owner, "200")
    assert put["operation"] == "REST.PUT.OBJECT" and put["key"] == "dir/a%20b.txt"
    assert put["requester"] == owner and put["size"] == "3000" and put["sig"] == "SigV4"
    assert put["auth"] == "AuthHeader" and put["ip"] == "127.0.0.1"
    assert ranged["status"] == "206" and ranged["sent"] == "10" and ranged["size"] == "3000"
    assert (head["operation"], head["status"], head["error"]) == ("REST.HEAD.OBJECT", "404", "NoSuchKey")
    assert anonymous["requester"] == "-" and anonymous["sig"] == "-" and anonymous["sent"] == "3000"
    assert anonymous["referer"] == "http://example.com/" and "python-requests" in anonymous["agent"]
    assert (refused["status"], refused["error"], refused["operation"]) == ("403", "AccessDenied", "REST.PUT.OBJECT")
    assert rest["operation"] == "REST.GET.OBJECT" and rest["status"] == "200" and rest["sent"] == "3000"
    # S3 answers' request ids and host ids are the answer's own (the REST API's carry none).
    ids = [line["request_id"] for line in lines if line["request_id"] != "-"]
    assert len(ids) == len(set(ids)) == len(lines) - 1
    assert (got.headers["x-amz-request-id"], got.headers["x-amz-id-2"]) == (
        anonymous["request_id"], anonymous["host_id"])


def test_the_log_rotates_by_size(make_server, tmp_path):
    log = tmp_path / "rotated.log"
    srv = make_server(deployment="all-in-one", extra_args=[
        "--access-log", str(log), "--access-log-max-bytes", "4096", "--access-log-files", "2"])
    s3 = srv.client()
    s3.create_bucket(Bucket="many")
    for i in range(60):
        s3.put_object(Bucket="many", Key=f"k{i}", Body=b"v")
    rotated = [Path(f"{log}.1"), Path(f"{log}.2")]

    def sizes():
        try:
            return tuple(p.stat().st_size for p in [log, *rotated])
        except FileNotFoundError:
            return None  # not rotated twice yet, or a rotation is under way

    # A request's line is written after its answer went out, so the last lines (and a rotation,
    # which renames the files one after the other) may still come: wait until the files exist
    # and stay the same for half a second.
    deadline = time.monotonic() + 10
    last = None
    while time.monotonic() < deadline:
        now = sizes()
        if now is not None and now == last:
            break
        last = now
        time.sleep(0.5)
    assert sizes() is not None, "the log was not rotated twice"
    assert not Path(f"{log}.3").exists()
    for p in [log, *rotated]:
        assert p.stat().st_size <= 4096
        for line in p.read_text().splitlines():
            assert LINE.match(line), line
    # The newest lines are kept, none twice (lines of different cores need not be in request
    # order).
    time.sleep(1.5)
    keys = [LINE.match(line)["key"] for p in [rotated[1], rotated[0], log] for line in p.read_text().splitlines()]
    numbers = [int(k[1:]) for k in keys if k.startswith("k")]
    assert len(numbers) == len(set(numbers)) >= 20 and 59 in numbers
