"""The real `authz-admin` executable, run against one server as the bootstrap admin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server_process import BOOTSTRAP_TOKEN

ADMIN_CLI = Path(sys.executable).with_name("authz-admin")


@dataclass(frozen=True)
class Run:
    """One finished `authz-admin` invocation."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


class AdminCli:
    """Runs `authz-admin` against one server as the bootstrap admin; keeps every run."""

    def __init__(self, target: str, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")}
        self.env |= {"AUTHZ_TARGET": target, "AUTHZ_ADMIN_TOKEN": BOOTSTRAP_TOKEN}
        self.runs: list[Run] = []

    def __call__(self, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> Run:
        completed = subprocess.run(
            [str(ADMIN_CLI), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env | (env or {}),
            timeout=60,
            check=False,
        )
        run = Run(args, completed.returncode, completed.stdout, completed.stderr)
        self.runs.append(run)
        return run

    def ok(self, *args: str, stdin: str = "") -> Run:
        run = self(*args, stdin=stdin)
        assert run.code == 0, run.stderr
        return run

    def create(self, subject: str, token: str, *allow: str) -> dict[str, Any]:
        flags = [f"--allow={restriction}" for restriction in allow or ("catalog",)]
        entry: dict[str, Any] = self.ok("create", subject, *flags, "--json", stdin=token).json()
        return entry

    def file(self, name: str, text: str) -> str:
        path = self.tmp_path / name
        path.write_text(text)
        return str(path)
