"""The bus on Redis Streams, for several gateway replicas and workers on several machines.

One stream per topic (``{prefix}topic:{topic}``), appended with ``XADD ... MAXLEN ~ n``
(approximate trimming, cheap; ``maxlen=0`` keeps everything). Consumer groups are created on
first use at the start of the stream (``XGROUP CREATE ... 0 MKSTREAM``, BUSYGROUP ignored);
``XREADGROUP`` hands out new entries, ``XACK`` settles them, and ``XAUTOCLAIM`` moves entries
idle longer than ``claim_after_s`` to the consumer asking (the attempt count is the entry's
delivery counter from ``XPENDING``). Processed ids are ``SET key 1 PX ttl`` keys.

redis-py errors are translated into BusError here; messages show the URL without password.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from redis import exceptions as rx
from redis.asyncio import Redis

from standby.store.bus import (
    DEFAULT_CLAIM_AFTER_S,
    DEFAULT_SEEN_TTL_S,
    Bus,
    Delivery,
    check_name,
    decode_rows,
    purge_match,
)
from standby.store.envelope import Event, check_sizes, encode_event
from standby.store.errors import BusError
from standby.store.urls import safe_url

DEFAULT_PREFIX = "standby:events:"
DEFAULT_MAXLEN = 100_000  # per topic; ~250 MB of typical inference events
_FIELD = b"e"
_STREAM_ID = re.compile(r"\d+-\d+")


class RedisBus(Bus):
    """The bus on one Redis server (or anything speaking its protocol with streams)."""

    def __init__(
        self,
        client: Redis,
        *,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        claim_after_s: float = DEFAULT_CLAIM_AFTER_S,
        maxlen: int = DEFAULT_MAXLEN,
    ) -> None:
        self.url = safe_url(url)
        self.prefix = prefix
        self.claim_after_s = claim_after_s
        self.maxlen = maxlen
        self._r = client
        self._secret = urlsplit(url).password
        self._groups: set[tuple[str, str]] = set()
        self._claim_cursor: dict[tuple[str, str], bytes | str] = {}
        self._next_claim: dict[tuple[str, str], float] = {}
        self._closed = False
        socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        self._block_slice_s = min(1.0, claim_after_s, (socket_timeout or 2.0) / 2)

    def _key(self, topic: str) -> str:
        return f"{self.prefix}topic:{check_name('topic', topic)}"

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The one place redis-py exceptions become BusError, most specific first."""
        if self._closed:
            raise BusError(f"redis bus {self.url}: the bus is closed", reason="closed")
        try:
            yield
        except rx.AuthenticationError as e:
            raise self._fail("authentication failed", e, "unavailable") from None
        except (rx.ConnectionError, rx.TimeoutError) as e:
            raise self._fail("cannot reach the server", e, "unavailable") from None
        except rx.ReadOnlyError as e:
            raise self._fail("the server is a read-only replica", e, "readonly") from None
        except rx.OutOfMemoryError as e:
            raise self._fail("the server is out of memory (maxmemory)", e, "full") from None
        except rx.RedisError as e:
            raise self._fail("command failed", e, "error") from None

    def _fail(self, what: str, err: Exception, reason: str) -> BusError:
        detail = str(err) or type(err).__name__
        if self._secret:
            detail = detail.replace(self._secret, "***")
        return BusError(f"redis bus {self.url}: {what}: {detail}", reason=reason)

    # -- publish -------------------------------------------------------------------------------

    async def publish(self, topic: str, event: Event) -> str:
        key, body = self._key(topic), encode_event(event)
        with self._errors():
            entry = await self._r.xadd(key, {_FIELD: body}, maxlen=self.maxlen or None)
        return _text(entry)

    async def publish_encoded(self, topic: str, bodies: Sequence[bytes]) -> list[str]:
        key = self._key(topic)
        check_sizes(bodies)  # EventTooLarge before anything is written
        if not bodies:
            return []
        with self._errors():
            async with self._r.pipeline(transaction=True) as pipe:  # MULTI ... EXEC: all or none
                for body in bodies:
                    pipe.xadd(key, {_FIELD: body}, maxlen=self.maxlen or None)
                entries = await pipe.execute()
        return [_text(e) for e in entries]

    # -- consume -------------------------------------------------------------------------------

    async def consume(
        self, topic: str, group: str, consumer: str, *, count: int = 100, block_s: float = 0.0
    ) -> list[Delivery]:
        key = self._key(topic)
        check_name("group", group)
        check_name("consumer", consumer)
        if count < 1:
            raise ValueError("count must be at least 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_s
        while True:
            # Block in short slices: under the client's socket timeout, and so that leases
            # expiring meanwhile are claimed without waiting for the whole block_s.
            wait = max(0.0, min(deadline - loop.time(), self._block_slice_s))
            rows = await self._read_group(key, group, consumer, count, wait)
            good, bad = decode_rows(rows, self.url)
            if bad:
                await self.ack(topic, group, bad)
            if good or loop.time() >= deadline:
                return good

    async def _read_group(
        self, key: str, group: str, consumer: str, count: int, block_s: float
    ) -> list[tuple[str, bytes, int]]:
        with self._errors():
            await self._ensure_group(key, group)
            try:
                return await self._read(key, group, consumer, count, block_s)
            except rx.ResponseError as e:
                if not str(e).startswith("NOGROUP"):  # the stream or group was deleted under us
                    raise
                self._groups.discard((key, group))
                await self._ensure_group(key, group)
                return await self._read(key, group, consumer, count, block_s)

    async def _ensure_group(self, key: str, group: str) -> None:
        if (key, group) in self._groups:
            return
        try:
            await self._r.xgroup_create(key, group, id="0", mkstream=True)
        except rx.ResponseError as e:
            if not str(e).startswith("BUSYGROUP"):
                raise
        self._groups.add((key, group))

    async def _read(
        self, key: str, group: str, consumer: str, count: int, block_s: float
    ) -> list[tuple[str, bytes, int]]:
        rows: list[tuple[str, bytes, int]] = []
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        # Redeliveries first: entries idle past the lease, scanning the pending list in turns;
        # after a scan that found the list done, the next waits one block slice (saves a round
        # trip per read in the steady state; a lease is taken over at most a slice late).
        now = time.monotonic()
        if now >= self._next_claim.get((key, group), 0.0):
            start = self._claim_cursor.get((key, group), "0-0")
            idle_ms = int(self.claim_after_s * 1000)
            claimed = await self._r.xautoclaim(key, group, consumer, idle_ms, start, count=count)
            cursor = self._claim_cursor[(key, group)] = claimed[0]
            more = len(claimed[1]) >= count or _text(cursor) != "0-0"
            self._next_claim[(key, group)] = now if more else now + self._block_slice_s
            entries = [e for e in claimed[1] if e and e[1]]
        if entries:
            async with self._r.pipeline(transaction=False) as pipe:
                for entry_id, _ in entries:
                    pipe.xpending_range(key, group, min=entry_id, max=entry_id, count=1)
                pending: list[list[dict[str, Any]]] = await pipe.execute()
            attempts = {p[0]["message_id"]: int(p[0]["times_delivered"]) for p in pending if p}
            for entry_id, fields in entries:
                rows.append((_text(entry_id), fields.get(_FIELD, b""), attempts.get(entry_id, 2)))
        if len(rows) < count:
            block = max(1, int(block_s * 1000)) if block_s > 0 and not rows else None
            streams: Any = await self._r.xreadgroup(
                group, consumer, {key: ">"}, count=count - len(rows), block=block
            )
            # RESP2: [[key, entries]]; RESP3 (``?protocol=3``): {key: [entries]}.
            if isinstance(streams, dict):
                batches = [entries for value in streams.values() for entries in value]
            else:
                batches = [entries for _, entries in streams or []]
            for fresh in batches:
                for entry_id, fields in fresh:
                    rows.append((_text(entry_id), fields.get(_FIELD, b""), 1))
        return rows

    async def ack(self, topic: str, group: str, delivery_ids: Iterable[str]) -> int:
        key = self._key(topic)
        ids = list(delivery_ids)
        for i in ids:
            if not _STREAM_ID.fullmatch(i):
                raise ValueError(f"not a delivery id of this bus: {i!r}")
        if not ids:
            return 0
        with self._errors():
            return int(await self._r.xack(key, group, *ids))

    # -- retention -----------------------------------------------------------------------------

    async def purge(
        self, topic: str, *, before: datetime | None = None, key_id: str | None = None
    ) -> list[str]:
        """XRANGE through the stream in pages, XDEL what matches, XACK it in every group."""
        key = self._key(topic)
        doomed: list[tuple[str, str]] = []
        start = "-"
        with self._errors():
            while True:
                entries: list[Any] = await self._r.xrange(key, start, "+", count=1000) or []
                for entry_id, fields in entries:
                    eid = purge_match((fields or {}).get(_FIELD, b""), before, key_id)
                    if eid is not None:
                        doomed.append((_text(entry_id), eid))
                if len(entries) < 1000:
                    break
                start = "(" + _text(entries[-1][0])
            ids = [i for i, _ in doomed]
            groups: list[Any] = await self._r.xinfo_groups(key) if ids else []
            for n in range(0, len(ids), 1000):
                chunk = ids[n : n + 1000]
                await self._r.xdel(key, *chunk)
                for group in groups:
                    await self._r.xack(key, group["name"], *chunk)
        return [eid for _, eid in doomed]

    # -- idempotency ---------------------------------------------------------------------------

    def _seen_key(self, scope: str, event_id: str) -> str:
        return f"{self.prefix}seen:{check_name('scope', scope)}:{event_id}"

    async def seen_many(self, scope: str, event_ids: Iterable[str]) -> set[str]:
        ids = list(event_ids)
        if not ids:
            return set()
        with self._errors():
            values = await self._r.mget([self._seen_key(scope, i) for i in ids])
        return {i for i, v in zip(ids, values, strict=True) if v is not None}

    async def mark_seen(
        self, scope: str, event_ids: Iterable[str], *, ttl_s: float = DEFAULT_SEEN_TTL_S
    ) -> None:
        ids = list(event_ids)
        if not ids:
            return
        ttl_ms = max(1, int(ttl_s * 1000))
        with self._errors():
            async with self._r.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.set(self._seen_key(scope, i), b"1", px=ttl_ms)
                await pipe.execute()

    # -- lifecycle -----------------------------------------------------------------------------

    async def check(self) -> None:
        with self._errors():
            await self._r.ping()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._r.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
