"""Tests of standby/data. ``Stores`` opens pair stores under a test's tmp_path and closes them
all afterwards (each module has a ``stores`` fixture around it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from standby.config import DataConfig
from standby.data.pairs import PairStore


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
