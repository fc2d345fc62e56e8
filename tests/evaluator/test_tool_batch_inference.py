"""Batch inference on rows with tools: a gateway backend (the simulated Gemini) is asked with
the tools and the history and its calls are kept; a call the local backend refuses (arguments
off the schema) is recorded and scored as wrong, and the run goes on."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from standby.evaluator.batch_inference import run_batch_inference
from standby.evaluator.config import BatchInferConfig
from standby.evaluator.report import read_rows
from standby.evaluator.tool_use import tool_scores
from tests.evaluator.conftest import write_split
from tests.evaluator.test_batch_inference import gateway_yaml
from tests.fixtures.sim import RunningSim
from tests.fixtures.tool_calls import PARIS, TOOLS, WEATHER

QUESTION = {"role": "user", "content": "What is the weather in Paris?"}
CALLED = {"role": "assistant", "content": "", "tool_calls": [PARIS.openai()]}
RESULT = {"role": "tool", "content": "Sunny.", "tool_call_id": PARIS.id, "name": PARIS.name}


def tool_rows(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A call and the answer after its result, as the pair store exports them."""
    declared = orjson.dumps(tools).decode()
    return [
        {"prompt_id": "call", "messages": [QUESTION, CALLED], "tools": declared},
        {
            "prompt_id": "answer",
            "messages": [QUESTION, CALLED, RESULT, {"role": "assistant", "content": "Sunny."}],
            "tools": declared,
        },
    ]


def test_a_gateway_backend_is_asked_with_the_tools(sim: RunningSim, tmp_path: Path) -> None:
    config = gateway_yaml(tmp_path / "standby.yaml", sim)
    config.write_text(config.read_text().replace("model: gemini-2.5-flash", "model: g-tool-call"))
    run_batch_inference(
        BatchInferConfig(
            backend="gemini",
            gateway_config=config,
            test_ds_id=str(write_split(tmp_path / "data", "test_sft", tool_rows(TOOLS))),
            output_dir=tmp_path / "o",
        )
    )
    call, answer = read_rows(tmp_path / "o" / "batch_infer.jsonl")
    assert [c["name"] for c in call["candidate_tool_calls"]] == ["get_weather"]
    assert call["target_tool_calls"] == [{"name": "get_weather", "arguments": PARIS.arguments}]
    assert call["candidate_responses"].startswith("get_weather({")  # the calls, for the judge
    # After the tool's result the simulated Gemini answers in text: the history reached it.
    assert answer["candidate_tool_calls"] == [] and answer["candidate_responses"]
    assert tool_scores(call)["tool_name_match"] == 1.0
    assert tool_scores(answer)["tool_name_match"] == 1.0  # no call where none was expected


def test_a_refused_call_is_recorded_and_scored_wrong(
    tiny_tool_model_dir: Path, tmp_path: Path
) -> None:
    # The steered model calls with unit "celsius"; this schema allows only "fahrenheit".
    weather = copy.deepcopy(WEATHER)
    weather["function"]["parameters"]["properties"]["unit"]["enum"] = ["fahrenheit"]
    [call, _] = tool_rows([weather])
    run_batch_inference(
        BatchInferConfig(
            ft_model_id=str(tiny_tool_model_dir),
            test_ds_id=str(write_split(tmp_path / "data", "test_sft", [call])),
            device="cpu",
            threads=1,
            temperature=0,
            max_new_tokens=48,
            output_dir=tmp_path / "o",
        )
    )
    [row] = read_rows(tmp_path / "o" / "batch_infer.jsonl")
    assert row["tool_error"] and row["candidate_tool_calls"] == []
    assert row["finish_reason"] == "error"
    assert tool_scores(row) == {
        "tool_name_match": 0.0,
        "tool_args_match": 0.0,
        "tool_args_valid": 0.0,
    }
