"""``POST /v1/responses`` end to end: a real gateway on 127.0.0.1, the simulated Gemini and vLLM
behind it, and the clients applications use: the official ``openai`` SDK's
``client.responses.create`` / ``.stream`` / ``.parse``, and an OpenAI Agents SDK agent on its
default model class (``OpenAIResponsesModel``). Every body and event is checked against
OpenAI's schemas by the test server (``ShapeCheck``).

The tool loop takes three steps (``get_weather``, ``get_time``, then text) against Gemini 3
(signed calls), against the vLLM fallback alone, and with Gemini down for the middle step; the
``x-standby-backend`` header of every step is checked. Capture writes the same
``inference.completed`` event for a Responses answer as for the chat answer to the same prompt.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled
from openai.types.shared import Reasoning
from pydantic import BaseModel

from standby.sim.background import AiohttpServer
from standby.sim.vllm import BASE_MODEL, VLLMSim
from tests.e2e.conftest import GEMINI_3, gemini_backend, serve
from tests.e2e.loop import (
    AGENT_TOOLS,
    CALLED,
    FUNCTIONS,
    QUESTION,
    Session,
    responses_outputs,
)
from tests.fixtures.captured import stored
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

set_tracing_disabled(True)  # nothing exported by the Agents SDK

FAILOVER = "gemini-3-with-fallback"
# Limits a loaded 2-core test machine keeps to (no test here waits on a timeout).
PATIENT = {"connect_s": 5, "first_token_s": 20, "idle_s": 20, "total_s": 60}


def gemini(model: str, url: str) -> dict[str, Any]:
    return {**gemini_backend(model, url), "timeouts": PATIENT}


# The chat tools, flat as the Responses API has them.


class Forecast(BaseModel):
    city: str
    degrees: int


@pytest.fixture(scope="module")
def gateway(gemini_sim: RunningSim) -> Iterator[GatewayServer]:
    vllm = AiohttpServer(VLLMSim().app())
    vllm.start()
    server = serve(
        {
            "gemini3": gemini(f"{GEMINI_3}-tool-chain", gemini_sim.url),
            "gemini25": gemini("gemini-2.5-flash", gemini_sim.url),
            "vllm": {
                "type": "openai",
                "base_url": f"{vllm.url}/v1",
                "model": BASE_MODEL,
                "timeouts": PATIENT,
            },
        },
        {
            GEMINI_3: ["gemini3"],
            ROUTE: ["gemini25"],
            "vllm": ["vllm"],
            FAILOVER: ["gemini3", "vllm"],
        },
    )
    yield server
    server.stop()
    vllm.stop()


def test_create_answers_with_a_response_object_and_the_standby_headers(
    gateway: GatewayServer, sim: RunningSim
) -> None:
    raw = gateway.client().responses.with_raw_response.create(
        model=ROUTE, input="Hello there", instructions="Be brief.", metadata={"k": "v"}
    )
    assert raw.headers["x-standby-backend"] == "gemini25"
    response = raw.parse()
    assert response.status == "completed"
    assert response.output_text.startswith("Simulated Gemini answer to: Hello there")
    assert response.metadata == {"k": "v"}
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.usage.output_tokens > 0


def test_stream_sends_the_event_sequence_and_the_same_text(
    gateway: GatewayServer, sim: RunningSim
) -> None:
    client = gateway.client()
    with client.responses.stream(model=ROUTE, input="Hello stream") as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text
    whole = client.responses.create(model=ROUTE, input="Hello stream")
    assert whole.output_text == final.output_text  # the simulator is deterministic


def test_parse_reads_a_json_schema_answer_into_the_model(
    gateway: GatewayServer, sim: RunningSim
) -> None:
    parsed = gateway.client().responses.parse(
        model=ROUTE, input="The forecast for Paris.", text_format=Forecast
    )
    assert isinstance(parsed.output_parsed, Forecast)


def test_a_cut_stream_is_continued_on_the_fallback_and_marked_stitched(
    gateway: GatewayServer, sim: RunningSim
) -> None:
    sim.sim.set_fault("cut-3")
    http = gateway.client()._client  # the SDK drops unknown fields of the final event
    body = {"model": FAILOVER, "input": "Tell me a long story", "stream": True}
    r = http.post(f"{gateway.url}/v1/responses", json=body)
    events = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: ")]
    assert r.headers["x-standby-backend"] == "gemini3"
    final = events[-1]
    assert final["type"] == "response.completed"
    assert final["response"]["standby"]["provenance"] == "stitched"
    assert final["response"]["standby"]["backend"] == "vllm"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert final["response"]["output"][0]["content"][0]["text"] == text


# -- a three-step tool loop ----------------------------------------------------------------------

STEPS = {
    "gemini-3": (GEMINI_3, ("gemini3",) * 3, ()),
    "vllm-alone": ("vllm", ("vllm",) * 3, ()),
    "gemini-down-mid-loop": (FAILOVER, ("gemini3", "vllm", "gemini3"), (1,)),
}


def responses_loop(
    session: Session, down: tuple[int, ...], sim: RunningSim, stream: bool, **settings: Any
) -> Any:
    """The loop as an openai SDK user writes it: each response's output items go back as
    input (``reasoning`` items too), followed by a ``function_call_output`` per call."""
    items: list[Any] = [{"role": "user", "content": QUESTION}]
    called: list[str] = []
    with session.client() as client:
        for step in range(5):
            sim.sim.set_fault("error-503" if step in down else "ok")
            raw = client.responses.with_raw_response.create(
                model=session.route,
                input=items,
                tools=FUNCTIONS,
                temperature=0,
                stream=stream,
                **settings,
            )
            session.backends.append(raw.headers["x-standby-backend"])
            if stream:
                response = next(e.response for e in raw.parse() if e.type == "response.completed")
            else:
                response = raw.parse()
            step = responses_outputs(response, called)
            if not step:
                return called, response.output_text, items
            items += step
    raise AssertionError("no final answer in 5 steps")


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize(("route", "steps", "down"), STEPS.values(), ids=STEPS.keys())
def test_the_openai_sdk_completes_a_tool_loop(
    route: str,
    steps: tuple[str, ...],
    down: tuple[int, ...],
    stream: bool,
    gateway: GatewayServer,
    sim: RunningSim,
) -> None:
    session = Session(f"{gateway.url}/v1", route)
    called, text, items = responses_loop(session, down, sim, stream)
    assert called == CALLED
    assert text.strip()
    assert session.backends == list(steps)
    if route == GEMINI_3:  # Gemini's signature went out on its calls and came back
        calls = [i for i in items if i.get("type") == "function_call"]
        assert all(c["extra_content"]["google"]["thought_signature"] for c in calls)


@pytest.mark.parametrize(("route", "steps", "down"), STEPS.values(), ids=STEPS.keys())
async def test_an_agents_sdk_agent_completes_a_tool_loop(
    route: str,
    steps: tuple[str, ...],
    down: tuple[int, ...],
    gateway: GatewayServer,
    sim: RunningSim,
) -> None:
    session = Session(f"{gateway.url}/v1", route)
    seen: list[str] = []

    async def backend_of(response: Any) -> None:
        if response.request.url.path.endswith("/responses"):
            seen.append(response.headers.get("x-standby-backend", "?"))
            sim.sim.set_fault("error-503" if len(seen) in down else "ok")

    sim.sim.set_fault("error-503" if 0 in down else "ok")
    http = session.async_http()
    http.event_hooks["response"].append(backend_of)
    async with openai.AsyncOpenAI(
        base_url=session.base_url, api_key="unused", max_retries=0, http_client=http
    ) as client:
        agent = Agent(
            name="weather",
            model=OpenAIResponsesModel(model=route, openai_client=client),
            tools=list(AGENT_TOOLS),
            model_settings=ModelSettings(temperature=0),
        )
        result = await Runner.run(agent, QUESTION, max_turns=5)
    calls = [i.raw_item.name for i in result.new_items if i.type == "tool_call_item"]  # type: ignore[union-attr]
    assert calls == CALLED
    assert isinstance(result.final_output, str) and result.final_output.strip()
    assert seen == list(steps)


# -- thought summaries: reasoning items ----------------------------------------------------------

SUMMARIZED = {"effort": "low", "summary": "auto"}
LOW_THOUGHTS = 32  # the simulator's thought tokens for thinkingLevel LOW


def test_a_thought_summary_is_a_reasoning_item_created_and_streamed(
    gateway: GatewayServer, sim: RunningSim
) -> None:
    client = gateway.client()
    ask: dict[str, Any] = {"model": GEMINI_3, "input": "Hello there", "reasoning": SUMMARIZED}
    whole = client.responses.create(**ask)
    assert [item.type for item in whole.output] == ["reasoning", "message"]
    summary = whole.output[0].summary[0].text  # type: ignore[union-attr]
    assert summary.startswith("Simulated thought about: Hello there")
    assert whole.output_text.startswith("Simulated Gemini answer to: Hello there")
    assert whole.reasoning is not None and whole.reasoning.summary == "auto"
    # Thought tokens: the level's and the summary's (a simulator token is a word).
    assert whole.usage is not None
    reasoning_tokens = whole.usage.output_tokens_details.reasoning_tokens
    assert reasoning_tokens == LOW_THOUGHTS + len(summary.split())
    with client.responses.stream(**ask) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[2:5] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
    ]
    assert types.index("response.reasoning_summary_part.done") < types.index(
        "response.output_text.delta"
    )
    pieces = [e.delta for e in events if e.type == "response.reasoning_summary_text.delta"]
    assert "".join(pieces) == summary
    assert final.output[0].summary[0].text == summary  # type: ignore[union-attr]
    assert final.output_text == whole.output_text
    assert final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens == reasoning_tokens
    effort_only = client.responses.create(**{**ask, "reasoning": {"effort": "low"}})
    assert [item.type for item in effort_only.output] == ["message"]
    assert effort_only.usage is not None
    assert effort_only.usage.output_tokens_details.reasoning_tokens == LOW_THOUGHTS


LOOPS = {k: STEPS[k] for k in ("gemini-3", "gemini-down-mid-loop")}


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize(("route", "steps", "down"), LOOPS.values(), ids=LOOPS.keys())
def test_a_tool_loop_with_thought_summaries_sends_its_reasoning_items_back(
    route: str,
    steps: tuple[str, ...],
    down: tuple[int, ...],
    stream: bool,
    gateway: GatewayServer,
    sim: RunningSim,
) -> None:
    """Gemini's steps begin with a reasoning item, which goes back with the history, to
    Gemini and to the vLLM fallback alike (and the fallback's step has none)."""
    session = Session(f"{gateway.url}/v1", route)
    called, text, items = responses_loop(session, down, sim, stream, reasoning=SUMMARIZED)
    assert called == CALLED
    assert text.strip()
    assert session.backends == list(steps)
    # The items sent back: each step's output but the last, reasoning first on Gemini's.
    outputs = [i for i in items if i.get("type") in ("reasoning", "function_call")]
    expected = [
        ["reasoning", "function_call"] if s == "gemini3" else ["function_call"] for s in steps[:-1]
    ]
    assert [i["type"] for i in outputs] == [t for step in expected for t in step]


async def test_an_agents_sdk_agent_with_thought_summaries_completes_a_tool_loop(
    gateway: GatewayServer, sim: RunningSim
) -> None:
    session = Session(f"{gateway.url}/v1", GEMINI_3)
    sent: list[dict[str, Any]] = []

    async def keep(request: Any) -> None:
        if request.url.path.endswith("/responses"):
            sent.append(json.loads(request.content))

    http = session.async_http()
    http.event_hooks["request"].append(keep)
    async with openai.AsyncOpenAI(
        base_url=session.base_url, api_key="unused", max_retries=0, http_client=http
    ) as client:
        agent = Agent(
            name="weather",
            model=OpenAIResponsesModel(model=GEMINI_3, openai_client=client),
            tools=list(AGENT_TOOLS),
            model_settings=ModelSettings(
                temperature=0, reasoning=Reasoning(effort="low", summary="auto")
            ),
        )
        result = await Runner.run(agent, QUESTION, max_turns=5)
    calls = [i.raw_item.name for i in result.new_items if i.type == "tool_call_item"]  # type: ignore[union-attr]
    assert calls == CALLED
    assert isinstance(result.final_output, str) and result.final_output.strip()
    summaries = [i.raw_item for i in result.new_items if i.type == "reasoning_item"]
    assert len(summaries) == 3  # one per step
    assert all(s.summary[0].text.startswith("Simulated thought about:") for s in summaries)  # type: ignore[union-attr]
    # The agent replayed every earlier step's reasoning item, and each request was answered.
    replayed = [[i.get("type") for i in body["input"]].count("reasoning") for body in sent]
    assert replayed == [0, 1, 2]


# -- capture -------------------------------------------------------------------------------------


async def test_a_responses_answer_is_captured_as_the_same_event_as_a_chat_one(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway
) -> None:
    db = tmp_path / "events.db"
    config = base_config(sim.url, None)
    config["backends"]["gemini"]["timeouts"] = PATIENT
    config["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": 0.05}
    gw = start_gateway(config)
    client = gw.client()
    client.chat.completions.create(
        model=ROUTE,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        temperature=0.5,
    )
    client.responses.create(model=ROUTE, instructions="Be brief.", input="Hi", temperature=0.5)
    gw.stop()
    chat, responses = [e.data.model_dump() for e in await stored(db)]
    varying = ("request_id", "latency_s", "ttft_s")
    assert {k: v for k, v in chat.items() if k not in varying} == {
        k: v for k, v in responses.items() if k not in varying
    }
    assert responses["response"].startswith("Simulated Gemini answer to: Hi")


async def test_thought_summaries_are_not_captured(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway
) -> None:
    """The captured answer is the answer's text (what a training pair learns), whole or
    streamed; the summary the client got is nowhere in the event."""
    db = tmp_path / "events.db"
    config = base_config(sim.url, None)
    config["backends"]["gemini"]["timeouts"] = PATIENT
    config["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": 0.05}
    gw = start_gateway(config)
    client = gw.client()
    ask: dict[str, Any] = {"model": ROUTE, "input": "Hi", "reasoning": {"summary": "detailed"}}
    whole = client.responses.create(**ask)
    with client.responses.stream(**ask) as stream:
        streamed = stream.get_final_response()
    gw.stop()
    summaries = [r.output[0].summary[0].text for r in (whole, streamed)]  # type: ignore[union-attr]
    assert all(s.startswith("Simulated thought about: Hi") for s in summaries)
    events = [e.data.model_dump() for e in await stored(db)]
    assert [e["response"] for e in events] == [whole.output_text, streamed.output_text]
    assert [e["stream"] for e in events] == [False, True]
    assert all(summaries[0] not in json.dumps(e) for e in events)
    assert all(e["params"] == {} for e in events)  # the summary is no sampling parameter
