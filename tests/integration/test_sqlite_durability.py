"""The SQLite store on a real file: durability, migrations, and no lost update."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from authz_service.adapters.sqlite_store import SCHEMA_VERSION, SqliteStore
from authz_service.core.errors import Aborted, AlreadyExists, Unavailable
from authz_service.core.model import Entry, Restriction


def _entry(n: int) -> Entry:
    now = datetime.now(UTC)
    return Entry(
        id=f"id-{n}",
        subject=f"subject-{n}",
        description=f"entry {n}",
        restrictions=(Restriction("catalog", ("catalog.entity.read",)),),
        unrestricted=False,
        verifier=f"$argon2id$fake{n}",
        lookup_tag=n,
        create_time=now,
        update_time=now,
    )


def test_entries_written_before_close_are_all_there_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteStore(path)
    written = [_entry(n) for n in range(25)]
    for entry in written:
        store.add(entry)
    store.close()

    reopened = SqliteStore(path)
    assert [reopened.get(e.id) for e in written] == written
    reopened.close()


def test_every_connection_syncs_each_commit_to_disk(tmp_path: Path) -> None:
    # SIGKILL (test_crash_recovery) leaves the OS page cache intact; a power loss does not.
    # synchronous=FULL in WAL mode is what makes an acknowledged write survive that too.
    store = SqliteStore(tmp_path / "authz.db")
    seen: list[tuple[int, int]] = []

    def pragmas() -> None:
        db = store._db()  # each thread has its own connection
        seen.append(
            (
                db.execute("PRAGMA synchronous").fetchone()[0],
                db.execute("PRAGMA busy_timeout").fetchone()[0],
            )
        )

    pragmas()
    worker = threading.Thread(target=pragmas)
    worker.start()
    worker.join()
    store.close()
    assert seen == [(2, 5000), (2, 5000)]  # 2 is FULL


def test_an_empty_file_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    path.touch()
    SqliteStore(path).close()
    with sqlite3.connect(path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(entries)")}
    assert version == SCHEMA_VERSION
    assert journal == "wal"
    assert {"entries_by_tag", "entries_unrevoked_subject"} <= indexes


def test_a_version_1_database_is_migrated_forward_keeping_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteStore(path)
    store.add(_entry(1))
    store.close()
    # Version 1 is today's schema without the retired-token table and the etag column.
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE retired_tokens")
        conn.execute("ALTER TABLE entries DROP COLUMN etag")
        conn.execute("PRAGMA user_version = 1")

    migrated = SqliteStore(path)
    assert migrated.get("id-1") == _entry_like(migrated.get("id-1"), 1)
    assert migrated.find_retired(1) == []
    migrated.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_migrating_to_version_3_gives_every_entry_its_own_random_etag(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteStore(path)
    store.add_many([_entry(n) for n in range(3)])
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE entries DROP COLUMN etag")
        conn.execute("PRAGMA user_version = 2")

    migrated = SqliteStore(path)
    etags = [e.etag for e in migrated.list_entries(None, 10, include_revoked=True)]
    migrated.close()
    assert len(set(etags)) == 3
    assert all(len(etag) == 24 for etag in etags)


def test_many_entries_are_added_in_one_transaction_or_not_at_all(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "authz.db")
    store.add_many([_entry(n) for n in range(3)])
    clash = [_entry(10), Entry(**{**_fields(_entry(11)), "subject": "subject-1"})]
    with pytest.raises(AlreadyExists):
        store.add_many(clash)
    assert [e.id for e in store.list_entries(None, 100, include_revoked=True)] == [
        "id-0",
        "id-1",
        "id-2",
    ]
    store.close()


def test_reopening_a_current_database_keeps_its_rows_and_version(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteStore(path)
    store.add(_entry(1))
    store.close()
    again = SqliteStore(path)
    assert again.get("id-1").subject == "subject-1"
    again.close()


def test_a_database_from_a_newer_server_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(Unavailable, match="newer"):
        SqliteStore(path)


def test_two_writers_with_the_same_etag_lose_no_update(tmp_path: Path) -> None:
    # Two stores on one file behave like two processes: separate connections and locks.
    path = tmp_path / "authz.db"
    first, second = SqliteStore(path), SqliteStore(path)
    first.add(_entry(1))
    read = second.get("id-1")
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def write(store: SqliteStore, name: str) -> None:
        barrier.wait()
        try:
            store.replace(
                Entry(**{**_fields(read), "description": name, "revision": read.revision + 1})
            )
            outcomes[name] = "written"
        except Aborted:
            outcomes[name] = "aborted"

    threads = [
        threading.Thread(target=write, args=(store, name))
        for store, name in ((first, "first"), (second, "second"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes.values()) == ["aborted", "written"]
    winner = next(name for name, outcome in outcomes.items() if outcome == "written")
    stored = first.get("id-1")
    assert stored.description == winner
    assert stored.revision == read.revision + 1
    first.close()
    second.close()


def _entry_like(stored: Entry, n: int) -> Entry:
    """`_entry(n)` with the stored timestamps (made at another moment)."""
    return Entry(
        **{
            **_fields(_entry(n)),
            "create_time": stored.create_time,
            "update_time": stored.update_time,
            "etag": stored.etag,
        }
    )


def _fields(entry: Entry) -> dict[str, object]:
    return {name: getattr(entry, name) for name in Entry.__dataclass_fields__}
