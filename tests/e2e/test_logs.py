"""The server's log: one JSON object per line, an access line per admin call naming the acting
admin, and no line per Check unless the level is DEBUG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from authz.v1 import authz_pb2 as pb
from server_process import ADMIN_METADATA, BOOTSTRAP_TOKEN, ServerProcess

ENTRY_TOKEN = "logged-entry-token-0001"


def _records(server: ServerProcess) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in server.lines if line.strip()]
    assert all(isinstance(record, dict) for record in records)
    return records


def _checks(server: ServerProcess, count: int) -> None:
    server.admin.CreateEntry(
        pb.CreateEntryRequest(
            subject="logged",
            token=ENTRY_TOKEN,
            access_restrictions=[pb.AccessRestriction(plugin="catalog")],
        ),
        metadata=ADMIN_METADATA,
    )
    for n in range(count):
        token = ENTRY_TOKEN if n % 2 else f"unknown-token-{n:04d}"
        server.authz.Check(pb.CheckRequest(token=token, plugin="catalog"))


def test_every_line_is_a_json_object_with_time_level_logger_and_message(
    server: ServerProcess,
) -> None:
    server.admin.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA)
    server.stop()
    records = _records(server)
    assert len(records) >= 5  # bootstrap, serving, an access line, stopping, stopped
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
    assert records[0]["message"].startswith("bootstrap-admin created (entry ")
    assert records[1]["message"].startswith(f"serving on 127.0.0.1:{server.port} ")


def test_each_admin_call_writes_one_access_line_naming_the_acting_admin(
    server: ServerProcess,
) -> None:
    created = server.admin.CreateEntry(
        pb.CreateEntryRequest(subject="audited", token="audited-token-123", unrestricted=True),
        metadata=ADMIN_METADATA,
    )
    server.admin.GetEntry(pb.GetEntryRequest(id=created.id), metadata=ADMIN_METADATA)
    with pytest.raises(grpc.RpcError):
        server.admin.GetEntry(pb.GetEntryRequest(id="not-an-id"), metadata=ADMIN_METADATA)
    with pytest.raises(grpc.RpcError):
        server.admin.ListEntries(
            pb.ListEntriesRequest(), metadata=(("authorization", "Bearer audited-token-123"),)
        )
    server.stop()
    access = [
        {key: r[key] for key in ("rpc", "code", "subject", "entry_id")}
        for r in _records(server)
        if r["logger"] == "authz_service.access"
    ]
    assert access == [
        {"rpc": "CreateEntry", "code": "OK", "subject": "bootstrap-admin", "entry_id": created.id},
        {"rpc": "GetEntry", "code": "OK", "subject": "bootstrap-admin", "entry_id": created.id},
        # An id that is not an entry id is not repeated: a caller's typing stays out.
        {"rpc": "GetEntry", "code": "NOT_FOUND", "subject": "bootstrap-admin", "entry_id": ""},
        # `unrestricted` never covers authz: a known token, refused, and named as in the audit.
        {"rpc": "ListEntries", "code": "PERMISSION_DENIED", "subject": "audited", "entry_id": ""},
    ]
    assert "audited-token-123" not in server.log
    assert BOOTSTRAP_TOKEN not in server.log


def test_checks_write_no_line_at_info(server: ServerProcess) -> None:
    _checks(server, 20)
    server.stop()
    loggers = [record["logger"] for record in _records(server)]
    assert "authz_service.check" not in loggers
    assert loggers.count("authz_service.access") == 1


def test_at_debug_each_check_writes_a_line_without_its_token(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "authz.db", None, "--log-level", "DEBUG")
    _checks(server, 20)
    server.stop()
    checks = [r for r in _records(server) if r["logger"] == "authz_service.check"]
    assert len(checks) == 20
    allowed = [r for r in checks if r["allowed"]]
    assert len(allowed) == 10
    assert {r["subject"] for r in allowed} == {"logged"}
    assert {r["reason"] for r in checks if not r["allowed"]} == {"unknown_token"}
    assert ENTRY_TOKEN not in server.log
    assert "unknown-token-0000" not in server.log


def test_text_lines_on_request_still_name_the_listener(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "authz.db", {"AUTHZ_LOG_FORMAT": "text"})
    server.stop()
    assert not any(line.startswith("{") for line in server.lines)
    assert f"INFO authz_service: serving on 127.0.0.1:{server.port}" in server.lines[1]
