"""The small HTTP listener that serves /metrics.

It is for a scraper on a private network, yet must stay cheap when anyone else connects: one
thread runs its own asyncio loop (never the server's), holds at most `max_connections`
connections (more are closed at once), gives each request `request_seconds` from accept to the
end of its headers and `max_header_bytes` of them, answers once and closes. Renders are at least
`render_interval` apart (a scrape waits for its turn), so a scrape loop costs the server at most
a few renders a second, while every scrape still reads the counters as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import re
import socket
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector

log = logging.getLogger("authz_service.metrics")

# Control characters other than tab have no place in a request head (CR and LF only end lines).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MetricsLimits:
    """What one metrics listener allows its callers, and how often it does real work."""

    max_connections: int = 16
    request_seconds: float = 5.0  # from accept to the end of the request headers
    max_header_bytes: int = 8192
    write_seconds: float = 5.0  # for the answer to leave, once the request is in
    render_interval: float = 0.1  # renders are at least this far apart
    count_seconds: float = 5.0  # entries by state are counted in the database this often


@dataclass
class ListenerStats:
    """What a metrics listener has done; read and written only on its own thread."""

    accepted: int = 0
    open: int = 0
    peak_open: int = 0
    refused: int = 0  # closed at once: `max_connections` were open, none still reading
    evicted: int = 0  # closed to make room: the oldest still sending its request headers
    timed_out: int = 0  # headers not complete within `request_seconds`
    too_large: int = 0  # headers beyond `max_header_bytes`
    renders: int = 0


class MetricsListener:
    """Serves `registry` over HTTP/1.1 at /metrics, from one thread of its own running its own
    asyncio loop, within `limits`; `start` binds and returns the port, `close` stops it."""

    def __init__(
        self,
        registry: Collector,
        limits: MetricsLimits | None = None,
    ) -> None:
        self.limits = limits or MetricsLimits()
        self.stats = ListenerStats()
        self.port = 0
        self._registry = registry
        self._next_render = 0.0  # on the loop's clock
        self._handlers: set[asyncio.Task[None]] = set()
        # Connections still sending their request headers, oldest first, and those closed to
        # make room for a newer one.
        self._reading: dict[asyncio.Task[Any] | None, asyncio.StreamWriter] = {}
        self._evicted: set[asyncio.Task[Any] | None] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def reading(self) -> int:
        """How many connections are still sending their request headers."""
        return len(self._reading)

    def start(self, listen: str) -> int:
        """Bind `listen` (HOST:PORT; OSError when it cannot be bound), start serving in a
        daemon thread and return the bound port."""
        sock = _bind(listen)
        started: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(sock, started), name="authz-metrics", daemon=True
        )
        self._thread.start()
        started.result()
        self.port = int(sock.getsockname()[1])
        return self.port

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving: close the socket and every open connection, end the thread."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, sock: socket.socket, started: Future[None]) -> None:
        try:
            asyncio.run(self._serve_until_closed(sock, started))
        except Exception as exc:
            if started.done():
                raise
            started.set_exception(exc)  # raised by start(), in the caller's thread
        finally:
            sock.close()

    async def _serve_until_closed(self, sock: socket.socket, started: Future[None]) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        # Accepting in a reader callback rather than in asyncio's servers: a connection over
        # the limit costs an accept and a close, no transport or task, and stopping is a
        # plain remove_reader that leaves no accepted socket half set up.
        loop.add_reader(sock, self._accept, sock)
        started.set_result(None)
        await self._stopping.wait()
        loop.remove_reader(sock)
        self._closing = True
        for writer in self._writers:
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=1.0)

    def _accept(self, sock: socket.socket) -> None:
        """Accept what is waiting (a burst at most, so answers get their turn), admitting up to
        `max_connections` at once and closing the rest at once."""
        stats = self.stats
        for _ in range(64):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: pause instead of spinning
                log.warning("metrics listener cannot accept: %s", exc.strerror)
                loop = asyncio.get_running_loop()
                loop.remove_reader(sock)
                loop.call_later(1.0, self._resume, sock)
                return
            stats.accepted += 1
            if stats.open >= self.limits.max_connections and not self._evict_oldest_reading():
                stats.refused += 1
                conn.close()
                continue
            stats.open += 1
            stats.peak_open = max(stats.peak_open, stats.open)
            task = asyncio.get_running_loop().create_task(self._connection(conn))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    def _evict_oldest_reading(self) -> bool:
        """Close the connection that has been sending its request headers longest, to make
        room: a scraper sends its headers at once, so one still sending them is holding a place
        (sixteen such would otherwise keep every scrape out). False when none is."""
        if not self._reading:
            return False
        task = next(iter(self._reading))
        writer = self._reading.pop(task)
        self._evicted.add(task)
        writer.transport.abort()
        self.stats.open -= 1
        self.stats.evicted += 1
        return True

    def _resume(self, sock: socket.socket) -> None:
        if not self._closing:
            asyncio.get_running_loop().add_reader(sock, self._accept, sock)

    async def _connection(self, conn: socket.socket) -> None:
        """One admitted connection: read one request within the deadline, answer, close."""
        deadline = asyncio.get_running_loop().time() + self.limits.request_seconds
        try:
            # The stream reader's limit is the header cap: readuntil fails beyond it.
            reader, writer = await asyncio.open_connection(
                sock=conn, limit=self.limits.max_header_bytes
            )
        except OSError:
            self.stats.open -= 1
            conn.close()
            return
        self._writers.add(writer)
        task = asyncio.current_task()
        try:
            if self._closing:
                raise ConnectionAbortedError
            self._reading[task] = writer  # until its headers are in
            answer = await self._answer(reader, deadline)
            self._reading.pop(task, None)
            if answer:
                writer.write(answer)
                async with asyncio.timeout(self.limits.write_seconds):
                    await writer.drain()
        except (OSError, TimeoutError):
            writer.transport.abort()
        finally:
            # Counted out before the close, so a caller that has read to the end may connect
            # again and find the place free (an evicted one was counted out then).
            self._reading.pop(task, None)
            if task in self._evicted:
                self._evicted.discard(task)
            else:
                self.stats.open -= 1
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, deadline: float) -> bytes:
        """The whole response to one request, or b"" when the caller went away."""
        try:
            async with asyncio.timeout_at(deadline):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            self.stats.timed_out += 1
            return _response(HTTPStatus.REQUEST_TIMEOUT)
        except asyncio.LimitOverrunError:
            self.stats.too_large += 1
            return _response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        except asyncio.IncompleteReadError:
            return b""
        # Renders take turns: however many scrape at once, the thread does a few a second.
        now = asyncio.get_running_loop().time()
        turn = max(now, self._next_render)
        self._next_render = turn + self.limits.render_interval
        await asyncio.sleep(turn - now)
        return self._respond(head[:-4].decode("latin-1"))

    def _respond(self, head: str) -> bytes:
        request = _parse(head)
        if request is None:
            return _response(HTTPStatus.BAD_REQUEST)
        method, path, headers = request
        send_body = method != "HEAD"
        if path != "/metrics":
            return _response(HTTPStatus.NOT_FOUND, send_body=send_body)
        if method not in {"GET", "HEAD"}:
            return _response(HTTPStatus.METHOD_NOT_ALLOWED, (("Allow", "GET, HEAD"),))
        try:
            body, content_headers = self._metrics(
                headers.get("accept", ""), headers.get("accept-encoding", "")
            )
        except Exception as exc:  # noqa: BLE001  # a failing collector fails this scrape only
            log.warning("metrics not rendered: %s", exc)
            return _response(HTTPStatus.INTERNAL_SERVER_ERROR, send_body=send_body)
        return _response(HTTPStatus.OK, content_headers, body, send_body=send_body)

    def _metrics(self, accept: str, accept_encoding: str) -> tuple[bytes, _Headers]:
        """The body, rendered now, and its content headers."""
        try:
            encoder, content_type = choose_encoder(accept)
        except (TypeError, ValueError):  # a version it cannot compare, e.g. "1.0.x"
            encoder, content_type = choose_encoder("")
        compress = gzip_accepted(accept_encoding)
        headers: _Headers = (("Content-Type", content_type),)
        if compress:
            headers += (("Content-Encoding", "gzip"),)
        body = encoder(self._registry)
        if compress:
            body = gzip.compress(body, compresslevel=6)
        self.stats.renders += 1
        return body, headers


def _bind(listen: str) -> socket.socket:
    """A listening socket on `listen`: the first address its host resolves to, as
    prometheus-client's server chose it ("[::]" accepts IPv4 too, where the system allows)."""
    host, _, port = listen.rpartition(":")
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]"), int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _parse(head: str) -> tuple[str, str, dict[str, str]] | None:
    """Method, path and headers (names lowercased) of a request head; None when malformed."""
    request_line, *lines = head.split("\r\n")
    if _CONTROL.search(head.replace("\r\n", "")):
        return None
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None
        headers[name.lower()] = value.strip()
    if not target.startswith("/"):  # absolute form: http://host:port/metrics
        scheme, _, rest = target.partition("://")
        target = "/" + rest.partition("/")[2] if scheme in {"http", "https"} else ""
    return method, target.partition("?")[0], headers


def _response(
    status: HTTPStatus,
    headers: _Headers = (),
    body: bytes | None = None,
    *,
    send_body: bool = True,
) -> bytes:
    if body is None:
        body = f"{status.value} {status.phrase}\n".encode()
        headers = (("Content-Type", "text/plain; charset=utf-8"), *headers)
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + (body if send_body else b"")
