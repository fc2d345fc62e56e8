"""A training time budget ends the run early with a saved, usable adapter, and the card says so."""

from __future__ import annotations

import json
from pathlib import Path

from standby.trainer.config import TrainConfig
from standby.trainer.train import train
from tests.trainer.conftest import tiny_settings


def test_a_spent_time_budget_stops_training_and_saves(
    tiny_model_dir: Path, chat_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    settings = tiny_settings(tiny_model_dir, chat_dataset, out, max_steps=100_000, max_time_s=1.0)
    cfg = TrainConfig.model_validate({**settings, "eval_ds_split": None})
    result = train(cfg)
    card = json.loads((result.adapter_dir / "standby-model.json").read_text())
    assert card["time_budget"] == {"seconds": 1.0, "hit": True}
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert card["hyperparameters"]["max_steps"] == 100_000
    assert 0 < card["training"]["global_step"] < 100_000
