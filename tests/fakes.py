"""In-memory stand-ins for the ports the use cases need: an entry store and a token hasher.

`InMemoryStore` keeps the semantics of `SqliteStore` (the contract suite in
`tests/integration/test_store_contract.py` runs against both), so unit tests of the use cases
learn what the real store would do, without a file.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from authz_service.core.errors import Aborted, AlreadyExists, NotFound
from authz_service.core.model import Entry, State
from authz_service.core.ports import Cursor


class InMemoryStore:
    """`EntryStore` in a dict. Thread-safe: the use cases read on the event loop and write on a
    writer thread, as they do with the real store."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._retired: list[tuple[int, str]] = []  # (lookup tag, verifier)
        self._lock = threading.Lock()
        self.closed = False

    def add(self, entry: Entry) -> None:
        """Insert a new entry; AlreadyExists if its id, or its subject among unrevoked entries,
        is taken (a revoked entry may share a subject, as the partial unique index allows)."""
        with self._lock:
            taken = entry.id in self._entries or (
                entry.revoke_time is None and self._unrevoked(entry.subject) is not None
            )
            if taken:
                raise AlreadyExists("subject: an unrevoked entry already has this subject")
            self._entries[entry.id] = entry

    def get(self, entry_id: str) -> Entry:
        """The entry with this id; NotFound if there is none."""
        with self._lock:
            try:
                return self._entries[entry_id]
            except KeyError:
                raise NotFound(entry_id) from None

    def find_subject(self, subject: str) -> Entry | None:
        """The unrevoked entry with this subject, if any."""
        with self._lock:
            return self._unrevoked(subject)

    def find_tag(self, tag: int) -> list[Entry]:
        """Every entry, revoked ones included, whose token has this lookup tag."""
        with self._lock:
            return [e for e in self._entries.values() if e.lookup_tag == tag]

    def replace(self, entry: Entry) -> None:
        """Write `entry` over revision `entry.revision - 1`; NotFound or Aborted otherwise.

        Every field but `last_used_time` (owned by `record_use`) and the token (owned by
        `rotate`) is written, as the SQLite store does. A write that would leave two unrevoked
        entries with one subject raises AlreadyExists (as the SQLite unique index does).
        """
        self._write_over(entry, rotate=False)

    def rotate(self, entry: Entry) -> None:
        """`replace` with the entry's new token; the old verifier is retired."""
        self._write_over(entry, rotate=True)

    def _write_over(self, entry: Entry, *, rotate: bool) -> None:
        with self._lock:
            current = self._entries.get(entry.id)
            if current is None:
                raise NotFound(entry.id)
            if current.revision != entry.revision - 1:
                raise Aborted("etag: the entry changed since it was read; read it again")
            holder = self._unrevoked(entry.subject) if entry.revoke_time is None else None
            if holder is not None and holder.id != entry.id:
                raise AlreadyExists("subject: an unrevoked entry already has this subject")
            if rotate:
                self._retired.append((current.lookup_tag, current.verifier))
            else:
                entry = replace(entry, verifier=current.verifier, lookup_tag=current.lookup_tag)
            self._entries[entry.id] = replace(entry, last_used_time=current.last_used_time)

    def all_tags(self) -> set[int]:
        """The lookup tag of every entry, revoked ones included."""
        with self._lock:
            return {e.lookup_tag for e in self._entries.values()}

    def find_retired(self, tag: int) -> list[str]:
        """Verifiers of rotated-away tokens with this lookup tag."""
        with self._lock:
            return [verifier for retired_tag, verifier in self._retired if retired_tag == tag]

    def replace_verifier(self, entry_id: str, old: str, new: str) -> None:
        """Swap the verifier if it is still `old`; silently nothing otherwise."""
        with self._lock:
            current = self._entries.get(entry_id)
            if current is not None and current.verifier == old:
                self._entries[entry_id] = replace(current, verifier=new)

    def list_entries(self, after: Cursor | None, limit: int, include_revoked: bool) -> list[Entry]:
        """Up to `limit` entries ordered by (create_time, id), strictly after `after`."""
        with self._lock:
            ordered = sorted(self._entries.values(), key=lambda e: (e.create_time, e.id))
        return [
            e
            for e in ordered
            if (after is None or (e.create_time, e.id) > after)
            and (include_revoked or e.revoke_time is None)
        ][:limit]

    def record_use(self, last_used: Mapping[str, datetime]) -> None:
        """Move `last_used_time` forward (never back); unknown ids are ignored."""
        with self._lock:
            for entry_id, when in last_used.items():
                current = self._entries.get(entry_id)
                if current is None:
                    continue
                if current.last_used_time is None or when > current.last_used_time:
                    self._entries[entry_id] = replace(current, last_used_time=when)

    def count_by_state(self, now: datetime) -> dict[State, int]:
        """Entries by state at `now`."""
        counts = dict.fromkeys(State, 0)
        with self._lock:
            for entry in self._entries.values():
                counts[entry.state(now)] += 1
        return counts

    def close(self) -> None:
        """Nothing to release; remembered so tests can see it was called."""
        self.closed = True

    def snapshot(self) -> tuple[dict[str, Entry], list[tuple[int, str]]]:
        """A copy of every stored entry by id and of the retired verifiers, to assert that a
        refused call wrote nothing."""
        with self._lock:
            return dict(self._entries), list(self._retired)

    def _unrevoked(self, subject: str) -> Entry | None:
        return next(
            (e for e in self._entries.values() if e.subject == subject and e.revoke_time is None),
            None,
        )


class FakeHasher:
    """`Hasher` that is fast but keeps the shape of the real one.

    Verifiers look like `fake$v<version>$<salt>$<sha256(salt + token)>`: salted (two hashes of
    one token differ), never the token, and checkable without the token's plaintext. Raising
    `version` makes older verifiers report `needs_rehash`, as raising argon2 parameters does.
    """

    def __init__(self, version: int = 1) -> None:
        self.version = version
        self._salts = itertools.count(1)
        self._lock = threading.Lock()
        self._verify_calls = 0
        self._hash_calls = 0

    @property
    def verify_calls(self) -> int:
        """How many times `verify` ran (the stand-in for argon2 work)."""
        with self._lock:
            return self._verify_calls

    @property
    def hash_calls(self) -> int:
        """How many verifiers `hash` made."""
        with self._lock:
            return self._hash_calls

    def hash(self, token: str) -> str:
        """A new salted verifier for `token`."""
        with self._lock:
            self._hash_calls += 1
            salt = f"{next(self._salts):08x}"
        return f"fake$v{self.version}${salt}${_digest(salt, token)}"

    def verify(self, verifier: str, token: str) -> bool:
        """Whether `token` matches `verifier`; malformed verifiers match nothing."""
        with self._lock:
            self._verify_calls += 1
        parts = verifier.split("$")
        if len(parts) != 4 or parts[0] != "fake":
            return False
        return hmac.compare_digest(parts[3], _digest(parts[2], token))

    def needs_rehash(self, verifier: str) -> bool:
        """Whether `verifier` was made at an older `version` than the current one."""
        return not verifier.startswith(f"fake$v{self.version}$")


def _digest(salt: str, token: str) -> str:
    return hashlib.sha256((salt + token).encode("utf-8", "surrogatepass")).hexdigest()
