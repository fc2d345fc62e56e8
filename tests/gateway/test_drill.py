"""Outage drills: the primary fully down (503, refused, hang) with a healthy local fallback.
Zero failed client requests; once the breaker is open nobody waits for the primary; after the
primary is back, traffic returns to it within one cool-down."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from standby.sim.background import AiohttpServer
from standby.sim.gemini import SimGemini, build_app
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

HELLO = [{"role": "user", "content": "Are you there?"}]
COOLDOWN = 1.0


async def burst(gw: GatewayServer, n: int, *, stream: bool) -> list[tuple[str, float]]:
    """``n`` concurrent requests (8 at a time); returns (backend, seconds) per request."""
    client = gw.async_client()
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> tuple[str, float]:
        async with gate:
            t0 = time.perf_counter()
            if stream:
                raw = await client.chat.completions.with_raw_response.create(
                    model=ROUTE, messages=HELLO, stream=True
                )
                async for _ in raw.parse():
                    pass
            else:
                raw = await client.chat.completions.with_raw_response.create(
                    model=ROUTE, messages=HELLO
                )
                raw.parse()
            return raw.headers["x-standby-backend"], time.perf_counter() - t0

    try:
        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.close()


def drill_config(url: str, tiny: Path) -> dict[str, object]:
    config = base_config(url, tiny)
    config["breaker"] = {"failures": 3, "cooldown_s": COOLDOWN}
    config["backends"]["gemini"]["timeouts"] = {  # type: ignore[index]
        "connect_s": 0.5,
        "first_token_s": 0.8,
        "idle_s": 0.8,
        "total_s": 0.8,
    }
    return config


async def wait_until_primary_answers(gw: GatewayServer, deadline_s: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline_s:
        results = await burst(gw, 1, stream=False)
        if results[0][0] == "gemini":
            return time.perf_counter() - t0
        await asyncio.sleep(0.05)
    raise AssertionError(f"traffic did not return to the primary within {deadline_s}s")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("fault", ["error-503", "hang"])
async def test_outage_drill(
    sim: RunningSim, tiny_model_dir: Path, start_gateway: StartGateway, fault: str, stream: bool
) -> None:
    gw = start_gateway(drill_config(sim.url, tiny_model_dir))
    assert {b for b, _ in await burst(gw, 4, stream=stream)} == {"gemini"}
    sim.sim.reset()

    sim.sim.set_fault(fault)
    t0 = time.perf_counter()
    first = await burst(gw, 40, stream=stream)  # every request must succeed (gather raises)
    elapsed = time.perf_counter() - t0
    assert {b for b, _ in first} == {"gemma"}
    assert gw.breaker("gemini") in ("OPEN", "HALF_OPEN")
    # Only the requests before the breaker opened, plus one probe per cool-down, reached it.
    assert sim.sim.requests <= 3 + 8 + math.ceil(elapsed / COOLDOWN)

    # Breaker open: a new wave never waits for the primary's 0.8 s timeout.
    calls_before = sim.sim.requests
    second = await burst(gw, 8, stream=stream)
    waited = [s for backend, s in second if backend == "gemma" and s >= 0.8]
    assert len(waited) <= sim.sim.requests - calls_before  # only a half-open probe may wait

    sim.sim.set_fault("ok")
    assert await wait_until_primary_answers(gw, deadline_s=COOLDOWN + 2.5) <= COOLDOWN + 2.5
    assert gw.breaker("gemini") == "CLOSED"


async def test_refused_drill(tiny_model_dir: Path, start_gateway: StartGateway) -> None:
    """The primary's process is gone (connection refused), then comes back on its port."""
    primary = AiohttpServer(build_app(SimGemini()))
    primary.start()
    gw = start_gateway(drill_config(primary.url, tiny_model_dir))
    assert {b for b, _ in await burst(gw, 2, stream=False)} == {"gemini"}
    primary.stop()
    during = await burst(gw, 20, stream=False)
    assert {b for b, _ in during} == {"gemma"}
    assert gw.breaker("gemini") in ("OPEN", "HALF_OPEN")
    restarted = AiohttpServer(build_app(SimGemini()), port=primary.port).start()
    try:
        await wait_until_primary_answers(gw, deadline_s=COOLDOWN + 2.5)
    finally:
        restarted.stop()
