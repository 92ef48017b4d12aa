"""`authz-service`'s grammar, with no I/O: flags are never abbreviated, a command's usage
error shows that command's usage, `serve --help` says what it does and every setting, and
listen addresses name what is wrong with them."""

from __future__ import annotations

import re

import pytest

from authz_service.cli import main
from authz_service.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    "argv",
    # Values no command could run with: taken as a guess, they fail later, never starting.
    [["serve", "--liste", "nowhere"], ["serve", "--work", "0"], ["healthcheck", "--tim", "x"]],
)
def test_an_abbreviated_flag_is_a_usage_error_not_a_guess(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == (1 if argv[0] == "healthcheck" else 2)
    assert f"unrecognized arguments: {argv[1]}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "healthcheck"])
def test_an_unknown_flag_of_a_command_prints_that_commands_usage(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--bogus"])
    err = capsys.readouterr().err
    assert err.startswith(f"usage: authz-service {command} ")
    assert f"authz-service {command}: error: unrecognized arguments: --bogus" in err


def serve_help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_serve_help_says_what_serve_does(capsys: pytest.CaptureFixture[str]) -> None:
    description = serve_help(capsys).split("\n\n")[1]
    assert description.startswith("Start the gRPC server: Check")


@pytest.mark.parametrize(
    "setting",
    [
        "AUTHZ_BOOTSTRAP_TOKEN_FILE",
        "AUTHZ_BOOTSTRAP_TOKEN",
        "AUTHZ_ARGON2_TIME_COST",
        "AUTHZ_ARGON2_MEMORY_KIB",
        "AUTHZ_DB_PASSWORD_FILE",
        "AUTHZ_REPLICA_LEASE",
        "GRPC_VERBOSITY",
    ],
)
def test_serve_help_names_the_settings_only_the_environment_gives(
    setting: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert re.search(rf"\b{setting}\b", serve_help(capsys))


def test_serve_help_gives_the_replica_lease_in_seconds_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = " ".join(serve_help(capsys).split())
    assert "AUTHZ_REPLICA_LEASE with PostgreSQL: seconds a replica keeps answering" in text
    assert "after losing the database [2]" in text


@pytest.mark.parametrize(
    ("listen", "said"),
    [
        ("127.0.0.1:99999", "port 99999 out of range (0 to 65535)"),
        ("[::1]:65536", "port 65536 out of range (0 to 65535)"),
        ("127.0.0.1", "cannot parse '127.0.0.1'; expected HOST:PORT"),
    ],
)
def test_a_listen_address_says_what_is_wrong_with_it(listen: str, said: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(
            listen=listen,
            db=None,
            server_key_file=None,
            bootstrap_token_file=None,
            log_level=None,
            environ={},
        )
    assert str(refused.value).startswith(f"AUTHZ_LISTEN/--listen: {said}")


def test_the_largest_port_is_a_port() -> None:
    settings = load_settings(
        listen="127.0.0.1:65535",
        db=None,
        server_key_file=None,
        bootstrap_token_file=None,
        log_level=None,
        environ={},
    )
    assert settings.listen == "127.0.0.1:65535"
