"""Tool calling through the gateway, in-process (``FakeProvider`` behind the real ASGI app):
request validation, whole and streamed calls in OpenAI's shapes, and the official SDK's view
of them (``create``, ``stream=True``, the ``.stream()`` helper)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pydantic
import pytest

from standby.protocol import Message
from standby.providers.fake import FakeProvider, Reply
from standby.tool_calls import Tool, ToolCall, ToolChoice
from tests.fixtures.fake_gateway import ROUTE, Answer, fake_gateway
from tests.fixtures.openai_schema import assert_chat_completion, assert_chunk
from tests.fixtures.tool_calls import (
    ASK_WEATHER,
    PARIS,
    SIGNED,
    TOKYO,
    TOOLS,
    WEATHER,
    history,
    streamed_calls,
)

MODES = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


def calls_of(answer: Answer) -> list[dict[str, Any]]:
    """The answer's tool calls as the client got them (a stream's pieces put together)."""
    if answer.events:
        return streamed_calls(answer.events)
    return list(answer.body["choices"][0]["message"].get("tool_calls", []))


def check_schema(answer: Answer) -> None:
    if answer.events:
        for event in answer.events:
            assert_chunk(event)
    else:
        assert_chat_completion(answer.body)


# -- request validation ------------------------------------------------------------------------

INVALID = [
    (
        "tool-message-without-its-call",
        {"messages": [*ASK_WEATHER, {"role": "tool", "tool_call_id": "nope", "content": "1"}]},
        "messages.1.tool_call_id",
        "no earlier assistant message has a tool call with id 'nope'",
    ),
    (
        "named-choice-not-offered",
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "f"}}},
        None,
        "tool_choice names the function 'f', which is not among tools",
    ),
    (
        "history-arguments-not-an-object",
        {
            "messages": [
                *ASK_WEATHER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "[1, 2]"},
                        }
                    ],
                },
            ]
        },
        "messages.1.tool_calls.0.function.arguments",
        "must be a JSON object",
    ),
    (
        "duplicate-call-ids",
        {
            "messages": [
                *ASK_WEATHER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "a"}},
                        {"id": "c1", "type": "function", "function": {"name": "b"}},
                    ],
                },
            ]
        },
        "messages.1.tool_calls.1.id",
        "'c1' is the id of an earlier call",
    ),
    (
        "bad-function-name",
        {"tools": [{"type": "function", "function": {"name": "1st tool"}}]},
        "tools.0.function.name",
        "a function name is 1-64 of",
    ),
    (
        "bad-parameters-schema",
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "object", "required": 3}},
                }
            ]
        },
        "tools.0.function.parameters",
        "not a valid JSON Schema: required: 3 is not of type 'array'",
    ),
    (
        "huge-integer-in-parameters",
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"maxLength": 2**70}},
                }
            ]
        },
        "tools.0.function.parameters",
        "integers must fit in 64 bits",
    ),
    (
        "legacy-functions",
        {"functions": [WEATHER["function"]]},
        None,
        "send tools and tool_choice instead",
    ),
]


@pytest.mark.parametrize(
    ("fields", "param", "says"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
async def test_invalid_tool_requests_are_a_400_naming_the_problem(
    fields: dict[str, Any], param: str | None, says: str
) -> None:
    fake = FakeProvider("primary")
    async with fake_gateway(fake) as gw:
        answer = await gw.ask(**fields)
    assert answer.status == 400
    error = answer.body["error"]
    assert error["type"] == "invalid_request_error"
    assert says in error["message"]
    if param is not None:
        assert error["param"] == param
    assert fake.requests == []


# -- the request a backend receives ---------------------------------------------------------


async def test_the_backend_receives_tools_choice_and_the_history_of_calls() -> None:
    fake = FakeProvider("primary", Reply("18 degrees."))
    named = {"type": "function", "function": {"name": "get_time"}}
    messages = history(SIGNED, '{"time":"10:00"}')
    async with fake_gateway(fake) as gw:
        answer = await gw.ask(
            messages=messages, tools=TOOLS, tool_choice=named, parallel_tool_calls=False
        )
    assert answer.status == 200
    [got] = fake.requests
    weather = WEATHER["function"]
    assert got.tools[0] == Tool(weather["name"], weather["description"], weather["parameters"])
    assert [t.name for t in got.tools] == ["get_weather", "get_time"]
    assert got.tool_choice == ToolChoice("required", "get_time")
    assert got.parallel_tool_calls is False
    assert got.messages[1] == Message("assistant", "", tool_calls=(SIGNED,))  # signature back
    assert got.messages[2] == Message(
        "tool", '{"time":"10:00"}', tool_call_id=SIGNED.id, name="get_time"
    )


# -- answers with calls ------------------------------------------------------------------------

ANSWERS = [
    ("one-call", Reply(calls=[PARIS]), [PARIS]),
    ("parallel-calls", Reply(calls=[PARIS, TOKYO]), [PARIS, TOKYO]),
    ("with-signature", Reply(calls=[SIGNED]), [SIGNED]),
    ("text-then-call", Reply("Let me ", "check.", calls=[PARIS]), [PARIS]),
    ("one-char-pieces", Reply(calls=[PARIS, SIGNED], piece_chars=1), [PARIS, SIGNED]),
]


@MODES
@pytest.mark.parametrize(("reply", "calls"), [a[1:] for a in ANSWERS], ids=[a[0] for a in ANSWERS])
async def test_tool_calls_are_answered_in_openai_shapes(
    reply: Reply, calls: list[ToolCall], stream: bool
) -> None:
    async with fake_gateway(FakeProvider("primary", reply)) as gw:
        answer = await gw.ask(
            stream=stream,
            messages=ASK_WEATHER,
            tools=TOOLS,
            stream_options={"include_usage": True} if stream else None,
        )
    assert answer.status == 200
    check_schema(answer)
    assert answer.finish == "tool_calls"
    assert calls_of(answer) == [c.openai() for c in calls]
    text = "".join(reply.pieces)
    if not stream:
        message = answer.body["choices"][0]["message"]
        assert message["content"] == (text or None)
        return
    assert answer.done and answer.text == text
    finishes = [c["finish_reason"] for e in answer.events for c in e["choices"]]
    assert [f for f in finishes if f is not None] == ["tool_calls"]  # exactly one
    first = answer.events[0]["choices"][0]["delta"]
    assert first["role"] == "assistant"
    assert sum("role" in c["delta"] for e in answer.events for c in e["choices"]) == 1
    assert answer.events[-1]["usage"]["completion_tokens"] > 0
    for piece in (
        p for e in answer.events for c in e["choices"] for p in c["delta"].get("tool_calls", [])
    ):
        if "id" in piece:  # a call's first piece: id, type and name, arguments to come
            assert piece["type"] == "function" and piece["function"]["name"]
        else:
            assert set(piece) == {"index", "function"} and set(piece["function"]) == {"arguments"}


@MODES
async def test_plain_text_answers_still_validate(stream: bool) -> None:
    async with fake_gateway(FakeProvider("primary", Reply("Plain ", "text."))) as gw:
        answer = await gw.ask(
            stream=stream, stream_options={"include_usage": True} if stream else None
        )
    check_schema(answer)
    assert (answer.text, answer.finish) == ("Plain text.", "stop")
    if not stream:
        assert "tool_calls" not in answer.body["choices"][0]["message"]
    else:
        assert not any("tool_calls" in c["delta"] for e in answer.events for c in e["choices"])


# -- the official SDK --------------------------------------------------------------------------


class GetWeather(pydantic.BaseModel):
    """The weather in a city now."""

    city: str
    unit: str


async def test_the_sdk_reads_a_whole_answer_with_parallel_calls() -> None:
    async with fake_gateway(FakeProvider("primary", Reply(calls=[PARIS, SIGNED]))) as gw:
        done = await gw.sdk().chat.completions.create(
            model=ROUTE,
            messages=ASK_WEATHER,
            tools=TOOLS,
        )
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_paris", "get_weather", {"city": "Paris", "unit": "celsius"}),
        ("call_time", "get_time", {"zone": "Europe/Paris"}),
    ]
    extra = calls[1].model_extra or {}
    assert extra["extra_content"] == {"google": {"thought_signature": "c2lnbmF0dXJl"}}


async def test_the_sdk_accumulates_a_streamed_call() -> None:
    reply = Reply("Checking.", calls=[PARIS, TOKYO], piece_chars=3)
    async with fake_gateway(FakeProvider("primary", reply)) as gw:
        stream = await gw.sdk().chat.completions.create(
            model=ROUTE,
            messages=ASK_WEATHER,
            tools=TOOLS,
            stream=True,
        )
        pieces: dict[int, list[str]] = {}
        finish = None
        async for chunk in stream:
            for choice in chunk.choices:
                for piece in choice.delta.tool_calls or []:
                    pieces.setdefault(piece.index, []).append(piece.function.arguments or "")
                finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert {i: "".join(p) for i, p in pieces.items()} == {0: PARIS.arguments, 1: TOKYO.arguments}


async def test_the_sdk_stream_helper_parses_a_strict_call() -> None:
    call = ToolCall("call_1", "GetWeather", '{"city":"Oslo","unit":"celsius"}')
    async with fake_gateway(FakeProvider("primary", Reply(calls=[call], piece_chars=4))) as gw:
        helper = gw.sdk().chat.completions.stream(
            model=ROUTE,
            messages=ASK_WEATHER,
            tools=[openai.pydantic_function_tool(GetWeather)],
        )
        async with helper as stream:
            events = [event.type async for event in stream]
            final = await stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in events
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [parsed] = choice.message.tool_calls or []
    assert parsed.function.parsed_arguments == GetWeather(city="Oslo", unit="celsius")
