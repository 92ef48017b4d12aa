"""Load generators: h2load for fixed bodies, a Node http2 script for fresh tokens per call."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import struct
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from authz.v1 import authz_pb2

HERE = Path(__file__).resolve().parent
CHECK_PATH = "/authz.v1.AuthzService/Check"


@dataclass(frozen=True)
class Load:
    """One load run's figures."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    failures: int


def rounds_of(loads: Sequence[Callable[[], Load]], rounds: int) -> list[list[Load]]:
    """Each load's results, `rounds` of them, the loads taking turns: every other round in
    reverse order (A B, then B A), so each pair of rounds gives every load each place once."""
    results: list[list[Load]] = [[] for _ in loads]
    for number in range(rounds):
        order = range(len(loads)) if number % 2 == 0 else reversed(range(len(loads)))
        for index in order:
            results[index].append(loads[index]())
    return results


def median_load(runs: Sequence[Load]) -> Load:
    """The run with the median throughput."""
    return sorted(runs, key=lambda load: load.rps)[len(runs) // 2]


def paired_ratio(ours: Sequence[Load], base: Sequence[Load]) -> float:
    """Our throughput against the baseline's: the median of `pair_ratios`.

    The median over pairs keeps one disturbed pair from moving the result.
    """
    return statistics.median(pair_ratios(ours, base))


def pair_ratios(ours: Sequence[Load], base: Sequence[Load]) -> list[float]:
    """Our throughput against the baseline's, per pair of rounds run by `rounds_of`.

    Each round's ratio pairs two loads run back to back, so a slow drift on the machine moves
    both alike. Each A B round and the B A round after it are then combined (geometric mean),
    so running first or second favours neither side. A last round without its pair counts
    alone.
    """
    ratios = [o.rps / b.rps for o, b in zip(ours, base, strict=True)]
    pairs = [math.sqrt(a * b) for a, b in zip(ratios[::2], ratios[1::2], strict=False)]
    if len(ratios) % 2:
        pairs.append(ratios[-1])
    return pairs


def grpc_body(request: authz_pb2.CheckRequest) -> bytes:
    """A unary gRPC request body: uncompressed flag, 4-byte big-endian length, message."""
    message = request.SerializeToString()
    return b"\0" + struct.pack(">I", len(message)) + message


def ensure_h2load() -> str:
    """The h2load path, installing Debian's nghttp2-client when missing and running as root."""
    install = ["apt-get", "install", "-y", "-q", "nghttp2-client"]
    steps = [install, ["apt-get", "update", "-q"], install]
    if os.geteuid() == 0 and shutil.which("apt-get"):
        for step in steps:
            if shutil.which("h2load"):
                break
            subprocess.run(step, check=False, capture_output=True)
    found = shutil.which("h2load")
    if not found:
        raise RuntimeError("h2load not found: install Debian's nghttp2-client (as root)")
    return found


def h2load(target: str, body: bytes, seconds: float, clients: int = 4, streams: int = 16) -> Load:
    """Drive Check with one fixed body for `seconds`."""
    with tempfile.TemporaryDirectory() as work:
        body_file = Path(work) / "body.bin"
        body_file.write_bytes(body)
        headers = ("content-type: application/grpc", "te: trailers")
        args = ("-d", str(body_file))
        return run_h2load(
            f"http://{target}{CHECK_PATH}", headers, args, seconds, clients=clients, streams=streams
        )


def run_h2load(
    url: str,
    headers: tuple[str, ...],
    args: tuple[str, ...],
    seconds: float,
    *,
    clients: int = 4,
    streams: int = 16,
) -> Load:
    """Run h2load against `url` for `seconds`; latencies from its per-request log."""
    with tempfile.TemporaryDirectory() as work:
        log_file = Path(work) / "requests.log"
        # check=False: a CalledProcessError would quote the command line, headers included
        # (an authorization header carries a token).
        result = subprocess.run(
            [
                ensure_h2load(),
                *("-D", f"{seconds:g}", "-c", str(clients), "-m", str(streams)),
                *(arg for header in headers for arg in ("-H", header)),
                *args,
                *("--log-file", str(log_file), url),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(f"h2load failed: {(result.stderr or result.stdout).strip()}")
        durations: list[float] = []
        failures = 0
        for line in log_file.read_text().splitlines():
            _, status, micros = line.split("\t")
            if status == "200":
                durations.append(int(micros) / 1000)
            else:
                failures += 1
    if not durations:
        raise RuntimeError(f"h2load completed no request to {url}:\n" + result.stdout)
    return _figures(durations, seconds, failures)


def node_load(
    target: str, seconds: float, body: bytes | None = None, clients: int = 4, streams: int = 16
) -> Load:
    """Drive Check with Node's http2: a fresh random token per call unless `body` is given."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found: the fresh-token flood needs Node.js")
    with tempfile.TemporaryDirectory() as work:
        argv = [node, str(HERE / "loadgen.mjs"), "--target", target, "--duration", str(seconds)]
        argv += ["--connections", str(clients), "--streams", str(streams)]
        if body is None:
            argv.append("--random-tokens")
        else:
            (Path(work) / "body.bin").write_bytes(body)
            argv += ["--body", str(Path(work) / "body.bin")]
        out = subprocess.run(argv, capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout)
    return Load(
        rps=figures["rps"],
        p50_ms=(figures["p50_us"] or 0) / 1000,
        p99_ms=(figures["p99_us"] or 0) / 1000,
        requests=figures["requests"],
        failures=figures["failures"],
    )


def _figures(durations: list[float], seconds: float, failures: int) -> Load:
    durations.sort()
    return Load(
        rps=len(durations) / seconds,
        p50_ms=statistics.median(durations),
        p99_ms=durations[min(len(durations) - 1, int(0.99 * len(durations)))],
        requests=len(durations),
        failures=failures,
    )
