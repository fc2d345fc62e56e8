"""GeminiProvider with tools against the simulated Gemini: declarations and tool_choice modes,
parallel calls whole and streamed, thought signatures round trip (and Google's placeholder for
calls Gemini did not make), MALFORMED_FUNCTION_CALL as a failure, and a three-step agent loop.
Every body the provider builds validates as the google-genai SDK's own types."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
from google.genai import types

from standby.config import GeminiBackend
from standby.errors import UpstreamProtocolError, UpstreamStatusError
from standby.protocol import ChatRequest, Completion, Message
from standby.providers.gemini import GeminiProvider
from standby.providers.gemini_wire import (
    FAILED_REASONS,
    PLACEHOLDER_SIGNATURE,
    Parsed,
    request_body,
)
from standby.tool_calls import Tool, ToolCall, ToolChoice, whole_calls
from tests.fixtures.providers import Start
from tests.fixtures.sim import RunningSim

WEATHER = Tool(
    "get_weather",
    "The weather in a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
)
TIME = Tool("get_time", None, {"type": "object", "properties": {"tz": {"type": "string"}}})
TOOLS = (WEATHER, TIME)
SCHEMAS = {t.name: t.parameters for t in TOOLS}
ASK = Message("user", "What is the weather in Oslo?")
MODES = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
Make = Callable[[str], Awaitable[GeminiProvider]]


@pytest.fixture
def make(sim: RunningSim, started: Start) -> Make:
    async def _make(model: str) -> GeminiProvider:
        config = GeminiBackend(type="gemini", model=model, base_url=sim.url)
        return await started(GeminiProvider("gemini", config))

    return _make


def genai_valid(body: dict[str, Any]) -> None:
    """The body as JSON, read back field by field with the SDK's types (which forbid unknown
    fields and decode ``thoughtSignature`` as base64 bytes)."""
    data = orjson.loads(orjson.dumps(body))
    assert set(data) <= {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig"}
    for content in data["contents"]:
        types.Content.model_validate_json(orjson.dumps(content))
    if "systemInstruction" in data:
        types.Content.model_validate_json(orjson.dumps(data["systemInstruction"]))
    types.GenerationConfig.model_validate_json(orjson.dumps(data["generationConfig"]))
    for tool in data.get("tools", ()):
        types.Tool.model_validate_json(orjson.dumps(tool))
    if "toolConfig" in data:
        types.ToolConfig.model_validate_json(orjson.dumps(data["toolConfig"]))


async def answer(p: GeminiProvider, request: ChatRequest, stream: bool) -> Completion:
    """The whole answer, or the stream's pieces added up (checking them on the way)."""
    if not stream:
        return await p.complete(request)
    deltas = [d async for d in p.stream(request)]
    assert [d.finish_reason for d in deltas[:-1]] == [None] * (len(deltas) - 1)
    pieces = [t for d in deltas for t in d.tool_calls]
    assert [t.index for t in pieces] == list(range(len(pieces)))  # each call whole, in order
    assert all(t.id and t.name for t in pieces)
    last = deltas[-1]
    return Completion(
        "".join(d.text for d in deltas),
        last.finish_reason or "stop",
        tool_calls=whole_calls(pieces),
    )


def check_calls(calls: tuple[ToolCall, ...], names: list[str]) -> None:
    assert [c.name for c in calls] == names
    assert len({c.id for c in calls}) == len(calls)
    for c in calls:
        assert orjson.dumps(orjson.loads(c.arguments)).decode() == c.arguments  # compact JSON
        jsonschema.validate(orjson.loads(c.arguments), SCHEMAS[c.name])


def history(done: Completion, results: dict[str, str]) -> list[Message]:
    """The assistant's calls and a tool message answering each."""
    out = [Message("assistant", done.text, tool_calls=done.tool_calls)]
    out += [
        Message("tool", results[c.name], tool_call_id=c.id, name=c.name) for c in done.tool_calls
    ]
    return out


# --- the request --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (ToolChoice(), None),
        (ToolChoice("required"), {"functionCallingConfig": {"mode": "ANY"}}),
        (ToolChoice("none"), {"functionCallingConfig": {"mode": "NONE"}}),
        (
            ToolChoice("required", "get_time"),
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}},
        ),
    ],
)
def test_tools_become_declarations_and_tool_choice_a_calling_mode(
    choice: ToolChoice, config: dict[str, Any] | None
) -> None:
    body = request_body(ChatRequest(messages=(ASK,), tools=TOOLS, tool_choice=choice))
    genai_valid(body)
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "parametersJsonSchema": WEATHER.parameters,
                },
                {"name": "get_time", "parametersJsonSchema": TIME.parameters},
            ]
        }
    ]
    assert body.get("toolConfig") == config


def test_a_plain_request_has_no_tool_fields() -> None:
    body = request_body(ChatRequest(messages=(Message("system", "Be brief."), ASK)))
    genai_valid(body)
    assert set(body) == {"contents", "generationConfig", "systemInstruction"}


def test_history_calls_and_results_map_to_function_parts() -> None:
    calls = (
        ToolCall("c1", "get_weather", '{"city": "Oslo"}', "c2lnLTE="),
        ToolCall("c2", "get_time", "{}"),
    )
    request = ChatRequest(
        messages=(
            ASK,
            Message("assistant", "Looking.", tool_calls=calls),
            Message("tool", '{"temp": 3, "sky": "grey"}', tool_call_id="c1", name="get_weather"),
            Message("tool", "12:00 CET", tool_call_id="c2", name="get_time"),
        ),
        tools=TOOLS,
    )
    body = request_body(request)
    genai_valid(body)
    assert body["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"text": "Looking."},
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"},
                    "thoughtSignature": "c2lnLTE=",
                },
                {"functionCall": {"name": "get_time", "args": {}, "id": "c2"}},
            ],
        },
        {
            "role": "user",  # consecutive results: one content, as Gemini expects
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "id": "c1",
                        "response": {"temp": 3, "sky": "grey"},
                    }
                },
                {
                    "functionResponse": {
                        "name": "get_time",
                        "id": "c2",
                        "response": {"result": "12:00 CET"},
                    }
                },
            ],
        },
    ]


def test_the_placeholder_goes_on_each_unsigned_step_of_the_current_turn_only() -> None:
    def step(call_id: str, signature: str | None = None) -> list[Message]:
        call = ToolCall(call_id, "get_time", "{}", signature)
        return [
            Message("assistant", "", tool_calls=(call, ToolCall(call_id + "b", "get_time"))),
            Message("tool", "noon", tool_call_id=call_id, name="get_time"),
            Message("tool", "noon", tool_call_id=call_id + "b", name="get_time"),
        ]

    earlier = [ASK, *step("old"), Message("assistant", "It is noon.")]
    current = [Message("user", "And now?"), *step("a"), *step("b", "c2ln"), *step("c")]
    body = request_body(ChatRequest(messages=(*earlier, *current), tools=TOOLS))
    genai_valid(body)
    signatures = [
        [p.get("thoughtSignature") for p in c["parts"]]
        for c in body["contents"]
        if c["role"] == "model" and "functionCall" in c["parts"][0]
    ]
    placeholder = PLACEHOLDER_SIGNATURE
    assert signatures == [[None, None], [placeholder, None], ["c2ln", None], [placeholder, None]]


# --- answers ------------------------------------------------------------------------------------


@MODES
@pytest.mark.parametrize(
    ("choice", "model", "names"),
    [
        (ToolChoice("required"), "gemini-2.5-flash", ["get_weather"]),
        (ToolChoice("required", "get_time"), "gemini-2.5-flash", ["get_time"]),
        (ToolChoice(), "gemini-2.5-flash-tool-call", ["get_weather"]),
        (ToolChoice(), "gemini-2.5-flash", []),
        (ToolChoice("none"), "gemini-2.5-flash-tool-call", []),
    ],
)
async def test_tool_choice_modes(
    make: Make, stream: bool, choice: ToolChoice, model: str, names: list[str]
) -> None:
    p = await make(model)
    done = await answer(p, ChatRequest(messages=(ASK,), tools=TOOLS, tool_choice=choice), stream)
    check_calls(done.tool_calls, names)
    assert done.finish_reason == ("tool_calls" if names else "stop")
    assert bool(done.text) == (not names)


@MODES
@pytest.mark.parametrize(
    "model", ["gemini-2.5-flash-tool-parallel", "gemini-3-flash-preview-tool-parallel"]
)
async def test_parallel_calls(make: Make, stream: bool, model: str) -> None:
    p = await make(model)
    done = await answer(p, ChatRequest(messages=(ASK,), tools=TOOLS), stream)
    check_calls(done.tool_calls, ["get_weather", "get_time"])
    assert done.finish_reason == "tool_calls"
    signatures = [c.signature is not None for c in done.tool_calls]
    # Gemini 3 signs the first of parallel calls only; 2.5 signs none (and gives no ids).
    assert signatures == ([True, False] if "gemini-3" in model else [False, False])
    if "gemini-3" in model:
        assert all(c.id.startswith("fc-") for c in done.tool_calls)  # Gemini's own ids
    else:
        assert all(c.id.startswith("call_") for c in done.tool_calls)


@MODES
async def test_a_signature_goes_back_with_its_call(make: Make, stream: bool) -> None:
    p = await make("gemini-3-flash-preview-tool-call")
    first = await answer(p, ChatRequest(messages=(ASK,), tools=TOOLS), stream)
    assert first.tool_calls[0].signature
    follow = (ASK, *history(first, {"get_weather": '{"temp": 3}'}))
    done = await answer(p, ChatRequest(messages=follow, tools=TOOLS), stream)
    assert done.finish_reason == "stop"
    assert done.text.startswith("Simulated Gemini answer to: What is the weather in Oslo?")


@MODES
async def test_calls_the_fallback_made_get_the_placeholder(make: Make, stream: bool) -> None:
    """A history whose calls have no signature (made by the fallback during an outage) is
    answered by Gemini 3, where the same calls sent bare would be a 400."""
    p = await make("gemini-3-flash-preview-tool-call")
    fallback = Completion(
        "", "tool_calls", tool_calls=(ToolCall("local-1", "get_weather", '{"city":"Oslo"}'),)
    )
    messages = (ASK, *history(fallback, {"get_weather": "3 degrees"}))
    body = request_body(ChatRequest(messages=messages, tools=TOOLS))
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == PLACEHOLDER_SIGNATURE
    done = await answer(p, ChatRequest(messages=messages, tools=TOOLS), stream)
    assert done.finish_reason == "stop"


async def test_a_history_without_signatures_is_a_400_on_gemini_3(sim: RunningSim) -> None:
    """What the placeholder prevents: the same body, signature removed, sent as it is."""
    fallback = Completion("", "tool_calls", tool_calls=(ToolCall("local-1", "get_weather", "{}"),))
    body = request_body(
        ChatRequest(messages=(ASK, *history(fallback, {"get_weather": "3"})), tools=TOOLS)
    )
    del body["contents"][1]["parts"][0]["thoughtSignature"]
    url = f"{sim.url}/v1beta/models/gemini-3-flash-preview:generateContent"
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"].startswith("Function call is missing a thought_signature")
    url = f"{sim.url}/v1beta/models/gemini-2.5-flash:generateContent"  # 2.5 does not validate
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        assert r.status == 200


async def test_a_400_from_gemini_is_the_clients_error(make: Make) -> None:
    p = await make("gemini-3-flash-preview")
    bare = (ToolCall("c1", "get_time", "{}", "not base64!"),)
    messages = (
        ASK,
        Message("assistant", "", tool_calls=bare),
        Message("tool", "noon", tool_call_id="c1", name="get_time"),
    )
    with pytest.raises(UpstreamStatusError) as info:
        await p.complete(ChatRequest(messages=messages, tools=TOOLS))
    assert info.value.status == 400


@MODES
@pytest.mark.parametrize("how", ["model", "script"])
async def test_malformed_function_call_is_a_failure(
    make: Make, sim: RunningSim, stream: bool, how: str
) -> None:
    if how == "script":
        sim.sim.script([{"fault": "malformed-call"}])
    p = await make("malformed-call" if how == "model" else "gemini-2.5-flash")
    with pytest.raises(UpstreamProtocolError) as info:
        await answer(p, ChatRequest(messages=(ASK,), tools=TOOLS), stream)
    assert "MALFORMED_FUNCTION_CALL" in str(info.value)


@MODES
async def test_scripted_calls(make: Make, sim: RunningSim, stream: bool) -> None:
    sim.sim.script(
        [{"calls": [{"name": "get_weather", "args": {"city": "Bergen", "unit": "celsius"}}]}]
    )
    p = await make("gemini-3-pro-preview")
    done = await answer(p, ChatRequest(messages=(ASK,), tools=TOOLS), stream)
    assert [(c.name, c.arguments) for c in done.tool_calls] == [
        ("get_weather", '{"city":"Bergen","unit":"celsius"}')
    ]
    assert done.tool_calls[0].signature


@MODES
async def test_a_three_step_agent_loop(make: Make, stream: bool) -> None:
    """Google's multi-step table: call, call, text; each step's signature sent back."""
    p = await make("gemini-3-flash-preview-tool-chain")
    results = {"get_weather": '{"temp": 3, "unit": "celsius"}', "get_time": "12:00"}
    messages = [ASK]
    steps = []
    for _ in range(4):
        done = await answer(p, ChatRequest(messages=tuple(messages), tools=TOOLS), stream)
        steps.append([c.name for c in done.tool_calls] or done.text[:27])
        if not done.tool_calls:
            break
        assert done.tool_calls[0].signature
        messages += history(done, results)
    assert steps == [["get_weather"], ["get_time"], "Simulated Gemini answer to:"]


async def test_thought_parts_are_not_answer_text(sim: RunningSim) -> None:
    body = request_body(
        ChatRequest(messages=(ASK,), tools=TOOLS, tool_choice=ToolChoice("required"))
    )
    body["generationConfig"]["thinkingConfig"] = {"includeThoughts": True}
    url = f"{sim.url}/v1beta/models/gemini-3-flash-preview:generateContent"
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        payload = await r.json()
    assert payload["candidates"][0]["content"]["parts"][0]["thought"] is True
    parsed = Parsed(payload, "gemini")
    assert parsed.text == ""
    assert parsed.choices[0].thought.startswith("Simulated thought about:")
    assert [c.name for c in parsed.calls] == ["get_weather"]
    assert parsed.finish == "tool_calls"
    assert parsed.usage is not None
    assert parsed.usage.completion_tokens > payload["usageMetadata"]["candidatesTokenCount"]


async def test_a_loop_the_fallback_continued_goes_back_to_gemini(make: Make) -> None:
    """Step 1 on Gemini (signed), step 2 on the fallback during an outage (unsigned), step 3
    back on Gemini: its own signature goes back, the fallback's step gets the placeholder."""
    p = await make("gemini-3-flash-preview-tool-chain")
    results = {"get_weather": '{"temp": 3}', "get_time": "12:00"}
    first = await p.complete(ChatRequest(messages=(ASK,), tools=TOOLS))
    fallback = Completion("", "tool_calls", tool_calls=(ToolCall("local-2", "get_time", "{}"),))
    messages = (ASK, *history(first, results), *history(fallback, results))
    body = request_body(ChatRequest(messages=messages, tools=TOOLS))
    genai_valid(body)
    signed = [
        c["parts"][0].get("thoughtSignature") for c in body["contents"] if c["role"] == "model"
    ]
    assert signed == [first.tool_calls[0].signature, PLACEHOLDER_SIGNATURE]
    done = await p.complete(ChatRequest(messages=messages, tools=TOOLS))
    assert (done.finish_reason, done.tool_calls) == ("stop", ())


@pytest.mark.parametrize("reason", sorted(FAILED_REASONS))
def test_every_failed_call_finish_is_a_protocol_error(reason: str) -> None:
    payload = {"candidates": [{"finishReason": reason, "finishMessage": "bad call", "index": 0}]}
    with pytest.raises(UpstreamProtocolError) as info:
        Parsed(payload, "gemini")
    assert str(info.value) == f"gemini: finishReason {reason}: bad call"


@MODES
async def test_parallel_tool_calls_false_keeps_the_first_call(make: Make, stream: bool) -> None:
    # Gemini has no such switch; the provider keeps the first call of the answer.
    p = await make("gemini-3-flash-preview-tool-parallel")
    request = ChatRequest(messages=(ASK,), tools=TOOLS, parallel_tool_calls=False)
    done = await answer(p, request, stream)
    check_calls(done.tool_calls, ["get_weather"])
    assert done.finish_reason == "tool_calls"
