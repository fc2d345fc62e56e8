"""Seeds are dealt without replacement: every row once per pass, never twice in a request, and
the same seed gives the same plan."""

from __future__ import annotations

from collections import Counter

import pytest

from standby.data.pairs import DataError
from standby.synth.sampling import Seed, plan_requests

SEEDS = [Seed(f"p{i}", f"instruction {i}", f"answer {i}") for i in range(10)]


def test_each_row_once_per_pass_and_distinct_within_a_request() -> None:
    plan = plan_requests(SEEDS, requests=5, k=2, seed=1)  # exactly one pass
    used = Counter(s.prompt_id for group in plan for s in group)
    assert set(used) == {s.prompt_id for s in SEEDS} and set(used.values()) == {1}
    plan = plan_requests(SEEDS, requests=12, k=3, seed=1)  # 36 draws: 3.6 passes
    assert all(len({s.prompt_id for s in group}) == 3 for group in plan)
    counts = Counter(s.prompt_id for group in plan for s in group)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_same_seed_same_plan() -> None:
    assert plan_requests(SEEDS, 7, 3, seed=4) == plan_requests(SEEDS, 7, 3, seed=4)
    assert plan_requests(SEEDS, 7, 3, seed=4) != plan_requests(SEEDS, 7, 3, seed=5)


def test_k_above_the_seed_count_and_no_seeds() -> None:
    assert [len(g) for g in plan_requests(SEEDS[:2], 3, 5, seed=0)] == [2, 2, 2]
    with pytest.raises(DataError, match="no seed rows"):
        plan_requests([], 1, 1, seed=0)
