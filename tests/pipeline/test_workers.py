"""Pipeline workers as separate processes: two workers on one Redis bus run one run between
them; a worker killed (SIGKILL) during training or during judging leaves the run where it was,
and the next worker resumes it at that stage and finishes it once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from standby.data.materializer import TOPIC
from standby.pipeline.controller import HISTORY_KEY, RUN_KEY
from standby.store import ChatMessage, open_bus, open_state
from standby.store.registry import Registry
from tests.fixtures.gateway import ROUTE, StartGateway
from tests.fixtures.sim import RunningSim
from tests.pipeline.helpers import (
    QUESTIONS,
    capturing_gateway_config,
    env,
    pipeline_yaml,
    standby_args,
)
from tests.store.conftest import Backend, inference_event


async def _capture(bus: str, n: int) -> None:
    """``n`` answered requests of the simulated primary, as the gateway captures them."""
    events = [
        inference_event(
            i,
            response=f"The answer to question {i} is {i * 7}.",
            messages=[ChatMessage(role="user", content=f"What is {i} x 7?")],
        )
        for i in range(n)
    ]
    async with open_bus(bus) as b:
        await b.publish_many(TOPIC, events)


async def _read(bus: str, key: str) -> Any:
    async with open_state(bus) as state:
        return await state.get(key)


async def _versions(bus: str) -> list[str]:
    async with open_state(bus) as state:
        return [v.version for v in await Registry(state).versions()]


async def _events(bus: str, topic: str) -> int:
    async with open_bus(bus) as b:
        return len(await b.consume(topic, "test-count", "t", count=100))


class Workers:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.procs: list[subprocess.Popen[str]] = []

    def start(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            standby_args("pipeline", "run", "--from-config", str(self.config)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


@pytest.fixture
def workers() -> Iterator[Callable[[Path], Workers]]:
    made: list[Workers] = []

    def make(config: Path) -> Workers:
        made.append(Workers(config))
        return made[-1]

    yield make
    for w in made:
        w.stop()


def wait_until(check: Callable[[], Any], what: str, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return got


def finished(bus: str) -> Callable[[], Any]:
    def check() -> Any:
        run = asyncio.run(_read(bus, RUN_KEY))
        return run if run and run["status"] != "running" else None

    return check


def test_the_loop_on_redis_with_two_workers_runs_once_and_the_gateway_serves_it(
    sim: RunningSim,
    tiny_model_dir: Path,
    tmp_path: Path,
    redis_backend: Backend,
    workers: Callable[[Path], Workers],
    start_gateway: StartGateway,
) -> None:
    """Capture through a real gateway to the Redis bus, two workers, one run, and the gateway
    (following the registry on Redis) serving the promoted version."""
    bus = redis_backend.url()
    gw = start_gateway(capturing_gateway_config(sim.url, tiny_model_dir, bus))
    client = gw.client()
    for q in QUESTIONS:
        client.chat.completions.create(model=ROUTE, messages=[{"role": "user", "content": q}])
    config = pipeline_yaml(tmp_path, bus, tiny_model_dir, sim.url, min_interval_s=3600)
    pool = workers(config)
    pool.start()
    pool.start()
    run = wait_until(finished(bus), "the run to finish")
    assert run["status"] == "done" and run["decision"] == "promoted", run
    version = run["stages"]["promote"]["result"]["version"]
    assert gw.gateway is not None and gw.gateway.follower is not None
    follower = gw.gateway.follower
    wait_until(lambda: follower.serving.get("gemma") == version, "the gateway to swap", 30)
    time.sleep(1.5)  # both workers poll several times more: neither starts a second run
    history = asyncio.run(_read(bus, HISTORY_KEY))
    assert [h["id"] for h in history] == [run["id"]]
    assert asyncio.run(_versions(bus)) == [run["id"]]
    assert asyncio.run(_events(bus, "model.promoted")) == 1
    hello = [{"role": "user", "content": "hello"}]
    answer = client.chat.completions.create(model=ROUTE, messages=hello)  # type: ignore[arg-type]
    assert answer.choices[0].message.content


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_killed_worker_resumes_the_run_at_its_stage(
    stage: str,
    sim: RunningSim,
    tiny_model_dir: Path,
    tmp_path: Path,
    workers: Callable[[Path], Workers],
) -> None:
    bus = f"sqlite:///{tmp_path / 'events.db'}"
    asyncio.run(_capture(bus, 30))
    slow = {
        "train": {"max_steps": 60, "save_steps": 2},  # several seconds of training
        "evaluate": {"rate_limit_per_minute": 300},
    }  # 5 judge calls a second
    config = pipeline_yaml(tmp_path, bus, tiny_model_dir, sim.url, **{stage: slow[stage]})
    pool = workers(config)
    first = pool.start()

    def in_stage() -> bool:
        run = asyncio.run(_read(bus, RUN_KEY))
        if not run or run["stage"] != stage:
            return False
        if stage == "train":  # a checkpoint to resume from
            return any((tmp_path / "pipeline" / "runs").glob("*/adapter/checkpoints/checkpoint-*"))
        return sim.sim.stats()["requests"] >= 2  # some judgements made

    wait_until(in_stage, f"the worker to be in {stage}")
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = asyncio.run(_read(bus, RUN_KEY))
    assert killed_at["status"] == "running" and killed_at["stage"] == stage

    pool.start()
    run = wait_until(finished(bus), "the resumed run to finish")
    assert run["id"] == killed_at["id"] and run["attempts"] == 2
    assert run["status"] == "done" and run["decision"] == "promoted", run
    assert asyncio.run(_versions(bus)) == [run["id"]]
    assert asyncio.run(_events(bus, "training.completed")) == 1
    assert asyncio.run(_events(bus, "model.promoted")) == 1
    if stage == "train":
        resumed = run["stages"]["train"]["result"]
        assert resumed["adapter"].endswith("adapter")
