"""Process harness for the leofs end-to-end suite.

Owns: locating the built binaries, starting a REAL `leofs server` on free loopback ports with a
fresh data directory, waiting for its `leofs ready` line, stopping it (SIGTERM, exit code checked),
crashing it (SIGKILL) and restarting it on the same data directory and ports; plus configured
clients (boto3, aws-cli, s3cmd, rclone, leofs-adm) and a small SigV4 signer for raw HTTP tests.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.client
import json
import os
import queue
import random
import shutil
import uuid
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Root key pair given to every test server through LEOFS_ROOT_ACCESS_KEY / LEOFS_ROOT_SECRET_KEY.
ROOT_ACCESS_KEY = "LEOFSE2EROOTACCESS01"
ROOT_SECRET_KEY = "e2eRootSecretKey0123456789abcdefghijklmn"
REGION = "us-east-1"

#: How long a server may take from spawn to its `leofs ready` line.
READY_TIMEOUT_S = float(os.environ.get("LEOFS_E2E_READY_TIMEOUT_S", "90"))
#: How long a SIGTERMed server may take to exit.
STOP_TIMEOUT_S = 60.0
#: Tail of the server's stderr shown when something goes wrong.
STDERR_TAIL_BYTES = 8000
#: How servers are deployed: `all-in-one` (one process with every role) or `split` (a process
#: with the manager and storage roles, and a gateway-only process joined to it over the wire).
DEPLOYMENT = os.environ.get("LEOFS_E2E_DEPLOYMENT", "all-in-one")
assert DEPLOYMENT in ("all-in-one", "split"), f"LEOFS_E2E_DEPLOYMENT={DEPLOYMENT!r}"


def _target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target"))


def leofs_bin() -> Path:
    """Path of the `leofs` binary: $LEOFS_BIN, else <target>/release/leofs."""
    return Path(os.environ.get("LEOFS_BIN", _target_dir() / "release" / "leofs"))


def leofs_adm_bin() -> Path:
    """Path of `leofs-adm`: $LEOFS_ADM_BIN, else beside the `leofs` binary."""
    env = os.environ.get("LEOFS_ADM_BIN")
    return Path(env) if env else leofs_bin().with_name("leofs-adm")


#: Ports handed to servers come from below the kernel's ephemeral range (32768-60999 by
#: default), so that no outgoing connection of another process (nodes call each other all the
#: time) takes one between the moment it is chosen and the moment its server binds it; and each
#: is handed out once per session.
LISTEN_PORTS = range(20000, 32768)
_handed_out: set[int] = set()
_port_rng = random.Random(os.getpid())


def free_port() -> int:
    """A loopback TCP port that was free a moment ago, never handed out before this session."""
    for _ in range(10_000):
        port = _port_rng.choice(LISTEN_PORTS)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port left below the ephemeral range")


def free_rpc_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports that were free a moment ago (a storage
    node's shard i listens on its RPC port + i)."""
    for _ in range(200):
        base = free_port()
        if base + count > LISTEN_PORTS.stop:
            continue
        ok = True
        for port in range(base + 1, base + count):
            if port in _handed_out:
                ok = False
                break
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            _handed_out.update(range(base, base + count))
            return base
    raise RuntimeError(f"no {count} consecutive free ports")


def tmp_root_dir() -> Path:
    """Parent of every temporary dir of the suite (on ext4 for O_DIRECT): $LEOFS_E2E_TMP or /tmp."""
    root = Path(os.environ.get("LEOFS_E2E_TMP", tempfile.gettempdir())) / "leofs-e2e"
    root.mkdir(parents=True, exist_ok=True)
    return root


def clean_env() -> dict[str, str]:
    """The caller's environment without any LEOFS_* / AWS_* / RCLONE_* variable."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LEOFS_", "AWS_", "RCLONE_"))
    }


class ServerError(RuntimeError):
    """The server did not start, or did not stop cleanly."""


class LeofsServer:
    """One `leofs server` (restartable on the same data dir and ports). In the split deployment
    it is two processes: this one has the manager and storage roles (its data dir, admin API and
    RPC port), and `self.gateway` is a gateway-only process joined to it, serving the S3 and
    REST ports. Both write to the same stderr log; start, stop and kill act on both."""

    def __init__(
        self,
        data_dir: Path,
        *,
        cores: int = 2,
        extra_args: list[str] | None = None,
        root_keys: bool = True,
        rest: bool = False,
        domain: str | None = None,
        config_toml: str | None = None,
        extra_env: dict[str, str] | None = None,
        listen_flag: bool = True,
        deployment: str | None = None,
        gateway_of: "LeofsServer | None" = None,
    ):
        self.deployment = deployment or DEPLOYMENT
        self.gateway_of = gateway_of
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.workdir = self.data_dir.parent
        self.cores = cores
        self.s3_port = free_port()
        self.admin_port = free_port()
        self.rest_port = free_port() if rest else None
        self.domain = domain
        self.extra_args = list(extra_args or [])
        self.root_keys = root_keys
        self.extra_env = dict(extra_env or {})
        self.listen_flag = listen_flag
        self.config_path: Path | None = None
        if config_toml is not None:
            self.config_path = self.workdir / f"{self.data_dir.name}.toml"
            self.config_path.write_text(config_toml)
        self.proc: subprocess.Popen | None = None
        self.stdout_lines: list[str] = []
        self.stderr_path = self.workdir / f"{self.data_dir.name}.stderr.log"
        self.starts = 0
        self.access_key = ROOT_ACCESS_KEY if root_keys else None
        self.secret_key = ROOT_SECRET_KEY if root_keys else None
        self.printed: dict[str, str] = {}
        self.gateway: LeofsServer | None = None
        self.rpc_port: int | None = None
        if gateway_of is not None:
            # The gateway process of a split server: its ports and log are the server's.
            self.s3_port, self.rest_port = gateway_of.s3_port, gateway_of.rest_port
            self.stderr_path = gateway_of.stderr_path
        elif self.deployment == "split":
            self.rpc_port = free_rpc_ports(cores)
            self.gateway = LeofsServer(
                self.workdir / f"{self.data_dir.name}-gateway",
                cores=cores,
                extra_args=extra_args,
                root_keys=root_keys,
                rest=rest,
                domain=domain,
                extra_env=extra_env,
                listen_flag=listen_flag,
                deployment="split",
                gateway_of=self,
            )
            if self.config_path is not None:
                self.gateway.config_path = self.config_path

    # -- addresses ---------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def admin_addr(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    @property
    def rest_endpoint(self) -> str:
        assert self.rest_port is not None, "server started without --rest-listen"
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- lifecycle ---------------------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [
            str(leofs_bin()),
            "server",
            "--data-dir",
            str(self.data_dir),
            "--admin-listen",
            self.admin_addr,
            "--cores",
            str(self.cores),
        ]
        if self.gateway is not None:
            # The storage process: no S3 or REST port of its own.
            cmd += ["--roles", "manager,storage", "--rpc-listen", f"127.0.0.1:{self.rpc_port}"]
            if self.config_path is not None:
                cmd += ["--config", str(self.config_path)]
            return cmd + self.extra_args
        if self.gateway_of is not None:
            storage = self.gateway_of
            cmd += [
                "--roles",
                "gateway",
                "--join",
                f"127.0.0.1:{storage.rpc_port}",
                "--cluster-secret-file",
                str(storage.data_dir / "cluster.secret"),
            ]
        if self.listen_flag:
            cmd += ["--listen", f"127.0.0.1:{self.s3_port}"]
        if self.rest_port is not None:
            cmd += ["--rest-listen", f"127.0.0.1:{self.rest_port}"]
        if self.domain is not None:
            cmd += ["--domain", self.domain]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        return cmd + self.extra_args

    def env(self) -> dict[str, str]:
        env = clean_env()
        env.setdefault("RUST_BACKTRACE", "1")
        if self.root_keys:
            env["LEOFS_ROOT_ACCESS_KEY"] = ROOT_ACCESS_KEY
            env["LEOFS_ROOT_SECRET_KEY"] = ROOT_SECRET_KEY
        env.update(self.extra_env)
        return env

    def start(self, timeout_s: float = READY_TIMEOUT_S, with_gateway: bool = True) -> None:
        """Spawns the server and waits for `leofs ready`; raises ServerError with its stderr.
        `with_gateway=False` starts only the storage process of a split server (its gateway
        is still running)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.stdout_lines = []
        stderr = open(self.stderr_path, "ab")
        stderr.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        stderr.flush()
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            env=self.env(),
            text=True,
            bufsize=1,
        )
        stderr.close()
        lines: queue.Queue = queue.Queue()

        def pump(proc=self.proc, out=self.stdout_lines):
            for line in proc.stdout:
                out.append(line.rstrip("\n"))
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill9()
                raise ServerError(f"no 'leofs ready' within {timeout_s:.0f}s\n{self.diagnostics()}")
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait()
                raise ServerError(f"server exited with {code} before ready\n{self.diagnostics()}")
            self._parse_line(line)
            if line.strip() == "leofs ready":
                break
        if self.gateway is not None and with_gateway:
            gateway = self.gateway
            if gateway.running():
                # Only the storage process was stopped (a signal sent to `proc`).
                gateway.stop()
            gateway.listen_flag, gateway.s3_port, gateway.rest_port = (
                self.listen_flag, self.s3_port, self.rest_port)
            gateway.extra_env, gateway.extra_args = self.extra_env, self.extra_args
            gateway.config_path, gateway.domain = self.config_path, self.domain
            try:
                self.gateway.start(timeout_s)
            except ServerError:
                self.kill9()
                raise
            self.printed.update(self.gateway.printed)
            self.stdout_lines += self.gateway.stdout_lines
        if "S3 endpoint" in self.printed:
            expected = self.endpoint
            if self.printed["S3 endpoint"] != expected:
                raise ServerError(
                    f"printed S3 endpoint {self.printed['S3 endpoint']!r}, expected {expected!r}"
                )

    def _parse_line(self, line: str) -> None:
        for prefix in ("S3 endpoint", "Admin API", "Access key", "Secret key", "REST API"):
            if line.startswith(prefix + ":"):
                value = line.split(":", 1)[1].strip()
                self.printed[prefix] = value
                if prefix == "Access key" and not self.root_keys:
                    self.access_key = value
                if prefix == "Secret key" and not self.root_keys:
                    self.secret_key = value

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; returns the exit code (raises ServerError if it does not exit). A
        split server stops its gateway first; the first non-zero exit code is returned."""
        assert self.proc is not None
        gateway_code = 0
        if self.gateway is not None and self.gateway.proc is not None:
            gateway_code = self.gateway.stop(timeout_s)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise ServerError(f"server did not exit within {timeout_s}s of SIGTERM\n{self.diagnostics()}")
        return gateway_code or self.proc.returncode

    def kill9(self) -> None:
        """SIGKILL (a crash: nothing is flushed or checkpointed), of every process."""
        if self.gateway is not None:
            self.gateway.kill9()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        """Graceful restart on the same data dir and ports; the stop must exit 0."""
        code = self.stop()
        if code != 0:
            raise ServerError(f"SIGTERM exit code {code}, expected 0\n{self.diagnostics()}")
        self.start()

    def crash_restart(self) -> None:
        """kill -9 then start again on the same data dir and ports."""
        self.kill9()
        self.start()

    def kill9_storage(self) -> None:
        """SIGKILL of the storage process of a split server only (its gateway keeps running)."""
        assert self.gateway is not None, "not a split server"
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def http_pid(self) -> int:
        """The process serving S3 (the gateway process of a split server)."""
        return self.gateway.pid if self.gateway is not None else self.pid

    def rss_bytes(self) -> int:
        """The server's resident set size (VmRSS from /proc/<pid>/status), of every process."""
        pids = [self.pid] + ([self.gateway.pid] if self.gateway is not None else [])
        total = 0
        for pid in pids:
            with open(f"/proc/{pid}/status") as f:
                lines = [line for line in f if line.startswith("VmRSS:")]
            if not lines:
                raise ServerError("no VmRSS line")
            total += int(lines[0].split()[1]) * 1024
        return total

    def stderr_tail(self) -> str:
        try:
            data = self.stderr_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[-STDERR_TAIL_BYTES:].decode(errors="replace")

    def diagnostics(self) -> str:
        gateway = f"gateway command: {' '.join(self.gateway.command())}\n" if self.gateway else ""
        return (
            f"command: {' '.join(self.command())}\n{gateway}"
            f"stdout:\n" + "\n".join(self.stdout_lines[-50:]) + "\n"
            f"stderr tail ({self.stderr_path}):\n{self.stderr_tail()}"
        )

    def cleanup(self) -> None:
        """Removes the data dir and side files unless LEOFS_E2E_KEEP=1."""
        if os.environ.get("LEOFS_E2E_KEEP") == "1":
            return
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.gateway is not None:
            shutil.rmtree(self.gateway.data_dir, ignore_errors=True)
        if self.config_path is not None:
            self.config_path.unlink(missing_ok=True)

    # -- clients -----------------------------------------------------------------------------
    def client(self, access_key: str | None = None, secret_key: str | None = None, **config):
        """A boto3 S3 client: path-style, us-east-1, default checksum settings, no retries."""
        cfg = Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=120,
            **config,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=REGION,
            config=cfg,
        )

    def adm(self, *args: str, json_output: bool = False, token: str | None = None,
            check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Runs leofs-adm against this server's admin API."""
        cmd = [str(leofs_adm_bin()), "--admin", self.admin_addr, "--data-dir", str(self.data_dir)]
        if token is not None:
            cmd += ["--token", token]
        if json_output:
            cmd.append("--json")
        cmd += list(args)
        res = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=timeout,
                             stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise AssertionError(f"{cmd} exited {res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}")
        return res


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _tcp_sockets(pid: int):
    """(local port, state, inode) of every TCP socket in the network namespace of `pid`."""
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            yield int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]


def connections_on(pid: int, ports: set[int]) -> int:
    """Established TCP connections process `pid` holds on any of its local `ports`."""
    inodes = _socket_inodes(pid)
    return sum(1 for port, state, inode in _tcp_sockets(pid)
               if inode in inodes and state != "0A" and port in ports)


def listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on (its socket inodes matched in /proc/<pid>/net/tcp*)."""
    inodes = _socket_inodes(pid)
    return {port for port, state, inode in _tcp_sockets(pid) if state == "0A" and inode in inodes}


# -- command-line S3 clients ------------------------------------------------------------------
def run(cmd: list[str], env: dict[str, str], timeout_s: float = 600, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs a client command; on failure the assertion shows its output."""
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s,
                         stdin=subprocess.DEVNULL, cwd=cwd)
    if check and res.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {res.returncode}\nstdout:\n{res.stdout[-4000:]}\nstderr:\n{res.stderr[-4000:]}"
        )
    return res


class AwsCli:
    """aws-cli (v1) configured by env and a temp AWS_CONFIG_FILE for path-style addressing."""

    def __init__(self, server: LeofsServer, workdir: Path):
        self.server = server
        config = workdir / "aws-config"
        config.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
        self.env = clean_env()
        self.env.update(
            AWS_ACCESS_KEY_ID=server.access_key,
            AWS_SECRET_ACCESS_KEY=server.secret_key,
            AWS_DEFAULT_REGION=REGION,
            AWS_CONFIG_FILE=str(config),
            AWS_SHARED_CREDENTIALS_FILE=str(workdir / "aws-credentials-none"),
            AWS_EC2_METADATA_DISABLED="true",
            AWS_RETRY_MODE="standard",
            AWS_MAX_ATTEMPTS="1",
            AWS_PAGER="",
        )

    def __call__(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return run(["aws", "--endpoint-url", self.server.endpoint, *args], self.env, check=check, **kw)


class S3Cmd:
    """s3cmd with a generated config file (path-style, SigV4, plain HTTP)."""

    def __init__(self, server: LeofsServer, workdir: Path):
        self.config = workdir / "s3cmd.cfg"
        hostport = f"127.0.0.1:{server.s3_port}"
        self.config.write_text(
            "[default]\n"
            f"access_key = {server.access_key}\n"
            f"secret_key = {server.secret_key}\n"
            f"host_base = {hostport}\n"
            f"host_bucket = {hostport}\n"
            "use_https = False\n"
            "signature_v2 = False\n"
            "bucket_location = us-east-1\n"
            "check_ssl_certificate = False\n"
            "guess_mime_type = False\n"
            "progress_meter = False\n"
        )
        self.env = clean_env()

    def __call__(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return run(["s3cmd", "-c", str(self.config), *args], self.env, check=check, **kw)


class Rclone:
    """rclone with an env-defined remote named `leo:`."""

    def __init__(self, server: LeofsServer, workdir: Path):
        empty = workdir / "rclone.conf"
        empty.write_text("")
        self.env = clean_env()
        self.env.update(
            RCLONE_CONFIG=str(empty),
            RCLONE_CONFIG_LEO_TYPE="s3",
            RCLONE_CONFIG_LEO_PROVIDER="Other",
            RCLONE_CONFIG_LEO_ENDPOINT=server.endpoint,
            RCLONE_CONFIG_LEO_ACCESS_KEY_ID=server.access_key,
            RCLONE_CONFIG_LEO_SECRET_ACCESS_KEY=server.secret_key,
            RCLONE_CONFIG_LEO_FORCE_PATH_STYLE="true",
            RCLONE_CONFIG_LEO_REGION=REGION,
        )

    def __call__(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return run(["rclone", "--retries", "1", "--low-level-retries", "1", *args], self.env,
                   check=check, **kw)


# -- raw HTTP with SigV4 ----------------------------------------------------------------------
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _quote(s: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(s, safe=safe)


def sigv4_headers(
    method: str,
    host: str,
    path: str,
    query: dict[str, str] | None,
    headers: dict[str, str],
    payload_sha256: str,
    access_key: str,
    secret_key: str,
    region: str = REGION,
    now: datetime.datetime | None = None,
    chunk_signer: dict | None = None,
) -> dict[str, str]:
    """Returns `headers` plus x-amz-date, x-amz-content-sha256 and a SigV4 Authorization header.

    `path` is the already-encoded request path; every given header is signed. A `chunk_signer`
    dict receives the signing key, date, scope and seed signature for signed_chunks().
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = now.strftime("%Y%m%d")
    out = dict(headers)
    out["host"] = host
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_sha256
    canon_headers = {k.lower(): " ".join(str(v).strip().split()) for k, v in out.items()}
    signed = ";".join(sorted(canon_headers))
    canon_query = "&".join(
        f"{_quote(k)}={_quote(v)}" for k, v in sorted((query or {}).items())
    )
    canonical = "\n".join(
        [
            method,
            path,
            canon_query,
            "".join(f"{k}:{canon_headers[k]}\n" for k in sorted(canon_headers)),
            signed,
            payload_sha256,
        ]
    )
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    if chunk_signer is not None:
        chunk_signer.update(key=key, amz_date=amz_date, scope=scope, seed=signature)
    return out


def signed_chunks(body: bytes, signer: dict, chunk_bytes: int = 64 * 1024, tamper_chunk: int = -1) -> bytes:
    """An aws-chunked body for STREAMING-AWS4-HMAC-SHA256-PAYLOAD, each chunk signed in a chain
    seeded by the header signature (`signer` as filled by sigv4_headers(chunk_signer=...)).
    `tamper_chunk` >= 0 flips one byte of that chunk after signing."""
    prev = signer["seed"]
    out = bytearray()
    pieces = [body[i : i + chunk_bytes] for i in range(0, len(body), chunk_bytes)] + [b""]
    for n, piece in enumerate(pieces):
        to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", signer["amz_date"], signer["scope"], prev,
                             EMPTY_SHA256, hashlib.sha256(piece).hexdigest()])
        prev = hmac.new(signer["key"], to_sign.encode(), hashlib.sha256).hexdigest()
        if n == tamper_chunk and piece:
            piece = bytes([piece[0] ^ 1]) + piece[1:]
        out += f"{len(piece):x};chunk-signature={prev}\r\n".encode() + piece + b"\r\n"
    return bytes(out)


class RawResponse:
    """Status, headers and body of one raw HTTP exchange."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def error_code(self) -> str | None:
        """The S3 XML error <Code>, if the body is an S3 error document."""
        import xml.etree.ElementTree as ET

        try:
            root = ET.fromstring(self.body)
        except ET.ParseError:
            return None
        for el in root.iter():
            if el.tag.split("}")[-1] == "Code":
                return el.text
        return None

    def __repr__(self) -> str:
        return f"RawResponse({self.status}, {self.headers}, {self.body[:600]!r})"


def raw_request(
    server: LeofsServer,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    sign: bool = True,
    access_key: str | None = None,
    secret_key: str | None = None,
    payload_sha256: str | None = None,
    host: str | None = None,
    timeout_s: float = 30,
    port: int | None = None,
) -> RawResponse:
    """One HTTP/1.1 request over a fresh connection, SigV4-signed unless sign=False."""
    port = port or server.s3_port
    host = host or f"127.0.0.1:{port}"
    hdrs = dict(headers or {})
    if sign:
        hdrs = sigv4_headers(
            method,
            host,
            path,
            query,
            hdrs,
            payload_sha256 or hashlib.sha256(body).hexdigest(),
            access_key or server.access_key,
            secret_key or server.secret_key,
        )
    else:
        hdrs["host"] = host
    url = path
    if query:
        url += "?" + "&".join(
            f"{_quote(k)}={_quote(v)}" if v != "" else _quote(k) for k, v in query.items()
        )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.putrequest(method, url, skip_host=True, skip_accept_encoding=True)
        for k, v in hdrs.items():
            conn.putheader(k, v)
        if body or method in ("PUT", "POST"):
            if not any(k.lower() == "content-length" for k in hdrs):
                conn.putheader("content-length", str(len(body)))
        try:
            conn.endheaders(body if body else None)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer (e.g. 4xx) and close before reading the whole request
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def multipart_etag(parts: list[bytes]) -> str:
    """The S3 multipart ETag: hex MD5 of the concatenated binary part MD5s, then -N."""
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def md5_etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def empty_bucket(client, bucket: str) -> None:
    """Deletes every object (every version and delete marker of a versioned bucket) and open
    multipart upload of a bucket (best effort for teardown)."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    if client.get_bucket_versioning(Bucket=bucket).get("Status"):
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            versions = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
            ]
            if versions:
                client.delete_objects(
                    Bucket=bucket, Delete={"Objects": versions, "Quiet": True}
                )
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    for up in uploads:
        client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])


class PatternReader:
    """A non-seekable file-like object yielding `size` deterministic bytes without buffering them.

    Each MiB is a fixed random block with its MiB index stamped at the front, so every chunk of
    the stream differs and a misplaced chunk changes the MD5.
    """

    BLOCK = 1 << 20

    def __init__(self, size: int, seed: int = 7):
        import random

        self.size = size
        self.pos = 0
        self.block = random.Random(seed).randbytes(self.BLOCK)

    def _piece(self, offset: int, n: int) -> bytes:
        index, within = divmod(offset, self.BLOCK)
        block = index.to_bytes(8, "little") + self.block[8:]
        return block[within : within + n]

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos)
        out = bytearray()
        while len(out) < n:
            piece = self._piece(self.pos, n - len(out))
            out += piece
            self.pos += len(piece)
        return bytes(out)

    def readable(self) -> bool:
        return True

    def md5(self) -> str:
        """MD5 hex of the whole stream (recomputed without holding it)."""
        h = hashlib.md5()
        other = PatternReader(self.size)
        other.block = self.block
        while True:
            chunk = other.read(8 << 20)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)


def make_user(server, prefix: str):
    """A new user of `server` (a unique name from `prefix`) and a boto3 client signing with its key."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    creds = json.loads(server.adm("create-user", name, json_output=True).stdout)
    return name, server.client(creds["access_key_id"], creds["secret_access_key"])


def error_of(call) -> tuple[int, str]:
    """The HTTP status and S3 error code of a boto3 call that must fail."""
    try:
        call()
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
    raise AssertionError("the request succeeded")


def tag_set(pairs: dict[str, str]) -> list[dict]:
    """An S3 TagSet of `pairs`, in their order."""
    return [{"Key": k, "Value": v} for k, v in pairs.items()]
