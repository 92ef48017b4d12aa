"""Metrics of `serve --workers N`: each worker writes its own, the supervisor serves them all.

A worker renders its registry to `<dir>/worker-<i>.prom` every second (written whole, then
renamed into place). The supervisor's one metrics listener reads those files at scrape time and
serves every worker's samples with a `worker` label, beside its own entry counts: one scrape
target for the whole service, never more than a second behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

log = logging.getLogger("authz_service.metrics")

SNAPSHOT_SECONDS = 1.0


def snapshot_path(directory: Path, worker: int) -> Path:
    """Where worker `worker` writes its metrics."""
    return directory / f"worker-{worker}.prom"


class SnapshotWriter:
    """Writes a registry to a file every `interval` seconds, on a thread of its own."""

    def __init__(
        self, registry: CollectorRegistry, path: Path, interval: float = SNAPSHOT_SECONDS
    ) -> None:
        self._registry = registry
        self._path = path
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-snapshot", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.write()
            if self._stopping.wait(self._interval):
                return

    def write(self) -> None:
        """Render the registry and put it in place at once (a reader sees old or new)."""
        partial = self._path.with_suffix(".tmp")
        try:
            partial.write_bytes(generate_latest(self._registry))
            partial.replace(self._path)
        except OSError as exc:
            log.warning("could not write metrics for the supervisor: %s", exc.strerror)

    def stop(self) -> None:
        """Stop writing, and remove the file: this worker's counts end with it."""
        self._stopping.set()
        self._thread.join()
        self._path.unlink(missing_ok=True)


class WorkerSnapshots(Collector):
    """Every worker's metrics, read from their files, with a `worker` label."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        """One family per metric name, holding the samples of every worker."""
        families: dict[str, Metric] = {}
        for path in sorted(self._directory.glob("worker-*.prom")):
            worker = path.stem.removeprefix("worker-")
            try:
                text = path.read_text(encoding="utf-8")
            except OSError:  # the worker is being replaced: its successor writes soon
                continue
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                merged.samples.extend(
                    Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp)
                    for s in family.samples
                )
        yield from families.values()


def remove_snapshots(directory: Path) -> None:
    """Remove the directory of snapshots and what is left in it."""
    for path in directory.glob("worker-*"):
        path.unlink(missing_ok=True)
    directory.rmdir()
