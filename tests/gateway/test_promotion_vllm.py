"""Promotion reaches a gateway whose fallback is vLLM (the simulated one, standby.sim.vllm):
``standby models register/promote/rollback`` (the real CLI, in subprocesses) change the registry,
the gateway loads the version's adapter through vLLM's ``/v1/load_lora_adapter`` and switches
the backend's model name, while clients keep sending requests (whole and streamed) through the
openai SDK. Not one request fails, answers come from the new adapter, the replaced adapter is
unloaded once nothing uses it, and an adapter vLLM cannot load never goes into service."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from standby.config import RegistryConfig, parse_settings
from standby.sim.vllm import answer_for
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway
from tests.fixtures.vllm_sim import RunningVLLM, StartVLLM
from tests.pipeline.helpers import standby_models

VOLUME = "/pipeline-runs"  # where the registry says adapters are; the test maps it to tmp_path


def adapter(root: Path, name: str) -> str:
    """A LoRA adapter folder as vLLM checks it (adapter_config.json); returns its registered
    path, under VOLUME."""
    folder = root / name / "adapter"
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": "all-linear"}
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    return f"{VOLUME}/{name}/adapter"


def config(vllm: RunningVLLM, registry: str, runs: Path) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "api_keys": []},
        "backends": {
            "gemma": {
                "type": "openai",
                "base_url": vllm.base_url,
                "model": "standby",
                "timeouts": {"connect_s": 1, "first_token_s": 2, "idle_s": 2, "total_s": 2},
            }
        },
        "routes": {ROUTE: ["gemma"]},
        "capture": {"enabled": False},
        "registry": {
            "follow": ["gemma"],
            "url": registry,
            "poll_s": 0.1,
            "adapter_paths": {VOLUME: str(runs)},
        },
    }


def serving(gw: GatewayServer) -> str | None:
    assert gw.gateway is not None and gw.gateway.follower is not None
    return gw.gateway.follower.serving.get("gemma")


def wait_until(what: str, ok: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Load:
    """Four SDK clients (two streaming) sending requests until stopped; every answer is kept
    with the phase it was sent in."""

    def __init__(self, gw: GatewayServer) -> None:
        self.gw = gw
        self.phase = "start"
        self.answers: list[tuple[str, str]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i % 2 == 0,)) for i in range(4)
        ]

    def _client(self, stream: bool) -> None:
        sdk = self.gw.client()
        messages: Any = [{"role": "user", "content": "hello"}]
        while not self._stop.is_set():
            phase = self.phase
            try:
                if stream:
                    chunks = sdk.chat.completions.create(
                        model=ROUTE, messages=messages, stream=True
                    )
                    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                else:
                    done = sdk.chat.completions.create(model=ROUTE, messages=messages)
                    text = done.choices[0].message.content or ""
                self.answers.append((phase, text))
            except (openai.OpenAIError, httpx.HTTPError) as e:
                self.errors.append(e)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def served_in(self, phase: str) -> set[str]:
        return {text for p, text in self.answers if p == phase}


def test_promote_rollback_and_a_bad_adapter_on_vllm_under_load_fail_no_request(
    tmp_path: Path, start_vllm: StartVLLM, start_gateway: StartGateway
) -> None:
    runs = tmp_path / "runs"
    base = adapter(runs, "base").replace(VOLUME, str(runs))
    vllm = start_vllm(latency_s=0.01, loras={"standby": base})
    registry = f"sqlite:///{tmp_path / 'events.db'}"
    gw = start_gateway(config(vllm, registry, runs))
    assert serving(gw) is None  # nothing promoted yet: the configured module `standby` serves

    with Load(gw) as load:
        time.sleep(0.5)
        standby_models(registry, "register", "--version", "v1", "--adapter", adapter(runs, "v1"))
        standby_models(registry, "register", "--version", "v2", "--adapter", adapter(runs, "v2"))

        load.phase = "switching"
        assert "gemma now serves v1" in standby_models(registry, "promote", "v1")
        wait_until("v1", lambda: serving(gw) == "v1")
        load.phase = "v1"
        time.sleep(0.5)

        load.phase = "switching"
        assert "gemma now serves v2 (was v1)" in standby_models(registry, "promote", "v2")
        wait_until("v2", lambda: serving(gw) == "v2")
        load.phase = "v2"
        # v1 is unloaded only after the backend's total_s (2) + poll_s + 1: no request left on it
        wait_until("v1 unloaded", lambda: ("v1", 200) in vllm.calls("unload"), timeout=10)
        assert "v1" not in vllm.sim.loras

        load.phase = "switching"
        out = standby_models(registry, "rollback", "--reason", "online score below the gate")
        assert "gemma serves v1 again; v2 rejected" in out
        wait_until("v1 again", lambda: serving(gw) == "v1")
        load.phase = "v1 again"
        time.sleep(0.5)

        # An adapter vLLM cannot load (nothing at that path) never goes into service.
        standby_models(
            registry, "register", "--version", "v3", "--adapter", f"{VOLUME}/missing/adapter"
        )
        load.phase = "switching"
        assert "gemma now serves v3 (was v1)" in standby_models(registry, "promote", "v3")
        wait_until("v3 refused", lambda: ("v3", 404) in vllm.calls("load"))
        load.phase = "v3 refused"
        time.sleep(0.5)
        assert serving(gw) == "v1"
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert 'standby_backend_ready{backend="gemma"} 1.0' in metrics
        assert 'standby_fallback_model_info{base_model="standby",version="v1"} 1.0' in metrics
        assert 'version="v3"' not in metrics

        assert "gemma serves v1 again; v3 rejected" in standby_models(registry, "rollback")
        time.sleep(0.3)

    assert load.errors == []
    assert len(load.answers) > 40
    assert load.served_in("start") == {answer_for("standby")}
    assert load.served_in("v1") == {answer_for("v1")}
    assert load.served_in("v2") == {answer_for("v2")}
    assert load.served_in("v1 again") == {answer_for("v1")}
    assert load.served_in("v3 refused") == {answer_for("v1")}
    assert vllm.calls("load") == [("v1", 200), ("v2", 200), ("v1", 200), ("v3", 404)]
    assert vllm.sim.calls[0][1] == {"lora_name": "v1", "lora_path": f"{runs}/v1/adapter"}
    assert "v3" not in vllm.sim.loras
    assert serving(gw) == "v1"


def test_gateway_replicas_load_idempotently_and_reload_an_adapter_the_server_lost(
    tmp_path: Path, start_vllm: StartVLLM, start_gateway: StartGateway
) -> None:
    runs = tmp_path / "runs"
    vllm = start_vllm(loras={"standby": adapter(runs, "base").replace(VOLUME, str(runs))})
    registry = f"sqlite:///{tmp_path / 'events.db'}"
    replicas = [start_gateway(config(vllm, registry, runs)) for _ in range(2)]
    standby_models(registry, "register", "--version", "v1", "--adapter", adapter(runs, "v1"))
    standby_models(registry, "promote", "v1")
    wait_until("v1 on every replica", lambda: all(serving(gw) == "v1" for gw in replicas))
    # The first replica loads it, the second finds it already loaded: both serve it.
    assert sorted(vllm.calls("load")) == [("v1", 200), ("v1", 400)]
    for gw in replicas:
        done = gw.client().chat.completions.create(
            model=ROUTE, messages=[{"role": "user", "content": "hi"}]
        )
        assert done.choices[0].message.content == answer_for("v1")

    # vLLM restarted: runtime-loaded adapters are gone until a replica loads v1 again.
    vllm.sim.loras.pop("v1")
    wait_until("v1 reloaded", lambda: "v1" in vllm.sim.loras)
    done = (
        replicas[0]
        .client()
        .chat.completions.create(model=ROUTE, messages=[{"role": "user", "content": "hi"}])
    )
    assert done.choices[0].message.content == answer_for("v1")


def test_registry_follow_accepts_openai_backends_and_maps_adapter_paths() -> None:
    backends = {
        "vllm": {"type": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "standby"},
        "tgi": {"type": "tgi", "base_url": "http://127.0.0.1:8081"},
    }
    routes = {"r": ["vllm", "tgi"]}
    parse_settings({"backends": backends, "routes": routes, "registry": {"follow": ["vllm"]}}, "t")
    with pytest.raises(Exception, match=r"'tgi' is not a local or openai backend.*restart"):
        parse_settings(
            {"backends": backends, "routes": routes, "registry": {"follow": ["tgi"]}}, "t"
        )

    paths = RegistryConfig(adapter_paths={"/data": "/adapters", "/data/runs/": "/runs"})
    assert paths.served_path("/data/runs/r1/adapter") == "/runs/r1/adapter"  # longest prefix
    assert paths.served_path("/data/x") == "/adapters/x"
    assert paths.served_path("/database/x") == "/database/x"  # a prefix is whole folders
    assert paths.served_path("org/adapter") == "org/adapter"  # a Hub id is sent as is
