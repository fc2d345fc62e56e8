"""Small shared state of the pipeline — the model registry, pipeline runs, leases — kept where
the event bus is: a table in the bus's SQLite file, or keys next to the bus's Redis streams.

One primitive serves all of it: ``update(key, fn)`` reads a JSON document, applies ``fn`` and
writes the result atomically (SQLite: one ``BEGIN IMMEDIATE`` transaction; Redis: WATCH/MULTI,
retried on conflict), so several gateways and workers on several machines can share it.
``open_state`` (``connect.py``) opens the backend a URL names:

    state = open_state("sqlite:///./.standby/events.db")   # or redis://127.0.0.1:6379/0
    doc = await state.update("registry", lambda doc: {**(doc or {}), "n": 1})
"""

from __future__ import annotations

import asyncio
import sqlite3
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from standby.store import sqlite
from standby.store.closing import Closable
from standby.store.errors import BusError

Doc = Any  # a JSON value: dict, list, str, number, bool or None
Update = Callable[[Any], Any]  # the stored document (None when absent) -> the new one

DEFAULT_REDIS_PREFIX = "standby:state:"


class StateStore(Closable):
    """JSON documents by key, each updated atomically."""

    @abstractmethod
    async def get(self, key: str) -> Doc | None:
        """The document at ``key`` (None when there is none)."""

    @abstractmethod
    async def update(self, key: str, fn: Update) -> Doc:
        """Apply ``fn`` to the document at ``key`` (None when absent) and store what it returns,
        atomically; returns the stored document. ``fn`` may run more than once (Redis retries
        on a conflicting write), so it must not have side effects. An exception from ``fn``
        leaves the document as it was and propagates."""

    @abstractmethod
    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS standby_state (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    updated_at REAL NOT NULL DEFAULT (julianday('now'))
);
"""


class SQLiteState(StateStore):
    """Documents in a table of a SQLite file (WAL; several processes may open it)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        try:
            self._conn = sqlite.connect(self.path, busy_timeout_s=busy_timeout_s)
        except (OSError, sqlite3.Error) as e:
            raise BusError(f"state {self.path}: cannot open: {e}", reason="error") from None
        try:
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as e:
            self._conn.close()
            raise BusError(f"state {self.path}: cannot open: {e}", reason="error") from None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="standby-state")

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except sqlite3.Error as e:
            raise BusError(f"state {self.path}: {e}", reason="error") from None

    async def get(self, key: str) -> Doc | None:
        def read() -> Doc | None:
            row = self._conn.execute(
                "SELECT value FROM standby_state WHERE key = ?", (key,)
            ).fetchone()
            return orjson.loads(row[0]) if row else None

        return await self._run(read)

    async def update(self, key: str, fn: Update) -> Doc:
        def write() -> Doc:
            with sqlite.transaction(self._conn) as db:
                row = db.execute("SELECT value FROM standby_state WHERE key = ?", (key,)).fetchone()
                new = fn(orjson.loads(row[0]) if row else None)
                db.execute(
                    "INSERT INTO standby_state (key, value) VALUES (?, ?) ON CONFLICT (key)"
                    " DO UPDATE SET value = excluded.value, updated_at = julianday('now')",
                    (key, orjson.dumps(new)),
                )
            return new

        return await self._run(write)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        self._thread.shutdown(wait=True)


class RedisState(StateStore):
    """Documents as Redis strings under ``prefix``; updates by optimistic WATCH/MULTI."""

    def __init__(self, client: Any, *, prefix: str, url: str) -> None:
        self.client = client
        self.prefix = prefix
        self.url = url

    def _errors(self, e: Exception) -> BusError:
        return BusError(f"state {self.url}: {type(e).__name__}: {e}", reason="error")

    async def get(self, key: str) -> Doc | None:
        from redis import RedisError

        try:
            raw = await self.client.get(self.prefix + key)
        except RedisError as e:
            raise self._errors(e) from None
        return orjson.loads(raw) if raw is not None else None

    async def update(self, key: str, fn: Update) -> Doc:
        from redis import RedisError, WatchError

        name = self.prefix + key
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(name)
                        raw = await pipe.get(name)
                        new = fn(orjson.loads(raw) if raw is not None else None)
                        pipe.multi()
                        pipe.set(name, orjson.dumps(new))
                        await pipe.execute()
                        return new
                    except WatchError:
                        continue  # someone else wrote in between: read again
        except RedisError as e:
            raise self._errors(e) from None

    async def close(self) -> None:
        await self.client.aclose()
