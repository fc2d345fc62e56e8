"""Tool calls with Gemini's thought signatures through the OpenAI-shaped providers, against the
simulated Gemini (which, like Gemini 3, answers 400 to a history whose call lacks its
signature): an ``openai`` backend on Gemini's OpenAI surface, and litellm on ``gemini/`` (the
native API) and ``openai/`` (the OpenAI surface). A signature made by Gemini goes back with the
call; a call the fallback made goes with Google's documented placeholder."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from standby.config import LiteLLMBackend, OpenAIBackend
from standby.protocol import ChatRequest, Delta, Message
from standby.providers.base import Provider
from standby.providers.litellm import LiteLLMProvider
from standby.providers.openai_compat import OpenAICompatProvider, request_body
from standby.tool_calls import ToolCall, whole_calls
from tests.fixtures.providers import ASK, WEATHER, Start
from tests.fixtures.sim import RunningSim

pytestmark = pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)

MODEL = "gemini-3-flash-preview-tool-call"  # the simulator calls the first tool, signed
KINDS = ["openai", "litellm-gemini", "litellm-openai"]


@pytest.fixture
def on(sim: RunningSim, started: Start) -> Any:
    async def _on(kind: str) -> Provider:
        p: Provider
        if kind == "openai":
            config = OpenAIBackend(type="openai", base_url=f"{sim.url}/v1beta/openai", model=MODEL)
            p = OpenAICompatProvider("g", config)
        else:
            surface = kind.removeprefix("litellm-")
            base = f"{sim.url}/v1beta" if surface == "gemini" else f"{sim.url}/v1beta/openai"
            p = LiteLLMProvider(
                "g",
                LiteLLMBackend(
                    type="litellm", model=f"{surface}/{MODEL}", api_base=base, api_key="k"
                ),
            )
        return await started(p)

    return _on


def follow_up(calls: tuple[ToolCall, ...]) -> ChatRequest:
    results = (Message("tool", "sunny", tool_call_id=c.id, name=c.name) for c in calls)
    history = (ASK, Message("assistant", "", tool_calls=calls), *results)
    return ChatRequest(messages=history, tools=(WEATHER,))


@pytest.mark.parametrize("kind", KINDS)
async def test_signed_calls_whole_and_streamed(on: Any, kind: str) -> None:
    p = await on(kind)
    req = ChatRequest(messages=(ASK,), tools=(WEATHER,))
    c = await p.complete(req)
    assert c.finish_reason == "tool_calls"
    [call] = c.tool_calls
    assert call.name == "get_weather" and call.signature
    deltas: list[Delta] = [d async for d in p.stream(req)]
    [piece] = whole_calls([x for d in deltas for x in d.tool_calls])
    assert (piece.name, piece.signature) == (call.name, call.signature)
    assert deltas[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize("kind", KINDS)
async def test_the_signature_goes_back_and_the_loop_ends(on: Any, kind: str) -> None:
    p = await on(kind)
    first = await p.complete(ChatRequest(messages=(ASK,), tools=(WEATHER,)))
    answer = await p.complete(follow_up(first.tool_calls))
    assert answer.text and not answer.tool_calls and answer.finish_reason == "stop"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_call_the_fallback_made_goes_with_the_placeholder(on: Any, kind: str) -> None:
    p = await on(kind)
    unsigned = (ToolCall("call_fallback_1", "get_weather", '{"city": "Oslo"}'),)
    answer = await p.complete(follow_up(unsigned))
    assert answer.text and answer.finish_reason == "stop"


async def test_without_the_placeholder_gemini_refuses(sim: RunningSim) -> None:
    """The simulator does check: the same history as it goes to any other server is a 400."""
    unsigned = (ToolCall("call_fallback_1", "get_weather", '{"city": "Oslo"}'),)
    body = request_body(MODEL, follow_up(unsigned), {}, stream=False, signatures=False)
    async with httpx.AsyncClient(base_url=f"{sim.url}/v1beta/openai") as client:
        resp = await client.post("/chat/completions", json=body)
    assert resp.status_code == 400
    assert "thought_signature" in resp.text
