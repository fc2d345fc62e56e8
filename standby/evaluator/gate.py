"""The promotion gate: a candidate passes when its mean similarity and precision reach the
thresholds AND it is not worse than the serving model on the same held-out rows.

"Not worse" is a paired non-inferiority test: per row (averaged over answer and judge repeats),
d = candidate - serving; a paired bootstrap gives a confidence interval for mean(d); the
candidate is non-inferior on a criterion when the interval's lower bound is above -margin.
With no evaluation of the serving model (the first model ever) only the thresholds apply, and
the decision says so. When rows offered tools, their tool-use scores (``tool_use.py``) must reach
``min_tool_name_accuracy``, ``min_tool_args_accuracy`` and ``min_tool_args_valid`` as well (a
score that applies to no row is not checked).

On a pass the scores go into the candidate adapter's ``standby-model.json`` (other keys kept),
where the gateway reads them for ``standby_fallback_model_score``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from standby.errors import ConfigError
from standby.evaluator import tool_use
from standby.evaluator.config import GateConfig, GateSettings
from standby.evaluator.judge import judge_label
from standby.store.card import merge_scores

CRITERIA = ("similarity", "precision")
BIN_EDGES = tuple(range(0, 101, 5))  # judge scores are 1-100; 100 falls in the last bin


def per_sample(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean score per criterion for each sample (all its answers' repeats and judge repeats);
    rows without a usable judgement are left out."""
    sums: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        key = str(row.get("sample_id") or row["instructions"])
        for c in CRITERIA:
            scores = row.get(f"{c}_scores") or []
            sums.setdefault(key, {k: [] for k in CRITERIA})[c].extend(float(s) for s in scores)
    return {
        key: {c: float(np.mean(v[c])) for c in CRITERIA}
        for key, v in sums.items()
        if all(v[c] for c in CRITERIA)
    }


def paired_bootstrap(
    diffs: np.ndarray[Any, Any], samples: int, confidence: float, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``diffs`` and its two-sided percentile-bootstrap interval (rows resampled with
    replacement, pairs kept together). Seeded: the same data gives the same numbers."""
    rng = np.random.default_rng(seed)
    n = len(diffs)
    chunk = max(1, min(samples, 2_000_000 // max(n, 1)))  # bounded memory for large splits
    means = np.concatenate(
        [
            diffs[rng.integers(0, n, size=(min(chunk, samples - done), n))].mean(axis=1)
            for done in range(0, samples, chunk)
        ]
    )
    alpha = (1 - confidence) / 2
    return (
        float(diffs.mean()),
        float(np.quantile(means, alpha)),
        float(np.quantile(means, 1 - alpha)),
    )


def decide(
    candidate: Sequence[Mapping[str, Any]],
    baseline: Sequence[Mapping[str, Any]] | None,
    settings: GateSettings,
    *,
    baseline_source: str | None = None,
) -> dict[str, Any]:
    """The gate's decision and every number behind it (JSON-ready)."""
    cand = per_sample(candidate)
    means = {c: float(np.mean([s[c] for s in cand.values()])) if cand else 0.0 for c in CRITERIA}
    limits = {
        "similarity": settings.avg_similarity_threshold,
        "precision": settings.avg_precision_threshold,
    }
    reasons: list[str] = []
    thresholds: dict[str, Any] = {}
    for c in CRITERIA:
        ok = bool(cand) and means[c] >= limits[c]
        thresholds[c] = {"mean": round(means[c], 3), "threshold": limits[c], "passed": ok}
        if not ok:
            reasons.append(f"mean {c} {means[c]:.1f} < threshold {limits[c]:g}")
    if not cand:
        reasons.insert(0, "no row has a usable judgement")
    tools = _tool_thresholds(candidate, settings, reasons)
    comparison: dict[str, Any] | None = None
    if baseline is not None:
        comparison = _compare(cand, per_sample(baseline), settings, baseline_source, reasons)
    passed = not reasons
    verdict = "PASS" if passed else "FAIL"
    detail = "; ".join(reasons) if reasons else _pass_detail(thresholds, comparison)
    return {
        "passed": passed,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows_scored": len(cand),
        "thresholds": thresholds,
        "comparison": comparison,
        **({"tool_use": tools} if tools is not None else {}),
        "reasons": reasons,
        "detail": detail,
        "summary": f"gate: {verdict}: {detail}",
    }


def _tool_thresholds(
    rows: Sequence[Mapping[str, Any]], settings: GateSettings, reasons: list[str]
) -> dict[str, Any] | None:
    """The tool-use scores against their thresholds (None when no row offered tools)."""
    summary = tool_use.summarize(rows)
    if summary is None:
        return None
    limits = {
        "tool_name_match": settings.min_tool_name_accuracy,
        "tool_args_match": settings.min_tool_args_accuracy,
        "tool_args_valid": settings.min_tool_args_valid,
    }
    out: dict[str, Any] = {}
    for score, limit in limits.items():
        mean = summary[score]["mean"]
        ok = mean is None or mean >= limit
        out[score] = {"mean": mean, "threshold": limit, "passed": ok}
        if not ok:
            reasons.append(f"{score} {mean:.2f} < threshold {limit:g}")
    return out


def _compare(
    cand: dict[str, dict[str, float]],
    base: dict[str, dict[str, float]],
    settings: GateSettings,
    source: str | None,
    reasons: list[str],
) -> dict[str, Any]:
    keys = sorted(set(cand) & set(base))
    out: dict[str, Any] = {
        "baseline": source,
        "paired_rows": len(keys),
        "margin": settings.non_inferiority_margin,
        "confidence": settings.confidence,
        "bootstrap_samples": settings.bootstrap_samples,
        "bin_edges": list(BIN_EDGES),
    }
    if len(keys) < 2:
        reasons.append(f"only {len(keys)} rows scored for both candidate and serving model")
        return out
    for c in CRITERIA:
        a = np.array([cand[k][c] for k in keys])
        b = np.array([base[k][c] for k in keys])
        diff, lo, hi = paired_bootstrap(a - b, settings.bootstrap_samples, settings.confidence)
        ok = lo > -settings.non_inferiority_margin
        out[c] = {
            "candidate_mean": round(float(a.mean()), 3),
            "serving_mean": round(float(b.mean()), 3),
            "diff_mean": round(diff, 3),
            "ci_low": round(lo, 3),
            "ci_high": round(hi, 3),
            "passed": ok,
            # The per-row means compared, binned (the report draws them side by side).
            "histogram": {"candidate": _binned(a), "serving": _binned(b)},
        }
        if not ok:
            reasons.append(
                f"{c}: candidate - serving = {diff:+.1f}, {settings.confidence:.0%} CI "
                f"[{lo:+.1f}, {hi:+.1f}] reaches below -{settings.non_inferiority_margin:g}"
            )
    return out


def _binned(values: np.ndarray[Any, Any]) -> list[int]:
    return [int(n) for n in np.histogram(values, bins=BIN_EDGES)[0]]


def _pass_detail(thresholds: dict[str, Any], comparison: dict[str, Any] | None) -> str:
    parts = [f"{c} {thresholds[c]['mean']:.1f} >= {thresholds[c]['threshold']:g}" for c in CRITERIA]
    if comparison is None:
        parts.append("no serving-model evaluation given (thresholds only)")
    else:
        for c in CRITERIA:
            d = comparison[c]
            parts.append(
                f"{c} vs serving {d['diff_mean']:+.1f} CI [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]"
            )
    return "; ".join(parts)


def write_scores(adapter_dir: Path, decision: dict[str, Any], extra: dict[str, Any]) -> Path:
    """Merge the candidate's scores and the decision into its model card (created if absent;
    every other key kept, so the trainer's record stays); CardError when it cannot be read."""
    scores = {c: float(decision["thresholds"][c]["mean"]) for c in CRITERIA}
    return merge_scores(adapter_dir, scores, {**extra, "gate": decision})


def load_baseline(settings: GateSettings) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The serving model's eval rows, when configured."""
    if settings.baseline_eval_ds_id is None:
        return None, None
    from standby.data.sources import load_split, require_columns

    loaded = load_split(settings.baseline_eval_ds_id, settings.baseline_eval_ds_split)
    where = f"{settings.baseline_eval_ds_id} [{settings.baseline_eval_ds_split}]"
    require_columns(
        loaded.dataset, ("instructions", "similarity_scores", "precision_scores"), where
    )
    return list(loaded.dataset), where


def run_gate(cfg: GateConfig) -> dict[str, Any]:
    """``standby gate``: decide from a finished evaluation and write the decision into its
    report (and, on a pass, the scores into the candidate's model card)."""
    from standby.evaluator.report import read_rows, write_report

    rows_file = cfg.output_dir / f"{cfg.eval_ds_split}.jsonl"
    report_file = cfg.output_dir / "report.json"
    for f in (rows_file, report_file):
        if not f.is_file():
            raise ConfigError(f"{f}: not found (run standby evaluate with --output-dir first)")
    report = json.loads(report_file.read_text(encoding="utf-8"))
    baseline, source = load_baseline(cfg)
    decision = decide(read_rows(rows_file), baseline, cfg, baseline_source=source)
    report["gate"] = decision
    if decision["passed"] and cfg.candidate_adapter_dir is not None:
        card = write_scores(cfg.candidate_adapter_dir, decision, card_extra(report))
        decision["model_card"] = str(card)
    write_report(cfg.output_dir, report)
    return decision


def card_extra(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the model card records about the evaluation beside the scores."""
    return {
        "judge": judge_label(report["judge"]) if report.get("judge") else None,
        "rows": report.get("rows"),
        "source": report.get("source"),
        "report": report.get("report_path"),
    }
