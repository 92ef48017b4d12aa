"""Noticing, while serving, that the store can no longer be trusted, and that it can again.

A server whose SQLite file was deleted keeps writing into the unlinked inode, and everything it
acknowledges is gone at the next start: the store refuses writes once that happens. A
PostgreSQL replica that lost the database stops answering from its cache when its lease runs
out. Either way the server must stop reporting SERVING at once, so that load balancers send
calls elsewhere, and report it again when the store is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("authz_service.database")

POLL_SECONDS = 0.2


class StoreWatch:
    """Asks `problem` every `interval` seconds on a daemon thread, and calls `on_change` from
    that thread each time the answer turns from None to a reason (the store must not serve)
    or back to None (it may again).

    `problem` is the store's (a `stat` of the SQLite file and its log, or a look at the
    replica's lease: cheap). `on_change` runs on the watch's thread: a server hands the news
    to its event loop (`run_coroutine_threadsafe`).
    """

    def __init__(
        self,
        problem: Callable[[], str | None],
        on_change: Callable[[str | None], object],  # what it returns is ignored
        *,
        interval: float = POLL_SECONDS,
    ) -> None:
        self._problem = problem
        self._on_change = on_change
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="store-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; once this returns, `on_change` is neither running nor called again."""
        self._stopping.set()
        if threading.current_thread() is not self._thread:  # stop() from within on_change
            self._thread.join()

    def _poll(self) -> None:
        reported: str | None = None
        while not self._stopping.wait(self._interval):
            try:
                reason = self._problem()
                if (reason is None) != (reported is None) and not self._stopping.is_set():
                    self._on_change(reason)
                reported = reason
            except Exception:  # logged: a broken check must not die without a word
                log.exception("the store watch stopped")
                return
