"""``standby batch-infer``, ``standby evaluate`` and ``standby gate``: thin wrappers; every YAML
key of ``--from-config`` is also a flag (flags win). Heavy imports happen when a command runs."""

from __future__ import annotations

import argparse
import json
import sys

from standby.evaluator.config import BatchInferConfig, EvaluateConfig, GateConfig
from standby.toolconfig import add_tool_command


def register_evaluator(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``batch-infer``, ``evaluate`` and ``gate`` to the ``standby`` parser."""
    add_tool_command(
        subparsers,
        "batch-infer",
        BatchInferConfig,
        cmd_batch_infer,
        help="answer a held-out split with the candidate model (resumable)",
        description="Answer every instruction of a test split with a base model + LoRA adapter "
        "(or a gateway backend); resumable; optional Hub push.",
        json_help="print the summary as JSON",
    )

    add_tool_command(
        subparsers,
        "evaluate",
        EvaluateConfig,
        cmd_evaluate,
        help="judge batch-inference answers with the service LLM; report and gate",
        description="Score each answer for similarity and precision (1-100) with the service "
        "LLM as judge, add ROUGE-L and chrF, write report.json / .md / .html, apply the gate.",
        json_help="print the report summary as JSON",
    )

    add_tool_command(
        subparsers,
        "gate",
        GateConfig,
        cmd_gate,
        help="promotion decision from an evaluation (thresholds + not worse than serving)",
        description="Decide whether the evaluated candidate may replace the serving model; "
        "exit status 0 pass, 3 fail.",
        json_help="print the decision as JSON",
    )


def cmd_batch_infer(cfg: BatchInferConfig, args: argparse.Namespace) -> None:
    from standby.evaluator.batch_inference import run_batch_inference

    result = run_batch_inference(cfg)
    summary = {
        "output": str(result.output),
        "rows": result.rows,
        "generated": result.generated,
        "resumed": result.resumed,
        "seconds": round(result.seconds, 2),
        "completion_tokens": result.completion_tokens,
        "model_id": result.model_id,
        "model_sha": result.model_sha,
        "pushed": result.pushed,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    gen_s = result.stats.get("generation_s") or 0.0
    rate = f", {result.completion_tokens / gen_s:.0f} new tokens/s" if gen_s else ""
    print(
        f"{result.rows} answers in {result.output} ({result.generated} generated, "
        f"{result.resumed} resumed) in {result.seconds:.1f}s{rate}"
        + (f"; pushed: {result.pushed}" if result.pushed else "")
    )


def cmd_evaluate(cfg: EvaluateConfig, args: argparse.Namespace) -> None:
    from standby.evaluator.evaluate import run_evaluation

    report = run_evaluation(cfg)
    if args.json:
        print(json.dumps(report.summary(), indent=2))
    else:
        print(report.one_line())
    if report.gate is not None and not report.gate["passed"]:
        sys.exit(3)


def cmd_gate(cfg: GateConfig, args: argparse.Namespace) -> None:
    from standby.evaluator.gate import run_gate

    decision = run_gate(cfg)
    if args.json:
        print(json.dumps(decision, indent=2))
    else:
        print(decision["summary"])
    if not decision["passed"]:
        sys.exit(3)
