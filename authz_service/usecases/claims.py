"""Taking a token for an entry: free (held by no entry, never rotated away) across processes.

The 4-byte lookup tag narrows the candidates; an argon2 verify against each says whether the
token is one of them. The verifies run before the write, outside its transaction; the write
then commits only if the verifiers stored under the tag are still the ones verified (a
`Claim`), so of two processes taking one token at once exactly one succeeds. The loser verifies
the newcomers and finds its token taken.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from authz_service.core.changes import Claim, ClaimChanged
from authz_service.core.errors import AlreadyExists, Unavailable
from authz_service.core.model import Entry
from authz_service.core.ports import EntryStore, Hasher
from authz_service.core.tokens import lookup_tag

from .hashing import HashQueue

T = TypeVar("T")
# Creates and rotations waiting for the token lock at once; more are UNAVAILABLE.
MAX_CLAIMS_WAITING = 64
# How often a claim is tried again when other writes keep adding verifiers under its tag.
_CLAIM_ATTEMPTS = 5


class TokenClaims:
    """Claims of new tokens, one at a time in this process (other processes: see `Claim`)."""

    def __init__(self, store: EntryStore, hasher: Hasher, hashing: HashQueue, key: bytes) -> None:
        self._store = store
        self._hasher = hasher
        self._hashing = hashing
        self._key = key
        # Serialises this process's claims, so two of its own never race for one token.
        self._lock = asyncio.Lock()
        self._waiting = 0

    async def holder(self, token: str, peer: str) -> Entry | None:
        """The entry, revoked or not, whose token this is; one argon2 verify per tag match."""
        for entry in await self._store.find_tag(lookup_tag(self._key, token)):
            if await self._hashing.run(peer, self._hasher.verify, entry.verifier, token):
                return entry
        return None

    async def retired(self, token: str, peer: str) -> bool:
        """Whether `token` was once an entry's and was rotated away."""
        for verifier in await self._store.find_retired(lookup_tag(self._key, token)):
            if await self._hashing.run(peer, self._hasher.verify, verifier, token):
                return True
        return False

    async def take(
        self, token: str, field: str, peer: str, write: Callable[[str, Claim], Awaitable[T]]
    ) -> T:
        """Hash a free `token` and `write(verifier, claim)`; AlreadyExists (naming no entry)
        when an entry holds it or held it: a token taken out of service never works again.

        UNAVAILABLE when too many claims wait here, or when other writes keep changing the
        token's tag while this one tries.
        """
        async with self._claiming():
            tag = lookup_tag(self._key, token)
            checked: set[str] = set()
            verifier = ""
            for _ in range(_CLAIM_ATTEMPTS):
                await self._check_free(token, tag, field, peer, checked)
                verifier = verifier or await self._hashing.run(peer, self._hasher.hash, token)
                try:
                    return await write(verifier, Claim(tag, frozenset(checked)))
                except ClaimChanged:
                    continue  # verifiers came under this tag meanwhile: check them too
        raise Unavailable("other writes keep claiming tokens like this one; retry shortly")

    async def _check_free(
        self, token: str, tag: int, field: str, peer: str, checked: set[str]
    ) -> None:
        """AlreadyExists if a stored verifier under `tag` not in `checked` is `token`'s; adds
        the ones that are not to `checked`."""
        entries = await self._store.find_tag(tag)
        retired = await self._store.find_retired(tag)
        for verifier in [e.verifier for e in entries] + retired:
            if verifier in checked:
                continue
            if await self._hashing.run(peer, self._hasher.verify, verifier, token):
                raise AlreadyExists(f"{field}: already in use or retired (tokens are never reused)")
            checked.add(verifier)

    @contextlib.asynccontextmanager
    async def _claiming(self) -> AsyncIterator[None]:
        """The claim lock; Unavailable when too many wait for it (every admin's creates and
        rotations take turns on it)."""
        if self._waiting >= MAX_CLAIMS_WAITING:
            raise Unavailable("too many creates and rotations are in progress; retry shortly")
        self._waiting += 1
        try:
            async with self._lock:
                yield
        finally:
            self._waiting -= 1
