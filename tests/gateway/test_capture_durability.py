"""Durability of capture under a real `standby serve` process: SIGTERM during load loses no
answered request; SIGKILL leaves a database that opens cleanly and loses at most the flush
window."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from standby.sim.background import free_port
from standby.store import open_bus
from tests.fixtures.drill_report import Record
from tests.fixtures.gateway import ROUTE, base_config
from tests.fixtures.sim import RunningSim

FLUSH_S = 0.2
BODY = {"model": ROUTE, "messages": [{"role": "user", "content": "durable?"}]}


def serve(
    sim_url: str, db: Path, tmp_path: Path, **server: object
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = base_config(sim_url, None)
    config["server"].update(port=port, **server)
    config["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": FLUSH_S}
    path = tmp_path / f"standby-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "standby.cli",
            "--log-level",
            "warning",
            "serve",
            "--config",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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


async def group_gone(pgid: int, timeout_s: float = 30) -> None:
    """Wait until every process of the gateway's process group (its capture writer too) ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"process group {pgid} still running after {timeout_s} s")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", [1, 2], ids=["1 worker", "2 workers"])
@pytest.mark.parametrize("to", ["gateway", "process group"])
async def test_sigterm_during_load_loses_no_answered_request(
    sim: RunningSim, tmp_path: Path, to: str, workers: int
) -> None:
    """SIGTERM to the gateway (Kubernetes) or to its whole process group (Ctrl-C, ``docker
    stop`` of a shell, systemd): the capture writer ignores the signal and writes everything the
    gateway hands it while draining. With 2 workers the supervisor passes SIGTERM on to both,
    each drains its own writer, and they all write to the one bus."""
    db = tmp_path / "events.db"
    proc, url = serve(sim.url, db, tmp_path, workers=workers)
    traffic = asyncio.create_task(load(url, seconds=30))
    await asyncio.sleep(2)
    if to == "gateway":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
    answered = await traffic
    assert await asyncio.to_thread(proc.wait, 60) == 0
    await group_gone(proc.pid)
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
    await group_gone(proc.pid)  # the writer writes what it had received, then exits

    stored = await count_events(db)  # the file opens and reads cleanly after SIGKILL
    lost = len(answered) - stored
    in_last_window = sum(1 for t in answered if t > killed_at - FLUSH_S - 0.3)
    assert 0 <= lost <= in_last_window
    assert stored >= len(settled)


async def stream_answer(url: str, body: dict[str, object]) -> tuple[int, str]:
    """One request (a stream when ``body`` says so): status and the whole text received, or
    what arrived before the connection was closed."""
    received = []
    async with httpx.AsyncClient(timeout=30) as client:
        try:
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                async for chunk in r.aiter_text():
                    received.append(chunk)
                return r.status_code, "".join(received)
        except httpx.TransportError:
            return -1, "".join(received)


@pytest.mark.timeout(120)
async def test_sigterm_lets_streams_in_flight_finish(
    sim: RunningSim, tmp_path: Path, drill_report: Record
) -> None:
    """Streams of ~3 s and slow whole answers in flight at SIGTERM all complete within
    server.shutdown_grace_s; new connections are refused; every answer is captured."""
    db = tmp_path / "events.db"
    proc, url = serve(sim.url, db, tmp_path, shutdown_grace_s=15)
    sim.sim.set_fault("idle-400")  # 8 chunks, 0.4 s apart
    streams = [asyncio.create_task(stream_answer(url, {**BODY, "stream": True})) for _ in range(6)]
    wholes = [asyncio.create_task(stream_answer(url, BODY)) for _ in range(4)]
    await asyncio.sleep(0.8)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    results = await asyncio.gather(*streams, *wholes)
    assert await asyncio.to_thread(proc.wait, 60) == 0
    took = time.monotonic() - t0
    for status, text in results[:6]:
        assert status == 200 and text.rstrip().endswith("data: [DONE]"), text[-200:]
    for status, text in results[6:]:
        assert status == 200 and '"content"' in text
    assert took < 15
    assert await count_events(db) == len(results)
    drill_report(
        drill="SIGTERM with streams in flight",
        tried="6 streams of ~3 s + 4 answers in flight, shutdown_grace_s 15",
        requests=len(results),
        errors=0,
        p99_ms="",
        exit_after_s=round(took, 2),
        captured=len(results),
    )


@pytest.mark.timeout(120)
async def test_sigterm_grace_period_bounds_the_wait(
    sim: RunningSim, tmp_path: Path, drill_report: Record
) -> None:
    """With shutdown_grace_s 1 the process does not wait for a 3 s stream: it closes it after
    about a second, still drains capture and exits 0."""
    db = tmp_path / "events.db"
    proc, url = serve(sim.url, db, tmp_path, shutdown_grace_s=1)
    done = await stream_answer(url, BODY)  # one answered request to drain
    assert done[0] == 200
    sim.sim.set_fault("idle-400")
    stream = asyncio.create_task(stream_answer(url, {**BODY, "stream": True}))
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, text = await stream
    assert await asyncio.to_thread(proc.wait, 60) == 0
    took = time.monotonic() - t0
    assert 0.8 < took < 6, took
    assert "data: [DONE]" not in text  # cut off by the grace period
    assert await count_events(db) == 1
    drill_report(
        drill="SIGTERM, stream longer than the grace",
        tried="one ~3 s stream, shutdown_grace_s 1",
        requests=1,
        errors=1,
        p99_ms="",
        exit_after_s=round(took, 2),
        captured=1,
    )
