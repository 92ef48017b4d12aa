"""Token verifiers as argon2id PHC strings (argon2-cffi).

Parameters are read back from each hash, so they can be raised later: a verifier made with
weaker ones reports `needs_rehash` and is replaced on the next successful check.
"""

from __future__ import annotations

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

# 19 MiB, 3 passes, 1 lane: about 30 ms per verify on the 2-core machines this runs on
# (measured; docs/tokens.md explains the choice). Memory stays at or above OWASP's 19 MiB floor.
TIME_COST = 3
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1


class Argon2Hasher:
    """`Hasher` backed by argon2id."""

    def __init__(
        self,
        time_cost: int = TIME_COST,
        memory_cost: int = MEMORY_COST_KIB,
        parallelism: int = PARALLELISM,
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )

    def hash(self, token: str) -> str:
        """A fresh salted argon2id verifier for `token`."""
        return self._hasher.hash(token)

    def verify(self, verifier: str, token: str) -> bool:
        """Whether `token` matches `verifier` (argon2 compares in constant time)."""
        try:
            return self._hasher.verify(verifier, token)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, verifier: str) -> bool:
        """Whether `verifier` used other parameters than this hasher's."""
        return self._hasher.check_needs_rehash(verifier)
