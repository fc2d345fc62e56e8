"""The event bus interface: topics, consumer groups, ack, redelivery. The backends
(``sqlite_bus.py``, ``redis_bus.py``) implement it; ``connect.open_bus`` picks one by URL.

Semantics, the same for every backend (tests/store/test_bus_contract.py holds both to them):

- ``publish`` appends to a topic; ``publish_many`` appends a batch atomically (all or nothing)
  in one round trip. Events are encoded and size-checked before anything is written;
  ``publish_encoded`` takes a batch already encoded.
- Every consumer group sees every event of a topic, from the first one still stored; groups are
  independent. Within a group each event goes to one consumer at a time; new events are handed
  out in topic order (a redelivery comes later than the events after it).
- A delivery stays in flight until acked. One not acked within ``claim_after_s`` (its consumer
  crashed or hung) is handed to the next consumer of the group that asks, with ``attempt`` + 1.
  Delivery is therefore at-least-once: consumers deduplicate on ``event.id`` (``unseen`` /
  ``mark_seen``: a processed-ids set with a TTL, kept by the bus).

    bus = open_bus("sqlite:///./.standby/events.db")        # or redis://127.0.0.1:6379/0
    await bus.publish("inference.completed", event)
    batch = await bus.consume("inference.completed", "materializer", "worker-1", block_s=5)
    for d in await bus.unseen("materializer", batch):
        handle(d.event)
    await bus.mark_seen("materializer", [d.event.id for d in batch])
    await bus.ack("inference.completed", "materializer", [d.id for d in batch])
"""

from __future__ import annotations

import logging
import re
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from standby.store.closing import Closable
from standby.store.envelope import Event, decode_event, encode_event
from standby.store.errors import MalformedEvent

log = logging.getLogger("standby.events")

DEFAULT_CLAIM_AFTER_S = 60.0
DEFAULT_SEEN_TTL_S = 7 * 24 * 3600.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event handed to one consumer. ``id`` is what ``ack`` takes (a stream offset, not the
    event id); ``attempt`` is 1 on first delivery and grows with each redelivery."""

    id: str
    event: Event
    attempt: int


def check_name(kind: str, name: str) -> str:
    """Topic, group and consumer names: 1-200 of ``[A-Za-z0-9._-]``, starting alphanumeric."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid {kind} name {name!r}: use 1-200 of A-Z a-z 0-9 . _ -")
    return name


class Bus(Closable):
    """A durable, partitionless log of events per topic with consumer groups."""

    url: str  # without password
    claim_after_s: float

    async def publish_many(self, topic: str, events: Sequence[Event]) -> list[str]:
        """Append ``events`` in order, atomically, in one transaction / pipeline; return their
        offsets. EventTooLarge (nothing written) when one is over the size limit."""
        return await self.publish_encoded(topic, [encode_event(e) for e in events])

    @abstractmethod
    async def publish_encoded(self, topic: str, bodies: Sequence[bytes]) -> list[str]:
        """``publish_many`` for events already encoded (``encode_event``, or
        ``encode_inference_completed`` on the capture path): stored as given, after a size
        check (EventTooLarge, nothing written)."""

    async def publish(self, topic: str, event: Event) -> str:
        """Append one event; return its offset in the topic."""
        return (await self.publish_many(topic, [event]))[0]

    @abstractmethod
    async def consume(
        self, topic: str, group: str, consumer: str, *, count: int = 100, block_s: float = 0.0
    ) -> list[Delivery]:
        """Up to ``count`` deliveries for ``consumer`` in ``group``: first events whose lease
        expired (redeliveries), then new ones in order. Waits up to ``block_s`` when there are
        none. Creates the group on first use, starting at the oldest stored event."""

    @abstractmethod
    async def ack(self, topic: str, group: str, delivery_ids: Iterable[str]) -> int:
        """Mark deliveries done for ``group``; return how many were still in flight."""

    @abstractmethod
    async def seen_many(self, scope: str, event_ids: Iterable[str]) -> set[str]:
        """Which of ``event_ids`` were marked processed in ``scope`` (and have not expired)."""

    @abstractmethod
    async def mark_seen(
        self, scope: str, event_ids: Iterable[str], *, ttl_s: float = DEFAULT_SEEN_TTL_S
    ) -> None:
        """Record ``event_ids`` as processed in ``scope`` for ``ttl_s`` seconds. Call it after
        the work is done and before ``ack``, so a crash in between repeats nothing."""

    async def seen(self, scope: str, event_id: str) -> bool:
        """Was ``event_id`` already processed in ``scope``?"""
        return bool(await self.seen_many(scope, [event_id]))

    async def unseen(self, scope: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """The deliveries whose event was not processed in ``scope`` yet, each event once."""
        done = await self.seen_many(scope, [d.event.id for d in deliveries])
        fresh: list[Delivery] = []
        for d in deliveries:
            if d.event.id not in done:
                done.add(d.event.id)
                fresh.append(d)
        return fresh

    @abstractmethod
    async def purge(
        self, topic: str, *, before: datetime | None = None, key_id: str | None = None
    ) -> list[str]:
        """Delete the stored events of ``topic`` made before ``before`` (the envelope's
        ``time``) and/or whose ``data.key_id`` is ``key_id`` (both given: both must hold);
        return the deleted events' ids. Deliveries of them still in flight are dropped."""

    @abstractmethod
    async def check(self) -> None:
        """Raise BusError if the bus cannot be reached or written (start-up / readiness)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads; the stored events stay."""


def purge_match(body: bytes, before: datetime | None, key_id: str | None) -> str | None:
    """The event id of an encoded event that ``purge(before, key_id)`` deletes, else None.
    Reads only the envelope's ``id``, ``time`` and ``data.key_id`` (no full validation)."""
    try:
        raw = orjson.loads(body)
        if key_id is not None and (raw.get("data") or {}).get("key_id") != key_id:
            return None
        if before is not None:
            made = datetime.fromisoformat(raw["time"])
            if (made if made.tzinfo else made.replace(tzinfo=UTC)) >= before:
                return None
        return str(raw["id"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None  # not an event this bus wrote: left alone


def decode_rows(
    rows: Iterable[tuple[str, bytes, int]], where: str
) -> tuple[list[Delivery], list[str]]:
    """Deliveries from stored ``(delivery id, encoded event, attempt)`` rows, and the ids of
    rows that do not decode. Those are logged here; the caller acks them so that one bad row
    cannot block its group forever."""
    good: list[Delivery] = []
    bad: list[str] = []
    for delivery_id, raw, attempt in rows:
        try:
            good.append(Delivery(delivery_id, decode_event(raw), attempt))
        except MalformedEvent as e:
            log.error("%s: dropping undecodable entry %s: %s", where, delivery_id, e)
            bad.append(delivery_id)
    return good, bad
