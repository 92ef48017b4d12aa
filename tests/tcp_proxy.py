"""A TCP proxy in front of a real server, for partitions: while `partitioned`, it forwards no
byte either way but keeps every connection open, as a network that silently drops packets
would (the kernel still acknowledges what arrives, so no TCP timeout fires: only the
application's own deadlines can tell). `heal()` lets the held bytes through again.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    """Listens on a free port of 127.0.0.1 and forwards each connection to `upstream`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def partition(self) -> None:
        """Hold every byte from now on, in both directions, on old and new connections."""
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self._listener.close()
        with self._lock:
            for each in self._sockets:
                with contextlib.suppress(OSError):
                    each.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            self._flowing.wait()
            try:
                sink.sendall(data)
            except OSError:
                return
