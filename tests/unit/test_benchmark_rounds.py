"""The benchmark's rounds: loads take turns in alternating order, and ratios pair rounds."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _load import Load, paired_ratio, rounds_of


def load(rps: float) -> Load:
    return Load(rps=rps, p50_ms=1.0, p99_ms=2.0, requests=int(rps), failures=0)


def test_loads_take_turns_and_every_other_round_runs_them_in_reverse() -> None:
    ran: list[str] = []

    def runner(name: str) -> Load:
        ran.append(name)
        return load(len(ran))

    a, b = rounds_of([lambda: runner("a"), lambda: runner("b")], 4)
    assert ran == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [x.rps for x in a] == [1, 4, 5, 8]
    assert [x.rps for x in b] == [2, 3, 6, 7]


def test_the_paired_ratio_is_the_median_of_each_rounds_ratio() -> None:
    # The machine slows down over the run; each round's ratio stays 0.9 bar one outlier.
    base = [load(1000), load(800), load(600), load(400), load(1000)]
    ours = [load(900), load(720), load(540), load(360), load(500)]
    # (The ratio of the two medians would pair different rounds: 540 / 800.)
    assert paired_ratio(ours, base) == 0.9
