"""Stored responses of the Responses API, beside the event bus: a table of the bus's SQLite file,
or keys next to its Redis streams (``open_responses`` in ``connect.py`` picks by URL).

A stored response is an opaque JSON document (the gateway's ``responses_state`` writes and
reads it) filed under its id and the gateway key id that made it. Every read and delete names
both: a document of another key is the same ``None`` / ``False`` as one that does not exist.
Each document lives ``retention_s`` seconds from its making: an older one is never returned,
and is swept (SQLite: on every write; Redis: its own expiry). A key keeps at most
``max_stored`` documents; a write beyond that deletes that key's oldest. ``purge`` deletes by
making time and/or key id, as ``standby data purge`` does for captured events.

The anonymous key (gateway auth off) is filed as ``""``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from abc import abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from standby.store import sqlite
from standby.store.closing import Closable
from standby.store.errors import BusError

DEFAULT_REDIS_PREFIX = "standby:responses:"

Put = tuple[str, str, bytes]  # a document to store: its id, its key id, the document


class ResponseStore(Closable):
    """Documents by (id, key id), each for ``retention_s`` seconds, ``max_stored`` per key."""

    def __init__(self, *, retention_s: float, max_stored: int) -> None:
        self.retention_s = retention_s
        self.max_stored = max_stored

    async def put(self, response_id: str, key_id: str, doc: bytes) -> None:
        """Store ``doc`` as ``response_id`` of ``key_id`` (replacing one of the same id)."""
        await self.put_many([(response_id, key_id, doc)])

    @abstractmethod
    async def put_many(self, batch: list[Put]) -> None:
        """Store each ``(id, key id, document)`` of ``batch`` together (SQLite: in one
        transaction); returns once every one is readable, raises ``BusError`` if none is."""

    @abstractmethod
    async def get(self, response_id: str, key_id: str) -> bytes | None:
        """The document, or None: unknown, expired, or another key's."""

    @abstractmethod
    async def delete(self, response_id: str, key_id: str) -> bool:
        """Delete the document; False when there was none for this key."""

    @abstractmethod
    async def purge(self, *, before: datetime | None = None, key_id: str | None = None) -> int:
        """Delete the documents made before ``before`` and/or of ``key_id`` (both given: both
        must hold; neither: all); return how many."""

    @abstractmethod
    async def close(self) -> None: ...


_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS standby_responses (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS standby_responses_key ON standby_responses (key_id, created_at);
CREATE INDEX IF NOT EXISTS standby_responses_expiry ON standby_responses (expires_at);
CREATE TABLE IF NOT EXISTS standby_responses_count (
    key_id TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS standby_responses_added AFTER INSERT ON standby_responses BEGIN
    INSERT INTO standby_responses_count VALUES (NEW.key_id, 1)
        ON CONFLICT (key_id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS standby_responses_removed AFTER DELETE ON standby_responses BEGIN
    UPDATE standby_responses_count SET n = n - 1 WHERE key_id = OLD.key_id;
END;
INSERT OR IGNORE INTO standby_responses_count
    SELECT key_id, COUNT(*) FROM standby_responses GROUP BY key_id;
COMMIT;
"""
# ``standby_responses_count``: how many documents each key id has, kept by the two triggers in
# the same transaction as every insert and delete (whichever process makes it), so a write
# checks ``max_stored`` with one lookup instead of counting the key's rows (a COUNT over
# ``max_stored`` index entries: ~0.2 ms per write at 5,000). The INSERT OR IGNORE counts the
# rows of a file written before the table existed (a no-op on a file that has it).


class SQLiteResponses(ResponseStore):
    """A table of a SQLite file (WAL; several gateways on one machine may share it), used from
    one thread so the event loop never waits on the file. ``put_many`` writes its batch in one
    transaction (the gateway's ``ResponseKeeper`` gathers the responses finished within
    ``responses.write_interval_s`` into one)."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention_s: float,
        max_stored: int,
        busy_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(retention_s=retention_s, max_stored=max_stored)
        self.path = Path(path)
        try:
            self._conn = sqlite.connect(self.path, busy_timeout_s=busy_timeout_s)
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise BusError(f"responses {self.path}: cannot open: {e}", reason="error") from None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="standby-responses")

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except sqlite3.Error as e:
            raise BusError(f"responses {self.path}: {e}", reason="error") from None

    async def put_many(self, batch: list[Put]) -> None:
        await self._run(self._write, batch)

    def _write(self, batch: list[Put]) -> None:
        now = time.time()
        expires = now + self.retention_s
        with sqlite.transaction(self._conn) as db:
            db.execute("DELETE FROM standby_responses WHERE expires_at <= ?", (now,))
            for response_id, key_id, doc in batch:
                # a delete, then an insert (not INSERT OR REPLACE, whose delete fires no trigger)
                db.execute("DELETE FROM standby_responses WHERE id = ?", (response_id,))
                db.execute(
                    "INSERT INTO standby_responses VALUES (?, ?, ?, ?, ?)",
                    (response_id, key_id, now, expires, doc),
                )
            for key_id in {put[1] for put in batch}:
                (count,) = db.execute(
                    "SELECT n FROM standby_responses_count WHERE key_id = ?", (key_id,)
                ).fetchone()
                if count > self.max_stored:
                    db.execute(
                        "DELETE FROM standby_responses WHERE id IN (SELECT id FROM "
                        "standby_responses WHERE key_id = ? ORDER BY created_at LIMIT ?)",
                        (key_id, count - self.max_stored),
                    )

    async def get(self, response_id: str, key_id: str) -> bytes | None:
        def read() -> bytes | None:
            row = self._conn.execute(
                "SELECT doc FROM standby_responses WHERE id = ? AND key_id = ? AND expires_at > ?",
                (response_id, key_id, time.time()),
            ).fetchone()
            return bytes(row[0]) if row else None

        result: bytes | None = await self._run(read)
        return result

    async def delete(self, response_id: str, key_id: str) -> bool:
        def remove() -> bool:
            cur = self._conn.execute(
                "DELETE FROM standby_responses WHERE id = ? AND key_id = ? AND expires_at > ?",
                (response_id, key_id, time.time()),
            )
            return cur.rowcount > 0

        deleted: bool = await self._run(remove)
        return deleted

    async def purge(self, *, before: datetime | None = None, key_id: str | None = None) -> int:
        where: list[str] = ["1"]
        args: list[float | str] = []
        if before is not None:
            where.append("created_at < ?")
            args.append(before.timestamp())
        if key_id is not None:
            where.append("key_id = ?")
            args.append(key_id)

        def remove() -> int:
            sql = f"DELETE FROM standby_responses WHERE {' AND '.join(where)}"
            return int(self._conn.execute(sql, args).rowcount)

        removed: int = await self._run(remove)
        return removed

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        self._thread.shutdown(wait=True)


class RedisResponses(ResponseStore):
    """Keys next to the bus's streams: ``{prefix}r:{id}``, a hash of the key id, making time
    and document that expires with the retention; ``{prefix}k:{key id}``, a sorted set of that
    key's ids by making time (for ``max_stored`` and ``purge``); ``{prefix}keys``, the key ids
    with stored responses."""

    def __init__(
        self, client: Any, *, prefix: str, url: str, retention_s: float, max_stored: int
    ) -> None:
        super().__init__(retention_s=retention_s, max_stored=max_stored)
        self.client = client
        self.prefix = prefix
        self.url = url

    def _doc(self, response_id: str) -> str:
        return f"{self.prefix}r:{response_id}"

    def _index(self, key_id: str) -> str:
        return f"{self.prefix}k:{key_id}"

    def _error(self, e: Exception) -> BusError:
        return BusError(f"responses {self.url}: {type(e).__name__}: {e}", reason="error")

    async def put_many(self, batch: list[Put]) -> None:
        from redis import RedisError

        now = time.time()
        ttl_ms = max(1, int(self.retention_s * 1000))
        keys = sorted({key_id for _, key_id, _ in batch})
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for response_id, key_id, doc in batch:
                    name = self._doc(response_id)
                    pipe.hset(name, mapping={"k": key_id, "t": repr(now), "d": doc})
                    pipe.pexpire(name, ttl_ms)
                    pipe.zadd(self._index(key_id), {response_id: now})
                for key_id in keys:
                    index = self._index(key_id)
                    pipe.zremrangebyscore(index, "-inf", now - self.retention_s)
                    pipe.pexpire(index, ttl_ms)
                    pipe.sadd(f"{self.prefix}keys", key_id)
                    pipe.zcard(index)
                counts = (await pipe.execute())[-4 * len(keys) + 3 :: 4]
            for key_id, count in zip(keys, counts, strict=True):
                if count > self.max_stored:
                    oldest = await self.client.zpopmin(self._index(key_id), count - self.max_stored)
                    if oldest:
                        await self.client.delete(*(self._doc(m.decode()) for m, _ in oldest))
        except RedisError as e:
            raise self._error(e) from None

    async def _owned(self, response_id: str, key_id: str) -> bytes | None:
        """The document if it is ``key_id``'s and within the retention."""
        owner, made, doc = await self.client.hmget(self._doc(response_id), ["k", "t", "d"])
        if owner is None or owner.decode() != key_id or doc is None:
            return None
        if float(made) + self.retention_s <= time.time():  # Redis expires it any moment now
            return None
        return bytes(doc)

    async def get(self, response_id: str, key_id: str) -> bytes | None:
        from redis import RedisError

        try:
            return await self._owned(response_id, key_id)
        except RedisError as e:
            raise self._error(e) from None

    async def delete(self, response_id: str, key_id: str) -> bool:
        from redis import RedisError

        try:
            if await self._owned(response_id, key_id) is None:
                return False
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(self._doc(response_id))
                pipe.zrem(self._index(key_id), response_id)
                deleted = (await pipe.execute())[0]
        except RedisError as e:
            raise self._error(e) from None
        return bool(deleted)

    async def purge(self, *, before: datetime | None = None, key_id: str | None = None) -> int:
        from redis import RedisError

        high = f"({before.timestamp()}" if before is not None else "+inf"
        try:
            if key_id is not None:
                keys = [key_id]
            else:
                keys = [k.decode() for k in await self.client.smembers(f"{self.prefix}keys")]
            removed = 0
            for key in keys:
                index = self._index(key)
                ids = [m.decode() for m in await self.client.zrangebyscore(index, "-inf", high)]
                if not ids:
                    continue
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.delete(*(self._doc(i) for i in ids))
                    pipe.zrem(index, *ids)
                    removed += (await pipe.execute())[0]
        except RedisError as e:
            raise self._error(e) from None
        return removed

    async def close(self) -> None:
        await self.client.aclose()
