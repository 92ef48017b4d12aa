"""Envoy in front of authz-service against Envoy in front of an empty ext_authz server.

Both Envoys run deploy/envoy.yaml with the catalog route answering 200 itself instead of
forwarding, so a request costs Envoy plus one ext_authz Check and nothing else. The load is
h2load over h2c: a plain GET with `authorization: Bearer <warm token>`, the same for both,
interleaved round by round in the same run.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from _load import Load, median_load, pair_ratios, rounds_of, run_h2load
from _processes import Server, per_core

# The Envoy launcher is shared with the end-to-end tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from envoy_process import (
    EnvoyProcess,
    EnvoyUnavailable,
    render_config,
)

HERE = Path(__file__).resolve().parent
PATH = "/api/catalog/entities"
TARGET = 0.90

RowT = TypeVar("RowT")
# Row(scenario, rps, p50_ms, p99_ms, ratio, target, passed, note), as benchmarks/run.py has it.
MakeRow = Callable[
    [str, float | None, float | None, float | None, float | None, str, bool, str], RowT
]


def http_load(
    url: str, authorization: str, seconds: float, clients: int = 4, streams: int = 16
) -> Load:
    """Drive GET `url` over h2c for `seconds`, with the given Authorization header."""
    headers = (f"authorization: {authorization}",)
    return run_h2load(url, headers, (), seconds, clients=clients, streams=streams)


def _expect_allowed(envoy: EnvoyProcess, authorization: str) -> None:
    status, _, _ = envoy.get(envoy.url + PATH, {"authorization": authorization})
    if status != 200:
        raise RuntimeError(f"a warm token got {status} through Envoy, not 200")


def envoy_rows(
    make_row: MakeRow[RowT], authz: Server, token: str, seconds: float, rounds: int
) -> list[RowT]:
    """The floor row and the authz-service row, or one FAIL row saying why they could not run.

    `authz` is the running authz-service (the seeded large database) and `token` one of its
    warm tokens with catalog read access. Placed as `per_core` places the other throughput
    rows: the two ext_authz servers on one CPU, Envoy and h2load on the others.
    """
    authorization = f"Bearer {token}"
    floor: list[Load] = []
    real: list[Load] = []
    with tempfile.TemporaryDirectory(prefix="authz-bench-envoy-") as work:
        empty: Server | None = None
        envoys: list[EnvoyProcess] = []
        try:
            empty = Server([sys.executable, str(HERE / "empty_ext_authz.py")])
            with per_core([empty, authz]) as placement:
                for name, target in (("floor", empty.target), ("authz", authz.target)):
                    config = render_config(target, direct_catalog=True)
                    envoys.append(EnvoyProcess(config, Path(work) / name))
                for envoy in envoys:
                    _expect_allowed(envoy, authorization)
                floor, real = rounds_of(
                    [
                        lambda: http_load(envoys[0].url + PATH, authorization, seconds),
                        lambda: http_load(envoys[1].url + PATH, authorization, seconds),
                    ],
                    rounds,
                )
        except (EnvoyUnavailable, RuntimeError, OSError) as exc:
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            name = "Envoy ext_authz vs empty ext_authz"
            return [make_row(name, None, None, None, None, ">= 0.90", False, why)]
        finally:
            for envoy in envoys:
                envoy.stop()
            if empty is not None:
                empty.stop()
    base, ours = median_load(floor), median_load(real)
    pairs = pair_ratios(real, floor)
    ratio = statistics.median(pairs)
    note = f"h2load GET via Envoy (h2c), warm token; {placement}"
    spread = f"pairs of rounds: {len(pairs)}, from {min(pairs):.3f} to {max(pairs):.3f}"
    return [
        make_row(
            "Envoy + empty ext_authz server (floor)",
            base.rps,
            base.p50_ms,
            base.p99_ms,
            1.0,
            "baseline",
            base.failures == 0,
            note,
        ),
        make_row(
            "Envoy + authz-service ext_authz, 100k entries",
            ours.rps,
            ours.p50_ms,
            ours.p99_ms,
            ratio,
            f">= {TARGET:.2f} vs Envoy floor",
            ratio >= TARGET and ours.failures == 0,
            spread,
        ),
    ]
