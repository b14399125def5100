"""The `leofs server` command itself: printed lines, first-start keys, config precedence, signals."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from leofs_harness import ROOT_ACCESS_KEY, LeofsServer, ServerError, free_port


def test_printed_lines_with_env_keys(make_server):
    srv = make_server()
    assert srv.printed["S3 endpoint"] == srv.endpoint
    assert srv.printed["Admin API"] == f"http://{srv.admin_addr}"
    assert srv.stdout_lines[-1] == "leofs ready"
    client = srv.client()
    assert client.list_buckets()["Buckets"] == []
    assert srv.stop() == 0


def test_generated_keys_printed_once_and_stored_0600(make_server):
    srv = make_server(root_keys=False)
    access, secret = srv.printed.get("Access key"), srv.printed.get("Secret key")
    assert access and secret, srv.stdout_lines
    assert access != ROOT_ACCESS_KEY
    assert len(secret) >= 30
    client = srv.client(access, secret)
    client.create_bucket(Bucket="generated")
    client.put_object(Bucket="generated", Key="k", Body=b"v")

    manager_dir = srv.data_dir / "manager"
    holding = [p for p in manager_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert holding, f"secret not stored under {manager_dir}"
    for path in holding:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, f"{path} has mode {oct(mode)}"

    # A wrong secret for the printed key is refused.
    with pytest.raises(ClientError) as e:
        srv.client(access, "w" * 40).list_buckets()
    assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"

    srv.restart()
    assert "Access key" not in "\n".join(srv.stdout_lines)
    assert "Secret key" not in "\n".join(srv.stdout_lines)
    assert srv.client(access, secret).get_object(Bucket="generated", Key="k")["Body"].read() == b"v"


def test_env_keys_ignored_after_first_start(make_server):
    """The root keys are fixed at first start; a later env value does not replace them."""
    srv = make_server()
    srv.client().create_bucket(Bucket="first")
    srv.stop()
    srv.extra_env = {"LEOFS_ROOT_ACCESS_KEY": "LEOFSOTHERKEY0000000", "LEOFS_ROOT_SECRET_KEY": "o" * 40}
    srv.start()
    assert "first" in {b["Name"] for b in srv.client().list_buckets()["Buckets"]}


def test_config_file_and_flag_precedence(make_server):
    """leofs.toml supplies settings; a flag beats the file, an env variable beats the file."""
    file_port = free_port()
    toml = f'listen = "127.0.0.1:{file_port}"\nregion = "us-east-1"\n'
    srv = make_server(config_toml=toml)  # the harness passes --listen, which must win
    assert srv.printed["S3 endpoint"] == srv.endpoint != f"http://127.0.0.1:{file_port}"
    srv.client().list_buckets()
    assert srv.stop() == 0

    # Without the flag, the file's address is used.
    srv.listen_flag = False
    srv.s3_port = file_port
    srv.start()
    assert srv.printed["S3 endpoint"] == f"http://127.0.0.1:{file_port}"
    srv.client().list_buckets()
    assert srv.stop() == 0

    # The environment beats the file.
    env_port = free_port()
    srv.extra_env = {"LEOFS_LISTEN": f"127.0.0.1:{env_port}"}
    srv.s3_port = env_port
    srv.start()
    assert srv.printed["S3 endpoint"] == f"http://127.0.0.1:{env_port}"
    srv.client().list_buckets()


def _core_thread_cpus(pid: int) -> list[str]:
    """Cpus_allowed_list of every leofs-core-N thread of process `pid`."""
    tasks = Path(f"/proc/{pid}/task")
    lists = []
    for task in tasks.iterdir():
        if (task / "comm").read_text().startswith("leofs-core-"):
            status = (task / "status").read_text()
            lists.append(next(line.split(":", 1)[1].strip() for line in status.splitlines()
                              if line.startswith("Cpus_allowed_list:")))
    return sorted(lists)


def test_core_threads_are_pinned_only_when_configured(make_server):
    """By default core threads may run on every CPU (several nodes share a machine well);
    `pin_cores = true` puts each on one CPU."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two CPUs to tell a pinned thread from an unpinned one")
    srv = make_server(cores=2)
    unpinned = _core_thread_cpus(srv.pid)
    assert len(unpinned) == 2 and all("," in c or "-" in c for c in unpinned), unpinned
    assert srv.stop() == 0

    srv.extra_env = {"LEOFS_PIN_CORES": "true"}
    srv.start()
    pinned = _core_thread_cpus(srv.pid)
    assert pinned == sorted(str(cpu) for cpu in allowed[:2]), pinned
    srv.client().list_buckets()


def test_second_server_on_same_data_dir_is_refused(make_server):
    """Two processes on one data directory would corrupt it: the second must refuse to start."""
    srv = make_server()
    srv.client().create_bucket(Bucket="lock")
    other = LeofsServer(srv.data_dir)  # same data dir, other ports
    try:
        with pytest.raises(ServerError, match="exited with"):
            other.start(timeout_s=30)
    finally:
        other.kill9()
    # The first one is unharmed.
    assert "lock" in {b["Name"] for b in srv.client().list_buckets()["Buckets"]}


def _sigterm_must_end(proc, srv, what: str) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"server still running 30 s after SIGTERM ({what})\n{srv.stderr_tail()}")


def test_closed_stdout_does_not_hang(make_server):
    """A supervisor that stops reading stdout (EPIPE on the startup lines, as in
    `leofs server | head -1`) must not leave a server that ignores SIGTERM."""
    srv = make_server(start=False, root_keys=False)
    srv.data_dir.mkdir(parents=True, exist_ok=True)
    with open(srv.stderr_path, "ab") as stderr:
        proc = subprocess.Popen(srv.command(), stdout=subprocess.PIPE, stderr=stderr,
                                stdin=subprocess.DEVNULL, cwd=srv.workdir, env=srv.env())
    try:
        first = proc.stdout.readline()
        # The first start-up line: the S3 endpoint, or the RPC address of a storage process.
        assert first.startswith((b"S3 endpoint:", b"RPC:")), first
        proc.stdout.close()  # the rest of the startup lines may hit a closed pipe
        time.sleep(2)
        _sigterm_must_end(proc, srv, "stdout closed")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_closed_stderr_still_shuts_down_gracefully(make_server):
    """The log pipe (stderr) going away after start, e.g. a dead log collector, must not break
    graceful shutdown: SIGTERM still ends the server with exit code 0."""
    srv = make_server(start=False)
    srv.data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(srv.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=srv.workdir, env=srv.env())
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == b"leofs ready":
                break
        assert lines and lines[-1].strip() == b"leofs ready", lines
        time.sleep(0.5)
        proc.stderr.close()
        code = _sigterm_must_end(proc, srv, "stderr closed")
        assert code == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
