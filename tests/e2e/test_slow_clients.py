"""Clients that stall, trickle or crowd the server (issue 10, item 5).

- A request body that makes no progress for `--body-idle-timeout-secs` ends with S3's
  RequestTimeout (400) and the connection is closed, on every path: the fast path, s3s (plain,
  aws-chunked, UploadPart, an XML body) and the REST API; nothing stays open.
- A body that keeps making progress, however slowly, is not cut.
- Over `--connections-per-core-max`, a new connection is answered 503 SlowDown, then closed
  (not reset).
- The admin API still answers while 64 idle local connections are open to it.
"""

from __future__ import annotations

import os
import socket
import time
import xml.etree.ElementTree as ET

import pytest
from botocore.exceptions import ClientError

from leofs_harness import connections_on, raw_request, sigv4_headers

IDLE_S = 2
#: How late after the idle time the answer may come (timer granularity, a loaded CI machine).
SLACK_S = 3


def open_fds(srv) -> int:
    """Client connections the server process holds open on its S3 and REST ports (not its
    listeners, and not the connections a gateway-only process keeps to storage)."""
    ports = {srv.s3_port} | ({srv.rest_port} if srv.rest_port else set())
    return connections_on(srv.http_pid, ports)


def settled_fds(srv, timeout_s: float = 10.0) -> int:
    """The server's socket count once it has stopped changing (connections of earlier requests
    may still be closing), so that a later count compares against a true baseline."""
    last = open_fds(srv)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = open_fds(srv)
        if now == last:
            return now
        last = now
    return last


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def read_until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection (raises on timeout/reset)."""
    sock.settimeout(timeout_s)
    data = b""
    while True:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def start_stalled(port: int, head: str, body_prefix: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.encode() + body_prefix)
    return sock


def signed_head(srv, method: str, path: str, query: str, headers: dict[str, str],
                payload: str = "UNSIGNED-PAYLOAD") -> str:
    qdict = dict(p.split("=", 1) if "=" in p else (p, "") for p in query.split("&") if p)
    signed = sigv4_headers(method, f"127.0.0.1:{srv.s3_port}", path, qdict, headers, payload,
                           srv.access_key, srv.secret_key)
    target = path + (f"?{query}" if query else "")
    return f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in signed.items()) + "\r\n"


def assert_request_timeout(sock: socket.socket, started: float) -> None:
    data = read_until_closed(sock, IDLE_S + SLACK_S + 5)
    elapsed = time.monotonic() - started
    assert data, "closed without an answer"
    status, headers, body = parse_response(data)
    assert status == 400, data[:500]
    # S3 answers with its XML error document, the REST API with the code as text.
    code = ET.fromstring(body).findtext("Code") if body.startswith(b"<?xml") else body.decode().strip()
    assert code == "RequestTimeout", body
    assert headers.get("connection") == "close", headers
    assert IDLE_S - 0.2 <= elapsed <= IDLE_S + SLACK_S, elapsed


@pytest.fixture
def slow_server(make_server):
    srv = make_server(rest=True, extra_args=["--body-idle-timeout-secs", str(IDLE_S)])
    s3 = srv.client()
    s3.create_bucket(Bucket="slow")
    s3.create_bucket(Bucket="slow-rest", ACL="public-read-write")
    return srv


def test_stalled_bodies_end_with_request_timeout_on_every_path(slow_server):
    srv = slow_server
    s3 = srv.client()
    uid = s3.create_multipart_upload(Bucket="slow", Key="mp")["UploadId"]
    s3.upload_part(Bucket="slow", Key="mp", UploadId=uid, PartNumber=1, Body=b"p" * 100)
    size = 1 << 20
    cases = {
        # Plain PUT: the fast path.
        "fast-path": (srv.s3_port, signed_head(srv, "PUT", "/slow/fast", "", {"content-length": str(size)}), b"x" * 1000),
        # Metadata sends it to s3s.
        "s3s": (srv.s3_port, signed_head(srv, "PUT", "/slow/s3s", "", {"content-length": str(size), "x-amz-meta-a": "b"}), b"x" * 1000),
        "aws-chunked": (srv.s3_port, signed_head(srv, "PUT", "/slow/chunked", "", {
            "content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(size),
            "x-amz-trailer": "x-amz-checksum-crc32", "content-length": str(size + 100)},
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER"), f"{size:x}\r\n".encode() + b"x" * 1000),
        "upload-part": (srv.s3_port, signed_head(srv, "PUT", "/slow/mp", f"partNumber=2&uploadId={uid}", {"content-length": str(size)}), b"x" * 1000),
        "complete-xml": (srv.s3_port, signed_head(srv, "POST", "/slow/mp", f"uploadId={uid}", {"content-length": "500"}), b"<CompleteMultipartUpload>"),
        "rest": (srv.rest_port, f"PUT /slow-rest/rest HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n", b"x" * 1000),
    }
    baseline = settled_fds(srv)
    for name, (port, head, prefix) in cases.items():
        started = time.monotonic()
        sock = start_stalled(port, head, prefix)
        try:
            assert_request_timeout(sock, started)
        except Exception as e:
            raise AssertionError(f"case {name}: {e}") from e
        finally:
            sock.close()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="slow").get("Contents", [])]
    assert keys == [], keys
    assert [p["PartNumber"] for p in s3.list_parts(Bucket="slow", Key="mp", UploadId=uid)["Parts"]] == [1]
    assert wait_for(lambda: open_fds(srv) <= baseline), (open_fds(srv), baseline)


def test_five_stalled_uploads_are_all_closed(slow_server):
    """The issue's case: 5 stalled uploads must not stay open."""
    srv = slow_server
    baseline = settled_fds(srv)
    started = time.monotonic()
    socks = [start_stalled(srv.s3_port, signed_head(srv, "PUT", f"/slow/stalled-{i}", "",
                                                    {"content-length": str(10 << 20)}), b"y" * 4096)
             for i in range(5)]
    try:
        assert wait_for(lambda: open_fds(srv) >= baseline + 5, 5)
        for sock in socks:
            assert_request_timeout(sock, started)
    finally:
        for sock in socks:
            sock.close()
    assert wait_for(lambda: open_fds(srv) <= baseline), (open_fds(srv), baseline)
    # And the server serves as before.
    s3 = srv.client()
    s3.put_object(Bucket="slow", Key="after", Body=b"fine")
    assert s3.get_object(Bucket="slow", Key="after")["Body"].read() == b"fine"


@pytest.mark.parametrize("path", ["fast-path", "s3s", "rest"])
def test_trickling_body_is_not_cut(slow_server, path):
    """One byte every idle/2 seconds for more than three idle periods: slow, but progressing."""
    srv = slow_server
    body = b"trickle!"
    if path == "rest":
        port, key = srv.rest_port, "/slow-rest/trickle"
        head = f"PUT {key} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n"
    else:
        port, key = srv.s3_port, f"/slow/trickle-{path}"
        extra = {"x-amz-meta-a": "b"} if path == "s3s" else {}
        head = signed_head(srv, "PUT", key, "", {"content-length": str(len(body)), **extra})
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(head.encode())
        for byte in body:
            time.sleep(IDLE_S / 2)
            sock.sendall(bytes([byte]))
        data = read_until_closed_or_response(sock)
    finally:
        sock.close()
    status, _, resp_body = parse_response(data)
    assert status == 200, data
    bucket, name = key.strip("/").split("/", 1)
    assert srv.client().get_object(Bucket=bucket, Key=name)["Body"].read() == body


def read_until_closed_or_response(sock: socket.socket) -> bytes:
    """One response (head and Content-Length body) from a keep-alive connection."""
    sock.settimeout(30)
    data = b""
    while True:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            _, headers, _ = parse_response(data)
            if len(body) >= int(headers.get("content-length", "0")):
                return data


def test_connections_over_the_cap_get_503_slow_down(make_server):
    srv = make_server(cores=2, extra_args=["--connections-per-core-max", "2"])
    # Over a connection of its own, closed at once: it must not hold a slot.
    assert raw_request(srv, "PUT", "/capped").status == 200
    time.sleep(0.5)
    idle = [socket.create_connection(("127.0.0.1", srv.s3_port), timeout=10) for _ in range(4)]
    try:
        time.sleep(0.5)
        # A fifth connection: 503 SlowDown in S3's format, then an orderly close.
        r = raw_request(srv, "GET", "/capped", query={"list-type": "2"})
        assert r.status == 503 and r.error_code() == "SlowDown", r
        sock = socket.create_connection(("127.0.0.1", srv.s3_port), timeout=10)
        try:
            # A PUT whose body the server never reads: still an answer, not a reset.
            body = os.urandom(256 << 10)
            head = signed_head(srv, "PUT", "/capped/over", "", {"content-length": str(len(body))})
            sock.sendall(head.encode() + body)
            data = read_until_closed(sock, 10)
        finally:
            sock.close()
        status, headers, resp_body = parse_response(data)
        assert status == 503 and ET.fromstring(resp_body).findtext("Code") == "SlowDown", data[:500]
        assert headers.get("connection") == "close", headers
        with pytest.raises(ClientError) as e:
            srv.client().put_object(Bucket="capped", Key="over", Body=b"x")
        assert e.value.response["Error"]["Code"] == "SlowDown"
    finally:
        for sock in idle:
            sock.close()
    # Slots are released as connections close.
    assert wait_for(lambda: raw_request(srv, "GET", "/capped", query={"list-type": "2"}).status == 200)
    s3 = srv.client()
    s3.put_object(Bucket="capped", Key="after", Body=b"served")
    assert s3.get_object(Bucket="capped", Key="after")["Body"].read() == b"served"


def test_admin_api_answers_while_64_idle_connections_are_open(make_server):
    srv = make_server()
    idle = [socket.create_connection(("127.0.0.1", srv.admin_port), timeout=10) for _ in range(64)]
    # Some send half a request and stop.
    for sock in idle[::4]:
        sock.sendall(b"GET /v1/status HTTP/1.1\r\nhost: x\r\n")
    try:
        time.sleep(0.5)
        started = time.monotonic()
        status = srv.adm("status", json_output=True)
        assert '"cores"' in status.stdout
        assert time.monotonic() - started < 10
        # Again, with the idle connections replaced by fresh idle ones.
        more = [socket.create_connection(("127.0.0.1", srv.admin_port), timeout=10) for _ in range(64)]
        idle += more
        time.sleep(0.5)
        assert '"cores"' in srv.adm("status", json_output=True).stdout
    finally:
        for sock in idle:
            sock.close()


def test_limits_come_from_leofs_toml_and_the_environment(make_server):
    srv = make_server(cores=1, config_toml=f"body_idle_timeout_secs = {IDLE_S}\n",
                      extra_env={"LEOFS_CONNECTIONS_PER_CORE_MAX": "1"})
    held = socket.create_connection(("127.0.0.1", srv.s3_port), timeout=10)
    try:
        time.sleep(0.3)
        r = raw_request(srv, "GET", "/")
        assert r.status == 503 and r.error_code() == "SlowDown", r
    finally:
        held.close()
    time.sleep(0.3)
    assert raw_request(srv, "PUT", "/from-toml").status == 200
    time.sleep(0.5)  # the one slot is free again once the server saw that connection close
    started = time.monotonic()
    sock = start_stalled(srv.s3_port, signed_head(srv, "PUT", "/from-toml/k", "", {"content-length": "100"}), b"x")
    try:
        assert_request_timeout(sock, started)
    finally:
        sock.close()


@pytest.mark.parametrize("flag", ["--body-idle-timeout-secs", "--connections-per-core-max"])
def test_zero_limits_are_refused_at_start(make_server, flag):
    srv = make_server(start=False, extra_args=[flag, "0"])
    with pytest.raises(Exception) as e:
        srv.start(timeout_s=30)
    assert "must be at least 1" in str(e.value)
