"""The example settings file is valid and shows every setting; the accelerate config loads."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file

from standby.trainer.config import TrainConfig
from standby.trainer.train import planned_epochs, warn_if_overfitting

CONFIG = Path(__file__).parents[2] / "config"


def test_the_example_uses_every_key_with_the_defaults() -> None:
    raw = yaml.safe_load((CONFIG / "train.yaml").read_text())
    assert set(raw) == set(TrainConfig.model_fields)
    assert TrainConfig.model_validate(raw) == TrainConfig()


def test_the_accelerate_config_is_multi_gpu() -> None:
    cluster = load_config_from_file(str(CONFIG / "accelerate" / "multi_gpu.yaml"))
    assert cluster.distributed_type == "MULTI_GPU"
    assert (cluster.num_processes, cluster.mixed_precision) == (2, "bf16")


def test_epochs_planned_from_steps_and_a_warning_past_ten(caplog: pytest.LogCaptureFixture) -> None:
    """34 rows in batches of 4 are 9 batches, 3 optimizer steps of 4 batches: 60 steps are 20
    passes over the same rows (what the Trainer reports too), said before training."""
    cfg = TrainConfig(max_steps=60, per_device_train_batch_size=4, gradient_accumulation_steps=4)
    assert planned_epochs(cfg, 34) == 20
    assert planned_epochs(cfg, 34, world_size=2) == 30  # 5 batches a device: 2 steps an epoch
    assert planned_epochs(TrainConfig(num_train_epochs=3), 34) == 3
    with caplog.at_level(logging.WARNING, logger="standby.trainer"):
        warn_if_overfitting(cfg, 34)
        warn_if_overfitting(cfg, 10_000)  # 0.1 epochs: nothing to say
    [record] = caplog.records
    assert record.getMessage().startswith("training 34 rows for 20 epochs: the adapter will")
