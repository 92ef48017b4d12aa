"""Keyed digests of tokens (DESIGN section 6): the stored lookup tag and the cache key.

The lookup tag is the first 4 bytes of HMAC-SHA256(server key, token): enough to narrow Check
to the one or few entries worth an argon2 verify, too short to let a stolen database test
guesses. It is computed only when a token is not in the cache.

The cache key of a verified token is keyed BLAKE2b-256 under a key derived from the server
key: a full-length MAC like the HMAC, never persisted, computed on every warm Check, where it
measured cheaper than the HMAC (see the README).

Check computes both through `TokenDigests`, which hashes each key's first block once, at
start, and copies that state per token: half the hashing, and none of OpenSSL's per-call
algorithm lookup.
"""

from __future__ import annotations

import hashlib
import hmac

TAG_BYTES = 4
_SHA256_BLOCK = 64


def lookup_tag(key: bytes, token: str) -> int:
    """The stored lookup tag: HMAC-SHA256(key, token) cut to 4 bytes, as an integer."""
    digest = hmac.digest(key, token.encode("utf-8", "surrogatepass"), "sha256")
    return int.from_bytes(digest[:TAG_BYTES], "big")


class TokenDigests:
    """A server key's lookup tag and cache key of tokens, with the keyed states computed once.

    The HMAC keeps the inner and outer SHA-256 states after hashing the padded key, the
    precomputation RFC 2104 (section 4) describes; `lookup_tag` above is the reference it
    must agree with.
    """

    __slots__ = ("_cache", "_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        # HMAC's own rule: a key longer than a block is hashed first.
        block_key = hashlib.sha256(key).digest() if len(key) > _SHA256_BLOCK else key
        padded = block_key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
        # Domain-separated from the lookup tag: the cache key's own key.
        secret = hmac.digest(key, b"authz verified-token cache", "sha256")
        self._cache = hashlib.blake2b(key=secret, digest_size=32)

    def cache_key(self, token: str) -> bytes:
        """Keyed BLAKE2b-256 of the token: the key of the verified-token cache."""
        state = self._cache.copy()
        state.update(token.encode("utf-8", "surrogatepass"))
        return state.digest()

    def lookup_tag(self, token: str) -> int:
        """The same value as `lookup_tag(key, token)`."""
        inner = self._inner.copy()
        inner.update(token.encode("utf-8", "surrogatepass"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return int.from_bytes(outer.digest()[:TAG_BYTES], "big")
