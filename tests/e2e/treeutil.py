"""Helpers to build a directory tree of random files and compare two trees byte for byte."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def make_tree(root: Path, files: dict[str, int]) -> dict[str, str]:
    """Writes `files` (relative path -> size in bytes) of random content; returns path -> md5."""
    digests = {}
    for rel, size in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        digests[rel] = hashlib.md5(data).hexdigest()
    return digests


def tree_digests(root: Path) -> dict[str, str]:
    """Relative path -> md5 of every regular file under `root`."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h = hashlib.md5()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[path.relative_to(root).as_posix()] = h.hexdigest()
    return out


SAMPLE_TREE = {
    "a.txt": 10,
    "empty.bin": 0,
    "dir/b.bin": 100_000,
    "dir/sub/c.bin": 3 * 1024 * 1024 + 5,
    "dir/sub/deeper/d.txt": 1,
    "with space/e f.txt": 333,
    "other/g.bin": 20_000,
}
