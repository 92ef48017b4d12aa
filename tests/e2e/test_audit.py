"""The audit log through the real server (DESIGN section 9): one hash-chained event per admin
write and per call refused to an authenticated admin, listed by ListAuditEvents to holders of
authz.audit.read."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from authz.v1 import authz_pb2 as pb
from authz_service.core.audit import AuditRecord, chain_hash
from server_process import ADMIN_METADATA, BOOTSTRAP_TOKEN, ServerProcess

READER_TOKEN = "entry-reader-token-0123"
WRITER_TOKEN = "entry-writer-token-0123"
TOKEN = "catalog-sync-token-0123"
NEXT = "catalog-sync-token-4567"


def _as(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _events(server: ServerProcess, **filters: object) -> list[pb.AuditEvent]:
    events: list[pb.AuditEvent] = []
    token = ""
    while True:
        page = server.admin.ListAuditEvents(
            pb.ListAuditEventsRequest(page_token=token, **filters), metadata=ADMIN_METADATA
        )
        events += page.events
        token = page.next_page_token
        if not token:
            return events


def _record(event: pb.AuditEvent) -> AuditRecord:
    return AuditRecord(
        time=event.time.ToDatetime(tzinfo=UTC),
        actor_entry_id=event.actor_entry_id,
        actor_subject=event.actor_subject,
        rpc=event.rpc,
        entry_id=event.entry_id,
        changes=tuple((c.field, c.before, c.after) for c in event.changes),
        code=event.code,
        peer=event.peer,
        user_agent=event.user_agent,
    )


def _first_bad(events: list[pb.AuditEvent]) -> int | None:
    """The sequence of the first event that breaks the chain, or None."""
    previous, expected = "", 1
    for event in events:
        if event.sequence != expected or event.previous_hash != previous:
            return event.sequence
        if event.hash != chain_hash(previous, event.sequence, _record(event)):
            return event.sequence
        previous, expected = event.hash, expected + 1
    return None


def _restricted(*permissions: str) -> list[pb.AccessRestriction]:
    return [pb.AccessRestriction(plugin="authz", permissions=list(permissions))]


@pytest.fixture
def audited(server: ServerProcess) -> tuple[ServerProcess, pb.Entry]:
    """A server after a create, an update, a rotation with grace and a revoke."""
    admin = server.admin
    entry = admin.CreateEntry(
        pb.CreateEntryRequest(
            subject="catalog-sync",
            token=TOKEN,
            description="nightly",
            access_restrictions=[pb.AccessRestriction(plugin="catalog")],
        ),
        metadata=ADMIN_METADATA,
    )
    entry = admin.UpdateEntry(
        pb.UpdateEntryRequest(
            entry=pb.Entry(id=entry.id, description="hourly"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            etag=entry.etag,
        ),
        metadata=ADMIN_METADATA,
    )
    entry = admin.UpdateEntry(
        pb.UpdateEntryRequest(
            entry=pb.Entry(id=entry.id),
            new_token=NEXT,
            etag=entry.etag,
            previous_token_grace=duration_pb2.Duration(seconds=3600),
        ),
        metadata=ADMIN_METADATA,
    )
    admin.RevokeEntry(pb.RevokeEntryRequest(id=entry.id, reason="retired"), metadata=ADMIN_METADATA)
    return server, entry


def test_every_write_is_one_event_with_who_what_and_from_where(
    audited: tuple[ServerProcess, pb.Entry],
) -> None:
    server, entry = audited
    events = _events(server)
    assert [e.rpc for e in events] == [
        "(bootstrap)",
        "CreateEntry",
        "UpdateEntry",
        "UpdateEntry",
        "RevokeEntry",
    ]
    bootstrap_id = events[0].entry_id
    for event in events[1:]:
        assert (event.actor_entry_id, event.actor_subject) == (bootstrap_id, "bootstrap-admin")
        assert (event.entry_id, event.code, event.peer) == (entry.id, 0, "127.0.0.1")
        assert "grpc-python" in event.user_agent
    changes = [{c.field: (c.before, c.after) for c in e.changes} for e in events]
    assert changes[1]["description"] == ("null", '"nightly"')
    assert changes[2] == {"description": ('"nightly"', '"hourly"')}
    assert changes[3]["token"] == ("null", '"(new token)"')
    assert json.loads(changes[3]["previous_token_expire_time"][1]).endswith("Z")
    assert changes[4]["revoke_reason"] == ('""', '"retired"')
    assert _first_bad(events) is None


def test_a_call_refused_to_an_authenticated_admin_is_recorded_and_a_bad_token_is_not(
    server: ServerProcess,
) -> None:
    reader = server.admin.CreateEntry(
        pb.CreateEntryRequest(
            subject="reader",
            token=READER_TOKEN,
            access_restrictions=_restricted("authz.entry.read"),
        ),
        metadata=ADMIN_METADATA,
    )
    before = len(_events(server))
    for metadata in (_as(READER_TOKEN), _as("not-a-known-token-0123")):
        with pytest.raises(grpc.RpcError):
            server.admin.CreateEntry(
                pb.CreateEntryRequest(subject="x", token="x-token-0123456789", unrestricted=True),
                metadata=metadata,
            )
    events = _events(server)
    assert len(events) == before + 1  # the unauthenticated attempt is counted, not stored
    refused = events[-1]
    assert (refused.rpc, refused.code) == (
        "CreateEntry",
        grpc.StatusCode.PERMISSION_DENIED.value[0],
    )
    assert (refused.actor_entry_id, refused.actor_subject) == (reader.id, "reader")
    assert list(refused.changes) == []
    assert _first_bad(events) is None


def test_listing_the_audit_log_needs_authz_audit_read(server: ServerProcess) -> None:
    server.admin.CreateEntry(
        pb.CreateEntryRequest(
            subject="writer",
            token=WRITER_TOKEN,
            access_restrictions=_restricted(
                "authz.entry.read", "authz.entry.create", "authz.entry.update"
            ),
        ),
        metadata=ADMIN_METADATA,
    )
    with pytest.raises(grpc.RpcError) as refused:
        server.admin.ListAuditEvents(pb.ListAuditEventsRequest(), metadata=_as(WRITER_TOKEN))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "authz.audit.read" in (refused.value.details() or "")
    assert _events(server)[-1].rpc == "ListAuditEvents"  # the refusal is itself recorded


def test_the_audit_log_is_filtered_by_entry_actor_and_time_and_paged(
    audited: tuple[ServerProcess, pb.Entry],
) -> None:
    server, entry = audited
    everything = _events(server)
    assert [e.sequence for e in _events(server, entry_id=entry.id)] == [2, 3, 4, 5]
    bootstrap_id = everything[0].entry_id
    assert len(_events(server, actor_entry_id=bootstrap_id)) == 4
    since = everything[2].time
    until = everything[4].time
    assert [e.sequence for e in _events(server, since=since, until=until)] == [3, 4]
    first = server.admin.ListAuditEvents(
        pb.ListAuditEventsRequest(page_size=2), metadata=ADMIN_METADATA
    )
    assert [e.sequence for e in first.events] == [1, 2]
    assert first.next_page_token
    with pytest.raises(grpc.RpcError) as bad:
        server.admin.ListAuditEvents(
            pb.ListAuditEventsRequest(page_token="forged"), metadata=ADMIN_METADATA
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _edit_database(db: Path, *statements: str) -> None:
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TRIGGER audit_no_update")  # an attacker with the file can, too
        conn.execute("DROP TRIGGER audit_no_delete")
        for statement in statements:
            conn.execute(statement)
        conn.commit()


@pytest.mark.parametrize(
    ("statement", "first_bad"),
    [
        ("UPDATE audit_events SET actor_subject = 'someone-else' WHERE sequence = 3", 3),
        ("DELETE FROM audit_events WHERE sequence = 2", 3),
    ],
    ids=["edited", "deleted"],
)
def test_an_edited_or_deleted_event_breaks_the_chain(
    audited: tuple[ServerProcess, pb.Entry], statement: str, first_bad: int
) -> None:
    server, _ = audited
    assert server.stop() == 0
    _edit_database(server.db_path, statement)
    again = ServerProcess(server.db_path)
    try:
        assert _first_bad(_events(again)) == first_bad
    finally:
        again.stop()


def test_no_token_is_in_the_audit_log(audited: tuple[ServerProcess, pb.Entry]) -> None:
    server, _ = audited
    listed = b"".join(e.SerializeToString() for e in _events(server))
    assert server.stop() == 0
    with closing(sqlite3.connect(server.db_path)) as conn:
        rows = repr(conn.execute("SELECT * FROM audit_events").fetchall()).encode()
    for token in (TOKEN, NEXT, BOOTSTRAP_TOKEN):
        assert token.encode() not in listed
        assert token.encode() not in rows
    assert b"catalog-sync" in rows  # the rows were read
