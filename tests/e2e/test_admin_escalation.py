"""No escalation among admins, through the real `authz-admin` and a real server: an admin
grants only the `authz` rights it holds, and touches no entry holding rights it lacks."""

from __future__ import annotations

from pathlib import Path

from admin_cli import AdminCli
from authz.v1 import authz_pb2 as pb
from server_process import ADMIN_METADATA, BOOTSTRAP_TOKEN, ServerProcess

CREATOR_TOKEN = "creator-admin-token-42"
UPDATER_TOKEN = "updater-admin-token-42"
ATTACKER_KNOWS = "attacker-chosen-token-42"
NOT_AUTHORIZED = 4


def as_admin(cli: AdminCli, token: str, *args: str, stdin: str = "") -> tuple[int, str]:
    run = cli(*args, stdin=stdin, env={"AUTHZ_ADMIN_TOKEN": token})
    assert ATTACKER_KNOWS not in run.output
    return run.code, run.output


def check_admin(server: ServerProcess, token: str, permission: str, action: int) -> bool:
    request = pb.CheckRequest(token=token, plugin="authz", permission=permission, action=action)
    return server.authz.Check(request, timeout=10).decision == pb.ALLOW


def test_a_creator_cannot_mint_a_full_admin_through_the_cli(
    server: ServerProcess, tmp_path: Path
) -> None:
    cli = AdminCli(server.target, tmp_path)
    cli.create("creator", CREATOR_TOKEN, "authz:authz.entry.create:create")
    for allow in ("authz", "authz:authz.entry.create,authz.entry.update"):
        code, output = as_admin(
            cli, CREATOR_TOKEN, "create", "minted", f"--allow={allow}", stdin=ATTACKER_KNOWS
        )
        assert code == NOT_AUTHORIZED, output
        assert "authz rights it holds" in output
    assert not check_admin(server, ATTACKER_KNOWS, "authz.entry.read", 2)
    code, output = as_admin(
        cli, CREATOR_TOKEN, "create", "minted", "--allow=catalog", stdin=ATTACKER_KNOWS
    )
    assert code == 0, output


def test_an_updater_can_neither_widen_itself_nor_take_over_the_bootstrap_admin(
    server: ServerProcess, tmp_path: Path
) -> None:
    cli = AdminCli(server.target, tmp_path)
    updater = cli.create("updater", UPDATER_TOKEN, "authz:authz.entry.update,authz.entry.read")
    code, output = as_admin(cli, UPDATER_TOKEN, "update", updater["id"], "--allow=authz")
    assert code == NOT_AUTHORIZED, output
    assert not check_admin(server, UPDATER_TOKEN, "authz.entry.create", 1)

    code, output = as_admin(cli, UPDATER_TOKEN, "rotate", "bootstrap-admin", stdin=ATTACKER_KNOWS)
    assert code == NOT_AUTHORIZED, output
    assert "authz.entry.create" in output
    assert check_admin(server, BOOTSTRAP_TOKEN, "authz.entry.create", 1)
    assert not check_admin(server, ATTACKER_KNOWS, "authz.entry.read", 2)
    entries = server.admin.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA)
    assert [e.subject for e in entries.entries] == ["bootstrap-admin", "updater"]
