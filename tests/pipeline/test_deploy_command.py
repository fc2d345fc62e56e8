"""``standby models deploy-command VERSION``: the command that serves a registered version on a
server the gateway cannot switch itself. For TGI (adapters load only at start) a restart with the
adapter mounted; for vLLM the runtime load, run here for real against the simulated vLLM."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from tests.fixtures.vllm_sim import StartVLLM


def models(registry: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [sys.executable, "-m", "standby.cli", "models", *args, "--registry", registry],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (run.returncode == 0) is ok, run.stderr
    return run


def shell_ok(script: str) -> None:
    """The printed text is valid shell (parsed, not run)."""
    subprocess.run(["bash", "-n", "-c", script], check=True)


def words(script: str) -> list[str]:
    lines = [line for line in script.splitlines() if not line.startswith("#")]
    return shlex.split(" ".join(lines).replace("\\ ", " "))


def test_tgi_restart_commands_mount_the_version_and_keep_the_adapter_name(tmp_path: Path) -> None:
    registry = f"sqlite:///{tmp_path / 'events.db'}"
    models(
        registry,
        "register",
        "--version",
        "v7",
        "--adapter",
        "/data/runs/r 7/adapter",
        "--base-model",
        "google/gemma-3-4b-it",
    )

    docker = models(registry, "deploy-command", "v7", "--server", "tgi").stdout
    shell_ok(docker)
    argv = words(docker)
    run = argv[argv.index("run") :]
    assert run[run.index("-v", run.index("standby-hf-cache:/data")) + 1] == (
        "/data/runs/r 7/adapter:/adapters/v7:ro"
    )
    image = run.index("ghcr.io/huggingface/text-generation-inference:3.3.6")
    assert run[image + 1 :] == [
        "--model-id",
        "google/gemma-3-4b-it",
        "--lora-adapters",
        "standby=/adapters/v7",
    ]

    compose = models(
        registry,
        "deploy-command",
        "v7",
        "--server",
        "tgi",
        "--compose",
        "--adapter-path",
        "/data=/adapters",
    )
    shell_ok(compose.stdout)
    argv = words(compose.stdout)
    assert argv[argv.index("ln") :][:4] == [
        "ln",
        "-sfn",
        "/adapters/runs/r 7/adapter",
        "/adapters/current",
    ]
    assert argv[-2:] == ["restart", "tgi"]

    models(registry, "register", "--version", "hub", "--adapter", "org/adapter")
    refused = models(registry, "deploy-command", "hub", "--server", "tgi", ok=False)
    assert "not a folder path" in refused.stderr


def test_vllm_load_command_loads_the_adapter_into_the_server(
    tmp_path: Path, start_vllm: StartVLLM
) -> None:
    folder = tmp_path / "runs" / "r1" / "adapter"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    registry = f"sqlite:///{tmp_path / 'events.db'}"
    models(registry, "register", "--version", "v1", "--adapter", "/pipeline/runs/r1/adapter")
    vllm = start_vllm()

    script = models(
        registry,
        "deploy-command",
        "v1",
        "--server",
        "vllm",
        "--url",
        vllm.url,
        "--adapter-path",
        f"/pipeline={tmp_path}",
    ).stdout
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "added successfully" in done.stdout
    assert vllm.sim.loras["v1"].path == str(folder)
