"""The model card, ``standby-model.json``: what an adapter is, in its folder. This module is the
only code that reads or writes it.

The trainer writes the card (base model, data, hyperparameters, losses, libraries); the gate
merges the judge's ``scores`` and its ``evaluation`` into it when a model passes; the pipeline
reads what it trained; the gateway exports the scores of the adapter it serves. Keys are only
ever added, never renamed, and every part keeps keys it does not know (``extra="allow"``), so a
card from an older or newer standby survives a round trip; only keys that were present, or set,
are written. Writes are atomic: a reader never sees half a card. Every write also rewrites
the folder's ``README.md`` from the card (``card_readme``), replacing peft's empty template.

    card = read_card(adapter_dir)          # None when there is none; CardError when unusable
    merge_scores(adapter_dir, {"similarity": 91.0, "precision": 88.5}, {"judge": "gemini"})
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, ValidationError

from standby.errors import ConfigError, validation_message
from standby.store.card_readme import README_FILE, render_readme

CARD_FILE: Final = "standby-model.json"
FORMAT: Final = 1


class CardError(ConfigError):
    """A model card that cannot be read (not JSON, not an object, off the schema); one line."""


class CardPart(BaseModel):
    """A part of the card: typed where standby reads it, unknown keys kept as they are."""

    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The part as JSON values: the keys it was read or made with, and those set since."""
        return self.model_dump(mode="json", exclude_unset=True)


class BaseModelRef(CardPart):
    id: str
    revision: str | None = None
    sha: str | None = None


class DataRef(CardPart):
    """The split an adapter was trained or evaluated on, and the data snapshot it came from."""

    source: str
    split: str
    revision: str | None = None
    snapshot_id: str | None = None
    content_hash: str
    rows: int
    skipped_rows: int = 0


class Metrics(CardPart):
    train_loss: float | None = None
    final_loss: float | None = None
    eval_loss: float | None = None
    loss_curve: list[tuple[int, float]] = []
    eval_loss_curve: list[tuple[int, float]] = []  # (step, eval loss) each time it was measured


class Training(CardPart):
    global_step: int
    epochs: float | None = None
    resumed_from_step: int | None = None
    device: str
    world_size: int = 1
    wall_time_s: float | None = None


class AdapterFiles(CardPart):
    format: str = "peft-lora"
    merged: str | None = None  # the folder of base + adapter merged, when asked


class TimeBudget(CardPart):
    seconds: float | None = None
    hit: bool


class Scores(CardPart):
    """The judge's mean scores (1-100) of a model that passed the gate."""

    similarity: float | None = None
    precision: float | None = None

    def criteria(self) -> dict[str, float]:
        """The two criteria's scores, those present."""
        both = {"similarity": self.similarity, "precision": self.precision}
        return {name: score for name, score in both.items() if score is not None}


class ModelCard(CardPart):
    """``standby-model.json``. Every field is optional to read (a card from the gate alone has
    only ``scores`` and ``evaluation``); the trainer fills them all."""

    format: int = FORMAT
    version: str | None = None
    created_at: str | None = None
    base_model: BaseModelRef | None = None
    dataset: DataRef | None = None
    eval_dataset: DataRef | None = None
    hyperparameters: dict[str, Any] = {}
    metrics: Metrics | None = None
    training: Training | None = None
    adapter: AdapterFiles | None = None
    hub: dict[str, Any] | None = None  # where it was pushed: repo_id, url, revision, tag, commit
    libraries: dict[str, str] = {}
    time_budget: TimeBudget | None = None
    scores: Scores | None = None
    evaluation: dict[str, Any] | None = None  # the gate's decision and what it judged on


def card_path(directory: Path) -> Path:
    """Where the card of the adapter in ``directory`` is."""
    return directory / CARD_FILE


def read_card(directory: Path) -> ModelCard | None:
    """The card in ``directory``; None when there is none. CardError (one line naming the
    file) when it cannot be read or is not a card."""
    path = card_path(directory)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # no card, or not a folder (a Hub id)
        return None
    except OSError as e:
        raise CardError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise CardError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise CardError(f"{path}: not a JSON object")
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as e:
        raise CardError(f"{path}: {validation_message(e)}") from None


def write_card(directory: Path, card: ModelCard) -> Path:
    """Write ``card`` into ``directory`` (created if needed) atomically; returns the file."""
    path = card_path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(card.to_json(), indent=2) + "\n")
    # The README (what a Hub push publishes) says the same, for people.
    _atomic_write(directory / README_FILE, render_readme(card))
    return path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per writer: no collisions
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def merge_scores(
    directory: Path, scores: Mapping[str, float], evaluation: Mapping[str, Any]
) -> Path:
    """Merge ``scores`` and ``evaluation`` into the card in ``directory`` (created if absent),
    keeping every other key, so the trainer's record stays; returns the file. A card that
    cannot be read is a CardError and is left as it is."""
    try:
        card = read_card(directory) or ModelCard()
    except CardError as e:
        raise CardError(f"{e}; not overwriting it") from None
    old = card.scores.to_json() if card.scores is not None else {}
    card.scores = Scores.model_validate({**old, **scores})
    card.evaluation = {**(card.evaluation or {}), **evaluation}
    return write_card(directory, card)
