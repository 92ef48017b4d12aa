"""The shared store: entries in PostgreSQL, through psycopg 3, for replicas on several machines.

The schema is SQLite's (`adapters.rows`), with the same schema version and forward
migrations; replicas starting at once migrate one at a time under an advisory lock. Queries
use a small psycopg_pool pool. Every write that appends an event takes one advisory lock for
its transaction, so revisions are given in commit order (a reader never sees revision 11
before 10), and the claim of a token is checked and taken with no other write in between.
The event's transaction sends NOTIFY: commit delivers it.

Each process is a replica (DESIGN section 8). `Replica` keeps one connection outside the pool
for LISTEN (a pooled one would lose it when recycled), renews a lease on it every quarter of
the lease, and records there which revision this process applied. An admin write returns once
every other live replica has acknowledged its revision, or that replica's lease has run out
(`settle`). A replica that cannot renew its lease stops answering from its cache when the lease
runs out: `version()` raises Unavailable until the listen connection is back, and the catch-up
that follows it is done.

Leases are judged by the database's clock (`now()`) on the writer's side, and by this
process's monotonic clock on its own side, counted from before the renewal was sent: so a
replica's own view of its lease always ends first. No two machines' clocks are compared.

Connection loss is retried where that is safe (a read; a write that sent nothing yet) and
otherwise ends the call with Unavailable, saying so. The URL never carries a password (the
settings refuse it); `password_file` holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from authz_service.core.audit import AuditEvent, AuditFilter, AuditRecord
from authz_service.core.changes import Change, ChangeKind, Changes, Event
from authz_service.core.errors import AlreadyExists, NotFound, Unavailable
from authz_service.core.model import Entry, State, to_micros
from authz_service.core.ports import Cursor

from .rows import (
    COLUMNS,
    EVENT_COLUMNS,
    Rows,
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
from .threaded_store import READER_THREADS, ThreadedStore

log = logging.getLogger("authz_service.database")

T = TypeVar("T")
E = TypeVar("E", Event, Event | None)

DEFAULT_LEASE = 2.0
EVENTS_CHANNEL = "authz_events"
ACKS_CHANNEL = "authz_acks"
# pg_stat_activity's application_name of the listen connections (the others: APPLICATION).
APPLICATION = "authz-service"
LISTEN_APPLICATION = "authz-service listen"
# Advisory lock keys ("authz" in ASCII, then which lock).
_MIGRATION_LOCK = 0x617574687A01
_WRITE_LOCK = 0x617574687A02
_CHANGES_BATCH = 512
# Rows of replicas whose lease ended this long ago are removed when a replica starts.
_FORGET_REPLICAS_AFTER = "1 hour"
# How long a call waits for a pooled connection (the database unreachable: Unavailable).
_POOL_WAIT = 3.0
# This process's own view of its lease ends this much (seconds, at most a tenth of the lease)
# before the database's: the two clocks' rates may differ a little.
_LEASE_MARGIN = 0.05
# While a write waits for acknowledgements, it asks again at least this often (seconds).
_SETTLE_POLL = 0.1


def _migrate_to_1(tx: psycopg.Connection[Any]) -> None:
    tx.execute(
        "CREATE TABLE entries ("
        " id TEXT PRIMARY KEY,"
        " subject TEXT NOT NULL,"
        " description TEXT NOT NULL DEFAULT '',"
        " restrictions TEXT NOT NULL,"
        " unrestricted INTEGER NOT NULL,"
        " verifier TEXT NOT NULL,"
        " lookup_tag BIGINT NOT NULL,"
        " create_time BIGINT NOT NULL,"
        " update_time BIGINT NOT NULL,"
        " revision BIGINT NOT NULL,"
        " expire_time BIGINT,"
        " revoke_time BIGINT,"
        " revoke_reason TEXT NOT NULL DEFAULT '',"
        " last_used_time BIGINT)"
    )
    tx.execute("CREATE INDEX entries_by_tag ON entries (lookup_tag)")
    tx.execute("CREATE INDEX entries_by_creation ON entries (create_time, id)")
    # Subjects are unique among unrevoked entries; revoked ones stay for audit.
    tx.execute(
        "CREATE UNIQUE INDEX entries_unrevoked_subject ON entries (subject)"
        " WHERE revoke_time IS NULL"
    )


def _migrate_to_2(tx: psycopg.Connection[Any]) -> None:
    # Verifiers of rotated-away tokens, so a token once replaced is never accepted again.
    tx.execute(
        "CREATE TABLE retired_tokens ("
        " entry_id TEXT NOT NULL,"
        " lookup_tag BIGINT NOT NULL,"
        " verifier TEXT NOT NULL,"
        " retire_time BIGINT NOT NULL)"
    )
    tx.execute("CREATE INDEX retired_by_tag ON retired_tokens (lookup_tag)")


def _migrate_to_3(tx: psycopg.Connection[Any]) -> None:
    # Each entry has a random etag, new at each write.
    tx.execute("ALTER TABLE entries ADD COLUMN etag TEXT NOT NULL DEFAULT ''")
    tx.execute("UPDATE entries SET etag = substr(md5(random()::text || id), 1, 24)")


def _migrate_to_4(tx: psycopg.Connection[Any]) -> None:
    # The event log (DESIGN section 8), append-only; and the replicas' leases and
    # acknowledgements, which only PostgreSQL needs (SQLite's processes share one machine).
    tx.execute(
        "CREATE TABLE events ("
        " revision BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " entry_id TEXT NOT NULL,"
        " kind TEXT NOT NULL,"
        " actor_id TEXT NOT NULL DEFAULT '',"
        " fields TEXT NOT NULL DEFAULT '[]',"
        " time BIGINT NOT NULL)"
    )
    tx.execute(
        "CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'the event log is append-only'; END $$"
    )
    tx.execute(
        "CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON events"
        " FOR EACH STATEMENT EXECUTE FUNCTION events_append_only()"
    )
    tx.execute(
        "CREATE TABLE replicas ("
        " id TEXT PRIMARY KEY,"
        " lease_until TIMESTAMPTZ NOT NULL,"
        " applied BIGINT NOT NULL,"
        " started TIMESTAMPTZ NOT NULL DEFAULT now())"
    )


def _migrate_to_5(tx: psycopg.Connection[Any]) -> None:
    # The fingerprint of the server key the database belongs to (one row at most).
    tx.execute(
        "CREATE TABLE server_key (id INTEGER PRIMARY KEY CHECK (id = 1), fingerprint TEXT NOT NULL)"
    )


def _migrate_to_6(tx: psycopg.Connection[Any]) -> None:
    # Rotation with a grace period: the replaced token's verifier and tag stay with the entry.
    tx.execute("ALTER TABLE entries ADD COLUMN previous_verifier TEXT NOT NULL DEFAULT ''")
    tx.execute("ALTER TABLE entries ADD COLUMN previous_lookup_tag BIGINT")
    tx.execute("ALTER TABLE entries ADD COLUMN previous_expire_time BIGINT")
    tx.execute("CREATE INDEX entries_by_previous_tag ON entries (previous_lookup_tag)")


def _migrate_to_7(tx: psycopg.Connection[Any]) -> None:
    # The audit log (DESIGN section 9): hash-chained, append-only.
    tx.execute(
        "CREATE TABLE audit_events ("
        " sequence BIGINT PRIMARY KEY,"
        " time BIGINT NOT NULL,"
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
    tx.execute("CREATE INDEX audit_by_entry ON audit_events (entry_id, sequence)")
    tx.execute("CREATE INDEX audit_by_actor ON audit_events (actor_entry_id, sequence)")
    tx.execute(
        "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$"
    )
    tx.execute(
        "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_events"
        " FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
    )


# MIGRATIONS[n] brings a database at schema version n to version n + 1 (as SQLite's do).
MIGRATIONS: tuple[Callable[[psycopg.Connection[Any]], None], ...] = (
    _migrate_to_1,
    _migrate_to_2,
    _migrate_to_3,
    _migrate_to_4,
    _migrate_to_5,
    _migrate_to_6,
    _migrate_to_7,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _connection_kwargs(password_file: Path | None, tcp_timeout: float) -> dict[str, Any]:
    """libpq settings for every connection: short connect and TCP timeouts, so a database
    that stops answering (a partition, not a refusal) is noticed within them."""
    kwargs: dict[str, Any] = {
        "connect_timeout": 3,
        "keepalives": 1,
        "keepalives_idle": 1,
        "keepalives_interval": 1,
        "keepalives_count": 2,
        "tcp_user_timeout": int(tcp_timeout * 1000),
        "application_name": APPLICATION,
    }
    if password_file is not None:
        try:
            kwargs["password"] = password_file.read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise Unavailable(
                f"cannot read AUTHZ_DB_PASSWORD_FILE {password_file}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise Unavailable(
                f"cannot read AUTHZ_DB_PASSWORD_FILE {password_file}: not UTF-8 text"
            ) from None
    return kwargs


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _is_storage_fault(error: BaseException) -> bool:
    """The database unreachable, shutting down, full or read-only: not the call's fault."""
    return isinstance(
        error,
        (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            psycopg.errors.ReadOnlySqlTransaction,
            PoolTimeout,
        ),
    )


def _reason(error: BaseException) -> str:
    if isinstance(error, PoolTimeout):
        return f"cannot reach the database within {_POOL_WAIT:g} s"
    return _first_line(error)


class _Transaction:
    """A write's transaction, running `?` statements (see `adapters.rows`)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self.conn.execute(sql.replace("?", "%s"), params)


class _CommitUncertain(Exception):
    """The connection was lost during COMMIT: the write may or may not have committed."""


class PostgresFile:
    """The blocking store over PostgreSQL, called from any thread (a pooled connection each)."""

    def __init__(
        self, url: str, *, lease: float = DEFAULT_LEASE, password_file: Path | None = None
    ) -> None:
        self.url = url
        self._kwargs = _connection_kwargs(password_file, tcp_timeout=max(lease, 2.0))
        try:
            with psycopg.connect(url, autocommit=True, **self._kwargs) as conn:
                _migrate(conn)
        except psycopg.Error as exc:
            raise Unavailable(f"cannot open the database: {_first_line(exc)}") from None
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=READER_THREADS + 2,  # the readers, the writer and the feed
            kwargs=self._kwargs,
            # A connection is checked before each use: after the database restarts, the pool
            # holds only dead ones, and each would fail a call once.
            check=ConnectionPool.check_connection,
            timeout=_POOL_WAIT,
            open=False,
            name="authz-store",
        )
        try:
            self._pool.open(wait=True, timeout=10.0)
            self.replica = Replica(url, self._kwargs, lease)
        except (PoolTimeout, Unavailable) as exc:
            self._pool.close()
            raise Unavailable(f"cannot open the database: {_reason(exc)}") from None

    # The change feed: the replica's notifications, and the event log.

    def version(self) -> object:
        """Moves at every notification and at every new listen connection; raises Unavailable
        once this replica's lease ran out (it must not answer from its cache)."""
        return self.replica.version()

    def head(self) -> int:
        rows = self._read(lambda tx: tx.execute("SELECT max(revision) FROM events").fetchone())
        return int(rows[0] or 0)

    def changes(self, after: int) -> Changes:
        """Up to _CHANGES_BATCH events past `after`, and the entries they name, read in one
        snapshot, so the entries are at least as new as the events."""

        def read(tx: _Transaction) -> Changes:
            tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = tx.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE revision > ?"  # noqa: S608 (columns are ours)
                " ORDER BY revision LIMIT ?",
                [after, _CHANGES_BATCH + 1],
            ).fetchall()
            events = tuple(event_from_row(row) for row in rows[:_CHANGES_BATCH])
            ids = sorted({event.entry_id for event in events})
            found = tx.execute(
                f"SELECT {COLUMNS} FROM entries WHERE id = ANY(?)",  # noqa: S608 (columns are ours)
                [ids],
            ).fetchall()
            # (Empty when there is no event: ANY of an empty array matches nothing.)
            entries = {entry.id: entry for entry in map(entry_from_row, found)}
            return Changes(events, entries, more=len(rows) > _CHANGES_BATCH)

        return self._read(read)

    def acknowledge(self, revision: int) -> None:
        """Record that this replica applied every event up to `revision`, and tell writers."""

        def ack(tx: _Transaction) -> None:
            tx.execute(
                "UPDATE replicas SET applied = greatest(applied, ?) WHERE id = ?",
                [revision, self.replica.id],
            )
            tx.execute("SELECT pg_notify(?, ?)", [ACKS_CHANNEL, str(revision)])

        self._write(ack, events=False)
        self.replica.applied(revision)

    def pending(self, revision: int) -> float:
        """How long (seconds, by the database's clock) the longest lease runs among the other
        live replicas that have not applied `revision` yet; 0 when there is none."""

        def ask(tx: _Transaction) -> float:
            row = tx.execute(
                "SELECT extract(epoch FROM max(lease_until) - now()) FROM replicas"
                " WHERE id <> ? AND applied < ? AND lease_until > now()",
                [self.replica.id, revision],
            ).fetchone()
            return float(row[0] or 0.0)

        return self._read(ask)

    # Entries.

    def add(self, entry: Entry, change: Change | None = None) -> Event:
        change = change or Change()

        def write(tx: _Transaction) -> Event:
            hold(tx.execute, change)
            _insert(tx, entry)
            return append(tx.execute, entry, ChangeKind.CREATED, change)

        return self._event_write(write)

    def add_many(self, entries: Sequence[Entry]) -> None:
        """Insert many new entries in one transaction, each with its `created` event."""

        def write(tx: _Transaction) -> Event | None:
            event = None
            for entry in entries:
                _insert(tx, entry)
                event = append(tx.execute, entry, ChangeKind.CREATED, Change())
            return event

        self._event_write(write)

    def get(self, entry_id: str) -> Entry:
        found = self._many("WHERE id = ?", (entry_id,))
        if not found:
            raise NotFound(entry_id)
        return found[0]

    def find_subject(self, subject: str) -> Entry | None:
        found = self._many("WHERE subject = ? AND revoke_time IS NULL", (subject,))
        return found[0] if found else None

    def find_tag(self, tag: int) -> list[Entry]:
        return self._many("WHERE lookup_tag = ? OR previous_lookup_tag = ?", (tag, tag))

    def all_tags(self) -> set[int]:
        rows = self._read(
            lambda tx: tx.execute(
                "SELECT lookup_tag FROM entries UNION SELECT previous_lookup_tag FROM entries"
                " WHERE previous_lookup_tag IS NOT NULL"
            ).fetchall()
        )
        return {int(tag) for (tag,) in rows}

    def replace(self, entry: Entry, change: Change | None = None) -> Event:
        kind = ChangeKind.REVOKED if entry.revoke_time is not None else ChangeKind.UPDATED
        return self._write_over(entry, kind, change or Change())

    def rotate(self, entry: Entry, change: Change | None = None) -> Event:
        return self._write_over(entry, ChangeKind.ROTATED, change or Change())

    def _write_over(self, entry: Entry, kind: ChangeKind, change: Change) -> Event:
        return self._event_write(lambda tx: write_over(tx.execute, entry, kind, change))

    def find_retired(self, tag: int) -> list[str]:
        rows = self._read(
            lambda tx: tx.execute(
                "SELECT verifier FROM retired_tokens WHERE lookup_tag = ?", [tag]
            ).fetchall()
        )
        return [verifier for (verifier,) in rows]

    def replace_verifier(self, entry_id: str, old: str, new: str) -> None:
        self._write(
            lambda tx: tx.execute(
                "UPDATE entries SET verifier = ? WHERE id = ? AND verifier = ?",
                [new, entry_id, old],
            ),
            events=False,
        )

    def list_entries(self, after: Cursor | None, limit: int, include_revoked: bool) -> list[Entry]:
        clause, params = listing_clause(after, limit, include_revoked)
        return self._many(clause, params)

    def record_use(self, last_used: Mapping[str, datetime]) -> None:
        def write(tx: _Transaction) -> None:
            with tx.conn.cursor() as cursor:
                cursor.executemany(
                    "UPDATE entries SET last_used_time = greatest(coalesce(last_used_time, 0), %s)"
                    " WHERE id = %s",
                    [(to_micros(when), entry_id) for entry_id, when in last_used.items()],
                )

        self._write(write, events=False)

    def count_by_state(self, now: datetime) -> dict[State, int]:
        return self._read(lambda tx: _count_by_state(tx, now))

    def record_audit(self, record: AuditRecord) -> AuditEvent:
        # The write lock: audit appends, like events, come one at a time.
        return self._write(lambda tx: append_audit(tx.execute, record), events=True)

    def list_audit(self, after: int, limit: int, wanted: AuditFilter) -> list[AuditEvent]:
        query, params = audit_query(after, limit, wanted)
        rows = self._read(lambda tx: tx.execute(query, params).fetchall())
        return [audit_from_row(row) for row in rows]

    def key_fingerprint(self) -> str | None:
        row = self._read(lambda tx: tx.execute("SELECT fingerprint FROM server_key").fetchone())
        return None if row is None else str(row[0])

    def keep_key_fingerprint(self, fingerprint: str) -> str:
        def keep(tx: _Transaction) -> str:
            tx.execute(
                "INSERT INTO server_key (id, fingerprint) VALUES (1, ?) ON CONFLICT DO NOTHING",
                [fingerprint],
            )
            return str(tx.execute("SELECT fingerprint FROM server_key").fetchone()[0])

        return self._write(keep, events=False)

    def holds_entries(self) -> bool:
        row = self._read(lambda tx: tx.execute("SELECT 1 FROM entries LIMIT 1").fetchone())
        return row is not None

    def problem(self) -> str | None:
        """Why this replica must not serve now (its lease ran out), or None."""
        return self.replica.problem()

    def close(self) -> None:
        """Leave the replicas (writers stop waiting for this one), and close the connections."""
        self.replica.stop()

        def leave(tx: _Transaction) -> None:
            tx.execute("DELETE FROM replicas WHERE id = ?", [self.replica.id])
            tx.execute("SELECT pg_notify(?, '')", [self.replica.channel])  # wakes its thread

        with contextlib.suppress(Unavailable):
            self._write(leave, events=False)
        self.replica.close()
        self._pool.close()

    # How every call runs.

    def _many(self, clause: str, params: Sequence[Any]) -> list[Entry]:
        rows = self._read(
            lambda tx: tx.execute(f"SELECT {COLUMNS} FROM entries {clause}", params).fetchall()  # noqa: S608 (clauses are ours)
        )
        return [entry_from_row(row) for row in rows]

    def _read(self, work: Callable[[_Transaction], T]) -> T:
        """Run a read; a lost connection is retried once on a new one."""
        for attempt in (1, 2):
            try:
                with self._transaction() as tx:
                    return work(tx)
            except _CommitUncertain as lost:  # a read committed nothing: just try again
                error: BaseException = lost.__cause__ or lost
            except Exception as exc:
                if not _is_storage_fault(exc):
                    raise
                error = exc
            if attempt == 2 or isinstance(error, PoolTimeout):
                raise Unavailable(f"database read failed: {_reason(error)}") from None
        raise AssertionError("unreachable")

    def _event_write(self, work: Callable[[_Transaction], E]) -> E:
        """A write that appends events: NOTIFY the replicas of its newest, in its transaction
        (delivered at commit)."""

        def notified(tx: _Transaction) -> E:
            event = work(tx)
            if event is not None:
                tx.execute("SELECT pg_notify(?, ?)", [EVENTS_CHANNEL, str(event.revision)])
            return event

        try:
            return self._write(notified, events=True)
        except psycopg.errors.UniqueViolation:
            raise AlreadyExists("subject: an unrevoked entry already has this subject") from None

    def _write(self, work: Callable[[_Transaction], T], *, events: bool) -> T:
        """Run a write in its own transaction, durable at commit. With `events`, first take
        the write lock, so revisions are given in commit order and claims hold.

        A connection lost before COMMIT was sent rolled the write back: it is tried once more
        on a new connection. One lost during COMMIT leaves its outcome unknown: Unavailable,
        saying so."""
        for attempt in (1, 2):
            try:
                with self._transaction() as tx:
                    if events:
                        tx.execute("SELECT pg_advisory_xact_lock(?)", [_WRITE_LOCK])
                    return work(tx)
            except _CommitUncertain as lost:
                raise Unavailable(
                    "database write: the connection was lost while committing, so the write may"
                    f" or may not have been made ({_first_line(lost.__cause__ or lost)});"
                    " read the entry to see"
                ) from None
            except Exception as exc:
                if not _is_storage_fault(exc):
                    raise
                if attempt == 2 or isinstance(exc, PoolTimeout):
                    raise Unavailable(f"database write failed: {_reason(exc)}") from None
        raise AssertionError("unreachable")

    @contextmanager
    def _transaction(self) -> Iterator[_Transaction]:
        """A pooled connection's transaction: committed when the block ends, else rolled back.
        A connection lost during COMMIT is `_CommitUncertain`."""
        with self._pool.connection(timeout=_POOL_WAIT) as conn:
            try:
                yield _Transaction(conn)
            except BaseException:
                with contextlib.suppress(psycopg.Error):  # a lost connection rolled back itself
                    conn.rollback()
                raise
            try:
                conn.commit()
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                raise _CommitUncertain from exc


def _count_by_state(tx: _Transaction, now: datetime) -> dict[State, int]:
    counts = dict.fromkeys(State, 0)
    rows = tx.execute(
        "SELECT CASE WHEN revoke_time IS NOT NULL THEN ?"
        " WHEN expire_time IS NOT NULL AND expire_time <= ? THEN ? ELSE ? END AS state,"
        " count(*) FROM entries GROUP BY state",
        (int(State.REVOKED), to_micros(now), int(State.EXPIRED), int(State.ACTIVE)),
    ).fetchall()
    for state, count in rows:
        counts[State(state)] = count
    return counts


def entry_counter(url: str, password_file: Path | None) -> Callable[[datetime], dict[State, int]]:
    """`count_by_state` on a connection of its own for each call, for a process that is no
    replica (the metrics process of `serve --workers`); Unavailable when it cannot ask."""
    kwargs = _connection_kwargs(password_file, tcp_timeout=5.0)

    def count(now: datetime) -> dict[State, int]:
        try:
            with psycopg.connect(url, autocommit=True, **kwargs) as conn:
                return _count_by_state(_Transaction(conn), now)
        except psycopg.Error as exc:
            raise Unavailable(f"database read failed: {_first_line(exc)}") from None

    return count


def _insert(tx: _Transaction, entry: Entry) -> None:
    row = entry_row(entry)
    columns = ", ".join(row)
    marks = ", ".join("?" * len(row))
    tx.execute(f"INSERT INTO entries ({columns}) VALUES ({marks})", list(row.values()))  # noqa: S608 (columns are ours)


def _migrate(conn: psycopg.Connection[Any]) -> None:
    """Bring the schema to SCHEMA_VERSION, one replica at a time (an advisory lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise Unavailable(
                f"database schema version {version} is newer than this server knows"
                f" ({SCHEMA_VERSION}); upgrade the server"
            )
        for migrate in MIGRATIONS[version:]:
            migrate(conn)
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (%s)", [SCHEMA_VERSION])
        else:
            conn.execute("UPDATE schema_version SET version = %s", [SCHEMA_VERSION])
        conn.execute(
            "DELETE FROM replicas WHERE lease_until < now() - %s::interval",
            [_FORGET_REPLICAS_AFTER],
        )


class Replica:
    """This process among the replicas: its listen connection, its lease, its notices.

    A thread of its own holds the connection: it LISTENs, waits for notifications for a
    quarter of the lease, renews the lease (on the same connection: the lease lasts only while
    it is healthy), and again. It never renews while this process is behind: a process whose
    event loop no longer applies what it is told must not keep a lease writers wait on.
    """

    def __init__(self, url: str, kwargs: Mapping[str, Any], lease: float) -> None:
        self.id = secrets.token_hex(8)
        # This replica's own channel: a notice on it wakes the thread (to stop).
        self.channel = f"authz_replica_{self.id}"
        self.lease = lease
        self._url = url
        self._kwargs = dict(kwargs)
        self._interval = lease / 4
        # Monotonic time at which this process's lease ends (0: it holds none).
        self._lease_end = 0.0
        # Moves at every notification and every new connection (the change feed's version).
        self._bumps = 0
        self._notified = 0  # the newest revision a notification named
        self._applied = 0  # the newest revision this process acknowledged
        self._behind_since: float | None = None
        self._lost: str | None = None
        self._on_events: Callable[[], object] = lambda: None
        self._on_acks: Callable[[], object] = lambda: None
        self._stopping = threading.Event()
        self._joined = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-listen", daemon=True)
        self._thread.start()
        if not self._joined.wait(10.0) or self._lease_end == 0.0:
            self.close()
            raise Unavailable(f"cannot join the replicas: {self._lost or 'no lease within 10 s'}")

    def watch(self, on_events: Callable[[], object], on_acks: Callable[[], object]) -> None:
        """Call `on_events` (from this replica's thread) when events may have been committed,
        `on_acks` when a replica acknowledged a revision."""
        self._on_events, self._on_acks = on_events, on_acks
        on_events()  # a new follower acknowledges at once what it loaded

    def version(self) -> object:
        if time.monotonic() >= self._lease_end:
            # Said to any caller, credentials or not: no address or error of the database
            # (the log and `problem` have them).
            raise Unavailable("this replica lost its database: ask another replica")
        return self._bumps

    def applied(self, revision: int) -> None:
        """This process applied every event up to `revision`."""
        self._applied = max(self._applied, revision)
        if self._applied >= self._notified:
            self._behind_since = None

    def problem(self) -> str | None:
        if time.monotonic() < self._lease_end:
            return None
        return (
            f"lost the database ({self._lost or 'no lease'}): not answering from the cache"
            " until the connection is back"
        )

    def stop(self) -> None:
        """Renew the lease no more; the thread ends at its next wake-up."""
        self._stopping.set()

    def close(self) -> None:
        """Stop listening (at once when woken on `channel`, else within a quarter of the
        lease) and give up the lease."""
        self._stopping.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(self._interval + 5.0)
        self._lease_end = 0.0

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._listen()
                failures = 0
            except (psycopg.Error, OSError) as exc:
                failures += 1
                reason = _first_line(exc)
                if reason != self._lost:
                    log.warning("replica: the listen connection failed: %s", reason)
                self._lost = reason
            except Exception:  # a bug: logged, and the lease runs out until it works again
                failures += 1
                log.exception("replica: the listen thread failed")
                self._lost = "the listen thread failed"
            self._joined.set()  # the constructor stops waiting (and says why, if it failed)
            # Reconnect at once the first time (a killed backend), then back off a little.
            self._stopping.wait(min(0.1 * failures, self._interval))

    def _listen(self) -> None:
        kwargs = {**self._kwargs, "application_name": LISTEN_APPLICATION}
        with psycopg.connect(self._url, autocommit=True, **kwargs) as conn:
            self._follow(conn)

    def _follow(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(f"LISTEN {EVENTS_CHANNEL}")
        conn.execute(f"LISTEN {ACKS_CHANNEL}")
        conn.execute(f"LISTEN {self.channel}")
        # Events may have been committed while no connection listened: the version moves
        # (before the lease is renewed), so the next Check catches up from the log first.
        self._bumps += 1
        self._renew(conn)
        self._on_events()
        if self._lost is not None:
            log.info("replica: listening again; catching up from the event log")
            self._lost = None
        self._joined.set()
        while not self._stopping.is_set():
            for notice in conn.notifies(timeout=self._interval):
                if notice.channel == EVENTS_CHANNEL:
                    self._saw(int(notice.payload or 0))
                    self._bumps += 1
                    self._on_events()
                elif notice.channel == ACKS_CHANNEL:
                    self._on_acks()
                if self._stopping.is_set():
                    return
            if self._stopping.is_set():
                return
            self._renew(conn)

    def _saw(self, revision: int) -> None:
        if revision > self._notified:
            self._notified = revision
            if self._applied < revision and self._behind_since is None:
                self._behind_since = time.monotonic()

    def _renew(self, conn: psycopg.Connection[Any]) -> None:
        sent = time.monotonic()
        behind = self._behind_since
        if behind is not None and sent - behind > self.lease:
            # Told of events it has not applied for a whole lease (a busy process catches up
            # well within it): this process no longer follows, so let the lease run out.
            return
        conn.execute(
            "INSERT INTO replicas (id, lease_until, applied)"
            " VALUES (%s, now() + make_interval(secs => %s), %s)"
            " ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until,"
            " applied = greatest(replicas.applied, excluded.applied)",
            [self.id, self.lease, self._applied],
        )
        lapsed = time.monotonic() >= self._lease_end
        if lapsed:
            # Writers stopped waiting for this replica when its lease ran out, and their
            # notices may be unread: the version moves before the lease does, so no Check
            # trusts the cache before it caught up from the event log.
            self._bumps += 1
        self._lease_end = sent + self.lease - min(_LEASE_MARGIN, self.lease / 10)
        if lapsed:
            self._on_events()


class PostgresStore(ThreadedStore):
    """`EntryStore` on PostgreSQL: `PostgresFile` on the store's threads, with the replica's
    acknowledgements."""

    def __init__(
        self, url: str, *, lease: float | None = None, password_file: Path | None = None
    ) -> None:
        self.file = PostgresFile(url, lease=lease or DEFAULT_LEASE, password_file=password_file)
        super().__init__(self.file)
        self.replica = self.file.replica
        self.version = self.replica.version  # the hot path's question, with no hop between
        self._acks: asyncio.Event | None = None

    def problem(self) -> str | None:
        """Why this replica must not serve now, or None (polled: see `server`)."""
        return self.file.problem()

    def watch(self, on_events: Callable[[], object]) -> None:
        loop = asyncio.get_running_loop()
        acks = self._acks = asyncio.Event()

        def acknowledged() -> None:  # on the replica's thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(acks.set)

        self.replica.watch(on_events, acknowledged)

    async def acknowledge(self, revision: int) -> None:
        await self._run(self._feed, self.file.acknowledge, revision)

    async def settle(self, revision: int) -> None:
        """Return once every other live replica applied `revision`, or its lease ran out.

        A replica renews its lease only while it keeps up (see `Replica`), so this waits at
        most about two leases; past that, the store is broken: Unavailable."""
        acks = self._acks
        deadline = time.monotonic() + 3 * self.replica.lease + _POOL_WAIT
        while True:
            if acks is not None:
                acks.clear()  # before asking: an acknowledgement after the answer wakes us
            waiting = await self._read(self.file.pending, revision)
            if waiting <= 0:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(
                    f"the write committed (revision {revision}), but a replica neither"
                    " acknowledged it nor let its lease run out; check the replicas"
                )
            pause = min(waiting, left, _SETTLE_POLL)
            if acks is None:
                await asyncio.sleep(pause)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(acks.wait(), pause)
