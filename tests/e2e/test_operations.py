"""Operating the server: health, reflection, graceful SIGTERM, and refusing bad settings."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from authz.v1 import authz_pb2 as pb
from server_process import ADMIN_METADATA, BOOTSTRAP_TOKEN, ServerProcess


def test_health_reports_serving_for_the_server_and_each_service(server: ServerProcess) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", "authz.v1.AuthzService", "authz.v1.AdminService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_health_lists_every_service_without_an_error_line(server: ServerProcess) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    for _ in range(3):
        listed = health.List(health_pb2.HealthListRequest(), timeout=10)
    assert {name: answer.status for name, answer in listed.statuses.items()} == dict.fromkeys(
        [
            "",
            "authz.v1.AuthzService",
            "authz.v1.AdminService",
            "envoy.service.auth.v3.Authorization",
        ],
        health_pb2.HealthCheckResponse.SERVING,
    )
    assert '"level": "ERROR"' not in server.log
    assert "Traceback" not in server.log


def test_the_open_file_limit_is_raised_to_the_hard_limit_and_logged(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("needs a finite hard limit above 256 open files")
    # The server inherits a low soft limit from this process, as from a default shell.
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        server = ServerProcess(tmp_path / "authz.db")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        limits = Path(f"/proc/{server.process.pid}/limits").read_text()
        row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert row.split()[3:5] == [str(hard), str(hard)]
        assert f"open-file limit {hard}" in server.log
    finally:
        server.stop()


def test_reflection_lists_the_services(server: ServerProcess) -> None:
    services = set(ProtoReflectionDescriptorDatabase(server.channel).get_services())
    assert {"authz.v1.AuthzService", "authz.v1.AdminService", "grpc.health.v1.Health"} <= services


def test_metrics_count_checks_by_reason_and_argon2_work(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "authz.db", None, "--metrics-listen", "127.0.0.1:0")
    try:
        server.admin.CreateEntry(
            pb.CreateEntryRequest(
                subject="metered",
                token="metered-token-123",
                access_restrictions=[pb.AccessRestriction(plugin="catalog")],
            ),
            metadata=ADMIN_METADATA,
        )
        for _ in range(3):
            server.authz.Check(pb.CheckRequest(token="metered-token-123", plugin="catalog"))
        for n in range(4):
            server.authz.Check(pb.CheckRequest(token=f"never-issued-{n:04d}", plugin="catalog"))
        text = server.metrics()
    finally:
        server.stop()
    # Admin calls authenticate through Check too: the create adds one ALLOW.
    assert 'authz_checks_total{decision="allow",reason="ok"} 4.0' in text
    assert 'authz_checks_total{decision="deny",reason="unknown_token"} 4.0' in text
    # One verify for the admin's first call, one for metered's first check; misses cost none.
    assert "authz_argon2_verifications_total 2.0" in text
    assert "authz_tag_misses_total 4.0" in text
    assert "authz_cache_tokens 2.0" in text


def test_sigterm_drains_in_flight_calls_and_exits_zero(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "authz.db")
    # Each create does argon2 work, so the burst is still being served when SIGTERM lands.
    calls: list[Future[pb.Entry]] = [
        server.admin.CreateEntry.future(
            pb.CreateEntryRequest(
                subject=f"drain-{n}",
                token=f"drain-token-{n:03d}",
                access_restrictions=[pb.AccessRestriction(plugin="catalog")],
            ),
            metadata=ADMIN_METADATA,
        )
        for n in range(8)
    ]
    calls[0].result(timeout=30)  # the server has received the whole burst by now
    server.process.send_signal(signal.SIGTERM)
    assert [call.result(timeout=30).subject for call in calls] == [f"drain-{n}" for n in range(8)]
    assert server.stop() == 0
    assert "stopped" in server.log


def _last_used(db: Path, subject: str) -> int | None:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as reader:
        row = reader.execute(
            "SELECT last_used_time FROM entries WHERE subject = ?", (subject,)
        ).fetchone()
    return None if row is None else row[0]


def test_the_last_use_of_entries_reaches_the_database_while_serving_and_at_stop(
    tmp_path: Path,
) -> None:
    db = tmp_path / "authz.db"
    server = ServerProcess(db)
    try:
        for subject in ("used-early", "used-late"):
            server.admin.CreateEntry(
                pb.CreateEntryRequest(
                    subject=subject,
                    token=f"{subject}-token-123",
                    access_restrictions=[pb.AccessRestriction(plugin="catalog")],
                ),
                metadata=ADMIN_METADATA,
            )
        checked = pb.CheckRequest(token="used-early-token-123", plugin="catalog")
        assert server.authz.Check(checked).decision == pb.ALLOW
        # Written in the background every few seconds, with no admin call to prompt it.
        deadline = time.monotonic() + 30
        while _last_used(db, "used-early") is None:
            assert time.monotonic() < deadline, "the last use was not written while serving"
            time.sleep(0.2)
        checked = pb.CheckRequest(token="used-late-token-123", plugin="catalog")
        assert server.authz.Check(checked).decision == pb.ALLOW
    finally:
        assert server.stop() == 0
    assert _last_used(db, "used-late") is not None


def test_restarting_with_a_new_bootstrap_token_ignores_it_and_keeps_the_bootstrap_admin(
    tmp_path: Path,
) -> None:
    db = tmp_path / "authz.db"
    ServerProcess(db).stop()
    server = ServerProcess(db, {"AUTHZ_BOOTSTRAP_TOKEN": "the-next-bootstrap-token"})
    try:
        listed = server.admin.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA)
        assert [e.subject for e in listed.entries] == ["bootstrap-admin"]
        with pytest.raises(grpc.RpcError) as raised:
            server.admin.ListEntries(
                pb.ListEntriesRequest(),
                metadata=(("authorization", "Bearer the-next-bootstrap-token"),),
            )
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop()
    warned = [line for line in server.lines if "bootstrap token ignored" in line]
    assert len(warned) == 1
    assert "WARNING" in warned[0] or '"level": "warning"' in warned[0].lower()
    assert "the-next-bootstrap-token" not in server.log


def test_restarting_after_narrowing_the_bootstrap_admin_leaves_it_narrowed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "authz.db"
    first = ServerProcess(db)
    entry = first.admin.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA).entries[0]
    narrowed = pb.Entry(
        id=entry.id,
        access_restrictions=[
            pb.AccessRestriction(plugin="authz", permissions=["authz.entry.read"])
        ],
    )
    first.admin.UpdateEntry(
        pb.UpdateEntryRequest(
            entry=narrowed,
            update_mask=field_mask_pb2.FieldMask(paths=["access_restrictions"]),
            etag=entry.etag,
        ),
        metadata=ADMIN_METADATA,
    )
    assert first.stop() == 0
    again = ServerProcess(db)  # the same bootstrap token
    try:
        kept = again.admin.GetEntry(pb.GetEntryRequest(id=entry.id), metadata=ADMIN_METADATA)
        assert [list(r.permissions) for r in kept.access_restrictions] == [["authz.entry.read"]]
        request = pb.CreateEntryRequest(
            subject="proof", token="proof-token-0123456789", unrestricted=True
        )
        with pytest.raises(grpc.RpcError) as raised:
            again.admin.CreateEntry(request, metadata=ADMIN_METADATA)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        again.stop()
    assert "left as it is" in again.log


def _serve(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz_service.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
    )


def _refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_an_unparsable_listen_address_is_refused_in_one_line(tmp_path: Path) -> None:
    line = _refusal(_serve("--listen", "not-an-address", "--db", str(tmp_path / "a.db")))
    assert "--listen" in line


def test_an_unusable_database_path_is_refused_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = _refusal(_serve("--listen", "127.0.0.1:0", "--db", str(blocker / "authz.db")))
    assert "a-file" in line


def test_a_bootstrap_token_that_breaks_the_rules_is_refused_without_echoing_it(
    tmp_path: Path,
) -> None:
    bad = "has whitespace inside it"
    result = _serve(
        "--listen",
        "127.0.0.1:0",
        "--db",
        str(tmp_path / "a.db"),
        env={"AUTHZ_BOOTSTRAP_TOKEN": bad},
    )
    line = _refusal(result)
    assert "AUTHZ_BOOTSTRAP_TOKEN" in line
    assert bad not in result.stderr + result.stdout


def test_a_revoked_bootstrap_token_is_ignored_with_a_warning_and_the_server_starts(
    server: ServerProcess,
) -> None:
    listed = server.admin.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA)
    server.admin.RevokeEntry(
        pb.RevokeEntryRequest(id=listed.entries[0].id, reason="retired"), metadata=ADMIN_METADATA
    )
    assert server.stop() == 0
    again = ServerProcess(server.db_path)  # still given the revoked token
    try:
        with pytest.raises(grpc.RpcError) as raised:
            again.admin.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED  # it never comes back
    finally:
        assert again.stop() == 0
    warned = [line for line in again.lines if "bootstrap token ignored" in line]
    assert len(warned) == 1
    assert "the token of a revoked entry" in warned[0]
    assert warned[0].count("bootstrap token") == 1
    assert BOOTSTRAP_TOKEN not in again.log


def test_a_server_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    line = _refusal(_serve("--listen", "127.0.0.1:0", "--db", str(tmp_path / "authz.db")))
    assert "chmod 600" in line


def test_the_server_key_is_created_with_mode_0600(server: ServerProcess) -> None:
    key = server.db_path.parent / "server.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(key.read_bytes()) == 32


def test_a_database_url_other_than_a_file_or_postgresql_is_refused_not_taken_for_a_file(
    tmp_path: Path,
) -> None:
    db = "mysql://authz@127.0.0.1/authz"
    line = _refusal(_serve("--listen", "127.0.0.1:0", "--db", db, cwd=tmp_path))
    assert "AUTHZ_DB/--db: mysql:// is not a store" in line
    assert not any(tmp_path.iterdir())  # no file or folder named after the URL


@pytest.mark.parametrize(
    ("db", "key", "says"),
    [
        (
            "postgresql://authz:hunter2@127.0.0.1:1/authz",
            True,
            "AUTHZ_DB/--db: the URL holds a password: put it in the file that"
            " AUTHZ_DB_PASSWORD_FILE names",
        ),
        (
            "postgresql://authz@127.0.0.1:1/authz",
            False,
            "AUTHZ_SERVER_KEY_FILE/--server-key-file: required with a postgresql:// AUTHZ_DB",
        ),
        ("postgresql://authz@127.0.0.1:1/authz", True, "cannot open the database: "),
        ("postgresql://authz@[nope/authz", True, "AUTHZ_DB/--db: cannot parse"),
    ],
)
def test_a_postgresql_database_that_cannot_work_is_refused_in_one_line(
    tmp_path: Path, db: str, key: bool, says: str
) -> None:
    flags = ["--server-key-file", str(tmp_path / "server.key")] if key else []
    line = _refusal(_serve("--listen", "127.0.0.1:0", "--db", db, *flags, cwd=tmp_path))
    assert says in line
    assert "hunter2" not in line


@pytest.mark.parametrize("workers", ["0", "65", "two"])
def test_a_worker_count_out_of_range_is_refused(tmp_path: Path, workers: str) -> None:
    line = _refusal(
        _serve("--listen", "127.0.0.1:0", "--db", str(tmp_path / "a.db"), "--workers", workers)
    )
    assert "AUTHZ_WORKERS/--workers: must be a whole number from 1 to 64" in line


def test_a_taken_port_is_refused_in_one_line(server: ServerProcess, tmp_path: Path) -> None:
    line = _refusal(_serve("--listen", server.target, "--db", str(tmp_path / "other.db")))
    assert server.target in line


def test_the_bootstrap_token_file_flag_is_read(tmp_path: Path) -> None:
    token_file = tmp_path / "bootstrap"
    token_file.write_text("token-from-a-file-123\n")
    env = {"AUTHZ_BOOTSTRAP_TOKEN": ""}
    server = ServerProcess(tmp_path / "authz.db", env, "--bootstrap-token-file", str(token_file))
    try:
        answer = server.authz.Check(
            pb.CheckRequest(
                token="token-from-a-file-123", plugin="authz", permission="authz.entry.read"
            )
        )
        assert (answer.decision, answer.subject) == (pb.ALLOW, "bootstrap-admin")
        assert BOOTSTRAP_TOKEN not in server.log
    finally:
        server.stop()


def test_the_healthcheck_of_an_unknown_service_says_what_not_found_means(
    server: ServerProcess,
) -> None:
    probe = subprocess.run(
        [sys.executable, "-m", "authz_service.cli", "healthcheck", "--service", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AUTHZ_LISTEN": server.target},
        check=False,
    )
    assert probe.returncode == 1
    assert probe.stderr == (
        f"{server.target}: NOT_FOUND: the server serves no service of that name (--service)\n"
    )


def test_a_database_restored_without_its_key_refuses_to_start_until_the_key_is_back(
    tmp_path: Path,
) -> None:
    db = tmp_path / "data" / "authz.db"
    key = db.parent / "server.key"
    first = ServerProcess(db)  # makes the key and the bootstrap admin
    assert first.stop() == 0
    original = key.read_bytes()
    key.unlink()  # a restore that brought the database back but not its key
    line = _refusal(_serve("--listen", "127.0.0.1:0", "--db", str(db)))
    assert "restore the server key file that belongs to this database" in line
    assert not key.exists()  # the key it made is gone again: the next start refuses too
    assert "restore the server key file" in _refusal(
        _serve("--listen", "127.0.0.1:0", "--db", str(db))
    )
    key.write_bytes(original)
    key.chmod(0o600)
    again = ServerProcess(db)
    assert again.stop() == 0


def test_a_database_started_with_another_key_refuses_to_start(tmp_path: Path) -> None:
    db = tmp_path / "data" / "authz.db"
    ServerProcess(db).stop()
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o600)
    line = _refusal(
        _serve("--listen", "127.0.0.1:0", "--db", str(db), "--server-key-file", str(other))
    )
    assert "this database belongs to another server key" in line
    assert other.exists()  # an operator's file is never removed


def test_a_new_server_without_a_bootstrap_token_says_how_to_get_an_admin(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "authz.db", {"AUTHZ_BOOTSTRAP_TOKEN": ""})
    assert server.stop() == 0
    said = [line for line in server.lines if "nobody can administer" in line]
    assert len(said) == 1
    assert "AUTHZ_BOOTSTRAP_TOKEN" in said[0]


def test_a_new_database_and_its_folder_belong_to_the_service_s_user_alone(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "data" / "authz.db")
    try:
        modes = {
            path.name: path.stat().st_mode & 0o777
            for path in [server.db_path.parent, *server.db_path.parent.iterdir()]
        }
    finally:
        server.stop()
    assert modes["data"] == 0o700
    assert {modes[name] for name in ("authz.db", "authz.db-wal", "authz.db-shm")} == {0o600}
    assert modes["server.key"] == 0o600
