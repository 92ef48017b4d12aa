"""argon2 work in turns by caller: a burst from one caller delays mostly itself."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from authz_service.core.errors import Unavailable
from authz_service.usecases.hashing import HashQueue

WAIT_SECONDS = 10


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2, thread_name_prefix="test-hash") as executor:
        yield executor


class Recorder:
    """A blocking job that records the order jobs ran in; the first one waits for `gate`."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.gate = threading.Event()
        self.started = threading.Event()
        self._lock = threading.Lock()

    def job(self, name: str) -> str:
        with self._lock:
            self.order.append(name)
        self.started.set()
        assert self.gate.wait(WAIT_SECONDS)
        return name


async def started(recorder: Recorder) -> None:
    assert await asyncio.to_thread(recorder.started.wait, WAIT_SECONDS)


def test_a_caller_with_one_job_goes_before_the_backlog_of_a_caller_with_many(
    pool: ThreadPoolExecutor,
) -> None:
    queue = HashQueue(pool, 1)
    recorder = Recorder()

    async def scenario() -> list[str]:
        burst = [
            asyncio.create_task(queue.run("ipv4:10.0.0.66", recorder.job, f"burst-{i}"))
            for i in range(50)
        ]
        await started(recorder)
        valid = asyncio.create_task(queue.run("ipv4:10.0.0.7", recorder.job, "valid"))
        await asyncio.sleep(0)
        recorder.gate.set()
        assert await valid == "valid"
        await asyncio.gather(*burst)
        return recorder.order

    order = asyncio.run(scenario())
    assert order.index("valid") == 1  # right after the job that held the thread
    assert sorted(order) == sorted(["valid", *(f"burst-{i}" for i in range(50))])


def test_idle_callers_go_first_and_callers_with_a_backlog_take_turns(
    pool: ThreadPoolExecutor,
) -> None:
    queue = HashQueue(pool, 1)
    recorder = Recorder()

    async def scenario() -> list[str]:
        first = asyncio.create_task(queue.run("a", recorder.job, "a0"))
        await started(recorder)
        rest = [
            asyncio.create_task(queue.run(caller, recorder.job, f"{caller}{i}"))
            for caller, i in [("a", 1), ("a", 2), ("b", 0), ("c", 0), ("b", 1)]
        ]
        await asyncio.sleep(0)
        recorder.gate.set()
        await asyncio.gather(first, *rest)
        return recorder.order

    # a was running when it queued more, so b and c (idle until then) go first.
    assert asyncio.run(scenario()) == ["a0", "b0", "c0", "a1", "b1", "a2"]


def test_a_caller_with_too_many_jobs_waiting_is_refused_and_others_are_not(
    pool: ThreadPoolExecutor,
) -> None:
    queue = HashQueue(pool, 1, max_waiting_per_caller=3)
    recorder = Recorder()

    async def scenario() -> None:
        running = asyncio.create_task(queue.run("a", recorder.job, "a0"))
        await started(recorder)
        waiting = [asyncio.create_task(queue.run("a", recorder.job, f"a{i}")) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        with pytest.raises(Unavailable):
            await queue.run("a", recorder.job, "a4")
        other = asyncio.create_task(queue.run("b", recorder.job, "b0"))
        await asyncio.sleep(0)
        assert queue.waiting == 4
        recorder.gate.set()
        await asyncio.gather(running, other, *waiting)
        assert queue.waiting == 0

    asyncio.run(scenario())


def test_a_waiter_that_gives_up_is_skipped_and_keeps_no_thread(pool: ThreadPoolExecutor) -> None:
    queue = HashQueue(pool, 1)
    recorder = Recorder()

    async def scenario() -> list[str]:
        running = asyncio.create_task(queue.run("a", recorder.job, "running"))
        await started(recorder)
        gone = asyncio.create_task(queue.run("b", recorder.job, "gone"))
        kept = asyncio.create_task(queue.run("c", recorder.job, "kept"))
        await asyncio.sleep(0)
        gone.cancel()
        # The running job's waiter gives up too: its thread is still busy, so nothing else
        # may start until the job ends.
        running.cancel()
        await asyncio.sleep(0.05)
        assert recorder.order == ["running"]
        recorder.gate.set()
        assert await kept == "kept"
        return recorder.order

    assert asyncio.run(scenario()) == ["running", "kept"]


def test_an_error_in_a_job_reaches_its_waiter_and_the_queue_goes_on(
    pool: ThreadPoolExecutor,
) -> None:
    queue = HashQueue(pool, 1)

    def fail() -> None:
        raise ValueError("boom")

    async def scenario() -> int:
        with pytest.raises(ValueError, match="boom"):
            await queue.run("a", fail)
        return await queue.run("a", len, "four")

    assert asyncio.run(scenario()) == 4


def test_with_every_place_taken_the_longest_queue_makes_room_for_a_shorter_one(
    pool: ThreadPoolExecutor,
) -> None:
    queue = HashQueue(pool, 1, max_waiting_per_caller=10, max_waiting=4)
    recorder = Recorder()

    async def scenario() -> None:
        running = asyncio.create_task(queue.run("a", recorder.job, "a0"))
        await started(recorder)
        a_jobs = [asyncio.create_task(queue.run("a", recorder.job, f"a{i}")) for i in range(1, 5)]
        await asyncio.sleep(0)
        assert queue.waiting == 4
        newcomer = asyncio.create_task(queue.run("b", recorder.job, "b0"))
        await asyncio.sleep(0)
        assert queue.waiting == 4
        with pytest.raises(Unavailable):
            await a_jobs[-1]  # a's newest gave its place up
        recorder.gate.set()
        assert await newcomer == "b0"
        await asyncio.gather(running, *a_jobs[:-1])
        assert "a4" not in recorder.order

    asyncio.run(scenario())


def test_with_every_place_taken_by_equals_a_newcomer_with_as_many_is_refused(
    pool: ThreadPoolExecutor,
) -> None:
    queue = HashQueue(pool, 1, max_waiting_per_caller=10, max_waiting=2)
    recorder = Recorder()

    async def scenario() -> None:
        running = asyncio.create_task(queue.run("a", recorder.job, "a0"))
        await started(recorder)
        waiting = [asyncio.create_task(queue.run(c, recorder.job, f"{c}1")) for c in "ab"]
        await asyncio.sleep(0)
        with pytest.raises(Unavailable):
            await queue.run("c", recorder.job, "c1")
        recorder.gate.set()
        await asyncio.gather(running, *waiting)

    asyncio.run(scenario())
