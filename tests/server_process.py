"""A real `authz-service serve` process for integration and end-to-end tests.

It listens on port 0; the port is read from the server's own "serving on" log line, and
readiness is awaited on the gRPC health service, never with sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.v1 import authz_pb2_grpc

BOOTSTRAP_TOKEN = "bootstrap-admin-token-0123456789"
ADMIN_METADATA = (("authorization", f"Bearer {BOOTSTRAP_TOKEN}"),)
SERVING = re.compile(r"serving on (?P<host>\S+):(?P<port>\d+)")
METRICS = re.compile(r"metrics on (?P<host>\S+):(?P<port>\d+)")
ADMIN = re.compile(r"admin on (?P<host>\S+):(?P<port>\d+)")
START_TIMEOUT = 30.0


class ServerProcess:
    """One server process with its log lines collected as they are written."""

    def __init__(
        self,
        db_path: Path | str,
        env: Mapping[str, str] | None = None,
        *args: str,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """Start the server; `credentials` (TLS) reach it when it serves TLS."""
        self.db_path = db_path
        environ = {**os.environ, "AUTHZ_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN, **(env or {})}
        environ.pop("AUTHZ_LISTEN", None)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "authz_service.cli",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--db",
                str(db_path),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environ,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.port = 0
        self.metrics_port = 0
        self.admin_port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT) or self.port == 0:
            self.process.kill()
            self._reader.join(5)
            raise RuntimeError("server did not start:\n" + self.log)
        self.target = f"127.0.0.1:{self.port}"
        self.channel = _channel(self.target, credentials)
        health = health_pb2_grpc.HealthStub(self.channel)
        health.Check(health_pb2.HealthCheckRequest(), timeout=START_TIMEOUT, wait_for_ready=True)
        self.authz = authz_pb2_grpc.AuthzServiceStub(self.channel)
        self.admin = authz_pb2_grpc.AdminServiceStub(self.channel)
        # With --admin-listen, AdminService answers on its own port (self.admin_target).
        self.admin_target = f"127.0.0.1:{self.admin_port or self.port}"
        self.admin_channel = self.channel
        if self.admin_port:
            self.admin_channel = _channel(self.admin_target, credentials)
            self.admin = authz_pb2_grpc.AdminServiceStub(self.admin_channel)

    @property
    def log(self) -> str:
        """Everything the server has written to stdout and stderr so far."""
        return "".join(self.lines)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if metrics := METRICS.search(line):
                self.metrics_port = int(metrics["port"])
            if admin := ADMIN.search(line):
                self.admin_port = int(admin["port"])
            match = SERVING.search(line)
            if match and not self._ready.is_set():
                self.port = int(match["port"])
                self._ready.set()
        self._ready.set()

    def metrics(self) -> str:
        """The Prometheus text the server serves (needs --metrics-listen)."""
        assert self.metrics_port, "start the server with --metrics-listen"
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig`, wait for the exit, and return the exit code."""
        self.channel.close()
        self.admin_channel.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


def _channel(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, credentials)
