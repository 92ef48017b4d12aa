"""The SQLite store on a real file: durability, migrations, the event log, and no lost update.

Most tests call `SqliteFile` (the blocking store) directly; the ones about several stores on one
file use `SqliteStore`, the async port a server runs.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from authz_service.adapters.sqlite_store import SCHEMA_VERSION, SqliteFile, SqliteStore
from authz_service.core.audit import AuditRecord
from authz_service.core.changes import Change, ChangeKind
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
    store = SqliteFile(path)
    written = [_entry(n) for n in range(25)]
    for entry in written:
        store.add(entry)
    store.close()

    reopened = SqliteFile(path)
    assert [reopened.get(e.id) for e in written] == written
    reopened.close()


def test_every_connection_syncs_each_commit_to_disk(tmp_path: Path) -> None:
    # SIGKILL (test_crash_recovery) leaves the OS page cache intact; a power loss does not.
    # synchronous=FULL in WAL mode is what makes an acknowledged write survive that too.
    store = SqliteFile(tmp_path / "authz.db")
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
    SqliteFile(path).close()
    with sqlite3.connect(path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(entries)")}
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert version == SCHEMA_VERSION
    assert journal == "wal"
    assert {"entries_by_tag", "entries_unrevoked_subject"} <= indexes
    assert {"entries", "retired_tokens", "events"} <= tables


def test_a_version_1_database_is_migrated_forward_keeping_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    store.add(_entry(1))
    store.close()
    # Version 1 is today's schema without the retired-token table, the etag column, the
    # event log and the key's fingerprint.
    with sqlite3.connect(path) as conn:
        _back_to_version_5(conn)
        conn.execute("DROP TABLE server_key")
        conn.execute("DROP TABLE events")
        conn.execute("DROP TABLE retired_tokens")
        conn.execute("ALTER TABLE entries DROP COLUMN etag")
        conn.execute("PRAGMA user_version = 1")

    migrated = SqliteFile(path)
    assert migrated.get("id-1") == _entry_like(migrated.get("id-1"), 1)
    assert migrated.find_retired(1) == []
    migrated.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_migrating_to_version_3_gives_every_entry_its_own_random_etag(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    store.add_many([_entry(n) for n in range(3)])
    store.close()
    with sqlite3.connect(path) as conn:  # version 2: no etag column, no event log, no key
        _back_to_version_5(conn)
        conn.execute("DROP TABLE server_key")
        conn.execute("DROP TABLE events")
        conn.execute("ALTER TABLE entries DROP COLUMN etag")
        conn.execute("PRAGMA user_version = 2")

    migrated = SqliteFile(path)
    etags = [e.etag for e in migrated.list_entries(None, 10, include_revoked=True)]
    migrated.close()
    assert len(set(etags)) == 3
    assert all(len(etag) == 24 for etag in etags)


def test_many_entries_are_added_in_one_transaction_or_not_at_all(tmp_path: Path) -> None:
    store = SqliteFile(tmp_path / "authz.db")
    store.add_many([_entry(n) for n in range(3)])
    clash = [_entry(10), replace(_entry(11), subject="subject-1")]
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
    store = SqliteFile(path)
    store.add(_entry(1))
    store.close()
    again = SqliteFile(path)
    assert again.get("id-1").subject == "subject-1"
    again.close()


def test_a_database_from_a_newer_server_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(Unavailable, match="newer"):
        SqliteFile(path)


def test_two_writers_with_the_same_etag_lose_no_update(tmp_path: Path) -> None:
    # Two stores on one file behave like two processes: separate connections and locks.
    path = tmp_path / "authz.db"
    first, second = SqliteFile(path), SqliteFile(path)
    first.add(_entry(1))
    read = second.get("id-1")
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def write(store: SqliteFile, name: str) -> None:
        barrier.wait()
        try:
            store.replace(replace(read, description=name, revision=read.revision + 1))
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
    # The loser's transaction appended nothing: one event for the create, one for the winner.
    assert [e.kind for e in second.changes(0).events] == [ChangeKind.CREATED, ChangeKind.UPDATED]
    first.close()
    second.close()


def test_many_entries_added_at_once_each_append_a_created_event(tmp_path: Path) -> None:
    store = SqliteFile(tmp_path / "authz.db")
    try:
        store.add_many([_entry(n) for n in range(3)])
        changes = store.changes(0)
    finally:
        store.close()
    assert [(e.entry_id, e.kind) for e in changes.events] == [
        (f"id-{n}", ChangeKind.CREATED) for n in range(3)
    ]
    assert [e.revision for e in changes.events] == sorted({e.revision for e in changes.events})
    assert set(changes.entries) == {"id-0", "id-1", "id-2"}


@pytest.fixture
def two_stores(tmp_path: Path) -> Iterator[tuple[SqliteStore, SqliteStore]]:
    """Two async stores on one file, as two server processes would open it."""
    path = tmp_path / "authz.db"
    first = SqliteStore(path)
    try:
        second = SqliteStore(path)
    except BaseException:
        first.close()
        raise
    yield first, second
    first.close()
    second.close()


def test_two_stores_on_one_file_both_work_and_see_each_others_writes_and_events(
    two_stores: tuple[SqliteStore, SqliteStore],
) -> None:
    first, second = two_stores

    async def scenario() -> None:
        written = _entry(1)
        seen_by_second = second.version()
        created = await first.add(written, Change(actor_id="admin-a"))
        assert second.version() != seen_by_second
        assert await second.get("id-1") == written
        changes = await second.changes(0)
        assert changes.events == (created,)
        assert changes.entries == {"id-1": written}

        seen_by_first = first.version()
        read = await second.get("id-1")
        updated = await second.replace(
            replace(read, description="by the second", revision=2),
            Change(actor_id="admin-b", fields=("description",)),
        )
        assert first.version() != seen_by_first
        assert updated.revision > created.revision
        assert await first.head() == updated.revision
        assert (await first.changes(created.revision)).events == (updated,)
        assert (await first.get("id-1")).description == "by the second"

    asyncio.run(scenario())


def test_the_event_log_refuses_update_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    store.add(_entry(1))
    before = store.changes(0).events
    store.close()
    with closing(sqlite3.connect(path)) as conn:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE events SET kind = 'revoked'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM events")
        conn.rollback()
    again = SqliteFile(path)
    try:
        assert again.changes(0).events == before
    finally:
        again.close()


def test_a_version_3_database_is_migrated_to_an_empty_event_log(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    store.add_many([_entry(n) for n in range(3)])
    store.close()
    # Version 3 is today's schema without the event log (its triggers go with the table) and
    # the key's fingerprint.
    with sqlite3.connect(path) as conn:
        _back_to_version_5(conn)
        conn.execute("DROP TABLE server_key")
        conn.execute("DROP TABLE events")
        conn.execute("PRAGMA user_version = 3")

    migrated = SqliteFile(path)
    try:
        assert migrated.head() == 0
        assert migrated.changes(0).events == ()
        assert [e.id for e in migrated.list_entries(None, 10, include_revoked=True)] == [
            "id-0",
            "id-1",
            "id-2",
        ]
        added = migrated.add(_entry(3))
        assert migrated.changes(0).events == (added,)
    finally:
        migrated.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM events")


def _entry_like(stored: Entry, n: int) -> Entry:
    """`_entry(n)` with the stored timestamps (made at another moment)."""
    return replace(
        _entry(n),
        create_time=stored.create_time,
        update_time=stored.update_time,
        etag=stored.etag,
    )


@pytest.mark.parametrize("checkpoint", ["PASSIVE", "RESTART", "TRUNCATE"])
def test_every_commit_of_another_connection_moves_the_version_across_checkpoints(
    tmp_path: Path, checkpoint: str
) -> None:
    # The version is read from the WAL index in shared memory: it must move at every commit,
    # also once a checkpoint has reset the log and writes start again from its first frame.
    path = tmp_path / "authz.db"
    writer, reader = SqliteFile(path), SqliteFile(path)
    try:
        seen = {reader.version()}
        for n in range(300):
            before = reader.version()
            writer.add(_entry(n))
            after = reader.version()
            assert after != before, f"commit {n} left the version as it was"
            assert after not in seen, f"commit {n} brought back an earlier version"
            seen.add(after)
            if n % 25 == 0:
                with closing(sqlite3.connect(path)) as other:
                    other.execute(f"PRAGMA wal_checkpoint({checkpoint})")
                assert reader.version() not in seen - {after}
    finally:
        writer.close()
        reader.close()


def test_reads_and_a_record_of_use_move_no_version_but_a_write_does(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store, other = SqliteFile(path), SqliteFile(path)
    try:
        store.add(_entry(1))
        quiet = other.version()
        store.get(_entry(1).id)
        store.list_entries(None, 10, include_revoked=True)
        assert other.version() == quiet
        store.record_use({_entry(1).id: datetime.now(UTC)})  # a commit: moves, no event
        assert other.version() != quiet
    finally:
        store.close()
        other.close()


def _locks_held_on(path: Path) -> list[str]:
    """The lines of /proc/locks for locks this process holds on the file at `path`."""
    inode = path.stat().st_ino
    with Path("/proc/locks").open() as locks:
        return [line for line in locks if f" {os.getpid()} " in line and f":{inode} " in line]


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_the_store_keeps_sqlites_shared_lock_on_the_wal_index(tmp_path: Path) -> None:
    # The feed reads the WAL index from shared memory. A process loses every POSIX lock it
    # holds on a file when it closes any descriptor of that file: had the store opened the
    # `-shm` file itself to map it, SQLite's shared lock would be gone, and another process's
    # next connection would truncate the file under the mapping (a read then is SIGBUS).
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    try:
        SqliteFile(path).close()  # another store of this process comes and goes
        assert _locks_held_on(path.with_name("authz.db-shm")), "SQLite's lock was dropped"
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as looking:
            looking.execute("SELECT count(*) FROM entries").fetchone()
        before = store.version()
        writer = SqliteFile(path)
        writer.add(_entry(1))
        writer.close()
        assert store.version() != before
    finally:
        store.close()


def test_a_version_4_database_is_migrated_to_keep_no_key_fingerprint_yet(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    store.add(_entry(1))
    store.close()
    with sqlite3.connect(path) as conn:  # version 4: no server_key table
        _back_to_version_5(conn)
        conn.execute("DROP TABLE server_key")
        conn.execute("PRAGMA user_version = 4")
    migrated = SqliteFile(path)
    try:
        assert migrated.key_fingerprint() is None  # the next start keeps its key's
        assert migrated.holds_entries()
        assert migrated.keep_key_fingerprint("f1") == "f1"
    finally:
        migrated.close()


def _back_to_version_5(conn: sqlite3.Connection) -> None:
    """Version 5 is today's schema without the audit log (version 7; its triggers go with
    the table) and the previous token's columns (version 6)."""
    conn.execute("DROP TABLE audit_events")
    conn.execute("DROP INDEX entries_by_previous_tag")
    for column in ("previous_verifier", "previous_lookup_tag", "previous_expire_time"):
        conn.execute(f"ALTER TABLE entries DROP COLUMN {column}")


def test_a_version_5_database_is_migrated_to_entries_without_a_previous_token(
    tmp_path: Path,
) -> None:
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    store.add(_entry(1))
    store.close()
    with sqlite3.connect(path) as conn:
        _back_to_version_5(conn)
        conn.execute("PRAGMA user_version = 5")
    migrated = SqliteFile(path)
    try:
        entry = migrated.get("id-1")
        assert (entry.previous_verifier, entry.previous_lookup_tag) == ("", None)
        assert entry.previous_expire_time is None
    finally:
        migrated.close()


def test_the_audit_log_refuses_every_edit(tmp_path: Path) -> None:
    path = tmp_path / "authz.db"
    store = SqliteFile(path)
    store.record_audit(
        AuditRecord(datetime.now(UTC), "a", "admin", "CreateEntry", "id-1", (), 0, "", "ua")
    )
    store.close()
    with closing(sqlite3.connect(path)) as conn:
        for statement in ("UPDATE audit_events SET code = 7", "DELETE FROM audit_events"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(statement)
