"""Keyed digests of tokens: the cache key and the short lookup tag (DESIGN section 6).

The tag is the first 4 bytes of HMAC-SHA256(server key, token): enough to narrow Check to the
one or few entries worth an argon2 verify, too short to let a stolen database test guesses.
"""

from __future__ import annotations

import hashlib
import hmac

TAG_BYTES = 4


def token_digest(key: bytes, token: str) -> bytes:
    """HMAC-SHA256(key, token); never persisted, used as the verified-token cache key."""
    return hmac.new(key, token.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


def lookup_tag(digest: bytes) -> int:
    """The stored lookup tag of a token, from its digest: the first 4 bytes as an integer."""
    return int.from_bytes(digest[:TAG_BYTES], "big")
