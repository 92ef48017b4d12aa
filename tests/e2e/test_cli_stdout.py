"""A stdout that cannot take the result (a full disk, a closed stream) against the real
executables and a real server: one line on stderr, exit code 7 (never 0 or 1, which `check`
gives a decision), no traceback, and a generated token never left in force unseen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from admin_cli import ADMIN_CLI, AdminCli, Run
from server_process import BOOTSTRAP_TOKEN, ServerProcess

SERVICE_CLI = Path(sys.executable).with_name("authz-service")
UNSHOWN = "authz-admin: the generated token could not be written to stdout"


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path) -> AdminCli:
    return AdminCli(server.target, tmp_path)


def unwritable(
    cli: AdminCli, stdout: str, *args: str, stdin: str = "", program: Path = ADMIN_CLI
) -> Run:
    """Run with stdout on /dev/full ("full") or closed ("closed"); stderr is kept."""
    command = [str(program), *args]
    if stdout == "closed":
        command = ["sh", "-c", 'exec "$@" >&-', "sh", *command]
    with Path("/dev/full").open("w") as full:
        completed = subprocess.run(
            command,
            input=stdin,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=cli.env,
            timeout=60,
            check=False,
        )
    return Run(tuple(args), completed.returncode, "", completed.stderr)


def said_once(run: Run) -> str:
    """The one line the run wrote to stderr, after checking it is one and no traceback."""
    assert "Traceback" not in run.stderr
    assert "Exception ignored" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


@pytest.mark.parametrize("stdout", ["full", "closed"])
@pytest.mark.parametrize(
    "args",
    [("list",), ("gen-token",), ("get", "bootstrap-admin"), ("list", "--json")],
    ids=["list", "gen-token", "get", "list-json"],
)
def test_a_result_stdout_cannot_take_is_one_line_on_stderr_and_exit_7(
    cli: AdminCli, stdout: str, args: tuple[str, ...]
) -> None:
    run = unwritable(cli, stdout, *args)
    assert run.code == 7
    assert said_once(run).startswith("authz-admin: error: cannot write to stdout: ")


@pytest.mark.parametrize("stdout", ["full", "closed"])
@pytest.mark.parametrize("plugin", ["authz", "catalog"], ids=["allow", "deny"])
def test_a_check_answer_stdout_cannot_take_exits_7_not_the_decision(
    cli: AdminCli, stdout: str, plugin: str
) -> None:
    run = unwritable(cli, stdout, "check", plugin, stdin=BOOTSTRAP_TOKEN)
    assert run.code == 7
    answered = "ALLOW" if plugin == "authz" else "DENY 403 plugin_not_allowed"
    assert said_once(run).endswith(f"; Check answered {answered}")


def test_healthcheck_keeps_its_answer_as_exit_code_when_stdout_is_full(
    cli: AdminCli, server: ServerProcess
) -> None:
    run = unwritable(cli, "full", "healthcheck", "--target", server.target, program=SERVICE_CLI)
    assert run.code == 0
    assert said_once(run) == (
        "authz-service healthcheck: cannot write the answer (SERVING): No space left on device"
    )


@pytest.mark.parametrize("json", [(), ("--json",)], ids=["table", "json"])
def test_create_generate_to_a_full_stdout_revokes_the_entry_whose_token_no_one_saw(
    cli: AdminCli, json: tuple[str, ...]
) -> None:
    run = unwritable(cli, "full", "create", "lost", "--allow", "catalog", "--generate", *json)
    assert run.code == 7
    line = said_once(run)
    assert "so the generated token was not shown" in line
    assert "just created for it was revoked at once" in line
    (lost,) = [e for e in cli.ok("list", "--all", "--json").json() if e["subject"] == "lost"]
    assert (lost["state"], lost["revoke_reason"]) == ("revoked", UNSHOWN)
    assert lost["id"] in line
    again = cli.ok("create", "lost", "--allow", "catalog", "--generate", "--json")
    assert cli.ok("check", "catalog", stdin=again.json()["token"]).code == 0


def test_create_generate_with_stdout_closed_sends_nothing(cli: AdminCli) -> None:
    run = unwritable(cli, "closed", "create", "unseen", "--allow", "catalog", "--generate")
    assert run.code == 7
    assert said_once(run).endswith("so a generated token could not be shown: nothing was sent")
    subjects = [e["subject"] for e in cli.ok("list", "--all", "--json").json()]
    assert subjects == ["bootstrap-admin"]


def test_a_generated_token_whose_entry_cannot_be_revoked_names_the_entry_to_revoke(
    cli: AdminCli,
) -> None:
    cli.create("creator", "creator-token-0123456789", "authz:authz.entry.create")
    creator = {"AUTHZ_ADMIN_TOKEN": "creator-token-0123456789"}
    cli.env |= creator
    run = unwritable(cli, "full", "create", "orphan", "--allow", "catalog", "--generate")
    assert run.code == 7
    cli.env |= {"AUTHZ_ADMIN_TOKEN": BOOTSTRAP_TOKEN}
    (orphan,) = [e for e in cli.ok("list", "--json").json() if e["subject"] == "orphan"]
    line = said_once(run)
    assert "could not be revoked (this admin token does not grant authz.entry.revoke)" in line
    assert f"`authz-admin revoke {orphan['id']}`" in line


def test_rotate_generate_to_a_full_stdout_says_the_old_token_is_retired_and_how_to_rotate(
    cli: AdminCli,
) -> None:
    entry = cli.create("rotated", "rotated-token-0123456789")
    run = unwritable(cli, "full", "rotate", "rotated", "--generate")
    assert run.code == 7
    line = said_once(run)
    assert "its old token no longer works and no one holds the new one" in line
    advice = f"`authz-admin rotate {entry['id']} --generate`"
    assert line.endswith(advice)
    old = cli("check", "catalog", "--json", stdin="rotated-token-0123456789")
    assert old.json()["reason"] == "unknown_token"
    again = cli.ok(*advice.strip("`").split()[1:], "--json")
    assert cli.ok("check", "catalog", stdin=again.json()["token"]).code == 0


def test_rotate_generate_with_stdout_closed_keeps_the_old_token(cli: AdminCli) -> None:
    cli.create("kept", "kept-token-0123456789")
    run = unwritable(cli, "closed", "rotate", "kept", "--generate")
    assert run.code == 7
    assert said_once(run).endswith("nothing was sent")
    assert cli.ok("check", "catalog", stdin="kept-token-0123456789").code == 0


def test_an_update_stdout_cannot_show_says_it_took_effect(cli: AdminCli) -> None:
    entry = cli.create("described", "described-token-0123456789")
    run = unwritable(cli, "full", "update", "described", "--description", "changed")
    assert run.code == 7
    assert said_once(run).startswith(
        f"authz-admin: error: the entry {entry['id']} (described) was updated, but cannot write"
    )
    assert cli.ok("get", "described", "--json").json()["description"] == "changed"
