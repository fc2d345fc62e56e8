"""The optional judge filter: the evaluator's judge (:class:`standby.evaluator.judge.Judge`,
same schema, re-asks and retries) scores every new pair that survived dedup and
decontamination, and only pairs at or above ``judge_threshold`` are kept.

The evaluator's two criteria are read for a synthetic pair as: *precision*, how correctly and
completely the new answer does what the new request asks (the filter's score); *similarity*,
how well the new pair fits the kind of its seed examples (recorded, not filtered on). A pair
the judge could not score is dropped and counted: an unchecked pair must not pass a quality
filter.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from standby.service_llm import ServiceLLM
from standby.synth.validate import Item

TEMPLATE = """You are a strict reviewer of training data for an AI assistant. You are given a
new request, the new answer to it, and example requests of the kind the data should cover.

Score the new pair on two criteria, each on a scale from 1 (worst) to 100 (best):

- similarity: how well the new request and answer fit the kind, style and difficulty of the
  examples (100: clearly the same kind of task; 1: unrelated).
- precision: how precisely and correctly the new answer does what the new request asks, on
  its own: no errors, omissions, padding or invented facts (100: a complete, exact answer;
  1: it ignores or fails the request). A request that is unclear or unanswerable scores low.

Give a short reason (one or two sentences) for each score. Reply with JSON only, in this shape:
{"similarity_assessment": {"score": <1-100>, "reason": "..."},
 "precision_assessment": {"score": <1-100>, "reason": "..."}}

### New request
{instruction}

### Examples of the wanted kind
{target_response}

### New answer
{candidate_response}
"""


@dataclass
class Judged:
    kept: list[Item] = field(default_factory=list)
    out: int = 0  # scored below the threshold
    failed: int = 0  # no usable judgement
    scores: Counter[str] = field(default_factory=Counter)  # "precision 80-89": n


def _examples(item: Item) -> str:
    return "\n".join(f"- {s.instruction.strip()}" for s in item.seeds) or "(none)"


async def judge_items(
    llm: ServiceLLM, items: Sequence[Item], threshold: float, template_path: Path | None
) -> Judged:
    """Score ``items`` (in flight: the client's concurrency) and keep those at or above
    ``threshold``, in their order."""
    from standby.evaluator.judge import Judge, load_template

    template = TEMPLATE if template_path is None else load_template(template_path)
    judge = Judge(llm, template)
    outcomes = await asyncio.gather(
        *(judge.judge(i.instruction, _examples(i), i.response, 0) for i in items)
    )
    done = Judged()
    for item, outcome in zip(items, outcomes, strict=True):
        if outcome.judgement is None:
            done.failed += 1
            continue
        score = outcome.judgement.precision_assessment.score
        bucket = min(90, int(score) // 10 * 10)
        done.scores[f"{bucket}-{bucket + 9 if bucket < 90 else 100}"] += 1
        if score >= threshold:
            done.kept.append(item)
        else:
            done.out += 1
    return done
