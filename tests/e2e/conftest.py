"""Fixtures of the leofs end-to-end suite.

`server` is one real `leofs server` shared by the whole session (2 cores, root keys from the
environment); `make_server` starts dedicated servers for tests that restart, crash or configure
them. Every server is stopped with SIGTERM at teardown and must exit 0.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from leofs_harness import (
    AwsCli,
    LeofsServer,
    Rclone,
    S3Cmd,
    empty_bucket,
    leofs_adm_bin,
    leofs_bin,
    tmp_root_dir,
)


def pytest_report_header(config):
    return [f"leofs binary: {leofs_bin()}", f"leofs-adm binary: {leofs_adm_bin()}"]


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    """One temp dir per session under $LEOFS_E2E_TMP (default /tmp), removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="run-", dir=tmp_root_dir()))
    yield path
    if os.environ.get("LEOFS_E2E_KEEP") != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def built_binaries():
    """Fails every test at once, clearly, when the binaries were not built."""
    for path in (leofs_bin(), leofs_adm_bin()):
        if not path.is_file():
            pytest.fail(
                f"{path} not found: build with `cargo build --release --bins` or set LEOFS_BIN",
                pytrace=False,
            )


class _ServerFactory:
    """Starts servers under one directory and stops them all (asserting exit 0) at teardown."""

    def __init__(self, root: Path):
        self.root = root
        self.servers: list[LeofsServer] = []
        self.counter = itertools.count()

    def __call__(self, start: bool = True, **kwargs) -> LeofsServer:
        data_dir = self.root / f"srv{next(self.counter)}" / "data"
        server = LeofsServer(data_dir, **kwargs)
        self.servers.append(server)
        if start:
            server.start()
        return server

    def finish(self) -> list[str]:
        problems = []
        for server in self.servers:
            if server.running():
                code = server.stop()
                if code != 0:
                    problems.append(f"exit code {code} after SIGTERM\n{server.diagnostics()}")
            server.cleanup()
        return problems


@pytest.fixture(scope="session")
def server(session_tmp):
    """The shared server of the session."""
    factory = _ServerFactory(session_tmp / "shared")
    # Segments of 32 MiB instead of 256: an engine keeps room for a checkpoint of its index
    # grown by two segments of records of the average size, and the suite's small objects
    # would make that over a GiB a core (two passes run at once).
    srv = factory(config_toml="[engine]\nsegment_size_bytes = 33554432\n")
    yield srv
    problems = factory.finish()
    if problems:
        pytest.fail("shared server: " + "\n".join(problems), pytrace=False)


@pytest.fixture
def make_server(session_tmp):
    """Factory for dedicated servers: make_server(rest=True, domain=..., extra_args=[...])."""
    factory = _ServerFactory(session_tmp / f"t-{uuid.uuid4().hex[:8]}")
    yield factory
    problems = factory.finish()
    if os.environ.get("LEOFS_E2E_KEEP") != "1":
        shutil.rmtree(factory.root, ignore_errors=True)
    if problems:
        pytest.fail("dedicated server: " + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def s3(server):
    """boto3 client of the shared server (root keys, path-style, default checksums)."""
    return server.client()


def unique_bucket_name(prefix: str = "b") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def bucket(s3):
    """A fresh bucket on the shared server, emptied and deleted afterwards."""
    name = unique_bucket_name()
    s3.create_bucket(Bucket=name)
    yield name
    try:
        empty_bucket(s3, name)
        s3.delete_bucket(Bucket=name)
    except Exception as e:  # teardown must not hide the test's own result
        print(f"cleanup of bucket {name} failed: {e}")


@pytest.fixture
def workdir(tmp_path) -> Path:
    return tmp_path


@pytest.fixture
def aws(server, tmp_path) -> AwsCli:
    return AwsCli(server, tmp_path)


@pytest.fixture
def s3cmd(server, tmp_path) -> S3Cmd:
    return S3Cmd(server, tmp_path)


@pytest.fixture
def rclone(server, tmp_path) -> Rclone:
    return Rclone(server, tmp_path)
