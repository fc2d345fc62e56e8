"""``standby synth`` as a user runs it: the example YAML, flags over the file (the original
flag names), the Hub push with append and replace, and one-line errors."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
import yaml

from standby.cli import main
from standby.synth.config import SynthConfig
from standby.toolconfig import add_config_flags, resolve_config
from tests.fixtures.hub_stub import HubStub, running_hub_stub
from tests.fixtures.sim import RunningSim
from tests.synth.conftest import TRAIN, items, new_item, script_each_seed

REPO = Path(__file__).resolve().parents[2]


def test_the_example_config_loads_and_seed_parity_flags_win() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, SynthConfig)
    args = parser.parse_args(
        [
            "--from-config",
            str(REPO / "config" / "synth.yaml"),
            "--service-llm-provider",
            "litellm",
            "--service-model-name",
            "openai/gpt-4o",
            "--service-llm-api-key",
            "sk-1",
            "--rate-limit-per-minute",
            "30",
            "--reference-ds-id",
            "HuggingFaceH4/no_robots",
            "--reference-ds-split",
            "train",
            "--num-samples",
            "7",
            "--seed",
            "3",
            "--topic",
            "cooking",
            "--gen-workers",
            "2",
            "--push-synth-ds-to-hf-hub",
            "--synth-ds-id",
            "org/synth",
            "--synth-ds-split",
            "synth",
            "--no-synth-ds-append",
        ]
    )
    cfg = resolve_config(SynthConfig, args)
    from_file = SynthConfig.model_validate(yaml.safe_load((REPO / "config/synth.yaml").read_text()))
    assert from_file.synth_ds_append and from_file.num_samples == 100
    assert (cfg.service_llm_provider, cfg.service_model_name) == ("litellm", "openai/gpt-4o")
    assert cfg.api_key() == "sk-1" and cfg.rate_limit_per_minute == 30
    assert (cfg.reference_ds_id, cfg.reference_ds_split) == ("HuggingFaceH4/no_robots", "train")
    assert (cfg.num_samples, cfg.seed, cfg.topic, cfg.gen_workers) == (7, 3, "cooking", 2)
    assert cfg.push_synth_ds_to_hf_hub and cfg.synth_ds_id == "org/synth"
    assert cfg.synth_ds_split == "synth" and cfg.synth_ds_append is False
    assert cfg.mode == from_file.mode == "one-stage"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--log-level", "warning", "synth", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def common(sim: RunningSim, reference: Path, out: Path) -> list[str]:
    return [
        "--from-config",
        str(REPO / "config" / "synth.yaml"),
        "--service-llm-base-url",
        sim.url,
        "--service-llm-api-key",
        "any",
        "--rate-limit-per-minute",
        "60000",
        "--service-llm-backoff-s",
        "0.01",
        "--reference-ds-id",
        str(reference),
        "--output-dir",
        str(out),
        "--num-samples",
        str(len(TRAIN)),
        "--seeds-per-request",
        "1",
        "--no-progress",
    ]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStub]:
    with running_hub_stub(token="hub-token") as stub:
        monkeypatch.setenv("HF_TOKEN", "hub-token")
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        yield stub


def test_push_appends_then_replaces_on_the_hub(
    sim: RunningSim,
    reference: Path,
    tmp_path: Path,
    hub: HubStub,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def once(offset: int, *extra: str) -> dict[str, object]:
        sim.sim.reset()
        script_each_seed(sim, {s: items(new_item(i + offset)) for i, s in enumerate(TRAIN)})
        argv = [
            *common(sim, reference, tmp_path / "out"),
            "--push-synth-ds-to-hf-hub",
            "--synth-ds-id",
            "team/synth",
            "--hub-endpoint",
            hub.url,
            "--json",
            *extra,
        ]
        code, out, err = run(capsys, *argv)
        assert code == 0, err
        summary: dict[str, object] = json.loads(out)
        return summary

    first = once(0, "--no-synth-ds-append")
    assert first["kept"] == 8 and first["pushed"]
    # Append (the file's default): 4 new items, 4 repeats of rows already in the split.
    second = once(4, "--seed", "5")
    assert (second["kept"], second["duplicates"], second["rows_in_output"]) == (4, 4, 12)
    assert once(0)["pushed"] is None  # nothing new: nothing appended
    files = hub.repos["team/synth"].files
    shards = sorted(p for p in files if p.endswith(".parquet"))
    assert len(shards) == 2 and all(p.startswith("data/train_sft-") for p in shards)
    table = pq.read_table(io.BytesIO(files[shards[0]]))
    assert {
        "prompt",
        "prompt_id",
        "messages",
        "category",
        "source",
        "generator",
        "seed_ids",
        "seed_prompt",
        "topic",
        "created_at",
        "run_id",
    } <= set(table.column_names)
    once(0, "--no-synth-ds-append")
    shards = [p for p in hub.repos["team/synth"].files if p.endswith(".parquet")]
    assert len(shards) == 1


def test_problems_are_one_line(
    sim: RunningSim, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *common(sim, reference, tmp_path / "o"), "--dedup-threshold", "2")
    assert code == 2 and err.count("\n") == 1 and "--dedup-threshold" in err
    code, _, err = run(capsys, *common(sim, reference, tmp_path / "o"), "--push-synth-ds-to-hf-hub")
    assert code == 2 and "--push-synth-ds-to-hf-hub needs --synth-ds-id" in err
    missing = tmp_path / "no-such-report.json"
    code, _, err = run(
        capsys, *common(sim, reference, tmp_path / "o"), "--from-evaluation", str(missing)
    )
    assert (
        code == 2 and err == f"standby: error: {missing}: no such evaluation report or rows file\n"
    )


def test_a_bad_key_stops_the_run(
    sim_with_key: RunningSim, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = common(sim_with_key, reference, tmp_path / "o")
    argv[argv.index("any")] = "wrong"
    code, _, err = run(capsys, *argv)
    assert code == 2 and "API key not valid" in err and err.count("\n") == 1
    assert sim_with_key.sim.stats()["requests"] <= 4  # stopped, not retried for every request
