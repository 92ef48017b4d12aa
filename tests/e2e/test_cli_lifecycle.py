"""Rotation with a grace period through the real `authz-admin` and a real server: during the
grace both tokens allow, after it the old one is `unknown_token`; `get`, `list` and `--json`
say when the previous token stops working, and only while it works."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from admin_cli import ADMIN_CLI, AdminCli
from server_process import ServerProcess

OLD = "lifecycle-old-token-0123456789"
NEW = "lifecycle-new-token-0123456789"


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path) -> AdminCli:
    return AdminCli(server.target, tmp_path)


def decision(cli: AdminCli, token: str) -> str:
    """What Check answers for `token` on the plugin `catalog`: ALLOW, or the deny's reason."""
    answer = cli("check", "catalog", "--json", stdin=token).json()
    return "ALLOW" if answer["allowed"] else str(answer["reason"])


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def wait_until(when: datetime) -> None:
    """Wait out a grace period: its end is a time on the server's clock, this machine's."""
    time.sleep(max((when - datetime.now(UTC)).total_seconds(), 0) + 0.05)


def test_rotate_with_a_grace_keeps_both_tokens_until_it_ends_then_denies_the_old(
    cli: AdminCli,
) -> None:
    cli.create("rolling", OLD)
    before = datetime.now(UTC)
    rotated = cli.ok("rotate", "rolling", "--grace", "2s", "--json", stdin=NEW)
    until = moment(rotated.json()["previous_token_expire_time"])
    assert before + timedelta(seconds=2) <= until <= datetime.now(UTC) + timedelta(seconds=2)
    assert [decision(cli, OLD), decision(cli, NEW)] == ["ALLOW", "ALLOW"]
    wait_until(until)
    assert [decision(cli, OLD), decision(cli, NEW)] == ["unknown_token", "ALLOW"]
    assert cli.ok("get", "rolling", "--json").json()["previous_token_expire_time"] is None


def test_the_rotate_message_says_until_when_the_old_token_keeps_working(cli: AdminCli) -> None:
    cli.create("announced", OLD)
    run = cli.ok("rotate", "announced", "--grace", "24h", stdin=NEW)
    (row,) = [line for line in run.stdout.splitlines() if line.startswith("previous token")]
    until = row.split()[-1]
    assert (
        f"authz-admin: the old token keeps working until {until} (rotating again ends it at "
        "once); the new one works now\n"
    ) == run.stderr
    assert abs(moment(until) - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)
    again = cli.ok("rotate", "announced", "--generate")
    assert "authz-admin: the old token no longer works;" in again.stderr
    assert decision(cli, NEW) == "unknown_token"
    assert decision(cli, OLD) == "unknown_token"  # the second rotation ended the first grace


def test_get_and_list_show_when_the_previous_token_stops_working_only_while_it_works(
    cli: AdminCli,
) -> None:
    cli.create("steady", "steady-token-0123456789")
    cli.create("moving", OLD)
    plain = cli.ok("get", "moving")
    assert "previous token" not in plain.stdout
    assert "PREVIOUS TOKEN UNTIL" not in cli.ok("list").stdout
    until = cli.ok("rotate", "moving", "--grace", "2s", "--json", stdin=NEW).json()[
        "previous_token_expire_time"
    ]
    shown = f"{moment(until):%Y-%m-%dT%H:%M:%SZ}"
    assert f"previous token  works until {shown}\n" in cli.ok("get", "moving").stdout
    assert cli.ok("get", "moving", "--json").json()["previous_token_expire_time"] == until
    header, *rows = cli.ok("list").stdout.splitlines()
    assert header.endswith("  PREVIOUS TOKEN UNTIL")
    by_subject = {row.split()[1]: row.split()[-1] for row in rows}
    assert by_subject == {"bootstrap-admin": "-", "steady": "-", "moving": shown}
    listed = {
        e["subject"]: e["previous_token_expire_time"] for e in cli.ok("list", "--json").json()
    }
    assert listed == {"bootstrap-admin": None, "steady": None, "moving": until}
    wait_until(moment(until))
    assert "previous token" not in cli.ok("get", "moving").stdout
    assert "PREVIOUS TOKEN UNTIL" not in cli.ok("list").stdout


def test_revoking_during_a_grace_ends_both_tokens_at_once(cli: AdminCli) -> None:
    cli.create("ending", OLD)
    cli.ok("rotate", "ending", "--grace", "1h", stdin=NEW)
    cli.ok("revoke", "ending")
    assert [decision(cli, OLD), decision(cli, NEW)] == ["revoked", "revoked"]
    assert "previous token" not in cli.ok("get", "ending").stdout
    assert "PREVIOUS TOKEN UNTIL" not in cli.ok("list", "--all").stdout


@pytest.mark.parametrize(
    ("grace", "said"),
    [("8d", "--grace 8d: must be at most 7d"), ("2h", "--grace 2h: must end by the entry's")],
)
def test_a_grace_the_server_refuses_is_exit_2_naming_grace_and_keeps_the_old_token(
    cli: AdminCli, grace: str, said: str
) -> None:
    expires = f"{datetime.now(UTC) + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"
    cli.ok("create", "bounded", "--allow", "catalog", "--expires", expires, stdin=OLD)
    run = cli("rotate", "bounded", "--grace", grace, stdin=NEW)
    assert run.code == 2, run.output
    assert f"\n  {said}" in run.stderr
    assert run.stdout == ""
    assert [decision(cli, OLD), decision(cli, NEW)] == ["ALLOW", "unknown_token"]


def test_a_generated_token_lost_to_a_full_stdout_during_a_grace_says_the_old_one_still_works(
    cli: AdminCli,
) -> None:
    entry = cli.create("unlucky", OLD)
    with Path("/dev/full").open("w") as full:
        completed = subprocess.run(
            [str(ADMIN_CLI), "rotate", "unlucky", "--generate", "--grace", "1h"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=cli.env,
            timeout=60,
            check=False,
        )
    assert completed.returncode == 7
    (line,) = completed.stderr.splitlines()
    until = cli.ok("get", "unlucky", "--json").json()["previous_token_expire_time"]
    assert (
        f"its old token keeps working until {moment(until):%Y-%m-%dT%H:%M:%SZ} (rotating "
        "again ends it at once) and no one holds the new one"
    ) in line
    assert line.endswith(f"`authz-admin rotate {entry['id']} --generate`")
    assert decision(cli, OLD) == "ALLOW"
