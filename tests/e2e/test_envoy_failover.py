"""Envoy on deploy/envoy-ha.yaml in front of two authz-service replicas, under a steady load.

The replicas are two real servers sharing one SQLite file (to a client they are replicas as
PostgreSQL ones are: an admin write on one is in force on the other's next Check), or two on a
real PostgreSQL. Envoy, the upstream and the load are real too: threads sending HTTP requests
through Envoy over keep-alive connections, each answer checked against the one its token must
get. One replica then dies (SIGKILL), stops (SIGTERM), hangs (SIGSTOP), reports NOT_SERVING, or
(on PostgreSQL) loses its database, and no request may fail.
"""

from __future__ import annotations

import http.client
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.v1 import authz_pb2 as pb
from authz_service.api.envoy import SERVICE_NAME as ENVOY_SERVICE
from envoy_process import Backend, EnvoyProcess, render_ha_config
from postgres_server import PostgresServer
from server_process import ADMIN_METADATA, ServerProcess
from tcp_proxy import TcpProxy

CHEAP_ARGON2 = {"AUTHZ_ARGON2_TIME_COST": "1", "AUTHZ_ARGON2_MEMORY_KIB": "8"}
CATALOG = "/api/catalog/entities/component:default/web"
READER = "catalog-reader-token-0123"  # may read the catalog: 200
OUTSIDER = "scaffolder-only-token-0123"  # a valid token without the catalog: 403
# What every load thread sends, over and over, and the answer each must get.
CYCLE = ((READER, 200), (READER, 200), (READER, 200), (OUTSIDER, 403))
LOADERS = 8
# Requests each replica has answered before one goes (so both are in use), and requests the
# load sends after (so the survivor carries it alone for a while).
WARM_UP = 100
AFTERWARDS = 1000
# The HA config probes every 0.5 s and takes a replica out after two failed probes, or one
# NOT_SERVING answer; the deadlines leave room for a busy machine.
OUT_OF_ROTATION = 3.0
DEADLINE = 30.0
# Envoy's count of requests it refused because no host of the cluster was in rotation.
NONE_HEALTHY = "cluster.authz.upstream_cx_none_healthy"

log = logging.getLogger(__name__)


def eventually(condition: Callable[[], bool], deadline: float = DEADLINE) -> bool:
    """Poll `condition` until it holds (True) or `deadline` seconds pass (False)."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            return False
        threading.Event().wait(0.01)
    return True


@dataclass(frozen=True)
class Outcome:
    """One request of the load: the answer it must get and the one it got."""

    token: str
    expected: int
    got: int | str  # a status, or the name of the error that took its place
    seconds: float  # how long it took


class Load:
    """LOADERS threads, each on its own keep-alive connection to Envoy, sending CYCLE until
    stopped; every outcome is recorded."""

    def __init__(self, port: int, cycle: Sequence[tuple[str, int]] = CYCLE) -> None:
        self.outcomes: list[Outcome] = []
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, args=(port, cycle), daemon=True)
            for _ in range(LOADERS)
        ]
        for thread in self._threads:
            thread.start()

    def _send(self, port: int, cycle: Sequence[tuple[str, int]]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for token, expected in itertools.cycle(cycle):
                if self._stopping.is_set():
                    return
                got: int | str
                started = time.monotonic()
                try:
                    headers = {"authorization": f"Bearer {token}"}
                    connection.request("GET", CATALOG, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    got = response.status
                except (OSError, http.client.HTTPException) as exc:
                    got = type(exc).__name__
                    connection.close()  # the next request opens a new one
                self.outcomes.append(Outcome(token, expected, got, time.monotonic() - started))
        finally:
            connection.close()

    def failures(self) -> list[Outcome]:
        """Every request that did not get the answer its token must get."""
        return [outcome for outcome in self.outcomes if outcome.got != outcome.expected]

    def stop(self) -> None:
        """Let each thread finish its request in flight, and stop."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(30)


@dataclass
class Replicas:
    """Two replicas on one database, the upstream, and Envoy on deploy/envoy-ha.yaml."""

    servers: list[ServerProcess]
    backend: Backend
    envoy: EnvoyProcess
    view: Path  # the second replica's way to the database: a link to the first one's directory

    def get(self, token: str | None) -> int:
        """The status of one request through Envoy, with `Bearer token` when one is given."""
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        return self.envoy.get(self.envoy.url + CATALOG, headers)[0]

    def requests(self, server: ServerProcess) -> int:
        """How many checks Envoy has sent `server`."""
        return self.envoy.hosts("authz")[server.target].requests

    def out_of_rotation(self, server: ServerProcess) -> frozenset[str]:
        """Why Envoy sends `server` no checks (empty while it does)."""
        return self.envoy.hosts("authz")[server.target].out

    def stop(self) -> None:
        """Stop Envoy, the upstream and whichever replicas still run."""
        self.envoy.stop()
        self.backend.stop()
        for server in self.servers:
            server.stop()


def _running(servers: list[ServerProcess], tmp_path: Path, view: Path) -> Replicas:
    """Envoy and the upstream in front of `servers`, and the load's two entries made."""
    backend = Backend()
    try:
        config = render_ha_config([server.target for server in servers], backend.address)
        envoy = EnvoyProcess(config, tmp_path / "envoy")
    except BaseException:
        backend.stop()
        raise
    for subject, token, plugin in (
        ("reader", READER, "catalog"),
        ("outsider", OUTSIDER, "scaffolder"),
    ):
        restriction = pb.AccessRestriction(plugin=plugin)
        request = pb.CreateEntryRequest(
            subject=subject, token=token, access_restrictions=[restriction]
        )
        servers[0].admin.CreateEntry(request, metadata=ADMIN_METADATA)
    return Replicas(servers, backend, envoy, view)


@pytest.fixture
def postgres_replicas(
    postgres: PostgresServer, tmp_path: Path
) -> Iterator[tuple[Replicas, TcpProxy]]:
    """Two replicas on a real PostgreSQL, the second one reaching it through a proxy that
    can cut it off; a lease of 1 s."""
    key = tmp_path / "server.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    url = postgres.create_database(f"envoy_{time.monotonic_ns()}")
    proxy = TcpProxy(("127.0.0.1", postgres.port))
    env = {**CHEAP_ARGON2, "AUTHZ_SERVER_KEY_FILE": str(key), "AUTHZ_REPLICA_LEASE": "1"}
    servers = [ServerProcess(url, env)]
    try:
        servers.append(ServerProcess(url.replace(f":{postgres.port}/", f":{proxy.port}/"), env))
        running = _running(servers, tmp_path, tmp_path)
    except BaseException:
        for server in servers:
            server.stop(signal.SIGKILL)
        proxy.close()
        raise
    yield running, proxy
    proxy.heal()
    running.stop()
    proxy.close()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    """Replicas whose second one opens the shared database through a directory of its own
    (a symbolic link to the first one's), so its path can be taken away from it alone."""
    database = tmp_path / "data" / "authz.db"
    view = tmp_path / "second-replica"
    servers = [ServerProcess(database, CHEAP_ARGON2)]
    try:
        view.symlink_to(database.parent, target_is_directory=True)
        servers.append(ServerProcess(view / database.name, CHEAP_ARGON2))
        running = _running(servers, tmp_path, view)
    except BaseException:
        for server in servers:
            server.stop(signal.SIGKILL)
        raise
    yield running
    running.stop()


def _start_load(replicas: Replicas) -> Load:
    """The load, once both replicas have answered WARM_UP checks of it."""
    load = Load(replicas.envoy.port)
    in_use = eventually(
        lambda: all(replicas.requests(server) >= WARM_UP for server in replicas.servers)
    )
    assert in_use, replicas.envoy.hosts("authz")
    return load


def _lose_one(replicas: Replicas, sig: signal.Signals) -> Load:
    """Send the second replica `sig` under the load; once Envoy has taken it out of rotation
    and the load has gone on for AFTERWARDS more requests, stop the load and return it."""
    leaving = replicas.servers[1]
    load = _start_load(replicas)
    try:
        sent_at = len(load.outcomes)
        leaving.process.send_signal(sig)
        left = eventually(lambda: bool(replicas.out_of_rotation(leaving)), OUT_OF_ROTATION)
        assert left, replicas.envoy.hosts("authz")
        assert eventually(lambda: len(load.outcomes) >= sent_at + AFTERWARDS)
    finally:
        load.stop()
    # What the run measured, for `pytest --log-cli-level=INFO` (docs/envoy.md quotes it).
    log.info(
        "%s: %d requests, %d failed, %d retried, slowest %.0f ms",
        sig.name,
        len(load.outcomes),
        len(load.failures()),
        replicas.envoy.counter("cluster.authz.upstream_rq_retry"),
        1000 * max(outcome.seconds for outcome in load.outcomes),
    )
    return load


def _probes_fail(replicas: Replicas, server: ServerProcess) -> bool:
    """Whether Envoy's health checks, not only the checks that met `server`, hold it out."""
    return eventually(
        lambda: "failed_active_health_check" in replicas.out_of_rotation(server), OUT_OF_ROTATION
    )


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "terminated"])
def test_a_replica_going_away_under_load_costs_no_request(
    replicas: Replicas, sig: signal.Signals
) -> None:
    survivor, leaving = replicas.servers
    load = _lose_one(replicas, sig)
    assert load.failures() == []
    assert leaving.process.wait(30) == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
    assert _probes_fail(replicas, leaving), replicas.envoy.hosts("authz")
    assert not replicas.out_of_rotation(survivor)
    # The survivor decides alone now, and still denies what it must.
    assert replicas.get(READER) == 200
    assert replicas.get(OUTSIDER) == 403
    assert replicas.get("no-such-token-0123456789") == 401
    assert replicas.get(None) == 401


def test_a_replica_that_hangs_under_load_costs_latency_but_no_request(replicas: Replicas) -> None:
    # A frozen process keeps its connections open and answers nothing, as a replica on a
    # host that froze or was cut off: each check on it waits out one try (0.25 s) and is
    # asked again of the other replica.
    survivor, hanging = replicas.servers
    try:
        load = _lose_one(replicas, signal.SIGSTOP)
        assert load.failures() == []
        assert replicas.envoy.counter("cluster.authz.upstream_rq_per_try_timeout") > 0
        assert _probes_fail(replicas, hanging), replicas.envoy.hosts("authz")
        assert not replicas.out_of_rotation(survivor)
        assert replicas.get(OUTSIDER) == 403
    finally:
        hanging.process.send_signal(signal.SIGCONT)


def test_a_replica_reporting_not_serving_leaves_rotation_while_still_running(
    replicas: Replicas,
) -> None:
    survivor, reporting = replicas.servers
    health = health_pb2_grpc.HealthStub(reporting.channel)
    request = health_pb2.HealthCheckRequest(service=ENVOY_SERVICE)
    serving = health_pb2.HealthCheckResponse.SERVING
    load = _start_load(replicas)
    try:
        # The second replica's path to the database goes away: it can no longer vouch for
        # its answers and reports NOT_SERVING (within its 1 s file watch), though it runs on.
        replicas.view.unlink()
        assert eventually(lambda: health.Check(request, timeout=10).status != serving)
        reported = time.monotonic()
        left = eventually(lambda: bool(replicas.out_of_rotation(reporting)), OUT_OF_ROTATION)
        assert left, replicas.envoy.hosts("authz")
        log.info("out of rotation %.2f s after reporting NOT_SERVING", time.monotonic() - reported)
        assert replicas.out_of_rotation(reporting) == {"failed_active_health_check"}
        answered = replicas.requests(reporting)
        now = len(load.outcomes)
        assert eventually(lambda: len(load.outcomes) >= now + AFTERWARDS)
    finally:
        load.stop()
    log.info("NOT_SERVING: %d requests, %d failed", len(load.outcomes), len(load.failures()))
    assert load.failures() == []
    assert reporting.process.poll() is None
    assert replicas.requests(reporting) == answered
    assert not replicas.out_of_rotation(survivor)


def test_with_every_replica_gone_envoy_answers_503_at_once_and_forwards_nothing(
    replicas: Replicas,
) -> None:
    assert replicas.get(READER) == 200
    reached = len(replicas.backend.seen)
    for server in replicas.servers:
        server.process.kill()
        server.process.wait(30)
    gone = eventually(
        lambda: all(replicas.out_of_rotation(server) for server in replicas.servers),
        OUT_OF_ROTATION,
    )
    assert gone, replicas.envoy.hosts("authz")
    counter = replicas.envoy.counter
    sent, refused = counter("cluster.authz.upstream_rq_total"), counter(NONE_HEALTHY)
    assert [replicas.get(token) for token in (READER, OUTSIDER, None)] == [503, 503, 503]
    # At once: no check was sent to a replica or waited on a connection; each was refused
    # for want of a replica in rotation.
    assert counter("cluster.authz.upstream_rq_total") == sent
    assert counter(NONE_HEALTHY) == refused + 3
    assert len(replicas.backend.seen) == reached


def test_a_postgresql_replica_killed_under_load_costs_no_request(
    postgres_replicas: tuple[Replicas, TcpProxy],
) -> None:
    replicas, _ = postgres_replicas
    load = _lose_one(replicas, signal.SIGKILL)
    assert load.failures() == []
    assert replicas.get(READER) == 200
    assert replicas.get(OUTSIDER) == 403


def test_a_postgresql_replica_cut_off_from_its_database_under_load_costs_no_request(
    postgres_replicas: tuple[Replicas, TcpProxy],
) -> None:
    replicas, proxy = postgres_replicas
    survivor, cut_off = replicas.servers
    load = _start_load(replicas)
    try:
        proxy.partition()
        # Its lease (1 s) runs out: it answers UNAVAILABLE, reports NOT_SERVING, and Envoy
        # asks the other replica meanwhile and then takes it out of rotation.
        left = eventually(lambda: bool(replicas.out_of_rotation(cut_off)), 1 + OUT_OF_ROTATION)
        assert left, replicas.envoy.hosts("authz")
        now = len(load.outcomes)
        assert eventually(lambda: len(load.outcomes) >= now + AFTERWARDS)
        proxy.heal()
        back = eventually(lambda: not replicas.out_of_rotation(cut_off))
        assert back, replicas.envoy.hosts("authz")
    finally:
        load.stop()
    log.info("cut off: %d requests, %d failed", len(load.outcomes), len(load.failures()))
    assert load.failures() == []
    assert not replicas.out_of_rotation(survivor)
