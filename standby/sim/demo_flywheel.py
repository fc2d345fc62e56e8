"""The demo's training runs, in miniature: the pipeline set up to take seconds on the tiny Gemma,
one run in-process with a line per stage, and the held-out score of the untrained base model
(the "before" of the demo's before/after), judged the same way as a candidate.

The simulated Gemini answers counting questions (``What comes after 41?`` -> ``After 41 comes
42.``, :func:`standby.sim.answers.counting_answer`) and judges by chrF against its own answers
(:mod:`standby.sim.judge`): the random-weight base model scores near the bottom, a candidate
trained for :data:`TRAINED_STEPS` LoRA steps learns the pattern and passes :data:`THRESHOLD`, one
trained for a single step does not."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from standby.pipeline.config import PipelineConfig
from standby.sim.demo_report import Steps

TRAINED_STEPS = 150
UNTRAINED_STEPS = 1
# The demo's gate, both criteria (the product's default is 90, for a real judge and model). With
# the simulated judge the base model's gibberish scores about 5-10; after 150 steps the tiny
# model answers "After 20 comes 20." (the pattern, not yet the arithmetic): about 55.
THRESHOLD = 40


def pipeline_config(
    state_dir: Path, model_dir: Path, judge_url: str, *, train_steps: int
) -> PipelineConfig:
    """A run that takes seconds on the tiny model: ``train_steps`` LoRA steps at a high
    learning rate, short greedy held-out answers, one judgement per answer by the simulator."""
    return PipelineConfig.model_validate(
        {
            "bus": bus_url(state_dir),
            "store": f"sqlite:///{state_dir / 'pairs.db'}",
            "backend": "gemma",
            "base_model_id": str(model_dir),
            "work_dir": str(state_dir / "pipeline"),
            "min_new_pairs": 10,
            "min_interval_s": 0,
            "lease_ttl_s": 30,
            "train": {
                "max_steps": train_steps,
                "per_device_train_batch_size": 8,
                "gradient_accumulation_steps": 1,
                "learning_rate": 1e-2,
                "lora_r": 8,
                "save_steps": max(train_steps, 1),
                "logging_steps": 10,
                "threads": 1,
                "device": "cpu",
                "max_length": 128,
            },
            "batch_infer": batch_settings(),
            "evaluate": judge_settings(judge_url),
        }
    )


def bus_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'events.db'}"


def batch_settings() -> dict[str, Any]:
    return {
        "max_new_tokens": 16,
        "inference_bs": 8,
        "device": "cpu",
        "threads": 1,
        "temperature": 0,
    }


def judge_settings(judge_url: str) -> dict[str, Any]:
    return {
        "service_llm_base_url": judge_url,
        "service_llm_api_key": "simulated-key",
        "rate_limit_per_minute": 6000,
        "eval_repeat": 1,
        "avg_similarity_threshold": THRESHOLD,
        "avg_precision_threshold": THRESHOLD,
        "bootstrap_samples": 200,
    }


async def run_pipeline(config: PipelineConfig, steps: Steps) -> dict[str, Any] | None:
    """``Controller.once(force=True)``, with a line per stage as the persisted run moves on
    (stages quicker than the 0.2 s look are shown together when the run ends)."""
    from standby.pipeline.controller import RUN_KEY, Controller
    from standby.store import open_state

    async with open_state(config.bus) as state:
        earlier = (await state.get(RUN_KEY) or {}).get("id")
        work = asyncio.create_task(Controller(config).once(state, force=True))
        shown: list[str] = []
        since = time.monotonic()
        while True:
            finished = work.done()
            run = await state.get(RUN_KEY) or {}
            if run.get("id") == earlier:  # the new run has not started yet
                run = {}
            for stage, record in run.get("stages", {}).items():
                if stage not in shown:
                    took = f" ({time.monotonic() - since:.1f} s)" if not finished else ""
                    steps.note(f"  {stage}: {record['outcome']}{took}")
                    shown.append(stage)
                    since = time.monotonic()
            if finished:
                return await work
            await asyncio.wait({work}, timeout=0.2)


def base_score(
    model_dir: Path, data_dir: Path, out: Path, judge_url: str
) -> tuple[dict[str, float], Path]:
    """The untrained base model's held-out answers (``standby batch-infer`` on the same rows a
    candidate answers) judged like a candidate's (``standby evaluate``): the mean scores and
    the answers file."""
    from standby.evaluator.batch_inference import run_batch_inference
    from standby.evaluator.config import BatchInferConfig, EvaluateConfig
    from standby.evaluator.evaluate import run_evaluation

    answers = run_batch_inference(
        BatchInferConfig.model_validate(
            {
                **batch_settings(),
                "ft_model_id": str(model_dir),
                "test_ds_id": str(data_dir),
                "output_dir": out / "answers",
            }
        )
    ).output
    report = run_evaluation(
        EvaluateConfig.model_validate(
            {
                **judge_settings(judge_url),
                "lm_response_ds_id": str(answers),
                "output_dir": out / "evaluation",
                "cache_path": out / "judge_cache.db",  # in the demo's fresh state folder
                "gate": False,
            }
        )
    )
    means = report.summary()["means"]
    return {c: float(means[c]) for c in ("similarity", "precision")}, answers


def first_answer(answers: Path) -> tuple[str, str]:
    """(instruction, answer) of the first row of a batch-inference answers file."""
    for line in answers.read_bytes().splitlines():
        if line.strip():
            row = orjson.loads(line)
            return str(row["instructions"]), " ".join(str(row["candidate_responses"]).split())
    return "", ""
