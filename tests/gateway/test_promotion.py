"""Promotion reaches a running gateway: ``standby models register/promote/rollback`` (the real
CLI, in subprocesses) change the registry beside the bus, the gateway following it hot-swaps
its local fallback's adapter while clients keep sending requests through the openai SDK, and not
one request fails. The metrics name the version serving and its judge scores."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai

from standby.sim.tiny_model import build_tiny_lora_adapter
from tests.fixtures.gateway import ROUTE, GatewayServer, StartGateway, base_config
from tests.pipeline.helpers import standby_models


def serving(gw: GatewayServer) -> str | None:
    assert gw.gateway is not None and gw.gateway.follower is not None
    return gw.gateway.follower.serving.get("gemma")


def wait_for(gw: GatewayServer, version: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while serving(gw) != version:
        assert time.monotonic() < deadline, f"gateway still serves {serving(gw)}, not {version}"
        time.sleep(0.05)


def test_promotions_and_a_rollback_under_load_fail_no_request(
    tiny_model_dir: Path,
    tiny_adapter_dir: Path,
    tmp_path: Path,
    start_gateway: StartGateway,
) -> None:
    second = build_tiny_lora_adapter(tiny_model_dir, tmp_path / "lora-2", seed=2)
    registry = f"sqlite:///{tmp_path / 'events.db'}"
    config = base_config("http://127.0.0.1:1", tiny_model_dir)  # only the fallback answers
    gw = start_gateway(
        config,
        routes={ROUTE: ["gemma"]},
        registry={"follow": ["gemma"], "url": registry, "poll_s": 0.1},
    )
    assert serving(gw) is None  # nothing promoted yet: the configured base model serves

    errors: list[BaseException] = []
    answered: list[str] = []
    stop = threading.Event()

    def client(stream: bool) -> None:
        sdk = gw.client()
        while not stop.is_set():
            try:
                if stream:
                    chunks = sdk.chat.completions.create(
                        model=ROUTE,
                        messages=[{"role": "user", "content": "hello"}],
                        max_tokens=8,
                        stream=True,
                    )
                    answered.append(
                        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                    )
                else:
                    done = sdk.chat.completions.create(
                        model=ROUTE, messages=[{"role": "user", "content": "hello"}], max_tokens=8
                    )
                    answered.append(done.choices[0].message.content or "")
            except (openai.OpenAIError, httpx.HTTPError) as e:
                errors.append(e)

    threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        standby_models(registry, "register", "--version", "v1", "--adapter", str(tiny_adapter_dir))
        standby_models(registry, "register", "--version", "v2", "--adapter", str(second))
        assert "gemma now serves v1" in standby_models(registry, "promote", "v1")
        wait_for(gw, "v1")
        time.sleep(0.5)
        assert "gemma now serves v2 (was v1)" in standby_models(registry, "promote", "v2")
        wait_for(gw, "v2")
        time.sleep(0.5)
        out = standby_models(registry, "rollback", "--reason", "online score below the gate")
        assert "gemma serves v1 again; v2 rejected" in out
        wait_for(gw, "v1")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    assert len(answered) > 20

    listing = standby_models(registry, "list")
    assert [line.split()[:3] for line in listing.splitlines()[1:]] == [
        ["v1", "gemma", "serving"],
        ["v2", "gemma", "rejected"],
    ]
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert f'standby_fallback_model_info{{base_model="{tiny_model_dir}",version="v1"}} 1.0' in (
        metrics
    )
    assert 'version="v2"' not in metrics
