"""The embedded bus: one SQLite file in WAL mode, shared by every process on the machine.

Tables: ``topics`` (last offset per topic), ``events`` (dense offsets per topic), ``groups``
(each consumer group's cursor per topic), ``inflight`` (deliveries not acked yet: consumer,
attempt, delivery time) and ``seen`` (processed event ids per scope, with expiry).

Every sqlite3 call runs on one dedicated thread per bus, so the event loop never blocks on disk
and the connection is only ever used by one thread. Writes are short ``BEGIN IMMEDIATE``
transactions; ``synchronous=NORMAL`` under WAL keeps a committed batch across a process crash
(SIGKILL) and may lose the last commits only on power loss. sqlite3 errors are translated into
BusError here, by SQLite result code.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from standby.store import sqlite
from standby.store.bus import (
    DEFAULT_CLAIM_AFTER_S,
    DEFAULT_SEEN_TTL_S,
    Bus,
    Delivery,
    check_name,
    decode_rows,
    purge_match,
)
from standby.store.envelope import check_sizes
from standby.store.errors import BusError

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (topic TEXT PRIMARY KEY, last_offset INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, offset INTEGER NOT NULL, body BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_topic ON events (topic, offset);
CREATE TABLE IF NOT EXISTS groups (
    topic TEXT NOT NULL, grp TEXT NOT NULL, cursor INTEGER NOT NULL, PRIMARY KEY (topic, grp))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inflight (
    topic TEXT NOT NULL, grp TEXT NOT NULL, offset INTEGER NOT NULL, consumer TEXT NOT NULL,
    attempt INTEGER NOT NULL, delivered_at REAL NOT NULL, PRIMARY KEY (topic, grp, offset))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (
    scope TEXT NOT NULL, event_id TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (scope, event_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_expiry ON seen (expires_at);
"""
_SCHEMA_VERSION = 1

# Primary SQLite result code -> (metric reason, what it means to an operator).
_CODES = {
    sqlite3.SQLITE_FULL: ("full", "the disk or the bus's size limit is full"),
    sqlite3.SQLITE_READONLY: ("readonly", "the file is read-only"),
    sqlite3.SQLITE_PERM: ("readonly", "permission denied"),
    sqlite3.SQLITE_CANTOPEN: ("unavailable", "cannot open the file (missing directory, no access)"),
    sqlite3.SQLITE_CORRUPT: ("corrupt", "the file is corrupt"),
    sqlite3.SQLITE_NOTADB: ("corrupt", "the file is not an SQLite database (corrupt?)"),
    sqlite3.SQLITE_BUSY: ("busy", "locked by another process for longer than busy_timeout"),
    sqlite3.SQLITE_LOCKED: ("busy", "locked by another connection"),
    sqlite3.SQLITE_IOERR: ("io", "disk I/O error"),
}


def _translate(err: sqlite3.Error, path: Path) -> BusError:
    code = getattr(err, "sqlite_errorcode", None)
    reason, meaning = _CODES.get(code & 0xFF if code is not None else -1, ("error", str(err)))
    name = getattr(err, "sqlite_errorname", type(err).__name__)
    return BusError(f"sqlite bus {path}: {meaning} ({name})", reason=reason)


def _connect(path: Path, busy_timeout_s: float, max_bytes: int) -> sqlite3.Connection:
    try:
        conn = sqlite.connect(path, busy_timeout_s=busy_timeout_s, max_bytes=max_bytes)
    except OSError as e:
        raise BusError(
            f"sqlite bus {path}: cannot create directory {path.parent}: {e.strerror}",
            reason="readonly",
        ) from None
    try:
        version = sqlite.schema_version(conn)
        if version > _SCHEMA_VERSION:
            raise BusError(
                f"sqlite bus {path}: written by a newer standby (schema {version}, "
                f"this one knows {_SCHEMA_VERSION})",
                reason="error",
            )
        conn.executescript(_SCHEMA + f"PRAGMA user_version = {_SCHEMA_VERSION};")
    except BaseException:
        conn.close()
        raise
    return conn


class SQLiteBus(Bus):
    """The bus in one SQLite file; several processes may open the same file."""

    def __init__(
        self,
        path: str | Path,
        *,
        claim_after_s: float = DEFAULT_CLAIM_AFTER_S,
        maxlen: int = 0,
        max_bytes: int = 0,
        busy_timeout_s: float = 5.0,
        poll_s: float = 0.05,
    ) -> None:
        """Open (creating directories and tables) ``path``. ``maxlen`` > 0 keeps only the newest
        ``maxlen`` events per topic; ``max_bytes`` > 0 caps the file (SQLITE_FULL beyond)."""
        self.path = Path(path)
        self.url = f"sqlite:///{path}"
        self.claim_after_s = claim_after_s
        self.maxlen = maxlen
        self._poll_s = poll_s
        self._closed = False
        self._wake: asyncio.Event | None = None
        self._next_expiry_sweep = 0.0
        try:
            self._conn = _connect(self.path, busy_timeout_s, max_bytes)
        except sqlite3.Error as e:
            raise _translate(e, self.path) from None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="standby-bus-sqlite")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise BusError(f"sqlite bus {self.path}: the bus is closed", reason="closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except sqlite3.Error as e:
            raise _translate(e, self.path) from None

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite.transaction(self._conn)

    # -- publish -------------------------------------------------------------------------------

    async def publish_encoded(self, topic: str, bodies: Sequence[bytes]) -> list[str]:
        check_name("topic", topic)
        check_sizes(bodies)  # EventTooLarge before anything is written
        if not bodies:
            return []
        first = await self._run(self._append, topic, bodies)
        if self._wake is not None:
            self._wake.set()
            self._wake = None
        return [str(first + i) for i in range(len(bodies))]

    def _append(self, topic: str, bodies: list[bytes]) -> int:
        with self._tx() as db:
            row = db.execute("SELECT last_offset FROM topics WHERE topic = ?", (topic,)).fetchone()
            first = (row[0] if row else 0) + 1
            last = first + len(bodies) - 1
            db.executemany(
                "INSERT INTO events (topic, offset, body) VALUES (?, ?, ?)",
                ((topic, first + i, body) for i, body in enumerate(bodies)),
            )
            db.execute(
                "INSERT INTO topics VALUES (?1, ?2)"
                " ON CONFLICT (topic) DO UPDATE SET last_offset = ?2",
                (topic, last),
            )
            if self.maxlen:
                db.execute(
                    "DELETE FROM events WHERE topic = ? AND offset <= ?",
                    (topic, last - self.maxlen),
                )
        return first

    # -- consume -------------------------------------------------------------------------------

    async def consume(
        self, topic: str, group: str, consumer: str, *, count: int = 100, block_s: float = 0.0
    ) -> list[Delivery]:
        for kind, name in (("topic", topic), ("group", group), ("consumer", consumer)):
            check_name(kind, name)
        if count < 1:
            raise ValueError("count must be at least 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_s
        while True:
            rows = await self._run(self._claim, topic, group, consumer, count)
            good, bad = decode_rows(rows, self.url)
            if bad:
                await self.ack(topic, group, bad)
            remaining = deadline - loop.time()
            if good or remaining <= 0:
                return good
            if not rows:  # wait for a publish in this process, or poll for other processes
                if self._wake is None:
                    self._wake = asyncio.Event()
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(self._poll_s, remaining))

    def _claim(
        self, topic: str, group: str, consumer: str, count: int
    ) -> list[tuple[str, bytes, int]]:
        db = self._conn
        now = time.time()
        expired = now - self.claim_after_s
        # A lock-free look first, so that idle consumers polling never take the write lock.
        ready = db.execute(
            "SELECT COALESCE((SELECT last_offset FROM topics WHERE topic = ?1), 0)"
            " > COALESCE((SELECT cursor FROM groups WHERE topic = ?1 AND grp = ?2), 0)"
            " OR EXISTS (SELECT 1 FROM inflight WHERE topic = ?1 AND grp = ?2"
            " AND delivered_at <= ?3)",
            (topic, group, expired),
        ).fetchone()[0]
        if not ready:
            return []
        with self._tx():
            again = db.execute(
                "SELECT i.offset, i.attempt + 1, e.body FROM inflight i LEFT JOIN events e"
                " ON e.topic = i.topic AND e.offset = i.offset"
                " WHERE i.topic = ? AND i.grp = ? AND i.delivered_at <= ?"
                " ORDER BY i.offset LIMIT ?",
                (topic, group, expired, count),
            ).fetchall()
            gone = [(topic, group, off) for off, _, body in again if body is None]  # trimmed
            db.executemany("DELETE FROM inflight WHERE topic = ? AND grp = ? AND offset = ?", gone)
            rows = [(off, attempt, body) for off, attempt, body in again if body is not None]
            row = db.execute(
                "SELECT cursor FROM groups WHERE topic = ? AND grp = ?", (topic, group)
            ).fetchone()
            cursor = row[0] if row else 0
            fresh = db.execute(
                "SELECT offset, 1, body FROM events WHERE topic = ? AND offset > ?"
                " ORDER BY offset LIMIT ?",
                (topic, cursor, count - len(rows)),
            ).fetchall()
            if fresh:
                db.execute(
                    "INSERT INTO groups VALUES (?, ?, ?) ON CONFLICT (topic, grp)"
                    " DO UPDATE SET cursor = excluded.cursor",
                    (topic, group, fresh[-1][0]),
                )
            rows += fresh
            db.executemany(
                "INSERT OR REPLACE INTO inflight VALUES (?, ?, ?, ?, ?, ?)",
                ((topic, group, off, consumer, attempt, now) for off, attempt, _ in rows),
            )
        return [(str(off), body, attempt) for off, attempt, body in rows]

    async def ack(self, topic: str, group: str, delivery_ids: Iterable[str]) -> int:
        ids = list(delivery_ids)
        if not all(i.isdigit() for i in ids):
            raise ValueError(f"not a delivery id of this bus in {ids!r}")
        offsets = [int(i) for i in ids]
        return await self._run(self._ack, topic, group, offsets) if offsets else 0

    def _ack(self, topic: str, group: str, offsets: list[int]) -> int:
        with self._tx() as db:
            before = db.total_changes
            db.executemany(
                "DELETE FROM inflight WHERE topic = ? AND grp = ? AND offset = ?",
                ((topic, group, off) for off in offsets),
            )
            return db.total_changes - before

    # -- retention -----------------------------------------------------------------------------

    async def purge(
        self, topic: str, *, before: datetime | None = None, key_id: str | None = None
    ) -> list[str]:
        check_name("topic", topic)
        return await self._run(self._purge, topic, before, key_id)

    def _purge(self, topic: str, before: datetime | None, key_id: str | None) -> list[str]:
        with self._tx() as db:
            rows = db.execute("SELECT offset, body FROM events WHERE topic = ?", (topic,))
            doomed = [
                (off, eid) for off, body in rows if (eid := purge_match(body, before, key_id))
            ]
            db.executemany(
                "DELETE FROM events WHERE topic = ? AND offset = ?",
                ((topic, off) for off, _ in doomed),
            )
            db.executemany(
                "DELETE FROM inflight WHERE topic = ? AND offset = ?",
                ((topic, off) for off, _ in doomed),
            )
        return [eid for _, eid in doomed]

    # -- idempotency ---------------------------------------------------------------------------

    async def seen_many(self, scope: str, event_ids: Iterable[str]) -> set[str]:
        check_name("scope", scope)
        ids = list(event_ids)
        return await self._run(self._seen, scope, ids) if ids else set()

    def _seen(self, scope: str, ids: list[str]) -> set[str]:
        found: set[str] = set()
        now = time.time()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in self._conn.execute(
                    f"SELECT event_id FROM seen WHERE scope = ? AND expires_at > ?"
                    f" AND event_id IN ({marks})",
                    (scope, now, *chunk),
                )
            )
        return found

    async def mark_seen(
        self, scope: str, event_ids: Iterable[str], *, ttl_s: float = DEFAULT_SEEN_TTL_S
    ) -> None:
        check_name("scope", scope)
        ids = list(event_ids)
        if ids:
            await self._run(self._mark, scope, ids, ttl_s)

    def _mark(self, scope: str, ids: list[str], ttl_s: float) -> None:
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO seen VALUES (?, ?, ?)",
                ((scope, i, now + ttl_s) for i in ids),
            )
            if now >= self._next_expiry_sweep:
                db.execute("DELETE FROM seen WHERE expires_at <= ?", (now,))
                self._next_expiry_sweep = now + 60

    # -- lifecycle -----------------------------------------------------------------------------

    async def check(self) -> None:
        await self._run(self._check)

    def _check(self) -> None:
        with self._tx() as db:  # takes the write lock: proves the file is writable
            db.execute("SELECT count(*) FROM topics").fetchone()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True  # refuse new calls; the ones already queued run first
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        finally:
            self._thread.shutdown(wait=True)
