"""Bad input to every RPC: the right status, the bad field named, and nothing changed."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from authz.v1 import authz_pb2 as pb
from server_process import ADMIN_METADATA, ServerProcess

INVALID = grpc.StatusCode.INVALID_ARGUMENT
CATALOG = [pb.AccessRestriction(plugin="catalog")]


READER_METADATA = (("authorization", "Bearer entry-reader-token-1"),)


@dataclass
class Seeded:
    server: ServerProcess
    entry: pb.Entry


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    server = ServerProcess(tmp_path_factory.mktemp("bad-input") / "authz.db")
    entry = server.admin.CreateEntry(
        pb.CreateEntryRequest(
            subject="existing", token="existing-token-1", access_restrictions=CATALOG
        ),
        metadata=ADMIN_METADATA,
    )
    # An admin who may only read entries.
    server.admin.CreateEntry(
        pb.CreateEntryRequest(
            subject="entry-reader",
            token=READER_METADATA[0][1].removeprefix("Bearer "),
            access_restrictions=[
                pb.AccessRestriction(plugin="authz", permissions=["authz.entry.read"])
            ],
        ),
        metadata=ADMIN_METADATA,
    )
    yield Seeded(server, entry)
    server.stop()


def _past() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) - timedelta(days=1))
    return stamp


def _beyond_9999() -> timestamp_pb2.Timestamp:
    """A Timestamp out of the range google.protobuf.Timestamp allows (year 10000)."""
    return timestamp_pb2.Timestamp(seconds=253_402_300_800)


def _create(**fields: object) -> Callable[[Seeded], object]:
    base: dict[str, object] = {
        "subject": "newcomer",
        "token": "newcomer-token-1",
        "access_restrictions": CATALOG,
    }
    request = pb.CreateEntryRequest(**{**base, **fields})
    return lambda s: s.server.admin.CreateEntry(request, metadata=ADMIN_METADATA)


def _update(
    paths: list[str] | None = None,
    etag: str | None = None,
    entry_id: str | None = None,
    **fields: object,
) -> Callable[[Seeded], object]:
    new_token = str(fields.pop("new_token", ""))

    def run(s: Seeded) -> object:
        request = pb.UpdateEntryRequest(
            entry=pb.Entry(id=s.entry.id if entry_id is None else entry_id, **fields),
            update_mask=field_mask_pb2.FieldMask(paths=["description"] if paths is None else paths),
            new_token=new_token,
            etag=s.entry.etag if etag is None else etag,
        )
        return s.server.admin.UpdateEntry(request, metadata=ADMIN_METADATA)

    return run


def _admin(method: str, request: object) -> Callable[[Seeded], object]:
    return lambda s: getattr(s.server.admin, method)(request, metadata=ADMIN_METADATA)


def _check(**fields: object) -> Callable[[Seeded], object]:
    request = pb.CheckRequest(**fields)
    return lambda s: s.server.authz.Check(request)


CASES: dict[str, tuple[Callable[[Seeded], object], grpc.StatusCode, str | None]] = {
    "create: empty subject": (_create(subject=""), INVALID, "subject"),
    "create: subject with whitespace": (_create(subject="two words"), INVALID, "subject"),
    "create: oversized subject": (_create(subject="s" * 129), INVALID, "subject"),
    "create: subject with NUL": (_create(subject="nul\x00subject"), INVALID, "subject"),
    "create: non-printable subject": (_create(subject="bell\x07"), INVALID, "subject"),
    "create: empty token": (_create(token=""), INVALID, "token"),
    "create: short token": (_create(token="short"), INVALID, "token"),
    "create: token with whitespace": (_create(token="token with spaces"), INVALID, "token"),
    "create: token with NUL": (_create(token="token\x00with-nul"), INVALID, "token"),
    "create: oversized token": (_create(token="t" * 513), INVALID, "token"),
    "create: multi-line description": (_create(description="two\nlines"), INVALID, "description"),
    "create: oversized description": (_create(description="d" * 1025), INVALID, "description"),
    "create: empty plugin": (
        _create(access_restrictions=[pb.AccessRestriction()]),
        INVALID,
        "access_restrictions[0].plugin",
    ),
    "create: bad plugin": (
        _create(access_restrictions=[pb.AccessRestriction(plugin="Cat alog")]),
        INVALID,
        "access_restrictions[0].plugin",
    ),
    "create: duplicate plugins": (
        _create(access_restrictions=CATALOG * 2),
        INVALID,
        "access_restrictions",
    ),
    "create: bad permission": (
        _create(
            access_restrictions=[pb.AccessRestriction(plugin="catalog", permissions=["not valid"])]
        ),
        INVALID,
        "access_restrictions[0].permissions[0]",
    ),
    "create: unknown action": (
        _create(access_restrictions=[pb.AccessRestriction(plugin="catalog", actions=[42])]),
        INVALID,
        "access_restrictions[0].actions[0]",
    ),
    "create: unspecified action": (
        _create(access_restrictions=[pb.AccessRestriction(plugin="catalog", actions=[0])]),
        INVALID,
        "access_restrictions[0].actions[0]",
    ),
    "create: unknown admin permission": (
        _create(
            access_restrictions=[
                pb.AccessRestriction(plugin="authz", permissions=["authz.entry.delete"])
            ]
        ),
        INVALID,
        "access_restrictions[0].permissions[0]",
    ),
    "create: no restriction, not unrestricted": (
        _create(access_restrictions=[]),
        INVALID,
        "access_restrictions",
    ),
    "create: expiry in the past": (_create(expire_time=_past()), INVALID, "expire_time"),
    "create: timestamp out of range": (
        _create(expire_time=_beyond_9999()),
        INVALID,
        "expire_time",
    ),
    "create: negative nanos": (
        _create(expire_time=timestamp_pb2.Timestamp(seconds=4_000_000_000, nanos=-1)),
        INVALID,
        "expire_time",
    ),
    "create: subject taken": (_create(subject="existing"), grpc.StatusCode.ALREADY_EXISTS, None),
    "create: token taken": (
        _create(token="existing-token-1"),
        grpc.StatusCode.ALREADY_EXISTS,
        None,
    ),
    "update: unknown mask path": (_update(paths=["subject"]), INVALID, "update_mask.paths[0]"),
    "update: nothing to change": (_update(paths=[]), INVALID, "update_mask"),
    "update: no etag": (_update(etag=""), INVALID, "etag"),
    "update: no id": (_update(entry_id=""), INVALID, "entry.id"),
    "update: unknown id": (_update(entry_id="no-such-entry"), grpc.StatusCode.NOT_FOUND, None),
    "update: stale etag": (_update(etag="r0"), grpc.StatusCode.ABORTED, None),
    "update: bad new token": (_update(paths=[], new_token="new token"), INVALID, "new_token"),
    "update: taken new token": (
        _update(paths=[], new_token="existing-token-1"),
        grpc.StatusCode.ALREADY_EXISTS,
        None,
    ),
    "update: bad restriction": (
        _update(
            paths=["access_restrictions"], access_restrictions=[pb.AccessRestriction(plugin="")]
        ),
        INVALID,
        "entry.access_restrictions[0].plugin",
    ),
    "update: bad description": (_update(description="nul\x00"), INVALID, "entry.description"),
    "update: expiry in the past": (
        _update(paths=["expire_time"], expire_time=_past()),
        INVALID,
        "entry.expire_time",
    ),
    "update: timestamp out of range": (
        _update(paths=["expire_time"], expire_time=_beyond_9999()),
        INVALID,
        "entry.expire_time",
    ),
    "revoke: no id": (_admin("RevokeEntry", pb.RevokeEntryRequest()), INVALID, "id"),
    "revoke: unknown id": (
        _admin("RevokeEntry", pb.RevokeEntryRequest(id="no-such-entry")),
        grpc.StatusCode.NOT_FOUND,
        None,
    ),
    "revoke: reason with control characters": (
        _admin("RevokeEntry", pb.RevokeEntryRequest(id="x", reason="a\x00b")),
        INVALID,
        "reason",
    ),
    "get: no id": (_admin("GetEntry", pb.GetEntryRequest()), INVALID, "id"),
    "get: unknown id": (
        _admin("GetEntry", pb.GetEntryRequest(id="no-such-entry")),
        grpc.StatusCode.NOT_FOUND,
        None,
    ),
    "list: page token never issued": (
        _admin("ListEntries", pb.ListEntriesRequest(page_token="bm90LWlzc3VlZA.AAAA")),
        INVALID,
        "page_token",
    ),
    "list: garbage page token": (
        _admin("ListEntries", pb.ListEntriesRequest(page_token="\x00garbage")),
        INVALID,
        "page_token",
    ),
    "list: negative page size": (
        _admin("ListEntries", pb.ListEntriesRequest(page_size=-1)),
        INVALID,
        "page_size",
    ),
    "check: no plugin": (_check(token="existing-token-1"), INVALID, "plugin"),
    "check: bad plugin": (_check(token="existing-token-1", plugin="bad plugin"), INVALID, "plugin"),
    "check: bad permission": (
        _check(token="existing-token-1", plugin="catalog", permission="a b"),
        INVALID,
        "permission",
    ),
    "check: unknown action": (
        _check(token="existing-token-1", plugin="catalog", action=99),
        INVALID,
        "action",
    ),
    "check: token and authorization both": (
        _check(token="existing-token-1", authorization="Bearer existing-token-1", plugin="catalog"),
        INVALID,
        "authorization",
    ),
}


def _rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT * FROM entries ORDER BY id").fetchall()


def _violated_fields(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "INVALID_ARGUMENT without google.rpc.Status details"
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        fields += [v.field for v in bad_request.field_violations]
    return fields


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    seeded: Seeded, case: str
) -> None:
    call, code, field = CASES[case]
    before = _rows(seeded.server.db_path)
    with pytest.raises(grpc.RpcError) as raised:
        call(seeded)
    assert raised.value.code() == code, raised.value.details()
    if field is not None:
        assert field in _violated_fields(raised.value)
        assert field in raised.value.details()
    assert _rows(seeded.server.db_path) == before


@pytest.mark.parametrize(
    "token",
    ["nul\x00in-the-middle", "t" * 4096, "tab\tinside-it", "\u200bzero-width-space", "é" * 300],
)
def test_a_token_that_breaks_the_rules_is_a_malformed_deny_not_an_error(
    seeded: Seeded, token: str
) -> None:
    answer = seeded.server.authz.Check(pb.CheckRequest(token=token, plugin="catalog"))
    assert (answer.decision, answer.http_status, answer.reason) == (pb.DENY, 401, "malformed")


@pytest.mark.parametrize(
    ("call", "fields"),
    [
        (_create(subject="two words", expire_time=_beyond_9999()), ["expire_time", "subject"]),
        (
            _update(
                paths=["description", "expire_time"],
                description="nul\x00",
                expire_time=_beyond_9999(),
            ),
            ["entry.description", "entry.expire_time"],
        ),
    ],
    ids=["create", "update"],
)
def test_an_unreadable_timestamp_is_reported_with_the_other_bad_fields(
    seeded: Seeded, call: Callable[[Seeded], object], fields: list[str]
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call(seeded)
    assert raised.value.code() == INVALID
    assert sorted(_violated_fields(raised.value)) == fields


def test_an_unreadable_timestamp_outside_the_update_mask_is_ignored_like_any_field(
    seeded: Seeded,
) -> None:
    admin = seeded.server.admin
    entry = admin.CreateEntry(
        pb.CreateEntryRequest(
            subject="masked", token="masked-token-0001", access_restrictions=CATALOG
        ),
        metadata=ADMIN_METADATA,
    )
    updated = admin.UpdateEntry(
        pb.UpdateEntryRequest(
            entry=pb.Entry(id=entry.id, description="still readable", expire_time=_beyond_9999()),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            etag=entry.etag,
        ),
        metadata=ADMIN_METADATA,
    )
    assert updated.description == "still readable"
    assert not updated.HasField("expire_time")


def _unreadable_write(rpc: str, seeded: Seeded, metadata: object) -> Callable[[], object]:
    """A Create or Update whose expire_time is out of range, sent with `metadata`."""
    admin = seeded.server.admin
    if rpc == "create":
        request = pb.CreateEntryRequest(
            subject="two words",
            token="newcomer-token-1",
            access_restrictions=CATALOG,
            expire_time=_beyond_9999(),
        )
        return lambda: admin.CreateEntry(request, metadata=metadata)
    change = pb.UpdateEntryRequest(
        entry=pb.Entry(id=seeded.entry.id, expire_time=_beyond_9999()),
        update_mask=field_mask_pb2.FieldMask(paths=["expire_time"]),
        etag=seeded.entry.etag,
    )
    return lambda: admin.UpdateEntry(change, metadata=metadata)


@pytest.mark.parametrize(
    ("metadata", "code"),
    [((), grpc.StatusCode.UNAUTHENTICATED), (READER_METADATA, grpc.StatusCode.PERMISSION_DENIED)],
    ids=["anonymous", "reader"],
)
@pytest.mark.parametrize("rpc", ["create", "update"])
def test_a_caller_without_the_right_learns_nothing_of_its_input(
    seeded: Seeded, rpc: str, metadata: object, code: grpc.StatusCode
) -> None:
    call = _unreadable_write(rpc, seeded, metadata)
    before = _rows(seeded.server.db_path)
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert raised.value.code() == code
    assert _rows(seeded.server.db_path) == before


@pytest.mark.parametrize(
    ("bad", "reported"),
    [
        # 30 bad permission names (a 438-byte request): once a trailer too large for a client.
        (
            [pb.AccessRestriction(plugin="catalog", permissions=[f"bad {i}" for i in range(30)])],
            "access_restrictions[0].permissions[0]",
        ),
        # 200,000 empty restrictions: once a 24 MB trailer and a stall of every Check.
        ([pb.AccessRestriction()] * 200_000, "access_restrictions"),
    ],
    ids=["30-bad-permissions", "200k-bad-restrictions"],
)
def test_a_request_with_many_bad_fields_gets_a_short_invalid_argument_a_default_client_reads(
    seeded: Seeded, bad: list[pb.AccessRestriction], reported: str
) -> None:
    before = _rows(seeded.server.db_path)
    with pytest.raises(grpc.RpcError) as raised:
        _create(access_restrictions=bad)(seeded)
    assert raised.value.code() == INVALID, raised.value.details()
    fields = _violated_fields(raised.value)
    assert reported in fields
    assert len(fields) <= 10
    assert "more" in raised.value.details()
    assert len(raised.value.details()) < 4096
    assert _rows(seeded.server.db_path) == before
    # The server is not stalled: a Check right after answers within a tight deadline.
    answer = seeded.server.authz.Check(
        pb.CheckRequest(token="existing-token-1", plugin="catalog"), timeout=2
    )
    assert answer.decision == pb.ALLOW


def test_a_request_over_one_mib_is_refused_unread_and_the_server_goes_on(seeded: Seeded) -> None:
    before = _rows(seeded.server.db_path)
    with pytest.raises(grpc.RpcError) as raised:
        _create(description="d" * (1 << 20))(seeded)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _rows(seeded.server.db_path) == before
    answer = seeded.server.authz.Check(
        pb.CheckRequest(token="existing-token-1", plugin="catalog"), timeout=5
    )
    assert answer.decision == pb.ALLOW
    assert "Traceback" not in seeded.server.log
