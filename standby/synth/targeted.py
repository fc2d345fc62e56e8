"""Targeted mode: the rows of an evaluation where the standby model scored lowest become the
seeds, so new data is generated where the model is weak.

``--from-evaluation`` names what ``standby evaluate`` wrote: its ``report.json`` (whose
``source.eval_rows`` names the eval rows file), the folder holding it, or the eval rows file
(``.jsonl``) itself. A row's score is the mean of its ``similarity`` and ``precision`` (or of
its ``similarity_scores`` / ``precision_scores`` when the means are absent); rows the judge
could not score are left out. The seed's answer is the TARGET answer, never the weak one.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import orjson

from standby.data.pairs import DataError, prompt_id_of
from standby.synth.sampling import Seed


def eval_rows_file(path: Path) -> Path:
    """The eval rows file that ``path`` (report, folder or rows file) leads to."""
    if path.is_dir():
        path = path / "report.json"
    if not path.exists():
        raise DataError(f"{path}: no such evaluation report or rows file")
    if path.suffix != ".json":
        return path
    try:
        report = orjson.loads(path.read_bytes())
        named = Path(report["source"]["eval_rows"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise DataError(f"{path}: not a standby evaluation report (no source.eval_rows)") from None
    for candidate in (named, path.parent / named.name):
        if candidate.exists():
            return candidate
    raise DataError(f"{path}: its eval rows file {named} does not exist")


def row_score(row: dict[str, Any]) -> float | None:
    """Mean of similarity and precision (1-100), or None when the row has no score."""
    parts: list[float] = []
    for name in ("similarity", "precision"):
        value = row.get(name)
        if value is None:
            scores = row.get(f"{name}_scores") or []
            value = statistics.fmean(scores) if scores else None
        if value is not None:
            parts.append(float(value))
    return statistics.fmean(parts) if parts else None


def worst_seeds(path: Path, count: int) -> list[Seed]:
    """The ``count`` lowest-scoring instructions of an evaluation as seeds (an instruction
    judged several times counts once, at its lowest score); ties keep file order."""
    rows_file = eval_rows_file(path)
    best: dict[str, Seed] = {}
    for line in rows_file.read_bytes().splitlines():
        if not line.strip():
            continue
        row = orjson.loads(line)
        score = row_score(row)
        instruction, target = row.get("instructions"), row.get("target_responses")
        if score is None or not isinstance(instruction, str) or not isinstance(target, str):
            continue
        pid = prompt_id_of(instruction)
        if pid not in best or score < (best[pid].score or 0.0):
            best[pid] = Seed(pid, instruction, target, "", score)
    if not best:
        raise DataError(f"{rows_file}: no scored rows with instructions and target answers")
    ranked = sorted(best.values(), key=lambda s: s.score if s.score is not None else 0.0)
    return ranked[:count]
