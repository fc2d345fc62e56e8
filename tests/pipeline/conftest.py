"""Pipeline fixtures: the state store and registry on the same two storages as the bus (a
SQLite file, the real Redis under a per-test key prefix)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from standby.store.registry import Registry
from standby.store.state import StateStore, open_state
from tests.store.conftest import Backend, backend, redis_backend

__all__ = ["backend", "redis_backend", "registry", "state"]


@pytest.fixture
async def state(backend: Backend) -> AsyncIterator[StateStore]:
    store = open_state(backend.url())
    yield store
    await store.close()


@pytest.fixture
def registry(state: StateStore) -> Registry:
    return Registry(state)
