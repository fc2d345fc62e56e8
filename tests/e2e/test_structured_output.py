"""Structured output while the primary is down, end to end: a real gateway on 127.0.0.1 whose
routes are the simulated Gemini (answering 503) then one fallback kind each: an openai-type
backend on the simulated vLLM, TGI's native API and TGI's Messages API on the simulated TGI,
litellm on the simulated vLLM. The clients are the openai SDK's ``parse()`` and ``stream()``
with a Pydantic model and langchain-openai's ``with_structured_output`` (``json_schema``, and
``function_calling`` where the fallback calls tools); each answer must parse as the model and
come from the fallback. A route whose only fallback cannot constrain its output never answers
without the constraint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from standby.sim.background import AiohttpServer
from standby.sim.vllm import BASE_MODEL, VLLMSim
from tests.e2e.conftest import gemini_backend, serve
from tests.fixtures.gateway import GatewayServer
from tests.fixtures.sim import RunningSim
from tests.fixtures.tgi_sim import RunningTGI

pytestmark = pytest.mark.filterwarnings(
    # litellm's own import, on the routes it serves
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)

ASK = [{"role": "user", "content": "Plan two days in Oslo."}]


class Step(BaseModel):
    day: int
    plan: str


class Trip(BaseModel):
    city: str
    steps: list[Step]
    budget: float | None


# route -> the fallback that must answer it while Gemini is down
FALLBACKS = {
    "so-vllm": "vllm",
    "so-tgi-native": "tgi",
    "so-tgi-messages": "tgi_messages",
    "so-litellm": "litellm",
}
CALLS_TOOLS = {"so-vllm", "so-litellm"}  # TGI's native API has no tools; its sim's chat none


@pytest.fixture(scope="module")
def vllm() -> Iterator[tuple[str, VLLMSim]]:
    """The simulated vLLM: its OpenAI base URL and its state (``requests`` it received)."""
    sim = VLLMSim()
    server = AiohttpServer(sim.app())
    server.start()
    yield f"{server.url}/v1", sim
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    gemini_sim: RunningSim, vllm: tuple[str, VLLMSim], tgi_sim_server: RunningTGI
) -> Iterator[GatewayServer]:
    vllm_url = vllm[0]

    def openai_type(url: str, **kw: Any) -> dict[str, Any]:
        return {"type": "openai", "base_url": url, "model": BASE_MODEL, **kw}

    backends: dict[str, Any] = {
        "gemini": gemini_backend("gemini-3-flash-preview", gemini_sim.url),
        "vllm": openai_type(vllm_url),
        "tgi": {"type": "tgi", "base_url": tgi_sim_server.url},
        "tgi_messages": openai_type(f"{tgi_sim_server.url}/v1", structured_output="tgi"),
        "litellm": {
            "type": "litellm",
            "model": f"hosted_vllm/{BASE_MODEL}",
            "api_base": vllm_url,
            "api_key": "unused",
        },
        "plain": openai_type(vllm_url, structured_output="none"),
    }
    routes = {route: ["gemini", name] for route, name in FALLBACKS.items()}
    routes["so-plain"] = ["gemini", "plain"]
    routes["plain-only"] = ["plain"]
    server = serve(backends, routes)
    yield server
    server.stop()


def _client(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("route", FALLBACKS)
def test_parse_succeeds_on_the_fallback(
    gateway: GatewayServer, down: RunningSim, route: str
) -> None:
    with _client(gateway) as client:
        raw = client.chat.completions.with_raw_response.parse(
            model=route,
            messages=ASK,  # type: ignore[arg-type]
            response_format=Trip,
        )
        with client.chat.completions.stream(
            model=route,
            messages=ASK,  # type: ignore[arg-type]
            response_format=Trip,
        ) as stream:
            streamed = stream.get_final_completion()
    assert raw.headers["x-standby-backend"] == FALLBACKS[route]
    assert raw.headers["x-standby-fallback-reason"] == "server_error"
    trip = raw.parse().choices[0].message.parsed
    assert isinstance(trip, Trip)
    assert isinstance(streamed.choices[0].message.parsed, Trip)
    assert streamed.choices[0].message.parsed == trip  # whole and streamed agree


def test_parse_on_gemini_while_it_is_up(gateway: GatewayServer, sim: RunningSim) -> None:
    """The primary's own answer (responseJsonSchema, simulated Gemini) parses the same way."""
    with _client(gateway) as client:
        raw = client.chat.completions.with_raw_response.parse(
            model="so-vllm",
            messages=ASK,  # type: ignore[arg-type]
            response_format=Trip,
        )
    assert raw.headers["x-standby-backend"] == "gemini"
    assert isinstance(raw.parse().choices[0].message.parsed, Trip)


def _langchain(gateway: GatewayServer, route: str, method: str) -> tuple[Any, list[str]]:
    """langchain-openai's structured answer on ``route`` and the backend of each response."""
    seen: list[str] = []

    def record(response: httpx.Response) -> None:
        seen.append(response.headers.get("x-standby-backend", ""))

    with httpx.Client(event_hooks={"response": [record]}) as http:
        model = ChatOpenAI(
            model=route,
            base_url=f"{gateway.url}/v1",
            api_key="unused",  # type: ignore[arg-type]
            max_retries=0,
            http_client=http,
        )
        structured = model.with_structured_output(Trip, method=method)  # type: ignore[arg-type]
        return structured.invoke("Two days in Oslo."), seen


@pytest.mark.parametrize("route", FALLBACKS)
def test_langchain_json_schema_succeeds_on_the_fallback(
    gateway: GatewayServer, down: RunningSim, route: str
) -> None:
    trip, seen = _langchain(gateway, route, "json_schema")
    assert isinstance(trip, Trip)
    assert seen == [FALLBACKS[route]]


@pytest.mark.parametrize("route", sorted(CALLS_TOOLS))
def test_langchain_function_calling_succeeds_on_the_fallback(
    gateway: GatewayServer, down: RunningSim, route: str
) -> None:
    trip, seen = _langchain(gateway, route, "function_calling")
    assert isinstance(trip, Trip)
    assert seen == [FALLBACKS[route]]


def test_a_fallback_without_structured_output_is_skipped_not_answered_unstructured(
    gateway: GatewayServer, down: RunningSim, vllm: tuple[str, VLLMSim]
) -> None:
    """Gemini could constrain the answer but is down, the fallback cannot: the outage's 503
    (Retry-After) names both, and the fallback is never called."""
    asked = len(vllm[1].requests)
    with _client(gateway) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.parse(
                model="so-plain",
                messages=ASK,  # type: ignore[arg-type]
                response_format=Trip,
            )
        assert caught.value.status_code == 503
        assert caught.value.response.headers["retry-after"]
        error = caught.value.body
        assert isinstance(error, dict)
        assert "gemini: UpstreamStatusError (HTTP 503" in error["message"]
        assert (
            "plain: Unsupported (backend 'plain': configured without structured output"
            in (error["message"])
        )
        assert len(vllm[1].requests) == asked
        # Without the format the same route answers from that fallback.
        plain = client.chat.completions.with_raw_response.create(
            model="so-plain",
            messages=ASK,  # type: ignore[arg-type]
        )
        assert plain.headers["x-standby-backend"] == "plain"


def test_a_route_that_cannot_constrain_at_all_is_a_400(gateway: GatewayServer) -> None:
    with _client(gateway) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.parse(
            model="plain-only",
            messages=ASK,  # type: ignore[arg-type]
            response_format=Trip,
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "unsupported"
    assert "structured_output: none" in error["message"]
