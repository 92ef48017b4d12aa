"""Noticing, while serving, that the database file was removed or replaced.

A server whose file was deleted keeps writing into the unlinked inode, and everything it
acknowledges is gone at the next start. The store refuses writes once that happens; this watch
tells the server as soon as it happens, so it can stop reporting SERVING before a write fails.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("authz_service.database")

POLL_SECONDS = 1.0


class DatabaseFileWatch:
    """Asks `problem` every `interval` seconds on a daemon thread; the first time it gives a
    reason, calls `on_problem(reason)` once, from that thread, and stops polling.

    `problem` is `SqliteStore.file_problem` (one `os.stat` a file). `on_problem` runs on the
    watch's thread: a server hands the news to its event loop (`run_coroutine_threadsafe`).
    """

    def __init__(
        self,
        problem: Callable[[], str | None],
        on_problem: Callable[[str], object],  # what it returns is ignored
        *,
        interval: float = POLL_SECONDS,
    ) -> None:
        self._problem = problem
        self._on_problem = on_problem
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="database-file-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; once this returns, `on_problem` is neither running nor called again."""
        self._stopping.set()
        if threading.current_thread() is not self._thread:  # stop() from within on_problem
            self._thread.join()

    def _poll(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                reason = self._problem()
                if reason is not None:
                    if not self._stopping.is_set():
                        self._on_problem(reason)
                    return
            except Exception:  # logged: a broken check must not die without a word
                log.exception("the database file watch stopped")
                return
