"""Wiring: builds the store, hasher, use cases and gRPC server from settings, in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz.v1 import authz_pb2, authz_pb2_grpc

from .adapters import Argon2Hasher, ServerKeyError, SqliteStore, load_or_create_key
from .adapters.metrics import serve_metrics
from .adapters.sqlite_store import DatabaseInUse
from .api import AdminServicer, AuthzServicer
from .core.errors import AuthzError
from .settings import Settings
from .usecases import Admin, Checker

log = logging.getLogger("authz_service")

USAGE_FLUSH_SECONDS = 5.0
SERVICE_NAMES = (
    authz_pb2.DESCRIPTOR.services_by_name["AuthzService"].full_name,
    authz_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


class StartupError(Exception):
    """The server cannot start with these settings; the message is one line saying why."""


@dataclass
class Service:
    """A running server and what it owns."""

    server: grpc.aio.Server
    port: int
    checker: Checker
    store: SqliteStore
    health: health.aio.HealthServicer  # type: ignore[name-defined]  # re-exported, not declared
    pools: tuple[ThreadPoolExecutor, ...]
    flusher: asyncio.Task[None]

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish (up to `grace` s), then close the store."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self.flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.flusher
        await self.checker.flush_usage()
        for pool in self.pools:
            pool.shutdown(wait=True)
        self.store.close()


async def start(settings: Settings) -> Service:
    """Open the store, make sure the bootstrap admin exists, and start serving."""
    try:
        key = load_or_create_key(settings.key_path)
        store = SqliteStore(settings.db_path, exclusive=True)
    except (ServerKeyError, DatabaseInUse) as exc:
        raise StartupError(str(exc)) from None
    except (OSError, sqlite3.Error, AuthzError) as exc:
        raise StartupError(f"cannot use database {settings.db_path}: {exc}") from None
    hash_pool = ThreadPoolExecutor(settings.hash_workers, thread_name_prefix="argon2")
    write_pool = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
    hasher = Argon2Hasher(settings.argon2_time_cost, settings.argon2_memory_kib)
    checker = Checker(store, hasher, key, hash_pool, write_pool, cache_size=settings.cache_size)
    admin = Admin(store, hasher, checker, key=key, hash_pool=hash_pool, write_pool=write_pool)
    if settings.bootstrap_token:
        try:
            await admin.ensure_bootstrap_admin(settings.bootstrap_token)
        except AuthzError as exc:
            store.close()
            raise StartupError(f"bootstrap token: {exc}") from None

    try:
        _probe_listen(settings.listen)
    except OSError as exc:
        store.close()
        raise StartupError(f"cannot listen on {settings.listen}: {exc.strerror}") from None
    # so_reuseport off: a second server on a taken port must fail, not share it silently.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    # The generated registration functions are untyped.
    authz_pb2_grpc.add_AuthzServiceServicer_to_server(AuthzServicer(checker), server)  # type: ignore[no-untyped-call]
    authz_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(admin), server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(settings.listen)
    except RuntimeError:
        port = 0
    if port == 0:
        store.close()
        raise StartupError(f"cannot listen on {settings.listen}: address in use or not local")
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if settings.metrics_listen:
        try:
            metrics_port = serve_metrics(settings.metrics_listen, checker)
        except OSError as exc:
            await server.stop(None)
            store.close()
            raise StartupError(
                f"cannot serve metrics on {settings.metrics_listen}: {exc.strerror}"
            ) from None
        host = settings.metrics_listen.rpartition(":")[0]
        log.info("metrics on %s:%d", host, metrics_port)
    flusher = asyncio.create_task(_flush_usage_forever(checker))
    return Service(server, port, checker, store, health_servicer, (hash_pool, write_pool), flusher)


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls and return."""
    service = await start(settings)
    host = settings.listen.rpartition(":")[0]
    log.info("serving on %s:%d (database %s)", host, service.port, settings.db_path)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("stopping: draining in-flight calls (up to %.0f s)", settings.grace_seconds)
    await service.stop(settings.grace_seconds)
    log.info("stopped")


def _probe_listen(listen: str) -> None:
    """Bind the address once ourselves, so a taken or foreign address fails with a clear reason
    instead of grpc's multi-line log."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, int(port)))


async def _flush_usage_forever(checker: Checker) -> None:
    while True:
        await asyncio.sleep(USAGE_FLUSH_SECONDS)
        try:
            await checker.flush_usage()
        except AuthzError as exc:
            log.warning("could not record last use of entries: %s", exc)
