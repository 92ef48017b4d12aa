"""Two processes over one store: races between them let exactly one write through, and each
process's Check follows the other's writes at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable

import pytest

from admin_world import (
    ANY_CATALOG,
    OTHER_TOKEN,
    ROOT,
    TOKEN,
    WAIT_SECONDS,
    World,
    Worlds,
    refused,
    run,
)
from authz_service.core.decision import Decision
from authz_service.core.errors import AlreadyExists, Unauthenticated
from authz_service.core.model import FULL_ADMIN_RESTRICTION, Entry
from authz_service.core.rules import RestrictionInput
from authz_service.usecases import EntryChange
from fakes import FakeHasher

RACE_ROUNDS = 20


class MeetingHasher(FakeHasher):
    """A FakeHasher whose new verifiers, while `meeting` is set, wait there for the other
    process's: both racing calls have checked the store before either one writes."""

    meeting: threading.Barrier | None = None

    def hash(self, token: str) -> str:
        meeting = self.meeting
        if meeting is not None:
            meeting.wait()
        return super().hash(token)


@pytest.fixture
def pair(worlds: Worlds) -> tuple[World, World]:
    """Two processes, each with its own store port, hasher, Checker and Admin, over one store
    (as two servers over one SQLite file), with one clock."""
    first = worlds.open(hasher=MeetingHasher())
    return first, worlds.open(first.store, clock=first.clock, hasher=MeetingHasher())


def meet(a: World, b: World, forced: bool) -> None:
    """Make the next hash of each process wait for the other's (`forced`), or let them run."""
    barrier = threading.Barrier(2, timeout=WAIT_SECONDS) if forced else None
    for world in (a, b):
        assert isinstance(world.hasher, MeetingHasher)
        world.hasher.meeting = barrier


async def one_wins(*calls: Awaitable[Entry]) -> Entry:
    """Run the calls at once: exactly one returns, every other raises AlreadyExists."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    won = [o for o in outcomes if isinstance(o, Entry)]
    assert len(won) == 1, outcomes
    assert [type(o) for o in outcomes if not isinstance(o, Entry)] == [AlreadyExists], outcomes
    return won[0]


def holders_of(world: World, token: str) -> list[str]:
    """The ids of the stored entries whose verifier is this token's."""
    return [
        e.id for e in world.store.snapshot()[0].values() if world.hasher.verify(e.verifier, token)
    ]


def test_two_processes_creating_one_token_at_once_let_exactly_one_through(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> None:
        for n in range(RACE_ROUNDS):
            token = f"raced-token-{n:04d}"
            head = a.store.head()
            meet(a, b, forced=n % 2 == 0)  # every other round, both check before either writes
            winner = await one_wins(a.create(f"job-a-{n}", token), b.create(f"job-b-{n}", token))
            meet(a, b, forced=False)
            assert holders_of(a, token) == [winner.id]
            assert [e.entry_id for e in a.store.events()[head:]] == [winner.id]
            assert (await a.check(token)).entry_id == winner.id
            assert (await b.check(token)).entry_id == winner.id

    run(scenario())


def test_two_processes_creating_one_subject_at_once_let_exactly_one_through(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> None:
        for n in range(RACE_ROUNDS):
            subject, tokens = f"job-{n}", (f"subject-race-a-{n:04d}", f"subject-race-b-{n:04d}")
            head = a.store.head()
            meet(a, b, forced=n % 2 == 0)
            winner = await one_wins(a.create(subject, tokens[0]), b.create(subject, tokens[1]))
            meet(a, b, forced=False)
            assert a.store.find_subject(subject) == winner
            assert [e.entry_id for e in a.store.events()[head:]] == [winner.id]
            won, lost = tokens if a.hasher.verify(winner.verifier, tokens[0]) else tokens[::-1]
            assert holders_of(a, lost) == []
            for world in (a, b):
                assert (await world.check(won)).entry_id == winner.id
                assert (await world.check(lost)).reason == "unknown_token"

    run(scenario())


def test_a_rotation_and_a_create_taking_one_token_at_once_let_exactly_one_through(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> None:
        for n in range(RACE_ROUNDS):
            old, token = f"old-token-{n:04d}", f"new-token-{n:04d}"
            target = await a.create(f"rotated-{n}", old)
            head = a.store.head()
            meet(a, b, forced=n % 2 == 0)
            winner = await one_wins(
                a.admin.update(ROOT, EntryChange(target.id, target.etag, new_token=token)),
                b.create(f"taker-{n}", token),
            )
            meet(a, b, forced=False)
            assert holders_of(a, token) == [winner.id]
            assert [e.entry_id for e in a.store.events()[head:]] == [winner.id]
            rotated = winner.id == target.id
            assert (a.store.get(target.id).verifier == target.verifier) is not rotated
            for world in (a, b):
                assert (await world.check(token)).entry_id == winner.id
                old_decision = await world.check(old)
                if rotated:
                    assert old_decision.reason == "unknown_token"
                else:
                    assert old_decision.entry_id == target.id

    run(scenario())


def test_a_create_on_one_process_is_allowed_by_the_others_very_next_check(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> tuple[Entry, Decision, Decision]:
        before = await b.check(TOKEN)  # a tag B does not know: answered from memory alone
        created = await a.create("catalog-sync", TOKEN)
        return created, before, await b.check(TOKEN)

    created, before, after = run(scenario())
    assert before.reason == "unknown_token"
    assert after.allowed
    assert (after.subject, after.entry_id) == ("catalog-sync", created.id)


def test_a_revoke_on_one_process_is_denied_by_the_others_very_next_check(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> Decision:
        created = await a.create("catalog-sync", TOKEN)
        assert (await b.check(TOKEN)).allowed  # now cached on B
        verifies = b.hasher.verify_calls
        await a.admin.revoke(ROOT, created.id, "leaked")
        decision = await b.check(TOKEN)
        assert b.hasher.verify_calls == verifies  # B's cache followed the revoke's event
        return decision

    decision = run(scenario())
    assert (decision.allowed, decision.http_status, decision.reason) == (False, 401, "revoked")


def test_narrowed_restrictions_on_one_process_are_in_force_on_the_others_very_next_check(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> tuple[Decision, Decision]:
        created = await a.create("catalog-sync", TOKEN, restrictions=[ANY_CATALOG])
        assert (await b.check(TOKEN)).allowed  # now cached on B
        verifies = b.hasher.verify_calls
        await a.admin.update(
            ROOT,
            EntryChange(
                created.id,
                created.etag,
                ["access_restrictions"],
                restrictions=[RestrictionInput("catalog", ["catalog.entity.read"])],
            ),
        )
        narrowed = await b.checker.check(TOKEN, "", "catalog", "catalog.entity.delete", 0)
        still = await b.checker.check(TOKEN, "", "catalog", "catalog.entity.read", 0)
        assert b.hasher.verify_calls == verifies
        return narrowed, still

    narrowed, still = run(scenario())
    assert (narrowed.http_status, narrowed.reason) == (403, "permission_not_allowed")
    assert still.allowed


def test_a_rotation_on_one_process_moves_the_others_very_next_check_to_the_new_token(
    pair: tuple[World, World],
) -> None:
    a, b = pair

    async def scenario() -> tuple[Decision, Decision]:
        created = await a.create("catalog-sync", TOKEN)
        assert (await b.check(TOKEN)).allowed  # the old token, cached on B
        await a.admin.update(ROOT, EntryChange(created.id, created.etag, new_token=OTHER_TOKEN))
        return await b.check(TOKEN), await b.check(OTHER_TOKEN)

    old, new = run(scenario())
    assert old.reason == "unknown_token"
    assert new.allowed


def test_an_admin_revoked_on_one_process_is_refused_on_the_others_next_call(
    pair: tuple[World, World],
) -> None:
    a, b = pair
    other = a.seed(OTHER_TOKEN, "other-admin", (FULL_ADMIN_RESTRICTION,))
    as_other = f"Bearer {OTHER_TOKEN}"

    async def scenario() -> Unauthenticated:
        await b.admin.get(as_other, other.id)  # warm in B's cache
        await a.admin.revoke(ROOT, other.id, "left the team")
        return await refused(b, b.create_as(as_other, "made-by-revoked", TOKEN), Unauthenticated)

    assert "revoked" in str(run(scenario()))
