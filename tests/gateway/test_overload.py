"""Overload: requests beyond ``max_concurrency`` (per route, and global) get a 503
``overloaded`` with Retry-After at once instead of queueing; a burst 10x the limit leaves
memory flat; streams give their slot back however they end."""

from __future__ import annotations

import asyncio
import gc
import json
import time
import tracemalloc

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.drill_report import Record, p99
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

BODY = {"model": ROUTE, "messages": [{"role": "user", "content": "Busy?"}]}
HOLD_MS = 800  # the primary's answer time: every admitted request holds its slot this long


async def burst(gw: GatewayServer, n: int, body: dict[str, object] = BODY) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=gw.url, timeout=30, limits=limits) as client:

        async def one() -> httpx.Response:
            t0 = time.perf_counter()
            r = await client.post("/v1/chat/completions", json=body)
            await r.aread()
            r.extensions["elapsed_s"] = time.perf_counter() - t0
            return r

        return await asyncio.gather(*(one() for _ in range(n)))


def rejected_total(gw: GatewayServer, scope: str) -> float:
    assert gw.gateway is not None
    value = gw.gateway.metrics.registry.get_sample_value(
        "standby_rejected_requests_total", {"route": ROUTE, "scope": scope}
    )
    return value or 0.0


def assert_overloaded(r: httpx.Response) -> None:
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    error = r.json()["error"]
    assert error["code"] == "overloaded"
    assert error["type"] == "service_unavailable_error"
    assert "Traceback" not in r.text


@pytest.mark.parametrize("scope", ["route", "global"])
async def test_burst_over_the_limit_is_refused_fast(
    sim: RunningSim, start_gateway: StartGateway, scope: str, drill_report: Record
) -> None:
    limit = 4
    config = base_config(sim.url, None)
    if scope == "route":
        config["routes"] = {ROUTE: {"backends": ["gemini"], "max_concurrency": limit}}
    else:
        config["server"]["max_concurrency"] = limit
    gw = start_gateway(config)
    sim.sim.set_fault(f"slow-{HOLD_MS}")

    responses = await burst(gw, 10 * limit)
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(ok) == limit == sim.sim.requests  # nothing beyond the limit reached the backend
    assert len(refused) == 9 * limit
    for r in refused:
        assert_overloaded(r)
        assert r.extensions["elapsed_s"] < HOLD_MS / 1000  # refused before any slot freed
    assert rejected_total(gw, scope) == 9 * limit
    drill_report(
        drill=f"burst 10x the {scope} max_concurrency",
        tried=f"{10 * limit} at once, limit {limit}, primary answers in {HOLD_MS} ms",
        requests=len(responses),
        errors=len(refused),
        p99_ms=p99([r.extensions["elapsed_s"] for r in refused]),
        metrics={"standby_rejected_requests_total": {scope: rejected_total(gw, scope)}},
    )

    # Slots come back: the next wave is admitted again.
    assert [r.status_code for r in await burst(gw, limit)] == [200] * limit


async def test_memory_stays_flat_under_repeated_bursts(
    sim: RunningSim, start_gateway: StartGateway, drill_report: Record
) -> None:
    """Twelve bursts of 10x the limit: what the process holds after the last is within a small
    bound of what it held after the first (refused requests leave nothing behind; a leak of
    4 KiB per request would show as 2 MiB). Closed connections are freed lazily, so the bound
    is not zero."""
    limit = 5
    config = base_config(sim.url, None)
    config["server"]["max_concurrency"] = limit
    gw = start_gateway(config)
    sim.sim.set_fault("slow-300")
    await burst(gw, 10 * limit)  # warm up: lazily built objects, connection pools
    tracemalloc.start()
    try:
        await burst(gw, 10 * limit)
        gc.collect()
        after_first = tracemalloc.get_traced_memory()[0]
        for _ in range(11):
            responses = await burst(gw, 10 * limit)
            assert sum(r.status_code == 503 for r in responses) == 9 * limit
        gc.collect()
        after_last, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after_last - after_first < 2_000_000, (after_first, after_last)
    assert peak - after_first < 20_000_000, (after_first, peak)
    drill_report(
        drill="memory under repeated bursts",
        tried=f"12 bursts of {10 * limit}, global limit {limit}",
        requests=120 * limit,
        errors=108 * limit,
        p99_ms="",
        traced_kib={
            "after first": after_first // 1024,
            "after last": after_last // 1024,
            "peak": peak // 1024,
        },
    )


async def test_streams_give_their_slot_back(sim: RunningSim, start_gateway: StartGateway) -> None:
    """Finished, failed and abandoned streams all free their slot."""
    config = base_config(sim.url, None)
    config["server"]["max_concurrency"] = 2
    gw = start_gateway(config)
    assert gw.gateway is not None
    stream_body = {**BODY, "stream": True}
    assert [r.status_code for r in await burst(gw, 2, stream_body)] == [200, 200]
    sim.sim.set_fault("cut-1")  # the primary breaks mid-stream, no fallback: error event
    for r in await burst(gw, 2, stream_body):
        assert r.status_code == 200 and "stream_interrupted" in r.text
    sim.sim.set_fault("idle-300")
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        for _ in range(3):  # walk away after the first chunk
            async with client.stream("POST", "/v1/chat/completions", json=stream_body) as r:
                async for _chunk in r.aiter_bytes():
                    break
    deadline = time.monotonic() + 10
    while gw.gateway.admission.total and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert gw.gateway.admission.total == 0
    sim.sim.set_fault("ok")
    assert [r.status_code for r in await burst(gw, 2, stream_body)] == [200, 200]


async def test_shed_requests_count_as_rejections_of_their_route(
    sim: RunningSim, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Load shedding is no backend failure: the refused request shows on /metrics as
    standby_rejected_requests_total of its route, not as standby_requests_total{outcome="error"}
    (which StandbyAllBackendsFailing reads) nor under a route called "none"."""
    config = base_config(sim.url, None)
    config["routes"] = {ROUTE: {"backends": ["gemini"], "max_concurrency": 1}}
    # Time to spare on a loaded machine: the slow answer must not become a backend error.
    config["backends"]["gemini"]["timeouts"] = {"first_token_s": 20, "total_s": 30}
    gw = start_gateway(config)
    assert gw.gateway is not None
    sim.sim.set_fault(f"slow-{HOLD_MS}")
    caplog.set_level("INFO", "standby.access")
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        holder = asyncio.create_task(client.post("/v1/chat/completions", json=BODY))
        deadline = time.monotonic() + 10
        while not gw.gateway.admission.total and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        assert gw.gateway.admission.total == 1, "the first request never took the slot"
        refused = await client.post("/v1/chat/completions", json=BODY)
        assert_overloaded(refused)
        held = await holder
        assert held.status_code == 200, held.text
        text = (await client.get("/metrics")).text

    samples = [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]

    def total(name: str, **labels: str) -> float:
        return sum(v for n, ls, v in samples if n == name and labels.items() <= ls.items())

    assert total("standby_rejected_requests_total", route=ROUTE, scope="route") == 1
    assert total("standby_rejected_requests_total") == 1
    assert total("standby_requests_total", route=ROUTE, backend="gemini", outcome="ok") == 1
    assert total("standby_requests_total") == 1  # the answered one only
    assert total("standby_requests_total", outcome="error") == 0
    assert total("standby_requests_total", route="none") == 0
    assert total("standby_upstream_errors_total") == 0
    assert total("standby_request_duration_seconds_count") == 1
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "standby.access"]
    assert [(e["route"], e["status"], e["outcome"]) for e in lines] == [
        (ROUTE, 503, "rejected"),
        (ROUTE, 200, "ok"),
    ]
