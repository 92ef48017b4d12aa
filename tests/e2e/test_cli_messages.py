"""What the real `authz-admin` and `authz-service` say when a real server refuses: advice that
fits the refusal, each thing said once, the server's field names said as the command line's
flags with their values, and the listener that serves a call named when another was asked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from admin_cli import AdminCli
from server_process import BOOTSTRAP_TOKEN, ServerProcess


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path) -> AdminCli:
    return AdminCli(server.target, tmp_path)


def test_rotating_to_a_retired_token_advises_a_fresh_token_not_another_subject(
    cli: AdminCli,
) -> None:
    cli.create("moving", "first-token-0123456789")
    cli.ok("rotate", "moving", "--generate")
    run = cli("rotate", "moving", stdin="first-token-0123456789")
    assert run.code == 6
    assert run.stderr.startswith("authz-admin: error: the new token: already in use or retired")
    assert "subject" not in run.stderr
    assert "--generate" in run.stderr


def test_creating_with_a_used_token_says_tokens_are_never_reused_once(cli: AdminCli) -> None:
    cli.create("holder", "held-token-0123456789")
    run = cli("create", "other", "--allow", "catalog", stdin="held-token-0123456789")
    assert run.code == 6
    assert run.stderr.count("never reused") == 1
    assert "subject" not in run.stderr


def test_creating_with_a_taken_subject_names_it_and_advises_another(cli: AdminCli) -> None:
    cli.create("taken", "taken-token-0123456789")
    run = cli("create", "taken", "--allow", "catalog", stdin="other-token-0123456789")
    assert run.code == 6
    assert "SUBJECT 'taken': an unrevoked entry already has this subject" in run.stderr
    assert "pick another subject" in run.stderr


def test_an_update_the_server_refuses_names_each_flag_with_its_value(cli: AdminCli) -> None:
    cli.create("scoped", "scoped-token-0123456789")
    run = cli(
        "update", "scoped", "--allow", "catalog:ok.read", "--allow", "Bad_Plugin::read",
        "--expires", "2001-02-03T04:05:06+01:00",
    )  # fmt: skip
    assert run.code == 2
    assert run.stderr.splitlines()[1:] == [
        "  --allow 'Bad_Plugin::read': plugin 'Bad_Plugin': must be lowercase letters and "
        "digits, words joined by '-' or '_' (e.g. catalog)",
        "  --expires 2001-02-03T03:05:06Z: must be in the future",
    ]
    assert "entry." not in run.stderr


def server_output(db: Path, bootstrap_token: str) -> str:
    """What a server started on `db` with `bootstrap_token` writes, whether or not it starts."""
    try:
        server = ServerProcess(db, {"AUTHZ_BOOTSTRAP_TOKEN": bootstrap_token})
    except RuntimeError as refused:
        return str(refused)
    server.stop()
    return server.log


def test_a_bootstrap_token_that_is_not_used_is_named_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    cli = AdminCli(server.target, tmp_path)
    cli.create("holder", "held-by-another-0123456789")
    cli.ok("rotate", "bootstrap-admin", "--generate")
    server.stop()
    for token in ("held-by-another-0123456789", BOOTSTRAP_TOKEN):
        said = server_output(Path(server.db_path), token)
        assert "bootstrap token" in said
        assert "bootstrap token: bootstrap token" not in said
        assert said.count("bootstrap token:") <= 1, said


@pytest.fixture
def split(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "authz.db", None, "--admin-listen", "127.0.0.1:0")
    yield server
    server.stop()


def test_an_admin_command_on_the_main_port_of_a_split_server_names_the_admin_listener(
    split: ServerProcess, tmp_path: Path
) -> None:
    run = AdminCli(split.target, tmp_path)("list")
    assert run.code == 5
    assert run.stderr == (
        f"authz-admin: error: {split.target} does not serve AdminService: its server has an "
        "admin listener (AUTHZ_ADMIN_LISTEN, --admin-listen), and admin commands go to that "
        "port; point --target (or AUTHZ_TARGET) at it\n"
    )
    assert AdminCli(split.admin_target, tmp_path)("list").code == 0


def test_check_on_the_admin_listener_names_the_main_port(
    split: ServerProcess, tmp_path: Path
) -> None:
    run = AdminCli(split.admin_target, tmp_path)("check", "authz", stdin=BOOTSTRAP_TOKEN)
    assert run.code == 5
    assert "serves AdminService alone: it is a server's admin listener" in run.stderr
    assert "`check` asks Check on the main port (AUTHZ_LISTEN)" in run.stderr
    assert "is it an authz-service" not in run.stderr
    allowed = AdminCli(split.target, tmp_path)("check", "authz", stdin=BOOTSTRAP_TOKEN)
    assert allowed.code == 0
