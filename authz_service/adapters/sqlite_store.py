"""The embedded store: entries in one SQLite file, through sqlite-utils.

WAL journal with `synchronous=FULL`, so a write is on disk when its call returns; one
connection per thread (`SqliteStore` runs reads on reader threads and writes on one writer
thread), and one more for the change feed, whose cheap "did anyone commit?" (DESIGN section 8)
reads the WAL index's header in shared memory. The schema carries a version in
`PRAGMA user_version` and is brought forward by the migrations below. Any number of processes
may share the file: every write appends its event in its own transaction, and SQLite
serialises the writers.

Storage faults (a full disk, an I/O error, a busy or damaged file) end a call with
`Unavailable`, the transaction rolled back. The store remembers which file it opened: once that
file (or its write-ahead log) is removed or replaced, writes would land in a file no restart
finds, so every write is refused until the server restarts.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from authz_service.core.audit import AuditEvent, AuditFilter, AuditRecord
from authz_service.core.changes import Change, ChangeKind, Changes, Event
from authz_service.core.errors import AlreadyExists, NotFound, Unavailable
from authz_service.core.model import Entry, State, to_micros
from authz_service.core.ports import Cursor

from .rows import (
    COLUMNS,
    EVENT_COLUMNS,
    append,
    append_audit,
    audit_from_row,
    audit_query,
    entry_from_row,
    entry_row,
    event_from_row,
    hold,
    listing_clause,
    write_over,
)
from .threaded_store import ThreadedStore


def _migrate_to_1(db: sqlite_utils.Database) -> None:
    db.table("entries").create(
        {
            "id": str,
            "subject": str,
            "description": str,
            "restrictions": str,
            "unrestricted": int,
            "verifier": str,
            "lookup_tag": int,
            "create_time": int,
            "update_time": int,
            "revision": int,
            "expire_time": int,
            "revoke_time": int,
            "revoke_reason": str,
            "last_used_time": int,
        },
        pk="id",
        not_null={
            "subject",
            "description",
            "restrictions",
            "unrestricted",
            "verifier",
            "lookup_tag",
            "create_time",
            "update_time",
            "revision",
            "revoke_reason",
        },
        defaults={"description": "", "revoke_reason": ""},
    )
    db.table("entries").create_index(["lookup_tag"], index_name="entries_by_tag")
    db.table("entries").create_index(["create_time", "id"], index_name="entries_by_creation")
    # Subjects are unique among unrevoked entries; revoked ones stay for audit.
    db.execute(
        "CREATE UNIQUE INDEX entries_unrevoked_subject ON entries(subject)"
        " WHERE revoke_time IS NULL"
    )


def _migrate_to_2(db: sqlite_utils.Database) -> None:
    # Verifiers of rotated-away tokens, so a token once replaced is never accepted again.
    db.table("retired_tokens").create(
        {"entry_id": str, "lookup_tag": int, "verifier": str, "retire_time": int},
        not_null={"entry_id", "lookup_tag", "verifier", "retire_time"},
    )
    db.table("retired_tokens").create_index(["lookup_tag"], index_name="retired_by_tag")


def _migrate_to_3(db: sqlite_utils.Database) -> None:
    # Etags were "r<revision>", easy to guess: each entry gets a random one, new at each write.
    db.execute("ALTER TABLE entries ADD COLUMN etag TEXT NOT NULL DEFAULT ''")
    db.execute("UPDATE entries SET etag = lower(hex(randomblob(12)))")


def _migrate_to_4(db: sqlite_utils.Database) -> None:
    # The event log (DESIGN section 8): one row per admin write, in the write's transaction.
    # AUTOINCREMENT: a revision is never reused, even after the newest row is gone.
    db.execute(
        "CREATE TABLE events ("
        " revision INTEGER PRIMARY KEY AUTOINCREMENT,"
        " entry_id TEXT NOT NULL,"
        " kind TEXT NOT NULL,"
        " actor_id TEXT NOT NULL DEFAULT '',"
        " fields TEXT NOT NULL DEFAULT '[]',"
        " time INTEGER NOT NULL)"
    )
    for statement in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER events_no_{statement.lower()} BEFORE {statement} ON events"
            " BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END"
        )


def _migrate_to_5(db: sqlite_utils.Database) -> None:
    # The fingerprint of the server key the database belongs to (one row at most).
    db.execute(
        "CREATE TABLE server_key (id INTEGER PRIMARY KEY CHECK (id = 1), fingerprint TEXT NOT NULL)"
    )


def _migrate_to_6(db: sqlite_utils.Database) -> None:
    # Rotation with a grace period: the replaced token's verifier and tag stay with the entry
    # (and in retired_tokens, so it is never taken again) until previous_expire_time.
    db.execute("ALTER TABLE entries ADD COLUMN previous_verifier TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE entries ADD COLUMN previous_lookup_tag INTEGER")
    db.execute("ALTER TABLE entries ADD COLUMN previous_expire_time INTEGER")
    db.execute("CREATE INDEX entries_by_previous_tag ON entries(previous_lookup_tag)")


def _migrate_to_7(db: sqlite_utils.Database) -> None:
    # The audit log (DESIGN section 9): hash-chained, append-only.
    db.execute(
        "CREATE TABLE audit_events ("
        " sequence INTEGER PRIMARY KEY,"
        " time INTEGER NOT NULL,"
        " actor_entry_id TEXT NOT NULL,"
        " actor_subject TEXT NOT NULL,"
        " rpc TEXT NOT NULL,"
        " entry_id TEXT NOT NULL,"
        " changes TEXT NOT NULL,"
        " code INTEGER NOT NULL,"
        " peer TEXT NOT NULL,"
        " user_agent TEXT NOT NULL,"
        " previous_hash TEXT NOT NULL,"
        " hash TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX audit_by_entry ON audit_events(entry_id, sequence)")
    db.execute("CREATE INDEX audit_by_actor ON audit_events(actor_entry_id, sequence)")
    for statement in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER audit_no_{statement.lower()} BEFORE {statement} ON audit_events"
            " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        )


# MIGRATIONS[n] brings a database at schema version n to version n + 1.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _migrate_to_1,
    _migrate_to_2,
    _migrate_to_3,
    _migrate_to_4,
    _migrate_to_5,
    _migrate_to_6,
    _migrate_to_7,
)
SCHEMA_VERSION = len(MIGRATIONS)


# A file's identity: (st_dev, st_ino). The store's connections keep the inode open, so its
# number cannot be reused by another file while the store is open.
_FileIdentity = tuple[int, int]


# How many events `changes` returns at most in one batch.
_CHANGES_BATCH = 512
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mmap.restype = ctypes.c_void_p
_LIBC.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value
# The WAL-index header's size: the first of its two copies in the `-shm` file, rewritten at
# every commit (its frame count, checksums and salts change) after the second one.
_WAL_INDEX_HEADER = 48


class SqliteStore(ThreadedStore):
    """`EntryStore` on a SQLite file: `SqliteFile`, on the store's own reader and writer threads."""

    def __init__(self, path: Path) -> None:
        self.file = SqliteFile(path)
        super().__init__(self.file)

    def problem(self) -> str | None:
        """Why writes are refused now (the file was removed or replaced), or None."""
        return self.file.file_problem()


class SqliteFile:
    """The SQLite file itself, called from any thread (one connection each). Opening it
    creates or migrates the schema."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        # The files this store writes to, as it opened them; empty until the schema is ready.
        self._opened: Sequence[tuple[Path, _FileIdentity]] = ()
        self._uri = path.absolute().as_uri()
        # Verifiers belong to the service's user alone: a new folder 0700, a new file 0600
        # (SQLite gives its -wal and -shm files the database file's mode).
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        db = self._db()
        with _storage_faults("database open"):
            db.execute("PRAGMA journal_mode=WAL")
        with self._transaction() as tx:
            version = tx.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise Unavailable(
                    f"database schema version {version} is newer than this server knows"
                    f" ({SCHEMA_VERSION}); upgrade the server"
                )
            for migrate in MIGRATIONS[version:]:
                migrate(tx)
            tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        # The write-ahead log exists from the first transaction on, and stays while any
        # connection is open (the store keeps one open until `close`); both files hold
        # committed writes.
        files = (path.absolute(), _wal(path.absolute()))
        self._opened = [(file, identity) for file in files if (identity := _identity(file))]
        # The change feed (see `version`). Its connection reads once, which opens the
        # WAL index and takes its shared lock: while that is held, no connection of any
        # process truncates the `-shm` file, so mapping it is safe until `close`.
        self._feed = self._connect()
        self._feed_cursor = self._feed.cursor()
        self._data_version()
        self._wal_index = WalIndexHeader.map(path.absolute())
        self._wal_header = self._wal_index.header if self._wal_index is not None else None

    def file_problem(self) -> str | None:
        """Why writes are refused: the database file or its write-ahead log was removed or
        replaced since the store opened it. None while they are the files it opened.

        One `os.stat` a file, cheap enough to poll (see `adapters.file_watch`).
        """
        for opened, identity in self._opened:
            try:
                now = _identity(opened)
            except OSError:  # cannot tell (EACCES, EIO): the write itself will say what fails
                continue
            if now != identity:
                return (
                    f"database file {opened} was removed or replaced while serving;"
                    " restart the server (writes are refused until then)"
                )
        return None

    def add(self, entry: Entry, change: Change | None = None) -> Event:
        """Insert a new entry, and its `created` event."""
        change = change or Change()
        try:
            with self._transaction() as tx:
                hold(tx.execute, change)
                tx.table("entries").insert(entry_row(entry))
                return append(tx.execute, entry, ChangeKind.CREATED, change)
        except sqlite3.IntegrityError:
            raise AlreadyExists("subject: an unrevoked entry already has this subject") from None

    def add_many(self, entries: Iterable[Entry]) -> None:
        """Insert many new entries in one transaction (bulk imports and benchmarks), each with
        its `created` event."""
        try:
            with self._transaction() as tx:
                for entry in entries:
                    tx.table("entries").insert(entry_row(entry))
                    append(tx.execute, entry, ChangeKind.CREATED, Change())
        except sqlite3.IntegrityError:
            raise AlreadyExists("subject: an unrevoked entry already has this subject") from None

    def get(self, entry_id: str) -> Entry:
        """The entry with this id."""
        row = self._one("WHERE id = ?", (entry_id,))
        if row is None:
            raise NotFound(entry_id)
        return row

    def find_subject(self, subject: str) -> Entry | None:
        """The unrevoked entry with this subject."""
        return self._one("WHERE subject = ? AND revoke_time IS NULL", (subject,))

    def find_tag(self, tag: int) -> list[Entry]:
        """Every entry whose token, or previous token, has this lookup tag."""
        return self._many("WHERE lookup_tag = ? OR previous_lookup_tag = ?", (tag, tag))

    def replace(self, entry: Entry, change: Change | None = None) -> Event:
        """Write `entry` over its previous revision (compare-and-set on `revision`).

        `last_used_time` is left alone: `record_use` owns it, and does not bump the revision.
        So is the token: a rehash may have replaced the verifier since `entry` was read.
        """
        kind = ChangeKind.REVOKED if entry.revoke_time is not None else ChangeKind.UPDATED
        return self._write_over(entry, kind, change or Change())

    def rotate(self, entry: Entry, change: Change | None = None) -> Event:
        """`replace` with the entry's new token; the old verifier moves to `retired_tokens`."""
        return self._write_over(entry, ChangeKind.ROTATED, change or Change())

    def _write_over(self, entry: Entry, kind: ChangeKind, change: Change) -> Event:
        try:
            with self._transaction() as tx:
                return write_over(tx.execute, entry, kind, change)
        except sqlite3.IntegrityError:
            raise AlreadyExists("subject: an unrevoked entry already has this subject") from None

    def version(self) -> object:
        """A value that moves at every commit, of any connection in any process.

        It is the WAL-index header, read from the `-shm` file's shared memory: what SQLite
        itself reads to learn of other commits, and what `PRAGMA data_version` reports (each
        commit appends frames to the log and rewrites the header; see SQLite's "WAL-mode File
        Format"). Read so, it costs about 0.1 us and never releases Python's interpreter lock;
        the pragma cost a warm Check 5-6% of its throughput (docs/performance.md). Without a
        mapped index (another locking mode), it asks the pragma.
        """
        header = self._wal_header
        if header is not None:
            return header.raw
        return self._data_version()

    def _data_version(self) -> int:
        try:
            version: int = self._feed_cursor.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if not _is_storage_fault(exc):
                raise
            raise _unavailable("database read", exc) from None
        return version

    def head(self) -> int:
        """The newest event's revision, 0 when there is none."""
        with _storage_faults("database read"):
            row = self._db().execute("SELECT max(revision) FROM events").fetchone()
        return row[0] or 0

    def changes(self, after: int) -> Changes:
        """Up to _CHANGES_BATCH events past `after`, and the entries they name, read in one
        snapshot (a read transaction) so the entries are at least as new as the events."""
        db = self._db()
        with _storage_faults("database read"):
            db.execute("BEGIN")
            try:
                rows = db.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events"  # noqa: S608 (columns are ours)
                    " WHERE revision > ? ORDER BY revision LIMIT ?",
                    [after, _CHANGES_BATCH + 1],
                ).fetchall()
                events = tuple(event_from_row(row) for row in rows[:_CHANGES_BATCH])
                ids = sorted({event.entry_id for event in events})
                entries = {}
                for start in range(0, len(ids), 500):  # SQLite's bound on parameters
                    chunk = ids[start : start + 500]
                    marks = ", ".join("?" * len(chunk))
                    for entry in self._many(f"WHERE id IN ({marks})", tuple(chunk)):
                        entries[entry.id] = entry
            finally:
                # Ended whatever happens: a connection left inside a read transaction would
                # read this snapshot forever after.
                self._roll_back(db)
        return Changes(events, entries, more=len(rows) > _CHANGES_BATCH)

    def all_tags(self) -> set[int]:
        """The lookup tag of every entry, revoked ones included."""
        with _storage_faults("database read"):
            rows = (
                self._db()
                .execute(
                    "SELECT lookup_tag FROM entries UNION SELECT previous_lookup_tag FROM entries"
                    " WHERE previous_lookup_tag IS NOT NULL"
                )
                .fetchall()
            )
        return {tag for (tag,) in rows}

    def find_retired(self, tag: int) -> list[str]:
        """Verifiers of rotated-away tokens with this lookup tag."""
        with _storage_faults("database read"):
            rows = self._db().execute(
                "SELECT verifier FROM retired_tokens WHERE lookup_tag = ?", [tag]
            )
            return [verifier for (verifier,) in rows.fetchall()]

    def replace_verifier(self, entry_id: str, old: str, new: str) -> None:
        """Swap a verifier for a stronger one, unless the token was rotated meanwhile."""
        with self._transaction() as tx:
            tx.execute(
                "UPDATE entries SET verifier = ? WHERE id = ? AND verifier = ?",
                [new, entry_id, old],
            )

    def list_entries(self, after: Cursor | None, limit: int, include_revoked: bool) -> list[Entry]:
        """Entries in creation order after `after`."""
        clause, params = listing_clause(after, limit, include_revoked)
        return self._many(clause, params)

    def record_use(self, last_used: Mapping[str, datetime]) -> None:
        """Move `last_used_time` forward for the given entries."""
        with self._transaction() as tx:
            tx.conn.executemany(
                "UPDATE entries SET last_used_time = max(coalesce(last_used_time, 0), ?)"
                " WHERE id = ?",
                [(to_micros(when), entry_id) for entry_id, when in last_used.items()],
            )

    def count_by_state(self, now: datetime) -> dict[State, int]:
        """Entries by state at `now`, counted in SQL (a scan; for metrics, off the event loop)."""
        counts = dict.fromkeys(State, 0)
        query = (
            "SELECT CASE WHEN revoke_time IS NOT NULL THEN ?"
            " WHEN expire_time IS NOT NULL AND expire_time <= ? THEN ? ELSE ? END AS state,"
            " count(*) FROM entries GROUP BY state"
        )
        params = (int(State.REVOKED), to_micros(now), int(State.EXPIRED), int(State.ACTIVE))
        self._refuse_if_file_lost()  # a file at the path now may be another database
        # A connection of its own, closed at once: callers (a metrics scrape) may come from a
        # new thread each time, and a thread's connection would outlive its thread.
        with _storage_faults("database read"), contextlib.closing(self._connect()) as conn:
            conn.execute("PRAGMA busy_timeout = 5000")
            rows = conn.execute(query, params).fetchall()
        for state, count in rows:
            counts[State(state)] = count
        return counts

    def record_audit(self, record: AuditRecord) -> AuditEvent:
        """Append an audit record that goes with no write (a refused call)."""
        with self._transaction() as tx:
            return append_audit(tx.execute, record)

    def list_audit(self, after: int, limit: int, wanted: AuditFilter) -> list[AuditEvent]:
        """Up to `limit` audit events past sequence `after`, oldest first."""
        query, params = audit_query(after, limit, wanted)
        with _storage_faults("database read"):
            rows = self._db().execute(query, params).fetchall()
        return [audit_from_row(row) for row in rows]

    def key_fingerprint(self) -> str | None:
        """The kept fingerprint of the server key, if any."""
        with _storage_faults("database read"):
            row = self._db().execute("SELECT fingerprint FROM server_key").fetchone()
        return None if row is None else str(row[0])

    def keep_key_fingerprint(self, fingerprint: str) -> str:
        """Keep `fingerprint` unless one is kept; the one kept now."""
        with self._transaction() as tx:
            tx.execute(
                "INSERT INTO server_key (id, fingerprint) VALUES (1, ?) ON CONFLICT DO NOTHING",
                [fingerprint],
            )
            return str(tx.execute("SELECT fingerprint FROM server_key").fetchone()[0])

    def holds_entries(self) -> bool:
        """Whether any entry exists."""
        with _storage_faults("database read"):
            return self._db().execute("SELECT 1 FROM entries LIMIT 1").fetchone() is not None

    def close(self) -> None:
        """Close every thread's connection."""
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
        self._wal_header = None
        if self._wal_index is not None:
            self._wal_index.close()
            self._wal_index = None
        self._feed.close()  # after the mapping: the connection's lock is what made it safe

    def _connect(self) -> sqlite3.Connection:
        # Once the store is open, a connection never creates the file: one vanished from the
        # path must fail to open, not come back empty.
        mode = "rw" if self._opened else "rwc"
        return sqlite3.connect(
            f"{self._uri}?mode={mode}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )

    def _db(self) -> sqlite_utils.Database:
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            try:
                conn = self._connect()
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA busy_timeout = 5000")
            except sqlite3.Error as exc:
                # A file removed from its path fails to open: say that, not SQLite's words.
                lost = self.file_problem()
                raise Unavailable(lost or f"cannot open database {self.path}: {exc}") from None
            if problem := self.file_problem():  # the file at the path is not the one opened
                conn.close()
                raise Unavailable(problem)
            with self._connections_lock:
                self._connections.append(conn)
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite_utils.Database]:
        with self._write_lock:
            self._refuse_if_file_lost()
            db = self._db()
            with _storage_faults("database write"):
                db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                self._roll_back(db)
                if _is_storage_fault(exc):
                    raise _unavailable("database write", exc) from None
                raise
            # Committed into a file no longer at its path: a restart would not find it.
            self._refuse_if_file_lost()

    def _roll_back(self, db: sqlite_utils.Database) -> None:
        """End a failed transaction, if it is still open: after a full disk or an I/O error
        SQLite has rolled it back itself, and a second ROLLBACK would fail."""
        if not db.conn.in_transaction:
            return
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            # The connection is in a state we cannot know: replace it, and close it (which rolls
            # back what it holds). The new one opens first: while a connection is open, SQLite
            # keeps the write-ahead log, which `file_problem` expects to stay the same file.
            self._local.db = None
            with contextlib.suppress(Unavailable):  # then the thread's next call tries again
                self._db()
            with self._connections_lock:
                self._connections.remove(db.conn)
            db.conn.close()

    def _refuse_if_file_lost(self) -> None:
        if problem := self.file_problem():
            raise Unavailable(problem)

    def _one(self, clause: str, params: tuple[Any, ...]) -> Entry | None:
        found = self._many(clause, params)
        return found[0] if found else None

    def _many(self, clause: str, params: tuple[Any, ...]) -> list[Entry]:
        with _storage_faults("database read"):
            rows = self._db().execute(f"SELECT {COLUMNS} FROM entries {clause}", params)  # noqa: S608 (clauses are ours)
            return [entry_from_row(row) for row in rows.fetchall()]


def _is_storage_fault(error: BaseException) -> bool:
    """Whether `error` is the storage failing (full disk, I/O error, busy or locked, damaged
    file, not a database), not the call: a constraint violation is the caller's (AlreadyExists),
    a programming or data-size error is ours and stays INTERNAL."""
    return isinstance(error, sqlite3.DatabaseError) and not isinstance(
        error,
        (
            sqlite3.IntegrityError,
            sqlite3.ProgrammingError,
            sqlite3.DataError,
            sqlite3.NotSupportedError,
        ),
    )


def _unavailable(action: str, error: BaseException) -> Unavailable:
    # SQLite's message names the failure ("database or disk is full", "disk I/O error",
    # "database is locked"); it never quotes a statement's values.
    return Unavailable(f"{action} failed: {error}")


@contextmanager
def _storage_faults(action: str) -> Iterator[None]:
    """Turn the storage failing under `action` into Unavailable; other errors pass unchanged."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if not _is_storage_fault(exc):
            raise
        raise _unavailable(action, exc) from None


def _identity(path: Path) -> _FileIdentity | None:
    """The (device, inode) of the file at `path`, or None when there is none."""
    try:
        found = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (found.st_dev, found.st_ino)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


class WalIndexHeader:
    """The first copy of the WAL-index header, mapped read-only from SQLite's own descriptor
    of the `-shm` file.

    SQLite's locks on the file are POSIX locks, which a process loses all of when it closes
    any descriptor of the file: opening the file a second time to map it, and closing that,
    would drop the shared lock that keeps other processes from truncating it (and a read of a
    truncated mapping is SIGBUS). So nothing here opens or closes a descriptor of it: the
    mapping is made with SQLite's descriptor, found in /proc/self/fd, and outlives none of
    SQLite's connections (`SqliteFile.close` unmaps it first).
    """

    def __init__(self, address: int) -> None:
        self._address = address
        self.header = (ctypes.c_char * _WAL_INDEX_HEADER).from_address(address)

    @classmethod
    def map(cls, database: Path) -> WalIndexHeader | None:
        """The header of `database`'s WAL index, or None when it cannot be mapped so (no
        /proc, another locking mode): the store then asks `PRAGMA data_version`."""
        shm = database.with_name(database.name + "-shm")
        try:
            identity = _identity(shm)
            descriptors = [fd.name for fd in Path("/proc/self/fd").iterdir()]
        except OSError:
            return None
        for name in descriptors:
            try:
                opened = os.fstat(int(name))
            except (OSError, ValueError):
                continue
            same = (opened.st_dev, opened.st_ino) == identity
            if same and opened.st_size >= _WAL_INDEX_HEADER and stat.S_ISREG(opened.st_mode):
                address = _LIBC.mmap(
                    None, mmap.PAGESIZE, mmap.PROT_READ, mmap.MAP_SHARED, int(name), 0
                )
                if address in {None, _MAP_FAILED}:
                    return None
                return cls(address)
        return None

    def close(self) -> None:
        """Unmap the header."""
        _LIBC.munmap(self._address, mmap.PAGESIZE)
