"""The first split (issue 11): a gateway-only process serving S3 for data stored in a process
with the manager and storage roles, over the wire. These tests always start a split server,
whatever LEOFS_E2E_DEPLOYMENT says (the rest of the suite runs against both deployments)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import struct
import threading
import time

import pytest
from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError
from botocore.exceptions import ReadTimeoutError

from leofs_harness import listening_ports

#: The gateway's deadline for a call to storage (leofs_wire::client::REQUEST_TIMEOUT), plus
#: room for the client's own round trip.
STORAGE_DEADLINE_S = 10.0 + 5.0
#: Longest the handshake may take (leofs_wire::handshake::HANDSHAKE_TIMEOUT), plus room.
HANDSHAKE_DEADLINE_S = 5.0 + 3.0
#: Longest a started frame may take (leofs_wire::connection::FRAME_TIME_MAX), plus room.
FRAME_DEADLINE_S = 10.0 + 3.0


def split(make_server, **kwargs):
    return make_server(deployment="split", **kwargs)


def wire_counters(srv) -> tuple[int, int]:
    status = json.loads(srv.adm("status", json_output=True).stdout)
    served = sum(s["wire_requests_served"] for s in status["shards"])
    sent = sum(s["wire_requests_sent"] for s in status["shards"])
    return served, sent


def test_storage_process_serves_no_s3_and_its_wire_counters_move(make_server):
    srv = split(make_server, rest=True)
    storage_ports = listening_ports(srv.pid)
    gateway_ports = listening_ports(srv.gateway.pid)
    rpc_ports = {srv.rpc_port + i for i in range(srv.cores)}
    assert storage_ports == rpc_ports | {srv.admin_port}, storage_ports
    assert srv.s3_port not in storage_ports and srv.rest_port not in storage_ports
    # The gateway's admin listener serves /metrics only (it has no manager role).
    assert gateway_ports == {srv.s3_port, srv.rest_port, srv.gateway.admin_port}, gateway_ports
    served_before, _ = wire_counters(srv)
    s3 = srv.client()
    s3.create_bucket(Bucket="split-counters")
    body = os.urandom(3 * 1024 * 1024)
    s3.put_object(Bucket="split-counters", Key="k", Body=body)
    assert s3.get_object(Bucket="split-counters", Key="k")["Body"].read() == body
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="split-counters")["Contents"]] == ["k"]
    served_after, sent = wire_counters(srv)
    assert served_after > served_before + 3, (served_before, served_after)
    assert sent == 0, "the storage process sends nothing to the gateway"
    # The objects are in the storage process's data dir, and nothing in the gateway's.
    assert not any(p.name.startswith("shard-") for p in srv.gateway.data_dir.iterdir())


def _put_loop(s3, bucket, stop, acked, outcomes, lock, worker):
    n = 0
    while not stop.is_set():
        key = f"w{worker}-{n}"
        body = hashlib.sha256(key.encode()).digest() * 128  # 4 KiB
        started = time.monotonic()
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            outcome = "ok"
            with lock:
                acked[key] = body
        except ClientError as e:
            outcome = e.response["Error"]["Code"]
        except (BotoConnectionError, ReadTimeoutError) as e:
            outcome = type(e).__name__
        with lock:
            outcomes.append((outcome, time.monotonic() - started))
        n += 1


def test_kill9_of_storage_under_load_answers_503_then_recovers(make_server):
    srv = split(make_server)
    s3 = srv.client()
    bucket = "split-kill9"
    s3.create_bucket(Bucket=bucket)
    stop, lock = threading.Event(), threading.Lock()
    acked: dict[str, bytes] = {}
    outcomes: list[tuple[str, float]] = []
    workers = [
        threading.Thread(target=_put_loop, args=(srv.client(), bucket, stop, acked, outcomes, lock, i))
        for i in range(4)
    ]
    for w in workers:
        w.start()
    time.sleep(2)
    with lock:
        before_kill = len(outcomes)
    srv.kill9_storage()
    time.sleep(4)
    with lock:
        while_down = outcomes[before_kill:]
    srv.start(with_gateway=False)
    # The gateway serves again once the storage node is back (after its back-off).
    deadline = time.monotonic() + 30
    recovered = False
    while time.monotonic() < deadline:
        try:
            s3.put_object(Bucket=bucket, Key="after-restart", Body=b"back")
            recovered = True
            break
        except ClientError:
            time.sleep(0.5)
    time.sleep(1)
    stop.set()
    for w in workers:
        w.join(timeout=60)
        assert not w.is_alive(), "a client hung"
    assert recovered, f"no successful PUT within 30 s of the restart\n{srv.stderr_tail()}"
    codes = {code for code, _ in outcomes}
    assert "ServiceUnavailable" in codes, codes
    assert codes <= {"ok", "ServiceUnavailable"}, codes
    slowest = max(seconds for _, seconds in outcomes)
    assert slowest < STORAGE_DEADLINE_S, f"a request took {slowest:.1f} s"
    # Clients got answers while storage was down (nobody waited for the restart).
    assert any(code == "ServiceUnavailable" for code, _ in while_down), while_down
    for key, body in acked.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
    assert s3.get_object(Bucket=bucket, Key="after-restart")["Body"].read() == b"back"


# -- hostile peers ------------------------------------------------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def frame(envelope: bytes, payload: bytes = b"", bad_crc: bool = False) -> bytes:
    env_len = struct.pack("<I", len(envelope))
    crc = crc32c(env_len + envelope + payload) ^ (1 if bad_crc else 0)
    return struct.pack("<II", 8 + len(envelope) + len(payload), crc) + env_len + envelope + payload


def read_frame(sock: socket.socket) -> bytes:
    """One frame's envelope (handshake messages have no payload)."""
    head = _recv_exact(sock, 12)
    length, _, env_len = struct.unpack("<III", head)
    rest = _recv_exact(sock, length - 8)
    return rest[:env_len]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def cluster_id(secret: bytes) -> bytes:
    return hmac.new(secret, b"leofs cluster id", hashlib.sha256).digest()[:16]


def hello(secret: bytes, nonce: bytes) -> bytes:
    return b"LFSW" + struct.pack("<HH", 1, 1) + cluster_id(secret) + nonce


def proof(secret: bytes, challenge: bytes, client_nonce: bytes) -> bytes:
    version = challenge[4:6]
    cluster = challenge[6:22]
    server_nonce = challenge[22:54]
    mac = hmac.new(secret, b"leofs-wire client" + version + cluster + server_nonce + client_nonce,
                   hashlib.sha256).digest()
    return b"LFSW" + mac


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes the connection within `seconds` (reading and dropping bytes)."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True
    return False


def log_count(srv) -> int:
    text = srv.stderr_path.read_text(errors="replace")
    return text.count("refused a node connection") + text.count("closing a node connection")


def test_hostile_peers_are_cut_off_with_one_log_line_and_the_node_keeps_serving(make_server):
    srv = split(make_server)
    s3 = srv.client()
    s3.create_bucket(Bucket="split-hostile")
    secret = (srv.data_dir / "cluster.secret").read_text().strip().encode()
    port = srv.rpc_port + 1  # shard 1: every shard listens the same way

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=5)

    def handshake(sock: socket.socket, with_secret: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(32)
        sent_hello = hello(with_secret, nonce)
        sock.sendall(frame(sent_hello))
        challenge = read_frame(sock)
        sent_proof = proof(with_secret, challenge, nonce)
        sock.sendall(frame(sent_proof))
        return sent_hello, sent_proof

    # A valid handshake, recorded: the connection stays open.
    good = connect()
    recorded_hello, recorded_proof = handshake(good, secret)
    assert not closed_within(good, 1.0)

    cases = {
        "random bytes": lambda s: s.sendall(os.urandom(4096)),
        "an oversized length": lambda s: s.sendall(struct.pack("<I", 0xFFFFFFFF) + b"\0" * 8),
        "a bad crc": lambda s: s.sendall(frame(b"x" * 40, bad_crc=True)),
        "a valid frame before the handshake": lambda s: s.sendall(frame(b"\x10\0\0\0" + b"\0" * 60)),
        "a wrong secret (another cluster)": lambda s: handshake(s, b"w" * 64),
        "a wrong secret (same cluster id)": lambda s: (
            s.sendall(frame(hello(secret, os.urandom(32)))),
            s.sendall(frame(proof(b"w" * 64, read_frame(s), os.urandom(32)))),
        ),
        "a replayed handshake": lambda s: (
            s.sendall(frame(recorded_hello)),
            read_frame(s),
            s.sendall(frame(recorded_proof)),
        ),
        "a slow peer in the handshake": lambda s: s.sendall(frame(recorded_hello)[:7]),
    }
    for name, attack in cases.items():
        before = log_count(srv)
        sock = connect()
        try:
            attack(sock)
        except (ConnectionError, OSError):
            pass  # the node may cut it off mid-attack
        assert closed_within(sock, HANDSHAKE_DEADLINE_S), f"{name}: connection left open"
        sock.close()
        time.sleep(0.3)
        assert log_count(srv) == before + 1, f"{name}: expected one log line\n{srv.stderr_tail()}"
        assert srv.running() and srv.gateway.running()

    # After the handshake: a frame that never finishes is cut off within the frame bound.
    before = log_count(srv)
    good.sendall(frame(b"x" * 100)[:20])
    assert closed_within(good, FRAME_DEADLINE_S), "a stalled frame was left open"
    time.sleep(0.3)
    assert log_count(srv) == before + 1
    text = srv.stderr_tail()
    assert "panicked" not in text, text
    # The node kept serving throughout.
    s3.put_object(Bucket="split-hostile", Key="still", Body=b"serving")
    assert s3.get_object(Bucket="split-hostile", Key="still")["Body"].read() == b"serving"
