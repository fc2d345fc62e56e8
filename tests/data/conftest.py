"""Fixtures shared by the data tests: pair stores in a temporary folder, and the bus fixtures of
the event tests (the same SQLite and real-Redis parametrization)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from standby.data.pairs import PairStore
from tests.data import Stores
from tests.store.conftest import backend, bus

__all__ = ["backend", "bus", "store", "stores"]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    opened = Stores(tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def store(stores: Stores) -> PairStore:
    return stores.open()
