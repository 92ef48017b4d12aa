"""Log lines: JSON objects for collectors, plain text at a terminal."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz_service.logs import JsonFormatter, RateLimitedLog, clipped, configure_logging


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "authz_service.access", "levelno": logging.INFO, "levelname": "INFO"}
    )
    record.msg, record.args = "admin %s %s", ("GetEntry", "OK")
    record.__dict__.update(extra)
    return record


def test_a_record_becomes_one_json_line_with_its_extra_fields() -> None:
    line = JsonFormatter().format(_record(rpc="GetEntry", code="OK", subject="ops"))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "admin GetEntry OK"
    assert (parsed["level"], parsed["logger"]) == ("INFO", "authz_service.access")
    assert (parsed["rpc"], parsed["code"], parsed["subject"]) == ("GetEntry", "OK", "ops")
    assert parsed["time"].endswith("Z")


def test_a_multiline_message_or_traceback_stays_on_one_line() -> None:
    try:
        raise ValueError("first\nsecond")  # noqa: TRY301 (a traceback to format)
    except ValueError:
        record = logging.makeLogRecord({"msg": "line one\nline two", "exc_info": True})
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert len(line.splitlines()) == 1
    assert "ValueError" in json.loads(line)["exception"]


@pytest.mark.parametrize(
    ("log_format", "stream", "as_json"),
    [
        ("auto", io.StringIO(), True),
        ("auto", Terminal(), False),
        ("json", Terminal(), True),
        ("text", io.StringIO(), False),
    ],
)
def test_the_format_is_json_unless_asked_for_text_or_writing_to_a_terminal(
    log_format: str, stream: io.StringIO, as_json: bool
) -> None:
    configure_logging("INFO", log_format, stream)
    logging.getLogger("authz_service").info("serving on %s:%d", "127.0.0.1", 50051)
    line = stream.getvalue().strip()
    assert "serving on 127.0.0.1:50051" in line
    assert line.startswith("{") is as_json
    if as_json:
        assert json.loads(line)["message"] == "serving on 127.0.0.1:50051"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("catalog", "'catalog'"),
        ("a" * 8, "'aaaaaaaa'"),
        ("a" * 9, "'aaaaaaaa\u2026'"),
        ("line\nforged", "'line\\nfo\u2026'"),
        ("it's", '"it\'s"'),
    ],
)
def test_clipped_quotes_escapes_and_cuts_with_an_ellipsis(text: str, shown: str) -> None:
    assert clipped(text, 8) == shown


@given(st.text(max_size=300), st.integers(min_value=1, max_value=100))
def test_clipped_is_one_short_line_whatever_the_text(text: str, limit: int) -> None:
    shown = clipped(text, limit)
    assert len(shown) <= limit + 3
    assert shown.isprintable()
    if len(text) <= limit and len(repr(text)) <= limit + 2:
        assert shown == repr(text)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_limited_log_writes_its_limit_a_period_and_then_counts_what_it_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("test.limited"), limit=3, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.limited"):
        written = [limited.warning("refused %s", n) for n in range(100)]
        assert written == [True] * 3 + [False] * 97
        assert limited.held == 97
        clock.now += 59.9
        assert not limited.warning("refused %s", 100)
        clock.now += 0.1
        assert limited.warning("refused %s", 101)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "refused 0",
        "refused 1",
        "refused 2",
        "refused 101 (and 98 more like it not logged since the last such line)",
    ]
    assert caplog.records[-1].suppressed == 98  # type: ignore[attr-defined]
    assert limited.held == 0
