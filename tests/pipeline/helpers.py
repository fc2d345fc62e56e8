"""What the pipeline tests share: a pipeline.yaml for the tiny Gemma and the simulated judge,
``standby pipeline`` in a subprocess, and a gateway that captures and follows the registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from standby.sim.demo_flywheel import pipeline_config
from tests.fixtures.gateway import ROUTE, base_config


def pipeline_yaml(tmp: Path, bus: str, model: Path, judge_url: str, **overrides: Any) -> Path:
    """The demo's quick settings (8 training steps, short answers, one judgement per answer)
    on ``bus``, polling fast, with ``overrides`` merged in one level deep.

    The simulated judge scores for real (chrF against the reference) and 8 steps teach the tiny
    model nothing, so the gate's thresholds are at their minimum here: these tests prove the
    pipeline's mechanics; the demo's test proves the gate deciding on merit."""
    config = pipeline_config(tmp, model, judge_url, train_steps=8).model_dump(mode="json")
    config.update(bus=bus, poll_s=0.2, lease_ttl_s=2)
    config["evaluate"].update(avg_similarity_threshold=1, avg_precision_threshold=1)
    config["evaluate"]["service_llm_api_key"] = "sim-key"
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def standby_models(registry: str, *args: str) -> str:
    """``standby models ARGS --registry REGISTRY`` in a subprocess; its stdout."""
    run = subprocess.run(
        standby_args("models", *args, "--registry", registry),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def standby_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "standby.cli", *args]


def env() -> dict[str, str]:
    return {**os.environ, "STANDBY_LOG_LEVEL": "info"}


def pipeline(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        standby_args("pipeline", *args), capture_output=True, text=True, timeout=timeout, env=env()
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def capturing_gateway_config(gemini_url: str, model: Path, bus: str) -> dict[str, Any]:
    """Simulated Gemini primary that captures to ``bus``; the tiny Gemma fallback follows the
    registry beside it."""
    config = base_config(gemini_url, model)
    config["capture"] = {"enabled": True, "bus": bus, "flush_interval_s": 0.05}
    config["registry"] = {"follow": ["gemma"], "poll_s": 0.1}
    return config


QUESTIONS = [
    f"What is fact number {i} about {topic}?"
    for i in range(12)
    for topic in ("rivers", "mountains", "cities")
]
ROUTE_NAME = ROUTE
