"""Data-parallel training in two processes (torchrun on CPU, gloo, the way ``accelerate
launch`` runs it on GPUs): both train, one writes the adapter and publishes one event."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from standby.store import open_bus
from tests.trainer.conftest import flags, tiny_settings


def test_two_processes_train_one_adapter(
    tiny_model_dir: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    bus = f"sqlite:///{tmp_path / 'events.db'}"
    settings = tiny_settings(
        tiny_model_dir,
        chat_dataset,
        tmp_path / "adapter",
        max_steps=4,
        per_device_train_batch_size=4,
        publish_event=True,
        bus=bus,
    )
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "standby.cli",
        "--log-level",
        "warning",
        "train",
        *flags(settings),
        "--json",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads(done.stdout)  # one process printed it
    training = card["training"]
    assert (training["world_size"], training["global_step"]) == (2, 4)
    assert card["metrics"]["loss_curve"][0][0] == 1
    # 4 steps x 2 processes x 4 rows: 32 of the 48 rows seen.
    assert abs(training["epochs"] - 32 / 48) < 1e-6
    assert json.loads((tmp_path / "adapter" / "standby-model.json").read_text()) == card

    async def events() -> list[Any]:
        async with open_bus(bus) as b:
            return await b.consume("training.completed", "test", "reader")

    (delivery,) = asyncio.run(events())
    assert delivery.event.data["version"] == card["version"]
