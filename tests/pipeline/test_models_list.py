"""``standby models list`` shows each version's judge scores: those the pipeline's gate gave, or,
for an adapter registered by hand, those in its model card (``standby-model.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from standby.store.card import BaseModelRef, ModelCard, merge_scores, write_card
from tests.pipeline.helpers import standby_models


def test_list_shows_the_scores_each_card_gave(tmp_path: Path) -> None:
    registry = f"sqlite:///{tmp_path / 'events.db'}"
    judged, unjudged = tmp_path / "judged", tmp_path / "unjudged"
    write_card(judged, ModelCard(version="v1", base_model=BaseModelRef(id="tiny-gemma")))
    merge_scores(judged, {"similarity": 91.04, "precision": 88.46}, {"judge": "gemini"})
    write_card(unjudged, ModelCard(version="v2"))  # trained, never passed a gate

    out = standby_models(registry, "register", "--version", "v1", "--adapter", str(judged))
    assert out.strip().endswith("scores from its card: similarity 91.0, precision 88.5")
    standby_models(registry, "register", "--version", "v2", "--adapter", str(unjudged))
    standby_models(registry, "register", "--version", "v3", "--adapter", "org/on-the-hub")

    lines = standby_models(registry, "list").splitlines()
    assert lines[0].split()[:5] == ["version", "backend", "status", "similarity", "precision"]
    assert [line.split()[:5] for line in lines[1:]] == [
        ["v1", "gemma", "candidate", "91.0", "88.5"],
        ["v2", "gemma", "candidate", "-", "-"],
        ["v3", "gemma", "candidate", "-", "-"],
    ]
    listed = {v["version"]: v for v in json.loads(standby_models(registry, "list", "--json"))}
    assert listed["v1"]["scores"] == {"similarity": 91.04, "precision": 88.46}
    assert listed["v1"]["base_model"] == "tiny-gemma" and listed["v2"]["scores"] == {}
