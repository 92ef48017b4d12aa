"""`authz-service healthcheck` finds the server from the settings `serve` reads."""

from __future__ import annotations

import pytest

from authz_service.cli import main
from authz_service.healthcheck import ProbeError, load_probe, probe_target


@pytest.mark.parametrize(
    ("listen", "target"),
    [
        ("0.0.0.0:50051", "127.0.0.1:50051"),
        ("[::]:50051", "[::1]:50051"),
        ("10.1.2.3:7000", "10.1.2.3:7000"),
        ("authz.internal:50051", "authz.internal:50051"),
    ],
)
def test_a_wildcard_listen_address_is_probed_on_loopback(listen: str, target: str) -> None:
    assert probe_target(listen) == target


def test_the_probe_follows_authz_listen_in_plaintext_when_no_tls_is_set() -> None:
    probe = load_probe(
        target=None, service="", timeout=3.0, environ={"AUTHZ_LISTEN": "0.0.0.0:6000"}
    )
    assert (probe.target, probe.tls) == ("127.0.0.1:6000", False)


def test_the_probe_target_flag_wins_over_authz_listen() -> None:
    probe = load_probe(
        target="127.0.0.1:7", service="", timeout=3.0, environ={"AUTHZ_LISTEN": "0.0.0.0:6000"}
    )
    assert probe.target == "127.0.0.1:7"


def test_half_a_client_certificate_is_refused() -> None:
    environ = {"AUTHZ_TLS_CA": "/nowhere/ca.pem", "AUTHZ_TLS_CLIENT_CERT": "/nowhere/c.pem"}
    with pytest.raises(ProbeError, match="AUTHZ_TLS_CLIENT_KEY"):
        load_probe(target=None, service="", timeout=3.0, environ=environ)


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["healthcheck", "--timeout", "soon"], 1),  # Docker reserves 2: a usage error is 1
        (["healthcheck", "--no-such-flag"], 1),
        (["serve", "--no-such-flag"], 2),
    ],
)
def test_a_usage_error_exits_1_for_the_probe_and_2_for_serve(argv: list[str], code: int) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == code
