"""A token never appears in the database, its WAL, the server's log or any response."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import psycopg
from google.protobuf import field_mask_pb2

from authz.v1 import authz_pb2 as pb
from postgres_server import PostgresServer
from server_process import ADMIN_METADATA, BOOTSTRAP_TOKEN, ServerProcess

TOKENS = {
    "first": "first-secret-token-AAAA",
    "rotated": "rotated-secret-token-BBBB",
    "unknown": "unknown-secret-token-CCCC",
    "refused": "refused secret token DDDD",
    "admin-guess": "admin-guess-token-EEEE",
    "duplicate-subject": "duplicate-subject-token-FFFF",
    "bootstrap": BOOTSTRAP_TOKEN,
}


def _exercise(server: ServerProcess) -> list[bytes]:
    """Drive every RPC with the tokens above, good and bad; return every byte sent back."""
    seen: list[bytes] = []

    def call(method: grpc.UnaryUnaryMultiCallable, request: object, **kwargs: object) -> object:
        try:
            response, rpc = method.with_call(request, **kwargs)
        except grpc.RpcError as error:
            seen.append(error.details().encode())
            seen.extend(_values(error.trailing_metadata()))
            return None
        seen.append(response.SerializeToString())
        seen.append(str(response).encode())
        seen.extend(_values(rpc.trailing_metadata()))
        return response

    restriction = [pb.AccessRestriction(plugin="catalog")]
    entry = call(
        server.admin.CreateEntry,
        pb.CreateEntryRequest(
            subject="secret-holder", token=TOKENS["first"], access_restrictions=restriction
        ),
        metadata=ADMIN_METADATA,
    )
    assert isinstance(entry, pb.Entry)
    call(
        server.admin.CreateEntry,
        pb.CreateEntryRequest(
            subject="secret-holder",
            token=TOKENS["duplicate-subject"],
            access_restrictions=restriction,
        ),
        metadata=ADMIN_METADATA,
    )
    call(
        server.admin.CreateEntry,
        pb.CreateEntryRequest(
            subject="copy", token=TOKENS["first"], access_restrictions=restriction
        ),
        metadata=ADMIN_METADATA,
    )
    call(
        server.admin.CreateEntry,
        pb.CreateEntryRequest(
            subject="bad", token=TOKENS["refused"], access_restrictions=restriction
        ),
        metadata=ADMIN_METADATA,
    )
    for token in (TOKENS["first"], TOKENS["unknown"], TOKENS["refused"]):
        call(server.authz.Check, pb.CheckRequest(token=token, plugin="catalog"))
        call(
            server.authz.Check,
            pb.CheckRequest(authorization=f"Bearer {token}", plugin="scaffolder"),
        )
        call(
            server.authz.Check,
            pb.CheckRequest(token=token, authorization=f"Bearer {token}", plugin="catalog"),
        )
    call(
        server.admin.ListEntries,
        pb.ListEntriesRequest(),
        metadata=(("authorization", f"Bearer {TOKENS['admin-guess']}"),),
    )
    call(
        server.admin.ListEntries,
        pb.ListEntriesRequest(),
        metadata=(("authorization", f"Bearer {TOKENS['first']}"),),
    )
    rotated = call(
        server.admin.UpdateEntry,
        pb.UpdateEntryRequest(
            entry=pb.Entry(id=entry.id, description="rotated"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            new_token=TOKENS["rotated"],
            etag=entry.etag,
        ),
        metadata=ADMIN_METADATA,
    )
    assert isinstance(rotated, pb.Entry)
    call(
        server.admin.UpdateEntry,
        pb.UpdateEntryRequest(
            entry=pb.Entry(id=entry.id), new_token=TOKENS["refused"], etag=rotated.etag
        ),
        metadata=ADMIN_METADATA,
    )
    call(server.authz.Check, pb.CheckRequest(token=TOKENS["rotated"], plugin="catalog"))
    call(server.admin.GetEntry, pb.GetEntryRequest(id=entry.id), metadata=ADMIN_METADATA)
    call(
        server.admin.ListEntries,
        pb.ListEntriesRequest(include_revoked=True),
        metadata=ADMIN_METADATA,
    )
    call(server.admin.RevokeEntry, pb.RevokeEntryRequest(id=entry.id), metadata=ADMIN_METADATA)
    call(server.authz.Check, pb.CheckRequest(token=TOKENS["rotated"], plugin="catalog"))
    # The audit log of all of it, and a refused look at it by a token that is not an admin's.
    listed = call(
        server.admin.ListAuditEvents, pb.ListAuditEventsRequest(), metadata=ADMIN_METADATA
    )
    assert isinstance(listed, pb.ListAuditEventsResponse)
    assert len(listed.events) >= 5
    call(
        server.admin.ListAuditEvents,
        pb.ListAuditEventsRequest(),
        metadata=(("authorization", f"Bearer {TOKENS['rotated']}"),),
    )
    return seen


def _values(metadata: object) -> list[bytes]:
    return [v if isinstance(v, bytes) else v.encode() for _, v in metadata or ()]


def _leaks(haystacks: dict[str, bytes]) -> list[tuple[str, str]]:
    return [
        (name, where)
        for name, token in TOKENS.items()
        for where, data in haystacks.items()
        if token.encode() in data
    ]


def _database_files(db: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in db.parent.glob(db.name + "*")}
    assert db.name in files
    return files


def test_no_token_appears_in_database_wal_log_or_responses(tmp_path: Path) -> None:
    db = tmp_path / "authz.db"
    server = ServerProcess(db, None, "--log-level", "DEBUG", "--metrics-listen", "127.0.0.1:0")
    responses = _exercise(server)
    metrics = server.metrics()
    assert "authz_argon2_verifications_total" in metrics
    assert len(responses) > 40
    running = _database_files(db)
    assert any(name.endswith("-wal") for name in running), "expected a live WAL to inspect"
    assert server.stop() == 0
    assert _leaks({"responses": b"\n".join(responses)}) == []
    assert _leaks(running) == []
    assert _leaks(_database_files(db)) == []
    assert _leaks({"log": server.log.encode(), "metrics": metrics.encode()}) == []
    # The checks did find what they were looking for, so the haystacks are not empty.
    assert b"secret-holder" in b"".join(running.values())
    assert "serving on" in server.log
    # The log searched holds an access line per admin call and, at DEBUG, a line per Check.
    assert "authz_service.access" in server.log
    assert "authz_service.check" in server.log


def test_no_token_appears_in_postgresql_files_or_log_or_the_replicas_answers(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    key = tmp_path / "server.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    url = postgres.create_database("secrets")
    env = {"AUTHZ_SERVER_KEY_FILE": str(key)}
    server = ServerProcess(url, env, "--log-level", "DEBUG")
    other = ServerProcess(url, env, "--log-level", "DEBUG")  # follows every write
    responses = _exercise(server)
    assert server.stop() == 0
    assert other.stop() == 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # the writes in the table files, not only in the WAL
        tables = conn.execute(
            "SELECT string_agg(row_to_json(e)::text, E'\\n') FROM entries e"
            " UNION ALL SELECT string_agg(row_to_json(r)::text, E'\\n') FROM retired_tokens r"
            " UNION ALL SELECT string_agg(row_to_json(v)::text, E'\\n') FROM events v"
        ).fetchall()
    rows = "\n".join(text for (text,) in tables if text).encode()
    assert b"secret-holder" in rows  # the rows were there to search
    files = {str(path): path.read_bytes() for path in postgres.data.rglob("*") if path.is_file()}
    assert _leaks({"rows": rows, "postgres log": postgres.log.encode()}) == []
    assert _leaks(files) == []
    assert _leaks({"responses": b"\n".join(responses)}) == []
    assert _leaks({"log": server.log.encode(), "other log": other.log.encode()}) == []
