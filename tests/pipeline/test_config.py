"""config/pipeline.yaml loads, every key is a flag, and the pipeline's own per-run keys cannot
be set in a stage section."""

from __future__ import annotations

from pathlib import Path

import pytest

from standby.errors import ConfigError
from standby.pipeline.config import PipelineConfig
from standby.toolconfig import OneLineParser, add_config_flags, resolve_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "pipeline.yaml"


def resolve(*argv: str) -> PipelineConfig:
    parser = OneLineParser(prog="standby pipeline run")
    add_config_flags(parser, PipelineConfig)
    return resolve_config(PipelineConfig, parser.parse_args(list(argv)))


def test_the_example_loads_and_flags_win() -> None:
    cfg = resolve("--from-config", str(EXAMPLE), "--min-new-pairs", "5", "--no-online-check")
    assert cfg.min_new_pairs == 5 and cfg.online_check is False
    assert cfg.max_judge_calls == 3000 and cfg.metrics_port == 9464
    assert cfg.evaluate["avg_similarity_threshold"] == 90


def test_every_setting_is_in_the_example() -> None:
    text = EXAMPLE.read_text()
    missing = [k for k in PipelineConfig.model_fields if f"\n{k}:" not in text]
    assert missing == []


@pytest.mark.parametrize(
    ("section", "key"),
    [("train", "output_dir"), ("batch_infer", "ft_model_id"), ("evaluate", "lm_response_ds_id")],
)
def test_run_owned_keys_are_refused(tmp_path: Path, section: str, key: str) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"{section}:\n  {key}: x\n")
    with pytest.raises(
        ConfigError, match=f"pipeline.yaml: {section}: {key}: set by the pipeline for each run"
    ):
        resolve("--from-config", str(path))
