"""A real PostgreSQL server for the tests: a temporary cluster on a free port of 127.0.0.1.

The binaries are PostgreSQL's own (`initdb`, `pg_ctl`): from `AUTHZ_PG_BIN` when set, else
`pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin, else PATH. PostgreSQL refuses
to run as root, so as root the cluster belongs to the `postgres` user and its commands run
through `runuser`. The socket lives in the cluster's own temporary folder, never in /run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

USER = "authz"
SERVER_OWNER = "postgres"
_WANTED = ("initdb", "pg_ctl", "postgres")
# Where Debian's packages put each major version's binaries.
DEBIAN_ROOT = Path("/usr/lib/postgresql")


class PostgresMissing(Exception):
    """No PostgreSQL server binaries here; the message says, in one line, how to get them."""


def server_binaries() -> Path:
    """The folder holding initdb, pg_ctl and postgres; PostgresMissing when there is none."""
    candidates: list[Path] = []
    if chosen := os.environ.get("AUTHZ_PG_BIN"):
        candidates.append(Path(chosen))
    if pg_config := shutil.which("pg_config"):
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    candidates += sorted(
        DEBIAN_ROOT.glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for folder in candidates:
        if all((folder / name).exists() for name in _WANTED):
            return folder
    raise PostgresMissing(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them"
        " (Debian: apt-get install postgresql) or set AUTHZ_PG_BIN to their folder"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """A cluster of its own, started at once; `stop()` and `start()` again keep its data."""

    def __init__(self) -> None:
        self.bin = server_binaries()
        self.work = Path(tempfile.mkdtemp(prefix="authz-pg-"))
        self.data = self.work / "data"
        self.socket_dir = self.work / "socket"
        self.log_path = self.work / "server.log"
        self.port = free_port()
        self._as_owner = os.geteuid() == 0
        self.socket_dir.mkdir()
        if self._as_owner:
            shutil.chown(self.work, SERVER_OWNER)
            shutil.chown(self.socket_dir, SERVER_OWNER)
        self._run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--username",
            USER,
            "--auth",
            "trust",
            "--no-sync",
            "--encoding",
            "UTF8",
        )
        self.start()

    @property
    def url(self) -> str:
        """The URL of the default database (`postgres`)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
            " -c max_connections=300 -c fsync=on"
        )
        self._run(
            "pg_ctl",
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log_path),
            "--options",
            options,
            "--wait",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate` is a crash: no checkpoint, clients cut at once)."""
        self._run("pg_ctl", "--pgdata", str(self.data), "--mode", mode, "--wait", "stop")

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.work, ignore_errors=True)

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _run(self, name: str, *args: str) -> None:
        command = [str(self.bin / name), *args]
        if self._as_owner:
            command = ["runuser", "-u", SERVER_OWNER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.work)
        if done.returncode:
            raise subprocess.CalledProcessError(
                done.returncode, command, done.stdout, done.stderr + self.log
            )


if __name__ == "__main__":  # `python tests/postgres_server.py`: the test command's check
    try:
        print(server_binaries())  # noqa: T201 (a command's answer)
    except PostgresMissing as missing:
        raise SystemExit(f"dev.py: {missing}") from None
