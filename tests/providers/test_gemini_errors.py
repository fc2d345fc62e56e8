"""GeminiProvider against the simulated Gemini's faults: each failure becomes the error class
and reason that the failover table (docs/architecture.md) acts on (the gateway's side of
each row is in tests/gateway/test_failover_table.py, with a fake backend)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from standby.config import GeminiBackend
from standby.errors import (
    UpstreamBlocked,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from standby.protocol import ChatRequest, Delta, FinishReason, Message
from standby.providers.gemini import GeminiProvider
from tests.fixtures.providers import Start
from tests.fixtures.sim import RunningSim

HELLO = ChatRequest(messages=(Message("user", "Tell me about failover."),))
MODES = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
Make = Callable[..., Awaitable[GeminiProvider]]


@pytest.fixture
def make(started: Start) -> Make:
    async def _make(base_url: str, **kw: Any) -> GeminiProvider:
        config = GeminiBackend(type="gemini", model="gemini-2.5-flash", base_url=base_url, **kw)
        return await started(GeminiProvider("gemini", config))

    return _make


async def answer(p: GeminiProvider, stream: bool) -> tuple[str, FinishReason | None]:
    if not stream:
        done = await p.complete(HELLO)
        return done.text, done.finish_reason
    deltas: list[Delta] = [d async for d in p.stream(HELLO)]
    return "".join(d.text for d in deltas), deltas[-1].finish_reason


FAILURES: list[tuple[str, type[UpstreamError], str]] = [
    ("error-429", UpstreamStatusError, "rate_limited"),
    ("error-500", UpstreamStatusError, "server_error"),
    ("error-502", UpstreamStatusError, "server_error"),
    ("error-503", UpstreamStatusError, "server_error"),
    ("error-504", UpstreamStatusError, "server_error"),
    ("error-401", UpstreamStatusError, "auth"),
    ("error-403", UpstreamStatusError, "auth"),
    ("malformed", UpstreamProtocolError, "server_error"),
    ("reset", UpstreamConnectError, "connect"),
]


@MODES
@pytest.mark.parametrize(("fault", "kind", "reason"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_backend_failures_fail_over_and_count(
    sim: RunningSim, make: Make, fault: str, kind: type[UpstreamError], reason: str, stream: bool
) -> None:
    sim.sim.set_fault(fault)
    with pytest.raises(kind) as raised:
        await answer(await make(sim.url), stream)
    error = raised.value
    assert (error.backend, error.reason) == ("gemini", reason)
    assert error.failover and error.counts


@MODES
async def test_retry_after_is_read(sim: RunningSim, make: Make, stream: bool) -> None:
    sim.sim.set_fault("error-429-retry-5")
    with pytest.raises(UpstreamStatusError) as raised:
        await answer(await make(sim.url), stream)
    assert raised.value.retry_after == 5


@MODES
@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_client_errors_neither_fail_over_nor_count(
    sim: RunningSim, make: Make, status: int, stream: bool
) -> None:
    sim.sim.set_fault(f"error-{status}")
    with pytest.raises(UpstreamStatusError) as raised:
        await answer(await make(sim.url), stream)
    error = raised.value
    assert (error.status, error.failover, error.counts) == (status, False, False)


@MODES
@pytest.mark.parametrize("fault", ["safety", "blocked", "recitation"])
async def test_blocked_answers(sim: RunningSim, make: Make, fault: str, stream: bool) -> None:
    sim.sim.set_fault(fault)
    assert await answer(await make(sim.url), stream) == ("", "content_filter")
    with pytest.raises(UpstreamBlocked) as raised:
        await answer(await make(sim.url, on_blocked="fallback"), stream)
    assert (raised.value.failover, raised.value.counts) == (True, False)


async def test_cut_stream_fails_after_its_pieces(sim: RunningSim, make: Make) -> None:
    sim.sim.set_fault("cut-3")
    pieces: list[str] = []
    with pytest.raises(UpstreamError) as raised:
        async for delta in (await make(sim.url)).stream(HELLO):
            pieces.append(delta.text)
    assert pieces and all(pieces)  # content arrived before the cut
    assert raised.value.failover and raised.value.counts


@MODES
async def test_refused_connection_is_a_connect_error(
    make: Make, refused_port: int, stream: bool
) -> None:
    with pytest.raises(UpstreamConnectError):
        await answer(await make(f"http://127.0.0.1:{refused_port}"), stream)
