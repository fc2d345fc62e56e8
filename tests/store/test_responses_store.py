"""Stored responses (``open_responses``) on a SQLite file and on the real Redis, at the URL the
bus uses: filed by id and key id, another key's id reads as missing, retention (expired ones are
gone and swept), the per-key cap, and ``purge`` by date and key id."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio

from standby.store import open_responses
from standby.store.responses import ResponseStore
from tests.store.conftest import REDIS_URL, Backend

KEY_A = "aaaaaaaaaaaaaaaa"
KEY_B = "bbbbbbbbbbbbbbbb"

Open = Callable[..., ResponseStore]


@pytest.fixture
async def opened(backend: Backend) -> AsyncIterator[Open]:
    stores: list[ResponseStore] = []

    def open_(retention_s: float = 3600, max_stored: int = 100) -> ResponseStore:
        store = open_responses(backend.url(), retention_s=retention_s, max_stored=max_stored)
        stores.append(store)
        return store

    yield open_
    for store in stores:
        await store.close()


async def stored_ids(backend: Backend) -> list[str]:
    """What the storage itself holds, read past the store's own checks."""
    if backend.kind == "sqlite":
        with sqlite3.connect(backend.path) as db:
            return [r[0] for r in db.execute("SELECT id FROM standby_responses ORDER BY id")]
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [k.decode() async for k in client.scan_iter(match=f"{backend.prefix}responses:r:*")]
    finally:
        await client.aclose()
    return sorted(k.rsplit(":", 1)[1] for k in keys)


async def test_a_response_is_read_and_deleted_by_its_own_key_only(
    opened: Open, backend: Backend
) -> None:
    store = opened()
    await store.put("resp_1", KEY_A, b'{"a": 1}')
    assert await store.get("resp_1", KEY_A) == b'{"a": 1}'
    assert await store.get("resp_1", KEY_B) is None
    assert await store.get("resp_2", KEY_A) is None
    assert await store.delete("resp_1", KEY_B) is False
    assert await store.get("resp_1", KEY_A) == b'{"a": 1}'  # B's delete did nothing
    assert await store.delete("resp_1", KEY_A) is True
    assert await store.get("resp_1", KEY_A) is None
    assert await store.delete("resp_1", KEY_A) is False
    assert await stored_ids(backend) == []


async def test_an_expired_response_is_gone_and_swept(opened: Open, backend: Backend) -> None:
    store = opened(retention_s=0.5)
    await store.put("resp_old", KEY_A, b"{}")
    assert await store.get("resp_old", KEY_A) == b"{}"
    await asyncio.sleep(0.7)
    assert await store.get("resp_old", KEY_A) is None
    assert await store.delete("resp_old", KEY_A) is False
    await store.put("resp_new", KEY_A, b"{}")  # SQLite sweeps on write, Redis on its own
    assert await stored_ids(backend) == ["resp_new"]


async def test_a_key_keeps_at_most_max_stored_the_oldest_go(opened: Open, backend: Backend) -> None:
    store = opened(max_stored=2)
    for n in range(3):
        await store.put(f"resp_a{n}", KEY_A, b"{}")
        await asyncio.sleep(0.01)  # distinct making times
    await store.put("resp_b0", KEY_B, b"{}")
    assert await store.get("resp_a0", KEY_A) is None
    assert await store.get("resp_a2", KEY_A) == b"{}"
    assert await stored_ids(backend) == ["resp_a1", "resp_a2", "resp_b0"]


async def test_purge_by_key_id_then_by_date(opened: Open, backend: Backend) -> None:
    store = opened()
    for rid, key in (("resp_1", KEY_A), ("resp_2", KEY_A), ("resp_3", KEY_B)):
        await store.put(rid, key, b"{}")
    assert await store.purge(key_id=KEY_A) == 2
    assert await stored_ids(backend) == ["resp_3"]
    assert await store.purge(before=datetime.now(UTC) - timedelta(days=1)) == 0
    assert await store.purge(before=datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert await stored_ids(backend) == []
