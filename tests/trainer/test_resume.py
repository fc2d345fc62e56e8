"""A ``standby train`` process killed after its first checkpoint (SIGKILL: nothing gets to
clean up) continues from that checkpoint with ``--resume`` instead of starting again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from standby.trainer.config import TrainConfig
from standby.trainer.train import last_checkpoint
from tests.trainer.conftest import flags, tiny_settings

STEPS = 60


def command(settings: dict[str, object], *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "standby.cli", "--log-level", "warning", "train"]
    return [*argv, *flags(settings), *extra]


def test_a_killed_run_resumes_from_its_last_checkpoint(
    tiny_model_dir: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    settings = tiny_settings(
        tiny_model_dir,
        chat_dataset,
        tmp_path / "adapter",
        max_steps=STEPS,
        save_steps=5,
        eval_ds_split="",
    )
    cfg = TrainConfig.model_validate(settings)
    log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(command(settings), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    try:
        while last_checkpoint(cfg) is None and first.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.02)
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait(10)
        log.close()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()
    checkpoint = last_checkpoint(cfg)
    assert checkpoint is not None
    killed_at = int(checkpoint.name.removeprefix("checkpoint-"))
    assert 5 <= killed_at < STEPS
    assert not (tmp_path / "adapter" / "standby-model.json").exists()
    before = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]

    resumed = subprocess.run(
        command(settings, "--resume", "--json"), capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    card = json.loads(resumed.stdout)
    assert card["training"]["resumed_from_step"] == killed_at
    assert card["training"]["global_step"] == STEPS
    curve = card["metrics"]["loss_curve"]
    # The losses logged before the kill are carried over as they were, then training went on.
    assert curve[: len(before)] == [[h["step"], h["loss"]] for h in before]
    assert [s for s, _ in curve] == [1, *range(5, STEPS + 1, 5)]
    assert not cfg.checkpoint_dir.exists()
