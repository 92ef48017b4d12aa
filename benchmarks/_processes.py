"""Benchmark processes: the servers under test (real and empty), and their metrics."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
_PORT = re.compile(r"(serving|metrics) on \S+:(\d+)")


class Server:
    """A server process on port 0, with its ports read from its own log lines."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, metrics: bool = False):
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.ports: dict[str, int] = {}
        self.log: list[str] = []
        ready = threading.Event()
        wanted = {"serving", "metrics"} if metrics else {"serving"}

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.log.append(line)
                if match := _PORT.search(line):
                    self.ports[match[1]] = int(match[2])
                    if wanted <= self.ports.keys():
                        ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120) or not wanted <= self.ports.keys():
            self.process.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.log))
        self.target = f"127.0.0.1:{self.ports['serving']}"

    @classmethod
    def authz(
        cls,
        db: Path | str,
        env: dict[str, str] | None = None,
        listen: str = "127.0.0.1:0",
        workers: int = 1,
    ) -> Server:
        """The real service on `db`, with metrics (`workers`: `serve --workers`)."""
        argv = [sys.executable, "-m", "authz_service.cli", "serve", "--listen", listen]
        if workers != 1:
            argv += ["--workers", str(workers)]
        argv += ["--db", str(db), "--metrics-listen", "127.0.0.1:0", "--log-level", "WARNING"]
        # WARNING hides the port lines; INFO for those, nothing else is logged per call.
        argv[-1] = "INFO"
        return cls(argv, env, metrics=True)

    @classmethod
    def empty(cls, listen: str = "127.0.0.1:0", reuse_port: bool = False) -> Server:
        """The empty-handler baseline (`reuse_port`: one of several processes on one port)."""
        argv = [sys.executable, str(HERE / "empty_server.py"), "--listen", listen]
        return cls([*argv, "--reuse-port"] if reuse_port else argv)

    def metric(self, name: str) -> float:
        """One unlabelled metric's current value."""
        url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0

    def rss_mb(self) -> float:
        """Resident memory of the server process, in MB (10^6 bytes)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = int(re.search(r"VmRSS:\s+(\d+) kB", status)[1])  # type: ignore[index]
        return kib * 1024 / 1e6

    def pin(self, cpus: set[int]) -> None:
        """Run every thread of the server on `cpus` (threads started later inherit it).

        Lists the threads again until a pass finds no new one, in case one was started by a
        thread not yet pinned. Does nothing once the process has ended.
        """
        done: set[str] = set()
        while True:
            try:
                tasks = {task.name for task in Path(f"/proc/{self.process.pid}/task").iterdir()}
            except FileNotFoundError:
                return
            if tasks <= done:
                return
            for task in tasks - done:
                # A thread may end between the listing and the call.
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), cpus)
            done |= tasks

    def stop(self) -> None:
        """SIGTERM, then wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@contextmanager
def per_core(servers: Sequence[Server]) -> Iterator[str]:
    """Servers on the last CPU; this thread, and the load generators it starts, on the others.

    Throughput is then a figure per core, and a load generator never takes CPU from the server
    it measures. The server CPU's hyperthread siblings are left idle. Yields a note saying how
    the run was placed; with no CPU to spare for the load, nothing is pinned.
    """
    everything = os.sched_getaffinity(0)
    server_cpu = max(everything)
    load_cpus = everything - _siblings(server_cpu)
    if not load_cpus:
        yield "unpinned: no CPU apart from the server's"
        return
    try:
        for server in servers:
            server.pin({server_cpu})
        os.sched_setaffinity(0, load_cpus)
        yield f"server on CPU {server_cpu}, load on the other {len(load_cpus)}"
    finally:
        os.sched_setaffinity(0, everything)
        for server in servers:
            server.pin(everything)


def _siblings(cpu: int) -> set[int]:
    """`cpu` and the hyperthreads sharing its core, from sysfs ("0-1" or "0,4")."""
    path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
    try:
        listing = path.read_text().strip()
    except OSError:
        return {cpu}
    siblings = {cpu}
    for part in listing.split(","):
        first, _, last = part.partition("-")
        siblings.update(range(int(first), int(last or first) + 1))
    return siblings
