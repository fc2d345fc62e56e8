"""The example settings file is valid and shows every setting; the accelerate config loads."""

from __future__ import annotations

from pathlib import Path

import yaml
from accelerate.commands.config.config_args import load_config_from_file

from standby.trainer.config import TrainConfig

CONFIG = Path(__file__).parents[2] / "config"


def test_the_example_uses_every_key_with_the_defaults() -> None:
    raw = yaml.safe_load((CONFIG / "train.yaml").read_text())
    assert set(raw) == set(TrainConfig.model_fields)
    assert TrainConfig.model_validate(raw) == TrainConfig()


def test_the_accelerate_config_is_multi_gpu() -> None:
    cluster = load_config_from_file(str(CONFIG / "accelerate" / "multi_gpu.yaml"))
    assert cluster.distributed_type == "MULTI_GPU"
    assert (cluster.num_processes, cluster.mixed_precision) == (2, "bf16")
