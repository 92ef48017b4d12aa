"""Keyed digests of tokens (DESIGN section 6): the stored lookup tag and the cache key.

The lookup tag is the first 4 bytes of HMAC-SHA256(server key, token): enough to narrow Check
to the one or few entries worth an argon2 verify, too short to let a stolen database test
guesses.

HMAC-SHA256 is two hashes: an inner SHA-256(key ^ ipad || token), then an outer
SHA-256(key ^ opad || inner). The cache key of a verified token is the inner one: a
full-length hash of the token under the secret key, never persisted, computed on every warm
Check. Only a token the cache does not hold goes on to the outer hash, for its tag. So a warm
Check costs one SHA-256 and a cold one the HMAC, where DESIGN's full HMAC as cache key would
cost a warm Check both (see docs/tokens.md).

`TokenDigests` hashes each padded key's block once, at start, and copies that state per token
(RFC 2104, section 4): half the hashing, and none of OpenSSL's per-call algorithm lookup. The
states are CPython's own SHA-256, the one hashlib falls back on without OpenSSL: copying one
is a single small allocation, where OpenSSL copies a context through its provider layer, code
that every warm Check in the server would run from cold caches (docs/performance.md).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
from collections.abc import Callable
from typing import Protocol

TAG_BYTES = 4
_SHA256_BLOCK = 64


class _Sha256(Protocol):
    def copy(self) -> _Sha256: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


def _builtin_sha256() -> Callable[[bytes], _Sha256]:
    """CPython's built-in SHA-256 (`_sha2` from 3.12, `_sha256` before), else OpenSSL's."""
    for module in ("_sha2", "_sha256"):
        try:
            constructor: Callable[[bytes], _Sha256] = importlib.import_module(module).sha256
            constructor(b"")  # a build may ship the module but refuse it (a FIPS policy)
        except (ImportError, ValueError):
            continue
        return constructor
    return hashlib.sha256


_sha256 = _builtin_sha256()


# What the database keeps of the server key (DESIGN section 9): an HMAC of this label.
_FINGERPRINT_LABEL = b"authz-service server key fingerprint"


def key_fingerprint(key: bytes) -> str:
    """Names the key without revealing it: HMAC-SHA256 of a fixed label, hex."""
    return hmac.digest(key, _FINGERPRINT_LABEL, "sha256").hex()


def lookup_tag(key: bytes, token: str) -> int:
    """The stored lookup tag: HMAC-SHA256(key, token) cut to 4 bytes, as an integer."""
    digest = hmac.digest(key, token.encode("utf-8", "surrogatepass"), "sha256")
    return int.from_bytes(digest[:TAG_BYTES], "big")


class TokenDigests:
    """A server key's cache key and lookup tag of tokens, from the HMAC's precomputed states.

    `lookup_tag` above is the reference `tag_of(cache_key(token))` must agree with.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        # HMAC's own rule: a key longer than a block is hashed first.
        block_key = hashlib.sha256(key).digest() if len(key) > _SHA256_BLOCK else key
        padded = block_key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = _sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = _sha256(bytes(b ^ 0x5C for b in padded))

    def cache_key(self, token: str) -> bytes:
        """The HMAC's inner hash of the token: the key of the verified-token cache."""
        state = self._inner.copy()
        state.update(token.encode("utf-8", "surrogatepass"))
        return state.digest()

    def tag_of(self, cache_key: bytes) -> int:
        """The lookup tag of the token whose `cache_key` this is: the HMAC's outer hash."""
        state = self._outer.copy()
        state.update(cache_key)
        return int.from_bytes(state.digest()[:TAG_BYTES], "big")
