"""Prometheus metrics: checks, their latency, the cache, argon2 work, admin calls and entries
by state; and no label value that could carry a token, a tag or a hash."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

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
