"""`authz-admin import-backstage` against a real server: an app-config written as Backstage
documents `backend.auth.externalAccess` (data/backstage-app-config.yaml) becomes entries whose
tokens Check as they did in Backstage; a dry run changes nothing, a second run finds every
entry present, what the server already holds is never changed, and no token is printed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from admin_cli import ADMIN_CLI, AdminCli, Run
from authz_client import AuthzClient
from server_process import ServerProcess

APP_CONFIG = str(Path(__file__).parent / "data" / "backstage-app-config.yaml")
CICD_TOKEN = "cicd-completion-events-token-0123456789"
ADMIN_CURL_TOKEN = "admin-curl-access-token-0123456789"
CATALOG_READER_TOKEN = "catalog-reader-static-token-0123456789"
SCAFFOLDER_TOKEN = "scaffolder-runner-${RUN}-token-0123456789"  # `$${RUN}` in the file
OTHER_TOKEN = "another-integrations-token-0123456789"
TOKENS = (CICD_TOKEN, ADMIN_CURL_TOKEN, CATALOG_READER_TOKEN, SCAFFOLDER_TOKEN, OTHER_TOKEN)
ENV = {"CICD_TOKEN": CICD_TOKEN, "ADMIN_CURL_TOKEN": ADMIN_CURL_TOKEN}
STATIC = ("cicd-system-completion-events", "catalog-reader", "scaffolder-runner")
UNRESTRICTED = "admin-curl-access"

# What each token may do in Backstage, by its accessRestrictions in the file: a request passes
# when one of the token's restrictions (one per plugin) allows it, and within a restriction
# the permission AND the action must be listed (a listed action needs the request to name one).
BACKSTAGE_DECISIONS = [
    (CICD_TOKEN, "events", None, None, True),
    (CICD_TOKEN, "events", "events.publish", "create", True),
    (CICD_TOKEN, "catalog", "catalog.entity.read", "read", False),
    (CATALOG_READER_TOKEN, "catalog", "catalog.entity.read", "read", True),
    (CATALOG_READER_TOKEN, "catalog", "catalog.location.read", "read", True),
    (CATALOG_READER_TOKEN, "catalog", "catalog.entity.read", "delete", False),
    (CATALOG_READER_TOKEN, "catalog", "catalog.entity.delete", "delete", False),
    (CATALOG_READER_TOKEN, "catalog", "catalog.entity.read", None, False),
    (CATALOG_READER_TOKEN, "scaffolder", "scaffolder.task.create", "create", False),
    (SCAFFOLDER_TOKEN, "scaffolder", "scaffolder.task.create", "create", True),
    (SCAFFOLDER_TOKEN, "scaffolder", "scaffolder.template.parameter.read", "read", True),
    (SCAFFOLDER_TOKEN, "scaffolder", "scaffolder.task.cancel", "update", False),
    (SCAFFOLDER_TOKEN, "catalog", "catalog.entity.refresh", "update", True),
    (SCAFFOLDER_TOKEN, "catalog", "catalog.entity.read", None, True),
    (SCAFFOLDER_TOKEN, "catalog", "catalog.entity.delete", "delete", False),
    (SCAFFOLDER_TOKEN, "events", None, None, False),
    (ADMIN_CURL_TOKEN, "catalog", "catalog.entity.delete", "delete", True),
    (ADMIN_CURL_TOKEN, "search", None, None, True),
]


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path) -> Iterator[AdminCli]:
    """The admin CLI against `server`; afterwards, no run of it has printed a token."""
    admin = AdminCli(server.target, tmp_path)
    yield admin
    assert_no_token_printed(admin.runs)


def assert_no_token_printed(runs: list[Run]) -> None:
    assert runs
    for run in runs:
        for token in TOKENS:
            assert token not in run.output, run.args


def import_(cli: AdminCli, *flags: str, config: str = APP_CONFIG) -> Run:
    return cli("import-backstage", config, *flags, env=ENV)


def plan_rows(run: Run) -> dict[str, list[str]]:
    """The plan table by SOURCE: its SUBJECT, PLAN, ACCESS and WHY cells."""
    lines = run.stdout.splitlines()
    header = lines[0]
    assert header.split() == ["SOURCE", "SUBJECT", "PLAN", "ACCESS", "WHY"]
    starts = [header.index(name) for name in ("SUBJECT", "PLAN", "ACCESS", "WHY")]
    rows = {}
    for line in lines[1:]:
        if not line.startswith(("externalAccess[", "keys[")):
            break
        cells = [line[a:b].strip() for a, b in zip([0, *starts], [*starts, None], strict=True)]
        rows[cells[0]] = cells[1:]
    return rows


def listed(cli: AdminCli) -> list[dict[str, Any]]:
    """Every entry as `list --all --json` shows it, without `last_used_time`: each admin call
    is a use of the admin token, and the import's Check of a token it finds a use of that."""
    entries: list[dict[str, Any]] = cli.ok("list", "--all", "--json").json()
    return [{k: v for k, v in e.items() if k != "last_used_time"} for e in entries]


def test_a_dry_run_prints_the_plan_and_changes_nothing(
    cli: AdminCli, server: ServerProcess
) -> None:
    before = listed(cli)

    run = import_(cli, "--dry-run")
    assert run.code == 9, run.output
    rows = plan_rows(run)
    assert {source: cells[:2] for source, cells in rows.items()} == {
        "externalAccess[0]": ["cicd-system-completion-events", "create"],
        "externalAccess[1]": ["catalog-reader", "create"],
        "externalAccess[2]": ["scaffolder-runner", "create"],
        "externalAccess[3]": [UNRESTRICTED, "skipped"],
        "externalAccess[4]": ["legacy-catalog", "not importable"],
        "externalAccess[5]": ["custom-prefix", "not importable"],
    }
    assert rows["externalAccess[1]"][2] == "catalog:catalog.entity.read,catalog.location.read:read"
    assert rows["externalAccess[2]"][2] == (
        "scaffolder::create,read catalog:catalog.entity.read,catalog.entity.refresh"
    )
    assert "--allow-unrestricted" in rows["externalAccess[3]"][3]
    assert run.stdout.splitlines()[-1] == (
        "dry run, nothing changed: 3 to create, 1 skipped, 2 not importable"
    )
    assert "3 of 6 entries were not imported" in run.stderr

    as_json = import_(cli, "--dry-run", "--allow-unrestricted", "--json")
    assert as_json.code == 9
    document = as_json.json()
    assert document["dry_run"] is True
    assert [(e["subject"], e["plan"], e["result"]) for e in document["entries"][:4]] == [
        (subject, "create", None) for subject in (*STATIC, UNRESTRICTED)
    ]
    assert document["counts"]["create"] == 4
    assert document["counts"]["not_importable"] == 2

    assert listed(cli) == before
    with AuthzClient(server.target) as authz:
        assert authz.check(CICD_TOKEN, "events").reason == "unknown_token"


def test_an_import_creates_each_static_token_as_an_entry_that_checks_as_in_backstage(
    cli: AdminCli, server: ServerProcess
) -> None:
    run = import_(cli, "--allow-unrestricted", "--json")
    assert run.code == 9, run.output  # the legacy and jwks entries are not importable
    results = {e["subject"]: e for e in run.json()["entries"]}
    assert [results[s]["result"] for s in (*STATIC, UNRESTRICTED)] == ["created"] * 4
    assert "unrestricted" in run.stderr

    entries = {e["subject"]: e for e in cli.ok("list", "--json").json()}
    assert set(entries) == {"bootstrap-admin", *STATIC, UNRESTRICTED}
    for subject in (*STATIC, UNRESTRICTED):
        assert entries[subject]["id"] == results[subject]["entry_id"]
        assert entries[subject]["description"].startswith("imported from Backstage")
    assert entries["scaffolder-runner"]["access_restrictions"] == [
        {"plugin": "scaffolder", "permissions": [], "actions": ["create", "read"]},
        {
            "plugin": "catalog",
            "permissions": ["catalog.entity.read", "catalog.entity.refresh"],
            "actions": [],
        },
    ]
    assert entries[UNRESTRICTED]["unrestricted"] is True

    with AuthzClient(server.target) as authz:
        for token, plugin, permission, action, allowed in BACKSTAGE_DECISIONS:
            answer = authz.check(token, plugin, permission, action)
            case = (plugin, permission, action, answer.reason)
            assert answer.allowed is allowed, case
            assert answer.http_status == (200 if allowed else 403), case
        assert authz.check(CICD_TOKEN, "events").subject == "cicd-system-completion-events"


def test_a_second_import_changes_nothing_and_reports_every_entry_present(cli: AdminCli) -> None:
    first = import_(cli, "--allow-unrestricted")
    assert first.code == 9, first.output
    created = [line.split()[:2] for line in first.stdout.splitlines() if line.startswith("created")]
    assert created == [["created", subject] for subject in (*STATIC, UNRESTRICTED)]
    before = listed(cli)

    again = import_(cli, "--allow-unrestricted")
    assert again.code == 9, again.output
    rows = plan_rows(again)
    assert [rows[f"externalAccess[{i}]"][1] for i in range(4)] == ["present"] * 4
    assert not any(line.startswith("created") for line in again.stdout.splitlines())
    assert again.stdout.splitlines()[-1] == "4 present, 2 not importable"
    assert listed(cli) == before


def test_an_app_config_with_only_restricted_static_tokens_imports_with_exit_0_twice(
    cli: AdminCli,
) -> None:
    config = cli.file(
        "app-config.production.yaml",
        "backend:\n"
        "  auth:\n"
        "    externalAccess:\n"
        "      - type: static\n"
        "        options:\n"
        "          token: ${CICD_TOKEN}\n"
        "          subject: cicd-system-completion-events\n"
        "        accessRestrictions:\n"
        "          - plugin: events\n"
        "            permissionAttribute:\n"
        "              action: create\n",
    )
    first = import_(cli, config=config)
    assert (first.code, first.stderr) == (0, "")
    assert first.stdout.splitlines()[-1] == "1 created"
    again = import_(cli, config=config)
    assert (again.code, again.stderr) == (0, "")
    assert again.stdout.splitlines()[-1] == "1 present"


def test_what_the_server_already_holds_is_a_conflict_and_is_never_changed(
    cli: AdminCli,
) -> None:
    # The subject of one entry, held with another token; another subject holding the CI token;
    # the template runner's subject and token with other access; a revoked entry's token.
    cli.create("catalog-reader", OTHER_TOKEN, "catalog")
    holder = cli.create("old-cicd", CICD_TOKEN, "events")
    cli.create("scaffolder-runner", SCAFFOLDER_TOKEN, "scaffolder")
    cli.create("retired-curl", ADMIN_CURL_TOKEN, "search")
    cli.ok("revoke", "retired-curl")
    before = listed(cli)

    run = import_(cli, "--allow-unrestricted", "--json")
    assert run.code == 9, run.output
    results = {e["source"]: e for e in run.json()["entries"]}
    assert [results[f"externalAccess[{i}]"]["result"] for i in range(4)] == ["conflict"] * 4
    assert (
        f"the token is already the entry {holder['id']}'s (old-cicd)"
        in (results["externalAccess[0]"]["reason"])
    )
    assert (
        "holds another token and is never changed here" in (results["externalAccess[1]"]["reason"])
    )
    assert (
        "has this subject and token with other access (scaffolder)"
        in (results["externalAccess[2]"]["reason"])
    )
    assert "revoked entry's" in results["externalAccess[3]"]["reason"]
    assert listed(cli) == before


def test_an_import_through_an_admin_listener_asks_check_on_the_main_listener(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "authz.db", None, "--admin-listen", "127.0.0.1:0")
    try:
        cli = AdminCli(server.admin_target, tmp_path)
        refused = import_(cli)
        assert refused.code == 5, refused.output
        assert "give --check-target the main listener" in refused.stderr
        assert [e["subject"] for e in cli.ok("list", "--json").json()] == ["bootstrap-admin"]

        first = import_(cli, "--check-target", server.target)
        assert first.code == 9, first.output
        assert [line.split()[1] for line in first.stdout.splitlines() if "created" in line[:8]] == (
            list(STATIC)
        )
        again = import_(cli, "--check-target", server.target)
        assert [plan_rows(again)[f"externalAccess[{i}]"][1] for i in range(3)] == ["present"] * 3
        assert_no_token_printed(cli.runs)
    finally:
        server.stop()


def test_an_app_config_that_cannot_be_read_is_a_usage_error_that_shows_none_of_it(
    cli: AdminCli,
) -> None:
    broken = cli.file(
        "app-config.yaml",
        "backend:\n  auth:\n    externalAccess:\n      - type: static\n        options:\n"
        f'          token: "{OTHER_TOKEN}\n          subject: broken\n',
    )
    run = import_(cli, config=broken)
    assert run.code == 2, run.output
    assert run.stdout == ""
    assert run.stderr.startswith("authz-admin: error: APP_CONFIG ")
    assert run.stderr.endswith(
        " is not valid YAML: found unexpected end of stream at line 8, column 1; "
        "while scanning a quoted scalar at line 6, column 18\n"
    )
    assert OTHER_TOKEN[:12] not in run.stderr  # PyYAML's own message quotes the line
    missing = import_(cli, config=str(Path(broken).with_name("absent.yaml")))
    assert missing.code == 2
    assert "cannot read APP_CONFIG" in missing.stderr
    unrelated = cli.file("app-config.local.yaml", "app:\n  title: Portal\n")
    nothing = import_(cli, config=unrelated)
    assert nothing.code == 2
    assert "has no backend.auth.externalAccess" in nothing.stderr


def run_with_stdout(cli: AdminCli, redirect: str, *flags: str) -> Run:
    """`import-backstage` with stdout redirected by the shell: `>&-` closes it, `>/dev/full`
    fills it."""
    args = ("import-backstage", APP_CONFIG, *flags)
    completed = subprocess.run(
        ["/bin/sh", "-c", f'exec "$@" {redirect}', "sh", str(ADMIN_CLI), *args],
        capture_output=True,
        text=True,
        env=cli.env | ENV,
        timeout=60,
        check=False,
    )
    run = Run(args, completed.returncode, completed.stdout, completed.stderr)
    cli.runs.append(run)
    return run


def test_an_import_whose_output_cannot_be_written_creates_nothing_unseen(cli: AdminCli) -> None:
    for redirect, flags in ((">&-", ("--json",)), (">/dev/full", ())):
        run = run_with_stdout(cli, redirect, *flags)
        assert run.code == 7, run.output
        assert "cannot write to stdout" in run.stderr
        assert [e["subject"] for e in cli.ok("list", "--json").json()] == ["bootstrap-admin"]

    # JSON is written once, at the end: the entries are created by then, and it says so.
    late = run_with_stdout(cli, ">/dev/full", "--json")
    assert late.code == 7, late.output
    assert "the entries the import created stay: run it again" in late.stderr
    again = import_(cli, "--json")
    assert [e["result"] for e in again.json()["entries"][:3]] == ["present"] * 3
