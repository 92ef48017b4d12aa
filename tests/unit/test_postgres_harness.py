"""The test command's own PostgreSQL: found where the packages put it, or one line saying how."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import postgres_server

HARNESS = Path(__file__).parents[1] / "postgres_server.py"


def test_without_server_binaries_the_check_says_in_one_line_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_server, "DEBIAN_ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("AUTHZ_PG_BIN", raising=False)
    with pytest.raises(postgres_server.PostgresMissing) as missing:
        postgres_server.server_binaries()
    assert "apt-get install postgresql" in str(missing.value)
    assert "AUTHZ_PG_BIN" in str(missing.value)


def test_authz_pg_bin_names_the_binaries_to_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("initdb", "pg_ctl", "postgres"):
        (tmp_path / name).write_text("")
    monkeypatch.setenv("AUTHZ_PG_BIN", str(tmp_path))
    assert postgres_server.server_binaries() == tmp_path


def test_the_check_run_as_a_command_exits_0_here_and_prints_the_folder() -> None:
    done = subprocess.run(
        [sys.executable, str(HARNESS)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (Path(done.stdout.strip()) / "initdb").exists()
