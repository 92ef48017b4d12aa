"""Revoking entries: denied on the very next Check, kept for audit, and refused when malformed."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from datetime import timedelta

import pytest

from admin_world import (
    KEY,
    OTHER_TOKEN,
    ROOT,
    T0,
    TOKEN,
    WAIT_SECONDS,
    World,
    fields_of,
    refused,
    run,
    until,
)
from authz_service.core.changes import Change, ChangeKind, Event
from authz_service.core.decision import Decision
from authz_service.core.errors import InvalidArgument, NotFound
from authz_service.core.model import Entry, State
from authz_service.core.tokens import lookup_tag
from authz_service.usecases import EntryChange


def test_created_and_rotated_tokens_are_found_by_a_checker_that_started_without_their_tags(
    world: World,
) -> None:
    # Started before they existed, the checker answers a token with an unknown tag from memory
    # alone: the events of the create and the rotation must teach it the new tags.
    tags = world.checker.tokens.known_tags
    assert lookup_tag(KEY, TOKEN) not in tags
    assert lookup_tag(KEY, OTHER_TOKEN) not in tags

    async def scenario() -> tuple[Decision, Decision, Decision]:
        created = await world.create("catalog-sync", TOKEN)
        first = await world.check(TOKEN)
        await world.admin.update(ROOT, EntryChange(created.id, created.etag, new_token=OTHER_TOKEN))
        return first, await world.check(OTHER_TOKEN), await world.check(TOKEN)

    first, rotated, old = run(scenario())
    assert first.allowed
    assert rotated.allowed
    assert old.reason == "unknown_token"


def test_a_revoke_cancelled_mid_write_still_denies_the_next_check(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    real_replace = world.store.replace

    def held_replace(entry: Entry, change: Change | None = None) -> Event:
        started.set()
        assert release.wait(WAIT_SECONDS)
        return real_replace(entry, change)

    async def scenario() -> tuple[Decision, Decision]:
        created = await world.create("catalog-sync", TOKEN)
        assert (await world.check(TOKEN)).allowed  # now cached
        verifies, head = world.hasher.verify_calls, world.store.head()
        # Hold the revoke's write on the writer thread, and cancel the call while it runs.
        monkeypatch.setattr(world.store, "replace", held_replace)
        revoking = asyncio.create_task(world.admin.revoke(ROOT, created.id, "leaked"))
        assert await asyncio.to_thread(started.wait, WAIT_SECONDS)
        revoking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await revoking
        assert world.checker.follower.applied == head
        release.set()
        # The shielded write commits, and its event is applied to this process's cache with
        # no Check asking: the next Check finds nothing new in the store and trusts the cache.
        await until(lambda: world.checker.follower.applied > head, "the revoke is applied")
        assert [e.kind for e in world.store.events()[head:]] == [ChangeKind.REVOKED]
        assert world.store.get(created.id).revoke_time is not None
        assert world.store.version() == world.checker.follower.seen
        decisions = await world.check(TOKEN), await world.check(TOKEN)
        assert world.hasher.verify_calls == verifies
        return decisions

    first, second = run(scenario())
    assert (first.allowed, first.reason) == (False, "revoked")
    assert second.reason == "revoked"


def test_revoke_denies_the_token_on_the_very_next_check(world: World) -> None:
    async def scenario() -> tuple[Entry, Entry, Decision]:
        created = await world.create("catalog-sync", TOKEN)
        assert (await world.check(TOKEN)).allowed
        verifies = world.hasher.verify_calls
        world.clock.advance(10)
        revoked = await world.admin.revoke(ROOT, created.id, "leaked in a log")
        decision = await world.check(TOKEN)
        assert world.hasher.verify_calls == verifies  # answered from the refreshed cache
        return created, revoked, decision

    created, revoked, decision = run(scenario())
    assert (decision.allowed, decision.http_status, decision.reason) == (False, 401, "revoked")
    assert revoked == replace(
        created,
        revoke_time=T0 + timedelta(seconds=10),
        revoke_reason="leaked in a log",
        update_time=T0 + timedelta(seconds=10),
        revision=2,
        last_used_time=revoked.last_used_time,
        etag=revoked.etag,
    )
    assert revoked.etag != created.etag
    assert revoked.last_used_time is not None  # the check before the revoke, shown at once
    assert revoked.state(world.clock()) == State.REVOKED
    assert replace(world.store.get(created.id), last_used_time=revoked.last_used_time) == revoked


def test_revoking_a_revoked_entry_changes_nothing(world: World) -> None:
    async def scenario() -> tuple[Entry, Entry]:
        created = await world.create("catalog-sync", TOKEN)
        first = await world.admin.revoke(ROOT, created.id, "first reason")
        before = world.store.snapshot()
        world.clock.advance(60)
        again = await world.admin.revoke(ROOT, created.id, "second reason")
        assert world.store.snapshot() == before
        return first, again

    first, again = run(scenario())
    assert again == first
    assert again.revoke_reason == "first reason"


def test_revoking_an_unknown_entry_is_not_found(world: World) -> None:
    error = run(refused(world, world.admin.revoke(ROOT, "no-such-id", ""), NotFound))
    assert "no-such-id" not in str(error)


def test_a_revoke_without_id_or_with_a_bad_reason_is_invalid(world: World) -> None:
    error = run(refused(world, world.admin.revoke(ROOT, "", "line\nbreak"), InvalidArgument))
    assert set(fields_of(error)) == {"id", "reason"}
    assert fields_of(
        run(refused(world, world.admin.revoke(ROOT, "some-id", "r" * 513), InvalidArgument))
    ) == ["reason"]


def test_revoked_entries_stay_readable_and_listable_for_audit(world: World) -> None:
    async def scenario() -> tuple[Entry, Entry, list[Entry], list[Entry]]:
        created = await world.create("catalog-sync", TOKEN)
        revoked = await world.admin.revoke(ROOT, created.id, "")
        got = await world.admin.get(ROOT, created.id)
        active, _ = await world.admin.list(ROOT, 10, "", include_revoked=False)
        everything, _ = await world.admin.list(ROOT, 10, "", include_revoked=True)
        return revoked, got, active, everything

    revoked, got, active, everything = run(scenario())
    assert got == revoked
    assert revoked.id not in {e.id for e in active}
    assert revoked in everything
