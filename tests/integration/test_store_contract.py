"""The EntryStore contract, run against the in-memory fake and the real SQLite and PostgreSQL
stores.

Unit tests of the use cases trust `InMemoryStore`; this suite is what earns that trust: every
test here passes against all three, each behind the async port as the server runs them
(`memory_port(InMemoryStore())`, `SqliteStore(path)` and `PostgresStore(url)` on a real
PostgreSQL server), so the fake behaves as the real stores do.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from authz_service.adapters.postgres_store import PostgresStore
from authz_service.adapters.sqlite_store import SqliteStore
from authz_service.core.audit import AuditEvent, AuditFilter, AuditRecord, chain_hash
from authz_service.core.changes import Change, ChangeKind, Changes, Claim, ClaimChanged, Event
from authz_service.core.errors import Aborted, AlreadyExists, NotFound
from authz_service.core.model import Action, Entry, Restriction, State
from authz_service.core.ports import Cursor, EntryStore
from fakes import InMemoryStore, memory_port

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


class SyncStore:
    """The async port, called synchronously: each coroutine method runs to its end in its own
    `asyncio.run` (the port's thread pools serve any loop). `version` is the port's own."""

    def __init__(self, port: EntryStore) -> None:
        self.port = port
        self.version = port.version

    def head(self) -> int:
        return asyncio.run(self.port.head())

    def changes(self, after: int) -> Changes:
        return asyncio.run(self.port.changes(after))

    def add(self, entry: Entry, change: Change | None = None) -> Event:
        return asyncio.run(self.port.add(entry, change))

    def get(self, entry_id: str) -> Entry:
        return asyncio.run(self.port.get(entry_id))

    def find_subject(self, subject: str) -> Entry | None:
        return asyncio.run(self.port.find_subject(subject))

    def find_tag(self, tag: int) -> list[Entry]:
        return asyncio.run(self.port.find_tag(tag))

    def all_tags(self) -> set[int]:
        return asyncio.run(self.port.all_tags())

    def replace(self, entry: Entry, change: Change | None = None) -> Event:
        return asyncio.run(self.port.replace(entry, change))

    def rotate(self, entry: Entry, change: Change | None = None) -> Event:
        return asyncio.run(self.port.rotate(entry, change))

    def find_retired(self, tag: int) -> list[str]:
        return asyncio.run(self.port.find_retired(tag))

    def replace_verifier(self, entry_id: str, old: str, new: str) -> None:
        asyncio.run(self.port.replace_verifier(entry_id, old, new))

    def list_entries(self, after: Cursor | None, limit: int, include_revoked: bool) -> list[Entry]:
        return asyncio.run(self.port.list_entries(after, limit, include_revoked))

    def record_use(self, last_used: Mapping[str, datetime]) -> None:
        asyncio.run(self.port.record_use(last_used))

    def count_by_state(self, now: datetime) -> dict[State, int]:
        return asyncio.run(self.port.count_by_state(now))

    def record_audit(self, record: AuditRecord) -> AuditEvent:
        return asyncio.run(self.port.record_audit(record))

    def list_audit(self, after: int, limit: int, wanted: AuditFilter) -> list[AuditEvent]:
        return asyncio.run(self.port.list_audit(after, limit, wanted))

    def key_fingerprint(self) -> str | None:
        return asyncio.run(self.port.key_fingerprint())

    def keep_key_fingerprint(self, fingerprint: str) -> str:
        return asyncio.run(self.port.keep_key_fingerprint(fingerprint))

    def holds_entries(self) -> bool:
        return asyncio.run(self.port.holds_entries())

    def close(self) -> None:
        self.port.close()


class StoreUnderTest:
    """A store, and a way to reopen it as a restarted server would."""

    def __init__(self, open_store: Callable[[], EntryStore]) -> None:
        self._open = open_store
        self.store = SyncStore(open_store())

    def reopen(self) -> SyncStore:
        """Close the store and open it again over the same data."""
        self.store.close()
        self.store = SyncStore(self._open())
        return self.store


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def subject_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    if request.param == "memory":
        memory = InMemoryStore()
        under_test = StoreUnderTest(lambda: memory_port(memory))
    elif request.param == "sqlite":
        under_test = StoreUnderTest(lambda: SqliteStore(tmp_path / "authz.db"))
    else:
        url = request.getfixturevalue("postgres_url")
        under_test = StoreUnderTest(lambda: PostgresStore(url))
    yield under_test
    under_test.store.close()


@pytest.fixture
def store(subject_store: StoreUnderTest) -> SyncStore:
    return subject_store.store


def entry(
    n: int,
    *,
    subject: str | None = None,
    tag: int | None = None,
    created: datetime | None = None,
    revoked: bool = False,
) -> Entry:
    when = created if created is not None else T0 + timedelta(seconds=n)
    return Entry(
        id=f"id-{n:03d}",
        subject=subject if subject is not None else f"subject-{n}",
        description=f"entry {n}",
        restrictions=(Restriction("catalog", ("catalog.entity.read",), (Action.READ,)),),
        unrestricted=False,
        verifier=f"fake$v1$salt{n}$verifier{n}",
        lookup_tag=tag if tag is not None else 1000 + n,
        create_time=when,
        update_time=when,
        revoke_time=when + timedelta(minutes=1) if revoked else None,
        revoke_reason="retired" if revoked else "",
        etag=f"etag-{n}",
    )


def revoke(current: Entry) -> Entry:
    return replace(
        current,
        revoke_time=current.update_time + timedelta(hours=1),
        revoke_reason="leaked",
        update_time=current.update_time + timedelta(hours=1),
        revision=current.revision + 1,
    )


# add / get


def test_an_added_entry_reads_back_equal_in_every_field(store: SyncStore) -> None:
    full = replace(
        entry(1),
        description="the catalog sync job",
        restrictions=(
            Restriction("catalog", ("catalog.entity.read", "catalog.entity.refresh"), ()),
            Restriction("scaffolder", (), (Action.CREATE, Action.DELETE)),
            Restriction("authz", ("authz.entry.read",), ()),
        ),
        unrestricted=True,
        lookup_tag=2**32 - 1,
        revision=7,
        expire_time=T0 + timedelta(days=30, microseconds=1),
        last_used_time=T0 + timedelta(seconds=5, microseconds=999999),
    )
    revoked = entry(2, revoked=True)
    store.add(full)
    store.add(revoked)
    assert store.get(full.id) == full
    assert store.get(revoked.id) == revoked
    assert store.get(revoked.id).revoke_reason == "retired"


def test_times_read_back_as_the_same_instants(store: SyncStore) -> None:
    local = T0.astimezone(timezone(timedelta(hours=5)))
    store.add(replace(entry(1), create_time=local, update_time=local))
    read = store.get("id-001")
    assert read.create_time == T0
    assert read.create_time.utcoffset() is not None


def test_getting_an_unknown_id_raises_not_found(store: SyncStore) -> None:
    store.add(entry(1))
    with pytest.raises(NotFound):
        store.get("id-999")


def test_adding_a_second_unrevoked_entry_with_a_subject_raises_already_exists(
    store: SyncStore,
) -> None:
    first = entry(1, subject="catalog-sync")
    store.add(first)
    with pytest.raises(AlreadyExists):
        store.add(entry(2, subject="catalog-sync"))
    assert store.get(first.id) == first
    with pytest.raises(NotFound):
        store.get("id-002")
    assert store.list_entries(None, 10, include_revoked=True) == [first]


def test_adding_an_entry_with_a_taken_id_raises_already_exists(store: SyncStore) -> None:
    first = entry(1)
    store.add(first)
    with pytest.raises(AlreadyExists):
        store.add(replace(entry(2), id=first.id))
    assert store.get(first.id) == first


def test_the_subject_of_a_revoked_entry_can_be_taken_by_a_new_entry(store: SyncStore) -> None:
    store.add(entry(1, subject="catalog-sync"))
    store.replace(revoke(store.get("id-001")))
    successor = entry(2, subject="catalog-sync")
    store.add(successor)
    assert store.get(successor.id) == successor
    assert store.find_subject("catalog-sync") == successor


def test_a_revoked_entry_may_be_added_beside_an_active_one_with_its_subject(
    store: SyncStore,
) -> None:
    active = entry(1, subject="catalog-sync")
    store.add(active)
    store.add(entry(2, subject="catalog-sync", revoked=True))
    assert store.find_subject("catalog-sync") == active
    assert len(store.list_entries(None, 10, include_revoked=True)) == 2


# find_subject / find_tag


def test_find_subject_returns_only_the_unrevoked_holder(store: SyncStore) -> None:
    store.add(entry(1, subject="gone", revoked=True))
    store.add(entry(2, subject="here"))
    assert store.find_subject("gone") is None
    assert store.find_subject("nobody") is None
    found = store.find_subject("here")
    assert found is not None
    assert found.id == "id-002"


def test_find_subject_is_exact_not_a_prefix_or_case_insensitive_match(store: SyncStore) -> None:
    store.add(entry(1, subject="catalog-sync"))
    assert store.find_subject("catalog") is None
    assert store.find_subject("Catalog-Sync") is None


def test_find_tag_returns_every_entry_with_the_tag_revoked_ones_included(
    store: SyncStore,
) -> None:
    store.add(entry(1, tag=42))
    store.add(entry(2, tag=42, revoked=True))
    store.add(entry(3, tag=43))
    found = store.find_tag(42)
    assert sorted(e.id for e in found) == ["id-001", "id-002"]
    assert store.find_tag(44) == []
    assert [e.id for e in store.find_tag(43)] == ["id-003"]


def test_find_tag_sees_a_new_tag_after_a_rotation(store: SyncStore) -> None:
    store.add(entry(1, tag=42))
    rotated = replace(store.get("id-001"), lookup_tag=99, verifier="fake$v1$s$new", revision=2)
    store.rotate(rotated)
    assert store.find_tag(42) == []
    assert store.find_tag(99) == [rotated]


# replace


def test_replace_over_the_previous_revision_writes_the_entry(store: SyncStore) -> None:
    store.add(entry(1))
    updated = replace(
        store.get("id-001"), description="new words", revision=2, update_time=T0 + timedelta(1)
    )
    store.replace(updated)
    assert store.get("id-001") == updated


@pytest.mark.parametrize("revision", [1, 2, 4])
def test_replace_over_any_other_revision_raises_aborted_and_writes_nothing(
    store: SyncStore, revision: int
) -> None:
    original = entry(1)
    store.add(original)
    store.replace(replace(original, description="second", revision=2))
    before = store.get("id-001")
    with pytest.raises(Aborted):
        store.replace(replace(original, description="stale", revision=revision))
    assert store.get("id-001") == before


def test_replace_keeps_a_use_recorded_after_the_entry_was_read(store: SyncStore) -> None:
    store.add(entry(1))
    read = store.get("id-001")
    store.record_use({"id-001": T0 + timedelta(hours=2)})
    store.replace(replace(read, description="changed", revision=2))
    stored = store.get("id-001")
    assert (stored.description, stored.last_used_time) == ("changed", T0 + timedelta(hours=2))


def test_replace_that_would_duplicate_an_unrevoked_subject_raises_already_exists(
    store: SyncStore,
) -> None:
    store.add(entry(1, subject="first"))
    store.add(entry(2, subject="second"))
    before = store.get("id-002")
    with pytest.raises(AlreadyExists):
        store.replace(replace(before, subject="first", revision=2))
    assert store.get("id-002") == before


def test_rotate_retires_the_old_verifier(store: SyncStore) -> None:
    original = entry(1, tag=41)
    store.add(original)
    store.rotate(replace(original, verifier="$new", lookup_tag=42, revision=2))
    assert store.find_retired(41) == [original.verifier]
    assert store.find_retired(42) == []


def test_replace_keeps_the_stored_token_even_if_a_rehash_came_after_the_read(
    store: SyncStore,
) -> None:
    original = entry(1, tag=41)
    store.add(original)
    read = store.get("id-001")
    store.replace_verifier("id-001", original.verifier, "$stronger")
    store.replace(replace(read, description="changed", revision=2))
    stored = store.get("id-001")
    assert (stored.description, stored.verifier, stored.lookup_tag) == ("changed", "$stronger", 41)
    assert store.find_retired(41) == []


def test_replace_that_keeps_the_verifier_retires_nothing(store: SyncStore) -> None:
    original = entry(1, tag=41)
    store.add(original)
    store.replace(replace(original, description="same token", revision=2))
    assert store.find_retired(41) == []


def test_an_aborted_replace_retires_nothing(store: SyncStore) -> None:
    original = entry(1, tag=41)
    store.add(original)
    with pytest.raises(Aborted):
        store.replace(replace(original, verifier="$new", revision=5))
    assert store.find_retired(41) == []


def test_replace_of_an_unknown_id_raises_not_found(store: SyncStore) -> None:
    store.add(entry(1))
    with pytest.raises(NotFound):
        store.replace(replace(entry(2), revision=2))
    assert store.list_entries(None, 10, include_revoked=True) == [entry(1)]


def test_replace_that_revokes_frees_the_subject_and_keeps_the_entry(store: SyncStore) -> None:
    store.add(entry(1, subject="catalog-sync"))
    revoked = revoke(store.get("id-001"))
    store.replace(revoked)
    assert store.get("id-001") == revoked
    assert store.find_subject("catalog-sync") is None


# replace_verifier


def test_replace_verifier_swaps_a_verifier_that_is_still_the_old_one(store: SyncStore) -> None:
    original = entry(1)
    store.add(original)
    store.replace_verifier(original.id, original.verifier, "fake$v2$salt$stronger")
    stored = store.get(original.id)
    assert stored.verifier == "fake$v2$salt$stronger"
    assert stored.revision == original.revision
    assert replace(stored, verifier=original.verifier) == original


def test_replace_verifier_leaves_a_rotated_verifier_alone(store: SyncStore) -> None:
    original = entry(1)
    store.add(original)
    rotated = replace(original, verifier="fake$v1$salt$rotated", lookup_tag=7, revision=2)
    store.rotate(rotated)
    store.replace_verifier(original.id, original.verifier, "fake$v2$salt$rehash-of-old")
    assert store.get(original.id) == rotated


def test_replace_verifier_of_an_unknown_id_changes_nothing(store: SyncStore) -> None:
    store.add(entry(1))
    store.replace_verifier("id-999", "anything", "fake$v2$salt$new")
    assert store.list_entries(None, 10, include_revoked=True) == [entry(1)]


# list_entries


def test_entries_are_listed_by_creation_time_then_id_not_by_insertion(
    store: SyncStore,
) -> None:
    same_moment = T0 + timedelta(hours=1)
    for n, created in [
        (5, T0 + timedelta(hours=2)),
        (3, same_moment),
        (1, same_moment),
        (4, T0),
        (2, same_moment),
    ]:
        store.add(entry(n, created=created))
    listed = store.list_entries(None, 10, include_revoked=False)
    assert [e.id for e in listed] == ["id-004", "id-001", "id-002", "id-003", "id-005"]


def test_listing_resumes_strictly_after_the_cursor_and_stops_at_the_limit(
    store: SyncStore,
) -> None:
    same_moment = T0 + timedelta(seconds=3)
    for n in range(1, 6):
        store.add(entry(n, created=same_moment if n in {2, 3, 4} else None))
    ordered = store.list_entries(None, 10, include_revoked=False)
    assert [e.id for e in ordered] == ["id-001", "id-002", "id-003", "id-004", "id-005"]

    first_page = store.list_entries(None, 2, include_revoked=False)
    assert first_page == ordered[:2]
    last = first_page[-1]
    second_page = store.list_entries((last.create_time, last.id), 2, include_revoked=False)
    assert second_page == ordered[2:4]
    last = second_page[-1]
    rest = store.list_entries((last.create_time, last.id), 2, include_revoked=False)
    assert rest == ordered[4:]
    assert store.list_entries((rest[-1].create_time, rest[-1].id), 2, False) == []


def test_a_cursor_need_not_name_an_existing_entry(store: SyncStore) -> None:
    same_moment = T0 + timedelta(hours=1)
    store.add(entry(1, created=same_moment))
    store.add(entry(3, created=same_moment))
    after_a_deleted_id = store.list_entries((same_moment, "id-002"), 10, include_revoked=False)
    assert [e.id for e in after_a_deleted_id] == ["id-003"]


def test_revoked_entries_are_listed_only_when_asked_for(store: SyncStore) -> None:
    store.add(entry(1))
    store.add(entry(2, revoked=True))
    store.add(entry(3))
    assert [e.id for e in store.list_entries(None, 10, False)] == ["id-001", "id-003"]
    assert [e.id for e in store.list_entries(None, 10, True)] == ["id-001", "id-002", "id-003"]
    # The limit counts listed entries, not skipped revoked ones.
    assert [e.id for e in store.list_entries(None, 2, False)] == ["id-001", "id-003"]


def test_listing_an_empty_store_returns_nothing(store: SyncStore) -> None:
    assert store.list_entries(None, 10, include_revoked=True) == []


# count_by_state


def test_entries_are_counted_by_their_state_at_the_given_time(store: SyncStore) -> None:
    assert store.count_by_state(T0) == {State.ACTIVE: 0, State.REVOKED: 0, State.EXPIRED: 0}
    store.add(entry(1))
    store.add(entry(2, revoked=True))
    store.add(replace(entry(3), expire_time=T0 + timedelta(days=1)))
    # Revoked wins over expired.
    store.add(replace(entry(4, revoked=True), expire_time=T0 + timedelta(days=1)))
    assert store.count_by_state(T0) == {State.ACTIVE: 2, State.REVOKED: 2, State.EXPIRED: 0}
    later = T0 + timedelta(days=1)  # expiry is inclusive
    assert store.count_by_state(later) == {State.ACTIVE: 1, State.REVOKED: 2, State.EXPIRED: 1}


def test_all_tags_holds_the_tag_of_every_entry_revoked_ones_included(store: SyncStore) -> None:
    assert store.all_tags() == set()
    store.add(entry(1, tag=7))
    store.add(entry(2, tag=7, subject="other"))
    store.add(entry(3, tag=9, revoked=True))
    assert store.all_tags() == {7, 9}


# record_use


def test_record_use_sets_last_used_time_of_every_entry_in_the_batch(store: SyncStore) -> None:
    for n in (1, 2, 3):
        store.add(entry(n))
    store.record_use(
        {"id-001": T0 + timedelta(minutes=1), "id-003": T0 + timedelta(minutes=3, microseconds=7)}
    )
    assert store.get("id-001").last_used_time == T0 + timedelta(minutes=1)
    assert store.get("id-002").last_used_time is None
    assert store.get("id-003").last_used_time == T0 + timedelta(minutes=3, microseconds=7)


def test_record_use_only_moves_last_used_time_forward(store: SyncStore) -> None:
    store.add(entry(1))
    later, earlier = T0 + timedelta(hours=2), T0 + timedelta(hours=1)
    store.record_use({"id-001": later})
    store.record_use({"id-001": earlier})
    assert store.get("id-001").last_used_time == later
    store.record_use({"id-001": later + timedelta(microseconds=1)})
    assert store.get("id-001").last_used_time == later + timedelta(microseconds=1)


def test_record_use_is_not_a_revision_change(store: SyncStore) -> None:
    original = entry(1)
    store.add(original)
    store.record_use({"id-001": T0 + timedelta(hours=1)})
    stored = store.get("id-001")
    assert stored.revision == original.revision
    assert stored.etag == original.etag
    assert replace(stored, last_used_time=None) == original


def test_record_use_ignores_unknown_ids_and_still_records_the_rest(store: SyncStore) -> None:
    store.add(entry(1))
    store.record_use({"id-999": T0, "id-001": T0 + timedelta(seconds=9)})
    assert store.get("id-001").last_used_time == T0 + timedelta(seconds=9)
    with pytest.raises(NotFound):
        store.get("id-999")


def test_record_use_of_a_revoked_entry_is_recorded_for_audit(store: SyncStore) -> None:
    store.add(entry(1, revoked=True))
    store.record_use({"id-001": T0 + timedelta(days=1)})
    assert store.get("id-001").last_used_time == T0 + timedelta(days=1)


# close


def test_entries_written_before_close_are_there_after_reopening(
    subject_store: StoreUnderTest,
) -> None:
    written = [entry(1), entry(2, revoked=True)]
    for e in written:
        subject_store.store.add(e)
    subject_store.store.record_use({"id-001": T0 + timedelta(days=1)})
    reopened = subject_store.reopen()
    assert reopened.list_entries(None, 10, include_revoked=True) == [
        replace(written[0], last_used_time=T0 + timedelta(days=1)),
        written[1],
    ]


# the event log and the change feed


class Refused(Exception):
    """What the test guards raise to refuse a write."""


def refuse(actor: Entry | None) -> None:
    raise Refused(actor)


def test_an_empty_store_has_no_events(store: SyncStore) -> None:
    assert store.head() == 0
    assert store.changes(0) == Changes()


def test_every_write_returns_its_event_with_a_strictly_increasing_revision(
    store: SyncStore,
) -> None:
    first = entry(1, tag=41)
    created = store.add(first, Change(actor_id="admin-1", fields=("subject", "description")))
    updated = store.replace(
        replace(first, description="changed", revision=2, update_time=T0 + timedelta(hours=1)),
        Change(actor_id="admin-2", fields=("description",)),
    )
    rotated = store.rotate(
        replace(
            store.get(first.id),
            verifier="fake$v1$s$new",
            lookup_tag=42,
            revision=3,
            update_time=T0 + timedelta(hours=2),
        ),
        Change(actor_id="admin-1"),
    )
    revoked = store.replace(revoke(store.get(first.id)), Change(fields=("revoke_reason",)))
    other = store.add(entry(2))

    events = [created, updated, rotated, revoked, other]
    assert [(e.entry_id, e.kind, e.actor_id, e.fields) for e in events] == [
        ("id-001", ChangeKind.CREATED, "admin-1", ("subject", "description")),
        ("id-001", ChangeKind.UPDATED, "admin-2", ("description",)),
        ("id-001", ChangeKind.ROTATED, "admin-1", ()),
        ("id-001", ChangeKind.REVOKED, "", ("revoke_reason",)),
        ("id-002", ChangeKind.CREATED, "", ()),
    ]
    revisions = [e.revision for e in events]
    assert revisions[0] > 0
    assert all(a < b for a, b in itertools.pairwise(revisions))
    assert store.head() == revisions[-1]


def test_changes_returns_the_events_past_a_revision_oldest_first_with_their_entries_now(
    store: SyncStore,
) -> None:
    events = [store.add(entry(1)), store.add(entry(2))]
    events.append(store.replace(replace(entry(1), description="second", revision=2)))
    events.append(store.add(entry(3)))
    current = {e.id: e for e in store.list_entries(None, 10, include_revoked=True)}

    for i, after in enumerate([0, *(e.revision for e in events)]):
        changes = store.changes(after)
        assert changes.events == tuple(events[i:]), after
        assert dict(changes.entries) == {e.entry_id: current[e.entry_id] for e in events[i:]}
        assert not changes.more
    # The entry as it is now, not as the event's write left it.
    assert store.changes(0).entries["id-001"].description == "second"


def test_reading_changes_until_no_more_yields_every_event_once_in_order(
    store: SyncStore,
) -> None:
    written = [store.add(entry(n)) for n in range(600)]  # more than one batch of the store's
    read: list[Event] = []
    after = 0
    while True:
        changes = store.changes(after)
        read += changes.events
        assert set(changes.entries) == {e.entry_id for e in changes.events}
        if not changes.more:
            break
        after = changes.events[-1].revision
    assert read == written


def _moves_from(store: SyncStore, before: object) -> bool:
    """Whether the version moves from `before` within 5 s (at once on SQLite, where it is the
    database's own; when the notification arrives on PostgreSQL)."""
    deadline = time.monotonic() + 5
    while store.version() == before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_version_moves_after_every_write_that_appends_an_event(store: SyncStore) -> None:
    original = entry(1, tag=41)
    writes: list[Callable[[], object]] = [
        lambda: store.add(original),
        lambda: store.replace(replace(original, description="changed", revision=2)),
        lambda: store.rotate(
            replace(store.get(original.id), verifier="fake$v1$s$new", lookup_tag=42, revision=3)
        ),
        lambda: store.replace(revoke(store.get(original.id))),
    ]
    for write in writes:
        before = store.version()
        write()
        assert _moves_from(store, before)


def test_version_stays_put_while_nothing_is_written(store: SyncStore) -> None:
    written = store.version()
    store.add(entry(1))
    assert _moves_from(store, written)  # and on PostgreSQL, the notice has arrived
    before = store.version()
    store.get("id-001")
    store.changes(0)
    store.list_entries(None, 10, include_revoked=True)
    assert store.version() == before


@pytest.mark.parametrize("write", ["add", "replace", "rotate"])
def test_a_guard_that_raises_refuses_the_write_and_appends_no_event(
    store: SyncStore, write: str
) -> None:
    original = entry(1, tag=41)
    store.add(original)
    head = store.head()
    guarded = Change(actor_id="id-001", guard=refuse)
    writes: dict[str, Callable[[], Event]] = {
        "add": lambda: store.add(entry(2), guarded),
        "replace": lambda: store.replace(
            replace(original, description="changed", revision=2), guarded
        ),
        "rotate": lambda: store.rotate(
            replace(original, verifier="fake$v1$s$new", lookup_tag=42, revision=2), guarded
        ),
    }
    with pytest.raises(Refused):
        writes[write]()
    assert store.list_entries(None, 10, include_revoked=True) == [original]
    assert store.find_retired(41) == []
    assert store.head() == head
    assert store.changes(head).events == ()


def test_the_guard_sees_the_actor_as_stored_when_the_write_commits(store: SyncStore) -> None:
    admin = entry(1)
    store.add(admin)
    store.replace(revoke(admin))
    seen: list[Entry | None] = []
    store.add(entry(2), Change(actor_id=admin.id, guard=seen.append))
    store.add(entry(3), Change(actor_id="id-999", guard=seen.append))
    store.add(entry(4), Change(guard=seen.append))
    assert seen == [store.get(admin.id), None, None]
    assert seen[0] is not None
    assert seen[0].revoke_time is not None


def test_a_claim_missing_a_stored_verifier_of_its_tag_raises_claim_changed_and_writes_nothing(
    store: SyncStore,
) -> None:
    holder = entry(1, tag=42)
    other = entry(2, tag=7)
    store.add(holder)
    store.add(other)
    head = store.head()
    unchecked = Claim(42, frozenset({"fake$v1$s$some-other-verifier"}))

    with pytest.raises(ClaimChanged):
        store.add(entry(3, tag=42), Change(claim=unchecked))
    with pytest.raises(ClaimChanged):
        store.rotate(
            replace(other, verifier="fake$v1$s$new", lookup_tag=42, revision=2),
            Change(claim=unchecked),
        )
    assert store.list_entries(None, 10, include_revoked=True) == [holder, other]
    assert store.find_retired(7) == []
    assert store.head() == head

    checked = Claim(42, frozenset({holder.verifier}))
    added = store.add(entry(3, tag=42), Change(claim=checked))
    assert store.get("id-003") == entry(3, tag=42)
    assert store.head() == added.revision


def test_a_claim_missing_a_retired_verifier_of_its_tag_raises_claim_changed(
    store: SyncStore,
) -> None:
    original = entry(1, tag=42)
    store.add(original)
    store.rotate(replace(original, verifier="fake$v1$s$new", lookup_tag=50, revision=2))
    assert store.find_tag(42) == []
    head = store.head()

    with pytest.raises(ClaimChanged):
        store.add(entry(2, tag=42), Change(claim=Claim(42)))
    with pytest.raises(NotFound):
        store.get("id-002")
    assert store.head() == head

    store.add(entry(2, tag=42), Change(claim=Claim(42, frozenset({original.verifier}))))
    assert store.get("id-002").lookup_tag == 42


def test_a_claim_on_a_tag_nothing_holds_lets_the_write_commit(store: SyncStore) -> None:
    store.add(entry(1, tag=41))
    event = store.add(entry(2, tag=42), Change(claim=Claim(42)))
    assert (event.entry_id, event.kind) == ("id-002", ChangeKind.CREATED)
    assert store.get("id-002").lookup_tag == 42


def test_a_refused_write_appends_no_event(store: SyncStore) -> None:
    original = entry(1, subject="taken")
    store.add(original)
    head = store.head()
    with pytest.raises(AlreadyExists):
        store.add(entry(2, subject="taken"))
    with pytest.raises(Aborted):
        store.replace(replace(original, description="stale", revision=5))
    with pytest.raises(NotFound):
        store.replace(replace(entry(3), revision=2))
    assert store.head() == head
    assert store.changes(head).events == ()


def test_record_use_appends_no_event(store: SyncStore) -> None:
    store.add(entry(1))
    head = store.head()
    store.record_use({"id-001": T0 + timedelta(hours=1)})
    assert store.head() == head
    assert store.changes(head).events == ()


def test_events_survive_reopening_and_revisions_continue_after_them(
    subject_store: StoreUnderTest,
) -> None:
    store = subject_store.store
    written = [store.add(entry(1)), store.replace(revoke(entry(1)), Change(actor_id="admin"))]
    reopened = subject_store.reopen()
    assert reopened.head() == written[-1].revision
    assert reopened.changes(0).events == tuple(written)
    after = reopened.add(entry(2))
    assert after.revision > written[-1].revision
    assert reopened.changes(written[-1].revision).events == (after,)


def test_a_key_fingerprint_is_kept_once_and_survives_reopening(
    subject_store: StoreUnderTest,
) -> None:
    store = subject_store.store
    assert store.key_fingerprint() is None
    assert store.keep_key_fingerprint("first") == "first"
    assert store.keep_key_fingerprint("second") == "first"
    assert subject_store.reopen().key_fingerprint() == "first"


def test_holds_entries_counts_revoked_ones_too(store: SyncStore) -> None:
    assert not store.holds_entries()
    store.add(entry(1, revoked=True))
    assert store.holds_entries()


def _rotated_with_grace(store: SyncStore) -> Entry:
    """Entry 1 rotated from tag 41 to tag 42, its old token kept for an hour."""
    original = entry(1, tag=41)
    store.add(original)
    rotated = replace(
        original,
        verifier="fake$v1$s$new",
        lookup_tag=42,
        previous_verifier=original.verifier,
        previous_lookup_tag=41,
        previous_expire_time=T0 + timedelta(hours=1),
        revision=2,
    )
    store.rotate(rotated)
    return rotated


def test_a_rotation_with_grace_keeps_the_previous_token_findable_by_its_tag(
    store: SyncStore,
) -> None:
    rotated = _rotated_with_grace(store)
    assert store.get(rotated.id) == rotated
    assert store.find_tag(41) == [rotated]
    assert store.find_tag(42) == [rotated]
    assert {41, 42} <= store.all_tags()
    assert store.find_retired(41) == [entry(1).verifier]  # never to be taken again


def test_an_update_keeps_the_previous_token_and_a_rotation_without_grace_drops_it(
    store: SyncStore,
) -> None:
    rotated = _rotated_with_grace(store)
    updated = replace(rotated, description="changed", revision=3)
    store.replace(updated)
    assert store.find_tag(41) == [updated]
    again = replace(
        updated,
        verifier="fake$v1$s$third",
        lookup_tag=43,
        previous_verifier="",
        previous_lookup_tag=None,
        previous_expire_time=None,
        revision=4,
    )
    store.rotate(again)
    assert store.find_tag(41) == []
    assert store.find_tag(42) == []
    assert store.get(again.id) == again


def _record(
    n: int, *, entry_id: str = "id-001", actor: str = "admin-1", code: int = 0
) -> AuditRecord:
    return AuditRecord(
        time=T0 + timedelta(minutes=n),
        actor_entry_id=actor,
        actor_subject=f"subject of {actor}",
        rpc="UpdateEntry",
        entry_id=entry_id,
        changes=(("description", '"before"', f'"after {n}"'),),
        code=code,
        peer="ipv4:10.0.0.7",
        user_agent="authz-admin/0.1.0 grpc-python/1.0",
    )


def test_a_write_appends_its_audit_record_chained_in_the_same_transaction(
    subject_store: StoreUnderTest,
) -> None:
    store = subject_store.store
    store.add(entry(1), Change(audit=_record(1)))
    store.replace(replace(entry(1), description="x", revision=2), Change(audit=_record(2)))
    refused = store.record_audit(_record(3, code=7))
    listed = subject_store.reopen().list_audit(0, 10, AuditFilter())
    assert [event.record for event in listed] == [_record(1), _record(2), _record(3, code=7)]
    assert [event.sequence for event in listed] == [1, 2, 3]
    assert listed[0].previous_hash == ""
    for before, event in itertools.pairwise(listed):
        assert event.previous_hash == before.hash
    for event in listed:
        assert event.hash == chain_hash(event.previous_hash, event.sequence, event.record)
    assert refused == listed[2]


def test_a_refused_write_appends_no_audit_record(store: SyncStore) -> None:
    store.add(entry(1))
    with pytest.raises(Aborted):
        store.replace(replace(entry(1), revision=5), Change(audit=_record(1)))
    assert store.list_audit(0, 10, AuditFilter()) == []


def test_audit_events_are_listed_by_entry_actor_and_time_and_resume_after_a_sequence(
    store: SyncStore,
) -> None:
    for n, (entry_id, actor) in enumerate(
        [("id-001", "a"), ("id-002", "a"), ("id-001", "b"), ("id-003", "b")], start=1
    ):
        store.record_audit(_record(n, entry_id=entry_id, actor=actor))

    def sequences(after: int = 0, limit: int = 10, **wanted: Any) -> list[int]:
        return [e.sequence for e in store.list_audit(after, limit, AuditFilter(**wanted))]

    assert sequences(entry_id="id-001") == [1, 3]
    assert sequences(actor_entry_id="b") == [3, 4]
    assert sequences(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4)) == [2, 3]
    assert sequences(after=1, limit=2) == [2, 3]
