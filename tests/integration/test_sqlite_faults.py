"""The SQLite store when storage fails: a full disk, a failing commit, a damaged file, and the
database file removed or replaced while the store is open.

Every fault ends in `Unavailable` (never a bare sqlite3 error, which the API would answer with
INTERNAL), and none leaves half a write behind (an entry without its event, or the reverse).
The tests call `SqliteFile`, the blocking store the server's port runs on its threads.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from authz_service.adapters import StoreWatch
from authz_service.adapters.sqlite_store import SqliteFile
from authz_service.core.changes import Event
from authz_service.core.errors import Unavailable
from authz_service.core.model import Entry, Restriction
from small_disk import SmallDisk, mounted_small_disk

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DISK_BYTES = 1024 * 1024
REMOVED = "removed or replaced"


def _entry(n: int) -> Entry:
    return Entry(
        id=f"id-{n}",
        subject=f"subject-{n}",
        description=f"entry {n}",
        restrictions=(Restriction("catalog", ("catalog.entity.read",)),),
        unrestricted=False,
        verifier=f"$argon2id$fake{n}",
        lookup_tag=n,
        create_time=T0,
        update_time=T0,
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A real, tiny file system; skipped where mounting one is not allowed (not root)."""
    yield from mounted_small_disk(tmp_path, DISK_BYTES)


def _writes(store: SqliteFile) -> dict[str, Callable[[], object]]:
    """One of each kind of write, each of which would change what the store holds."""
    first = store.get("id-1")
    return {
        "add": lambda: store.add(_entry(10)),
        "add_many": lambda: store.add_many([_entry(11), _entry(12)]),
        "replace": lambda: store.replace(
            replace(first, description="changed", revision=first.revision + 1)
        ),
        "rotate": lambda: store.rotate(
            replace(first, verifier="$argon2id$new", lookup_tag=99, revision=first.revision + 1)
        ),
        "replace_verifier": lambda: store.replace_verifier("id-1", first.verifier, "$stronger"),
        "record_use": lambda: store.record_use({"id-1": T0 + timedelta(hours=1)}),
    }


def _contents(store: SqliteFile) -> tuple[list[Entry], list[str], tuple[Event, ...]]:
    return (
        store.list_entries(None, 100, include_revoked=True),
        store.find_retired(99),
        store.changes(0).events,
    )


def test_every_write_on_a_full_disk_is_unavailable_and_leaves_nothing_half_written(
    small_disk: SmallDisk,
) -> None:
    path = small_disk.path / "authz.db"
    store = SqliteFile(path)
    try:
        store.add_many([_entry(1), _entry(2)])
        before = _contents(store)
        small_disk.fill(path)

        for name, write in _writes(store).items():
            with pytest.raises(Unavailable, match="disk is full") as refused:
                write()
            assert "$argon2id" not in str(refused.value), name

        assert store.get("id-1") == before[0][0]  # reads go on from what is on disk
        small_disk.free()
        assert _contents(store) == before
    finally:
        store.close()

    reopened = SqliteFile(path)  # as the next start would find it
    try:
        assert _contents(reopened) == before
    finally:
        reopened.close()


def test_writes_work_again_once_the_full_disk_has_room(small_disk: SmallDisk) -> None:
    path = small_disk.path / "authz.db"
    store = SqliteFile(path)
    try:
        store.add(_entry(1))
        small_disk.fill(path)
        with pytest.raises(Unavailable):
            store.add(_entry(2))
        small_disk.free()

        store.add(_entry(2))
        first = store.get("id-1")
        store.replace(replace(first, description="changed", revision=first.revision + 1))
        store.record_use({"id-2": T0 + timedelta(hours=1)})

        assert store.get("id-1").description == "changed"
        assert store.get("id-2").last_used_time == T0 + timedelta(hours=1)
    finally:
        store.close()


class _Refuse:
    """An SQLite authorizer that refuses the named transaction statements (COMMIT, ROLLBACK):
    the statement then fails with the transaction still open, as a commit can."""

    def __init__(self, *statements: str) -> None:
        self.statements = set(statements)

    def __call__(self, action: int, arg1: str | None, *_: str | None) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and arg1 in self.statements:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


def test_a_commit_that_fails_is_unavailable_and_rolled_back(tmp_path: Path) -> None:
    store = SqliteFile(tmp_path / "authz.db")
    try:
        store.add(_entry(1))
        writer = store._db().conn  # this thread's connection: the one the writes below use
        writer.set_authorizer(_Refuse("COMMIT"))
        with pytest.raises(Unavailable, match="database write failed"):
            store.add(_entry(2))
        assert not writer.in_transaction
        writer.set_authorizer(None)

        assert [e.id for e in store.list_entries(None, 10, include_revoked=True)] == ["id-1"]
        assert [e.entry_id for e in store.changes(0).events] == ["id-1"]
        store.add(_entry(3))  # the connection is not left inside the failed transaction
        assert store.get("id-3").subject == "subject-3"
        assert [e.entry_id for e in store.changes(0).events] == ["id-1", "id-3"]
    finally:
        store.close()


def test_a_connection_whose_rollback_fails_too_is_replaced_by_a_fresh_one(tmp_path: Path) -> None:
    store = SqliteFile(tmp_path / "authz.db")
    try:
        store.add(_entry(1))
        store._db().conn.set_authorizer(_Refuse("COMMIT", "ROLLBACK"))
        with pytest.raises(Unavailable, match="database write failed"):
            store.add(_entry(2))

        store.add(_entry(3))
        assert [e.id for e in store.list_entries(None, 10, include_revoked=True)] == [
            "id-1",
            "id-3",
        ]
        assert [e.entry_id for e in store.changes(0).events] == ["id-1", "id-3"]
    finally:
        store.close()


def test_a_write_whose_event_cannot_be_appended_leaves_its_entry_unwritten(
    tmp_path: Path,
) -> None:
    store = SqliteFile(tmp_path / "authz.db")
    try:
        store.add(_entry(1))
        before = _contents(store)
        writes = _writes(store)

        def refuse_events(action: int, table: str | None, *_: str | None) -> int:
            if action == sqlite3.SQLITE_INSERT and table == "events":
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK

        store._db().conn.set_authorizer(refuse_events)
        for name in ("add", "add_many", "replace", "rotate"):
            with pytest.raises(Unavailable, match="database write failed"):
                writes[name]()
            assert _contents(store) == before, name
    finally:
        store.close()


def test_reads_of_a_damaged_file_are_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    try:
        store.add(_entry(1))
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with path.open("r+b") as damaged:  # the same file, its header overwritten
            damaged.write(b"this is no longer a database file".ljust(100, b"!"))

        with pytest.raises(Unavailable, match="not a database"):
            store.count_by_state(T0)
        failures: list[BaseException] = []
        reader = threading.Thread(target=_capture(failures, lambda: store.get("id-1")))
        reader.start()
        reader.join()
        assert [type(f) for f in failures] == [Unavailable]
    finally:
        store.close()


def _capture(failures: list[BaseException], call: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 (the test looks at what it was)
            failures.append(exc)

    return run


def _remove_database(path: Path) -> None:
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        (path.parent / name).unlink()


def test_every_write_is_refused_once_the_database_file_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    try:
        store.add(_entry(1))
        assert store.file_problem() is None
        writes = _writes(store)
        _remove_database(path)

        assert REMOVED in (store.file_problem() or "")
        assert str(path) in (store.file_problem() or "")
        for name, write in writes.items():
            with pytest.raises(Unavailable, match=REMOVED):
                write()
            assert not path.exists(), name
        with pytest.raises(Unavailable, match=REMOVED):
            store.count_by_state(T0)
        failures: list[BaseException] = []
        reader = threading.Thread(target=_capture(failures, lambda: store.get("id-1")))
        reader.start()
        reader.join()
        assert [type(f) for f in failures] == [Unavailable]
        assert not path.exists()  # no connection brings the file back, empty
    finally:
        store.close()


def test_every_write_is_refused_once_the_database_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    try:
        store.add(_entry(1))
        writes = _writes(store)
        other = SqliteFile(tmp_path / "other.db")
        other.add(_entry(50))
        other.close()
        (tmp_path / "other.db").replace(path)
        replacement = path.read_bytes()

        assert REMOVED in (store.file_problem() or "")
        for write in writes.values():
            with pytest.raises(Unavailable, match=REMOVED):
                write()
        assert path.read_bytes() == replacement
    finally:
        store.close()


def test_writes_are_refused_once_the_write_ahead_log_is_removed(tmp_path: Path) -> None:
    # Commits sit in the log until a checkpoint: ones written into a removed log are lost too.
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    try:
        store.add(_entry(1))
        (tmp_path / "authz.db-wal").unlink()

        assert "authz.db-wal was removed or replaced" in (store.file_problem() or "")
        with pytest.raises(Unavailable, match=REMOVED):
            store.add(_entry(2))
    finally:
        store.close()


def test_a_write_committed_after_its_file_was_removed_is_not_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    try:
        store.add(_entry(1))

        def remove_mid_write(action: int, *_: str | None) -> int:
            # Runs as the INSERT is prepared: after the check before BEGIN, before COMMIT.
            if action == sqlite3.SQLITE_INSERT and path.exists():
                _remove_database(path)
            return sqlite3.SQLITE_OK

        store._db().conn.set_authorizer(remove_mid_write)
        with pytest.raises(Unavailable, match=REMOVED):
            store.add(_entry(2))
        assert not path.exists()
    finally:
        store.close()


def test_the_store_watch_calls_back_once_when_the_database_file_is_removed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    reasons: list[str] = []
    called = threading.Event()

    def on_problem(reason: str | None) -> None:
        assert reason is not None
        reasons.append(reason)
        called.set()

    watch = StoreWatch(store.file_problem, on_problem, interval=0.01)
    try:
        _remove_database(path)
        assert called.wait(10), "the watch did not notice the removed file"
    finally:
        watch.stop()
        store.close()
    assert len(reasons) == 1
    assert f"database file {path} was removed or replaced" in reasons[0]


def test_the_watch_calls_back_each_time_the_answer_turns_and_only_then() -> None:
    answers = iter(["gone", "gone", "gone", None, None, "lost", "lost"])
    calls: list[str | None] = []
    done = threading.Event()

    def problem() -> str | None:
        try:
            return next(answers)
        except StopIteration:
            done.set()
            return "lost"

    watch = StoreWatch(problem, calls.append, interval=0.005)
    assert done.wait(10)
    watch.stop()
    assert calls == ["gone", None, "lost"]


def test_the_store_watch_stays_quiet_while_the_file_is_in_place(tmp_path: Path) -> None:
    store = SqliteFile(tmp_path / "authz.db")
    polled = threading.Event()
    count = [0]

    def problem() -> str | None:
        count[0] += 1
        if count[0] >= 5:
            polled.set()
        return store.file_problem()

    calls: list[str] = []
    watch = StoreWatch(problem, calls.append, interval=0.005)
    try:
        assert polled.wait(10), "the watch did not poll"
    finally:
        watch.stop()
        store.close()
    assert calls == []


def test_a_store_watch_whose_check_fails_logs_it_and_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failed = threading.Event()

    def problem() -> str | None:
        failed.set()
        raise OSError("the check broke")

    with caplog.at_level(logging.ERROR, logger="authz_service.database"):
        watch = StoreWatch(problem, lambda _: None, interval=0.005)
        assert failed.wait(10)
        watch.stop()
    assert [r.getMessage() for r in caplog.records] == ["the store watch stopped"]
