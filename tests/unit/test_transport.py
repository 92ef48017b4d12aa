"""The server's connection options and its descriptor limit."""

from __future__ import annotations

import inspect
import logging
import resource
import sys
from pathlib import Path

import pytest

from authz_service.transport import SERVER_OPTIONS, raise_descriptor_limit, server_options

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _envoy
import _load


def test_the_options_keep_so_reuseport_off_and_shed_idle_and_old_connections() -> None:
    options = dict(server_options())
    assert options["grpc.so_reuseport"] == 0
    assert 0 < options["grpc.max_connection_idle_ms"] <= 5 * 60_000
    assert 0 < options["grpc.max_connection_age_ms"] <= 30 * 60_000
    assert 0 < options["grpc.max_connection_age_grace_ms"] < options["grpc.max_connection_age_ms"]
    assert options["grpc.keepalive_timeout_ms"] < options["grpc.keepalive_time_ms"]
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_ping_strikes"] > 0  # 0 would allow any number of pings


def test_the_stream_cap_leaves_room_for_the_benchmarks_streams() -> None:
    # HTTP/2 recommends no cap below 100. The load generators open 16 streams per connection;
    # through Envoy, its 4 connections' 64 streams may share one connection to the server.
    cap = SERVER_OPTIONS["grpc.max_concurrent_streams"]
    assert cap >= 100
    for load in (_load.h2load, _load.run_h2load, _load.node_load):
        assert inspect.signature(load).parameters["streams"].default <= cap
    envoy = inspect.signature(_envoy.http_load).parameters
    assert envoy["clients"].default * envoy["streams"].default <= cap


def test_overrides_replace_figures_and_a_misspelt_name_is_refused() -> None:
    options = dict(server_options({"grpc.max_connection_idle_ms": 300}))
    assert options["grpc.max_connection_idle_ms"] == 300
    assert options.keys() == SERVER_OPTIONS.keys()
    with pytest.raises(ValueError, match=r"grpc\.max_conection_idle_ms"):
        server_options({"grpc.max_conection_idle_ms": 300})


class Limits:
    """getrlimit and setrlimit for RLIMIT_NOFILE, on numbers the test chooses."""

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.soft, self.hard, self.refuse = soft, hard, refuse
        self.set_to: tuple[int, int] | None = None

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if self.refuse:
            raise ValueError("not allowed")
        self.set_to = limits
        self.soft, self.hard = limits


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Limits:
    fake = Limits(1024, 524288)
    monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)
    return fake


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(limits: Limits) -> None:
    assert raise_descriptor_limit() == 524288
    assert limits.set_to == (524288, 524288)


def test_a_limit_already_at_the_hard_one_is_left_alone(limits: Limits) -> None:
    limits.soft = limits.hard
    assert raise_descriptor_limit() == 524288
    assert limits.set_to is None


def test_an_unlimited_hard_limit_keeps_the_soft_one(limits: Limits) -> None:
    limits.hard = resource.RLIM_INFINITY
    assert raise_descriptor_limit() == 1024
    assert limits.set_to is None


def test_a_refused_raise_keeps_the_limit_and_says_so_without_failing(
    limits: Limits, caplog: pytest.LogCaptureFixture
) -> None:
    limits.refuse = True
    with caplog.at_level(logging.WARNING, logger="authz_service"):
        assert raise_descriptor_limit() == 1024
    assert "could not raise the open-file limit from 1024 to 524288" in caplog.text
