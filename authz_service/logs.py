"""Log lines: one JSON object per line for collectors, plain text for a person at a terminal.

Every line has `time` (ISO 8601 UTC), `level`, `logger` and `message`; fields passed with
`extra=` (an admin call's `rpc`, `code`, `subject`, `entry_id`, `duration_ms`) follow as keys
of their own. The message is always complete without them, so the plain form loses nothing.
No caller passes a token, and nothing here adds one.
"""

from __future__ import annotations

import json
import logging
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
