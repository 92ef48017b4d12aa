"""Log lines: one JSON object per line for collectors, plain text for a person at a terminal.

Every line has `time` (ISO 8601 UTC), `level`, `logger` and `message`; fields passed with
`extra=` (an admin call's `rpc`, `code`, `subject`, `entry_id`, `duration_ms`) follow as keys
of their own. The message is always complete without them, so the plain form loses nothing.
No caller passes a token, and nothing here adds one.

Lines that a caller can cause (a refused request, a misconfigured route) go through a
`RateLimitedLog`, and what they quote from a request through `clipped`, so that no caller can
fill the disk or forge a line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("auto", "json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: time, level, logger, message, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single-line JSON object."""
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line: dict[str, Any] = {
            "time": when.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(
            (name, value)
            for name, value in record.__dict__.items()
            if name not in _STANDARD and not name.startswith("_")
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str, log_format: str, stream: TextIO) -> None:
    """Send every log line to `stream`: JSON unless `log_format` is "text", or is "auto" and
    `stream` is a terminal."""
    handler = logging.StreamHandler(stream)
    as_text = log_format == "text" or (log_format == "auto" and stream.isatty())
    handler.setFormatter(logging.Formatter(TEXT_FORMAT) if as_text else JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)


ELLIPSIS = "\u2026"


def clipped(text: str, limit: int) -> str:
    """`text` quoted and escaped as `repr` writes it, at most `limit` + 3 characters long: cut,
    with an ellipsis before the closing quote, when longer.

    For a value a caller sent, in a log line: repr escapes newlines and other control characters,
    so the value cannot end the line or forge another.
    """
    shown = repr(text[: limit + 1])
    if len(shown) <= limit + 2:
        return shown
    return shown[: limit + 1] + ELLIPSIS + shown[0]


class RateLimitedLog:
    """Writes at most `limit` WARNING lines per `period` seconds; counts the ones it holds back.

    The first line written after some were held back says how many ("... (and 12 more like it
    not logged since the last such line)", and `suppressed` in the JSON form), so a flood costs
    a few lines a minute. The count waits for that next line: a timer to write it on its own
    would make every turn of the event loop dearer (see `server.UsageFlusher`). Thread-safe.
    """

    def __init__(
        self,
        logger: logging.Logger,
        limit: int,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._limit = limit
        self._period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = -period
        self._written = 0
        self._held = 0

    @property
    def held(self) -> int:
        """How many lines were held back since the last line written."""
        return self._held

    def warning(self, message: str, *args: object) -> bool:
        """Write `message % args` as a WARNING unless this period's lines are spent; True if
        written."""
        with self._lock:
            now = self._clock()
            if now - self._window_start >= self._period:
                self._window_start, self._written = now, 0
            if self._written >= self._limit:
                self._held += 1
                return False
            self._written += 1
            held, self._held = self._held, 0
        if held:
            self._logger.warning(
                message + " (and %d more like it not logged since the last such line)",
                *args,
                held,
                extra={"suppressed": held},
            )
        else:
            self._logger.warning(message, *args)
        return True
