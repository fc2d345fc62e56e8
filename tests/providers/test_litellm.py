"""LiteLLMProvider against the simulated Gemini, through both of its surfaces as litellm reaches
them: ``gemini/`` (native generateContent) and ``openai/`` (the OpenAI-compatible surface)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from standby.config import LiteLLMBackend
from standby.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from standby.protocol import ChatRequest, Delta
from standby.providers.litellm import LiteLLMProvider
from tests.fixtures.providers import HELLO, Start, collect, failure, joined
from tests.fixtures.sim import SIM_KEY, RunningSim

# litellm imports its GitHub Copilot authenticator on a first call; depending on what was
# imported before, pydantic warns about its ReadOnly TypedDicts (third-party noise).
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)

SURFACES = ["gemini", "openai"]


def _base(sim: RunningSim, surface: str) -> str:
    return f"{sim.url}/v1beta" if surface == "gemini" else f"{sim.url}/v1beta/openai"


@pytest.fixture
def make(started: Start) -> Any:
    async def _make(model: str, api_base: str, **kw: Any) -> LiteLLMProvider:
        kw.setdefault("api_key", "any-key")
        config = LiteLLMBackend(type="litellm", model=model, api_base=api_base, **kw)
        return await started(LiteLLMProvider("lm", config))

    return _make


@pytest.fixture
def on(sim: RunningSim, make: Any) -> Any:
    """``await on(surface, fault_or_model)``: a provider for that model on that surface."""

    async def _on(surface: str, model: str, **kw: Any) -> LiteLLMProvider:
        return await make(f"{surface}/{model}", _base(sim, surface), **kw)  # type: ignore[no-any-return]

    return _on


def test_importing_the_module_does_not_import_litellm() -> None:
    code = "import sys, standby.providers.litellm; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("surface", SURFACES)
async def test_complete_and_stream_agree(on: Any, surface: str) -> None:
    p = await on(surface, "gemini-2.5-flash")
    assert p.ready()
    c = await p.complete(HELLO)
    assert c.text.startswith("Simulated Gemini answer to: Say hello.")
    assert c.finish_reason == "stop"
    assert c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 10
    deltas = await collect(p)
    assert joined(deltas) == c.text
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens > 10
    assert deltas[-1].model_version == c.model_version is not None


@pytest.mark.parametrize("surface", SURFACES)
async def test_max_tokens_gives_length(on: Any, surface: str) -> None:
    p = await on(surface, "gemini-2.5-flash")
    c = await p.complete(ChatRequest(messages=HELLO.messages, max_tokens=3))
    assert c.finish_reason == "length"


async def test_continue_final_on_an_openai_compatible_server(on: Any) -> None:
    p = await on("openai", "gemini-2.5-flash")
    c = await p.complete(HELLO.continued("Simulated Gemini"))
    assert c.text and not c.text.startswith("Simulated Gemini")


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("stream", [False, True])
async def test_429_carries_retry_after(on: Any, surface: str, stream: bool) -> None:
    p = await on(surface, "error-429-retry-7")
    err = await failure(UpstreamStatusError, p, stream=stream)
    assert (err.status, err.retry_after) == (429, 7)
    assert err.reason == "rate_limited" and err.failover


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("stream", [False, True])
async def test_503_keeps_its_status(on: Any, surface: str, stream: bool) -> None:
    """litellm reports Gemini's 503 as InternalServerError(500); the real status survives."""
    p = await on(surface, "error-503")
    err = await failure(UpstreamStatusError, p, stream=stream)
    assert err.status == 503 and err.failover


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("status", [400, 404])
async def test_client_errors_do_not_fail_over(on: Any, surface: str, status: int) -> None:
    p = await on(surface, f"error-{status}")
    with pytest.raises(UpstreamStatusError) as err:
        await p.complete(HELLO)
    assert err.value.status == status
    assert not err.value.failover and not err.value.counts


@pytest.mark.parametrize("surface", SURFACES)
async def test_bad_key_is_auth(sim_with_key: RunningSim, make: Any, surface: str) -> None:
    good = await make(f"{surface}/gemini-2.5-flash", _base(sim_with_key, surface), api_key=SIM_KEY)
    assert (await good.complete(HELLO)).text
    bad = await make(f"{surface}/gemini-2.5-flash", _base(sim_with_key, surface), api_key="bad")
    with pytest.raises(UpstreamStatusError) as err:
        await bad.complete(HELLO)
    assert err.value.status in (401, 403) and err.value.reason == "auth"


@pytest.mark.parametrize("surface", SURFACES)
async def test_litellm_does_not_retry(sim: RunningSim, on: Any, surface: str) -> None:
    sim.sim.set_fault("flaky-1")  # the next request fails with 503, later ones succeed
    p = await on(surface, "gemini-2.5-flash")
    with pytest.raises(UpstreamStatusError):
        await p.complete(HELLO)
    assert sim.sim.stats()["requests"] == 1


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("stream", [False, True])
async def test_connection_refused(make: Any, surface: str, stream: bool, refused_port: int) -> None:
    """litellm reports a refused connection to an ``openai/`` model as InternalServerError."""
    base = f"http://127.0.0.1:{refused_port}/v1beta"
    p = await make(f"{surface}/gemini-2.5-flash", base)
    await failure(UpstreamConnectError, p, stream=stream)


@pytest.mark.parametrize("surface", SURFACES)
async def test_cut_stream_is_an_error_not_success(on: Any, surface: str) -> None:
    p = await on(surface, "cut-3")
    got: list[Delta] = []
    with pytest.raises(UpstreamConnectError):
        async for d in p.stream(HELLO):
            got.append(d)
    assert all(d.finish_reason is None for d in got)


@pytest.mark.parametrize("surface", SURFACES)
async def test_cut_whole_answer(on: Any, surface: str) -> None:
    p = await on(surface, "cut-3")
    with pytest.raises(UpstreamConnectError):
        await p.complete(HELLO)


@pytest.mark.parametrize("surface", SURFACES)
async def test_malformed_whole_answer(on: Any, surface: str) -> None:
    """litellm calls an unparsable Gemini body BadRequestError(422); it is the backend's fault."""
    p = await on(surface, "malformed")
    with pytest.raises(UpstreamProtocolError):
        await p.complete(HELLO)


async def test_malformed_stream_openai(on: Any) -> None:
    p = await on("openai", "malformed")
    with pytest.raises(UpstreamProtocolError):
        await collect(p)


async def test_malformed_stream_gemini_is_not_success(on: Any) -> None:
    """litellm's gemini stream skips the bad chunk and invents ``finish_reason: stop``; the
    provider notices that Gemini never finished."""
    p = await on("gemini", "malformed")
    with pytest.raises(UpstreamError):
        await collect(p)


@pytest.mark.parametrize("surface", SURFACES)
async def test_blocked_answer_is_content_filter(on: Any, surface: str) -> None:
    p = await on(surface, "safety")
    c = await p.complete(HELLO)
    assert (c.text, c.finish_reason) == ("", "content_filter")
    assert (await collect(p))[-1].finish_reason == "content_filter"
