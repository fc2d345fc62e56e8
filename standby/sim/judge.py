"""The simulated Gemini as a judge: it scores for real, with a fixed measure instead of a model.

A judge request is the evaluator's own (``standby.evaluator.judge``): structured output whose
schema has ``similarity_assessment`` and ``precision_assessment``, and a prompt rendered from the
packaged template. The simulator takes the reference and the candidate answer out of the prompt
and scores, 1-100:

- similarity: chrF (sacrebleu's character n-gram F-score, beta 2) of the candidate against the
  reference;
- precision: chrF with beta 1 (chrF1), which weighs the share of the candidate's character
  n-grams that the reference has as much as the share of the reference's that the candidate
  has (chrF's default beta 2 weighs the latter more): padding and invented text lower it more
  than they lower similarity, and a bare fragment still scores low.

Identical answers score 100, unrelated ones near 1, and the same pair always the same. Every
reason begins with ``standby.evaluator.judge.SIMULATED_JUDGE``, which is how reports know
the judge was this simulator. sacrebleu comes with the ``train`` extra (it is imported only when
a judge request arrives: the gateway image does not have it).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

CRITERIA = ("similarity_assessment", "precision_assessment")


def is_judge_schema(schema: Any) -> bool:
    """True for the evaluator's judgement schema (Gemini's or JSON Schema's spelling)."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    return isinstance(props, dict) and all(c in props for c in CRITERIA)


@lru_cache(maxsize=1)
def _prompt_pattern() -> re.Pattern[str]:
    """The packaged template with each placeholder a capturing group."""
    from standby.evaluator.judge import load_template  # lazily: the evaluator is heavy

    groups = {
        "{instruction}": "(?P<instruction>.*?)",
        "{target_response}": "(?P<target>.*?)",
        "{candidate_response}": "(?P<candidate>.*)",
    }
    parts = re.split(
        r"(\{instruction\}|\{target_response\}|\{candidate_response\})", load_template(None)
    )
    body = "".join(groups.get(p, re.escape(p)) for p in parts)
    return re.compile(rf"\s*{body}\s*", re.DOTALL)


def split_prompt(prompt: str) -> tuple[str, str] | None:
    """(reference, candidate) of a prompt rendered from the packaged template, else None."""
    found = _prompt_pattern().fullmatch(prompt)
    return (found["target"].strip(), found["candidate"].strip()) if found else None


def _score(value: float) -> float:
    return max(1.0, min(100.0, round(value, 1)))


@lru_cache(maxsize=4096)
def scores(candidate: str, reference: str) -> tuple[float, float]:
    """(similarity, precision), 1-100: chrF (beta 2) and chrF1 (beta 1)."""
    from sacrebleu.metrics.chrf import CHRF

    chrf = CHRF().sentence_score(candidate, [reference]).score
    precision = CHRF(beta=1).sentence_score(candidate, [reference]).score
    return _score(chrf), _score(precision)


def judgement(prompt: str) -> dict[str, Any]:
    """The judge's structured answer to ``prompt``."""
    from standby.evaluator.judge import SIMULATED_JUDGE

    parts = split_prompt(prompt)
    if parts is None:
        why = (
            f"{SIMULATED_JUDGE}: the prompt is not the packaged judge template, so there is no "
            "reference and candidate to compare (score 1)"
        )
        return {c: {"score": 1, "reason": why} for c in CRITERIA}
    reference, candidate = parts
    similarity, precision = scores(candidate, reference)
    return {
        "similarity_assessment": {
            "score": similarity,
            "reason": f"{SIMULATED_JUDGE} (not a model): chrF {similarity:.1f} of the candidate "
            "against the reference (sacrebleu, character n-grams)",
        },
        "precision_assessment": {
            "score": precision,
            "reason": f"{SIMULATED_JUDGE} (not a model): chrF1 {precision:.1f} (beta 1: "
            "the candidate's n-grams found in the reference count as much as recall; sacrebleu)",
        },
    }
