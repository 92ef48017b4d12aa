"""Fixtures shared by the integration and end-to-end tiers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from postgres_server import PostgresServer
from server_process import ServerProcess


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked slow (floods, soaks) unless the run selects them: `-m slow`."""
    if "slow" in str(config.getoption("markexpr")):
        return
    skip = pytest.mark.skip(reason="a load test: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real server on port 0 with a fresh SQLite file and the bootstrap admin."""
    process = ServerProcess(tmp_path / "data" / "authz.db")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole run (a temporary cluster, see postgres_server)."""
    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """The URL of a new, empty database of its own on the run's PostgreSQL server."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:16]}")
