"""The state store's one primitive, on SQLite and on real Redis: atomic read-modify-write,
even from many writers at once, and an update that raises changes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from standby.errors import ConfigError
from standby.store import open_state
from standby.store.state import StateStore
from tests.store.conftest import Backend


async def test_get_and_update(state: StateStore) -> None:
    assert await state.get("doc") is None
    assert await state.update("doc", lambda d: {"n": 1}) == {"n": 1}
    assert await state.update("doc", lambda d: {**d, "m": [1, 2]}) == {"n": 1, "m": [1, 2]}
    assert await state.get("doc") == {"n": 1, "m": [1, 2]}


async def test_concurrent_updates_from_several_connections_lose_nothing(
    backend: Backend,
) -> None:
    stores = [open_state(backend.url()) for _ in range(4)]
    try:

        async def bump(store: StateStore, times: int) -> None:
            for _ in range(times):
                await store.update("counter", lambda d: (d or 0) + 1)

        await asyncio.gather(*(bump(s, 25) for s in stores))
        assert await stores[0].get("counter") == 100
    finally:
        for s in stores:
            await s.close()


async def test_a_failing_update_changes_nothing(state: StateStore) -> None:
    await state.update("doc", lambda d: {"n": 1})

    def boom(doc: Any) -> Any:
        doc["n"] = 2
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await state.update("doc", boom)
    assert await state.get("doc") == {"n": 1}


def test_bad_urls() -> None:
    with pytest.raises(ConfigError, match="unsupported scheme"):
        open_state("kafka://nowhere")
    with pytest.raises(ConfigError, match="expected sqlite:///"):
        open_state("sqlite://host/x.db")
