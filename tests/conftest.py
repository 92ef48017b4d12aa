"""Fixtures shared by the integration and end-to-end tiers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server_process import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real server on port 0 with a fresh SQLite file and the bootstrap admin."""
    process = ServerProcess(tmp_path / "data" / "authz.db")
    yield process
    process.stop()
