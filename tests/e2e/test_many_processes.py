"""Many processes, one truth (DESIGN section 8): real `authz-service serve` processes on one
SQLite file, three replicas on one real PostgreSQL, and `serve --workers 3`, answer as one
service.

Once an admin RPC returns on one process, no Check that starts afterwards on any other process
answers by the old state: checked in loops of 200 rounds with checkers hammering the token on
the other processes while the write runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from prometheus_client.parser import text_string_to_metric_families

from authz.v1 import authz_pb2 as pb
from authz.v1 import authz_pb2_grpc
from postgres_server import PostgresServer
from server_process import ADMIN_METADATA, ServerProcess

CHEAP_ARGON2 = {"AUTHZ_ARGON2_TIME_COST": "1", "AUTHZ_ARGON2_MEMORY_KIB": "8"}
READ = pb.AccessRestriction(plugin="catalog", permissions=["catalog.entity.read"])
READ_WRITE = pb.AccessRestriction(
    plugin="catalog", permissions=["catalog.entity.read", "catalog.entity.write"]
)
ROUNDS = 200
RACES = 50
# Channels opened to a `--workers 3` port: the kernel spreads connections over the workers,
# and 24 connections miss one of three workers with probability 3 * (2/3)**24, under 0.2%.
WORKER_CHANNELS = 24
WORKER_STARTED = re.compile(r"worker (?P<index>\d+) started \(pid (?P<pid>\d+)\)")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def three(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    """Three servers on one database (a SQLite file, or a PostgreSQL database with one server
    key file), started at once, each with the bootstrap token."""
    shared = tmp_path_factory.mktemp("shared")
    db: Path | str = shared / "authz.db"
    env = dict(CHEAP_ARGON2)
    if request.param == "postgresql":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        db = postgres.create_database(f"three_{os.getpid()}")
        env["AUTHZ_SERVER_KEY_FILE"] = str(shared / "server.key")
        # The key is made once, before the replicas start, as an operator would.
        (shared / "server.key").write_bytes(os.urandom(32))
        (shared / "server.key").chmod(0o600)
    with ThreadPoolExecutor(3) as starting:
        servers = list(starting.map(lambda _: ServerProcess(db, env), range(3)))
    yield servers
    for server in servers:
        server.stop()


def _create(
    server: ServerProcess, subject: str, token: str, *scope: pb.AccessRestriction
) -> pb.Entry:
    request = pb.CreateEntryRequest(
        subject=subject, token=token, access_restrictions=list(scope or (READ_WRITE,))
    )
    entry: pb.Entry = server.admin.CreateEntry(request, metadata=ADMIN_METADATA, timeout=30)
    return entry


def _allowed(
    stub: authz_pb2_grpc.AuthzServiceStub, token: str, permission: str = "catalog.entity.read"
) -> bool:
    answer = stub.Check(
        pb.CheckRequest(token=token, plugin="catalog", permission=permission), timeout=30
    )
    return bool(answer.decision == pb.ALLOW)


@dataclass
class Hammer:
    """Threads checking one token over and over, each check noted with when it started."""

    stubs: list[authz_pb2_grpc.AuthzServiceStub]
    token: str
    permission: str = "catalog.entity.read"
    seen: list[tuple[float, bool]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Hammer:
        for stub in self.stubs:
            thread = threading.Thread(target=self._run, args=(stub,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, stub: authz_pb2_grpc.AuthzServiceStub) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.seen.append((started, _allowed(stub, self.token, self.permission)))

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def allowed_after(self, moment: float) -> int:
        """How many checks that started after `moment` were allowed."""
        return sum(1 for started, allowed in self.seen if started > moment and allowed)


def _after_write_none_allowed(
    others: list[authz_pb2_grpc.AuthzServiceStub],
    prepare: Callable[[int], tuple[pb.Entry, str]],
    write: Callable[[pb.Entry], None],
    permission: str = "catalog.entity.read",
) -> None:
    """ROUNDS times: prepare an entry (warm on every other process), hammer its token there,
    make the write; no check that started after the write returned may allow."""
    for n in range(ROUNDS):
        entry, token = prepare(n)
        assert all(_allowed(stub, token, permission) for stub in others)
        with Hammer(others, token, permission) as hammer:
            while len(hammer.seen) < 2 * len(others):  # the hammer is running everywhere
                time.sleep(0.001)
            write(entry)
            returned = time.monotonic()
            assert not any(_allowed(stub, token, permission) for stub in others), f"round {n}"
        assert hammer.allowed_after(returned) == 0, f"round {n}"


def test_servers_started_at_once_on_one_file_make_one_bootstrap_admin(
    three: list[ServerProcess],
) -> None:
    listed = three[0].admin.ListEntries(pb.ListEntriesRequest(), metadata=ADMIN_METADATA)
    assert [e.subject for e in listed.entries].count("bootstrap-admin") == 1


def test_a_create_on_one_is_allowed_on_the_others_on_their_next_check(
    three: list[ServerProcess],
) -> None:
    a, b, c = three
    for n in range(ROUNDS):
        # Each token is first tried (and remembered as wrong) where it is then checked.
        token = f"created-on-a-{n:04d}-token"
        assert not _allowed(b.authz, token)
        _create(a, f"created-{n}", token)
        assert _allowed(b.authz, token), f"round {n}"
        assert _allowed(c.authz, token), f"round {n}"


def test_a_revoke_on_one_is_in_force_on_the_others_when_it_returns(
    three: list[ServerProcess],
) -> None:
    a, b, c = three

    def prepare(n: int) -> tuple[pb.Entry, str]:
        token = f"revoked-on-a-{n:04d}-token"
        return _create(a, f"revoked-{n}", token), token

    def revoke(entry: pb.Entry) -> None:
        a.admin.RevokeEntry(pb.RevokeEntryRequest(id=entry.id), metadata=ADMIN_METADATA)

    _after_write_none_allowed([b.authz, c.authz], prepare, revoke)


def test_a_rotation_on_one_is_in_force_on_the_others_when_it_returns(
    three: list[ServerProcess],
) -> None:
    a, b, c = three
    new_tokens: dict[str, str] = {}

    def prepare(n: int) -> tuple[pb.Entry, str]:
        token = f"rotated-on-a-{n:04d}-token"
        entry = _create(a, f"rotated-{n}", token)
        new_tokens[entry.id] = f"rotated-on-a-{n:04d}-new-token"
        return entry, token

    def rotate(entry: pb.Entry) -> None:
        a.admin.UpdateEntry(
            pb.UpdateEntryRequest(
                entry=pb.Entry(id=entry.id), etag=entry.etag, new_token=new_tokens[entry.id]
            ),
            metadata=ADMIN_METADATA,
        )
        assert _allowed(b.authz, new_tokens[entry.id])
        assert _allowed(c.authz, new_tokens[entry.id])

    _after_write_none_allowed([b.authz, c.authz], prepare, rotate)


def test_a_narrowing_on_one_is_in_force_on_the_others_when_it_returns(
    three: list[ServerProcess],
) -> None:
    a, b, c = three

    def prepare(n: int) -> tuple[pb.Entry, str]:
        token = f"narrowed-on-a-{n:04d}-token"
        return _create(a, f"narrowed-{n}", token), token

    def narrow(entry: pb.Entry) -> None:
        a.admin.UpdateEntry(
            pb.UpdateEntryRequest(
                entry=pb.Entry(id=entry.id, access_restrictions=[READ]),
                etag=entry.etag,
                update_mask=field_mask_pb2.FieldMask(paths=["access_restrictions"]),
            ),
            metadata=ADMIN_METADATA,
        )

    _after_write_none_allowed([b.authz, c.authz], prepare, narrow, "catalog.entity.write")


def _race(calls: list[Callable[[], object]]) -> list[grpc.StatusCode]:
    """Run the calls at once; the status code each ended with (OK when it returned)."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> grpc.StatusCode:
        barrier.wait()
        try:
            call()
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_of_two_creates_of_one_token_on_two_processes_exactly_one_wins(
    three: list[ServerProcess],
) -> None:
    a, b, _ = three
    for n in range(RACES):
        token = f"raced-token-{n:04d}-xyz"
        codes = _race(
            [
                partial(_create, a, f"race-a-{n}", token),
                partial(_create, b, f"race-b-{n}", token),
            ]
        )
        assert sorted(codes, key=str) == sorted(
            [grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS], key=str
        ), f"round {n}: {codes}"


def test_of_two_creates_of_one_subject_on_two_processes_exactly_one_wins(
    three: list[ServerProcess],
) -> None:
    a, _, c = three
    for n in range(RACES):
        codes = _race(
            [
                partial(_create, a, f"raced-subject-{n}", f"subject-race-a-{n:04d}"),
                partial(_create, c, f"raced-subject-{n}", f"subject-race-c-{n:04d}"),
            ]
        )
        assert sorted(codes, key=str) == sorted(
            [grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS], key=str
        ), f"round {n}: {codes}"


# --- serve --workers 3 -----------------------------------------------------------------------


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path / "authz.db", CHEAP_ARGON2, "--workers", "3", "--metrics-listen", "127.0.0.1:0"
    )
    yield server
    server.stop()


def _spread(target: str) -> tuple[list[grpc.Channel], list[authz_pb2_grpc.AuthzServiceStub]]:
    """Channels to `target`, each its own connection (so the kernel may pick another worker)."""
    channels = [
        grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(WORKER_CHANNELS)
    ]
    return channels, [authz_pb2_grpc.AuthzServiceStub(channel) for channel in channels]


def _checks_by_worker(server: ServerProcess) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in server.metrics().splitlines():
        match = re.match(r"authz_checks_total\{(?P<labels>[^}]*)\} (?P<value>\S+)", line)
        if match:
            worker = re.search(r'worker="(\d+)"', match["labels"])
            assert worker is not None, line
            totals[worker[1]] = totals.get(worker[1], 0) + float(match["value"])
    return totals


def _wait_for_metrics(server: ServerProcess, workers: int) -> dict[str, float]:
    deadline = time.monotonic() + 10
    while True:
        counts = _checks_by_worker(server)
        if len(counts) == workers or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def test_workers_share_one_port_and_answer_as_one_service(workers: ServerProcess) -> None:
    channels, stubs = _spread(workers.target)
    try:
        assert not any(_allowed(stub, "made-on-one-worker-token") for stub in stubs)
        _create(workers, "made-on-one-worker", "made-on-one-worker-token")
        assert all(_allowed(stub, "made-on-one-worker-token") for stub in stubs)
        # Every worker answered some of those checks, and the supervisor serves their metrics.
        assert set(_wait_for_metrics(workers, 3)) == {"0", "1", "2"}
        admin = authz_pb2_grpc.AdminServiceStub(workers.channel)

        def prepare(n: int) -> tuple[pb.Entry, str]:
            token = f"worker-revoked-{n:04d}-token"
            return _create(workers, f"worker-revoked-{n}", token), token

        def revoke(entry: pb.Entry) -> None:
            admin.RevokeEntry(pb.RevokeEntryRequest(id=entry.id), metadata=ADMIN_METADATA)

        _after_write_none_allowed(stubs[:6], prepare, revoke)
    finally:
        for channel in channels:
            channel.close()


def test_a_killed_worker_is_started_again_and_sigterm_drains_all(workers: ServerProcess) -> None:
    pids = {m["index"]: int(m["pid"]) for m in WORKER_STARTED.finditer(workers.log)}
    assert len(pids) == 3, workers.log
    _create(workers, "survives-a-worker", "survives-a-worker-token")
    answers: list[tuple[float, bool]] = []
    stop = threading.Event()

    def load() -> None:  # a new connection for every check: each may reach any worker
        while not stop.is_set():
            started = time.monotonic()
            options = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(workers.target, options=options) as channel:
                try:
                    stub = authz_pb2_grpc.AuthzServiceStub(channel)
                    answers.append((started, _allowed(stub, "survives-a-worker-token")))
                except grpc.RpcError:
                    answers.append((started, False))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    os.kill(pids["1"], signal.SIGKILL)
    restarted: list[re.Match[str]] = []
    deadline = time.monotonic() + 30
    while len(restarted) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        restarted = [m for m in WORKER_STARTED.finditer(workers.log) if m["index"] == "1"]
    assert len(restarted) == 2, workers.log
    assert "worker 1 (pid" in workers.log
    assert "signal SIGKILL" in workers.log
    replaced = time.monotonic()
    while sum(1 for started, _ in answers if started > replaced + 1) < 50:
        time.sleep(0.05)
    stop.set()
    loader.join(30)
    # Once the killed worker is gone from the port (a second after it was replaced at the
    # latest), every new connection is served.
    assert all(allowed for started, allowed in answers if started > replaced + 1)
    assert workers.stop() == 0
    for pid in [*pids.values(), int(restarted[1]["pid"])]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, ended and not yet reaped, is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_workers_end_when_their_supervisor_is_killed(workers: ServerProcess) -> None:
    pids = [int(m["pid"]) for m in WORKER_STARTED.finditer(workers.log)]
    assert len(pids) == 3, workers.log
    workers.process.kill()
    workers.process.wait(10)
    deadline = time.monotonic() + 30
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(pid) for pid in pids)


def test_a_second_service_on_the_workers_port_is_refused(
    workers: ServerProcess, tmp_path: Path
) -> None:
    # Its own SO_REUSEPORT socket would otherwise take half of the first one's connections.
    argv = [sys.executable, "-m", "authz_service.cli", "serve", "--workers", "2"]
    second = subprocess.run(
        [*argv, "--listen", workers.target, "--db", str(tmp_path / "other.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **CHEAP_ARGON2},
        check=False,
    )
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines() == [
        f"authz-service: cannot listen on {workers.target}: Address already in use"
    ]


def test_the_supervisor_serves_one_valid_exposition_for_all_workers(
    workers: ServerProcess,
) -> None:
    text = workers.metrics()
    families = {f.name: f for f in text_string_to_metric_families(text)}  # a strict parse
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP")]
    assert len(helps) == len(set(helps)), "a metric family is exposed twice"
    assert {s.labels.get("worker") for s in families["authz_checks"].samples} <= {"0", "1", "2"}
    assert all("worker" not in s.labels for s in families["authz_entries"].samples)
    assert {s.labels["state"]: s.value for s in families["authz_entries"].samples}["active"] == 1
