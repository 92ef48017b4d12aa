"""The store factory: `AUTHZ_DB` (or `--db`) names the store, and this is the one place that
reads it (DESIGN section 5): a file path is SQLite; a `postgresql://` URL is PostgreSQL;
anything else that looks like a URL is refused, never taken for a file name."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psycopg.conninfo

from authz_service.core.errors import AuthzError
from authz_service.core.model import State

from .postgres_store import PostgresStore, entry_counter
from .sqlite_store import SqliteFile, SqliteStore
from .threaded_store import ThreadedStore

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_POSTGRESQL = ("postgresql://", "postgres://")


class StoreSettingError(Exception):
    """AUTHZ_DB names no store this server can open; the message says why, in one line."""


def is_postgresql(db: str) -> bool:
    """Whether `db` is a PostgreSQL URL."""
    return db.startswith(_POSTGRESQL)


def store_problem(db: str) -> str | None:
    """Why `db` names no store (one line), or None when it names one."""
    try:
        if is_postgresql(db):
            _postgresql_url(db)
        else:
            sqlite_path(db)
    except StoreSettingError as exc:
        return str(exc)
    return None


def sqlite_path(db: str) -> Path:
    """The SQLite file `db` names; StoreSettingError when it is a URL or empty."""
    if not db.strip():
        raise StoreSettingError("must name a SQLite file (or a postgresql:// URL)")
    if is_postgresql(db):
        raise StoreSettingError("is a PostgreSQL URL, not a SQLite file")
    if _URL.match(db):
        raise StoreSettingError(
            f"{db.partition('://')[0]}:// is not a store this server knows;"
            " use a SQLite file path (or a postgresql:// URL)"
        )
    return Path(db)


def _postgresql_url(db: str) -> None:
    try:
        parts = psycopg.conninfo.conninfo_to_dict(db)
    except psycopg.ProgrammingError as exc:
        raise StoreSettingError(f"cannot parse the PostgreSQL URL: {exc}") from None
    if "password" in parts:
        # The URL is logged and shows in `ps`: the password comes from a file.
        raise StoreSettingError(
            "the URL holds a password: put it in the file that AUTHZ_DB_PASSWORD_FILE names"
        )


def open_store(
    db: str, *, lease: float | None = None, password_file: Path | None = None
) -> ThreadedStore:
    """Open (creating or migrating) the store `db` names. On PostgreSQL the process also
    becomes a replica, holding a lease of `lease` seconds (see `postgres_store`)."""
    if is_postgresql(db):
        _postgresql_url(db)
        return PostgresStore(db, lease=lease, password_file=password_file)
    return SqliteStore(sqlite_path(db))


def open_counter(
    db: str, *, password_file: Path | None = None
) -> Callable[[datetime], dict[State, int]]:
    """`count_by_state` of the store `db` names, for a process that serves no calls (the
    metrics process of `serve --workers`): opened at the first call, never before."""
    if is_postgresql(db):
        return entry_counter(db, password_file)
    opened: list[SqliteFile] = []

    def count(now: datetime) -> dict[State, int]:
        if not opened:
            try:
                opened.append(SqliteFile(sqlite_path(db)))
            except (OSError, AuthzError) as exc:
                raise AuthzError(f"cannot open {db}: {exc}") from None
        return opened[0].count_by_state(now)

    return count
