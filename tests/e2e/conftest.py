"""Servers for the client tool-loop tests, started once per session: the simulated vLLM, a
gateway whose routes reach the simulated Gemini and each fallback kind, and one whose route is
the local backend on a tiny Gemma 4 trained on the loop's answers."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.utils.function_calling import convert_to_openai_tool

from standby.config import parse_settings
from standby.protocol import ChatRequest, Message
from standby.sim.background import AiohttpServer
from standby.sim.tiny_model import build_tiny_gemma
from standby.sim.vllm import BASE_MODEL, VLLMSim
from standby.tool_calls import Tool, ToolCall
from tests.e2e.loop import FORECAST_ASK, QUESTION, RESULTS, TOOLS, Forecast
from tests.fixtures.gateway import FAST, GatewayServer
from tests.fixtures.scratch import scratch_responses
from tests.fixtures.sim import RunningSim
from tests.fixtures.tgi_sim import RunningTGI
from tests.fixtures.tiny_model import teach_answers

GEMINI_3 = "gemini-3-flash-preview"  # a Gemini 3 name: the simulator signs its calls
GEMINI_25 = "gemini-2.5-flash"  # no signatures, no call ids (the gateway makes them)
FAILOVER = "gemini-3-with-fallback"  # Gemini 3, then the simulated vLLM
CALM = {"failures": 1000, "min_requests": 1000, "cooldown_s": 1}  # no breaker opens mid-suite


@pytest.fixture
def down(sim: RunningSim) -> RunningSim:
    """The simulated Gemini answering every request with 503 (reset after the test)."""
    sim.sim.set_fault("error-503")
    return sim


@pytest.fixture(scope="session")
def vllm_url() -> Iterator[str]:
    server = AiohttpServer(VLLMSim().app())
    server.start()
    yield f"{server.url}/v1"
    server.stop()


def gemini_backend(model: str, url: str) -> dict[str, Any]:
    """A gemini backend on the simulator, with the short test time limits."""
    return {"type": "gemini", "model": model, "api_key": "k", "base_url": url, "timeouts": FAST}


def serve(backends: dict[str, Any], routes: dict[str, list[str]]) -> GatewayServer:
    """A started gateway over ``backends`` and ``routes``, no capture, breakers that stay calm."""
    settings = parse_settings(
        {
            "server": {"host": "127.0.0.1", "port": 0, "api_keys": []},
            "backends": backends,
            "routes": routes,
            "breaker": CALM,
            "capture": {"enabled": False},
            "responses": scratch_responses(),
        },
        "test",
    )
    server = GatewayServer(settings)
    server.start(timeout=120)
    return server


@pytest.fixture(scope="session")
def tools_gateway(
    gemini_sim: RunningSim, vllm_url: str, tgi_sim_server: RunningTGI
) -> Iterator[GatewayServer]:
    """Routes: each named for what answers it. The Gemini backends' model names end
    ``-tool-chain``, so the simulated Gemini calls one declared function per step. TGI's native
    API has no tool calling (its Messages API is an ``openai`` backend)."""
    server = serve(
        {
            "gemini3": gemini_backend(f"{GEMINI_3}-tool-chain", gemini_sim.url),
            "gemini25": gemini_backend(f"{GEMINI_25}-tool-chain", gemini_sim.url),
            "vllm": {"type": "openai", "base_url": vllm_url, "model": BASE_MODEL},
            "litellm": {
                "type": "litellm",
                "model": f"openai/{BASE_MODEL}",
                "api_base": vllm_url,
                "api_key": "unused",
            },
            "tgi": {"type": "tgi", "base_url": tgi_sim_server.url},
        },
        {
            GEMINI_3: ["gemini3"],
            "chat": ["gemini3"],  # Gemini 3 behind a name without "gemini" in it
            GEMINI_25: ["gemini25"],
            "vllm": ["vllm"],
            "litellm": ["litellm"],
            FAILOVER: ["gemini3", "vllm"],
            "tgi-native": ["tgi"],
        },
    )
    yield server
    server.stop()


# -- the local backend: a tiny Gemma 4 that has learnt the loop ----------------------------------

Q = '<|"|>'
WEATHER_CALL = ToolCall("call_w", "get_weather", '{"city":"Paris"}')
TIME_CALL = ToolCall("call_t", "get_time", '{"zone":"Europe/Paris"}')
LOCAL_ANSWER = "Sunny, 21 degrees in Paris; it is 10:00 there."
LOCAL_FORECAST = Forecast(city="Paris", degrees=21)


def _tools(dicts: list[Any]) -> tuple[Tool, ...]:
    return tuple(
        Tool(f["name"], f.get("description"), f.get("parameters"), f.get("strict"))
        for f in (d["function"] for d in dicts)
    )


def _called(call: ToolCall, result: str) -> tuple[Message, Message]:
    return (
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", result, tool_call_id=call.id, name=call.name),
    )


def _call(body: str) -> str:
    """A call in Gemma 4's syntax; the model then stops where the result goes."""
    return f"<|tool_call>call:{body}<tool_call|><|tool_response>"


def _examples() -> list[tuple[ChatRequest, str]]:
    """Each prompt of the loop (and of the structured-output request) and its answer."""
    ask = Message("user", QUESTION)
    offered = _tools(TOOLS)
    weather = _called(WEATHER_CALL, RESULTS["get_weather"])
    time = _called(TIME_CALL, RESULTS["get_time"])
    forecast = ChatRequest(
        messages=(Message("user", FORECAST_ASK),), tools=_tools([convert_to_openai_tool(Forecast)])
    )
    return [
        (ChatRequest((ask,), tools=offered), _call(f"get_weather{{city:{Q}Paris{Q}}}")),
        (
            ChatRequest((ask, *weather), tools=offered),
            _call(f"get_time{{zone:{Q}Europe/Paris{Q}}}"),
        ),
        (ChatRequest((ask, *weather, *time), tools=offered), LOCAL_ANSWER + "<turn|>"),
        (forecast, _call(f"Forecast{{city:{Q}Paris{Q},degrees:21}}")),
    ]


def train_loop_model(path: Path) -> Path:
    """Teach the tiny Gemma 4 at ``path`` the answers of ``_examples``."""
    return teach_answers(path, _examples(), steps=300)


@pytest.fixture(scope="session")
def loop_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = build_tiny_gemma(tmp_path_factory.mktemp("tiny-loop-gemma4"), seed=0, arch="gemma4")
    return train_loop_model(path)


@pytest.fixture(scope="session")
def local_gateway(loop_model_dir: Path) -> Iterator[GatewayServer]:
    gemma = {
        "type": "local",
        "model": str(loop_model_dir),
        "device": "cpu",
        "max_new_tokens": 48,
        "threads": 1,
        "timeouts": {"connect_s": 1, "first_token_s": 30, "idle_s": 30, "total_s": 60},
    }
    server = serve({"gemma": copy.deepcopy(gemma)}, {"local": ["gemma"]})
    yield server
    server.stop()
