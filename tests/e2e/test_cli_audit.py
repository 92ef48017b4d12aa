"""`authz-admin audit` against a real server: one event per admin write with the fields it
changed, a refusal to an under-scoped admin recorded with code 7, filters by entry, actor and
time, every page read; and `audit --verify` that finds the chain intact, then names the first
bad event after the database file was edited behind the server's back (exit 8)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from admin_cli import AdminCli, Run
from authz.v1 import authz_pb2, authz_pb2_grpc
from authz_client import AsyncAuthzClient, AuditEvent, AuthzClient, verify_audit_chain
from server_process import BOOTSTRAP_TOKEN, ServerProcess

TOKEN = "audited-token-0123456789"
NEW_TOKEN = "audited-new-token-0123456789"
READER_TOKEN = "reader-admin-token-0123456789"
SECRETS = (TOKEN, NEW_TOKEN, READER_TOKEN, BOOTSTRAP_TOKEN)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "authz.db"


@pytest.fixture
def server(db_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(db_path)
    yield process
    process.stop()


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path) -> AdminCli:
    return AdminCli(server.target, tmp_path)


def events(cli: AdminCli, *args: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = cli.ok("audit", *args, "--json").json()
    return listed


def changed(event: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """An event's changes as {field: (before, after)}, the JSON values read."""
    return {c["field"]: (json.loads(c["before"]), json.loads(c["after"])) for c in event["changes"]}


def a_history(cli: AdminCli) -> dict[str, Any]:
    """Create, update, rotate with a grace and revoke one entry: four writes."""
    entry = cli.create("audited", TOKEN, "catalog::read")
    cli.ok("update", "audited", "--description", "first words")
    cli.ok("rotate", "audited", "--grace", "1h", stdin=NEW_TOKEN)
    cli.ok("revoke", "audited", "--reason", "done")
    return entry


def test_each_admin_write_is_one_event_with_the_fields_it_changed(cli: AdminCli) -> None:
    entry = a_history(cli)
    admin = cli.ok("get", "bootstrap-admin", "--json").json()
    written = events(cli, "audited")
    assert events(cli, entry["id"]) == written
    assert [e["rpc"] for e in written] == [
        "CreateEntry",
        "UpdateEntry",
        "UpdateEntry",
        "RevokeEntry",
    ]
    for event in written:
        assert (event["actor_entry_id"], event["actor_subject"]) == (admin["id"], "bootstrap-admin")
        assert (event["entry_id"], event["code"]) == (entry["id"], 0)
        assert "127.0.0.1" in event["peer"]
        assert "grpc" in event["user_agent"]
    create, update, rotate, revoke = (changed(e) for e in written)
    assert create["subject"] == (None, "audited")
    assert create["access_restrictions"] == (
        None,
        [{"plugin": "catalog", "permissions": [], "actions": ["READ"]}],
    )
    assert update == {"description": ("", "first words")}
    assert set(rotate) == {"token", "previous_token_expire_time"}
    assert rotate["previous_token_expire_time"][1] is not None
    assert revoke["revoke_time"][0] is None
    everything = cli.ok("audit", "--json").stdout
    assert not [secret for secret in SECRETS if secret in everything]


def test_the_table_shows_who_did_what_to_which_entry_with_before_and_after(
    cli: AdminCli,
) -> None:
    entry = a_history(cli)
    header, *rows = cli.ok("audit", "audited").stdout.splitlines()
    assert header.split() == ["SEQ", "TIME", "ACTOR", "RPC", "ENTRY", "OUTCOME", "PEER", "CHANGES"]
    update = next(row for row in rows if 'description: "" -> "first words"' in row)
    assert update.split()[2:6] == ["bootstrap-admin", "UpdateEntry", entry["id"], "OK"]
    assert not [secret for secret in SECRETS if secret in "\n".join(rows)]


def test_a_call_refused_to_an_under_scoped_admin_is_recorded_with_code_7(cli: AdminCli) -> None:
    target = cli.create("guarded", TOKEN)
    reader = cli.create("reader", READER_TOKEN, "authz:authz.entry.read")
    refused = cli("revoke", target["id"], env={"AUTHZ_ADMIN_TOKEN": READER_TOKEN})
    assert refused.code == 4, refused.output
    (event,) = events(cli, "--actor", "reader")
    assert (event["rpc"], event["code"], event["changes"]) == ("RevokeEntry", 7, [])
    assert (event["actor_entry_id"], event["entry_id"]) == (reader["id"], target["id"])
    assert events(cli, "--actor", reader["id"]) == [event]
    assert cli.ok("get", "guarded", "--json").json()["state"] == "active"
    (row,) = cli.ok("audit", "--actor", "reader").stdout.splitlines()[1:]
    assert "PERMISSION_DENIED" in row.split()


def test_audit_needs_the_audit_permission_and_its_refusal_is_an_event_too(cli: AdminCli) -> None:
    reader = cli.create("reader", READER_TOKEN, "authz:authz.entry.read")
    run = cli("audit", env={"AUTHZ_ADMIN_TOKEN": READER_TOKEN})
    assert run.code == 4
    assert "authz.audit.read" in run.stderr
    assert run.stdout == ""
    (event,) = events(cli, "--actor", reader["id"])
    assert (event["rpc"], event["code"]) == ("ListAuditEvents", 7)


def test_since_and_until_select_a_time_range_that_includes_since(cli: AdminCli) -> None:
    a_history(cli)
    every = events(cli)
    middle = every[2]["time"]
    assert events(cli, "--since", middle) == every[2:]
    assert events(cli, "--until", middle) == every[:2]
    assert events(cli, "--since", every[1]["time"], "--until", middle) == [every[1]]
    assert events(cli, "--since", "1h") == every
    assert events(cli, "--until", "1h") == []


def test_audit_reads_every_page_and_verify_counts_every_event(
    cli: AdminCli, server: ServerProcess
) -> None:
    entry = cli.create("busy", TOKEN)
    with AuthzClient(server.target, admin_token=BOOTSTRAP_TOKEN, timeout=10) as admin:
        etag = entry["etag"]
        for n in range(230):  # past two pages of 100
            etag = admin.update_entry(entry["id"], etag, description=f"step {n}").etag
        page, next_page = admin.list_audit_events(page_size=100)
        assert (len(page), bool(next_page)) == (100, True)
    listed = events(cli)
    assert [e["sequence"] for e in listed] == list(range(1, 233))
    assert cli.ok("audit", "--verify").stdout.startswith("232 events, chain intact\n")


def test_verify_finds_the_chain_intact_and_says_its_newest_hash(cli: AdminCli) -> None:
    a_history(cli)
    every = events(cli)
    run = cli.ok("audit", "--verify")
    intact, newest = run.stdout.splitlines()
    assert intact == f"{len(every)} events, chain intact"
    assert newest.endswith(f"hash {every[-1]['hash']}")
    assert cli.ok("audit", "--verify", "--json").json() == {
        "intact": True,
        "events": len(every),
        "last_sequence": every[-1]["sequence"],
        "last_hash": every[-1]["hash"],
    }


def test_verify_takes_no_filter(cli: AdminCli) -> None:
    run = cli("audit", "--verify", "bootstrap-admin")
    assert run.code == 2
    assert "--verify checks the whole audit log, so it takes no ENTRY" in run.stderr


def tamper(db_path: Path, statement: str, *parameters: object) -> None:
    """Change the audit table as someone with the database file could: around the triggers
    that refuse UPDATE and DELETE, which are put back afterwards."""
    with sqlite3.connect(db_path) as db:
        triggers = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
            ("audit_events",),
        ).fetchall()
        for name, _ in triggers:
            db.execute(f'DROP TRIGGER "{name}"')
        assert db.execute(statement, parameters).rowcount == 1
        for _, sql in triggers:
            db.execute(sql)
    db.close()


def verify_after(
    server: ServerProcess, db_path: Path, tmp_path: Path, edit: str, *args: object
) -> Run:
    """Stop the server, edit its file, start a server on it again, and run `audit --verify`."""
    server.stop()
    tamper(db_path, edit, *args)
    again = ServerProcess(db_path)
    try:
        return AdminCli(again.target, tmp_path)("audit", "--verify")
    finally:
        again.stop()


def sequence_of(every: list[dict[str, Any]], rpc: str) -> int:
    return int(next(e["sequence"] for e in every if e["rpc"] == rpc and e["changes"]))


def test_verify_names_an_edited_event_and_exits_8(
    cli: AdminCli, server: ServerProcess, db_path: Path, tmp_path: Path
) -> None:
    a_history(cli)
    edited = sequence_of(events(cli), "RevokeEntry")
    run = verify_after(
        server,
        db_path,
        tmp_path,
        "UPDATE audit_events SET peer = ? WHERE sequence = ?",
        "10.6.6.6",
        edited,
    )
    assert run.code == 8, run.output
    assert run.stdout == ""
    assert run.stderr.startswith(
        f"authz-admin: error: the audit log's chain is broken at event {edited} (edited): "
    )
    assert f"events 1 to {edited - 1}, before it, are intact" in run.stderr


def test_verify_names_the_event_after_a_deleted_one_and_exits_8(
    cli: AdminCli, server: ServerProcess, db_path: Path, tmp_path: Path
) -> None:
    a_history(cli)
    deleted = sequence_of(events(cli), "UpdateEntry")
    run = verify_after(
        server, db_path, tmp_path, "DELETE FROM audit_events WHERE sequence = ?", deleted
    )
    assert run.code == 8, run.output
    assert run.stderr.startswith(
        "authz-admin: error: the audit log's chain is broken at event "
        f"{deleted + 1} (missing event(s) before it): "
    )


def test_verify_names_an_event_whose_changes_were_rewritten(
    cli: AdminCli, server: ServerProcess, db_path: Path, tmp_path: Path
) -> None:
    a_history(cli)
    edited = sequence_of(events(cli), "UpdateEntry")
    rewrite = (
        "UPDATE audit_events SET changes = replace(changes, 'first words', 'other words')"
        " WHERE sequence = ?"
    )
    run = verify_after(server, db_path, tmp_path, rewrite, edited)
    assert run.code == 8, run.output
    assert f"chain is broken at event {edited} (edited)" in run.stderr


def test_the_client_library_reads_the_events_the_cli_prints_and_verifies_them(
    cli: AdminCli, server: ServerProcess
) -> None:
    entry = a_history(cli)

    async def read_async() -> list[AuditEvent]:
        async with AsyncAuthzClient(server.target, admin_token=BOOTSTRAP_TOKEN) as admin:
            return [event async for event in admin.iter_audit_events(entry_id=entry["id"])]

    with AuthzClient(server.target, admin_token=BOOTSTRAP_TOKEN) as admin:
        every = list(admin.iter_audit_events())
    about = asyncio.run(read_async())
    assert [e.to_dict() for e in about] == events(cli, "audited")
    assert [e.to_dict() for e in every] == events(cli)
    assert verify_audit_chain(every) is None


class _Unavailable(authz_pb2_grpc.AdminServiceServicer):
    """A replica that answers every ListAuditEvents UNAVAILABLE, and counts them."""

    def __init__(self) -> None:
        self.calls = 0

    def ListAuditEvents(
        self, request: authz_pb2.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> authz_pb2.ListAuditEventsResponse:
        self.calls += 1
        context.abort(grpc.StatusCode.UNAVAILABLE, "scripted")


def test_reading_the_audit_log_moves_to_the_next_replica_on_unavailable(
    cli: AdminCli, server: ServerProcess
) -> None:
    a_history(cli)
    unavailable = _Unavailable()
    scripted = grpc.server(futures.ThreadPoolExecutor(2))
    authz_pb2_grpc.add_AdminServiceServicer_to_server(unavailable, scripted)  # type: ignore[no-untyped-call]
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), scripted)
    port = scripted.add_insecure_port("127.0.0.1:0")
    scripted.start()
    try:
        targets = [f"127.0.0.1:{port}", server.target]
        with AuthzClient(targets, admin_token=BOOTSTRAP_TOKEN, timeout=5) as client:
            reads = [[e.to_dict() for e in client.iter_audit_events()] for _ in range(4)]
    finally:
        scripted.stop(None)
    assert reads == [events(cli)] * 4
    assert unavailable.calls > 0  # asked first on every other read, then passed by
