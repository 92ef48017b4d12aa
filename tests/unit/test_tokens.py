"""The token digests Check computes with precomputed keyed states agree with the reference."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from authz_service.core.tokens import TokenDigests, lookup_tag

keys = st.binary(min_size=0, max_size=100)


# Lone surrogates too (hypothesis leaves them out of text): tokens are encoded with
# surrogatepass everywhere.
tokens = st.text(max_size=300) | st.sampled_from(["\udc80", "tok-\ud800-" + "a" * 40])


@given(key=keys, token=tokens)
def test_lookup_tag_matches_the_reference_hmac(key: bytes, token: str) -> None:
    digests = TokenDigests(key)
    # Twice: the copied states must leave the precomputed ones untouched.
    assert digests.lookup_tag(token) == digests.lookup_tag(token) == lookup_tag(key, token)


@given(token=st.text(max_size=300))
def test_lookup_tag_is_the_first_four_bytes_of_hmac_sha256(token: str) -> None:
    key = bytes(range(32))
    full = hmac.digest(key, token.encode("utf-8", "surrogatepass"), "sha256")
    assert lookup_tag(key, token) == int.from_bytes(full[:4], "big")


@given(key=keys, token=tokens)
def test_cache_key_is_keyed_blake2b_under_a_derived_key(key: bytes, token: str) -> None:
    secret = hmac.digest(key, b"authz verified-token cache", "sha256")
    expected = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), key=secret, digest_size=32)
    digests = TokenDigests(key)
    # Twice: the copied state must leave the precomputed one untouched.
    assert digests.cache_key(token) == digests.cache_key(token) == expected.digest()


def test_digests_depend_on_the_key() -> None:
    one, other = TokenDigests(b"\1" * 32), TokenDigests(b"\2" * 32)
    token = "tok_" + "a" * 40
    assert one.cache_key(token) != other.cache_key(token)
    assert one.lookup_tag(token) != other.lookup_tag(token)
