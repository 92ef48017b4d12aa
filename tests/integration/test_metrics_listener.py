"""The metrics listener on a real loopback socket: it answers GET /metrics and nothing else,
holds a bounded number of connections on one thread whatever callers do, cuts off slow and
oversized requests, and renders and counts rarely however often it is scraped."""

from __future__ import annotations

import contextlib
import gzip
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from authz_service.adapters.metrics import open_metrics
from authz_service.adapters.metrics_listener import MetricsLimits, MetricsListener
from authz_service.core.model import State
from authz_service.usecases import Checker
from fakes import FakeHasher, InMemoryStore, memory_port

KEY = bytes(range(32))
# Generous bound on one socket operation; a passing test never comes near it.
WAIT_SECONDS = 10.0
SCRAPE = b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n"
HALF_SENT = b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n"


class CountingStore(InMemoryStore):
    """An InMemoryStore that counts its `count_by_state` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = 0

    def count_by_state(self, now: datetime) -> dict[State, int]:
        self.counts += 1
        return super().count_by_state(now)


class FailingCollector(Collector):
    """A collector whose collection fails, as a store that cannot be read would."""

    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("cannot collect")


Open = Callable[..., MetricsListener]


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def open_listener(store: CountingStore) -> Iterator[Open]:
    """Starts listeners on 127.0.0.1 (any port) with the given limits; closes them after."""
    pool = ThreadPoolExecutor(1)
    port = memory_port(store)
    checker = Checker(port, FakeHasher(), KEY, pool)
    listeners: list[MetricsListener] = []

    def start(**limits: Any) -> MetricsListener:
        listener = open_metrics(
            "127.0.0.1:0", checker, {}, store.count_by_state, MetricsLimits(**limits)
        )
        listeners.append(listener)
        return listener

    yield start
    for listener in listeners:
        listener.close()
    port.close()
    pool.shutdown()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the listener sends until it closes; b"" when it resets the connection."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        return b""
    return b"".join(chunks)


def _exchange(port: int, request: bytes) -> bytes:
    with _connect(port) as sock:
        sock.sendall(request)
        return _read_all(sock)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _split(response: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
    return headers, body


def test_get_metrics_answers_with_the_prometheus_text(open_listener: Open) -> None:
    listener = open_listener()
    response = _exchange(listener.port, SCRAPE)
    headers, body = _split(response)
    assert _status(response) == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert b"authz_cache_hits_total 0.0" in body
    assert b'authz_entries{state="active"} 0.0' in body


def test_a_query_string_and_head_are_answered_too(open_listener: Open) -> None:
    listener = open_listener()
    query = _exchange(listener.port, b"GET /metrics?name[]=authz_checks HTTP/1.1\r\n\r\n")
    head = _exchange(listener.port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert _status(query) == 200
    assert b"authz_cache_hits_total" in query
    headers, body = _split(head)
    assert _status(head) == 200
    assert int(headers["content-length"]) > 0
    assert body == b""


@pytest.mark.parametrize("path", [b"/", b"/metricsx", b"/metrics/", b"/favicon.ico", b"*"])
def test_any_other_path_is_not_found(open_listener: Open, path: bytes) -> None:
    listener = open_listener()
    response = _exchange(listener.port, b"GET " + path + b" HTTP/1.1\r\n\r\n")
    assert _status(response) == 404
    assert b"authz_" not in response


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"])
def test_another_method_is_not_allowed(open_listener: Open, method: bytes) -> None:
    listener = open_listener()
    response = _exchange(listener.port, method + b" /metrics HTTP/1.1\r\n\r\n")
    headers, _ = _split(response)
    assert _status(response) == 405
    assert headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /metrics\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nAccept: a\nInjected: b\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nAccept: \x00\r\n\r\n",
    ],
)
def test_a_malformed_request_is_a_bad_request(open_listener: Open, request_bytes: bytes) -> None:
    listener = open_listener()
    assert _status(_exchange(listener.port, request_bytes)) == 400


def test_gzip_is_sent_when_accepted(open_listener: Open) -> None:
    listener = open_listener()
    response = _exchange(
        listener.port, b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip, deflate\r\n\r\n"
    )
    headers, body = _split(response)
    assert headers["content-encoding"] == "gzip"
    assert b"authz_cache_hits_total 0.0" in gzip.decompress(body)


def test_openmetrics_is_sent_when_asked_and_an_unreadable_version_gets_plain_text(
    open_listener: Open,
) -> None:
    listener = open_listener()
    asked = _exchange(
        listener.port,
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
    )
    # prometheus-client's choose_encoder raises on this version; the caller gets plain text.
    odd = _exchange(
        listener.port,
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.x\r\n\r\n",
    )
    assert _split(asked)[0]["content-type"].startswith("application/openmetrics-text")
    assert asked.endswith(b"# EOF\n")
    assert _status(odd) == 200
    assert _split(odd)[0]["content-type"].startswith("text/plain")


def test_a_scrape_gets_in_however_many_half_sent_requests_hold_the_places(
    open_listener: Open,
) -> None:
    threads = threading.active_count()
    listener = open_listener(max_connections=4)
    assert threading.active_count() == threads + 1
    held = [_connect(listener.port) for _ in range(4)]
    try:
        for sock in held:
            sock.sendall(HALF_SENT)
        deadline = time.monotonic() + WAIT_SECONDS
        while listener.reading < 4 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the listener reads all four (a busy machine is slow)
        # The first scrape finds every place taken and closes the connection that has been
        # sending its headers longest; the others take the place it frees after it.
        for _ in range(20):
            assert _status(_exchange(listener.port, SCRAPE)) == 200
        assert threading.active_count() == threads + 1
        assert _read_all(held[0]) == b""  # closed to make room
    finally:
        for sock in held:
            sock.close()
    assert listener.stats.peak_open == 4
    assert listener.stats.evicted == 1
    assert listener.stats.refused == 0


def test_a_request_without_the_end_of_its_headers_is_closed_at_its_deadline(
    open_listener: Open,
) -> None:
    listener = open_listener(request_seconds=0.3)
    with _connect(listener.port) as sock:
        started = time.monotonic()
        sock.sendall(HALF_SENT)
        response = _read_all(sock)
        elapsed = time.monotonic() - started
    assert _status(response) == 408
    assert 0.3 <= elapsed < 5.0
    assert listener.stats.timed_out == 1


def test_a_slowloris_sending_a_byte_at_a_time_is_cut_off_at_its_deadline(
    open_listener: Open,
) -> None:
    listener = open_listener(request_seconds=0.5)
    with _connect(listener.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        closed = False
        while not closed and time.monotonic() - started < WAIT_SECONDS:
            # Wait a twentieth of a second for the listener to answer; if not, send a byte more.
            if select.select([sock], [], [], 0.05)[0]:
                closed = True
                break
            try:
                sock.send(b"a")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        elapsed = time.monotonic() - started
    assert closed
    assert 0.5 <= elapsed < 5.0
    assert listener.stats.timed_out == 1


def test_request_headers_beyond_the_cap_are_refused(open_listener: Open) -> None:
    listener = open_listener(max_header_bytes=1024)
    padded = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 1100
    response = _exchange(listener.port, padded)
    assert _status(response) == 431
    assert listener.stats.too_large == 1
    # Just under the cap is served.
    fits = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 900 + b"\r\n\r\n"
    assert _status(_exchange(listener.port, fits)) == 200


def test_a_scrape_loop_counts_entries_once_per_interval(
    open_listener: Open, store: CountingStore
) -> None:
    listener = open_listener(render_interval=0, count_seconds=60)
    for _ in range(30):
        assert _status(_exchange(listener.port, SCRAPE)) == 200
    assert listener.stats.renders == 30
    assert store.counts == 1


def test_concurrent_scrapes_take_turns_to_render(open_listener: Open) -> None:
    listener = open_listener(render_interval=0.05)
    started = time.monotonic()
    with ThreadPoolExecutor(10) as scrapers:
        answers = list(scrapers.map(lambda _: _exchange(listener.port, SCRAPE), range(10)))
    assert all(_status(answer) == 200 for answer in answers)
    # Ten renders, at least 50 ms apart: the tenth waited for nine turns.
    assert time.monotonic() - started >= 9 * 0.05
    assert listener.stats.renders == 10


def test_a_failing_collector_fails_the_scrape_and_the_listener_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    registry.register(FailingCollector())
    listener = MetricsListener(registry)
    listener.start("127.0.0.1:0")
    try:
        assert _status(_exchange(listener.port, SCRAPE)) == 500
        assert _status(_exchange(listener.port, b"GET / HTTP/1.1\r\n\r\n")) == 404
    finally:
        listener.close()
    assert "metrics not rendered: cannot collect" in caplog.text


def test_a_port_that_is_taken_raises_os_error_from_open_metrics(store: CountingStore) -> None:
    pool = ThreadPoolExecutor(1)
    entries = memory_port(store)
    checker = Checker(entries, FakeHasher(), KEY, pool)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        threads = threading.active_count()
        with pytest.raises(OSError, match="in use"):
            open_metrics(f"127.0.0.1:{port}", checker, {}, store.count_by_state)
    assert threading.active_count() == threads
    entries.close()
    pool.shutdown()


def test_close_ends_the_thread_and_open_connections_and_frees_the_port(
    open_listener: Open,
) -> None:
    threads = threading.active_count()
    listener = open_listener()
    with _connect(listener.port) as held:
        held.sendall(HALF_SENT)
        listener.close()
        assert _read_all(held) == b""
    assert threading.active_count() == threads
    with socket.socket() as again:
        # Closed connections may linger in TIME_WAIT; only a listening socket blocks this.
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", listener.port))
        again.listen()


@pytest.mark.slow
def test_a_flood_of_half_sent_requests_holds_one_thread_and_the_limit(open_listener: Open) -> None:
    threads = threading.active_count()
    listener = open_listener()
    limit = listener.limits.max_connections
    flood: list[socket.socket] = []
    try:
        for n in range(3000):
            sock = _connect(listener.port)
            flood.append(sock)
            with contextlib.suppress(OSError):  # closed ones may be reset already
                sock.sendall(HALF_SENT)
            if n % 500 == 0:
                assert threading.active_count() == threads + 1
        # The last `limit` are held (each newer one closed the oldest); a scrape still gets in.
        assert _status(_exchange(listener.port, SCRAPE)) == 200
    finally:
        for sock in flood:
            sock.close()
    assert threading.active_count() == threads + 1
    assert listener.stats.peak_open == limit
    assert listener.stats.evicted + listener.stats.refused >= 3000 - limit
