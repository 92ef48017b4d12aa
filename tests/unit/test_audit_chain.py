"""The audit log's hash chain checked on the client: a chain built here by the documented rule
(written out again below, not borrowed from the library) verifies, and an edited field, a
deleted event, events out of order and a forged link are each named at the first bad event."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz_client import AuditEvent, ChainBreak, FieldChange, verify_audit_chain

EDITED = "edited"
MISSING = "missing event(s) before it"
BROKEN = "chain broken"
T0 = datetime(2030, 1, 31, 12, 0, 0, tzinfo=UTC)  # whole seconds: ".000000Z" must be hashed
ADMIN_ID = "3f1c2a9e-0d7b-4c55-9a1e-6f0b8e2d4c11"
ENTRY_ID = "9b2e4f60-1c3d-4e8a-b7f9-0a5d6c3e2b17"


def documented_hash(previous_hash: str, event: AuditEvent) -> str:
    """docs/api.md's rule, spelled out independently of the library."""
    canonical = json.dumps(
        {
            "sequence": event.sequence,
            "time": event.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor_entry_id": event.actor_entry_id,
            "actor_subject": event.actor_subject,
            "rpc": event.rpc,
            "entry_id": event.entry_id,
            "changes": [[c.field, c.before, c.after] for c in event.changes],
            "code": event.code,
            "peer": event.peer,
            "user_agent": event.user_agent,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    return hashlib.sha256(previous_hash.encode("ascii") + b"\n" + canonical).hexdigest()


def chained(events: list[AuditEvent]) -> list[AuditEvent]:
    """`events` numbered from 1 and linked by the documented rule."""
    out: list[AuditEvent] = []
    previous = ""
    for sequence, unlinked in enumerate(events, start=1):
        placed = dataclasses.replace(unlinked, sequence=sequence, previous_hash=previous, hash="")
        linked = dataclasses.replace(placed, hash=documented_hash(previous, placed))
        out.append(linked)
        previous = linked.hash
    return out


def event(n: int, **fields: object) -> AuditEvent:
    values: dict[str, object] = {
        "sequence": 0,
        "time": T0 + timedelta(seconds=n, microseconds=n * 7),
        "actor_entry_id": ADMIN_ID,
        "actor_subject": "bootstrap-admin",
        "rpc": "UpdateEntry",
        "entry_id": ENTRY_ID,
        "changes": (FieldChange("description", json.dumps(f"v{n}"), json.dumps(f"v{n + 1}")),),
        "code": 0,
        "peer": "10.0.0.7",
        "user_agent": "authz-admin grpc-python/1.71",
        "previous_hash": "",
        "hash": "",
    }
    values.update(fields)
    return AuditEvent(**values)  # type: ignore[arg-type]


def a_log() -> list[AuditEvent]:
    """Six events of the kinds the service writes, with what makes canonical bytes subtle:
    an event at a whole second, text outside ASCII, several changes, an empty actor."""
    return chained(
        [
            event(
                0,
                time=T0,
                actor_entry_id="",
                actor_subject="",
                rpc="(bootstrap)",
                peer="",
                user_agent="",
                changes=(FieldChange("subject", "null", '"bootstrap-admin"'),),
            ),
            event(
                1,
                rpc="CreateEntry",
                changes=(
                    FieldChange("subject", "null", '"catalog-sync"'),
                    FieldChange("description", "null", '"Zürich → Köln, 東京"'),
                ),
            ),
            event(2),
            event(3, code=7, changes=(), actor_subject="under-scoped"),
            event(4, time=datetime(2030, 1, 31, 14, 0, 4, tzinfo=timezone(timedelta(hours=2)))),
            event(5, rpc="RevokeEntry", changes=(FieldChange("revoke_time", "null", '"x"'),)),
        ]
    )


def test_a_chain_built_by_the_documented_rule_is_intact() -> None:
    log = a_log()
    assert [e.sequence for e in log] == [1, 2, 3, 4, 5, 6]
    assert verify_audit_chain(log) is None


def test_an_empty_log_is_intact() -> None:
    assert verify_audit_chain([]) is None


def test_the_check_reads_events_as_they_come_from_an_iterator() -> None:
    assert verify_audit_chain(iter(a_log())) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time", T0 + timedelta(seconds=2, microseconds=15)),
        ("actor_entry_id", "00000000-0000-4000-8000-000000000000"),
        ("actor_subject", "someone-else"),
        ("rpc", "RevokeEntry"),
        ("entry_id", ""),
        ("changes", ()),
        ("changes", (FieldChange("description", '"v2"', '"v9"'),)),
        ("code", 7),
        ("peer", "192.0.2.1"),
        ("user_agent", "curl/8"),
    ],
)
def test_an_edited_field_names_that_event_as_edited(field: str, value: object) -> None:
    log = a_log()
    log[2] = dataclasses.replace(log[2], **{field: value})  # type: ignore[arg-type]
    assert verify_audit_chain(log) == ChainBreak(2, EDITED)


def test_an_edited_event_whose_hash_was_recomputed_breaks_the_link_of_the_next() -> None:
    log = a_log()
    forged = dataclasses.replace(log[2], actor_subject="someone-else")
    log[2] = dataclasses.replace(forged, hash=documented_hash(forged.previous_hash, forged))
    assert verify_audit_chain(log) == ChainBreak(3, BROKEN)


def test_a_deleted_event_is_named_at_the_event_after_the_gap() -> None:
    log = a_log()
    del log[3]
    assert verify_audit_chain(log) == ChainBreak(3, MISSING)
    assert log[3].sequence == 5


def test_a_deleted_first_event_is_named_at_the_first_event_read() -> None:
    assert verify_audit_chain(a_log()[1:]) == ChainBreak(0, MISSING)


def test_several_deleted_events_are_named_at_the_first_gap() -> None:
    log = a_log()
    assert verify_audit_chain([log[0], log[1], log[4], log[5]]) == ChainBreak(2, MISSING)


def test_events_listed_out_of_order_are_named_where_the_order_first_breaks() -> None:
    log = a_log()
    log[2], log[3] = log[3], log[2]
    assert verify_audit_chain(log) == ChainBreak(2, MISSING)


def test_events_whose_sequence_numbers_were_swapped_break_the_chain_where_they_meet() -> None:
    log = a_log()
    third, fourth = log[2], log[3]
    log[2] = dataclasses.replace(fourth, sequence=3)
    log[3] = dataclasses.replace(third, sequence=4)
    assert verify_audit_chain(log) == ChainBreak(2, BROKEN)


def test_an_event_repeated_breaks_the_chain_at_the_repeat() -> None:
    log = a_log()
    assert verify_audit_chain([*log[:3], log[2], *log[3:]]) == ChainBreak(3, BROKEN)


def test_a_first_event_that_claims_a_predecessor_breaks_the_chain() -> None:
    log = a_log()
    log[0] = dataclasses.replace(log[0], previous_hash="00" * 32)
    assert verify_audit_chain(log) == ChainBreak(0, BROKEN)


def test_an_event_numbered_back_onto_an_earlier_one_breaks_the_chain() -> None:
    log = a_log()[:3]
    log[2] = dataclasses.replace(log[2], sequence=2)
    assert verify_audit_chain(log) == ChainBreak(2, BROKEN)


def test_a_chain_break_unpacks_as_the_position_and_the_reason() -> None:
    log = a_log()
    log[4] = dataclasses.replace(log[4], peer="192.0.2.1")
    broken = verify_audit_chain(log)
    assert broken is not None
    position, reason = broken
    assert (position, reason, log[position].sequence) == (4, EDITED, 5)


@given(
    length=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
def test_any_single_deletion_or_edit_is_found_at_its_place(
    length: int, data: st.DataObject
) -> None:
    log = chained([event(n) for n in range(length)])
    assert verify_audit_chain(log) is None
    where = data.draw(st.integers(min_value=0, max_value=length - 1), label="where")
    if data.draw(st.booleans(), label="delete"):
        if where == length - 1:
            return  # dropping the newest event leaves a shorter intact chain (see the docs)
        del log[where]
        assert verify_audit_chain(log) == ChainBreak(where, MISSING)
    else:
        subject = data.draw(st.text(max_size=8), label="subject")
        if subject == log[where].actor_subject:
            return
        log[where] = dataclasses.replace(log[where], actor_subject=subject)
        assert verify_audit_chain(log) == ChainBreak(where, EDITED)
