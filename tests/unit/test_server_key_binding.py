"""The server key is bound to its database: the fingerprint kept, and what refuses to start."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from authz_service.core.model import Entry
from authz_service.core.tokens import key_fingerprint
from authz_service.usecases.server_key import WrongServerKey, bind_server_key
from fakes import InMemoryStore, memory_port

KEY, OTHER = b"k" * 32, b"o" * 32
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _bind(store: InMemoryStore, key: bytes, *, created: bool) -> None:
    asyncio.run(bind_server_key(memory_port(store), key, created=created))


def _with_an_entry() -> InMemoryStore:
    store = InMemoryStore()
    store.add(
        Entry(
            id="e1",
            subject="s",
            description="",
            restrictions=(),
            unrestricted=True,
            verifier="v",
            lookup_tag=1,
            create_time=NOW,
            update_time=NOW,
        )
    )
    return store


def test_the_first_key_is_kept_as_a_fingerprint_that_is_not_the_key() -> None:
    store = InMemoryStore()
    _bind(store, KEY, created=True)
    assert store.key_fingerprint() == key_fingerprint(KEY)
    assert KEY.hex() not in (store.key_fingerprint() or "")
    _bind(store, KEY, created=False)  # the same key again starts


@pytest.mark.parametrize("created", [True, False])
def test_another_key_is_refused(created: bool) -> None:
    store = InMemoryStore()
    _bind(store, KEY, created=True)
    with pytest.raises(WrongServerKey, match="restore the server key file"):
        _bind(store, OTHER, created=created)
    assert store.key_fingerprint() == key_fingerprint(KEY)


def test_a_database_of_entries_without_a_fingerprint_takes_the_key_it_has_been_using() -> None:
    store = _with_an_entry()  # made before fingerprints were kept
    _bind(store, KEY, created=False)
    assert store.key_fingerprint() == key_fingerprint(KEY)


def test_a_new_key_for_a_database_that_holds_entries_is_refused_and_nothing_is_kept() -> None:
    store = _with_an_entry()
    with pytest.raises(WrongServerKey, match="a new key file was just created"):
        _bind(store, KEY, created=True)
    assert store.key_fingerprint() is None
