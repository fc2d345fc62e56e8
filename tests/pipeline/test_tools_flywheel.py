"""The flywheel with tool-using traffic, on the tiny Gemma 4: ``inference.completed`` events
with tools, written to a real SQLite bus by the capture writer's encoder, become tool pairs;
the trainer trains an adapter on them; batch inference answers them with the tools offered
(the local backend parses the calls); the simulated Gemini judges; ``report.md`` has the
tool-use scores and the gate checks them.

The base is the tiny Gemma 4 steered to call ``get_weather`` for ``ASK`` and answer ``ANSWER``
after its result (``tests/fixtures/tiny_model.py``); the adapter trains on the held-out split
itself for a few gentle steps, so the answers stay right: this checks the wiring, end to end,
not what a tiny model can learn."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from standby.config import DataConfig
from standby.data.materializer import TOPIC, Materializer
from standby.data.pairs import PairStore
from standby.evaluator.batch_inference import run_batch_inference
from standby.evaluator.config import BatchInferConfig, EvaluateConfig
from standby.evaluator.evaluate import run_evaluation
from standby.store import encode_inference_completed, open_bus
from standby.trainer.config import TrainConfig
from standby.trainer.train import train
from tests.fixtures.sim import RunningSim
from tests.fixtures.tiny_model import ANSWER, RESULT
from tests.fixtures.tool_calls import PARIS, TOOLS

QUESTION = {"role": "user", "content": "What is the weather in Paris?"}
CALL = {"id": PARIS.id, "name": PARIS.name, "arguments": PARIS.arguments}
OFFERED = [{k: t["function"].get(k) for k in ("name", "description", "parameters")} for t in TOOLS]


def captured(n: int, messages: list[dict[str, Any]], **answer: Any) -> dict[str, Any]:
    """An ``inference.completed`` data dict as the gateway's capture path builds it."""
    return {
        "request_id": f"r{n}",
        "route": "gemini-2.5-flash",
        "backend": "gemini",
        "provenance": "primary",
        "model": "gemini-2.5-flash",
        "model_version": None,
        "messages": messages,
        "params": {},
        "response": "",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        "latency_s": 0.2,
        "ttft_s": None,
        "fallback_reason": None,
        "stream": False,
        "key_id": None,
        "tools": OFFERED,
        **answer,
    }


def traffic() -> list[dict[str, Any]]:
    """An agent loop's two steps (a call, then the answer after its result), twice each."""
    called = {"role": "assistant", "content": "", "tool_calls": [CALL]}
    result = {"role": "tool", "content": RESULT, "tool_call_id": PARIS.id, "name": PARIS.name}
    return [
        captured(n + i, [QUESTION], finish_reason="tool_calls", tool_calls=[CALL])
        if i == 0
        else captured(n + i, [QUESTION, called, result], response=ANSWER)
        for n in (0, 10)
        for i in (0, 1)
    ]


async def materialize(bus_url: str, store: PairStore) -> None:
    async with open_bus(bus_url) as bus:
        bodies = [encode_inference_completed(d, source="standby/gateway") for d in traffic()]
        await bus.publish_encoded(TOPIC, bodies)
        counts = await Materializer(bus, store, consumer="m").run(once=True)
    assert (counts.written, counts.duplicate) == (2, 2), counts.summary()


def test_tool_traffic_is_captured_trained_answered_and_scored(
    sim: RunningSim, tiny_tool_model_dir: Path, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'pairs.db'}"
    # test_fraction: both pairs held out (each prompt's split is a fixed hash of its id).
    with PairStore(tmp_path / "pairs.db", config=DataConfig(test_fraction=0.999)) as store:
        asyncio.run(materialize(f"sqlite:///{tmp_path / 'events.db'}", store))
        assert {p.split for p in store.pairs()} == {"test_sft"}

    adapter = tmp_path / "adapter"
    train(
        TrainConfig(
            base_model_id=str(tiny_tool_model_dir),
            train_ds_id=store_url,
            train_ds_split="test_sft",
            eval_ds_split=None,
            output_dir=adapter,
            device="cpu",
            threads=1,
            max_steps=2,
            per_device_train_batch_size=2,
            learning_rate=1e-5,
            lora_r=4,
            max_length=2048,
            publish_event=False,
        )
    )
    answers = tmp_path / "answers"
    run_batch_inference(
        BatchInferConfig(
            ft_model_id=str(adapter),
            test_ds_id=store_url,
            device="cpu",
            threads=1,
            temperature=0,
            max_new_tokens=48,
            output_dir=answers,
        )
    )
    rows = [
        orjson.loads(line) for line in (answers / "batch_infer.jsonl").read_bytes().splitlines()
    ]
    by_target = {bool(r["target_tool_calls"]): r for r in rows}
    [made] = by_target[True]["candidate_tool_calls"]
    assert made["name"] == "get_weather"
    assert orjson.loads(made["arguments"]) == orjson.loads(PARIS.arguments)  # equal as JSON
    assert by_target[False]["candidate_responses"] == ANSWER

    report = run_evaluation(
        EvaluateConfig(
            service_llm_base_url=sim.url,
            service_llm_api_key="k",
            rate_limit_per_minute=60_000,
            lm_response_ds_id=str(answers),
            eval_repeat=1,
            cache_path=tmp_path / "cache.db",
            output_dir=tmp_path / "eval",
            avg_similarity_threshold=50,
            avg_precision_threshold=50,
        )
    )
    assert report.data["tool_use"] == {
        "rows": 2,
        "tool_name_match": {"n": 2, "mean": 1.0},
        "tool_args_match": {"n": 1, "mean": 1.0},
        "tool_args_valid": {"n": 1, "mean": 1.0},
    }
    assert report.summary()["tool_use"] == dict.fromkeys(
        ("tool_name_match", "tool_args_match", "tool_args_valid"), 1.0
    )  # also in the evaluation.completed event
    assert report.gate is not None and report.gate["passed"], report.gate
    assert report.gate["tool_use"]["tool_name_match"] == {
        "mean": 1.0,
        "threshold": 0.9,
        "passed": True,
    }
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "## Tool use" in md and "| name_match | 1.000 | 2 |" in md
    html = (tmp_path / "eval" / "report.html").read_text()
    assert '<figure id="fig-tools">' in html and "2 rows offered tools" in html
