"""The benchmark's rounds: loads take turns in alternating order, and ratios pair rounds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _load import Load, pair_ratios, paired_ratio, rounds_of


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


def test_the_paired_ratio_cancels_a_drift_between_rounds() -> None:
    # The machine slows down over the run; every round's own ratio stays 0.9.
    base = [load(1000), load(800), load(600), load(400)]
    ours = [load(900), load(720), load(540), load(360)]
    # (The ratio of the two medians would pair different rounds.)
    assert paired_ratio(ours, base) == pytest.approx(0.9)


def test_the_paired_ratio_cancels_an_advantage_of_running_second() -> None:
    # True ratio 0.9; whichever load runs second gets 3% more. Round 0 runs A (base) first,
    # round 1 runs B (ours) first: so ours is boosted in even rounds, base in odd ones.
    base = [load(1000), load(1030)] * 3
    ours = [load(927), load(900)] * 3
    assert paired_ratio(ours, base) == pytest.approx(0.9)


def test_one_disturbed_pair_of_rounds_does_not_move_the_ratio() -> None:
    base = [load(1000)] * 6
    ours = [load(900), load(900), load(500), load(500), load(900), load(900)]
    assert paired_ratio(ours, base) == pytest.approx(0.9)


def test_a_single_round_is_its_own_ratio() -> None:
    assert paired_ratio([load(450)], [load(500)]) == pytest.approx(0.9)


def test_each_pair_of_rounds_gives_one_ratio_and_a_last_lone_round_its_own() -> None:
    base = [load(1000)] * 5
    ours = [load(810), load(1000), load(900), load(900), load(950)]
    assert pair_ratios(ours, base) == pytest.approx([0.9, 0.9, 0.95])
