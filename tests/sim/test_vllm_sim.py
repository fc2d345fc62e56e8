"""The simulated vLLM's tool calling (standby.sim.vllm, standby.sim.vllm_answers), over HTTP:
its bodies parse as the official ``openai`` SDK's own types and validate against OpenAI's
published schemas, and the SDK's client runs an agent loop against it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, BadRequestError
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from standby.sim.vllm import BASE_MODEL
from standby.sim.vllm_answers import AUTO_TOOL_CHOICE_OFF
from tests.fixtures.openai_schema import assert_chat_completion, assert_chunk
from tests.fixtures.vllm_sim import RunningVLLM, StartVLLM

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 3},
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK = [{"role": "user", "content": "What is the weather in Oslo?"}]


@pytest.fixture
def vllm(start_vllm: StartVLLM) -> RunningVLLM:
    return start_vllm()


async def post(vllm: RunningVLLM, **body: Any) -> httpx.Response:
    body.setdefault("model", BASE_MODEL)
    body.setdefault("messages", ASK)
    async with httpx.AsyncClient(base_url=vllm.base_url) as client:
        return await client.post("/chat/completions", json=body)


async def whole(vllm: RunningVLLM, **body: Any) -> ChatCompletion:
    resp = await post(vllm, **body)
    assert resp.status_code == 200, resp.text
    assert_chat_completion(resp.json())
    return ChatCompletion.model_validate(resp.json())


async def chunks(vllm: RunningVLLM, **body: Any) -> list[ChatCompletionChunk]:
    resp = await post(vllm, stream=True, stream_options={"include_usage": True}, **body)
    assert resp.status_code == 200, resp.text
    lines = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    for line in lines[:-1]:
        assert_chunk(json.loads(line))
    return [ChatCompletionChunk.model_validate_json(line) for line in lines[:-1]]


def arguments(completion: ChatCompletion) -> list[tuple[str, Any]]:
    calls = completion.choices[0].message.tool_calls or []
    return [(c.function.name, json.loads(c.function.arguments)) for c in calls]  # type: ignore[union-attr]


async def test_auto_calls_the_first_tool_with_arguments_from_its_schema(vllm: RunningVLLM) -> None:
    c = await whole(vllm, tools=[WEATHER, TIME])
    choice = c.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert arguments(c) == [("get_weather", {"city": "simulated", "unit": "celsius", "days": 3})]
    call = (choice.message.tool_calls or [])[0]
    assert call.id.startswith("chatcmpl-tool-") and call.type == "function"


async def test_text_answers_carry_an_empty_tool_calls_list(vllm: RunningVLLM) -> None:
    c = await whole(vllm)
    assert c.choices[0].message.tool_calls == []
    assert c.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("choice", "called"),
    [
        ("required", ["get_weather"]),
        ({"type": "function", "function": {"name": "get_time"}}, ["get_time"]),
    ],
)
async def test_forced_calls_end_with_stop_as_vllm_does(
    vllm: RunningVLLM, choice: Any, called: list[str]
) -> None:
    c = await whole(vllm, tools=[WEATHER, TIME], tool_choice=choice)
    assert [name for name, _ in arguments(c)] == called
    assert c.choices[0].finish_reason == "stop"  # vLLM: only auto calls end with tool_calls
    assert c.choices[0].message.content == ""


async def test_none_answers_text(vllm: RunningVLLM) -> None:
    c = await whole(vllm, tools=[WEATHER], tool_choice="none")
    assert c.choices[0].message.content and not c.choices[0].message.tool_calls


@pytest.mark.parametrize(
    ("parallel", "tools", "expected"),
    [
        (None, [WEATHER, TIME], ["get_weather", "get_time"]),
        (True, [WEATHER, TIME], ["get_weather", "get_time"]),
        (False, [WEATHER, TIME], ["get_weather"]),
        (None, [WEATHER], ["get_weather"]),
    ],
)
async def test_parallel_calls_when_asked_for(
    vllm: RunningVLLM, parallel: bool | None, tools: list[Any], expected: list[str]
) -> None:
    body: dict[str, Any] = {"tools": tools}
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    messages = [{"role": "user", "content": "Weather and time in Oslo, in parallel please."}]
    c = await whole(vllm, messages=messages, **body)
    assert [name for name, _ in arguments(c)] == expected
    ids = [call.id for call in c.choices[0].message.tool_calls or []]
    assert len(set(ids)) == len(ids)


async def test_one_at_a_time_calls_each_tool_in_turn_then_answers(vllm: RunningVLLM) -> None:
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "Earlier question."},
        {"role": "assistant", "content": "Earlier answer."},
        {"role": "user", "content": "Weather and time in Oslo, one at a time."},
    ]
    called = []
    for result in ("12 degrees", "10:00"):
        c = await whole(vllm, messages=history, tools=[WEATHER, TIME])
        assert c.choices[0].finish_reason == "tool_calls"
        [call] = c.choices[0].message.tool_calls or []
        called.append(call.function.name)  # type: ignore[union-attr]
        history += [
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ]
    assert called == ["get_weather", "get_time"]
    c = await whole(vllm, messages=history, tools=[WEATHER, TIME])
    assert c.choices[0].finish_reason == "stop" and not c.choices[0].message.tool_calls
    assert c.choices[0].message.content == f"Served by {BASE_MODEL}. The tool said: 10:00"


async def test_stream_has_vllms_delta_shape(vllm: RunningVLLM) -> None:
    messages = [{"role": "user", "content": "both in parallel"}]
    got = await chunks(vllm, messages=messages, tools=[WEATHER, TIME])
    pieces = [t for c in got if c.choices for t in c.choices[0].delta.tool_calls or []]
    firsts = [p for p in pieces if p.id is not None]
    assert [(p.index, p.type, p.function and p.function.name) for p in firsts] == [
        (0, "function", "get_weather"),
        (1, "function", "get_time"),
    ]
    assert all(p.function and p.function.arguments == "" for p in firsts)
    rest = [p for p in pieces if p.id is None]
    assert rest and all(p.function and p.function.name is None for p in rest)
    args = {i: "".join(p.function.arguments or "" for p in rest if p.index == i) for i in (0, 1)}  # type: ignore[union-attr]
    assert json.loads(args[0])["city"] == "simulated" and json.loads(args[1]) == {}
    finishes = [c.choices[0].finish_reason for c in got if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert got[-1].choices == [] and got[-1].usage is not None


async def test_forced_call_streams_end_with_tool_calls(vllm: RunningVLLM) -> None:
    got = await chunks(vllm, tools=[WEATHER], tool_choice="required")
    finishes = [c.choices[0].finish_reason for c in got if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


async def test_answer_after_tool_results_quotes_them(vllm: RunningVLLM) -> None:
    first = await whole(vllm, tools=[WEATHER])
    call = (first.choices[0].message.tool_calls or [])[0]
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "12 degrees, rain"},
    ]
    c = await whole(vllm, messages=history, tools=[WEATHER])
    assert c.choices[0].finish_reason == "stop"
    said = c.choices[0].message.content
    assert said == f"Served by {BASE_MODEL}. The tool said: 12 degrees, rain"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {
                "messages": [
                    *ASK,
                    {"role": "tool", "tool_call_id": "call_nobody_made", "content": "x"},
                ],
                "tools": [WEATHER],
            },
            "messages.1.tool_call_id",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tools": [{"type": "function", "function": {}}]}, "tools"),
    ],
)
async def test_malformed_tool_requests_are_400(
    vllm: RunningVLLM, body: dict[str, Any], param: str
) -> None:
    resp = await post(vllm, **body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    assert error["param"] == param and error["message"]


async def test_auto_needs_the_servers_flag(start_vllm: StartVLLM) -> None:
    vllm = start_vllm(auto_tool_choice=False)
    resp = await post(vllm, tools=[WEATHER])
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == AUTO_TOOL_CHOICE_OFF
    # Forced calls work without it (vLLM makes them with guided decoding).
    assert arguments(await whole(vllm, tools=[WEATHER], tool_choice="required"))


async def test_openai_sdk_runs_a_three_step_agent_loop(vllm: RunningVLLM) -> None:
    client = AsyncOpenAI(base_url=vllm.base_url, api_key="none", max_retries=0)
    messages: list[Any] = [*ASK]
    tools: Any = [WEATHER]
    async with client:
        first = await client.chat.completions.create(
            model=BASE_MODEL, messages=messages, tools=tools
        )
        message = first.choices[0].message
        assert message.tool_calls
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
        async with client.chat.completions.stream(
            model=BASE_MODEL, messages=messages, tools=tools
        ) as stream:
            final = await stream.get_final_completion()
        with pytest.raises(BadRequestError):
            await client.chat.completions.create(
                model=BASE_MODEL,
                messages=[*ASK, {"role": "tool", "tool_call_id": "nope", "content": "x"}],
            )
    assert final.choices[0].message.content == f"Served by {BASE_MODEL}. The tool said: sunny"
    assert final.choices[0].finish_reason == "stop"
