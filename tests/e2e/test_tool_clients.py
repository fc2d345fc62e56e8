"""Tool loops through the clients applications switch to the gateway, end to end: a real gateway
on 127.0.0.1, the simulated Gemini and vLLM behind it (and the local backend on a tiny Gemma 4),
and the real ``openai`` SDK, langchain-openai and OpenAI Agents SDK (``max_retries=0``).

Each loop takes three steps (``get_weather``, then ``get_time``, then text) against the
simulated Gemini (a Gemini 3 name, whose calls are signed, and a Gemini 2.5 one), against each
fallback kind alone, and with Gemini failing in the middle of the loop in both directions; the
``x-standby-backend`` header of every step is checked.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from agents import set_tracing_disabled
from agents.models.chatcmpl_converter import Converter

from tests.e2e.conftest import FAILOVER, GEMINI_3, GEMINI_25, LOCAL_ANSWER, LOCAL_FORECAST
from tests.e2e.loop import (
    AGENT_TOOLS,
    CALLED,
    TOOLS,
    Loop,
    Session,
    agents_sdk,
    langchain_structured,
    langchain_tools,
    sdk_async,
    sdk_stream,
    sdk_stream_helper,
    sdk_sync,
)
from tests.fixtures.gateway import GatewayServer
from tests.fixtures.sim import RunningSim

pytestmark = pytest.mark.filterwarnings(
    # litellm's own import, on the routes it serves
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)

set_tracing_disabled(True)  # nothing exported by the Agents SDK

DRIVERS: dict[str, Callable[[Session], Any]] = {
    "openai-sync": sdk_sync,
    "openai-async": sdk_async,
    "openai-stream": sdk_stream,
    "openai-stream-helper": sdk_stream_helper,
    "langchain-bind-tools": langchain_tools,
    "agents-sdk": agents_sdk,
}


@dataclass(frozen=True)
class Target:
    """A route and the backend that must answer each step; Gemini is down during ``down``."""

    route: str
    steps: tuple[str, ...]
    down: frozenset[int] = frozenset()


TARGETS = {
    "gemini-3": Target(GEMINI_3, ("gemini3",) * 3),
    "gemini-3-as-chat": Target("chat", ("gemini3",) * 3),
    "gemini-2.5": Target(GEMINI_25, ("gemini25",) * 3),
    "vllm-alone": Target("vllm", ("vllm",) * 3),
    "litellm-alone": Target("litellm", ("litellm",) * 3),
    # Gemini answers step 1 and goes down: the fallback finishes the loop.
    "gemini-then-fallback": Target(FAILOVER, ("gemini3", "vllm", "vllm"), frozenset({1, 2})),
    # ... and comes back for step 3, with Gemini's signed call and the fallback's in the history.
    "gemini-fallback-gemini": Target(FAILOVER, ("gemini3", "vllm", "gemini3"), frozenset({1})),
    # Gemini is down for step 1 (the fallback calls), then back: it answers steps 2 and 3.
    "fallback-then-gemini": Target(FAILOVER, ("vllm", "gemini3", "gemini3"), frozenset({0})),
}


async def drive(driver: Callable[[Session], Any], session: Session) -> Any:
    if inspect.iscoroutinefunction(driver):
        return await driver(session)
    return await asyncio.to_thread(driver, session)


def outage(sim: RunningSim, down: frozenset[int]) -> Callable[[int], None]:
    def before(step: int) -> None:
        sim.sim.set_fault("error-503" if step in down else "ok")

    return before


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
@pytest.mark.parametrize("driver", DRIVERS.values(), ids=DRIVERS.keys())
async def test_a_three_step_tool_loop_completes(
    driver: Callable[[Session], Any],
    target: Target,
    tools_gateway: GatewayServer,
    sim: RunningSim,
) -> None:
    session = Session(f"{tools_gateway.url}/v1", target.route, outage(sim, target.down))
    loop: Loop = await drive(driver, session)
    assert loop.calls == CALLED
    assert loop.text.strip()
    assert session.backends == list(target.steps)
    down = ["server_error" if step in target.down else None for step in range(3)]
    assert session.reasons == down  # Gemini's 503, then the fallback answered
    # What went back: the openai SDK's messages as returned; the Agents SDK keeps the signature
    # only when the model (route) name has "gemini" in it; langchain-openai 1.8 drops
    # extra_content. Where a client dropped them, Gemini 3 ran on the gateway's placeholders.
    keeps = driver is not langchain_tools and (driver is not agents_sdk or "gemini" in target.route)
    assert session.signed() == [keeps and step == "gemini3" for step in target.steps[:2]]


@pytest.mark.parametrize("driver", DRIVERS.values(), ids=DRIVERS.keys())
async def test_a_three_step_tool_loop_on_the_local_backend(
    driver: Callable[[Session], Any], local_gateway: GatewayServer
) -> None:
    session = Session(f"{local_gateway.url}/v1", "local")
    loop: Loop = await drive(driver, session)
    assert (loop.calls, loop.text) == (CALLED, LOCAL_ANSWER)
    assert session.backends == ["gemma"] * 3
    assert session.signed() == [False, False]


@pytest.mark.parametrize("driver", DRIVERS.values(), ids=DRIVERS.keys())
async def test_a_route_that_cannot_do_tools_is_a_400_every_client_raises(
    driver: Callable[[Session], Any], tools_gateway: GatewayServer
) -> None:
    session = Session(f"{tools_gateway.url}/v1", "tgi-native")
    with pytest.raises(openai.BadRequestError, match="TGI's native API has no tool calling"):
        await drive(driver, session)
    assert len(session.backends) == 1  # asked once, not retried


STRUCTURED = {
    "gemini-3": (GEMINI_3, "gemini3"),
    "gemini-2.5": (GEMINI_25, "gemini25"),
    "vllm-alone": ("vllm", "vllm"),
    "litellm-alone": ("litellm", "litellm"),
}


@pytest.mark.parametrize(("route", "backend"), STRUCTURED.values(), ids=STRUCTURED.keys())
async def test_langchain_structured_output_by_function_calling(
    route: str, backend: str, tools_gateway: GatewayServer, sim: RunningSim
) -> None:
    session = Session(f"{tools_gateway.url}/v1", route)
    forecast = await drive(langchain_structured, session)
    assert forecast.city and isinstance(forecast.degrees, int)
    assert session.backends == [backend]


async def test_langchain_structured_output_on_the_local_backend(
    local_gateway: GatewayServer,
) -> None:
    session = Session(f"{local_gateway.url}/v1", "local")
    assert await drive(langchain_structured, session) == LOCAL_FORECAST
    assert session.backends == ["gemma"]


def test_every_client_sends_the_same_tools() -> None:
    """The Agents SDK's function tools are the dicts the other clients send (so the local
    model, trained on one prompt per step, sees that prompt from every client)."""
    assert [Converter.tool_to_openai(t) for t in AGENT_TOOLS] == TOOLS
