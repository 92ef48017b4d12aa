"""The EntryStore contract, run against the in-memory fake and the real SQLite store.

Unit tests of the use cases trust `InMemoryStore`; this suite is what earns that trust: every
test here passes against both, so the fake behaves as the real store does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from authz_service.adapters.sqlite_store import SqliteStore
from authz_service.core.errors import Aborted, AlreadyExists, NotFound
from authz_service.core.model import Action, Entry, Restriction, State
from authz_service.core.ports import EntryStore
from fakes import InMemoryStore

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


class StoreUnderTest:
    """A store, and a way to reopen it as a restarted server would."""

    def __init__(self, open_store: Callable[[], EntryStore]) -> None:
        self._open = open_store
        self.store = open_store()

    def reopen(self) -> EntryStore:
        """Close the store and open it again over the same data."""
        self.store.close()
        self.store = self._open()
        return self.store


@pytest.fixture(params=["memory", "sqlite"])
def subject_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    if request.param == "memory":
        memory = InMemoryStore()
        under_test = StoreUnderTest(lambda: memory)
    else:
        under_test = StoreUnderTest(lambda: SqliteStore(tmp_path / "authz.db"))
    yield under_test
    under_test.store.close()


@pytest.fixture
def store(subject_store: StoreUnderTest) -> EntryStore:
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


def test_an_added_entry_reads_back_equal_in_every_field(store: EntryStore) -> None:
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


def test_times_read_back_as_the_same_instants(store: EntryStore) -> None:
    local = T0.astimezone(timezone(timedelta(hours=5)))
    store.add(replace(entry(1), create_time=local, update_time=local))
    read = store.get("id-001")
    assert read.create_time == T0
    assert read.create_time.utcoffset() is not None


def test_getting_an_unknown_id_raises_not_found(store: EntryStore) -> None:
    store.add(entry(1))
    with pytest.raises(NotFound):
        store.get("id-999")


def test_adding_a_second_unrevoked_entry_with_a_subject_raises_already_exists(
    store: EntryStore,
) -> None:
    first = entry(1, subject="catalog-sync")
    store.add(first)
    with pytest.raises(AlreadyExists):
        store.add(entry(2, subject="catalog-sync"))
    assert store.get(first.id) == first
    with pytest.raises(NotFound):
        store.get("id-002")
    assert store.list_entries(None, 10, include_revoked=True) == [first]


def test_adding_an_entry_with_a_taken_id_raises_already_exists(store: EntryStore) -> None:
    first = entry(1)
    store.add(first)
    with pytest.raises(AlreadyExists):
        store.add(replace(entry(2), id=first.id))
    assert store.get(first.id) == first


def test_the_subject_of_a_revoked_entry_can_be_taken_by_a_new_entry(store: EntryStore) -> None:
    store.add(entry(1, subject="catalog-sync"))
    store.replace(revoke(store.get("id-001")))
    successor = entry(2, subject="catalog-sync")
    store.add(successor)
    assert store.get(successor.id) == successor
    assert store.find_subject("catalog-sync") == successor


def test_a_revoked_entry_may_be_added_beside_an_active_one_with_its_subject(
    store: EntryStore,
) -> None:
    active = entry(1, subject="catalog-sync")
    store.add(active)
    store.add(entry(2, subject="catalog-sync", revoked=True))
    assert store.find_subject("catalog-sync") == active
    assert len(store.list_entries(None, 10, include_revoked=True)) == 2


# find_subject / find_tag


def test_find_subject_returns_only_the_unrevoked_holder(store: EntryStore) -> None:
    store.add(entry(1, subject="gone", revoked=True))
    store.add(entry(2, subject="here"))
    assert store.find_subject("gone") is None
    assert store.find_subject("nobody") is None
    found = store.find_subject("here")
    assert found is not None
    assert found.id == "id-002"


def test_find_subject_is_exact_not_a_prefix_or_case_insensitive_match(store: EntryStore) -> None:
    store.add(entry(1, subject="catalog-sync"))
    assert store.find_subject("catalog") is None
    assert store.find_subject("Catalog-Sync") is None


def test_find_tag_returns_every_entry_with_the_tag_revoked_ones_included(
    store: EntryStore,
) -> None:
    store.add(entry(1, tag=42))
    store.add(entry(2, tag=42, revoked=True))
    store.add(entry(3, tag=43))
    found = store.find_tag(42)
    assert sorted(e.id for e in found) == ["id-001", "id-002"]
    assert store.find_tag(44) == []
    assert [e.id for e in store.find_tag(43)] == ["id-003"]


def test_find_tag_sees_a_new_tag_after_a_rotation(store: EntryStore) -> None:
    store.add(entry(1, tag=42))
    rotated = replace(store.get("id-001"), lookup_tag=99, verifier="fake$v1$s$new", revision=2)
    store.rotate(rotated)
    assert store.find_tag(42) == []
    assert store.find_tag(99) == [rotated]


# replace


def test_replace_over_the_previous_revision_writes_the_entry(store: EntryStore) -> None:
    store.add(entry(1))
    updated = replace(
        store.get("id-001"), description="new words", revision=2, update_time=T0 + timedelta(1)
    )
    store.replace(updated)
    assert store.get("id-001") == updated


@pytest.mark.parametrize("revision", [1, 2, 4])
def test_replace_over_any_other_revision_raises_aborted_and_writes_nothing(
    store: EntryStore, revision: int
) -> None:
    original = entry(1)
    store.add(original)
    store.replace(replace(original, description="second", revision=2))
    before = store.get("id-001")
    with pytest.raises(Aborted):
        store.replace(replace(original, description="stale", revision=revision))
    assert store.get("id-001") == before


def test_replace_keeps_a_use_recorded_after_the_entry_was_read(store: EntryStore) -> None:
    store.add(entry(1))
    read = store.get("id-001")
    store.record_use({"id-001": T0 + timedelta(hours=2)})
    store.replace(replace(read, description="changed", revision=2))
    stored = store.get("id-001")
    assert (stored.description, stored.last_used_time) == ("changed", T0 + timedelta(hours=2))


def test_replace_that_would_duplicate_an_unrevoked_subject_raises_already_exists(
    store: EntryStore,
) -> None:
    store.add(entry(1, subject="first"))
    store.add(entry(2, subject="second"))
    before = store.get("id-002")
    with pytest.raises(AlreadyExists):
        store.replace(replace(before, subject="first", revision=2))
    assert store.get("id-002") == before


def test_rotate_retires_the_old_verifier(store: EntryStore) -> None:
    original = entry(1, tag=41)
    store.add(original)
    store.rotate(replace(original, verifier="$new", lookup_tag=42, revision=2))
    assert store.find_retired(41) == [original.verifier]
    assert store.find_retired(42) == []


def test_replace_keeps_the_stored_token_even_if_a_rehash_came_after_the_read(
    store: EntryStore,
) -> None:
    original = entry(1, tag=41)
    store.add(original)
    read = store.get("id-001")
    store.replace_verifier("id-001", original.verifier, "$stronger")
    store.replace(replace(read, description="changed", revision=2))
    stored = store.get("id-001")
    assert (stored.description, stored.verifier, stored.lookup_tag) == ("changed", "$stronger", 41)
    assert store.find_retired(41) == []


def test_replace_that_keeps_the_verifier_retires_nothing(store: EntryStore) -> None:
    original = entry(1, tag=41)
    store.add(original)
    store.replace(replace(original, description="same token", revision=2))
    assert store.find_retired(41) == []


def test_an_aborted_replace_retires_nothing(store: EntryStore) -> None:
    original = entry(1, tag=41)
    store.add(original)
    with pytest.raises(Aborted):
        store.replace(replace(original, verifier="$new", revision=5))
    assert store.find_retired(41) == []


def test_replace_of_an_unknown_id_raises_not_found(store: EntryStore) -> None:
    store.add(entry(1))
    with pytest.raises(NotFound):
        store.replace(replace(entry(2), revision=2))
    assert store.list_entries(None, 10, include_revoked=True) == [entry(1)]


def test_replace_that_revokes_frees_the_subject_and_keeps_the_entry(store: EntryStore) -> None:
    store.add(entry(1, subject="catalog-sync"))
    revoked = revoke(store.get("id-001"))
    store.replace(revoked)
    assert store.get("id-001") == revoked
    assert store.find_subject("catalog-sync") is None


# replace_verifier


def test_replace_verifier_swaps_a_verifier_that_is_still_the_old_one(store: EntryStore) -> None:
    original = entry(1)
    store.add(original)
    store.replace_verifier(original.id, original.verifier, "fake$v2$salt$stronger")
    stored = store.get(original.id)
    assert stored.verifier == "fake$v2$salt$stronger"
    assert stored.revision == original.revision
    assert replace(stored, verifier=original.verifier) == original


def test_replace_verifier_leaves_a_rotated_verifier_alone(store: EntryStore) -> None:
    original = entry(1)
    store.add(original)
    rotated = replace(original, verifier="fake$v1$salt$rotated", lookup_tag=7, revision=2)
    store.rotate(rotated)
    store.replace_verifier(original.id, original.verifier, "fake$v2$salt$rehash-of-old")
    assert store.get(original.id) == rotated


def test_replace_verifier_of_an_unknown_id_changes_nothing(store: EntryStore) -> None:
    store.add(entry(1))
    store.replace_verifier("id-999", "anything", "fake$v2$salt$new")
    assert store.list_entries(None, 10, include_revoked=True) == [entry(1)]


# list_entries


def test_entries_are_listed_by_creation_time_then_id_not_by_insertion(
    store: EntryStore,
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
    store: EntryStore,
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


def test_a_cursor_need_not_name_an_existing_entry(store: EntryStore) -> None:
    same_moment = T0 + timedelta(hours=1)
    store.add(entry(1, created=same_moment))
    store.add(entry(3, created=same_moment))
    after_a_deleted_id = store.list_entries((same_moment, "id-002"), 10, include_revoked=False)
    assert [e.id for e in after_a_deleted_id] == ["id-003"]


def test_revoked_entries_are_listed_only_when_asked_for(store: EntryStore) -> None:
    store.add(entry(1))
    store.add(entry(2, revoked=True))
    store.add(entry(3))
    assert [e.id for e in store.list_entries(None, 10, False)] == ["id-001", "id-003"]
    assert [e.id for e in store.list_entries(None, 10, True)] == ["id-001", "id-002", "id-003"]
    # The limit counts listed entries, not skipped revoked ones.
    assert [e.id for e in store.list_entries(None, 2, False)] == ["id-001", "id-003"]


def test_listing_an_empty_store_returns_nothing(store: EntryStore) -> None:
    assert store.list_entries(None, 10, include_revoked=True) == []


# count_by_state


def test_entries_are_counted_by_their_state_at_the_given_time(store: EntryStore) -> None:
    assert store.count_by_state(T0) == {State.ACTIVE: 0, State.REVOKED: 0, State.EXPIRED: 0}
    store.add(entry(1))
    store.add(entry(2, revoked=True))
    store.add(replace(entry(3), expire_time=T0 + timedelta(days=1)))
    # Revoked wins over expired.
    store.add(replace(entry(4, revoked=True), expire_time=T0 + timedelta(days=1)))
    assert store.count_by_state(T0) == {State.ACTIVE: 2, State.REVOKED: 2, State.EXPIRED: 0}
    later = T0 + timedelta(days=1)  # expiry is inclusive
    assert store.count_by_state(later) == {State.ACTIVE: 1, State.REVOKED: 2, State.EXPIRED: 1}


def test_all_tags_holds_the_tag_of_every_entry_revoked_ones_included(store: EntryStore) -> None:
    assert store.all_tags() == set()
    store.add(entry(1, tag=7))
    store.add(entry(2, tag=7, subject="other"))
    store.add(entry(3, tag=9, revoked=True))
    assert store.all_tags() == {7, 9}


# record_use


def test_record_use_sets_last_used_time_of_every_entry_in_the_batch(store: EntryStore) -> None:
    for n in (1, 2, 3):
        store.add(entry(n))
    store.record_use(
        {"id-001": T0 + timedelta(minutes=1), "id-003": T0 + timedelta(minutes=3, microseconds=7)}
    )
    assert store.get("id-001").last_used_time == T0 + timedelta(minutes=1)
    assert store.get("id-002").last_used_time is None
    assert store.get("id-003").last_used_time == T0 + timedelta(minutes=3, microseconds=7)


def test_record_use_only_moves_last_used_time_forward(store: EntryStore) -> None:
    store.add(entry(1))
    later, earlier = T0 + timedelta(hours=2), T0 + timedelta(hours=1)
    store.record_use({"id-001": later})
    store.record_use({"id-001": earlier})
    assert store.get("id-001").last_used_time == later
    store.record_use({"id-001": later + timedelta(microseconds=1)})
    assert store.get("id-001").last_used_time == later + timedelta(microseconds=1)


def test_record_use_is_not_a_revision_change(store: EntryStore) -> None:
    original = entry(1)
    store.add(original)
    store.record_use({"id-001": T0 + timedelta(hours=1)})
    stored = store.get("id-001")
    assert stored.revision == original.revision
    assert stored.etag == original.etag
    assert replace(stored, last_used_time=None) == original


def test_record_use_ignores_unknown_ids_and_still_records_the_rest(store: EntryStore) -> None:
    store.add(entry(1))
    store.record_use({"id-999": T0, "id-001": T0 + timedelta(seconds=9)})
    assert store.get("id-001").last_used_time == T0 + timedelta(seconds=9)
    with pytest.raises(NotFound):
        store.get("id-999")


def test_record_use_of_a_revoked_entry_is_recorded_for_audit(store: EntryStore) -> None:
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
