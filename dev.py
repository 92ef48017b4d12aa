#!/usr/bin/env python3
"""The project's task runner: needs only python3 (3.11+); makes its own virtual environment.

python3 dev.py serve [flags]   start the service on its embedded default (SQLite in ./data/)
python3 dev.py test [args]     lint, type-check and run the whole test suite (args go to pytest)
python3 dev.py bench [--smoke] run the performance benchmark (benchmarks/run.py)
python3 dev.py gen             regenerate the protobuf code under protos/
python3 dev.py lock            re-pin requirements.lock from the current environment
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
LOCK = ROOT / "requirements.lock"
STAMP = VENV / ".installed"


def _wanted_stamp() -> str:
    digest = hashlib.sha256()
    for path in (ROOT / "pyproject.toml", LOCK):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create .venv and install the pinned dependencies when missing or out of date."""
    if not (BIN / "python").exists():
        print("dev.py: creating .venv (first run only)", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = _wanted_stamp()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print("dev.py: installing pinned dependencies into .venv", file=sys.stderr)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    # Quiet unless it fails: setuptools warns about every editable install.
    install = subprocess.run(
        [*pip, "install", "-c", str(LOCK), "-e", f"{ROOT}[dev]"],
        check=False,
        capture_output=True,
        text=True,
    )
    if install.returncode:
        sys.stderr.write(install.stdout + install.stderr)
        raise SystemExit(install.returncode)
    STAMP.write_text(wanted)


def run(*argv: str) -> int:
    return subprocess.run(argv, cwd=ROOT, check=False).returncode


def gen() -> int:
    protos = ROOT / "protos"
    sources = sorted(str(p.relative_to(protos)) for p in protos.rglob("*.proto"))
    return run(
        str(BIN / "python"),
        "-m",
        "grpc_tools.protoc",
        f"-I{protos}",
        f"--python_out={protos}",
        f"--pyi_out={protos}",
        f"--grpc_python_out={protos}",
        *sources,
    )


def postgres_problem() -> str | None:
    """Why the tests cannot start their PostgreSQL (one line), or None when they can."""
    found = subprocess.run(
        [str(BIN / "python"), str(ROOT / "tests" / "postgres_server.py")],
        check=False,
        capture_output=True,
        text=True,
    )
    return found.stderr.strip().splitlines()[-1] if found.returncode else None


def test(args: list[str]) -> int:
    # The suite starts a real PostgreSQL server of its own: say at once if it cannot.
    if problem := postgres_problem():
        print(problem, file=sys.stderr)
        return 2
    steps = [
        [str(BIN / "ruff"), "check", "."],
        [str(BIN / "ruff"), "format", "--check", "."],
        [str(BIN / "mypy")],
    ]
    for step in steps:
        print(f"dev.py: {Path(step[0]).name} {' '.join(step[1:])}", flush=True)
        if code := run(*step):
            return code
    return run(str(BIN / "python"), "-m", "pytest", *args)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"serve", "test", "bench", "gen", "lock"}:
        print(__doc__, file=sys.stderr)
        return 2
    command, args = sys.argv[1], sys.argv[2:]
    ensure_venv()
    if command == "serve":
        os.execv(  # noqa: S606 (replaces this process with the server, by path)
            BIN / "authz-service", [str(BIN / "authz-service"), "serve", *args]
        )
    if command == "gen":
        return gen()
    if command == "bench":
        return run(str(BIN / "python"), str(ROOT / "benchmarks" / "run.py"), *args)
    if command == "lock":
        frozen = subprocess.run(
            [str(BIN / "python"), "-m", "pip", "freeze", "--exclude-editable"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        LOCK.write_text(frozen)
        return 0
    return test(args)


if __name__ == "__main__":
    sys.exit(main())
