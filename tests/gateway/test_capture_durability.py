"""Durability of capture under a real `standby serve` process: SIGTERM during load loses no
answered request; SIGKILL leaves a database that opens cleanly and loses at most the flush
window."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from standby.events import open_bus
from standby.sim.background import free_port
from tests.fixtures.gateway import ROUTE, base_config
from tests.fixtures.sim import RunningSim

FLUSH_S = 0.2
BODY = {"model": ROUTE, "messages": [{"role": "user", "content": "durable?"}]}


def serve(sim_url: str, db: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = base_config(sim_url, None)
    config["server"]["port"] = port
    config["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": FLUSH_S}
    path = tmp_path / f"standby-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "standby.cli", "--log-level", "warning", "serve", "--config",
         str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("standby serve did not start")


async def load(url: str, seconds: float, concurrency: int = 16) -> list[float]:
    """Send requests for ``seconds`` (or until the server is gone); the times of the answers."""
    answered: list[float] = []
    stop = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            try:
                r = await client.post(f"{url}/v1/chat/completions", json=BODY)
            except httpx.TransportError:
                return  # the server is shutting down or gone
            if r.status_code == 200 and r.json()["choices"][0]["message"]["content"]:
                answered.append(time.monotonic())

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return answered


async def count_events(db: Path) -> int:
    async with open_bus(f"sqlite:///{db}") as bus:
        return len(await bus.consume("inference.completed", "audit", "a", count=100_000))


@pytest.mark.timeout(180)
async def test_sigterm_during_load_loses_no_answered_request(
    sim: RunningSim, tmp_path: Path
) -> None:
    db = tmp_path / "events.db"
    proc, url = serve(sim.url, db, tmp_path)
    traffic = asyncio.create_task(load(url, seconds=30))
    await asyncio.sleep(2)
    proc.send_signal(signal.SIGTERM)
    answered = await traffic
    assert await asyncio.to_thread(proc.wait, 60) == 0
    assert len(answered) > 50
    assert await count_events(db) == len(answered)


@pytest.mark.timeout(180)
async def test_sigkill_loses_at_most_the_flush_window(sim: RunningSim, tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    proc, url = serve(sim.url, db, tmp_path)
    settled = await load(url, seconds=2)
    await asyncio.sleep(FLUSH_S * 5)  # longer than the flush window: all of it is on disk
    traffic = asyncio.create_task(load(url, seconds=30))
    await asyncio.sleep(2)
    killed_at = time.monotonic()
    proc.kill()
    answered = [*settled, *await traffic]
    proc.wait(30)

    stored = await count_events(db)  # the file opens and reads cleanly after SIGKILL
    lost = len(answered) - stored
    in_last_window = sum(1 for t in answered if t > killed_at - FLUSH_S - 0.3)
    assert 0 <= lost <= in_last_window
    assert stored >= len(settled)
