"""Tests of standby/data. ``Stores`` opens pair stores under a test's tmp_path and closes them
all afterwards (each module has a ``stores`` fixture around it); ``candidate`` makes the pairs
that tests of the store and of its readers write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from standby.config import DataConfig
from standby.data.pairs import Candidate, PairStore, timestamp

T0 = datetime(2026, 2, 1, tzinfo=UTC)


def candidate(i: int, **fields: Any) -> Candidate:
    """Captured pair ``i``: ``question i`` / ``answer i`` on route ``r`` without a system
    message, event ``e{i}``, request ``r{i}``, made ``i`` seconds after T0; ``fields`` replace
    any of it."""
    made = {
        "prompt": f"question {i}",
        "response": f"answer {i}",
        "system": (),
        "route": "r",
        "model": "gemini-2.5-flash",
        "model_version": None,
        "event_id": f"e{i}",
        "request_id": f"r{i}",
        "created_at": timestamp(T0 + timedelta(seconds=i)),
    }
    return Candidate(**{**made, **fields})


class Stores:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.opened: list[PairStore] = []

    def open(self, name: str = "pairs.db", **config: Any) -> PairStore:
        store = PairStore(self.root / name, config=DataConfig(**config))
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            store.close()
