"""The token digests Check computes with precomputed keyed states agree with the reference."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import importlib.util

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from authz_service.core import tokens as tokens_module
from authz_service.core.tokens import TokenDigests, lookup_tag

keys = st.binary(min_size=0, max_size=100)


# Lone surrogates too (hypothesis leaves them out of text): tokens are encoded with
# surrogatepass everywhere.
tokens = st.text(max_size=300) | st.sampled_from(["\udc80", "tok-\ud800-" + "a" * 40])


# HMAC's key rule at its edges, every run: empty, one block, one byte over, hashed first.
@given(key=keys, token=tokens)
@example(key=b"", token="tok-" + "a" * 40)
@example(key=b"k" * 64, token="tok-" + "a" * 40)
@example(key=b"k" * 65, token="tok-" + "a" * 40)
@example(key=b"k" * 200, token="tok-" + "a" * 40)
def test_the_tag_finished_from_the_cache_key_is_the_reference_tag(key: bytes, token: str) -> None:
    digests = TokenDigests(key)
    # Twice: the copied states must leave the precomputed ones untouched.
    first = digests.tag_of(digests.cache_key(token))
    assert first == digests.tag_of(digests.cache_key(token)) == lookup_tag(key, token)


@given(token=st.text(max_size=300))
def test_lookup_tag_is_the_first_four_bytes_of_hmac_sha256(token: str) -> None:
    key = bytes(range(32))
    full = hmac.digest(key, token.encode("utf-8", "surrogatepass"), "sha256")
    assert lookup_tag(key, token) == int.from_bytes(full[:4], "big")


@given(key=keys, token=tokens)
@example(key=b"k" * 64, token="tok-" + "a" * 40)
@example(key=b"k" * 65, token="tok-" + "a" * 40)
def test_cache_key_is_the_hmac_inner_hash(key: bytes, token: str) -> None:
    block_key = hashlib.sha256(key).digest() if len(key) > 64 else key
    inner_pad = bytes(b ^ 0x36 for b in block_key.ljust(64, b"\0"))
    encoded = token.encode("utf-8", "surrogatepass")
    expected = hashlib.sha256(inner_pad + encoded).digest()
    assert TokenDigests(key).cache_key(token) == expected
    # And the reference HMAC is the outer hash over it.
    outer_pad = bytes(b ^ 0x5C for b in block_key.ljust(64, b"\0"))
    assert hashlib.sha256(outer_pad + expected).digest() == hmac.digest(key, encoded, "sha256")


def test_digests_depend_on_the_key() -> None:
    one, other = TokenDigests(b"\1" * 32), TokenDigests(b"\2" * 32)
    token = "tok_" + "a" * 40
    assert one.cache_key(token) != other.cache_key(token)
    assert one.tag_of(one.cache_key(token)) != other.tag_of(other.cache_key(token))


def _has_builtin_sha256() -> bool:
    return any(importlib.util.find_spec(name) for name in ("_sha2", "_sha256"))


@pytest.mark.skipif(not _has_builtin_sha256(), reason="a Python build without it")
def test_the_digests_use_cpythons_own_sha256_where_there_is_one() -> None:
    assert tokens_module._sha256 is not hashlib.sha256


def test_without_a_builtin_sha256_the_digests_use_hashlibs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> object:
        raise ImportError(name)

    monkeypatch.setattr(importlib, "import_module", missing)
    assert tokens_module._builtin_sha256() is hashlib.sha256
