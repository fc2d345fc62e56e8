"""Seeds and the plan of requests.

Seeds are drawn WITHOUT replacement: the seed rows are shuffled with ``--seed`` and dealt out
``k`` per request in that order; only when every row has been used once is the pile reshuffled
(with the same generator) for another pass, and a request never shows the same row twice. The
original tool drew with replacement, so a few rows seeded many requests and others none.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from standby.data.pairs import DataError, prompt_id_of
from standby.data.sources import Loaded, instruction_and_target, require_columns


@dataclass(frozen=True)
class Seed:
    """One example shown to the generator."""

    prompt_id: str
    instruction: str
    response: str
    category: str = ""
    score: float | None = None  # targeted mode: the evaluation score that made it a seed


def seeds_of(loaded: Loaded) -> list[Seed]:
    """The usable rows of a no_robots-schema split as seeds (rows without a user turn answered
    by an assistant are left out)."""
    ds = loaded.dataset
    require_columns(ds, ("messages",), f"{loaded.source} [{loaded.split}]")
    has_id, has_cat = "prompt_id" in ds.column_names, "category" in ds.column_names
    seeds: list[Seed] = []
    for row in ds:
        try:
            instruction, response = instruction_and_target(row["messages"])
        except DataError:
            continue
        if not instruction.strip() or not response.strip():
            continue
        pid = (row["prompt_id"] if has_id else None) or prompt_id_of(instruction)
        seeds.append(
            Seed(str(pid), instruction, response, str(row["category"] or "") if has_cat else "")
        )
    return seeds


def plan_requests(
    seeds: Sequence[Seed], requests: int, k: int, seed: int
) -> list[tuple[Seed, ...]]:
    """``requests`` groups of ``min(k, len(seeds))`` distinct seeds, dealt without replacement
    (see the module doc); the same arguments always give the same plan."""
    if not seeds:
        raise DataError("no seed rows to generate from")
    k = min(k, len(seeds))
    rng = random.Random(seed)
    pile: list[int] = []
    plan: list[tuple[Seed, ...]] = []
    for _ in range(requests):
        if len(pile) < k:  # a new pass: the rows left over first, then all others reshuffled
            fresh = [i for i in range(len(seeds)) if i not in pile]
            rng.shuffle(fresh)
            pile += fresh
        plan.append(tuple(seeds[i] for i in pile[:k]))
        pile = pile[k:]
    return plan
