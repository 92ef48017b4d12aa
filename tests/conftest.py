"""Fixtures shared by the integration and end-to-end tiers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
