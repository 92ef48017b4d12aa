"""The core and the use cases are pure: importing them loads no gRPC, protobuf, SQLite,
PostgreSQL or argon2 module (those belong to the adapters and the gRPC edge)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("grpc", "google.protobuf", "sqlite3", "sqlite_utils", "psycopg", "argon2")


@pytest.mark.parametrize("package", ["authz_service.core", "authz_service.usecases"])
def test_importing_the_inner_layers_loads_no_outer_library(package: str) -> None:
    probe = (
        f"import json, sys, importlib, pkgutil; import {package} as p\n"
        "for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout
    )
    outer = [
        name for name in loaded if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert outer == [], f"{package} loads {outer}"
