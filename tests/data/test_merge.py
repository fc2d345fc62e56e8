"""``standby data merge``: two datasets into the no_robots schema with provenance kept and a
stable test split; and the whole path a user takes: synth -> merge -> ``standby train`` on the
tiny Gemma, with no manual step between them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from standby.cli import main
from standby.data.merge import MergeConfig, run_merge
from standby.synth.run import run_synth
from tests.fixtures.sim import RunningSim
from tests.synth.conftest import (
    TEST,
    TRAIN,
    chat,
    items,
    new_item,
    read_rows,
    script_each_seed,
    settings,
    write_jsonl,
    write_reference,
)
from tests.trainer.conftest import tiny_settings


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    return write_reference(tmp_path / "reference")


def synthetic(folder: Path, prompts: list[str]) -> Path:
    rows = []
    for i, p in enumerate(prompts):
        row = chat(p, f"Synthetic answer {i}", f"syn-{i}")
        row.update(
            source="synthetic",
            generator="gemini/gemini-2.5-flash",
            seed_ids=[f"train-{i}"],
            seed_prompt=TRAIN[i],
            run_id="synth-1",
        )
        rows.append(row)
    write_jsonl(folder / "train_sft.jsonl", rows)
    return folder


def merge(first: Path, second: Path, out: Path, *flags: str) -> int:
    """``standby data merge`` as a user runs it; its exit status."""
    argv = ["--first-ds-id", str(first), "--second-ds-id", str(second), "--output-dir", str(out)]
    return main(["data", "merge", *argv, *flags])


def test_merge_keeps_provenance_and_the_test_split(reference: Path, tmp_path: Path) -> None:
    second = synthetic(tmp_path / "synth", [NEW := new_item(0)[0], TRAIN[0], TEST[0]])
    cfg = MergeConfig(
        first_ds_id=str(reference), second_ds_id=str(second), output_dir=tmp_path / "merged"
    )
    result = run_merge(cfg)

    train = read_rows(tmp_path / "merged" / "train_sft.jsonl")
    test = read_rows(tmp_path / "merged" / "test_sft.jsonl")
    # The test split is exactly the inputs' test splits (the second has none: skipped).
    assert [r["prompt"] for r in test] == TEST
    # A synthetic copy of a train row is a duplicate; one of a test prompt never enters train.
    assert [r["prompt"] for r in train] == [*TRAIN, NEW]
    assert result.dropped == {"duplicate": 1, "in_test": 1, "unusable": 0}
    assert result.counts == {"train_sft": len(TRAIN) + 1, "test_sft": len(TEST)}
    syn = train[-1]
    assert (syn["source"], syn["seed_ids"], syn["merged_from"]) == (
        "synthetic",
        ["train-0"],
        str(second),
    )
    assert set(train[0]) == set(syn)  # every column on every row
    assert (train[0]["source"], train[0]["seed_ids"], train[0]["generator"]) == ("", [], "")
    assert {"prompt", "prompt_id", "messages", "category"} <= set(test[0])

    # Same inputs, same output, whatever run.
    again = run_merge(cfg.model_copy(update={"output_dir": tmp_path / "again"}))
    assert again.counts == result.counts
    assert (tmp_path / "again" / "test_sft.jsonl").read_bytes() == (
        tmp_path / "merged" / "test_sft.jsonl"
    ).read_bytes()


def test_a_missing_train_split_is_one_line(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = merge(reference, tmp_path / "nothing", tmp_path / "m")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no such file or folder" in err


def test_synth_merge_train_on_the_tiny_model(
    sim: RunningSim,
    reference: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    script_each_seed(sim, {s: items(new_item(i)) for i, s in enumerate(TRAIN)})
    run_synth(settings(sim, reference, tmp_path / "synth"))
    code = merge(reference, tmp_path / "synth", tmp_path / "merged", "--json")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["counts"] == {"train_sft": 2 * len(TRAIN), "test_sft": len(TEST)}

    train = tiny_settings(
        tiny_model_dir,
        tmp_path / "merged",
        tmp_path / "adapter",
        max_steps=2,
        save_steps=2,
        logging_steps=1,
    )
    argv = ["--log-level", "warning", "train", "--json"]
    for key, value in train.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag if value is not False else "--no-" + flag[2:]]
        if not isinstance(value, bool):
            argv.append(str(value))
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    card = json.loads(out)
    assert card["training"]["global_step"] == 2
    assert card["dataset"]["rows"] == 2 * len(TRAIN) and card["eval_dataset"]["rows"] == len(TEST)


def test_an_empty_synth_output_merges_to_the_first_dataset(reference: Path, tmp_path: Path) -> None:
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "train_sft.jsonl").write_text("")
    cfg = MergeConfig(
        first_ds_id=str(reference),
        second_ds_id=str(tmp_path / "synth"),
        output_dir=tmp_path / "merged",
    )
    assert run_merge(cfg).counts == {"train_sft": len(TRAIN), "test_sft": len(TEST)}
