"""/metrics over HTTP: the breaker gauge computed at scrape time, the time-to-first-token histogram
and the serving model's info and scores (the metric names of docs/runbook.md). What each request
adds (attribution to the backend that answered, fallbacks, outcomes) is checked in-process in
test_accounting.py and test_failover_table.py."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.fixtures.sim import RunningSim

HELLO = [{"role": "user", "content": "count me"}]
# peft 0.21 on transformers 5 warns while loading an adapter.


def scrape(gw: GatewayServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{gw.url}/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_breaker_gauge_and_ttft(
    sim: RunningSim, tiny_model_dir: Path, start_gateway: StartGateway
) -> None:
    gw = start_gateway(base_config(sim.url, tiny_model_dir), breaker={"failures": 1})
    list(gw.client().chat.completions.create(model=ROUTE, messages=HELLO, stream=True))
    m = scrape(gw)
    assert value(m, "standby_time_to_first_token_seconds_count", route=ROUTE, backend="gemini") == 1
    assert value(m, "standby_breaker_state", backend="gemini") == 0
    sim.sim.set_fault("error-503")
    gw.client().chat.completions.create(model=ROUTE, messages=HELLO)
    assert value(scrape(gw), "standby_breaker_state", backend="gemini") == 2
    time.sleep(1.2)  # the 1 s cool-down ends with no request: the gauge must show it
    assert value(scrape(gw), "standby_breaker_state", backend="gemini") == 1
    assert (
        value(
            scrape(gw),
            "standby_fallback_model_info",
            version=str(tiny_model_dir),
            base_model=str(tiny_model_dir),
        )
        == 1
    )


def test_serving_model_scores_come_from_its_model_card(
    sim: RunningSim,
    tiny_model_dir: Path,
    tiny_adapter_dir: Path,
    tmp_path: Path,
    start_gateway: StartGateway,
) -> None:
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir, adapter)
    card = {"version": "v7", "scores": {"similarity": 93.5, "precision": 88.25}}
    (adapter / "standby-model.json").write_text(json.dumps(card))
    config = base_config(sim.url, tiny_model_dir)
    config["backends"]["gemma"]["adapter"] = str(adapter)
    gw = start_gateway(config)
    m = scrape(gw)
    assert value(m, "standby_fallback_model_score", criterion="similarity") == 93.5
    assert value(m, "standby_fallback_model_score", criterion="precision") == 88.25


def test_backend_roles_come_from_each_routes_order(
    sim: RunningSim, start_gateway: StartGateway
) -> None:
    """standby_backend_role (what the alert rules' role table reads): the first backend of a
    route is its primary, the later ones its fallbacks, whatever the backends are called."""
    config = base_config(sim.url, None)
    config["backends"]["backup"] = dict(config["backends"]["gemini"])
    config["routes"] = {ROUTE: ["gemini", "backup"], "reversed": ["backup", "gemini"]}
    gw = start_gateway(config)
    text = httpx.get(f"{gw.url}/metrics").text
    roles = {
        (s.labels["route"], s.labels["backend"], s.labels["role"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "standby_backend_role"
    }
    assert roles == {
        (ROUTE, "gemini", "primary"): 1,
        (ROUTE, "backup", "fallback"): 1,
        ("reversed", "backup", "primary"): 1,
        ("reversed", "gemini", "fallback"): 1,
    }
