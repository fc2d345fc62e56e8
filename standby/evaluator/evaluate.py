"""``standby evaluate``: judge every batch-inference answer with the service LLM, add ROUGE-L and
chrF, write the eval rows and the report, apply the gate, publish ``evaluation.completed``.

Eval rows keep the answer columns and add the original tool's ``similarity_scores,
precision_scores, evaluators, dates`` (one entry per successful judgement), the judge's
reasons (``similarity_reasons, precision_reasons``), their means (``similarity, precision``),
``judge_failures`` / ``judge_errors``, and ``rouge_l`` / ``chrf`` (0-100). Rows with tools add
the tool-use scores (``tool_name_match, tool_args_match, tool_args_valid``: ``tool_use.py``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standby.evaluator.config import EvaluateConfig
from standby.evaluator.judge import (
    Judge,
    JudgeCache,
    Outcome,
    is_simulated,
    judge_label,
    load_template,
)
from standby.evaluator.report import build_report, write_report, write_rows
from standby.evaluator.tool_use import tool_scores
from standby.service_llm import CallStats, ServiceLLM

log = logging.getLogger("standby.evaluator")

ANSWER_COLUMNS = ("instructions", "target_responses", "candidate_responses")
EVENT_TOPIC = "evaluation.completed"
SOURCE = "standby.evaluator"


@dataclass
class Report:
    """What ``standby evaluate`` produced."""

    data: dict[str, Any]

    @property
    def gate(self) -> dict[str, Any] | None:
        return self.data.get("gate")

    def summary(self) -> dict[str, Any]:
        d = self.data
        return {
            "report": d["report_path"],
            "rows": d["rows"],
            "means": {m: s["mean"] for m, s in d["scores"].items()},
            "judge": judge_label(d["judge"]),
            "judgements": d["judgements"],
            "cost": d["cost"],
            "gate": None if self.gate is None else self.gate["summary"],
            **_tool_means(d),
        }

    def one_line(self) -> str:
        d = self.data
        means = ", ".join(
            f"{m} {s['mean']:.1f}" for m, s in d["scores"].items() if s["mean"] is not None
        )
        j, c = d["judgements"], d["cost"]
        gate = f"; {self.gate['summary']}" if self.gate else ""
        return (
            f"{d['rows']} rows: {means or 'no scores'} (judge: {judge_label(d['judge'])}); "
            f"{j['failed']} judge failures; "
            f"{c['calls']} calls, {c['cache_hits']} cached; report {d['report_path']}{gate}"
        )


# A ROUGE token: a word of any script, or one character of a script written without spaces
# (Han, kana, Thai, Lao, Khmer, Myanmar), where a "word" would be a whole sentence.
_TOKEN = re.compile(
    r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    r"\uf900-\ufaff]|[^\W_]+"
)


class UnicodeTokenizer:
    """rouge-score's tokenizer interface for every language: its default keeps only a-z and 0-9,
    so identical Japanese answers scored ROUGE-L 0. Lower-cased, no stemming."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())


class TextMetrics:
    """ROUGE-L F1 and chrF of an answer against the target, both 0-100."""

    def __init__(self) -> None:
        from rouge_score import rouge_scorer  # type: ignore[import-untyped]

        self._rouge = rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeTokenizer())

    def __call__(self, candidate: str, target: str) -> tuple[float, float]:
        import sacrebleu

        rouge = self._rouge.score(target, candidate)["rougeL"].fmeasure * 100
        chrf = sacrebleu.sentence_chrf(candidate, [target]).score
        return round(float(rouge), 3), round(float(chrf), 3)


def eval_row(row: dict[str, Any], outcomes: list[Outcome], metrics: TextMetrics) -> dict[str, Any]:
    good = [o for o in outcomes if o.judgement is not None]
    sim = [o.judgement.similarity_assessment for o in good if o.judgement]
    pre = [o.judgement.precision_assessment for o in good if o.judgement]
    rouge, chrf = metrics(row["candidate_responses"], row["target_responses"])
    tool_use = tool_scores(row) if row.get("tools") else {}
    return {
        **row,
        "similarity_scores": [a.score for a in sim],
        "precision_scores": [a.score for a in pre],
        "similarity_reasons": [a.reason for a in sim],
        "precision_reasons": [a.reason for a in pre],
        "evaluators": [o.evaluator for o in good],
        "dates": [o.judged_at for o in good],
        "similarity": round(statistics.fmean(a.score for a in sim), 3) if sim else None,
        "precision": round(statistics.fmean(a.score for a in pre), 3) if pre else None,
        "judge_failures": len(outcomes) - len(good),
        "judge_errors": [o.error for o in outcomes if o.error],
        "rouge_l": rouge,
        "chrf": chrf,
        **tool_use,
    }


async def _judge_all(
    cfg: EvaluateConfig, rows: list[dict[str, Any]], template: str
) -> tuple[list[list[Outcome]], CallStats, int, str]:
    from tqdm import tqdm  # type: ignore[import-untyped]

    cache = JudgeCache(cfg.cache_path) if cfg.cache_path is not None else None
    bar = tqdm(total=len(rows) * cfg.eval_repeat, unit="judgement", disable=not sys.stderr.isatty())
    try:
        async with ServiceLLM(cfg, concurrency=cfg.eval_workers) as llm:
            judge = Judge(llm, template, cache)

            async def one(row: dict[str, Any], k: int) -> Outcome:
                out = await judge.judge(
                    row["instructions"], row["target_responses"], row["candidate_responses"], k
                )
                bar.update(1)
                return out

            flat = await asyncio.gather(
                *(one(row, k) for row in rows for k in range(cfg.eval_repeat))
            )
    finally:
        bar.close()
        if cache is not None:
            cache.close()
    n = cfg.eval_repeat
    grouped = [list(flat[i * n : (i + 1) * n]) for i in range(len(rows))]
    return grouped, llm.stats, judge.cache_hits, judge.template_hash


def run_evaluation(cfg: EvaluateConfig) -> Report:
    """Judge, score, report, gate, publish; see the module doc."""
    return asyncio.run(evaluate(cfg))


async def evaluate(cfg: EvaluateConfig) -> Report:
    """:func:`run_evaluation` for callers that already run an event loop (the pipeline)."""
    from standby.data.sources import load_split, require_columns
    from standby.evaluator.gate import card_extra, decide, load_baseline, write_scores

    began = time.perf_counter()
    template = load_template(cfg.prompt_tmpl_path)
    loaded = load_split(
        cfg.lm_response_ds_id, cfg.lm_response_ds_split, revision=cfg.lm_response_ds_revision
    )
    where = f"{cfg.lm_response_ds_id} [{cfg.lm_response_ds_split}]"
    require_columns(loaded.dataset, ANSWER_COLUMNS, where)
    rows = [dict(r) for r in loaded.dataset]
    baseline, baseline_source = load_baseline(cfg) if cfg.gate else (None, None)
    outcomes, stats, hits, template_hash = await _judge_all(cfg, rows, template)
    metrics = TextMetrics()
    evaluated = [eval_row(r, o, metrics) for r, o in zip(rows, outcomes, strict=True)]
    out = cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / f"{cfg.eval_ds_split}.jsonl"
    write_rows(rows_file, evaluated)
    model_id = "litellm" if cfg.service_llm_provider == "litellm" else "gemini"
    report = build_report(
        evaluated,
        source={
            "id": cfg.lm_response_ds_id,
            "split": cfg.lm_response_ds_split,
            "content_hash": loaded.content_hash,
            "eval_rows": str(rows_file),
        },
        judge={
            "model": _judge_id(cfg),
            "provider": model_id,
            "simulated": is_simulated(
                [
                    r
                    for row in evaluated
                    for r in row["similarity_reasons"] + row["precision_reasons"]
                ]
            ),
            "template_hash": template_hash,
            "template": str(cfg.prompt_tmpl_path or "standby/evaluator/prompts/judge.txt"),
            "eval_repeat": cfg.eval_repeat,
            "rate_limit_per_minute": cfg.rate_limit_per_minute,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        cost={**stats.as_dict(), "cache_hits": hits},
        seconds=time.perf_counter() - began,
        report_path=out / "report.json",
    )
    if cfg.gate:
        decision = decide(evaluated, baseline, cfg, baseline_source=baseline_source)
        report["gate"] = decision
        if decision["passed"] and cfg.candidate_adapter_dir is not None:
            card = write_scores(cfg.candidate_adapter_dir, decision, card_extra(report))
            decision["model_card"] = str(card)
    if cfg.push_eval_to_hf_hub:
        report["pushed"] = await asyncio.to_thread(_push, cfg, evaluated)
    write_report(out, report)
    if cfg.bus:
        await _publish(cfg.bus, report)
    return Report(report)


def _tool_means(report: dict[str, Any]) -> dict[str, Any]:
    """``{"tool_use": {score: mean}}`` when rows offered tools, else nothing."""
    tools = report.get("tool_use")
    if tools is None:
        return {}
    return {"tool_use": {k: v["mean"] for k, v in tools.items() if isinstance(v, dict)}}


def _judge_id(cfg: EvaluateConfig) -> str:
    name = cfg.service_model_name
    return name if cfg.service_llm_provider == "litellm" else f"gemini/{name}"


def _push(cfg: EvaluateConfig, rows: list[dict[str, Any]]) -> str:
    assert cfg.eval_ds_id is not None
    return cfg.push_rows(
        rows,
        cfg.eval_ds_id,
        cfg.eval_ds_split,
        append=cfg.eval_ds_append,
        about="Judge scores of a candidate model's answers (standby evaluate).",
    )


async def _publish(url: str, report: dict[str, Any]) -> None:
    from standby.store import PipelineEvent, open_bus

    gate = report.get("gate") or {}
    data = {
        "report": report["report_path"],
        "eval_rows": report["source"]["eval_rows"],
        "models": report["models"],
        "rows": report["rows"],
        "means": {m: s["mean"] for m, s in report["scores"].items()},
        "judge": report["judge"]["model"],
        "judge_simulated": bool(report["judge"].get("simulated")),
        "judge_failures": report["judgements"]["failed"],
        "gate_passed": gate.get("passed"),
        "gate_summary": gate.get("summary"),
        **_tool_means(report),
    }
    bus = open_bus(url)
    try:
        event = PipelineEvent(type="evaluation.completed", source=SOURCE, data=data)
        await bus.publish(EVENT_TOPIC, event)
    finally:
        await bus.close()
