"""A real, tiny file system for the full-disk tests: a tmpfs mounted under a test's tmp_path,
filled to its last byte and freed again. Mounting needs root; elsewhere the tests skip."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class SmallDisk:
    """A tmpfs mounted at `path`, which `fill` fills up and `free` empties."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler"

    def fill(self, database: Path) -> None:
        """Fill every free byte. The database's write-ahead log is emptied first, so the
        next write must grow it (a log with room left could take a write or two)."""
        with contextlib.closing(sqlite3.connect(database, timeout=10)) as conn:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "the checkpoint could not empty the write-ahead log"
        chunk = b"\0" * 4096
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            with contextlib.suppress(OSError):  # ENOSPC ends the loop: the disk is full
                while True:
                    os.write(fd, chunk)
        finally:
            os.close(fd)
        assert shutil.disk_usage(self.path).free < len(chunk)

    def free(self) -> None:
        """Give the filled space back."""
        self._filler.unlink()


def _mount_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"no {name} command")
    return found


def mounted_small_disk(tmp_path: Path, size: int) -> Iterator[SmallDisk]:
    """A tmpfs of `size` bytes under `tmp_path` for as long as the generator runs; skips the
    test where mounting one is not allowed (not root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount, umount = _mount_tool("mount"), _mount_tool("umount")
    point = tmp_path / "small-disk"
    point.mkdir()
    mounted = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(point)
    finally:
        # Lazily if something still holds a file there: the mount must never outlive the test.
        if subprocess.run([umount, str(point)], check=False).returncode != 0:
            subprocess.run([umount, "-l", str(point)], check=True)
