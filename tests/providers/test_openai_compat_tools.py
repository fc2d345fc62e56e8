"""OpenAICompatProvider with tools: against the simulated vLLM (what it received, whole and
streamed calls, parallel calls, history, an agent loop), and against a small server defined here
for the malformed calls no simulator makes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from standby.config import OpenAIBackend, parse_settings
from standby.errors import ConfigError, UpstreamStatusError
from standby.protocol import ChatRequest, Completion, Message
from standby.providers.gemini_wire import PLACEHOLDER_SIGNATURE
from standby.providers.openai_compat import OpenAICompatProvider, request_body
from standby.providers.openai_tools import is_gemini_surface
from standby.sim.vllm import BASE_MODEL
from standby.tool_calls import ToolCall, ToolChoice
from tests.fixtures.providers import (
    ASK,
    FORCED,
    FORCED_SENT,
    TIME,
    TOOLS,
    WEATHER,
    Start,
    chat_server,
    collect,
    fails_unfinished,
    streamed,
)
from tests.fixtures.vllm_sim import RunningVLLM, StartVLLM


@pytest.fixture
def make(started: Start) -> Any:
    async def _make(base_url: str, model: str = BASE_MODEL, **kw: Any) -> OpenAICompatProvider:
        config = OpenAIBackend(type="openai", base_url=base_url, model=model, **kw)
        return await started(OpenAICompatProvider("oa", config))

    return _make


@pytest.fixture
def vllm(start_vllm: StartVLLM) -> RunningVLLM:
    return start_vllm()


def names(calls: tuple[ToolCall, ...]) -> list[str]:
    return [c.name for c in calls]


# --- the request ---------------------------------------------------------------------------


async def test_tools_choice_and_parallel_are_forwarded(vllm: RunningVLLM, make: Any) -> None:
    p = await make(vllm.base_url)
    c = await p.complete(FORCED)
    sent = vllm.sim.requests[-1]
    assert {key: sent[key] for key in FORCED_SENT} == FORCED_SENT
    assert names(c.tool_calls) == ["get_time"]


def test_no_tool_fields_without_tools() -> None:
    body = request_body("m", ChatRequest(messages=(ASK,)), {}, stream=False)
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & body.keys()


def history(calls: tuple[ToolCall, ...], result: str = "sunny") -> tuple[Message, ...]:
    results = (Message("tool", result, tool_call_id=c.id, name=c.name) for c in calls)
    return (ASK, Message("assistant", "", tool_calls=calls), *results)


async def test_history_with_calls_and_results_is_forwarded(vllm: RunningVLLM, make: Any) -> None:
    p = await make(vllm.base_url)
    signed = ToolCall("call_1", "get_weather", '{"city": "Oslo"}', signature="c2ln")
    c = await p.complete(ChatRequest(messages=history((signed,)), tools=(WEATHER,)))
    assert c.text == f"Served by {BASE_MODEL}. The tool said: sunny"
    sent = vllm.sim.requests[-1]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": None,  # a turn that is only calls
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
            }
        ],  # no Gemini signature for vLLM
    }
    assert sent[2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "name": "get_weather",
        "content": "sunny",
    }


def test_signatures_go_only_to_geminis_surface() -> None:
    assert is_gemini_surface("https://generativelanguage.googleapis.com/v1beta/openai/")
    assert is_gemini_surface("http://127.0.0.1:9/v1beta/openai")
    assert is_gemini_surface(
        "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/l/endpoints/openapi"
    )
    assert not is_gemini_surface("http://127.0.0.1:8000/v1")
    signed = ToolCall("a", "get_weather", "{}", signature="c2ln")
    other = ToolCall("b", "get_time", "{}")
    req = ChatRequest(
        messages=(
            ASK,
            Message("assistant", "", tool_calls=(signed, other)),
            Message("assistant", "", tool_calls=(other,)),  # a turn the fallback made
        )
    )
    body = request_body("m", req, {}, stream=False, signatures=True)
    calls = [[c.get("extra_content") for c in m["tool_calls"]] for m in body["messages"][1:]]
    assert calls == [
        [{"google": {"thought_signature": "c2ln"}}, None],
        [{"google": {"thought_signature": PLACEHOLDER_SIGNATURE}}],
    ]


# --- answers -------------------------------------------------------------------------------


async def test_whole_and_streamed_calls_agree(vllm: RunningVLLM, make: Any) -> None:
    p = await make(vllm.base_url)
    c = await p.complete(TOOLS)
    assert (c.text, c.finish_reason, names(c.tool_calls)) == ("", "tool_calls", ["get_weather"])
    assert orjson.loads(c.tool_calls[0].arguments) == {"city": "simulated"}
    assert c.tool_calls[0].id.startswith("chatcmpl-tool-")
    deltas = await collect(p, TOOLS)
    first = deltas[0].tool_calls[0]
    assert (first.index, first.name) == (0, "get_weather") and first.id
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].finish_reason == "tool_calls" and deltas[-1].usage is not None
    calls = streamed(deltas)
    assert [(x.name, x.arguments) for x in calls] == [(x.name, x.arguments) for x in c.tool_calls]


async def test_forced_call_ends_with_tool_calls(vllm: RunningVLLM, make: Any) -> None:
    """vLLM ends a forced call's whole answer with ``stop``; the client gets ``tool_calls``."""
    p = await make(vllm.base_url)
    c = await p.complete(
        ChatRequest(messages=(ASK,), tools=(WEATHER,), tool_choice=ToolChoice("required"))
    )
    assert c.finish_reason == "tool_calls" and names(c.tool_calls) == ["get_weather"]


@pytest.mark.parametrize("stream", [False, True])
async def test_parallel_calls(vllm: RunningVLLM, make: Any, stream: bool) -> None:
    p = await make(vllm.base_url)
    req = ChatRequest(
        messages=(Message("user", "weather and time, in parallel"),), tools=(WEATHER, TIME)
    )
    if stream:
        deltas = await collect(p, req)
        calls = streamed(deltas)
        assert {piece.index for d in deltas for piece in d.tool_calls} == {0, 1}
    else:
        calls = (await p.complete(req)).tool_calls
    assert names(calls) == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2


async def test_tool_choice_none_is_text(vllm: RunningVLLM, make: Any) -> None:
    p = await make(vllm.base_url)
    req = ChatRequest(messages=(ASK,), tools=(WEATHER,), tool_choice=ToolChoice("none"))
    c = await p.complete(req)
    assert c.text and not c.tool_calls and c.finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
async def test_three_step_tool_loop(vllm: RunningVLLM, make: Any, stream: bool) -> None:
    """Ask, the model calls, the tool answers, the model answers in text."""
    p = await make(vllm.base_url)
    messages: tuple[Message, ...] = (ASK,)
    for _ in range(2):
        req = ChatRequest(messages=messages, tools=(WEATHER, TIME))
        if stream:
            deltas = await collect(p, req)
            answer = Completion("".join(d.text for d in deltas), deltas[-1].finish_reason or "stop")
            answer.tool_calls = streamed(deltas)
        else:
            answer = await p.complete(req)
        if not answer.tool_calls:
            break
        messages = (*messages, Message("assistant", answer.text, tool_calls=answer.tool_calls))
        messages += tuple(
            Message("tool", f"{c.name}: 7 degrees", tool_call_id=c.id, name=c.name)
            for c in answer.tool_calls
        )
    assert len(messages) == 3
    assert answer.text == f"Served by {BASE_MODEL}. The tool said: get_weather: 7 degrees"
    assert answer.finish_reason == "stop"


async def test_the_servers_400_for_a_bad_history_is_the_clients_error(
    vllm: RunningVLLM, make: Any
) -> None:
    p = await make(vllm.base_url)
    orphan = Message("tool", "x", tool_call_id="call_nobody_made", name="get_weather")
    with pytest.raises(UpstreamStatusError) as err:
        await p.complete(ChatRequest(messages=(ASK, orphan), tools=(WEATHER,)))
    assert err.value.status == 400 and not err.value.failover


# --- capability ----------------------------------------------------------------------------


async def test_tools_false_is_unsupported_for_requests_that_use_tools(
    start_vllm: StartVLLM, make: Any
) -> None:
    """A vLLM started without ``--enable-auto-tool-choice`` answers ``auto`` with 400; the
    backend says ``tools: false`` and the router skips it."""
    vllm = start_vllm(auto_tool_choice=False)
    p = await make(vllm.base_url, tools=False)
    reason = p.unsupported(TOOLS)
    assert reason is not None and "tools: false" in reason
    calls = (ToolCall("c1", "get_weather", "{}"),)
    assert p.unsupported(ChatRequest(messages=history(calls))) == reason  # history alone
    assert p.unsupported(ChatRequest(messages=(ASK,))) is None
    assert (await p.complete(ChatRequest(messages=(ASK,)))).text
    able = await make(vllm.base_url)
    assert able.unsupported(TOOLS) is None
    with pytest.raises(UpstreamStatusError) as err:
        await able.complete(TOOLS)
    assert err.value.status == 400


def test_config_tools_option() -> None:
    def settings(**backend: Any) -> Any:
        entry = {"type": "openai", "base_url": "http://x/v1", "model": "m", **backend}
        return parse_settings({"backends": {"v": entry}, "routes": {"r": ["v"]}})

    assert settings().backends["v"].tools is True
    assert settings(tools=False).backends["v"].tools is False
    with pytest.raises(ConfigError, match=r"backends\.v\.tool_calling"):
        settings(tool_calling=False)


# --- malformed calls from a server -----------------------------------------------------------


def _call(
    index: int | None = 0, id: str | None = "call_1", name: str | None = "f", args: Any = "{}"
) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "function", "function": {"arguments": args}}
    if index is not None:
        call["index"] = index
    if id is not None:
        call["id"] = id
    if name is not None:
        call["function"]["name"] = name
    return call


def _whole(*calls: dict[str, Any], finish: str = "tool_calls") -> dict[str, Any]:
    for c in calls:
        c.pop("index", None)
    message = {"role": "assistant", "content": None, "tool_calls": list(calls)}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}


def _frames(*deltas: dict[str, Any], finish: str = "tool_calls") -> list[bytes]:
    choices = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
    choices.append({"index": 0, "delta": {}, "finish_reason": finish})
    return [b"data: " + orjson.dumps({"choices": [c]}) + b"\n\n" for c in choices] + [
        b"data: [DONE]\n\n"
    ]


# model name -> (whole answer, stream frames)
_SERVED: dict[str, tuple[dict[str, Any], list[bytes]]] = {
    "no-id": (_whole(_call(id=None)), _frames({"tool_calls": [_call(id=None)]})),
    "no-name": (_whole(_call(name=None)), _frames({"tool_calls": [_call(name=None)]})),
    "bad-json": (
        _whole(_call(args='{"city": ')),
        _frames(
            {"tool_calls": [_call(args="")]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        ),
    ),
    "not-an-object": (_whole(_call(args="[1]")), _frames({"tool_calls": [_call(args="[1]")]})),
    "renamed": (
        _whole(_call()),
        _frames(
            {"tool_calls": [_call()]},
            {"tool_calls": [{"index": 0, "id": "call_2", "function": {"arguments": ""}}]},
        ),
    ),
    # each whole call in its own delta, every one at index 0 (a new id begins a new call)
    "index-zero": (
        _whole(_call(args={"city": "Oslo"}), _call(id="call_2", name="g")),
        _frames(
            {"tool_calls": [_call(args='{"city": "Oslo"}')]},
            {"tool_calls": [_call(id="call_2", name="g", args="{}")]},
        ),
    ),
    # a whole call in one delta, then a second one without ``index`` (Gemini's surface style)
    "whole-deltas": (
        _whole(_call(args={"city": "Oslo"}), finish="stop"),
        _frames(
            {"tool_calls": [_call(args='{"city": "Oslo"}')]},
            {"tool_calls": [_call(index=None, id="call_2", name="g", args="")]},
            finish="stop",
        ),
    ),
}


def _answer(body: dict[str, Any]) -> tuple[bytes, list[bytes]]:
    whole, frames = _SERVED[body["model"]]
    return orjson.dumps(whole), frames


@pytest.fixture(scope="module")
def odd_server() -> Iterator[str]:
    with chat_server(_answer) as url:
        yield url


_MALFORMED = ["no-id", "no-name", "bad-json", "not-an-object"]


@pytest.mark.parametrize(
    ("model", "stream"),
    [(m, False) for m in _MALFORMED] + [(m, True) for m in [*_MALFORMED, "renamed"]],
)
async def test_malformed_calls_are_protocol_errors(
    odd_server: str, make: Any, model: str, stream: bool
) -> None:
    await fails_unfinished(await make(odd_server, model), TOOLS, stream=stream)


async def test_whole_calls_in_one_delta_and_argument_objects(odd_server: str, make: Any) -> None:
    p = await make(odd_server, "whole-deltas")
    c = await p.complete(TOOLS)
    assert [(x.id, x.name, orjson.loads(x.arguments)) for x in c.tool_calls] == [
        ("call_1", "f", {"city": "Oslo"})
    ]
    assert c.finish_reason == "tool_calls"
    deltas = await collect(p, TOOLS)
    assert [(x.id, x.name, x.arguments) for x in streamed(deltas)] == [
        ("call_1", "f", '{"city": "Oslo"}'),
        ("call_2", "g", "{}"),
    ]
    assert deltas[-1].finish_reason == "tool_calls"


async def test_whole_calls_all_at_index_zero_are_separate_calls(odd_server: str, make: Any) -> None:
    p = await make(odd_server, "index-zero")
    deltas = await collect(p, TOOLS)
    assert [(x.id, x.name, x.arguments) for x in streamed(deltas)] == [
        ("call_1", "f", '{"city": "Oslo"}'),
        ("call_2", "g", "{}"),
    ]
