"""Log lines: JSON objects for collectors, plain text at a terminal."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from authz_service.logs import JsonFormatter, configure_logging


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
