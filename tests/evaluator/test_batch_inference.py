"""Batch inference: the tiny Gemma + LoRA adapter answers a test split with the full schema; a
gateway backend (the simulated Gemini) by name; a killed run resumes; the Hub push appends or
replaces; the seed-parity flags."""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
import yaml

from standby.errors import ConfigError, StandbyError
from standby.evaluator.batch_inference import COLUMNS, PROGRESS, run_batch_inference
from standby.evaluator.config import BatchInferConfig
from standby.toolconfig import add_config_flags, resolve_config
from tests.evaluator.conftest import no_robots_rows, write_split
from tests.fixtures.hub_stub import HubStub, running_hub_stub
from tests.fixtures.sim import RunningSim

REPO = Path(__file__).resolve().parents[2]


def read_rows(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_tiny_model_with_adapter_gives_the_full_schema(
    tiny_adapter_dir: Path, test_data: Path, tmp_path: Path
) -> None:
    cfg = BatchInferConfig(
        ft_model_id=str(tiny_adapter_dir),
        test_ds_id=str(test_data),
        output_dir=tmp_path / "out",
        repeat=2,
        inference_bs=4,
        max_new_tokens=12,
        device="cpu",
        threads=1,
    )
    result = run_batch_inference(cfg)
    rows = read_rows(result.output)
    assert result.output == tmp_path / "out" / "batch_infer.jsonl"
    assert (result.rows, result.generated, result.resumed) == (12, 12, 0)
    assert all(tuple(r) == COLUMNS for r in rows)
    # Test-set order within each repeat; instruction and target from the messages.
    assert [(r["sample_id"], r["repeat_index"]) for r in rows] == [
        (f"p{i:04d}", k) for k in range(2) for i in range(6)
    ]
    first = rows[0]
    assert first["instructions"] == "Write one sentence about the sky (0)."
    assert first["target_responses"] == "Here is a sentence about the sky."
    assert first["model_id"] == str(tiny_adapter_dir)
    assert str(first["model_sha"]).startswith("sha256:")
    for r in rows:
        assert r["finish_reason"] in ("stop", "length")
        assert isinstance(r["latency_s"], float) and r["latency_s"] > 0
        text = str(r["candidate_responses"])
        # Only the new tokens, decoded without special tokens: no echo of the prompt.
        assert "<start_of_turn>" not in text and "<end_of_turn>" not in text
        assert r["instructions"] not in text
    # Repeats sample with their own seed: the two repeats are not copies of each other.
    assert [r["candidate_responses"] for r in rows[:6]] != [
        r["candidate_responses"] for r in rows[6:]
    ]
    # A second run finds everything done and generates nothing.
    again = run_batch_inference(cfg)
    assert (again.generated, again.resumed) == (0, 12)
    assert read_rows(again.output) == rows


def gateway_yaml(path: Path, sim: RunningSim) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "backends": {
                    "gemini": {
                        "type": "gemini",
                        "model": "gemini-2.5-flash",
                        "api_key": "k",
                        "base_url": sim.url,
                    }
                },
                "routes": {"gemini-2.5-flash": ["gemini"]},
            }
        )
    )
    return path


@pytest.fixture
def by_backend(sim: RunningSim, test_data: Path, tmp_path: Path) -> BatchInferConfig:
    """A run over the 6 test rows by the gateway backend ``gemini`` (the simulated Gemini)."""
    return BatchInferConfig(
        backend="gemini",
        gateway_config=gateway_yaml(tmp_path / "standby.yaml", sim),
        test_ds_id=str(test_data),
        output_dir=tmp_path / "o",
    )


def test_a_gateway_backend_by_name(sim: RunningSim, by_backend: BatchInferConfig) -> None:
    result = run_batch_inference(by_backend)
    rows = read_rows(result.output)
    assert len(rows) == 6 and sim.sim.stats()["requests"] == 6
    assert rows[0]["candidate_responses"].startswith(
        "Simulated Gemini answer to: Write one sentence"
    )
    assert rows[0]["model_id"] == "gemini/gemini-2.5-flash"
    assert rows[0]["model_sha"] == "gemini-2.5-flash"  # Gemini's modelVersion
    with pytest.raises(ConfigError, match="'nope' is not defined"):
        run_batch_inference(by_backend.model_copy(update={"backend": "nope"}))


def test_failed_rows_are_reported_and_retried_by_the_next_run(
    sim: RunningSim, by_backend: BatchInferConfig, tmp_path: Path
) -> None:
    sim.sim.script([{"fault": "error-500"}], match="(3)")
    with pytest.raises(StandbyError, match=r"1 rows got no answer, e.g. p0003"):
        run_batch_inference(by_backend)
    progress = tmp_path / "o" / PROGRESS
    assert len(progress.read_bytes().splitlines()) == 5
    with progress.open("ab") as f:  # a line torn by a crash mid-write is dropped, not fatal
        f.write(b'{"instructions": "Write one sen')
    result = run_batch_inference(by_backend)
    assert (result.generated, result.resumed, result.rows) == (1, 5, 6)
    assert [orjson.loads(line)["sample_id"] for line in progress.read_bytes().splitlines()][-1] == (
        "p0003"
    )


def test_a_killed_run_resumes_where_it_stopped(
    sim: RunningSim, by_backend: BatchInferConfig, tmp_path: Path
) -> None:
    data = write_split(tmp_path / "data", "test_sft", no_robots_rows(40))
    out = tmp_path / "out"
    sim.sim.set_fault("slow-200")
    argv = [
        sys.executable,
        "-m",
        "standby.cli",
        "batch-infer",
        "--backend",
        "gemini",
        "--gateway-config",
        str(by_backend.gateway_config),
        "--test-ds-id",
        str(data),
        "--output-dir",
        str(out),
        "--inference-bs",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    progress = out / PROGRESS
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if progress.exists() and len(progress.read_bytes().splitlines()) >= 6:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    before = progress.read_bytes().count(b"\n")  # complete lines only
    assert 6 <= before < 40
    sim.sim.reset()
    result = run_batch_inference(
        by_backend.model_copy(update={"test_ds_id": str(data), "output_dir": out})
    )
    assert result.resumed >= before and result.generated == 40 - result.resumed
    assert sim.sim.stats()["requests"] == result.generated  # done rows were not asked again
    rows = read_rows(result.output)
    assert [r["sample_id"] for r in rows] == [f"p{i:04d}" for i in range(40)]


def test_a_different_run_in_the_same_folder_is_refused(by_backend: BatchInferConfig) -> None:
    run_batch_inference(by_backend)
    other = by_backend.model_copy(update={"temperature": 0.1})
    with pytest.raises(ConfigError, match="different run"):
        run_batch_inference(other)
    assert run_batch_inference(other.model_copy(update={"overwrite": True})).generated == 6


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStub]:
    with running_hub_stub(token="hub-token") as stub:
        monkeypatch.setenv("HF_TOKEN", "hub-token")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        yield stub


def shards(stub: HubStub, repo: str) -> dict[str, int]:
    files = stub.repos[repo].files
    return {
        p: pq.read_table(io.BytesIO(b)).num_rows for p, b in files.items() if p.endswith(".parquet")
    }


def test_push_appends_or_replaces_the_split(by_backend: BatchInferConfig, hub: HubStub) -> None:
    cfg = by_backend.model_copy(
        update={
            "push_lm_responses_to_hf_hub": True,
            "lm_response_ds_id": "team/answers",
            "hub_endpoint": hub.url,
        }
    )
    first = run_batch_inference(cfg)
    assert first.pushed and "team/answers" in first.pushed
    # The same finished run again: its answers are already there, nothing is pushed twice.
    assert run_batch_inference(cfg).pushed == first.pushed
    assert len(hub.repos["team/answers"].commits) == 1
    # A new run appends (the default): a second shard.
    run_batch_inference(cfg.model_copy(update={"overwrite": True}))
    got = shards(hub, "team/answers")
    assert sorted(got.values()) == [6, 6] and all(p.startswith("data/batch_infer-") for p in got)
    card = hub.repos["team/answers"].files["README.md"].decode()
    assert "path: data/batch_infer-*" in card
    run_batch_inference(cfg.model_copy(update={"lm_response_append": False}))
    assert list(shards(hub, "team/answers").values()) == [6]
    assert hub.repos["team/answers"].visibility == "private"
    table = pq.read_table(
        io.BytesIO(
            next(iter(hub.repos["team/answers"].files[p] for p in shards(hub, "team/answers")))
        )
    )
    assert tuple(table.column_names) == COLUMNS


def test_seed_parity_flags_and_the_example_config(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, BatchInferConfig)
    args = parser.parse_args(
        [
            "--from-config",
            str(REPO / "config" / "batch_inference.yaml"),
            "--ft-model-id",
            "org/adapter",
            "--ft-model-revision",
            "abc123",
            "--test-ds-id",
            "HuggingFaceH4/no_robots",
            "--batch-infer-data-preprocess-bs",
            "32",
            "--inference-bs",
            "4",
            "--repeat",
            "2",
            "--push-lm-responses-to-hf-hub",
            "--lm-response-ds-id",
            "org/answers",
            "--no-lm-response-append",
        ]
    )
    cfg = resolve_config(BatchInferConfig, args)
    assert (cfg.ft_model_id, cfg.ft_model_revision, cfg.repeat, cfg.inference_bs) == (
        "org/adapter",
        "abc123",
        2,
        4,
    )
    assert cfg.test_ds_split == "test_sft" and cfg.lm_response_ds_split == "batch_infer"
    assert cfg.push_lm_responses_to_hf_hub and not cfg.lm_response_append
    assert cfg.batch_infer_data_preprocess_bs == 32
    with pytest.raises(ConfigError, match="exactly one of --ft-model-id or --backend"):
        resolve_config(BatchInferConfig, parser.parse_args(["--test-ds-id", "x"]))
