"""A real server when its storage fails: a full disk, and the database file deleted while serving.

A full disk answers UNAVAILABLE (retry later), never INTERNAL, and logs no traceback. A deleted
database file turns health NOT_SERVING for every service, says so in one ERROR line, and refuses
every write: a create acknowledged into a deleted file would be lost at the next restart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.v1 import authz_pb2 as pb
from server_process import ADMIN_METADATA, ServerProcess
from small_disk import SmallDisk, mounted_small_disk

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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A tiny tmpfs mounted under tmp_path; skipped where mounting one is not allowed."""
    yield from mounted_small_disk(tmp_path, DISK_BYTES)


def test_a_create_on_a_full_disk_is_unavailable_and_logs_no_traceback(
    small_disk: SmallDisk,
) -> None:
    database = small_disk.path / "authz.db"
    server = ServerProcess(database)
    try:
        _create(server, "before-full")
        small_disk.fill(database)

        with pytest.raises(grpc.RpcError) as refused:
            _create(server, "on-full-disk")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        assert "full" in (refused.value.details() or "")

        small_disk.free()
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
