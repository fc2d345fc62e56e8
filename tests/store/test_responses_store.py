"""Stored responses (``open_responses``) on a SQLite file and on the real Redis, at the URL the
bus uses: filed by id and key id, another key's id reads as missing, retention (expired ones are
gone and swept), the per-key cap, and ``purge`` by date and key id."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio

from standby.store import open_responses
from standby.store.errors import BusError
from standby.store.responses import ResponseStore, SQLiteResponses
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


async def test_a_batch_is_written_together_and_each_is_readable_when_it_returns(
    opened: Open, backend: Backend
) -> None:
    """``put_many`` (what the gateway writes every ``write_interval_s``) stores documents of
    several keys at once, each readable by its own key only once it returns, and applies each
    key's cap to the whole batch: 300 documents, three times the Redis pool's connections."""
    store = opened(max_stored=250)
    batch = [(f"resp_{n}", KEY_A if n % 3 else KEY_B, b'{"n": %d}' % n) for n in range(300)]
    await store.put_many(batch)
    assert await store.get("resp_299", KEY_A) == b'{"n": 299}'
    assert await store.get("resp_299", KEY_B) is None
    assert await store.get("resp_0", KEY_B) == b'{"n": 0}'
    assert len(await stored_ids(backend)) == 300  # A has 200, B 100: both within the cap
    await store.put_many([(f"resp_more{n}", KEY_A, b"{}") for n in range(60)])
    ids = await stored_ids(backend)
    assert len(ids) == 350  # A's oldest 10 went (260 over a cap of 250), none of B's
    assert sum(1 for n in range(300) if n % 3 and f"resp_{n}" not in ids) == 10


async def test_concurrent_puts_each_return_once_readable(opened: Open) -> None:
    store = opened(max_stored=1000)

    async def put_then_get(n: int) -> bytes | None:
        await store.put(f"resp_{n}", KEY_A, b'{"n": %d}' % n)
        return await store.get(f"resp_{n}", KEY_A)

    got = await asyncio.gather(*(put_then_get(n) for n in range(50)))
    assert got == [b'{"n": %d}' % n for n in range(50)]


OLD_SCHEMA = """
CREATE TABLE standby_responses (id TEXT PRIMARY KEY, key_id TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL NOT NULL, doc BLOB NOT NULL);
CREATE INDEX standby_responses_key ON standby_responses (key_id, created_at);
CREATE INDEX standby_responses_expiry ON standby_responses (expires_at);
"""


async def test_the_cap_counts_rows_of_an_older_file_and_every_delete(tmp_path: Path) -> None:
    """SQLite keeps each key's count beside its rows (the cap is one lookup, not a COUNT): a
    file written before the count existed is counted when opened, and every way a row goes
    (a delete, a purge, the cap itself, expiry, a put over the same id) keeps it exact."""
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as db:  # as the store's first version left it
        db.executescript(OLD_SCHEMA)
        far = time.time() + 3600
        db.executemany(
            "INSERT INTO standby_responses VALUES (?, ?, ?, ?, ?)",
            [(f"resp_old{n}", KEY_A, n, far, b"{}") for n in range(4)],
        )
        db.commit()
    store = open_responses(f"sqlite:///{path}", retention_s=3600, max_stored=4)
    try:
        await store.put("resp_new0", KEY_A, b"{}")  # the fifth: the oldest goes
        assert await store.get("resp_old0", KEY_A) is None
        assert await store.delete("resp_old1", KEY_A) is True
        assert await store.purge(before=datetime.fromtimestamp(3, UTC)) == 1  # resp_old2
        await store.put("resp_new0", KEY_A, b'{"again": 1}')  # the same id: still one row
        await store.put("resp_new1", KEY_A, b"{}")
        await store.put("resp_new2", KEY_A, b"{}")  # four: resp_old3 and three new ones
        assert sorted(rows_of(path)) == ["resp_new0", "resp_new1", "resp_new2", "resp_old3"]
        await store.put("resp_new3", KEY_A, b"{}")  # five: resp_old3 goes
        assert sorted(rows_of(path)) == ["resp_new0", "resp_new1", "resp_new2", "resp_new3"]
        assert counts_of(path) == {KEY_A: 4}
    finally:
        await store.close()
    expiring = open_responses(f"sqlite:///{path}", retention_s=0.2, max_stored=4)
    try:
        await expiring.put("resp_b", KEY_B, b"{}")
        await asyncio.sleep(0.3)
        await expiring.put("resp_b2", KEY_B, b"{}")  # sweeps resp_b
        assert counts_of(path) == {KEY_A: 4, KEY_B: 1}
    finally:
        await expiring.close()


def rows_of(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [r[0] for r in db.execute("SELECT id FROM standby_responses")]


def counts_of(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT key_id, n FROM standby_responses_count WHERE n > 0"))


async def test_puts_to_a_locked_file_fail_each_with_a_bus_error_then_work_again(
    tmp_path: Path,
) -> None:
    """A write that cannot be made (another process holds the file's write lock past the
    busy timeout) fails with the store's error, a batch as a whole; none is left waiting."""
    path = tmp_path / "r.db"
    store = SQLiteResponses(path, retention_s=3600, max_stored=10, busy_timeout_s=0.1)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        results = await asyncio.gather(
            *(store.put(f"resp_{n}", KEY_A, b"{}") for n in range(3)),
            store.put_many([(f"resp_b{n}", KEY_A, b"{}") for n in range(3)]),
            return_exceptions=True,
        )
        assert all(isinstance(r, BusError) and "locked" in str(r) for r in results), results
        holder.execute("ROLLBACK")
        await store.put("resp_ok", KEY_A, b"{}")
        assert await store.get("resp_ok", KEY_A) == b"{}"
        assert rows_of(path) == ["resp_ok"]
    finally:
        holder.close()
        await store.close()
