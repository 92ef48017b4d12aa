"""Reading entries: Get, and List in pages bounded by count and by bytes, with signed page
tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from datetime import timedelta

from admin_world import OTHER_TOKEN, ROOT, T0, TOKEN, World, fields_of, refused, run
from authz_service.api.convert import entry_message
from authz_service.core.errors import InvalidArgument, NotFound
from authz_service.core.model import Entry, Restriction, to_micros
from authz_service.usecases.admin import PAGE_BYTES, listed_size

# Get


def test_get_returns_the_entry_with_a_use_not_yet_flushed(world: World) -> None:
    async def scenario() -> tuple[Entry, Entry, Entry]:
        created = await world.create("catalog-sync", TOKEN)
        before_use = await world.admin.get(ROOT, created.id)
        world.clock.advance(42)
        await world.check(TOKEN)
        return created, before_use, await world.admin.get(ROOT, created.id)

    created, before_use, after_use = run(scenario())
    assert before_use == created
    assert after_use.last_used_time == T0 + timedelta(seconds=42)
    assert world.store.get(created.id).last_used_time is None  # not flushed yet


def test_get_of_an_unknown_id_is_not_found_and_of_no_id_invalid(world: World) -> None:
    run(refused(world, world.admin.get(ROOT, "no-such-id"), NotFound))
    error = run(refused(world, world.admin.get(ROOT, ""), InvalidArgument))
    assert fields_of(error) == ["id"]


# List


def list_all(world: World, page_size: int, include_revoked: bool) -> list[list[Entry]]:
    async def pages() -> list[list[Entry]]:
        found: list[list[Entry]] = []
        token = ""
        while True:
            page, token = await world.admin.list(ROOT, page_size, token, include_revoked)
            found.append(page)
            if not token:
                return found

    return run(pages())


def create_many(world: World, count: int) -> list[Entry]:
    async def scenario() -> list[Entry]:
        created = []
        for n in range(count):
            if n % 3 == 0:  # some entries share a creation time: ids break the tie
                world.clock.advance(1)
            created.append(await world.create(f"job-{n}", f"job-token-{n:04d}"))
        return created

    return run(scenario())


def test_listing_pages_through_every_entry_once_in_creation_order(world: World) -> None:
    assert world.root is not None
    created = create_many(world, 7)
    pages = list_all(world, 3, include_revoked=False)
    assert [len(p) for p in pages] == [3, 3, 2]
    listed = [e.id for page in pages for e in page]
    expected = sorted([world.root, *created], key=lambda e: (e.create_time, e.id))
    assert listed == [e.id for e in expected]
    assert [e.create_time for page in pages for e in page] == [e.create_time for e in expected]


def test_a_page_exactly_filled_by_the_last_entries_ends_the_listing(world: World) -> None:
    create_many(world, 5)
    pages = list_all(world, 3, include_revoked=False)
    assert [len(p) for p in pages] == [3, 3]


def test_listing_without_revoked_entries_skips_them_across_pages(world: World) -> None:
    created = create_many(world, 6)
    for entry in created[::2]:
        run(world.admin.revoke(ROOT, entry.id, ""))
    assert world.root is not None
    active = [e.id for page in list_all(world, 2, include_revoked=False) for e in page]
    everything = [e.id for page in list_all(world, 2, include_revoked=True) for e in page]
    assert sorted(active) == sorted([world.root.id, *(e.id for e in created[1::2])])
    assert sorted(everything) == sorted([world.root.id, *(e.id for e in created)])


def test_a_page_size_of_zero_means_the_default(world: World) -> None:
    create_many(world, 4)
    page, next_token = run(world.admin.list(ROOT, 0, "", include_revoked=False))
    assert len(page) == 5
    assert next_token == ""


def test_a_negative_page_size_is_invalid(world: World) -> None:
    error = run(
        refused(world, world.admin.list(ROOT, -1, "", include_revoked=False), InvalidArgument)
    )
    assert fields_of(error) == ["page_size"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_page_tokens(real: str) -> list[str]:
    payload, mac = real.split(".")
    cursor = json.dumps([to_micros(T0), "id-root-admin"]).encode()
    wrong_key = hmac.new(b"another server's key", b"authz page token", hashlib.sha256).digest()
    return [
        "garbage",
        "a.b",
        "a.b.c",
        ".",
        "é.é",
        "e30.e30",
        _b64(cursor) + "." + mac,  # a cursor of the caller's choosing under a real signature
        _b64(cursor) + "." + _b64(hmac.new(wrong_key, cursor, hashlib.sha256).digest()[:16]),
        payload + "." + mac[:-2],
        payload + "." + mac + "AA",
        real + ".",
        payload,
    ]


def test_a_forged_or_garbage_page_token_is_invalid_argument(world: World) -> None:
    create_many(world, 4)
    _, real = run(world.admin.list(ROOT, 2, "", include_revoked=False))
    assert real

    async def scenario() -> None:
        for forged in forged_page_tokens(real):
            error = await refused(
                world, world.admin.list(ROOT, 2, forged, include_revoked=False), InvalidArgument
            )
            assert fields_of(error) == ["page_token"], forged

    run(scenario())


def test_a_page_token_is_accepted_again_and_resumes_at_the_same_place(world: World) -> None:
    create_many(world, 4)

    async def scenario() -> tuple[list[Entry], list[Entry]]:
        _, token = await world.admin.list(ROOT, 2, "", include_revoked=False)
        first, _ = await world.admin.list(ROOT, 2, token, include_revoked=False)
        again, _ = await world.admin.list(ROOT, 2, token, include_revoked=False)
        return first, again

    first, again = run(scenario())
    assert first == again
    assert len(first) == 2


# Pages bounded by bytes


def large_restrictions(n: int) -> tuple[Restriction, ...]:
    return tuple(
        Restriction(
            f"p{n}-{r}".ljust(64, "x"),
            tuple(f"perm.n{n}r{r}p{p}".ljust(128, "x") for p in range(64)),
        )
        for r in range(64)
    )


def test_a_listed_size_is_never_below_the_encoded_size(world: World) -> None:
    small = world.seed(TOKEN, "small", (Restriction("catalog"),))
    large = replace(
        world.seed(OTHER_TOKEN, "large", large_restrictions(0)),
        description="é" * 1024,
        revoke_reason="r" * 512,
        revoke_time=T0,
        expire_time=T0,
        last_used_time=T0,
    )
    for entry in (small, large):
        assert listed_size(entry) >= entry_message(entry, T0).ByteSize()


def test_a_page_of_large_entries_stops_at_the_byte_bound_and_the_next_resumes(
    world: World,
) -> None:
    for n in range(12):
        world.seed(f"large-entry-token-{n:04d}", f"large-{n}", large_restrictions(n))

    async def scenario() -> list[list[Entry]]:
        pages, token = [], ""
        while True:
            page, token = await world.admin.list(ROOT, 1000, token, include_revoked=False)
            pages.append(page)
            if not token:
                return pages

    pages = run(scenario())
    assert len(pages) > 1
    for page in pages:
        assert page
        assert len(page) == 1 or sum(listed_size(e) for e in page) <= PAGE_BYTES
    listed = [e.subject for page in pages for e in page]
    assert sorted(listed) == sorted(["root-admin", *(f"large-{n}" for n in range(12))])
