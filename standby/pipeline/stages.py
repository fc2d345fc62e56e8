"""The stages of one pipeline run, each a function of the run's folder and what earlier stages
returned. Each is safe to run again after a crash in the middle of it: the trainer resumes
from its last checkpoint, batch inference skips answers it already has, the judge's cache
answers judgements it already made, registering and promoting notice what is already done.

    snapshot -> train -> batch_infer -> evaluate -> gate -> promote (or reject)
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from standby.config import DataConfig
from standby.pipeline.config import PipelineConfig
from standby.store.card import CardError, card_path, read_card
from standby.store.registry import ModelVersion, Registry, RegistryError

log = logging.getLogger("standby.pipeline")

STAGES = ("snapshot", "train", "batch_infer", "evaluate", "gate", "promote")


@dataclass(frozen=True)
class RunContext:
    config: PipelineConfig
    run_id: str
    folder: Path
    results: dict[str, dict[str, Any]]  # stage -> what it returned
    serving: ModelVersion | None  # the version serving when the run started

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def adapter_dir(self) -> Path:
        return self.folder / "adapter"

    @property
    def answers_dir(self) -> Path:
        return self.folder / "answers"

    @property
    def evaluation_dir(self) -> Path:
        return self.folder / "evaluation"


def snapshot(ctx: RunContext) -> dict[str, Any]:
    """Freeze the pairs the run uses: export both splits to the run folder (one consistent
    read) and record a snapshot (``dataset.snapshot_created``)."""
    import asyncio

    from standby.data.export import export
    from standby.data.materializer import take_snapshot
    from standby.data.pairs import PairStore
    from standby.store import open_bus

    with PairStore.from_config(DataConfig(store=ctx.config.store)) as store:
        exported = export(store, "hf", ctx.data_dir)

        async def record() -> dict[str, Any]:
            async with open_bus(ctx.config.bus) as bus:
                return (await take_snapshot(store, bus)).to_json()

        snap = asyncio.run(record())
    return {**snap, "exported": exported.counts, "export_hash": exported.content_hash}


def train(ctx: RunContext) -> dict[str, Any]:
    from standby.trainer.config import TrainConfig
    from standby.trainer.train import train as run_training

    card = read_card(ctx.adapter_dir)
    if card is None:
        settings = {
            **ctx.config.train,
            "base_model_id": ctx.config.base_model_id,
            "base_model_revision": ctx.config.base_model_revision,
            "train_ds_id": str(ctx.data_dir),
            "train_ds_split": "train_sft",
            "eval_ds_id": str(ctx.data_dir),
            "output_dir": ctx.adapter_dir,
            "version": ctx.run_id,
            "resume": True,
            "bus": ctx.config.bus,
        }
        if ctx.config.max_train_time_s is not None:
            settings["max_time_s"] = ctx.config.max_train_time_s
        # The trainer prints its loss logs on stdout, which belongs to the command's result.
        with contextlib.redirect_stdout(sys.stderr):
            run_training(TrainConfig.model_validate(settings))
        card = read_card(ctx.adapter_dir)
    if card is None:
        raise CardError(f"{card_path(ctx.adapter_dir)}: the trainer wrote no model card")
    metrics = card.metrics
    return {
        "adapter": str(ctx.adapter_dir),
        "version": card.version or ctx.run_id,
        "train_loss": metrics.train_loss if metrics else None,
        "eval_loss": metrics.eval_loss if metrics else None,
        "dataset": card.dataset.to_json() if card.dataset else {},
        "time_budget": card.time_budget.to_json() if card.time_budget else None,
    }


def batch_infer(ctx: RunContext) -> dict[str, Any]:
    from standby.data.sources import load_split
    from standby.evaluator.batch_inference import run_batch_inference
    from standby.evaluator.config import BatchInferConfig

    max_rows = None
    budget = ctx.config.max_judge_calls
    if budget is not None:
        repeat = int(ctx.config.evaluate.get("eval_repeat", 3))
        max_rows = max(1, budget // repeat)
        held_out = load_split(str(ctx.data_dir), "test_sft").rows
        if held_out > max_rows:
            log.warning(
                "pipeline: judge budget %d allows %d of %d held-out rows",
                budget,
                max_rows,
                held_out,
            )
    cfg = BatchInferConfig.model_validate(
        {
            **ctx.config.batch_infer,
            "ft_model_id": str(ctx.adapter_dir),
            "base_model_id": ctx.config.base_model_id,
            "base_model_revision": ctx.config.base_model_revision,
            "test_ds_id": str(ctx.data_dir),
            "test_ds_split": "test_sft",
            "output_dir": ctx.answers_dir,
            "max_rows": max_rows,
        }
    )
    result = run_batch_inference(cfg)
    return {
        "answers": str(result.output),
        "rows": result.rows,
        "generated": result.generated,
        "resumed": result.resumed,
        "seconds": round(result.seconds, 2),
    }


def evaluate(ctx: RunContext) -> dict[str, Any]:
    from standby.evaluator.config import EvaluateConfig
    from standby.evaluator.evaluate import run_evaluation

    cfg = EvaluateConfig.model_validate(
        {
            **ctx.config.evaluate,
            "lm_response_ds_id": ctx.results["batch_infer"]["answers"],
            "output_dir": ctx.evaluation_dir,
            "cache_path": ctx.config.work_dir / "judge_cache.db",
            "gate": False,
            "bus": ctx.config.bus,
        }
    )
    report = run_evaluation(cfg)
    return report.summary()


def gate(ctx: RunContext) -> dict[str, Any]:
    from standby.evaluator.config import GateConfig, GateSettings
    from standby.evaluator.gate import run_gate

    settings = {k: v for k, v in ctx.config.evaluate.items() if k in GateSettings.model_fields}
    baseline = ctx.serving.evaluation if ctx.serving is not None else None
    cfg = GateConfig.model_validate(
        {
            **settings,
            "output_dir": ctx.evaluation_dir,
            "baseline_eval_ds_id": baseline,
            "candidate_adapter_dir": ctx.adapter_dir,
        }
    )
    decision = run_gate(cfg)
    means = {c: t["mean"] for c, t in decision.get("thresholds", {}).items()}
    return {
        "passed": decision["passed"],
        "reasons": decision.get("reasons", []),
        "summary": decision.get("summary"),
        "scores": means,
    }


async def register(ctx: RunContext, registry: Registry) -> ModelVersion:
    """The run's adapter as a candidate version (once, however often this runs)."""
    trained, decided = ctx.results["train"], ctx.results.get("gate", {})
    model = ModelVersion(
        version=trained["version"],
        backend=ctx.config.backend,
        adapter=trained["adapter"],
        base_model=ctx.config.base_model_id,
        scores=decided.get("scores", {}),
        dataset={
            **trained.get("dataset", {}),
            "snapshot_id": ctx.results["snapshot"].get("snapshot_id"),
        },
        evaluation=str(ctx.evaluation_dir),
        run_id=ctx.run_id,
    )
    try:
        return await registry.register(model)
    except RegistryError as e:
        if "already registered" not in str(e):
            raise
        return await registry.get(model.version)
