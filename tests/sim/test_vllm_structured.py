"""The simulated vLLM under ``response_format`` (standby.sim.vllm_answers): the openai SDK's
``parse()`` gets its Pydantic model back, whole and streamed; JSON mode gets a JSON object; the
bodies validate against OpenAI's published schemas; a format vLLM cannot read is a 400."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from openai import BadRequestError, OpenAI
from pydantic import BaseModel

from standby.sim.vllm import BASE_MODEL
from tests.fixtures.openai_schema import assert_chat_completion, assert_chunk
from tests.fixtures.vllm_sim import RunningVLLM, StartVLLM

ASK = [{"role": "user", "content": "Plan a trip to Oslo."}]


class Step(BaseModel):
    day: int
    plan: str


class Trip(BaseModel):
    city: str
    steps: list[Step]
    budget: float | None


@pytest.fixture
def vllm(start_vllm: StartVLLM) -> RunningVLLM:
    return start_vllm()


def _client(vllm: RunningVLLM) -> OpenAI:
    return OpenAI(base_url=vllm.base_url, api_key="unused", max_retries=0)


def test_parse_gets_the_pydantic_model(vllm: RunningVLLM) -> None:
    with _client(vllm) as client:
        done = client.chat.completions.parse(model=BASE_MODEL, messages=ASK, response_format=Trip)  # type: ignore[arg-type]
        with client.chat.completions.stream(
            model=BASE_MODEL,
            messages=ASK,  # type: ignore[arg-type]
            response_format=Trip,
        ) as stream:
            streamed = stream.get_final_completion()
    trip = done.choices[0].message.parsed
    assert isinstance(trip, Trip)
    assert trip.steps and trip.budget is not None
    assert streamed.choices[0].message.parsed == trip
    sent = vllm.sim.requests[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True


def test_bodies_match_openais_schemas(vllm: RunningVLLM) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "trip", "schema": Trip.model_json_schema()},
    }
    body = {"model": BASE_MODEL, "messages": ASK, "response_format": fmt}
    with httpx.Client(base_url=vllm.base_url) as http:
        whole = http.post("/chat/completions", json=body).json()
        with http.stream("POST", "/chat/completions", json={**body, "stream": True}) as resp:
            lines = [line for line in resp.iter_lines() if line.startswith("data: {")]
    assert_chat_completion(whole)
    chunks = [orjson.loads(line[6:]) for line in lines]
    for chunk in chunks:
        assert_chunk(chunk)
    assert len(chunks) > 3  # the JSON arrives in pieces
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == whole["choices"][0]["message"]["content"]
    Trip.model_validate_json(streamed)


def test_json_mode_gets_a_json_object(vllm: RunningVLLM) -> None:
    with _client(vllm) as client:
        done = client.chat.completions.create(
            model=BASE_MODEL,
            messages=ASK,  # type: ignore[arg-type]
            response_format={"type": "json_object"},
        )
    assert orjson.loads(done.choices[0].message.content or "") == {
        "answer": f"Served by {BASE_MODEL}. This is the simulated vLLM answer."
    }


@pytest.mark.parametrize(
    "fmt",
    [
        {"type": "yaml"},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"name": "x"}},
    ],
)
def test_a_format_vllm_cannot_read_is_a_400(vllm: RunningVLLM, fmt: dict[str, Any]) -> None:
    with _client(vllm) as client, pytest.raises(BadRequestError) as caught:
        client.chat.completions.create(
            model=BASE_MODEL,
            messages=ASK,  # type: ignore[arg-type]
            response_format=fmt,  # type: ignore[arg-type]
        )
    assert "response_format" in str(caught.value)
