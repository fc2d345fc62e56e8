"""LiteLLMProvider with tools, against the simulated vLLM as litellm reaches it (``hosted_vllm/``
and ``openai/``): what the server received, whole and streamed calls, parallel calls, history,
an agent loop, ``tools: false``, and a malformed call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from standby.config import LiteLLMBackend
from standby.protocol import ChatRequest, Message
from standby.providers.litellm import LiteLLMProvider
from standby.sim.vllm import BASE_MODEL
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

pytestmark = pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)

PREFIXES = ["hosted_vllm", "openai"]


@pytest.fixture
def vllm(start_vllm: StartVLLM) -> RunningVLLM:
    return start_vllm()


@pytest.fixture
def make(started: Start) -> Any:
    async def _make(model: str, api_base: str, **kw: Any) -> LiteLLMProvider:
        config = LiteLLMBackend(
            type="litellm", model=model, api_base=api_base, api_key="any-key", **kw
        )
        return await started(LiteLLMProvider("lm", config))

    return _make


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_tools_are_forwarded_and_calls_parsed(
    vllm: RunningVLLM, make: Any, prefix: str
) -> None:
    p = await make(f"{prefix}/{BASE_MODEL}", vllm.base_url)
    c = await p.complete(FORCED)
    sent = vllm.sim.requests[-1]
    assert {key: sent[key] for key in FORCED_SENT} == FORCED_SENT
    assert [x.name for x in c.tool_calls] == ["get_time"]
    assert c.finish_reason == "tool_calls"


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_whole_and_streamed_calls_agree(vllm: RunningVLLM, make: Any, prefix: str) -> None:
    p = await make(f"{prefix}/{BASE_MODEL}", vllm.base_url)
    c = await p.complete(TOOLS)
    assert c.finish_reason == "tool_calls"
    assert [(x.name, orjson.loads(x.arguments)) for x in c.tool_calls] == [
        ("get_weather", {"city": "simulated"})
    ]
    assert c.tool_calls[0].id.startswith("chatcmpl-tool-")
    deltas = await collect(p, TOOLS)
    assert deltas[-1].finish_reason == "tool_calls"
    calls = streamed(deltas)
    assert [(x.name, x.arguments) for x in calls] == [(x.name, x.arguments) for x in c.tool_calls]
    assert calls[0].id.startswith("chatcmpl-tool-")


@pytest.mark.parametrize("stream", [False, True])
async def test_parallel_calls(vllm: RunningVLLM, make: Any, stream: bool) -> None:
    p = await make(f"hosted_vllm/{BASE_MODEL}", vllm.base_url)
    req = ChatRequest(messages=(Message("user", "both, in parallel"),), tools=(WEATHER, TIME))
    calls = streamed(await collect(p, req)) if stream else (await p.complete(req)).tool_calls
    assert [x.name for x in calls] == ["get_weather", "get_time"]
    assert len({x.id for x in calls}) == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_three_step_tool_loop(vllm: RunningVLLM, make: Any, stream: bool) -> None:
    p = await make(f"hosted_vllm/{BASE_MODEL}", vllm.base_url)
    first = await p.complete(TOOLS)
    assert first.tool_calls
    messages = (
        ASK,
        Message("assistant", "", tool_calls=first.tool_calls),
        *(Message("tool", "sunny", tool_call_id=c.id, name=c.name) for c in first.tool_calls),
    )
    req = ChatRequest(messages=messages, tools=(WEATHER, TIME))
    if stream:
        deltas = await collect(p, req)
        text, finish = "".join(d.text for d in deltas), deltas[-1].finish_reason
        assert not streamed(deltas)
    else:
        answer = await p.complete(req)
        text, finish = answer.text, answer.finish_reason
        assert not answer.tool_calls
    assert (text, finish) == (f"Served by {BASE_MODEL}. The tool said: sunny", "stop")
    sent = vllm.sim.requests[-1]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == first.tool_calls[0].id
    assert "extra_content" not in sent[1]["tool_calls"][0]
    assert sent[2]["role"] == "tool" and sent[2]["tool_call_id"] == first.tool_calls[0].id


async def test_tools_false_is_unsupported(vllm: RunningVLLM, make: Any) -> None:
    p = await make(f"hosted_vllm/{BASE_MODEL}", vllm.base_url, tools=False)
    reason = p.unsupported(TOOLS)
    assert reason is not None and "tools: false" in reason
    assert p.unsupported(ChatRequest(messages=(ASK,))) is None
    able = await make(f"hosted_vllm/{BASE_MODEL}", vllm.base_url)
    assert able.unsupported(TOOLS) is None


# A server whose call's arguments are not JSON (litellm passes them on as text).
_BAD_ARGS = {"type": "function", "function": {"name": "f", "arguments": '{"city": '}}


def _bad(body: dict[str, Any]) -> tuple[bytes, list[bytes]]:
    message = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", **_BAD_ARGS}]}
    answer = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
    }
    piece = {"index": 0, "id": "c1", **_BAD_ARGS}
    frames = []
    for delta, finish in (({"tool_calls": [piece]}, None), ({}, "tool_calls")):
        chunk = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        frames.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    return orjson.dumps(answer), [*frames, b"data: [DONE]\n\n"]


@pytest.fixture(scope="module")
def bad_server() -> Iterator[str]:
    with chat_server(_bad) as url:
        yield url


@pytest.mark.parametrize("stream", [False, True])
async def test_arguments_that_are_not_json_are_a_protocol_error(
    bad_server: str, make: Any, stream: bool
) -> None:
    await fails_unfinished(await make("hosted_vllm/m", bad_server), TOOLS, stream=stream)
