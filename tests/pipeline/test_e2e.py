"""The whole loop on the tiny Gemma with the simulated Gemini as primary and judge: answers are
captured through the real gateway, ``standby pipeline once`` materializes them, snapshots,
trains, answers the held-out split, judges, gates and promotes, and the running gateway then
serves the new version."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest

from standby.store import open_bus
from tests.fixtures.gateway import ROUTE, StartGateway
from tests.fixtures.sim import RunningSim
from tests.pipeline.helpers import QUESTIONS, capturing_gateway_config, pipeline, pipeline_yaml

STAGE_EVENTS = [
    "dataset.snapshot_created",
    "training.completed",
    "evaluation.completed",
    "model.promoted",
]


async def stage_events(bus: str) -> dict[str, list[dict[str, object]]]:
    """The data of every pipeline event on ``bus``, by type."""
    found: dict[str, list[dict[str, object]]] = {}
    async with open_bus(bus) as reader:
        for topic in STAGE_EVENTS:
            got = await reader.consume(topic, "test", "t", count=10)
            if got:
                found[topic] = [dict(d.event.data) for d in got]  # type: ignore[union-attr]
    return found


def test_capture_train_judge_gate_promote_and_the_gateway_serves_it(
    sim: RunningSim, tiny_model_dir: Path, tmp_path: Path, start_gateway: StartGateway
) -> None:
    bus = f"sqlite:///{tmp_path / 'events.db'}"
    gw = start_gateway(capturing_gateway_config(sim.url, tiny_model_dir, bus))
    client = gw.client()
    for q in QUESTIONS:
        client.chat.completions.create(model=ROUTE, messages=[{"role": "user", "content": q}])

    # A judge budget of 2 calls (one judgement per answer): 2 of the held-out rows are used.
    config = pipeline_yaml(tmp_path, bus, tiny_model_dir, sim.url, max_judge_calls=2)
    time.sleep(0.3)  # the capture writer flushes every 50 ms
    out = pipeline("once", "--from-config", str(config), "--json").stdout
    run = json.loads(out)
    assert run["status"] == "done", run
    assert run["decision"] == "promoted"
    assert list(run["stages"]) == [
        "snapshot",
        "train",
        "batch_infer",
        "evaluate",
        "gate",
        "promote",
    ]
    version = run["stages"]["promote"]["result"]["version"]
    snap = run["stages"]["snapshot"]["result"]
    assert sum(snap["exported"].values()) == len(QUESTIONS)
    assert snap["exported"]["test_sft"] > 2
    assert run["stages"]["batch_infer"]["result"]["rows"] == 2
    assert run["stages"]["evaluate"]["result"]["cost"]["calls"] == 2

    # The gateway follows the registry: its fallback now serves the new adapter.
    deadline = time.monotonic() + 30
    assert gw.gateway is not None and gw.gateway.follower is not None
    while gw.gateway.follower.serving.get("gemma") != version:
        assert time.monotonic() < deadline, "the gateway did not pick up the promotion"
        time.sleep(0.1)
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert f'version="{version}"' in metrics
    similarity = run["stages"]["gate"]["result"]["scores"]["similarity"]
    assert 1 <= similarity < 100  # the simulated judge's chrF of the 8-step model's answers
    served = re.search(r'standby_fallback_model_score\{criterion="similarity"\} (\S+)', metrics)
    assert served is not None and float(served[1]) == pytest.approx(similarity, abs=0.01)

    # Every stage left its event on the bus.
    events = asyncio.run(stage_events(bus))
    assert list(events) == STAGE_EVENTS
    assert events["model.promoted"][0]["version"] == version
    assert events["training.completed"][0]["version"] == version

    # Nothing new: the next pass does nothing.
    again = pipeline("once", "--from-config", str(config)).stdout
    assert "nothing to do: not due" in again
    status = pipeline("status", "--from-config", str(config)).stdout
    assert f"run {run['id']}: done at promote (promoted)" in status
