"""The model card: one typed reader and writer of ``standby-model.json``. Keys it does not know
survive a round trip, writes are atomic, the gate's scores merge into what the trainer wrote,
and a card that cannot be read is one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from standby.errors import ConfigError
from standby.store.card import (
    CARD_FILE,
    BaseModelRef,
    CardError,
    Metrics,
    ModelCard,
    Scores,
    card_path,
    merge_scores,
    read_card,
    write_card,
)

TRAINED: dict[str, Any] = {
    "format": 1,
    "version": "20260201-120000-0123abcd",
    "created_at": "2026-02-01T12:00:00+00:00",
    "base_model": {"id": "google/gemma-3-1b-it", "revision": None, "sha": "abc"},
    "dataset": {
        "source": "./data",
        "split": "train_sft",
        "revision": None,
        "snapshot_id": "s1",
        "content_hash": "0123abcd",
        "rows": 40,
        "skipped_rows": 0,
    },
    "eval_dataset": None,
    "hyperparameters": {"lora_r": 8, "learning_rate": 0.0002},
    "metrics": {
        "train_loss": 1.5,
        "final_loss": 1.25,
        "eval_loss": None,
        "loss_curve": [[1, 2.0], [2, 1.25]],
    },
    "training": {
        "global_step": 2,
        "epochs": 1.0,
        "resumed_from_step": None,
        "device": "cpu",
        "world_size": 1,
        "wall_time_s": 3.5,
    },
    "adapter": {"format": "peft-lora", "merged": None},
    "hub": None,
    "libraries": {"torch": "2.13.0"},
}


def put(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CARD_FILE).write_text(text, encoding="utf-8")
    return folder


def on_disk(folder: Path) -> Any:
    return json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))


def test_the_trainers_card_round_trips_unchanged(tmp_path: Path) -> None:
    put(tmp_path, json.dumps(TRAINED))
    card = read_card(tmp_path)
    assert card is not None and card.metrics is not None and card.base_model is not None
    assert (card.version, card.base_model.id, card.metrics.train_loss) == (
        "20260201-120000-0123abcd",
        "google/gemma-3-1b-it",
        1.5,
    )
    assert write_card(tmp_path, card) == card_path(tmp_path) == tmp_path / "standby-model.json"
    assert on_disk(tmp_path) == TRAINED
    assert list(json.loads((tmp_path / CARD_FILE).read_text())) == list(TRAINED)  # key order


def test_keys_from_another_version_survive_a_round_trip(tmp_path: Path) -> None:
    newer = {
        "version": "v9",
        "base_model": {"id": "m", "quantized": "int4"},
        "scores": {"similarity": 90.0, "toxicity": 1.5},
        "lineage": ["v8", "v7"],
    }
    put(tmp_path, json.dumps(newer))
    card = read_card(tmp_path)
    assert card is not None and card.scores is not None
    assert card.scores.criteria() == {"similarity": 90.0}
    write_card(tmp_path, card)
    assert on_disk(tmp_path) == newer  # nothing added (no defaults), nothing lost


def test_a_card_made_here_is_written_atomically(tmp_path: Path) -> None:
    card = ModelCard(version="v1", base_model=BaseModelRef(id="m"), metrics=Metrics(train_loss=2))
    folder = tmp_path / "new" / "adapter"
    write_card(folder, card)
    assert on_disk(folder) == {
        "version": "v1",
        "base_model": {"id": "m"},
        "metrics": {"train_loss": 2.0},
    }
    # no temporary file left; the README is written from the card
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", CARD_FILE]
    assert (folder / CARD_FILE).read_text().endswith("}\n")


def test_no_card_is_none(tmp_path: Path) -> None:
    assert read_card(tmp_path) is None
    assert read_card(tmp_path / "google" / "gemma-3-1b-it") is None  # a Hub id, not a folder
    (tmp_path / "file").write_text("x")
    assert read_card(tmp_path / "file") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON (Expecting property name"),
        ("[1, 2]", "not a JSON object"),
        ('{"scores": {"similarity": "high"}}', "scores.similarity: Input should be a valid"),
        ('{"base_model": "tiny"}', "base_model: Input should be a valid dictionary"),
    ],
)
def test_an_unusable_card_is_one_line_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    put(tmp_path, text)
    with pytest.raises(CardError) as err:
        read_card(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / CARD_FILE}: {message}")
    assert "\n" not in str(err.value) and isinstance(err.value, ConfigError)


def test_scores_merge_into_the_trainers_card(tmp_path: Path) -> None:
    put(
        tmp_path,
        json.dumps(
            {**TRAINED, "scores": {"other": 1.0}, "evaluation": {"judge": "old", "rows": 3}}
        ),
    )
    merge_scores(tmp_path, {"similarity": 91.5, "precision": 88.0}, {"judge": "j", "gate": {}})
    card = on_disk(tmp_path)
    assert {k: card[k] for k in TRAINED} == TRAINED  # the trainer's record stays
    assert card["scores"] == {"other": 1.0, "similarity": 91.5, "precision": 88.0}
    assert card["evaluation"] == {"judge": "j", "rows": 3, "gate": {}}


def test_scores_make_a_card_where_there_is_none(tmp_path: Path) -> None:
    merge_scores(tmp_path / "adapter", {"similarity": 80.0}, {"gate": {"passed": True}})
    assert on_disk(tmp_path / "adapter") == {
        "scores": {"similarity": 80.0},
        "evaluation": {"gate": {"passed": True}},
    }


def test_scores_never_overwrite_a_card_that_cannot_be_read(tmp_path: Path) -> None:
    put(tmp_path, "[1]")
    with pytest.raises(CardError, match=r"not a JSON object; not overwriting it$"):
        merge_scores(tmp_path, {"similarity": 80.0}, {})
    assert (tmp_path / CARD_FILE).read_text() == "[1]"


def test_scores_criteria() -> None:
    assert Scores(similarity=93.5, precision=88.25).criteria() == {
        "similarity": 93.5,
        "precision": 88.25,
    }
    assert Scores().criteria() == {}


def test_the_readme_is_written_from_the_card_and_follows_it(tmp_path: Path) -> None:
    """peft's save_pretrained leaves an empty template README (what a Hub push publishes);
    every card write replaces it with one made from the card, scores included once merged."""
    (tmp_path / "README.md").write_text("[More Information Needed]\n" * 39)
    write_card(tmp_path, ModelCard.model_validate(TRAINED))
    readme = (tmp_path / "README.md").read_text()
    assert "More Information Needed" not in readme
    front, body = readme.removeprefix("---\n").split("---\n", 1)
    assert yaml.safe_load(front) == {
        "base_model": "google/gemma-3-1b-it",
        "library_name": "peft",
        "tags": ["standby", "lora", "fallback"],
    }
    assert body.startswith("\n# 20260201-120000-0123abcd\n")
    assert "40 rows from `./data`, split `train_sft`, snapshot `s1`" in body
    assert "| lora_r | 8 |" in body and "Final loss 1.2500." in body
    assert "model: google/gemma-3-1b-it" in body and "## Results" not in body
    decision = {"passed": False, "reasons": ["precision 80.0 < 90"]}
    merge_scores(tmp_path, {"similarity": 91.0, "precision": 80.0}, {"gate": decision})
    readme = (tmp_path / "README.md").read_text()
    assert "| similarity | 91.0 |" in readme and "| precision | 80.0 |" in readme
    assert "The promotion gate failed: precision 80.0 < 90." in readme
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", CARD_FILE]
