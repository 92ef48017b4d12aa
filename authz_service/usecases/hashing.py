"""argon2 work, taken in turns by caller: one caller's burst of cold or wrong tokens delays
mostly itself.

Every verify and hash runs on a bounded thread pool. Jobs wait in one queue per caller (a
client's address), and a free thread takes the next job of the next caller in turn. As in
FQ-CoDel (RFC 8290), a caller that had nothing running or waiting goes before the callers with
a backlog: a host checking one new token waits for the verifies already running, not for a
turn behind every busy host. Everything but the hashing itself runs on the event loop: no locks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from authz_service.core.errors import Unavailable

T = TypeVar("T")

# A caller with this many jobs waiting is refused more (UNAVAILABLE): at about 30 ms a verify,
# a queue this long is already many seconds of work. With MAX_WAITING in all, the longest
# queue gives up its newest job for a caller with fewer.
MAX_WAITING_PER_CALLER = 256
MAX_WAITING = 8192

_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class HashQueue:
    """Runs blocking hashing calls on `pool`, at most `workers` at once, callers in turn."""

    def __init__(
        self,
        pool: Executor,
        workers: int,
        *,
        max_waiting_per_caller: int = MAX_WAITING_PER_CALLER,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self._pool = pool
        self._free = workers
        self._max_per_caller = max_waiting_per_caller
        self._max_waiting = max_waiting
        # caller -> its waiting jobs; each dict's order is the order of turns. A caller is new
        # if it had nothing running or waiting, until its first job starts; then it is old.
        self._new: dict[str, deque[_Job]] = {}
        self._old: dict[str, deque[_Job]] = {}
        self._running: dict[str, int] = {}
        self._count = 0

    @property
    def waiting(self) -> int:
        """How many jobs wait for a thread."""
        return self._count

    async def run(self, caller: str, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on a pool thread, in `caller`'s turn; Unavailable when the caller
        (or everyone together) has too many jobs waiting."""
        loop = asyncio.get_running_loop()
        if self._free and not self._count:
            # No one waits: straight to a thread. Shielded: a caller that gives up must not
            # free the thread's place while the thread still works.
            return await asyncio.shield(self._start(loop, caller, function, args))
        queue = self._new.get(caller)
        if queue is None:
            queue = self._old.get(caller)
        if queue is None:
            turns = self._old if caller in self._running else self._new
            queue = turns[caller] = deque()
        if len(queue) >= self._max_per_caller or (
            self._count >= self._max_waiting and not self._drop_from_longest(len(queue))
        ):
            if not queue:
                self._new.pop(caller, None)
                self._old.pop(caller, None)
            raise _busy()
        future: asyncio.Future[T] = loop.create_future()
        queue.append((function, args, future))
        self._count += 1
        self._dispatch(loop)
        return await future

    def _drop_from_longest(self, waiting: int) -> bool:
        """With every place taken, the newest job of the longest queue gives its place to a
        caller with fewer waiting (as FQ-CoDel drops from the fattest flow), so many callers
        with full queues cannot keep a new one out. False when no queue is longer."""
        longest = max((*self._new.values(), *self._old.values()), key=len)
        if len(longest) <= waiting + 1:
            return False
        _, _, future = longest.pop()
        self._count -= 1
        if not future.cancelled():
            future.set_exception(_busy())
        return True

    def _start(
        self,
        loop: asyncio.AbstractEventLoop,
        caller: str,
        function: Callable[..., T],
        args: tuple[Any, ...],
    ) -> asyncio.Future[T]:
        self._free -= 1
        self._running[caller] = self._running.get(caller, 0) + 1
        job = loop.run_in_executor(self._pool, function, *args)
        job.add_done_callback(lambda _: self._finished(loop, caller))
        return job

    def _finished(self, loop: asyncio.AbstractEventLoop, caller: str) -> None:
        self._free += 1
        if self._running[caller] == 1:
            del self._running[caller]
        else:
            self._running[caller] -= 1
        self._dispatch(loop)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._free and self._count:
            turns = self._new or self._old
            caller = next(iter(turns))
            queue = turns.pop(caller)
            function, args, future = queue.popleft()
            self._count -= 1
            if queue:
                self._old[caller] = queue  # to the back of the turns
            if future.cancelled():
                continue  # its caller gave up while it waited
            _chain(self._start(loop, caller, function, args), future)


def _chain(job: asyncio.Future[Any], future: asyncio.Future[Any]) -> None:
    """Settle `future` with `job`'s outcome, unless its waiter gave up meanwhile."""

    def settle(done: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        if done.cancelled():
            future.cancel()
        elif (error := done.exception()) is not None:
            future.set_exception(error)
        else:
            future.set_result(done.result())

    job.add_done_callback(settle)


def _busy() -> Unavailable:
    return Unavailable("too many tokens are waiting for verification; retry shortly")
