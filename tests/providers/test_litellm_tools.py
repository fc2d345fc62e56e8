"""LiteLLMProvider with tools, against the simulated vLLM as litellm reaches it (``hosted_vllm/``
and ``openai/``): what the server received, whole and streamed calls, parallel calls, history,
an agent loop, ``tools: false``, and a malformed call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from standby.config import LiteLLMBackend
from standby.errors import UpstreamProtocolError
from standby.protocol import ChatRequest, Delta, Message
from standby.providers.litellm import LiteLLMProvider
from standby.sim.background import AiohttpServer
from standby.sim.vllm import BASE_MODEL
from standby.tool_calls import Tool, ToolCall, ToolChoice, whole_calls
from tests.fixtures.vllm_sim import RunningVLLM, StartVLLM

pytestmark = pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)

WEATHER = Tool(
    "get_weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool("get_time", None, {"type": "object", "properties": {"tz": {"type": "string"}}})
ASK = Message("user", "What is the weather in Oslo?")
TOOLS = ChatRequest(messages=(ASK,), tools=(WEATHER, TIME))
PREFIXES = ["hosted_vllm", "openai"]


@pytest.fixture
def vllm(start_vllm: StartVLLM) -> RunningVLLM:
    return start_vllm()


@pytest.fixture
async def make() -> AsyncIterator[Any]:
    made: list[LiteLLMProvider] = []

    async def _make(model: str, api_base: str, **kw: Any) -> LiteLLMProvider:
        config = LiteLLMBackend(
            type="litellm", model=model, api_base=api_base, api_key="any-key", **kw
        )
        p = LiteLLMProvider("lm", config)
        await p.start()
        made.append(p)
        return p

    yield _make
    for p in made:
        await p.close()


async def collect(p: LiteLLMProvider, req: ChatRequest) -> list[Delta]:
    return [d async for d in p.stream(req)]


def streamed(deltas: list[Delta]) -> tuple[ToolCall, ...]:
    return whole_calls([piece for d in deltas for piece in d.tool_calls])


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_tools_are_forwarded_and_calls_parsed(
    vllm: RunningVLLM, make: Any, prefix: str
) -> None:
    p = await make(f"{prefix}/{BASE_MODEL}", vllm.base_url)
    req = ChatRequest(
        messages=(ASK,),
        tools=(WEATHER, TIME),
        tool_choice=ToolChoice("required", "get_time"),
        parallel_tool_calls=False,
    )
    c = await p.complete(req)
    got = vllm.sim.requests[-1]
    assert got["tools"] == [WEATHER.openai(), TIME.openai()]
    assert got["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert got["parallel_tool_calls"] is False
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


async def _bad(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    if not body.get("stream"):
        message = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", **_BAD_ARGS}]}
        answer = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        }
        return web.json_response(answer)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    piece = {"index": 0, "id": "c1", **_BAD_ARGS}
    for delta, finish in (({"tool_calls": [piece]}, None), ({}, "tool_calls")):
        chunk = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


@pytest.fixture(scope="module")
def bad_server() -> Iterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _bad)
    server = AiohttpServer(app)
    server.start()
    try:
        yield f"{server.url}/v1"
    finally:
        server.stop()


@pytest.mark.parametrize("stream", [False, True])
async def test_arguments_that_are_not_json_are_a_protocol_error(
    bad_server: str, make: Any, stream: bool
) -> None:
    p = await make("hosted_vllm/m", bad_server)
    got: list[Delta] = []
    with pytest.raises(UpstreamProtocolError):
        if stream:
            async for d in p.stream(TOOLS):
                got.append(d)
        else:
            await p.complete(TOOLS)
    assert all(d.finish_reason is None for d in got)
