"""``standby data ...`` as a user runs it: subprocesses on real files, a config file whose
values flags override, defaults on a fresh checkout, one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from standby.data.materializer import SNAPSHOT_TOPIC, TOPIC
from standby.store import ChatMessage, open_bus
from tests.fixtures.hub_stub import HubStub, running_hub_stub
from tests.store.conftest import inference_event


def standby(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "standby.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **env},
    )


def ok(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    run = standby(*args, **kw)
    assert run.returncode == 0, run.stderr
    return run


def one_line_error(run: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "error" in run.stderr, run.stderr
    for needle in needles:
        assert needle in run.stderr, run.stderr


@pytest.fixture
async def config(tmp_path: Path) -> Path:
    """A standby.yaml whose bus holds captured events: 30 primary answers, 5 fallbacks. Its
    gateway secret names an unset variable: the data commands read only data: and capture:."""
    bus_url = f"sqlite:///{tmp_path / 'events.db'}"
    events = [inference_event(n) for n in range(30)]
    events += [inference_event(n, provenance="fallback", backend="gemma") for n in range(30, 35)]
    events.append(inference_event(99, messages=[ChatMessage(role="user", content="x" * 50)]))
    async with open_bus(bus_url) as bus:
        await bus.publish_many(TOPIC, events)
    path = tmp_path / "standby.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "backends": {
                    "gemini": {
                        "type": "gemini",
                        "model": "gemini-2.5-flash",
                        "api_key": "${STANDBY_TEST_NEVER_SET}",
                    }
                },
                "routes": {"gemini-2.5-flash": ["gemini"]},
                "capture": {"bus": bus_url},
                "data": {
                    "store": f"sqlite:///{tmp_path / 'pairs.db'}",
                    "test_fraction": 0.5,
                    "max_prompt_chars": 40,
                },
            }
        )
    )
    return path


async def test_materialize_stats_snapshot_export(config: Path, tmp_path: Path) -> None:
    cfg = ("--from-config", str(config))
    run = ok("data", "materialize", *cfg, "--once", "--json")
    counts = json.loads(run.stdout)
    assert (counts["events"], counts["written"], counts["skipped"], counts["rejected"]) == (
        36,
        30,
        5,
        1,
    )
    assert counts["skipped_by_reason"] == {"fallback": 5}
    assert counts["rejected_by_reason"] == {"prompt_too_long": 1}

    stats = json.loads(ok("data", "stats", *cfg, "--json").stdout)
    assert stats["total"] == 30 and stats["new_since_snapshot"] == 30
    assert 0 < stats["by_split"]["test_sft"] < 30  # test_fraction 0.5 from the file
    assert {(r["route"], r["source"]) for r in stats["by_route_source_split"]} == {
        ("gemini-2.5-flash", "captured")
    }
    table = ok("data", "stats", *cfg).stdout
    assert "gemini-2.5-flash" in table and "new since last snapshot: 30" in table
    assert "skipped 5 (fallback 5)" in table and "rejected 1 (prompt_too_long 1)" in table

    snap = json.loads(ok("data", "snapshot", *cfg, "--json").stdout)
    assert snap["counts"]["total"] == 30 and len(snap["content_hash"]) == 64
    async with open_bus(f"sqlite:///{tmp_path / 'events.db'}") as bus:
        [published] = await bus.consume(SNAPSHOT_TOPIC, "pipeline", "p")
    assert published.event.data["snapshot_id"] == snap["snapshot_id"]
    assert json.loads(ok("data", "stats", *cfg, "--json").stdout)["new_since_snapshot"] == 0

    out = tmp_path / "export"
    run = ok("data", "export", *cfg, "--format", "jsonl", "--output", str(out))
    assert snap["content_hash"] in run.stdout
    rows = [json.loads(x) for x in (out / "train_sft.jsonl").read_text().splitlines()]
    rows += [json.loads(x) for x in (out / "test_sft.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and set(rows[0]) >= {"prompt", "prompt_id", "messages", "category"}


async def test_flags_override_the_config_file(config: Path, tmp_path: Path) -> None:
    store = tmp_path / "flagged.db"
    flags = ("--store", f"sqlite:///{store}", "--test-fraction", "0", "--max-prompt-chars", "1000")
    ok("data", "materialize", "--from-config", str(config), "--once", *flags)
    stats = json.loads(ok("data", "stats", "--store", f"sqlite:///{store}", "--json").stdout)
    assert stats["by_split"] == {"train_sft": 31, "test_sft": 0}
    assert not (tmp_path / "pairs.db").exists()


def test_a_fresh_checkout_uses_the_defaults(tmp_path: Path) -> None:
    stats = json.loads(ok("data", "stats", "--json", cwd=tmp_path).stdout)
    assert stats["total"] == 0 and stats["last_snapshot"] is None
    assert not (tmp_path / ".standby" / "pairs.db").exists()  # looking creates nothing
    export = standby("data", "export", "--format", "jsonl", "--output", "o", cwd=tmp_path)
    one_line_error(export, "no pair store at .standby/pairs.db")
    run = ok("data", "materialize", "--once", cwd=tmp_path)
    assert run.stdout.startswith("materialized 0 events")
    assert (tmp_path / ".standby" / "pairs.db").exists()


@pytest.fixture(scope="module")
def hub() -> Iterator[HubStub]:
    with running_hub_stub(token="hf_cli") as stub:
        yield stub


async def test_export_pushes_to_the_hub(config: Path, hub: HubStub, tmp_path: Path) -> None:
    cfg = ("--from-config", str(config))
    ok("data", "materialize", *cfg, "--once")
    run = ok(
        "data",
        "export",
        *cfg,
        "--format",
        "hf",
        "--output",
        str(tmp_path / "hf"),
        "--push-to-hub",
        "team/pairs",
        "--private",
        "--split",
        "train_sft",
        HF_HUB_OFFLINE="0",
        HF_TOKEN="hf_cli",
        HF_ENDPOINT=hub.url,
    )
    assert f"{hub.url}/datasets/team/pairs" in run.stdout
    repo = hub.repos["team/pairs"]
    assert repo.visibility == "private"
    assert sorted(repo.files) == ["README.md", "data/train_sft-00000-of-00001.parquet"]
    assert (tmp_path / "hf" / "dataset_dict.json").exists()


def test_bad_data_sections_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "standby.yaml"
    path.write_text("data: {test_fraction: 2}\n")
    run = standby("data", "stats", "--from-config", str(path))
    one_line_error(run, "standby.yaml: data.test_fraction: Input should be less than 1")
    path.write_text("capture: {bus: '${STANDBY_TEST_NEVER_SET}'}\n")
    run = standby("data", "stats", "--from-config", str(path))
    one_line_error(run, "capture.bus: environment variable STANDBY_TEST_NEVER_SET is not set")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["export", "--format", "xml", "--output", "x"], ["invalid choice: 'xml'"]),
        (["export", "--format", "jsonl"], ["--output", "--push-to-hub"]),
        (["export", "--format", "jsonl", "--split", "dev", "--output", "x"], ["--split"]),
        (["materialize", "--test-fraction", "2"], ["--test-fraction", "less than 1"]),
        (["materialize", "--batch-size", "many"], ["--batch-size", "invalid int"]),
        (
            ["materialize", "--min-prompt-chars", "9", "--max-prompt-chars", "3"],
            ["min_prompt_chars"],
        ),
        (["stats", "--store", "postgres://db/pairs"], ["postgres://db/pairs"]),
        (["stats", "--from-config", "missing.yaml"], ["missing.yaml: file not found"]),
        (["snapshot", "--bus", "kafka://nowhere"], ["kafka://nowhere"]),
    ],
)
def test_bad_flags_are_one_line_errors(args: list[str], needles: list[str], tmp_path: Path) -> None:
    one_line_error(standby("data", *args, cwd=tmp_path), *needles)


async def test_an_export_to_one_file_needs_one_split(config: Path, tmp_path: Path) -> None:
    cfg = ("--from-config", str(config))
    ok("data", "materialize", *cfg, "--once")
    out = tmp_path / "out.jsonl"
    run = standby("data", "export", *cfg, "--format", "jsonl", "--output", str(out))
    assert run.returncode != 0 and "give --split with one split" in run.stderr, run.stderr
    assert not out.exists()  # no directory named like a file
    ok("data", "export", *cfg, "--format", "jsonl", "--split", "train_sft", "--output", str(out))
    assert out.is_file() and out.read_text().count("\n") > 0


async def test_a_folder_that_cannot_be_made_is_named_in_the_error(
    config: Path, tmp_path: Path
) -> None:
    ok("data", "materialize", "--from-config", str(config), "--once")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "export"
    run = standby(
        "data", "export", "--from-config", str(config), "--format", "jsonl", "--output", str(out)
    )
    assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
    assert str(blocker) in run.stderr, run.stderr
