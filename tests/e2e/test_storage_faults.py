"""A real server when its storage fails: a full disk, and the database file deleted while serving.

A full disk answers UNAVAILABLE (retry later), never INTERNAL, and logs no traceback. A deleted
database file turns health NOT_SERVING for every service, says so in one ERROR line, and refuses
every write: a create acknowledged into a deleted file would be lost at the next restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.v1 import authz_pb2 as pb
from server_process import ADMIN_METADATA, ServerProcess

SERVICES = (
    "",
    "authz.v1.AuthzService",
    "authz.v1.AdminService",
    "envoy.service.auth.v3.Authorization",
)
DISK_BYTES = 2 * 1024 * 1024
WATCH_DEADLINE = 15.0  # the server polls its file every second


def _create(server: ServerProcess, subject: str) -> pb.Entry:
    entry: pb.Entry = server.admin.CreateEntry(
        pb.CreateEntryRequest(
            subject=subject,
            token=f"{subject}-token-0123456789",
            access_restrictions=[pb.AccessRestriction(plugin="catalog")],
        ),
        metadata=ADMIN_METADATA,
        timeout=30,
    )
    return entry


def _records(server: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.lines if line.startswith("{")]


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"no {name} command")
    return found


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tiny tmpfs mounted under tmp_path; skipped where mounting one is not allowed."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount, umount = _tool("mount"), _tool("umount")
    point = tmp_path / "small-disk"
    point.mkdir()
    mounted = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        if subprocess.run([umount, str(point)], check=False).returncode != 0:
            subprocess.run([umount, "-l", str(point)], check=True)


def _fill(disk: Path, database: Path) -> Path:
    """Fill every free byte of `disk`, the database's write-ahead log emptied first (so the
    next write must grow it); returns the filler file, whose removal frees the space."""
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0, "the checkpoint could not empty the write-ahead log"
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with contextlib.suppress(OSError):  # ENOSPC ends the loop: the disk is full
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def test_a_create_on_a_full_disk_is_unavailable_and_logs_no_traceback(small_disk: Path) -> None:
    database = small_disk / "authz.db"
    server = ServerProcess(database)
    try:
        _create(server, "before-full")
        filler = _fill(small_disk, database)

        with pytest.raises(grpc.RpcError) as refused:
            _create(server, "on-full-disk")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert "full" in (refused.value.details() or "")

        filler.unlink()
        _create(server, "after-full")
        listed = server.admin.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA)
    finally:
        server.stop()
    subjects = {entry.subject for entry in listed.entries}
    assert {"before-full", "after-full"} <= subjects
    assert "on-full-disk" not in subjects
    assert "Traceback" not in server.log
    assert [r for r in _records(server) if r["level"] == "ERROR"] == []


def _remove_database(database: Path) -> None:
    for name in (database.name, f"{database.name}-wal", f"{database.name}-shm"):
        (database.parent / name).unlink()


def _await_not_serving(server: ServerProcess) -> None:
    """Wait, with a deadline, for health to turn NOT_SERVING (Watch streams each change)."""
    health = health_pb2_grpc.HealthStub(server.channel)
    updates = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=WATCH_DEADLINE)
    try:
        for update in updates:
            if update.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                return
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    finally:
        updates.cancel()
    pytest.fail(f"health still SERVING {WATCH_DEADLINE:.0f} s after the database was deleted")


def test_a_deleted_database_file_turns_health_not_serving_and_refuses_writes(
    tmp_path: Path,
) -> None:
    database = tmp_path / "data" / "authz.db"
    server = ServerProcess(database)
    try:
        _create(server, "before-delete")
        _remove_database(database)

        _await_not_serving(server)
        health = health_pb2_grpc.HealthStub(server.channel)
        statuses = {
            name: health.Check(health_pb2.HealthCheckRequest(service=name)).status
            for name in SERVICES
        }
        with pytest.raises(grpc.RpcError) as refused:
            _create(server, "after-delete")
    finally:
        code = server.stop()
    assert statuses == dict.fromkeys(SERVICES, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "removed or replaced" in (refused.value.details() or "")
    errors = [r["message"] for r in _records(server) if r["level"] == "ERROR"]
    assert len(errors) == 1, errors
    assert f"database file {database}" in errors[0]
    assert "removed or replaced" in errors[0]
    assert "Traceback" not in server.log
    assert code == 0
