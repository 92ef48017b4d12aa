"""`authz-service serve --workers N`: one supervisor and N worker processes on one port.

The supervisor prepares the store (migrations, the server key, the bootstrap admin) and reserves
the listening ports with SO_REUSEPORT, then forks the workers before any gRPC server or thread
exists (as grpc's examples/python/multiprocessing does). Each worker is a whole server: the
kernel spreads connections across them, and the store's event log keeps their caches one truth.

The supervisor forwards SIGTERM and SIGINT to every worker, waits for them to drain, and exits
0. A worker that dies is started again (after a pause that grows while it keeps dying young); a
worker that cannot start at all (exit 2) stops the service with exit 2. With
AUTHZ_METRICS_LISTEN, the supervisor serves every worker's metrics with a `worker` label.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from .adapters.metrics import AdminCollector, serve_registry
from .adapters.metrics_listener import MetricsListener
from .adapters.sqlite_store import SqliteFile
from .adapters.worker_metrics import WorkerSnapshots, remove_snapshots
from .core.errors import AuthzError
from .core.model import State
from .server import StartupError, Worker, prepare, reserve_port, serve
from .settings import Settings

log = logging.getLogger("authz_service")

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
# A worker that lives shorter than this died young: its next start waits longer each time.
_YOUNG_SECONDS = 10.0
_MAX_PAUSE_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# How long past the drain grace a stopping worker gets before it is killed.
_KILL_AFTER_SECONDS = 5.0


@dataclass
class _Slot:
    """One worker's place: its process now, and how it has fared."""

    index: int
    pid: int = 0
    started: float = 0.0
    young_deaths: int = 0
    restart_at: float = 0.0


def supervise(settings: Settings) -> int:
    """Run `settings.workers` workers until SIGTERM or SIGINT; the exit code."""
    asyncio.run(_prepare_store(settings))
    held = [reserve_port(settings.listen, shared=True)]
    worker_settings = replace(
        settings, listen=_bound(settings.listen, held[0]), bootstrap_token="", metrics_listen=""
    )
    if settings.admin_listen:
        held.append(reserve_port(settings.admin_listen, shared=True))
        worker_settings = replace(
            worker_settings, admin_listen=_bound(settings.admin_listen, held[1])
        )
    metrics_dir = Path(tempfile.mkdtemp(prefix="authz-worker-metrics-"))
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    slots = [_Slot(i) for i in range(settings.workers)]
    for slot in slots:
        _fork(slot, worker_settings, metrics_dir)
    host = worker_settings.listen.rpartition(":")[0]
    log.info(
        "supervising %d workers on %s:%s (database %s)",
        len(slots),
        host,
        worker_settings.listen.rpartition(":")[2],
        settings.db,
    )
    listener = _serve_metrics(settings, metrics_dir) if settings.metrics_listen else None
    try:
        code = _watch(slots, worker_settings, metrics_dir)
    finally:
        if listener is not None:
            listener.close()
        for each in held:
            each.close()
        remove_snapshots(metrics_dir)
    return code


async def _prepare_store(settings: Settings) -> None:
    """Migrate the store, make the server key and the bootstrap admin, once, before the
    workers exist; everything opened for it is closed again (nothing may cross the fork)."""
    store, _, _, hash_pool = await prepare(settings)
    hash_pool.shutdown()
    store.close()


def _bound(listen: str, held: socket.socket) -> str:
    """`listen` with the port the reservation got (port 0 picks one)."""
    return f"{listen.rpartition(':')[0]}:{held.getsockname()[1]}"


def _fork(slot: _Slot, settings: Settings, metrics_dir: Path) -> None:
    supervisor = os.getpid()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            _end_with(supervisor)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            asyncio.run(serve(settings, Worker(slot.index, metrics_dir)))
            code = 0
        except StartupError as exc:
            log.error("worker %d cannot start: %s", slot.index, exc)  # noqa: TRY400 (one line)
            code = 2
        except BaseException:  # a worker never returns into the supervisor's code
            log.exception("worker %d failed", slot.index)
        finally:
            logging.shutdown()
            os._exit(code)
    slot.pid = pid
    slot.started = time.monotonic()
    log.info("worker %d started (pid %d)", slot.index, pid)


def _end_with(supervisor: int) -> None:
    """Ask Linux to send this worker SIGTERM when the supervisor dies (even by SIGKILL), so no
    worker outlives it unsupervised."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
        if os.getppid() != supervisor:  # it died before the request was made
            os.kill(os.getpid(), signal.SIGTERM)


def _watch(slots: list[_Slot], settings: Settings, metrics_dir: Path) -> int:
    """Restart workers that die, until a signal to stop; then stop them all."""
    while True:
        received = signal.sigtimedwait(_SIGNALS, _next_wait(slots))
        if received is not None and received.si_signo != signal.SIGCHLD:
            log.info("stopping %d workers", sum(1 for s in slots if s.pid))
            return _stop(slots, received.si_signo, settings.grace_seconds)
        for slot, status in _reaped(slots):
            code = os.waitstatus_to_exitcode(status)
            if code == 2:
                log.error("worker %d could not start; stopping the service", slot.index)
                _stop(slots, signal.SIGTERM, settings.grace_seconds)
                return 2
            young = time.monotonic() - slot.started < _YOUNG_SECONDS
            slot.young_deaths = slot.young_deaths + 1 if young else 0
            pause = min(_MAX_PAUSE_SECONDS, 0.5 * 2 ** (slot.young_deaths - 1)) if young else 0.0
            slot.restart_at = time.monotonic() + pause
            log.error(
                "worker %d (pid %d) ended (%s); starting it again in %.1f s",
                slot.index,
                slot.pid,
                _ending(code),
                pause,
            )
            slot.pid = 0
        now = time.monotonic()
        for slot in slots:
            if slot.pid == 0 and slot.restart_at <= now:
                _fork(slot, settings, metrics_dir)


def _next_wait(slots: list[_Slot]) -> float:
    pending = [s.restart_at for s in slots if s.pid == 0]
    return max(0.05, min(pending) - time.monotonic()) if pending else 1.0


def _reaped(slots: list[_Slot]) -> list[tuple[_Slot, int]]:
    """The slots whose worker ended, with its wait status."""
    ended = []
    for slot in slots:
        if slot.pid == 0:
            continue
        pid, status = os.waitpid(slot.pid, os.WNOHANG)
        if pid:
            ended.append((slot, status))
    return ended


def _stop(slots: list[_Slot], signum: int, grace: float) -> int:
    """Forward `signum` to every worker and wait for them (killing any that overstay)."""
    for slot in slots:
        if slot.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, signum)
    deadline = time.monotonic() + grace + _KILL_AFTER_SECONDS
    failed = False
    while any(slot.pid for slot in slots):
        for slot, status in _reaped(slots):
            code = os.waitstatus_to_exitcode(status)
            failed |= code not in {0, -signal.SIGTERM, -signal.SIGINT}
            slot.pid = 0
        if time.monotonic() > deadline:
            for slot in slots:
                if slot.pid:
                    log.error("worker %d did not stop in time; killing it", slot.index)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.pid, signal.SIGKILL)
            deadline = float("inf")
        signal.sigtimedwait({signal.SIGCHLD}, 0.1)
    log.info("stopped")
    return 1 if failed else 0


def _ending(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"


def _serve_metrics(settings: Settings, metrics_dir: Path) -> MetricsListener:
    """The one metrics listener: every worker's counters, and the entries counted here."""
    registry = CollectorRegistry()
    registry.register(WorkerSnapshots(metrics_dir))
    registry.register(AdminCollector({}, _entry_counter(settings.db_path)))
    try:
        listener = serve_registry(settings.metrics_listen, registry)
    except OSError as exc:
        raise StartupError(
            f"cannot serve metrics on {settings.metrics_listen}: {exc.strerror}"
        ) from None
    log.info("metrics on %s:%d", settings.metrics_listen.rpartition(":")[0], listener.port)
    return listener


def _entry_counter(path: Path) -> Callable[[datetime], dict[State, int]]:
    """`count_by_state` of the database, opened on the first scrape (on the listener's
    thread, never before a fork)."""
    opened: list[SqliteFile] = []

    def count(now: datetime) -> dict[State, int]:
        if not opened:
            try:
                opened.append(SqliteFile(path))
            except (OSError, AuthzError) as exc:
                raise AuthzError(f"cannot open {path}: {exc}") from None
        return opened[0].count_by_state(now)

    return count
