"""The evaluation report: ``report.json`` (every number), ``report.md`` (the same for people) and
``report.html`` (the same with its plots, ``report_html.py``): means, medians and the
distribution of each score, the worst 10 rows with the judge's reasons, judge failures, the cost
in calls and tokens, and the gate's decision; with rows that offered tools, the tool-use scores
(``tool_use.py``) in a table of their own."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from standby.evaluator import tool_use

METRICS = ("similarity", "precision", "rouge_l", "chrf")
BUCKETS = tuple((lo, lo + 9) for lo in range(1, 100, 10))  # 1-10 ... 91-100
WORST = 10
MAX_FAILURES = 20
_CLIP = 240


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")
    os.replace(tmp, path)


def _histogram(values: list[float]) -> dict[str, int]:
    out = {f"{lo}-{hi}": 0 for lo, hi in BUCKETS}
    for v in values:
        lo = min(91, max(1, int((max(v, 1) - 1) // 10) * 10 + 1))
        out[f"{lo}-{lo + 9}"] += 1
    return out


def describe(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "median": None, "min": None, "max": None, "stdev": None}
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 3),
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "stdev": round(statistics.stdev(values), 3) if len(values) > 1 else 0.0,
        "histogram": _histogram(values),
    }


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _CLIP else text[: _CLIP - 1] + "…"


def build_report(
    rows: Sequence[Mapping[str, Any]],
    *,
    source: Mapping[str, Any],
    judge: Mapping[str, Any],
    cost: Mapping[str, Any],
    seconds: float,
    report_path: Path,
) -> dict[str, Any]:
    """The report of an evaluation (without the gate's decision, added by the caller)."""
    tools = tool_use.summarize(rows)
    scored = [r for r in rows if r["similarity"] is not None and r["precision"] is not None]
    requested = sum(len(r["similarity_scores"]) + r["judge_failures"] for r in rows)
    failed = sum(r["judge_failures"] for r in rows)
    worst = sorted(scored, key=lambda r: (r["similarity"] + r["precision"]) / 2)[:WORST]
    failures = [
        {"sample_id": r.get("sample_id"), "repeat_index": r.get("repeat_index"), "error": e}
        for r in rows
        for e in r["judge_errors"]
    ]
    return {
        "created_at": judge.get("finished_at"),
        "report_path": str(report_path),
        "source": dict(source),
        "rows": len(rows),
        "models": sorted({str(r.get("model_id")) for r in rows}),
        "judge": dict(judge),
        "scores": {m: describe([float(r[m]) for r in rows if r[m] is not None]) for m in METRICS},
        "judgements": {
            "requested": requested,
            "ok": requested - failed,
            "failed": failed,
            "rows_without_score": len(rows) - len(scored),
        },
        "worst": [
            {
                "sample_id": r.get("sample_id"),
                "repeat_index": r.get("repeat_index"),
                "similarity": r["similarity"],
                "precision": r["precision"],
                "rouge_l": r["rouge_l"],
                "chrf": r["chrf"],
                "instruction": _clip(r["instructions"]),
                "candidate": _clip(r["candidate_responses"]),
                "similarity_reasons": r["similarity_reasons"],
                "precision_reasons": r["precision_reasons"],
            }
            for r in worst
        ],
        "failures": failures[:MAX_FAILURES],
        "failures_total": len(failures),
        "cost": dict(cost),
        "seconds": round(seconds, 3),
        "gate": None,
        **({"tool_use": tools} if tools is not None else {}),
    }


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def render_markdown(report: Mapping[str, Any]) -> str:
    lines = [f"# Evaluation of {', '.join(report['models'])}", ""]
    src, judge = report["source"], report["judge"]
    lines += [
        f"- answers: `{src.get('id')}` [{src.get('split')}], {report['rows']} rows "
        f"(content hash `{str(src.get('content_hash'))[:16]}`)",
        f"- judge: `{judge.get('model')}`, {judge.get('eval_repeat')} judgements per answer, "
        f"temperature 0, template `{str(judge.get('template_hash'))[:12]}`",
        *(
            [
                "- **simulated judge**: the scores below come from standby's simulated Gemini, "
                "which measures the candidate against the reference (similarity: chrF; "
                "precision: chrF1, beta 1); no model judged these answers"
            ]
            if judge.get("simulated")
            else []
        ),
        "",
        "| metric | mean | median | min | max | n |",
        "|---|---|---|---|---|---|",
    ]
    for m in METRICS:
        s = report["scores"][m]
        lines.append(
            f"| {m} | {_num(s['mean'])} | {_num(s['median'])} | {_num(s['min'])} "
            f"| {_num(s['max'])} | {s['n']} |"
        )
    lines += tool_use.markdown(report.get("tool_use"))
    lines += ["", "## Distribution", "", "| bucket | similarity | precision |", "|---|---|---|"]
    sim = report["scores"]["similarity"].get("histogram") or {}
    pre = report["scores"]["precision"].get("histogram") or {}
    for lo, hi in BUCKETS:
        b = f"{lo}-{hi}"
        lines.append(f"| {b} | {sim.get(b, 0)} | {pre.get(b, 0)} |")
    gate = report.get("gate")
    lines += ["", "## Gate", ""]
    if gate is None:
        lines.append("Not applied.")
    else:
        lines.append(f"**{'PASS' if gate['passed'] else 'FAIL'}**: {gate['detail']}")
        comp = gate.get("comparison")
        if comp and "similarity" in comp:
            lines += [
                "",
                f"Paired comparison with the serving model on {comp['paired_rows']} rows "
                f"(`{comp['baseline']}`), {comp['bootstrap_samples']} bootstrap resamples, "
                f"{comp['confidence']:.0%} CI, margin {comp['margin']:g}:",
                "",
                "| criterion | candidate | serving | diff | CI low | CI high | ok |",
                "|---|---|---|---|---|---|---|",
            ]
            for c in ("similarity", "precision"):
                d = comp[c]
                lines.append(
                    f"| {c} | {d['candidate_mean']:.1f} | {d['serving_mean']:.1f} | "
                    f"{d['diff_mean']:+.2f} | {d['ci_low']:+.2f} | {d['ci_high']:+.2f} | "
                    f"{'yes' if d['passed'] else 'no'} |"
                )
    lines += ["", f"## Worst {len(report['worst'])} rows", ""]
    for w in report["worst"]:
        lines += [
            f"- `{w['sample_id']}` #{w['repeat_index']}: similarity {_num(w['similarity'])}, "
            f"precision {_num(w['precision'])}, ROUGE-L {_num(w['rouge_l'])}, chrF "
            f"{_num(w['chrf'])}",
            f"  - instruction: {w['instruction']}",
            f"  - answer: {w['candidate']}",
            f"  - similarity: {' | '.join(_clip(r) for r in w['similarity_reasons'])}",
            f"  - precision: {' | '.join(_clip(r) for r in w['precision_reasons'])}",
        ]
    j = report["judgements"]
    lines += [
        "",
        "## Judge failures",
        "",
        f"{j['failed']} of {j['requested']} judgements failed; {j['rows_without_score']} rows "
        "have no score.",
    ]
    lines += [
        f"- `{f['sample_id']}` #{f['repeat_index']}: {f['error']}" for f in report["failures"]
    ]
    c = report["cost"]
    lines += [
        "",
        "## Cost",
        "",
        f"{c.get('calls', 0)} calls ({c.get('retries', 0)} retries, {c.get('reasks', 0)} "
        f"re-asks, {c.get('rate_limited', 0)} rate-limited), {c.get('prompt_tokens', 0)} prompt "
        f"+ {c.get('completion_tokens', 0)} completion tokens; {c.get('cache_hits', 0)} "
        f"judgements from the cache; {report['seconds']:.1f}s.",
        "",
    ]
    return "\n".join(lines)


def write_report(folder: Path, report: Mapping[str, Any]) -> tuple[Path, Path, Path]:
    """``report.json``, ``report.md`` and ``report.html`` (``report_html.py``) in ``folder``."""
    from standby.evaluator.report_html import render_html

    folder.mkdir(parents=True, exist_ok=True)
    out_json, out_md, out_html = (folder / f"report.{ext}" for ext in ("json", "md", "html"))
    for path, text in (
        (out_json, json.dumps(report, indent=2) + "\n"),
        (out_md, render_markdown(report)),
        (out_html, render_html(report)),
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return out_json, out_md, out_html
