"""What the gateway keeps across requests, keyed by what clients send, stays bounded: the
unknown field names it logs once (``openai_models.log_ignored_fields``) and the tool schemas
whose check it caches (``openai_models.schema_problem``). Real gateway, simulated Gemini."""

from __future__ import annotations

import asyncio
import gc
import logging
import tracemalloc
from typing import Any

import httpx
import pytest

from standby import openai_models
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

HELLO = [{"role": "user", "content": "Hi."}]


async def send_all(gw: GatewayServer, bodies: list[dict[str, Any]]) -> list[int]:
    """POST every body, four at a time; their status codes."""
    limits = httpx.Limits(max_connections=4)
    async with httpx.AsyncClient(base_url=gw.url, timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(4)

        async def one(body: dict[str, Any]) -> int:
            async with gate:
                r = await client.post("/v1/chat/completions", json=body)
                return r.status_code

        return await asyncio.gather(*(one(b) for b in bodies))


def config(url: str) -> dict[str, Any]:
    cfg = base_config(url, None)
    # Time limits for a loaded machine: only what is kept is under test here.
    cfg["backends"]["gemini"]["timeouts"] = {"first_token_s": 30, "idle_s": 30, "total_s": 60}
    return cfg


# The simulated Gemini runs in this process too; what it keeps (the last request bodies, its
# caches) is not the gateway's. (The gateway's thread starts in standby/sim/background.py.)
SIMULATOR = (
    tracemalloc.Filter(False, "*/standby/sim/gemini*", all_frames=True),
    tracemalloc.Filter(False, "*/aiohttp/web_*", all_frames=True),
)


def gateway_bytes() -> int:
    """Traced memory allocated since ``tracemalloc.start`` and still held, less the simulator's."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(SIMULATOR)
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def test_unknown_field_names_are_kept_and_logged_within_bounds(
    sim: RunningSim, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """1000 requests, each with a distinct unknown field of a 200,000-character name (the
    report: 400 of them kept 86 MiB and wrote 76 MiB of log)."""
    gw = start_gateway(config(sim.url))
    openai_models._warned_fields.clear()  # what earlier tests in this process logged
    caplog.set_level(logging.INFO, logger="standby.protocol")
    assert await send_all(gw, [{"model": ROUTE, "messages": HELLO}]) == [200]  # warm
    count, chars = 1000, 200_000
    bodies = [
        {"model": ROUTE, "messages": HELLO, f"{i:06d}" + "x" * chars: 1} for i in range(count)
    ]
    statuses = await send_all(gw, bodies)

    assert statuses == [200] * count  # unknown fields are accepted
    names = openai_models._warned_fields - {None}
    assert len(names) == openai_models.MAX_WARNED
    assert all(len(n) <= openai_models.WARNED_NAME_CHARS for n in names if n is not None)
    lines = [r.getMessage() for r in caplog.records if r.name == "standby.protocol"]
    assert len(lines) == openai_models.MAX_WARNED + 1  # one per name, then one saying "no more"
    logged = sum(len(line) for line in lines)
    assert logged < 40_000, logged  # 256 lines of ~110 characters


async def test_large_tool_schemas_are_not_cached(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    """Tool schemas are checked once and cached by their JSON; a client sending large distinct
    schemas (256 KiB each here, up to max_body_bytes in general) must not fill the cache."""
    gw = start_gateway(config(sim.url))
    count = 40

    def with_tool(i: int) -> dict[str, Any]:
        schema = {"type": "object", "description": f"{i} " + "d" * (256 << 10)}
        tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
        return {"model": ROUTE, "messages": HELLO, "tools": [tool]}

    assert await send_all(gw, [with_tool(-1)]) == [200]  # warm
    tracemalloc.start(64)
    try:
        before = gateway_bytes()
        statuses = await send_all(gw, [with_tool(i) for i in range(count)])
        kept = gateway_bytes() - before
    finally:
        tracemalloc.stop()
    assert statuses == [200] * count
    assert kept < 1 << 20, kept  # 40 cached schemas would keep 10 MiB
