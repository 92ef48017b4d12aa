"""The store factory: `AUTHZ_DB` (or `--db`) names the store, and this is the one place that
reads it (DESIGN section 5): a file path is SQLite; a `postgresql://` URL is PostgreSQL, which
this version does not include yet; anything else that looks like a URL is refused, never taken
for a file name."""

from __future__ import annotations

import re
from pathlib import Path

from .sqlite_store import SqliteStore

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class StoreSettingError(Exception):
    """AUTHZ_DB names no store this server can open; the message says why, in one line."""


def sqlite_path(db: str) -> Path:
    """The SQLite file `db` names; StoreSettingError when it is a URL or empty."""
    if not db.strip():
        raise StoreSettingError("must name a SQLite file (or a postgresql:// URL)")
    if db.startswith(("postgresql://", "postgres://")):
        raise StoreSettingError(
            "PostgreSQL is not supported by this version yet; use a SQLite file path"
        )
    if _URL.match(db):
        raise StoreSettingError(
            f"{db.partition('://')[0]}:// is not a store this server knows;"
            " use a SQLite file path (or a postgresql:// URL)"
        )
    return Path(db)


def open_store(db: str) -> SqliteStore:
    """Open (creating or migrating) the store `db` names."""
    return SqliteStore(sqlite_path(db))
