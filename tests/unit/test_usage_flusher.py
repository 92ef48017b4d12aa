"""The usage flusher: flushes on its clock, never two at once, once more at stop, and a
failed flush is logged without stopping anything."""

from __future__ import annotations

import asyncio
import time

import pytest

from authz_service.core.errors import Unavailable
from authz_service.server import UsageFlusher


class Sink:
    """Counts flushes; each takes `seconds`, and the first `failures` raise."""

    def __init__(self, seconds: float = 0.0, failures: int = 0, error: Exception | None = None):
        self.seconds = seconds
        self.failures = failures
        self.error = error or Unavailable("the store is unavailable")
        self.started = 0
        self.ticks = 0  # once `started` reaches it, `enough` is set
        self.enough = asyncio.Event()
        self.running = 0
        self.most_at_once = 0

    async def flush(self) -> None:
        self.started += 1
        if self.started >= self.ticks:
            self.enough.set()
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.seconds)
            if self.started <= self.failures:
                raise self.error
        finally:
            self.running -= 1


async def _run(sink: Sink, interval: float, serve_for: float, ticks: int = 0) -> None:
    """Run a flusher for `serve_for` seconds, or, with `ticks`, until its clock has started
    that many flushes (a busy machine may tick late; 30 s at most), then stop it."""
    sink.ticks = ticks
    flusher = UsageFlusher(sink, asyncio.get_running_loop(), interval)
    await asyncio.sleep(serve_for)
    if ticks:
        await asyncio.wait_for(sink.enough.wait(), 30)
    await flusher.stop()


def test_it_flushes_on_its_clock_and_once_more_at_stop() -> None:
    sink = Sink()
    asyncio.run(_run(sink, 0.02, 0.0, ticks=4))
    assert sink.started >= 5  # four ticks, then the last flush


def test_a_slow_flush_is_never_joined_by_another() -> None:
    sink = Sink(seconds=0.1)
    asyncio.run(_run(sink, 0.01, 0.35))
    assert sink.most_at_once == 1
    assert sink.running == 0  # stop() waited for the running one


def test_ticks_queued_before_stop_are_dropped() -> None:
    sink = Sink()

    async def scenario() -> None:
        flusher = UsageFlusher(sink, asyncio.get_running_loop(), 0.005)
        time.sleep(0.05)  # noqa: ASYNC251 (on purpose: the clock's ticks queue up meanwhile)
        await flusher.stop()
        await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert sink.started == 1  # stop's own flush, and none after it


@pytest.mark.parametrize("error", [Unavailable("the store is unavailable"), RuntimeError("bug")])
def test_a_failed_flush_is_logged_and_the_next_ones_still_run(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink(failures=2, error=error)
    asyncio.run(_run(sink, 0.02, 0.0, ticks=3))
    assert sink.started >= 4  # two failed ticks, one after them, and the last flush at stop
    assert "could not record last use of entries" in caplog.text
