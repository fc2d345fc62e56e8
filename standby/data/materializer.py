"""The materializer: ``inference.completed`` events in, training pairs out.

    bus topic inference.completed ──consume (group "materializer")──► classify
        primary + finish "stop" + non-empty single-turn answer ──► pair store (one transaction)
        primary tool-using turn (finish "stop" or "tool_calls") ──► a tool pair (tool_pairs.py)
        anything else (fallback, stitched, blocked, length, ...) ──► counted as skipped
    ──► mark_seen(event ids) ──► ack

Only the hosted model's own complete answers become pairs, so the small model never learns
from itself. Delivery is at-least-once: the write commits before the ack, and the event ids are
marked seen in between, so a crash repeats at most one batch and the repeat writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from standby.data.pairs import (
    Candidate,
    DataError,
    PairStore,
    Snapshot,
    WriteResult,
    timestamp,
)
from standby.data.tool_pairs import tool_turns, uses_tools
from standby.store import (
    Bus,
    BusError,
    Event,
    InferenceCompleted,
    InferenceCompletedData,
    PipelineEvent,
)

log = logging.getLogger("standby.data.materializer")

TOPIC = "inference.completed"
GROUP = "materializer"
SNAPSHOT_TOPIC = "dataset.snapshot_created"
SOURCE = "standby/data"
_BLOCKED = {"content_filter": "blocked"}
_MAX_BACKOFF_S = 30.0


@dataclass(slots=True)
class Counts:
    """What a run did, by outcome; ``skipped`` and ``rejected`` by reason."""

    events: int = 0
    written: int = 0
    duplicate: int = 0
    replaced: int = 0
    redelivered: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    def add(self, other: Counts) -> None:
        for name in ("events", "written", "duplicate", "replaced", "redelivered"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped.update(other.skipped)
        self.rejected.update(other.rejected)

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "written": self.written,
            "duplicate": self.duplicate,
            "replaced": self.replaced,
            "redelivered": self.redelivered,
            "skipped": sum(self.skipped.values()),
            "rejected": sum(self.rejected.values()),
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
        }

    def summary(self) -> str:
        def reasons(c: Counter[str]) -> str:
            return f" ({', '.join(f'{k} {v}' for k, v in sorted(c.items()))})" if c else ""

        return (
            f"{self.events} events: written {self.written}, duplicate {self.duplicate}"
            f" (replaced {self.replaced}), redelivered {self.redelivered},"
            f" skipped {sum(self.skipped.values())}{reasons(self.skipped)},"
            f" rejected {sum(self.rejected.values())}{reasons(self.rejected)}"
        )


def classify(event: Event) -> Candidate | str:
    """The candidate pair of an event, or the reason it cannot be one."""
    if not isinstance(event, InferenceCompleted):
        return "not_inference"
    d = event.data
    if d.provenance != "primary":
        return d.provenance  # fallback / stitched: never train the small model on itself
    if any(m.media for m in d.messages):
        return "media"  # the pair would keep the prompt's words without what it showed
    if uses_tools(d):
        return _tool_candidate(event, d)
    if d.finish_reason != "stop":
        return _BLOCKED.get(d.finish_reason, d.finish_reason)
    if not d.response.strip():
        return "empty_response"
    users = [m.content for m in d.messages if m.role == "user"]
    if len(users) != 1 or any(m.role == "assistant" for m in d.messages):
        # Earlier assistant turns may have come from the fallback, and the no_robots
        # convention (first user message = instruction, first answer = target) needs one turn.
        return "multi_turn"
    return _candidate(event, users[0])


def _tool_candidate(event: InferenceCompleted, d: InferenceCompletedData) -> Candidate | str:
    """A tool-using answer as a tool pair: its turns (calls and results kept) and the tools
    offered. The answer is text (finish "stop") or calls (finish "tool_calls")."""
    if d.finish_reason not in ("stop", "tool_calls"):
        return _BLOCKED.get(d.finish_reason, d.finish_reason)
    if not d.response.strip() and not d.tool_calls:
        return "empty_response"
    got = tool_turns(d)
    if isinstance(got, str):
        return got
    turns, tools = got
    prompt = next(m.content for m in d.messages if m.role == "user")
    return _candidate(event, prompt, turns=tuple(turns), tools=tuple(tools))


def _candidate(event: InferenceCompleted, prompt: str, **tool_fields: Any) -> Candidate:
    """The pair of an accepted event: its prompt, answer, system text and provenance."""
    d = event.data
    return Candidate(
        prompt=prompt,
        response=d.response,
        system=tuple(m.content for m in d.messages if m.role == "system"),
        route=d.route,
        model=d.model,
        model_version=d.model_version,
        event_id=event.id,
        request_id=d.request_id,
        created_at=timestamp(event.time),
        **tool_fields,
    )


class Materializer:
    """Consumes ``inference.completed`` in consumer group ``materializer`` into a PairStore.
    Several may run against one bus (each event goes to one of them)."""

    def __init__(
        self,
        bus: Bus,
        store: PairStore,
        *,
        consumer: str | None = None,
        batch_size: int | None = None,
        block_s: float | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        host = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in socket.gethostname())
        self.consumer = consumer or f"{host or 'host'}-{os.getpid()}"
        self.batch_size = batch_size or store.config.batch_size
        self.block_s = block_s if block_s is not None else store.config.block_s

    async def step(self, block_s: float = 0.0) -> Counts | None:
        """One batch: consume, write, mark seen, ack. None when no event came in ``block_s``."""
        batch = await self.bus.consume(
            TOPIC, GROUP, self.consumer, count=self.batch_size, block_s=block_s
        )
        if not batch:
            return None
        fresh = await self.bus.unseen(GROUP, batch)
        counts = Counts(events=len(batch), redelivered=len(batch) - len(fresh))
        candidates: list[Candidate] = []
        for delivery in fresh:
            got = classify(delivery.event)
            if isinstance(got, str):
                counts.skipped[got] += 1
            else:
                candidates.append(got)
        result: WriteResult = await asyncio.to_thread(
            self.store.write, candidates, skipped=counts.skipped
        )
        counts.written, counts.duplicate = result.written, result.duplicate
        counts.replaced, counts.rejected = result.replaced, result.rejected
        counts.redelivered += result.redelivered
        await self.bus.mark_seen(GROUP, [d.event.id for d in fresh])
        await self.bus.ack(TOPIC, GROUP, [d.id for d in batch])
        log.info("materialized %s", counts.summary())
        return counts

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None) -> Counts:
        """``once``: drain what is on the bus now and return. Otherwise poll until ``stop`` is
        set, riding out bus or store errors with a capped backoff (unacked events come back)."""
        total = Counts()
        backoff = 1.0
        while stop is None or not stop.is_set():
            try:
                got = await self.step(0.0 if once else self.block_s)
            except (BusError, DataError) as e:
                if once:
                    raise
                log.error("materializer: %s; retrying in %.0fs", e, backoff)
                await _sleep_unless(stop, backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            backoff = 1.0
            if got is not None:
                total.add(got)
            elif once:
                break
        return total


async def _sleep_unless(stop: asyncio.Event | None, seconds: float) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def take_snapshot(store: PairStore, bus: Bus | None) -> Snapshot:
    """Record a snapshot of the store and publish ``dataset.snapshot_created`` (when a bus is
    given) with its id, content hash and counts."""
    snap = await asyncio.to_thread(store.snapshot)
    if bus is not None:
        event = PipelineEvent(
            type="dataset.snapshot_created",
            source=SOURCE,
            data={
                "snapshot_id": snap.id,
                "content_hash": snap.content_hash,
                "counts": snap.counts,
                "store": str(store.path.resolve()),
            },
        )
        await bus.publish(SNAPSHOT_TOPIC, event)
    return snap
