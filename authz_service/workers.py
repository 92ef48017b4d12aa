"""`authz-service serve --workers N`: one supervisor and N worker processes on one port.

The supervisor prepares the store (migrations, the server key, the bootstrap admin) and reserves
the listening ports with SO_REUSEPORT, then forks the workers before any gRPC server or thread
exists (as grpc's examples/python/multiprocessing does). Each worker is a whole server: the
kernel spreads connections across them, and the store's event log keeps their caches one truth.

The supervisor forwards SIGTERM and SIGINT to every worker, waits for them to drain, and exits
0. A worker that dies is started again (after a pause that grows while it keeps dying young); a
worker whose first start fails (exit 2: a port, a TLS file) stops the service with exit 2. With
AUTHZ_METRICS_LISTEN, one more child serves every worker's metrics with a `worker` label: the
supervisor itself never starts a thread or opens the database once it forks.
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
from functools import partial
from pathlib import Path

from prometheus_client import CollectorRegistry

from .adapters.metrics import AdminCollector, serve_registry
from .adapters.stores import open_counter
from .adapters.worker_metrics import WorkerSnapshots, remove_snapshots
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
    """One child's place: what it runs, its process now, and how it has fared."""

    name: str
    run: Callable[[], int]
    pid: int = 0
    started: float = 0.0
    starts: int = 0
    young_deaths: int = 0
    restart_at: float = 0.0


def supervise(settings: Settings) -> int:
    """Run `settings.workers` workers until SIGTERM or SIGINT; the exit code."""
    # First: a signal that comes while the store is prepared waits here, then stops the workers
    # (a forked child starts with no signal pending).
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    asyncio.run(_prepare_store(settings))
    held = [_hold_port(settings.listen)]
    worker_settings = replace(
        settings, listen=_bound(settings.listen, held[0]), bootstrap_token="", metrics_listen=""
    )
    if settings.admin_listen:
        held.append(_hold_port(settings.admin_listen))
        worker_settings = replace(
            worker_settings, admin_listen=_bound(settings.admin_listen, held[1])
        )
    if settings.metrics_listen:
        _probe(settings.metrics_listen, "serve metrics")
    metrics_dir = Path(tempfile.mkdtemp(prefix="authz-worker-metrics-"))
    try:
        slots = [
            _Slot(f"worker {i}", partial(_run_worker, worker_settings, Worker(i, metrics_dir)))
            for i in range(settings.workers)
        ]
        if settings.metrics_listen:
            slots.append(_Slot("metrics process", partial(_run_metrics, settings, metrics_dir)))
        # The supervisor itself never starts a thread or opens the database past this point,
        # so each fork, restarts included, copies a process with one thread and no connection.
        for slot in slots:
            _fork(slot)
        log.info(
            "supervising %d workers on %s (database %s)",
            settings.workers,
            worker_settings.listen,
            settings.db,
        )
        return _watch(slots, settings.grace_seconds)
    finally:
        for each in held:
            each.close()
        remove_snapshots(metrics_dir)


async def _prepare_store(settings: Settings) -> None:
    """Migrate the store, make the server key and the bootstrap admin, once, before the
    workers exist; everything opened for it is closed again (nothing may cross the fork)."""
    store, _, _, hash_pool = await prepare(settings)
    hash_pool.shutdown()
    store.close()


def _hold_port(listen: str) -> socket.socket:
    """Reserve `listen` for the workers (SO_REUSEPORT), after making sure no other process
    serves it: another service's SO_REUSEPORT socket would otherwise share its connections."""
    _probe(listen, "listen")
    try:
        return reserve_port(listen, shared=True)
    except OSError as exc:
        raise StartupError(f"cannot listen on {listen}: {exc.strerror}") from None


def _probe(listen: str, what: str) -> None:
    try:
        reserve_port(listen).close()
    except OSError as exc:
        raise StartupError(f"cannot {what} on {listen}: {exc.strerror}") from None


def _bound(listen: str, held: socket.socket) -> str:
    """`listen` with the port the reservation got (port 0 picks one)."""
    return f"{listen.rpartition(':')[0]}:{held.getsockname()[1]}"


def _run_worker(settings: Settings, worker: Worker) -> int:
    """A worker: a whole server on the shared ports, until SIGTERM or SIGINT."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    try:
        asyncio.run(serve(settings, worker))
    except StartupError as exc:
        log.error("worker %d cannot start: %s", worker.index, exc)  # noqa: TRY400 (one line)
        return 2
    return 0


def _run_metrics(settings: Settings, metrics_dir: Path) -> int:
    """The metrics process: every worker's counters and the entries, on one listener, until
    SIGTERM or SIGINT (still blocked here, so waited for)."""
    registry = CollectorRegistry()
    registry.register(WorkerSnapshots(metrics_dir))
    registry.register(
        AdminCollector(None, open_counter(settings.db, password_file=settings.db_password_file))
    )
    try:
        listener = serve_registry(settings.metrics_listen, registry)
    except OSError as exc:
        log.error("cannot serve metrics on %s: %s", settings.metrics_listen, exc.strerror)  # noqa: TRY400 (one line)
        return 2
    log.info("metrics on %s:%d", settings.metrics_listen.rpartition(":")[0], listener.port)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    listener.close()
    return 0


def _fork(slot: _Slot) -> None:
    supervisor = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: it never returns into the supervisor's code
        code = 1
        try:
            _end_with(supervisor)
            code = slot.run()
        except KeyboardInterrupt:  # Ctrl-C reaches the whole process group, during a start too
            code = 0
        except BaseException:
            log.exception("%s failed", slot.name)
        finally:
            logging.shutdown()
            os._exit(code)
    slot.pid = pid
    slot.started = time.monotonic()
    slot.starts += 1
    log.info("%s started (pid %d)", slot.name, pid)


def _end_with(supervisor: int) -> None:
    """Ask Linux to send this worker SIGTERM when the supervisor dies (even by SIGKILL), so no
    worker outlives it unsupervised."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
        if os.getppid() != supervisor:  # it died before the request was made
            os.kill(os.getpid(), signal.SIGTERM)


def _watch(slots: list[_Slot], grace: float) -> int:
    """Restart children that die, until a signal to stop; then stop them all."""
    while True:
        received = signal.sigtimedwait(_SIGNALS, _next_wait(slots))
        if received is not None and received.si_signo != signal.SIGCHLD:
            running = sum(1 for slot in slots if slot.pid)
            name = signal.Signals(received.si_signo).name
            log.info("stopping: %s to each of %d processes", name, running)
            return _stop(slots, received.si_signo, grace)
        for slot, status in _reaped(slots):
            code = os.waitstatus_to_exitcode(status)
            if code == 2 and slot.starts == 1:
                # Its first start failed (a port, a TLS file): so will the others'.
                log.error("%s could not start; stopping the service", slot.name)
                _stop(slots, signal.SIGTERM, grace)
                return 2
            young = time.monotonic() - slot.started < _YOUNG_SECONDS
            slot.young_deaths = slot.young_deaths + 1 if young else 0
            pause = min(_MAX_PAUSE_SECONDS, 0.5 * 2 ** (slot.young_deaths - 1)) if young else 0.0
            slot.restart_at = time.monotonic() + pause
            log.error(
                "%s (pid %d) ended (%s); starting it again in %.1f s",
                slot.name,
                slot.pid,
                _ending(code),
                pause,
            )
            slot.pid = 0
        now = time.monotonic()
        for slot in slots:
            if slot.pid == 0 and slot.restart_at <= now:
                _fork(slot)


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
                    log.error("%s did not stop in time; killing it", slot.name)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.pid, signal.SIGKILL)
            deadline = float("inf")
        signal.sigtimedwait({signal.SIGCHLD}, 0.1)
    log.info("stopped")
    return 1 if failed else 0


def _ending(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
