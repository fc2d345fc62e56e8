"""Export round trips through the real ``datasets`` readers (jsonl, parquet, save_to_disk) in
the no_robots schema plus provenance, and a push through huggingface_hub to a local HTTP
stand-in for the Hub API that records every call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets  # type: ignore[import-untyped]
import huggingface_hub.constants
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from standby.data.export import COLUMNS, FEATURES, export, push_to_hub, row_of
from standby.data.pairs import DataError, PairStore
from tests.data import Stores, candidate
from tests.fixtures.hub_stub import HubStub, running_hub_stub

TOKEN = "hf_stub_token"


@pytest.fixture(scope="module")
def hub_server() -> Iterator[HubStub]:
    with running_hub_stub(token=TOKEN) as stub:
        yield stub


@pytest.fixture
def hub(hub_server: HubStub, monkeypatch: pytest.MonkeyPatch) -> HubStub:
    """The stub, emptied; huggingface_hub online (tests run with HF_HUB_OFFLINE=1) and holding
    the stub's token."""
    hub_server.reset()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return hub_server


@pytest.fixture
def store(stores: Stores) -> PairStore:
    store = stores.open()
    store.write(
        candidate(
            i,
            system=("Be brief.",) if i % 7 == 0 else (),
            route="gemini-2.5-flash" if i % 3 else "other-route",
            model_version="gemini-2.5-flash-001" if i % 2 else None,
        )
        for i in range(60)
    )
    return store


def expected(store: PairStore, split: str) -> list[dict[str, Any]]:
    return [row_of(p) for p in store.pairs((split,))]


def as_rows(ds: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in ds]


def test_jsonl_round_trip(store: PairStore, tmp_path: Path) -> None:
    done = export(store, "jsonl", tmp_path / "out")
    files = {s: str(tmp_path / "out" / f"{s}.jsonl") for s in ("train_sft", "test_sft")}
    assert [str(p) for p in done.paths] == list(files.values())
    loaded = datasets.load_dataset("json", data_files=files, cache_dir=str(tmp_path / "cache"))
    for split in files:
        assert loaded[split].column_names == list(COLUMNS)
        assert as_rows(loaded[split]) == expected(store, split)
    assert done.counts["train_sft"] + done.counts["test_sft"] == 60 and done.counts["test_sft"]


def test_parquet_round_trip_keeps_the_features(store: PairStore, tmp_path: Path) -> None:
    export(store, "parquet", tmp_path / "out")
    files = {s: str(tmp_path / "out" / f"{s}.parquet") for s in ("train_sft", "test_sft")}
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "c"))
    for split in files:
        assert loaded[split].features == FEATURES
        assert as_rows(loaded[split]) == expected(store, split)


def test_hf_dataset_dict_round_trip(store: PairStore, tmp_path: Path) -> None:
    done = export(store, "hf", tmp_path / "hf")
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    assert isinstance(loaded, datasets.DatasetDict)
    assert sorted(loaded) == ["test_sft", "train_sft"]
    for split, ds in loaded.items():
        assert ds.features == FEATURES and ds.num_rows == done.counts[split]
        assert as_rows(ds) == expected(store, split)
    # The no_robots convention: instruction = first user message, target = first answer.
    row = loaded["train_sft"][0]
    users = [m for m in row["messages"] if m["role"] == "user"]
    assert users[0]["content"] == row["prompt"] and row["messages"][-1]["role"] == "assistant"


def test_one_split_to_one_file_and_the_content_hash(store: PairStore, tmp_path: Path) -> None:
    done = export(store, "jsonl", tmp_path / "test.jsonl", split="test_sft")
    assert done.paths == [tmp_path / "test.jsonl"] and list(done.counts) == ["test_sft"]
    lines = (tmp_path / "test.jsonl").read_text().splitlines()
    assert len(lines) == done.counts["test_sft"]
    # Exporting everything hashes to the snapshot of an unchanged store.
    assert export(store, "parquet", tmp_path / "all").content_hash == store.snapshot().content_hash


def test_an_empty_store_exports_empty_splits(stores: Stores, tmp_path: Path) -> None:
    empty = stores.open("empty.db")
    export(empty, "hf", tmp_path / "hf")
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    assert loaded["train_sft"].num_rows == 0 and loaded["test_sft"].features == FEATURES
    export(empty, "parquet", tmp_path / "pq")
    table = pq.read_table(tmp_path / "pq" / "test_sft.parquet")  # datasets cannot read 0 rows
    assert table.num_rows == 0 and table.column_names == list(COLUMNS)


def test_push_to_hub_creates_the_repo_and_commits_the_splits(
    store: PairStore, hub: HubStub, tmp_path: Path
) -> None:
    result = push_to_hub(store, "team/standby-pairs", private=True, endpoint=hub.url)
    assert hub.paths() == [
        "POST /api/repos/create",
        "POST /api/validate-yaml",
        "POST /api/datasets/team/standby-pairs/preupload/main",
        "POST /api/datasets/team/standby-pairs/commit/main",
    ]
    assert hub.calls[0].body == {
        "name": "standby-pairs",
        "organization": "team",
        "type": "dataset",
        "visibility": "private",
    }
    assert {c.authorization for c in hub.calls} == {f"Bearer {TOKEN}"}
    repo = hub.repos["team/standby-pairs"]
    assert (repo.type, repo.visibility) == ("dataset", "private")
    assert sorted(repo.files) == [
        "README.md",
        "data/test_sft-00000-of-00001.parquet",
        "data/train_sft-00000-of-00001.parquet",
    ]
    assert result.repo_url == f"{hub.url}/datasets/team/standby-pairs"
    assert result.commit_url.startswith(f"{hub.url}/datasets/team/standby-pairs/commit/")
    assert repo.commits[0]["summary"] == f"standby: 60 pairs ({result.content_hash[:12]})"

    # What was pushed loads like a Hub dataset: the card's configs name the splits.
    clone = tmp_path / "clone"
    for name, content in repo.files.items():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        (clone / name).write_bytes(content)
    loaded = datasets.load_dataset(str(clone), cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded) == ["test_sft", "train_sft"]
    for split in loaded:
        assert as_rows(loaded[split]) == expected(store, split)


def test_push_again_to_an_existing_repo_and_without_private(store: PairStore, hub: HubStub) -> None:
    push_to_hub(store, "team/pairs", split="train_sft", endpoint=hub.url)
    push_to_hub(store, "team/pairs", split="train_sft", endpoint=hub.url)  # exists: a 409
    creates = [c.body for c in hub.calls if c.path == "/api/repos/create"]
    assert creates == [{"name": "pairs", "organization": "team", "type": "dataset"}] * 2
    assert hub.repos["team/pairs"].visibility is None  # the namespace's default applies
    assert len(hub.repos["team/pairs"].commits) == 2
    assert "data/test_sft-00000-of-00001.parquet" not in hub.repos["team/pairs"].files


def test_push_failures_are_one_line_errors(
    store: PairStore, hub: HubStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(DataError, match="401") as e:
        push_to_hub(store, "team/pairs", endpoint=hub.url)
    assert "\n" not in str(e.value) and "hf_wrong" not in str(e.value)
    assert not hub.repos

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="offline"):
        push_to_hub(store, "team/pairs", endpoint=hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    with pytest.raises(DataError, match="cannot reach the Hub"):
        push_to_hub(store, "team/pairs", endpoint="http://127.0.0.1:9")
    with pytest.raises(DataError, match="unknown split"):
        push_to_hub(store, "team/pairs", split="validation", endpoint=hub.url)
