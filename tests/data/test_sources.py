"""Every kind of source a tool reads rows from: the pair store, a saved dataset folder, a folder of
split files, one file, and a Hub id that cannot be reached (tests run offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from standby.data.export import export
from standby.data.pairs import DataError, PairStore
from standby.data.sources import (
    content_hash,
    instruction_and_target,
    load_split,
    require_columns,
)
from tests.data import Stores, candidate


@pytest.fixture
def store(stores: Stores) -> PairStore:
    store = stores.open(test_fraction=0.3)
    store.write(candidate(i) for i in range(40))
    return store


def test_pair_store_source_and_its_snapshot(store: PairStore, stores: Stores) -> None:
    url = f"sqlite:///{stores.root / 'pairs.db'}"
    train = load_split(url, "train_sft")
    test = load_split(url, "test_sft")
    assert train.rows + test.rows == 40 and train.rows > test.rows > 0
    assert train.snapshot_id is None  # nothing snapshotted yet
    snap = store.snapshot()
    again = load_split(url, "train_sft")
    assert again.snapshot_id == snap.id
    assert again.content_hash == train.content_hash
    assert {r["prompt"] for r in again.dataset} == {p.prompt for p in store.pairs(("train_sft",))}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_exported_folders_load_back_with_equal_hashes(
    store: PairStore, tmp_path: Path, fmt: str
) -> None:
    export(store, fmt, tmp_path / fmt)  # type: ignore[arg-type]
    hashes = {load_split(str(tmp_path / fmt), split).content_hash for split in ("train_sft",)}
    assert len(hashes) == 1
    loaded = load_split(str(tmp_path / fmt), "test_sft")
    assert loaded.rows == len(store.pairs(("test_sft",)))
    assert set(loaded.dataset.column_names) >= {"prompt", "prompt_id", "messages", "category"}


def test_one_file_is_the_split(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": "a",
            "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        }
    ]
    file = tmp_path / "rows.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_split(str(file), "test_sft")
    assert loaded.rows == 1 and loaded.split == "test_sft"
    assert content_hash(loaded.dataset) == loaded.content_hash


def test_an_empty_file_is_an_empty_split(tmp_path: Path) -> None:
    (tmp_path / "train_sft.jsonl").write_text("")
    for source in (tmp_path, tmp_path / "train_sft.jsonl"):
        loaded = load_split(str(source), "train_sft")
        assert loaded.rows == 0 and loaded.content_hash == content_hash(loaded.dataset)


def test_missing_things_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_split(str(tmp_path / "nope.jsonl"), "train_sft")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no train_sft\.jsonl .*found: nothing"):
        load_split(str(tmp_path / "empty"), "train_sft")
    with pytest.raises(DataError, match="cannot load dataset from the Hub"):
        load_split("nobody/no-such-dataset", "train_sft")


def test_missing_split_of_a_saved_dataset(store: PairStore, tmp_path: Path) -> None:
    export(store, "hf", tmp_path / "hf", split="train_sft")
    with pytest.raises(DataError, match="no split 'test_sft' \\(has train_sft\\)"):
        load_split(str(tmp_path / "hf"), "test_sft")


def test_columns_and_instruction_target(store: PairStore, stores: Stores) -> None:
    ds = load_split(f"sqlite:///{stores.root / 'pairs.db'}", "train_sft").dataset
    require_columns(ds, ("messages", "prompt"), "train_sft")
    with pytest.raises(DataError, match="train_sft: missing columns x, y \\(has: prompt, "):
        require_columns(ds, ("x", "messages", "y"), "train_sft")
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "q2"},
    ]
    assert instruction_and_target(messages) == ("q", "a")
    with pytest.raises(DataError, match="no user message followed by an assistant"):
        instruction_and_target([{"role": "assistant", "content": "a"}])
