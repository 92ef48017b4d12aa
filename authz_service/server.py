"""Wiring: builds the store, hasher, use cases and gRPC server from settings, in one place."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz.v1 import authz_pb2, authz_pb2_grpc

from .adapters import Argon2Hasher, ServerKeyError, StoreWatch
from .adapters.metrics import metrics_registry, open_metrics
from .adapters.metrics_listener import MetricsListener
from .adapters.server_key import open_key
from .adapters.stores import open_store
from .adapters.threaded_store import ThreadedStore
from .adapters.tls import ServerTls, TlsError, load_server_tls
from .adapters.worker_metrics import SnapshotWriter, snapshot_path
from .api import AdminServicer, AuthzServicer
from .api.envoy import SERVICE_NAME as ENVOY_SERVICE
from .api.envoy import EnvoyAuthorizationServicer
from .api.health import HealthServicer
from .core.errors import AuthzError
from .core.model import State
from .registration import GenericOnly
from .settings import Settings
from .transport import raise_descriptor_limit, server_options
from .usecases import Admin, Checker
from .usecases.server_key import WrongServerKey, bind_server_key

log = logging.getLogger("authz_service")

USAGE_FLUSH_SECONDS = 5.0
# A replica on PostgreSQL has others to take its calls: at SIGTERM it reports NOT_SERVING this
# long (two of Envoy's health-check intervals in deploy/envoy-ha.yaml; the client library
# watches health and moves at once) before it refuses new calls, so that no caller is sent to
# a replica that is going away.
DRAIN_DELAY = 1.0
SERVICE_NAMES = (
    authz_pb2.DESCRIPTOR.services_by_name["AuthzService"].full_name,
    authz_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    ENVOY_SERVICE,
)
ADMIN_SERVICE = authz_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
# Connection limits and keepalive (transport.SERVER_OPTIONS), so_reuseport off among them: a
# port another process serves is refused, unless workers share it (`--workers`).
_SERVER_OPTIONS = server_options()
_WORKER_OPTIONS = server_options({"grpc.so_reuseport": 1})


class StartupError(Exception):
    """The server cannot start with these settings; the message is one line saying why."""


@dataclass(frozen=True)
class Worker:
    """Which worker of `serve --workers` this process is, and where its metrics go."""

    index: int
    metrics_dir: Path


@dataclass
class Service:
    """A running server and what it owns."""

    server: grpc.aio.Server
    port: int
    store: ThreadedStore
    checker: Checker
    admin_calls: dict[tuple[str, str], int]
    health: HealthServicer
    pools: tuple[ThreadPoolExecutor, ...]
    flusher: UsageFlusher
    # The separate admin listener (AUTHZ_ADMIN_LISTEN), when there is one.
    admin_server: grpc.aio.Server | None = None
    admin_port: int = 0
    admin_health: HealthServicer | None = None
    # Reports NOT_SERVING while the store says it must not serve (see `_watch_database`).
    watch: StoreWatch | None = None
    metrics: MetricsListener | None = None  # with AUTHZ_METRICS_LISTEN
    # Seconds between reporting NOT_SERVING and refusing calls at stop (see DRAIN_DELAY).
    drain_delay: float = 0.0

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish (up to `grace` s), then close the store."""
        if self.watch is not None:
            self.watch.stop()
        await self.health.enter_graceful_shutdown()
        if self.admin_health is not None:
            await self.admin_health.enter_graceful_shutdown()
        if self.drain_delay:
            await asyncio.sleep(self.drain_delay)
        if self.admin_server is not None:
            await asyncio.gather(self.server.stop(grace), self.admin_server.stop(grace))
        else:
            await self.server.stop(grace)
        await self.flusher.stop()
        if self.metrics is not None:
            self.metrics.close()
        for pool in self.pools:
            pool.shutdown(wait=True)
        self.store.close()


def _open_store(settings: Settings) -> tuple[bytes, bool, ThreadedStore]:
    """The server key (and whether it was just created) and the store the settings name
    (created or migrated as needed)."""
    try:
        key, created = open_key(settings.key_path)
        store = open_store(
            settings.db,
            lease=settings.replica_lease,
            password_file=settings.db_password_file,
        )
    except ServerKeyError as exc:
        raise StartupError(str(exc)) from None
    except (OSError, sqlite3.Error, AuthzError) as exc:
        raise StartupError(f"cannot use database {settings.db}: {exc}") from None
    return key, created, store


async def prepare(
    settings: Settings,
) -> tuple[ThreadedStore, Checker, Admin, ThreadPoolExecutor]:
    """Open the store, make sure the bootstrap admin exists, and build the use cases over
    them; the caller owns the store and the argon2 pool."""
    key, created, store = _open_store(settings)
    try:
        await bind_server_key(store, key, created=created)
    except (WrongServerKey, AuthzError) as exc:
        store.close()
        if created:  # so that the next start refuses too, instead of taking the wrong key
            settings.key_path.unlink(missing_ok=True)
        raise StartupError(str(exc)) from None
    hash_pool = ThreadPoolExecutor(settings.hash_workers, thread_name_prefix="argon2")
    hasher = Argon2Hasher(settings.argon2_time_cost, settings.argon2_memory_kib)
    checker = Checker(
        store,
        hasher,
        key,
        hash_pool,
        hash_workers=settings.hash_workers,
        cache_size=settings.cache_size,
    )
    admin = Admin(store, hasher, checker, key=key)
    try:
        await checker.start()
        if settings.bootstrap_token:
            bootstrap = await admin.ensure_bootstrap_admin(settings.bootstrap_token)
            (log.warning if bootstrap.warning else log.info)("%s", bootstrap.said)

    except AuthzError as exc:
        hash_pool.shutdown()
        store.close()
        raise StartupError(str(exc)) from None  # a bootstrap problem names the bootstrap token
    return store, checker, admin, hash_pool


async def start(settings: Settings, *, shared_port: bool = False) -> Service:
    """Open the store, make sure the bootstrap admin exists, and start serving.

    With `shared_port`, the listening ports are shared with other processes (SO_REUSEPORT):
    a worker of `serve --workers`, whose supervisor holds the ports.
    """
    tls = _server_tls(settings)
    store, checker, admin, hash_pool = await prepare(settings)
    options = _WORKER_OPTIONS if shared_port else _SERVER_OPTIONS
    server = grpc.aio.server(options=options)
    # With AUTHZ_ADMIN_LISTEN, AdminService lives on its own server, absent from the main one.
    admin_server = grpc.aio.server(options=options) if settings.admin_listen else None
    # The generated registration functions are untyped. The Check services come first: the
    # generic handlers are asked in order.
    authz_pb2_grpc.add_AuthzServiceServicer_to_server(AuthzServicer(checker), GenericOnly(server))  # type: ignore[no-untyped-call]
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        EnvoyAuthorizationServicer(checker), GenericOnly(server)
    )
    admin_servicer = AdminServicer(admin)
    authz_pb2_grpc.add_AdminServiceServicer_to_server(  # type: ignore[no-untyped-call]
        admin_servicer, GenericOnly(admin_server or server)
    )
    names: tuple[str, ...] = SERVICE_NAMES
    if admin_server is not None:
        names = tuple(name for name in SERVICE_NAMES if name != ADMIN_SERVICE)
    servers = [server]
    try:
        port, health_servicer = await _open(server, settings.listen, names, tls, shared_port)
        admin_port, admin_health = 0, None
        if admin_server is not None:
            servers.append(admin_server)
            admin_port, admin_health = await _open(
                admin_server, settings.admin_listen, (ADMIN_SERVICE,), tls, shared_port
            )
            host = settings.admin_listen.rpartition(":")[0]
            log.info("admin on %s:%d (%s)", host, admin_port, _security(settings))
        metrics = (
            _start_metrics(
                settings.metrics_listen,
                checker,
                admin_servicer.calls.counts,
                store.blocking.count_by_state,
            )
            if settings.metrics_listen
            else None
        )
    except StartupError:
        for each in servers:
            await each.stop(None)
        hash_pool.shutdown()
        store.close()
        raise
    flusher = UsageFlusher(checker.usage, asyncio.get_running_loop())
    watch = _watch_database(store, (health_servicer, names), (admin_health, (ADMIN_SERVICE,)))
    return Service(
        server,
        port,
        store,
        checker,
        admin_servicer.calls.counts,
        health_servicer,
        (hash_pool,),
        flusher,
        admin_server,
        admin_port,
        admin_health,
        watch,
        metrics,
        DRAIN_DELAY if settings.postgresql else 0.0,
    )


async def serve(settings: Settings, worker: Worker | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls and return.

    As a `worker` of `serve --workers`, the ports are shared with the other workers, and the
    metrics go to the supervisor (see `adapters.worker_metrics`) instead of a listener.
    """
    # Every connection holds a descriptor: as many as the system allows this process.
    open_files = raise_descriptor_limit()
    service = await start(settings, shared_port=worker is not None)
    snapshots = None
    if worker is not None:
        registry = metrics_registry(service.checker, service.admin_calls)
        snapshots = SnapshotWriter(registry, snapshot_path(worker.metrics_dir, worker.index))
    # What start-up made lives as long as the process: out of the collector's way, so its
    # full collections do not walk it again (callgrind: 2k instructions less per Check).
    gc.collect()
    gc.freeze()
    host = settings.listen.rpartition(":")[0]
    log.info(
        "serving on %s:%d (%s, database %s)",
        host,
        service.port,
        _security(settings),
        settings.db,
    )
    log.info("open-file limit %d", open_files)
    first = worker is None or worker.index == 0
    if first and not settings.bootstrap_token and not await service.store.holds_entries():
        log.warning(
            "no entry exists and no bootstrap token was given, so nobody can administer this"
            " server: start it once with AUTHZ_BOOTSTRAP_TOKEN (or --bootstrap-token-file) to"
            " create bootstrap-admin"
        )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("stopping: draining in-flight calls (up to %.0f s)", settings.grace_seconds)
    await service.stop(settings.grace_seconds)
    if snapshots is not None:
        snapshots.stop()
    log.info("stopped")


def _watch_database(store: ThreadedStore, *reporting: tuple[Any, Sequence[str]]) -> StoreWatch:
    """Watch the store's `problem()`: while it gives a reason (the SQLite file removed or
    replaced; a PostgreSQL replica's lease run out), report NOT_SERVING on each health
    servicer of `reporting` (None where there is none) for its service names, and SERVING
    again once it gives none."""
    loop = asyncio.get_running_loop()
    return StoreWatch(
        store.problem,
        # Called on the watch's thread: the rest happens on the event loop.
        lambda reason: asyncio.run_coroutine_threadsafe(_serving(reason, reporting), loop),
    )


async def _serving(reason: str | None, reporting: Sequence[tuple[Any, Sequence[str]]]) -> None:
    """Say in one line why the server stops serving (or that it serves again), and report
    it for the server and each of its services."""
    if reason is None:
        log.info("serving again: the store is back")
        status = health_pb2.HealthCheckResponse.SERVING
    else:
        log.error("not serving: %s", reason)
        status = health_pb2.HealthCheckResponse.NOT_SERVING
    for servicer, names in reporting:
        if servicer is not None:
            for name in ("", *names):
                await servicer.set(name, status)


def _server_tls(settings: Settings) -> ServerTls | None:
    """The checked TLS files, or None for plaintext."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    try:
        return load_server_tls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    except TlsError as exc:
        raise StartupError(str(exc)) from None


def _start_metrics(
    listen: str,
    checker: Checker,
    admin_calls: dict[tuple[str, str], int],
    count_entries: Callable[[datetime], dict[State, int]],
) -> MetricsListener:
    try:
        listener = open_metrics(listen, checker, admin_calls, count_entries)
    except OSError as exc:
        raise StartupError(f"cannot serve metrics on {listen}: {exc.strerror}") from None
    log.info("metrics on %s:%d", listen.rpartition(":")[0], listener.port)
    return listener


async def _open(
    server: grpc.aio.Server,
    listen: str,
    names: Sequence[str],
    tls: ServerTls | None,
    shared: bool = False,
) -> tuple[int, Any]:
    """Bind `listen` (TLS when `tls` is given; with `shared`, beside the other workers), add
    health and reflection for `names`, start serving; returns the bound port and the health
    servicer."""
    try:
        _probe_listen(listen, shared)
    except OSError as exc:
        raise StartupError(f"cannot listen on {listen}: {exc.strerror}") from None
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, GenericOnly(server))
    reflection.enable_server_reflection(
        (*names, health.SERVICE_NAME, reflection.SERVICE_NAME),
        GenericOnly(server),  # type: ignore[arg-type]  # duck-typed: the two methods it calls
    )
    try:
        if tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, tls.credentials())
    except RuntimeError:
        port = 0
    if port == 0:
        raise StartupError(f"cannot listen on {listen}: address in use or not local")
    await server.start()
    for name in ("", *names):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return port, servicer


def _security(settings: Settings) -> str:
    if settings.tls_cert is None:
        return "plaintext"
    if settings.tls_client_ca is not None:
        return "TLS, client certificates required"
    return "TLS"


def _probe_listen(listen: str, shared: bool = False) -> None:
    """Bind the address once ourselves, so a taken or foreign address fails with a clear reason
    instead of grpc's multi-line log."""
    reserve_port(listen, shared).close()


def reserve_port(listen: str, shared: bool = False) -> socket.socket:
    """A socket bound (not listening) to `listen`; with `shared`, with SO_REUSEPORT, so the
    processes of `serve --workers` can all bind the port while it is held. OSError if taken."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    held = socket.socket(family, socket.SOCK_STREAM)
    try:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind((host, int(port)))
    except OSError:
        held.close()
        raise
    return held


class UsageSink(Protocol):
    """What UsageFlusher flushes: `UsageRecorder`."""

    async def flush(self) -> None:
        """Write the entries' latest use to the store."""


class UsageFlusher:
    """Writes the entries' latest use to the store every USAGE_FLUSH_SECONDS, and at stop.

    The clock is a thread that hands each flush to the event loop. A timer waiting in the loop
    itself would make every turn of the loop work out how long it may sleep, which costs every
    Check about 1.5% of its throughput (callgrind: 12k cycles a call of 830k).
    """

    def __init__(
        self,
        checker: UsageSink,
        loop: asyncio.AbstractEventLoop,
        interval: float = USAGE_FLUSH_SECONDS,
    ) -> None:
        self._checker = checker
        self._loop = loop
        self._interval = interval
        self._stopping = threading.Event()
        self._flushing: asyncio.Task[None] | None = None
        self._clock = threading.Thread(target=self._tick, name="usage-flush", daemon=True)
        self._clock.start()

    def _tick(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self._loop.call_soon_threadsafe(self._flush)
            except RuntimeError:  # the loop closed without stop(): nothing left to flush to
                return

    def _flush(self) -> None:
        # A tick queued just before stop() is dropped: stop() makes the last flush itself.
        if self._stopping.is_set() or (self._flushing and not self._flushing.done()):
            return
        self._flushing = self._loop.create_task(self._flush_logged())

    async def _flush_logged(self) -> None:
        # Never raises: a failed flush must not end the clock or the shutdown after it.
        try:
            await self._checker.flush()
        except AuthzError as exc:
            log.warning("could not record last use of entries: %s", exc)
        except Exception:  # logged; the times stay unwritten, nothing else is lost
            log.exception("could not record last use of entries")

    async def stop(self) -> None:
        """Stop the clock, let a running flush end, and flush what is left."""
        self._stopping.set()
        self._clock.join()  # at once: the clock's wait returns when _stopping is set
        if self._flushing is not None:
            await self._flushing
        await self._flush_logged()
