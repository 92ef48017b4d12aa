"""The real `authz-admin` executable against a real server: the seed's workflow, every exit
code docs/admin-cli.md documents, and no token printed where none may be; and that page kept in
step with `authz-admin --help` and each command's `--help`."""

from __future__ import annotations

import base64
import os
import re
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from admin_cli import ADMIN_CLI, AdminCli, Run
from authz.v1 import authz_pb2 as pb
from server_process import ADMIN_METADATA, BOOTSTRAP_TOKEN, ServerProcess

ADMIN_PAGE = Path(__file__).resolve().parents[2] / "docs" / "admin-cli.md"
COMMANDS = (
    "gen-token",
    "create",
    "get",
    "list",
    "update",
    "rotate",
    "revoke",
    "check",
    "audit",
    "import-backstage",
)
BACKSTAGE_CONFIG = Path(__file__).resolve().parent / "data" / "backstage-app-config.yaml"
CATALOG_READER = "catalog:catalog.entity.read:read"


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path) -> AdminCli:
    return AdminCli(server.target, tmp_path)


def generated_row(run: Run) -> str:
    """The token in the `token` row of a human `--generate` output."""
    rows = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("token ")]
    assert len(rows) == 1, run.stdout
    return rows[0]


def test_the_executable_under_test_is_the_installed_console_script() -> None:
    assert ADMIN_CLI.is_file()
    assert os.access(ADMIN_CLI, os.X_OK)


def test_the_seed_workflow_runs_through_the_cli_from_gen_token_to_revoke(cli: AdminCli) -> None:
    token = cli.ok("gen-token").stdout.strip()
    assert len(base64.b64decode(token, validate=True)) == 24

    created = cli.ok(
        "create", "catalog-sync", "--allow", CATALOG_READER, "--description", "nightly sync",
        "--json", stdin=token + "\n",
    ).json()  # fmt: skip
    assert created["subject"] == "catalog-sync"
    assert created["state"] == "active"
    assert created["unrestricted"] is False
    assert created["access_restrictions"] == [
        {"plugin": "catalog", "permissions": ["catalog.entity.read"], "actions": ["read"]}
    ]

    listed = cli.ok("list", "--json").json()
    assert [e["subject"] for e in listed] == ["bootstrap-admin", "catalog-sync"]
    table = cli.ok("list").stdout.splitlines()
    assert table[0].split() == ["ID", "SUBJECT", "STATE", "RESTRICTIONS", "EXPIRES", "LAST", "USED"]
    row = next(line for line in table if "catalog-sync" in line)
    assert row.split()[:4] == [created["id"], "catalog-sync", "active", CATALOG_READER]
    assert table[0].index("SUBJECT") == row.index("catalog-sync")  # aligned columns

    reading = ("check", "catalog", "--permission", "catalog.entity.read", "--action", "read")
    allowed = cli.ok(*reading, "--json", stdin=token)
    assert allowed.json() == {
        "decision": "ALLOW",
        "allowed": True,
        "http_status": 200,
        "reason": "",
        "subject": "catalog-sync",
        "entry_id": created["id"],
    }
    human = cli.ok(*reading, stdin=f"Bearer {token}\n")
    assert human.stdout.split()[:4] == ["ALLOW", "200", "subject", "catalog-sync"]

    under_scoped = cli("check", "scaffolder", "--json", stdin=token)
    assert under_scoped.code == 1
    assert (under_scoped.json()["http_status"], under_scoped.json()["reason"]) == (
        403,
        "plugin_not_allowed",
    )
    writing = cli("check", "catalog", "--action", "delete", stdin=token)
    assert (writing.code, writing.stdout) == (1, "DENY  403  action_not_allowed\n")
    stranger = cli("check", "catalog", "--json", stdin=cli.ok("gen-token").stdout)
    assert stranger.code == 1
    assert stranger.json()["http_status"] == 401
    assert stranger.json()["reason"] == "unknown_token"

    rotated = cli.ok("rotate", "catalog-sync", "--generate", "--json")
    new_token = rotated.json()["token"]
    assert new_token != token
    assert rotated.json()["etag"] != created["etag"]
    assert "can never be shown again" in rotated.stderr
    assert cli("check", "catalog", "--json", stdin=token).json()["reason"] == "unknown_token"
    assert cli.ok("check", "catalog", "--action", "read", stdin=new_token).code == 0

    revoked = cli.ok("revoke", "catalog-sync", "--reason", "retired", "--json").json()
    assert (revoked["state"], revoked["revoke_reason"]) == ("revoked", "retired")
    after = cli("check", "catalog", "--action", "read", "--json", stdin=new_token)
    assert after.code == 1
    assert (after.json()["http_status"], after.json()["reason"]) == (401, "revoked")

    assert [e["subject"] for e in cli.ok("list", "--json").json()] == ["bootstrap-admin"]
    audit = {e["subject"]: e["state"] for e in cli.ok("list", "--all", "--json").json()}
    assert audit == {"bootstrap-admin": "active", "catalog-sync": "revoked"}


def test_update_changes_only_what_is_given_and_allow_replaces_the_restrictions(
    cli: AdminCli,
) -> None:
    entry = cli.create("scoped", "scoped-token-0123456789", CATALOG_READER, "events")
    described = cli.ok("update", "scoped", "--description", "kept", "--json").json()
    assert described["access_restrictions"] == entry["access_restrictions"]
    assert described["description"] == "kept"

    narrowed = cli.ok("update", entry["id"], "--allow", "catalog::read,update", "--json").json()
    assert narrowed["access_restrictions"] == [
        {"plugin": "catalog", "permissions": [], "actions": ["read", "update"]}
    ]
    assert narrowed["description"] == "kept"

    expiring = cli.ok("update", "scoped", "--expires", "2099-01-31T12:00:00+02:00", "--json")
    assert expiring.json()["expire_time"] == "2099-01-31T10:00:00Z"
    assert "2099-01-31T10:00:00Z" in cli.ok("list").stdout
    cleared = cli.ok("update", "scoped", "--no-expiry", "--json").json()
    assert cleared["expire_time"] is None

    opened = cli.ok("update", "scoped", "--unrestricted", "--json")
    assert "warning: --unrestricted" in opened.stderr
    assert (opened.json()["unrestricted"], opened.json()["access_restrictions"]) == (True, [])
    assert "UNRESTRICTED" in cli.ok("get", "scoped").stdout


def test_an_update_pinned_to_the_etag_just_read_succeeds(cli: AdminCli) -> None:
    entry = cli.create("pinned", "pinned-token-0123456789")
    updated = cli.ok("update", "pinned", "--etag", entry["etag"], "--description", "x", "--json")
    assert updated.json()["description"] == "x"
    assert updated.json()["etag"] != entry["etag"]


def test_unrestricted_must_be_spelled_out_and_warns_on_stderr(cli: AdminCli) -> None:
    bare = cli("create", "nothing-allowed", stdin="nothing-allowed-token-1")
    assert bare.code == 2
    assert "--allow" in bare.stderr
    assert "--unrestricted" in bare.stderr
    opened = cli.ok("create", "everything", "--unrestricted", stdin="everything-token-1")
    assert "warning: --unrestricted" in opened.stderr
    assert "UNRESTRICTED" in opened.stdout


def test_a_new_token_is_read_from_a_file_without_its_trailing_newline(cli: AdminCli) -> None:
    path = cli.file("new.token", "file-token-0123456789\n")
    cli.ok("create", "from-file", "--allow", "catalog", "--token-file", path)
    assert cli.ok("check", "catalog", stdin="file-token-0123456789").code == 0
    assert cli.ok("check", "catalog", "--token-file", path).code == 0


def test_a_get_shows_every_field_and_the_admin_token_can_come_from_a_file(cli: AdminCli) -> None:
    admin_file = cli.file("admin.token", BOOTSTRAP_TOKEN + "\n")
    run = cli(
        "get", "bootstrap-admin", "--admin-token-file", admin_file, env={"AUTHZ_ADMIN_TOKEN": ""}
    )
    assert run.code == 0, run.stderr
    labels = [line.split("  ")[0].strip() for line in run.stdout.splitlines()]
    assert labels[:4] == ["id", "subject", "description", "state"]
    assert {"access", "created", "expires", "last used", "etag"} <= set(labels)
    assert "authz:authz.entry.read,authz.entry.create" in run.stdout


def test_no_command_prints_a_token_except_gen_token_and_generate_once(
    cli: AdminCli, server: ServerProcess
) -> None:
    generated = cli.ok("gen-token").stdout.strip()
    supplied = "supplied-token-0123456789"
    from_file = "from-file-token-0123456789"
    refused = "refused token with spaces"
    wrong_admin = "wrong-admin-token-0123456789"
    flag_value = "flag-value-token-0123456789"
    path = cli.file("rotation.token", from_file + "\n")

    cli.create("holder", supplied, CATALOG_READER)
    assert cli("create", "again", "--allow", "catalog", stdin=supplied).code == 6
    assert cli("create", "spaced", "--allow", "catalog", stdin=refused).code == 2
    assert cli("create", "flagged", "--allow", "catalog", "--token", flag_value).code == 2
    assert cli("--admin-token", flag_value, "list").code == 2
    for token in (supplied, refused, generated):
        cli("check", "catalog", "--action", "read", stdin=token)
    cli.ok("check", "catalog", "--action", "read", stdin=f"Bearer {supplied}")
    born = cli.ok("create", "born", "--allow", "events", "--generate")
    born_token = generated_row(born)
    cli.ok("check", "events", stdin=born_token)
    cli.ok("rotate", "holder", "--token-file", path)
    assert cli("rotate", "born", "--token-file", path).code == 6
    reborn = cli.ok("rotate", "born", "--generate", "--json")
    reborn_token = reborn.json()["token"]
    cli.ok("get", "holder")
    cli.ok("list", "--all")
    cli.ok("list", "--json")
    cli.ok("update", "holder", "--description", "rotated once")
    cli.ok("revoke", "born")
    cli("check", "events", stdin=reborn_token)
    assert cli("list", env={"AUTHZ_ADMIN_TOKEN": wrong_admin}).code == 4

    secrets = {generated, supplied, from_file, refused, wrong_admin, flag_value, BOOTSTRAP_TOKEN}
    secrets |= {born_token, reborn_token}
    showings = {id(cli.runs[0]): generated, id(born): born_token, id(reborn): reborn_token}
    for run in cli.runs:
        shown = showings.get(id(run))
        for secret in secrets - {shown}:
            assert secret not in run.output, (run.args, secret)
        if shown is not None:
            assert run.output.count(shown) == 1, run.args
    for run in (born, reborn):
        assert "can never be shown again" in run.stderr
        assert showings[id(run)] not in run.stderr
    assert len(cli.runs) > 20
    for secret in secrets:
        assert secret not in server.log


# -- every documented exit code ------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    code: int
    act: Callable[[AdminCli], Run]
    hints: tuple[str, ...]  # what stdout+stderr must say, e.g. what to do next
    # A failure prints nothing on stdout, but for a report of what was done (an import's plan).
    reports: bool = False


def _unreachable(cli: AdminCli) -> Run:
    # Bound but not listening: connections are refused, and nothing else can take the port.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        run = cli("list", "--target", f"127.0.0.1:{port}", "--timeout", "0.5")
    assert f"no server answered at 127.0.0.1:{port}" in run.stderr
    return run


def _silent(cli: AdminCli) -> Run:
    # Listening, so the connection opens, but nothing ever answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        return cli("get", "anything", "--target", f"127.0.0.1:{port}", "--timeout", "0.5")


def _not_an_authz_service(cli: AdminCli) -> Run:
    other = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = other.add_insecure_port("127.0.0.1:0")
    other.start()
    try:
        return cli("get", "anything", "--target", f"127.0.0.1:{port}")
    finally:
        other.stop(None)


def _ambiguous(cli: AdminCli) -> Run:
    ids = []
    for n in (1, 2):
        ids.append(cli.create("twice-revoked", f"twice-revoked-token-{n}")["id"])
        cli.ok("revoke", "twice-revoked")
    run = cli("get", "twice-revoked")
    assert all(entry_id in run.stderr for entry_id in ids)
    return run


def _under_scoped(cli: AdminCli) -> Run:
    cli.create("reader-admin", "reader-admin-token-1", "authz:authz.entry.read")
    path = cli.file("reader.token", "reader-admin-token-1\n")
    assert cli.ok("list", "--admin-token-file", path).code == 0
    return cli("create", "x", "--allow", "catalog", "--admin-token-file", path, stdin="x-token-12")


def _stale_etag(cli: AdminCli) -> Run:
    old = cli.create("moving", "moving-token-0123456789")["etag"]
    cli.ok("update", "moving", "--description", "moved on")
    return cli("update", "moving", "--etag", old, "--description", "from a stale read")


def _revoked_update(cli: AdminCli) -> Run:
    cli.create("gone", "gone-token-0123456789")
    cli.ok("revoke", "gone")
    return cli("update", "gone", "--description", "too late")


def _taken_subject(cli: AdminCli) -> Run:
    cli.create("taken", "taken-token-0123456789")
    return cli("create", "taken", "--allow", "catalog", stdin="taken-token-987654321")


def _reused_token(cli: AdminCli) -> Run:
    cli.create("first-holder", "reused-token-0123456789")
    cli.ok("revoke", "first-holder")
    return cli("create", "second-holder", "--allow", "catalog", stdin="reused-token-0123456789")


def _empty_token_file(cli: AdminCli) -> Run:
    path = cli.file("empty.token", "\n")
    run = cli("check", "catalog", "--token-file", path, *NOWHERE)
    assert run.stderr.count("--token-file") == 1  # the file is named, not suggested again
    return run


def _stdout_full(cli: AdminCli) -> Run:
    with Path("/dev/full").open("w") as full:
        completed = subprocess.run(
            [str(ADMIN_CLI), "list"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=cli.env,
            timeout=60,
            check=False,
        )
    return Run(("list",), completed.returncode, "", completed.stderr)


def _broken_chain(cli: AdminCli) -> Run:
    """`audit --verify` on a server of its own whose database lost an audit event."""
    db = cli.tmp_path / "broken-chain" / "authz.db"
    first = ServerProcess(db)  # the bootstrap is the first event, this create the second
    request = pb.CreateEntryRequest(subject="x", token="broken-chain-token-0123", unrestricted=True)
    first.admin.CreateEntry(request, metadata=ADMIN_METADATA)
    first.stop()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TRIGGER audit_no_delete")  # as someone with the file could
        conn.execute("DELETE FROM audit_events WHERE sequence = 1")
        conn.commit()
    server = ServerProcess(db)
    try:
        server.admin.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA)
        return AdminCli(server.target, cli.tmp_path)("audit", "--verify")
    finally:
        server.stop()


def _import_incomplete(cli: AdminCli) -> Run:
    # The file's legacy and jwks entries never import, and one needs a variable not set.
    return cli("import-backstage", "--dry-run", str(BACKSTAGE_CONFIG), env={"CICD_TOKEN": "c" * 40})


NOWHERE = ("--target", "127.0.0.1:1", "--timeout", "0.5")
SCENARIOS = {
    "0-success": Scenario(0, lambda cli: cli("get", "bootstrap-admin"), ("bootstrap-admin",)),
    "1-check-denies": Scenario(
        1, lambda cli: cli("check", "catalog", stdin=BOOTSTRAP_TOKEN), ("DENY", "403")
    ),
    "2-unknown-command": Scenario(2, lambda cli: cli("frobnicate"), ("invalid choice",)),
    "2-bad-restriction-syntax-before-any-call": Scenario(
        2,
        lambda cli: cli(
            "create", "x", "--allow", "catalog:a:read:more", *NOWHERE, stdin="tok-12345"
        ),
        ("PLUGIN[:PERMISSIONS[:ACTIONS]]",),
    ),
    "2-unknown-action": Scenario(
        2,
        lambda cli: cli("update", "x", "--allow", "catalog::fly", *NOWHERE),
        ("unknown action 'fly'",),
    ),
    "2-no-token-on-stdin": Scenario(
        2,
        lambda cli: cli("create", "x", "--allow", "catalog", *NOWHERE),
        ("no new token on stdin", "--token-file"),
    ),
    "2-no-token-to-check": Scenario(
        2, lambda cli: cli("check", "catalog", *NOWHERE), ("no token to check",)
    ),
    "2-empty-token-file": Scenario(2, _empty_token_file, ("holds no token to check", "stdin")),
    "2-empty-item-in-a-restriction": Scenario(
        2,
        lambda cli: cli("create", "x", "--allow", "catalog:,,", *NOWHERE, stdin="tok-12345"),
        ("an empty permission in ',,'", "usage: authz-admin create "),
    ),
    "2-one-plugin-allowed-twice": Scenario(
        2,
        lambda cli: cli(
            "create",
            "x",
            "--allow",
            "catalog",
            "--allow",
            "catalog::read",
            *NOWHERE,
            stdin="tok-12345",
        ),
        ("the plugin 'catalog' is given twice",),
    ),
    "2-admin-token-with-a-newline-before-any-call": Scenario(
        2,
        lambda cli: cli("list", *NOWHERE, env={"AUTHZ_ADMIN_TOKEN": "admin-token\n-rest"}),
        ("AUTHZ_ADMIN_TOKEN: the token holds whitespace",),
    ),
    "2-admin-token-file-with-two-newlines-before-any-call": Scenario(
        2,
        lambda cli: cli(
            "list",
            "--admin-token-file",
            cli.file("admin.token", BOOTSTRAP_TOKEN + "\n\n"),
            *NOWHERE,
        ),
        ("admin.token: once its one trailing newline is stripped, the token holds whitespace",),
    ),
    "2-invalid-argument-names-every-field-as-its-flag": Scenario(
        2,
        lambda cli: cli(
            "create",
            "bad subject",
            "--allow",
            "catalog:Bad!",
            "--expires",
            "2001-01-01",
            stdin="short",
        ),
        (
            "\n  SUBJECT 'bad subject': ",
            "\n  the new token: ",
            "\n  --allow 'catalog:Bad!': permission 'Bad!': ",
            "\n  --expires 2001-01-01T00:00:00Z: must be in the future",
        ),
    ),
    "3-unknown-subject": Scenario(
        3, lambda cli: cli("get", "no-such-entry"), ("'no-such-entry'", "list --all")
    ),
    "3-unknown-id": Scenario(
        3,
        lambda cli: cli("revoke", "00000000-0000-4000-8000-000000000000"),
        ("00000000-0000-4000-8000-000000000000",),
    ),
    "3-ambiguous-subject": Scenario(3, _ambiguous, ("2 revoked entries", "by its id")),
    "4-no-admin-token": Scenario(
        4,
        lambda cli: cli("list", env={"AUTHZ_ADMIN_TOKEN": ""}),
        ("set AUTHZ_ADMIN_TOKEN", "authz.entry.read"),
    ),
    "4-unknown-admin-token": Scenario(
        4,
        lambda cli: cli("list", env={"AUTHZ_ADMIN_TOKEN": "not-an-admin-token-1"}),
        ("set AUTHZ_ADMIN_TOKEN", "authz.entry.read"),
    ),
    "4-under-scoped-admin-token": Scenario(
        4,
        _under_scoped,
        (
            "does not grant authz.entry.create",
            "(or --admin-token-file) to a token with authz.entry.create",
        ),
    ),
    "5-nothing-listens": Scenario(5, _unreachable, ("is `authz-service serve` running",)),
    "5-no-answer-in-time": Scenario(5, _silent, ("within 0.5 s", "--timeout")),
    "5-not-an-authz-service": Scenario(5, _not_an_authz_service, ("UNIMPLEMENTED",)),
    "6-subject-taken": Scenario(6, _taken_subject, ("pick another subject",)),
    "6-token-reused": Scenario(6, _reused_token, ("never reused", "--generate")),
    "6-stale-etag": Scenario(6, _stale_etag, ("re-read it with `authz-admin get moving`",)),
    "6-revoked-entry": Scenario(6, _revoked_update, ("create a new entry",)),
    "7-stdout-unwritable": Scenario(7, _stdout_full, ("cannot write to stdout: No space left",)),
    "8-audit-chain-broken": Scenario(8, _broken_chain, ("chain is broken at event",)),
    "9-import-incomplete": Scenario(
        9, _import_incomplete, ("were not imported", "dry run"), reports=True
    ),
}


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("admin-cli") / "authz.db")
    yield server
    server.stop()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_documented_exit_code_is_reached_with_a_message_saying_what_to_do(
    name: str, shared_server: ServerProcess, tmp_path: Path
) -> None:
    scenario = SCENARIOS[name]
    run = scenario.act(AdminCli(shared_server.target, tmp_path))
    assert run.code == scenario.code, run.output
    for hint in scenario.hints:
        assert hint in run.output
    if scenario.code >= 2:
        assert (run.stdout != "") == scenario.reports
        assert "Traceback" not in run.stderr
        assert "Exception ignored" not in run.stderr


def help_text(*command: str) -> str:
    """What `authz-admin [COMMAND] --help` prints."""
    run = subprocess.run(
        [str(ADMIN_CLI), *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def page_section(heading: str) -> str:
    """One `## heading` section of docs/admin-cli.md, up to the next one."""
    return ADMIN_PAGE.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def documented_exit_codes() -> set[int]:
    return {int(code) for code in re.findall(r"^\| (\d+) \|", page_section("Exit codes"), re.M)}


def test_the_admin_page_exit_code_table_lists_exactly_the_codes_the_cli_reaches() -> None:
    assert documented_exit_codes() == {scenario.code for scenario in SCENARIOS.values()}


def test_the_admin_page_exit_codes_are_the_ones_the_cli_help_lists() -> None:
    epilog = help_text().split("exit codes:", 1)[1].split("\n\n", 1)[0]
    assert {int(code) for code in re.findall(r"(?:^|,)\s*(\d+) ", epilog)} == (
        documented_exit_codes()
    )


def test_every_admin_command_is_documented_on_the_admin_page() -> None:
    page = ADMIN_PAGE.read_text()
    for command in COMMANDS:
        assert f"authz-admin {command}" in page, command
    for setting in ("AUTHZ_TARGET", "AUTHZ_ADMIN_TOKEN", "--admin-token-file", "--timeout"):
        assert setting in page_section("Settings"), setting
    assert "--allow PLUGIN[:PERM1,PERM2[:ACTION1,ACTION2]]" in page


def test_every_command_the_cli_offers_is_one_the_admin_page_documents() -> None:
    offered = set(re.findall(r"^    ([a-z-]+)", help_text(), re.M))
    assert offered == set(COMMANDS)
    table = page_section("Commands")
    documented = set(re.findall(r"^\| `authz-admin ([a-z-]+)", table, re.M))
    assert documented == offered


@pytest.mark.parametrize(
    "command", [(), *((command,) for command in COMMANDS)], ids=["authz-admin", *COMMANDS]
)
def test_every_option_in_the_cli_help_is_documented_on_the_admin_page(
    command: tuple[str, ...],
) -> None:
    page = ADMIN_PAGE.read_text()
    listed = help_text(*command).split("\noptions:\n", 1)[1]
    # Each option's own line: its names (and metavar) before the two spaces of its help text.
    invocations = [line.strip().split("  ")[0] for line in listed.splitlines() if line[:3] == "  -"]
    options = {o for i in invocations for o in re.findall(r"--[a-z][a-z-]*", i)} - {"--help"}
    assert "--json" in options
    missing = sorted(o for o in options if not re.search(rf"{re.escape(o)}(?![\w-])", page))
    assert missing == []
