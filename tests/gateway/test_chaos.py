"""Chaos drills against real local servers, each a few seconds of steady client load while
something breaks: the primary flapping, a 429 storm with Retry-After, a primary just under and
just over the first-token timeout, every backend down, a fallback over its queue, the Redis bus
restarted, the SQLite bus out of space. Each records what clients saw (errors, p99) and what
the metrics showed (tests/fixtures/drill_report.py; benchmarks/drills.py prints the table).
The complete outages (503, refused, hang) are in test_drill.py."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from standby.sim.background import free_port
from standby.store import open_bus
from tests.fixtures.drill_report import Record, metric_values, p99
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

BODY = {"model": ROUTE, "messages": [{"role": "user", "content": "Still there?"}]}


@dataclass
class Load:
    """What the clients saw."""

    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    backends: dict[str, int] = field(default_factory=dict)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # error bodies

    @property
    def errors(self) -> int:
        return sum(s != 200 for s in self.statuses)

    def figures(self) -> dict[str, Any]:
        return {
            "requests": len(self.statuses),
            "errors": self.errors,
            "p99_ms": p99(self.latencies),
            "backends": self.backends,
        }


async def steady_load(url: str, seconds: float, concurrency: int = 6, stream: bool = False) -> Load:
    """``concurrency`` clients sending back to back for ``seconds``."""
    load = Load()
    stop = time.monotonic() + seconds
    body = {**BODY, "stream": stream}

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            r = await client.post("/v1/chat/completions", json=body)
            load.latencies.append(time.perf_counter() - t0)
            load.statuses.append(r.status_code)
            backend = r.headers.get("x-standby-backend", "none")
            load.backends[backend] = load.backends.get(backend, 0) + 1
            if r.status_code != 200:
                load.bodies.append(r.json())
                await asyncio.sleep(0.05)
            elif stream:
                assert r.text.rstrip().endswith("data: [DONE]"), r.text[-200:]

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    return load


def scrape(gw: GatewayServer, *names: str) -> dict[str, dict[str, float]]:
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    return {name: metric_values(text, name) for name in names}


def drill_config(sim_url: str, tiny: Path | None) -> dict[str, Any]:
    config = base_config(sim_url, tiny)
    config["breaker"] = {"failures": 3, "cooldown_s": 0.5, "window_s": 10}
    config["backends"]["gemini"]["timeouts"] = {
        "connect_s": 0.5,
        "first_token_s": 1.0,
        "idle_s": 1.0,
        "total_s": 2.0,
    }
    return config


async def test_primary_flapping(
    sim: RunningSim, tiny_model_dir: Path, start_gateway: StartGateway, drill_report: Record
) -> None:
    """The primary goes down (503, then connection resets) and up every 0.6 s while six
    clients send: nobody sees an error; both backends answer."""
    gw = start_gateway(drill_config(sim.url, tiny_model_dir))
    flips = 0

    async def flap() -> None:
        nonlocal flips
        faults = ["error-503", "ok", "reset", "ok"]
        while True:
            await asyncio.sleep(0.6)
            sim.sim.set_fault(faults[flips % len(faults)])
            flips += 1

    flapper = asyncio.create_task(flap())
    try:
        load = await steady_load(gw.url, seconds=5)
    finally:
        flapper.cancel()
    assert load.errors == 0, load.bodies[:3]
    assert load.backends.get("gemini", 0) > 0 and load.backends.get("gemma", 0) > 0
    metrics = scrape(gw, "standby_fallbacks_total", "standby_upstream_errors_total")
    drill_report(
        drill="primary flapping",
        tried=f"503/reset every 0.6 s, {flips} flips, 6 clients, 5 s",
        **load.figures(),
        metrics=metrics,
    )


async def test_429_storm_honours_retry_after(
    sim: RunningSim, tiny_model_dir: Path, start_gateway: StartGateway, drill_report: Record
) -> None:
    """Every primary call answers 429 with Retry-After: 3. The breaker opens and stays open for
    the hint (not its 0.5 s cool-down): the primary sees no call for ~3 s; clients see no error."""
    gw = start_gateway(drill_config(sim.url, tiny_model_dir))
    sim.sim.set_fault("error-429-retry-3")
    load = await steady_load(gw.url, seconds=2.5)
    assert load.errors == 0, load.bodies[:3]
    # Breaker failures (3) plus the requests already in flight when it opened; no probe yet.
    during = sim.sim.requests
    assert during <= 3 + 6
    assert gw.breaker("gemini") == "OPEN"
    assert gw.gateway is not None
    retry_in = gw.gateway.failover.breakers["gemini"].seconds_until_retry()
    assert retry_in > 0
    sim.sim.set_fault("ok")
    await asyncio.sleep(retry_in + 0.2)
    after = await steady_load(gw.url, seconds=0.5, concurrency=2)
    assert after.errors == 0 and after.backends.get("gemini", 0) > 0
    metrics = scrape(gw, "standby_fallbacks_total", "standby_breaker_state")
    drill_report(
        drill="429 storm, Retry-After 3 s",
        tried="every primary call 429, 6 clients, 2.5 s",
        **load.figures(),
        primary_calls=during,
        metrics=metrics,
    )


@pytest.mark.parametrize(
    ("delay_ms", "expect"), [(600, "gemini"), (1500, "gemma")], ids=["ttft-under", "ttft-over"]
)
async def test_slow_primary_around_the_first_token_timeout(
    sim: RunningSim,
    tiny_model_dir: Path,
    start_gateway: StartGateway,
    drill_report: Record,
    delay_ms: int,
    expect: str,
) -> None:
    """first_token_s is 1.0: a primary whose first byte comes at 0.6 s answers every stream;
    at 1.5 s every stream moves to the fallback (reason timeout) and nobody waits past ~1 s
    once the breaker is open."""
    config = drill_config(sim.url, tiny_model_dir)
    config["breaker"] = {"failures": 3, "cooldown_s": 30}
    gw = start_gateway(config)
    sim.sim.set_fault(f"slow-{delay_ms}")
    load = await steady_load(gw.url, seconds=3, concurrency=4, stream=True)
    assert load.errors == 0, load.bodies[:3]
    assert set(load.backends) == {expect}
    latency = p99(load.latencies)
    if expect == "gemini":
        assert latency >= delay_ms
    else:
        assert sim.sim.requests <= 3 + 4  # the breaker opened after 3 timeouts
    metrics = scrape(gw, "standby_fallbacks_total")
    drill_report(
        drill=f"slow primary, TTFT {delay_ms} ms vs first_token_s 1.0",
        tried="4 streaming clients, 3 s",
        **load.figures(),
        metrics=metrics,
    )


async def test_every_backend_down_is_a_fast_clean_503(
    sim: RunningSim, start_gateway: StartGateway, drill_report: Record, refused_port: int
) -> None:
    """Primary 503 and backup refusing connections: each client gets 503 with Retry-After and a
    body naming both backends' errors; once both breakers are open nobody waits on a backend,
    and nothing piles up (in-flight back to 0)."""
    config = drill_config(sim.url, None)
    config["backends"]["backup"] = {
        "type": "openai",
        "base_url": f"http://127.0.0.1:{refused_port}/v1",
        "model": "m",
        "timeouts": {"connect_s": 0.5, "first_token_s": 1, "idle_s": 1, "total_s": 2},
    }
    config["routes"] = {ROUTE: ["gemini", "backup"]}
    config["breaker"] = {"failures": 3, "cooldown_s": 30}
    gw = start_gateway(config)
    sim.sim.set_fault("error-503")
    load = await steady_load(gw.url, seconds=3, concurrency=16)
    assert load.errors == len(load.statuses) > 100
    assert set(load.statuses) == {503}
    for body in load.bodies:
        assert body["error"]["code"] == "all_backends_failed"
        assert [e["backend"] for e in body["standby"]["errors"]] == ["gemini", "backup"]
    assert p99(load.latencies) < 2000
    metrics = scrape(gw, "standby_in_flight_requests", "standby_requests_total")
    assert not metrics["standby_in_flight_requests"]  # all zero
    drill_report(
        drill="every backend down",
        tried="primary 503 + backup refused, 16 clients, 3 s",
        **load.figures(),
        metrics=metrics,
        primary_calls=sim.sim.requests,
    )


async def test_slow_fallback_under_load_sheds_with_busy(
    sim: RunningSim, tiny_model_dir: Path, start_gateway: StartGateway, drill_report: Record
) -> None:
    """The primary is down and the local fallback takes one request at a time with a queue of
    two: 24 clients get either an answer or a quick 503 naming the busy fallback; the queue
    never grows past its bound."""
    config = drill_config(sim.url, tiny_model_dir)
    gemma = config["backends"]["gemma"]
    gemma.update(max_queue=2, max_batch_size=1, max_new_tokens=64)
    config["breaker"] = {"failures": 3, "cooldown_s": 30}
    gw = start_gateway(config)
    sim.sim.set_fault("error-503")
    load = await steady_load(gw.url, seconds=4, concurrency=24)
    ok = [s for s in load.statuses if s == 200]
    assert ok and load.errors > 0
    assert set(load.statuses) <= {200, 503}
    for body in load.bodies:
        reasons = [e["reason"] for e in body["standby"]["errors"]]
        assert reasons[-1] == "busy", body
    refused = [lat for lat, s in zip(load.latencies, load.statuses, strict=True) if s == 503]
    assert p99(refused) < 3000  # no wait for the fallback: busy at once (CPU shared)
    metrics = scrape(gw, "standby_upstream_errors_total", "standby_requests_total")
    drill_report(
        drill="fallback slow under load",
        tried="primary down, fallback 1 at a time + queue 2, 24 clients, 4 s",
        **load.figures(),
        p99_refused_ms=p99(refused),
        metrics=metrics,
    )


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        time.sleep(0.05)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def capture_counts(gw: GatewayServer) -> dict[str, float]:
    values = scrape(gw, "standby_capture_events_total")["standby_capture_events_total"]
    return {k.split('"')[1]: v for k, v in values.items()}


async def wait_captured(gw: GatewayServer, answered: int, seconds: float = 10) -> dict[str, float]:
    deadline = time.monotonic() + seconds
    counts = capture_counts(gw)
    while time.monotonic() < deadline:
        counts = capture_counts(gw)
        if counts.get("written", 0) + counts.get("dropped", 0) >= answered:
            break
        await asyncio.sleep(0.2)
    return counts


async def test_redis_bus_restarted_during_load(
    sim: RunningSim, start_gateway: StartGateway, drill_report: Record
) -> None:
    """Capture to Redis; Redis is killed and restarted on its port while clients send. No
    client request fails; every answer is written or counted as dropped."""
    port = free_port()
    config = drill_config(sim.url, None)
    config["capture"] = {
        "enabled": True,
        "bus": f"redis://127.0.0.1:{port}/0",
        "flush_interval_s": 0.1,
    }
    with redis_server(port) as first:
        gw = start_gateway(config)
        traffic = asyncio.create_task(steady_load(gw.url, seconds=5))
        await asyncio.sleep(1.5)
        first.kill()
        first.wait(10)
        await asyncio.sleep(1.0)
        with redis_server(port):
            load = await traffic
            counts = await wait_captured(gw, len(load.statuses))
            async with open_bus(f"redis://127.0.0.1:{port}/0") as bus:
                after_restart = len(
                    await bus.consume("inference.completed", "audit", "a", count=100_000)
                )
    assert load.errors == 0, load.bodies[:3]
    assert counts.get("written", 0) + counts.get("dropped", 0) == len(load.statuses)
    assert after_restart > 0  # the writer reconnected and wrote to the new server
    drill_report(
        drill="Redis bus restarted during load",
        tried="redis-server SIGKILLed, down 1 s, restarted empty; 6 clients, 5 s",
        **load.figures(),
        capture=counts,
        stored_after_restart=after_restart,
    )


def files_bytes(db: Path) -> int:
    """The database with its -wal and -shm files."""
    return sum(f.stat().st_size for f in db.parent.glob(f"{db.name}*"))


async def test_sqlite_bus_full(
    sim: RunningSim, start_gateway: StartGateway, drill_report: Record, tmp_path: Path
) -> None:
    """The SQLite bus file is capped (``?max_bytes=``) so it fills up under load: clients see
    no error; every answer is written or counted as dropped."""
    db = tmp_path / "events.db"
    config = drill_config(sim.url, None)
    config["capture"] = {
        "enabled": True,
        "bus": f"sqlite:///{db}?max_bytes=262144",
        "flush_interval_s": 0.1,
    }
    gw = start_gateway(config)
    load = await steady_load(gw.url, seconds=4)
    counts = await wait_captured(gw, len(load.statuses))
    assert load.errors == 0, load.bodies[:3]
    assert counts.get("dropped", 0) > 0 and counts.get("written", 0) > 0
    assert counts.get("written", 0) + counts.get("dropped", 0) == len(load.statuses)
    drill_report(
        drill="SQLite bus full",
        tried="bus file capped at 256 KiB; 6 clients, 4 s",
        **load.figures(),
        capture=counts,
        file_bytes=files_bytes(db),
    )
