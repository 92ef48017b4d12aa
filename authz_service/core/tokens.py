"""Keyed digests of tokens (DESIGN section 6): the stored lookup tag and the cache key.

The lookup tag is the first 4 bytes of HMAC-SHA256(server key, token): enough to narrow Check
to the one or few entries worth an argon2 verify, too short to let a stolen database test
guesses. It is computed only when a token is not in the cache.

The cache key of a verified token is keyed BLAKE2b-256 under a key derived from the server
key: a full-length MAC like the HMAC, never persisted, but computed on every warm Check, where
it measured several times cheaper than OpenSSL's HMAC in a busy server (see the README).
"""

from __future__ import annotations

import hashlib
import hmac

TAG_BYTES = 4


def lookup_tag(key: bytes, token: str) -> int:
    """The stored lookup tag: HMAC-SHA256(key, token) cut to 4 bytes, as an integer."""
    digest = hmac.digest(key, token.encode("utf-8", "surrogatepass"), "sha256")
    return int.from_bytes(digest[:TAG_BYTES], "big")


def cache_secret(key: bytes) -> bytes:
    """The key of the verified-token cache, derived from the server key (domain-separated)."""
    return hmac.digest(key, b"authz verified-token cache", "sha256")


def cache_key(secret: bytes, token: str) -> bytes:
    """Keyed BLAKE2b-256 of the token under `cache_secret(...)`: the verified-token cache key."""
    return hashlib.blake2b(
        token.encode("utf-8", "surrogatepass"), key=secret, digest_size=32
    ).digest()
