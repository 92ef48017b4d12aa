"""Seed a benchmark database quickly, through the real store and real argon2id hashes.

- warm entries: full-cost verifiers (the server's defaults) for the tokens the load uses;
- fillers: real argon2id verifiers made with the cheapest parameters (t=1, 8 KiB), so 100,000
  rows take seconds, not the hour full-cost hashing would; their lookup tags are real;
- decoys: rows whose lookup tag equals that of a wrong token, holding a full-cost verifier of
  some other token: a check with that wrong token pays one full argon2 verify and is denied,
  exactly like a real tag collision (finding real 4-byte collisions would take 2^32 tries).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from authz_service.adapters import Argon2Hasher, load_or_create_key
from authz_service.adapters.postgres_store import PostgresFile
from authz_service.adapters.sqlite_store import SqliteFile
from authz_service.core.model import Action, Entry, Restriction
from authz_service.core.tokens import lookup_tag

CATALOG = (Restriction("catalog", ("catalog.entity.read",), (Action.READ,)),)
CHEAP = Argon2Hasher(time_cost=1, memory_cost=8)
BATCH = 5_000


@dataclass(frozen=True)
class Seeded:
    """The tokens a seeded database answers to."""

    warm: list[str]
    fillers: list[str]
    decoys: list[str]


def new_token() -> str:
    """A token made as the admin client makes one: 24 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(24)


def seed(
    db: Path | str, *, warm: int, fillers: int, decoys: int, key_file: Path | None = None
) -> Seeded:
    """Create `db` holding the requested entries: a SQLite file (with its server key beside
    it, unless `key_file` names one) or a PostgreSQL URL (with `key_file`)."""
    # The blocking stores: seeding runs before any server, on no loop.
    store: SqliteFile | PostgresFile
    if isinstance(db, str):
        assert key_file is not None, "a PostgreSQL database needs its key file"
        store = PostgresFile(db)
    else:
        key_file = key_file or db.parent / "server.key"
        store = SqliteFile(db)
    key = load_or_create_key(key_file)
    full = Argon2Hasher()
    now = datetime.now(UTC)
    tokens = Seeded(
        warm=[new_token() for _ in range(warm)],
        fillers=[new_token() for _ in range(fillers)],
        decoys=[new_token() for _ in range(decoys)],
    )

    def entry(subject: str, token: str, verifier: str) -> Entry:
        return Entry(
            id=str(uuid.uuid4()),
            subject=subject,
            description="benchmark",
            restrictions=CATALOG,
            unrestricted=False,
            verifier=verifier,
            lookup_tag=lookup_tag(key, token),
            create_time=now,
            update_time=now,
        )

    decoy_verifier = full.hash(new_token())
    rows: Iterator[Entry] = iter(
        [
            *(entry(f"bench-warm-{i}", t, full.hash(t)) for i, t in enumerate(tokens.warm)),
            *(entry(f"bench-decoy-{i}", t, decoy_verifier) for i, t in enumerate(tokens.decoys)),
        ]
    )
    _insert(store, rows)
    _insert(
        store, (entry(f"bench-filler-{i}", t, CHEAP.hash(t)) for i, t in enumerate(tokens.fillers))
    )
    store.close()
    return tokens


def _insert(store: SqliteFile | PostgresFile, rows: Iterable[Entry]) -> None:
    batch: list[Entry] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            store.add_many(batch)
            batch = []
    if batch:
        store.add_many(batch)
