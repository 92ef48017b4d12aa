"""Prometheus metrics: checks, their latency, the cache, argon2 work, admin calls and entries
by state; no label value that could carry a token, a tag or a hash; and a listener that answers
only GET /metrics and holds no thread per caller."""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from authz.v1 import authz_pb2 as pb
from server_process import ADMIN_METADATA, ServerProcess

SAMPLE = re.compile(r"^(?P<name>[a-z_0-9]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(?P<key>[a-z_]+)="(?P<value>[^"]*)"')
TOKEN = "metered-token-123"
# Every label value the service may use: names from its own vocabulary, never caller input.
ALLOWED_LABEL_VALUES = {
    "decision": {"allow", "deny"},
    "reason": {
        "ok", "missing_token", "malformed", "unknown_token", "revoked", "expired",
        "plugin_not_allowed", "permission_not_allowed", "action_not_allowed",
    },
    "rpc": {"CreateEntry", "UpdateEntry", "RevokeEntry", "GetEntry", "ListEntries"},
    "code": {code.name for code in grpc.StatusCode},
    "state": {"active", "revoked", "expired"},
    "cause": {"over_limit", "evicted", "deadline", "header_too_large"},
}  # fmt: skip


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """One server driven through admin calls and checks, then scraped once."""
    db = tmp_path_factory.mktemp("metrics") / "authz.db"
    server = ServerProcess(db, None, "--metrics-listen", "127.0.0.1:0")
    try:
        created = server.admin.CreateEntry(
            pb.CreateEntryRequest(
                subject="metered",
                token=TOKEN,
                access_restrictions=[pb.AccessRestriction(plugin="catalog")],
            ),
            metadata=ADMIN_METADATA,
        )
        doomed = server.admin.CreateEntry(
            pb.CreateEntryRequest(subject="doomed", token="doomed-token-123", unrestricted=True),
            metadata=ADMIN_METADATA,
        )
        server.admin.RevokeEntry(pb.RevokeEntryRequest(id=doomed.id), metadata=ADMIN_METADATA)
        with pytest.raises(grpc.RpcError):
            server.admin.GetEntry(pb.GetEntryRequest(id="missing"), metadata=ADMIN_METADATA)
        with pytest.raises(grpc.RpcError):
            server.admin.ListEntries(pb.ListEntriesRequest())
        for _ in range(3):
            server.authz.Check(pb.CheckRequest(token=TOKEN, plugin="catalog"))
        for n in range(4):
            server.authz.Check(pb.CheckRequest(token=f"never-issued-{n:04d}", plugin="catalog"))
        text = server.metrics()
    finally:
        server.stop()
    assert created.subject == "metered"
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, line
        labels = dict(LABEL.findall(match["labels"] or ""))
        for key, value in labels.items():
            if key != "le":
                assert value in ALLOWED_LABEL_VALUES[key], (key, value)
        assert TOKEN not in line
        samples[line.rpartition(" ")[0]] = float(match["value"])
    return samples


def test_admin_calls_are_counted_by_rpc_and_status_code(scraped: dict[str, float]) -> None:
    assert scraped['authz_admin_calls_total{code="OK",rpc="CreateEntry"}'] == 2
    assert scraped['authz_admin_calls_total{code="OK",rpc="RevokeEntry"}'] == 1
    assert scraped['authz_admin_calls_total{code="NOT_FOUND",rpc="GetEntry"}'] == 1
    assert scraped['authz_admin_calls_total{code="UNAUTHENTICATED",rpc="ListEntries"}'] == 1


def test_entries_are_counted_by_state(scraped: dict[str, float]) -> None:
    # bootstrap-admin and metered are active; doomed is revoked.
    assert scraped['authz_entries{state="active"}'] == 2
    assert scraped['authz_entries{state="revoked"}'] == 1
    assert scraped['authz_entries{state="expired"}'] == 0


def test_cache_hits_and_misses_are_counted(scraped: dict[str, float]) -> None:
    # Misses: the admin token once, the metered token once, the four unknown tokens.
    # Hits: the admin token on the later admin calls that reach Check (create, revoke, get),
    # and the metered token's second and third checks.
    assert scraped["authz_cache_misses_total"] == 6
    assert scraped["authz_cache_hits_total"] == 5
    assert scraped["authz_cache_tokens"] == 2


def test_argon2_verifications_have_a_duration_histogram(scraped: dict[str, float]) -> None:
    count = scraped["authz_argon2_verification_seconds_count"]
    assert count == scraped["authz_argon2_verifications_total"] == 2
    assert scraped['authz_argon2_verification_seconds_bucket{le="+Inf"}'] == count
    assert scraped["authz_argon2_verification_seconds_sum"] > 0


def test_every_answered_check_is_in_the_latency_histogram(scraped: dict[str, float]) -> None:
    answered = sum(v for k, v in scraped.items() if k.startswith("authz_checks_total{"))
    # The seven checks, and the four admin calls that presented a token (create twice,
    # revoke, get); the list without a token is refused before any Check.
    assert answered == 11
    assert scraped["authz_check_duration_seconds_count"] == answered
    assert scraped['authz_check_duration_seconds_bucket{le="+Inf"}'] == answered
    # The cold checks (two argon2 verifies) take milliseconds; the rest take far less.
    assert scraped['authz_check_duration_seconds_bucket{le="0.001"}'] >= answered - 2
    assert scraped['authz_check_duration_seconds_bucket{le="1.0"}'] == answered


def test_the_metrics_of_one_server_start_at_zero(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "authz.db", None, "--metrics-listen", "127.0.0.1:0")
    try:
        text = server.metrics()
    finally:
        server.stop()
    assert "authz_cache_hits_total 0.0" in text
    assert 'authz_entries{state="active"} 1.0' in text  # the bootstrap admin


def test_the_listener_has_dropped_no_connection_yet(scraped: dict[str, float]) -> None:
    for cause in ALLOWED_LABEL_VALUES["cause"]:
        assert scraped[f'authz_metrics_connections_dropped_total{{cause="{cause}"}}'] == 0


def test_only_get_metrics_is_answered(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "authz.db", None, "--metrics-listen", "127.0.0.1:0")
    answers: dict[tuple[str, str], tuple[int, bytes]] = {}
    try:
        for method, path in [("GET", "/"), ("POST", "/metrics"), ("GET", "/metrics?debug=1")]:
            conn = http.client.HTTPConnection("127.0.0.1", server.metrics_port, timeout=10)
            conn.request(method, path)
            response = conn.getresponse()
            answers[method, path] = response.status, response.read()
            conn.close()
    finally:
        server.stop()
    assert answers["GET", "/"][0] == 404
    assert answers["POST", "/metrics"][0] == 405
    assert answers["GET", "/metrics?debug=1"][0] == 200
    assert b"authz_checks_total" in answers["GET", "/metrics?debug=1"][1]


def _threads(pid: int) -> int:
    """The number of threads of process `pid` (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    return int(re.search(r"^Threads:\s+(\d+)$", status, re.MULTILINE)[1])  # type: ignore[index]


def test_half_sent_requests_to_the_metrics_port_hold_no_server_threads(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "authz.db", None, "--metrics-listen", "127.0.0.1:0")
    held: list[socket.socket] = []
    try:
        server.metrics()
        before = _threads(server.process.pid)
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", server.metrics_port), timeout=10)
            held.append(sock)
            with contextlib.suppress(OSError):  # those over the limit are closed at once
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n")
        during = _threads(server.process.pid)
        health = server.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )(health_pb2.HealthCheckRequest(), timeout=5)
        # Sixteen are held at most, and a scrape closes the oldest to get in.
        answer = server.metrics()
    finally:
        for sock in held:
            sock.close()
        server.stop()
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    # gRPC may start a worker or two of its own; a thread per connection would be 200 more.
    assert during <= before + 2
    assert "authz_checks_total" in answer
