"""Capture: every answered request becomes an ``inference.completed`` event, without slowing
the request or losing one on a clean shutdown.

request path ──offer()──► bounded in-memory queue ──► batch writer task ──► bus.publish_many
                 │ full? drop + count                  (redact, build, encode off the request)
The request only does a ``put_nowait``; building, redacting and writing happen in the writer.
On shutdown the writer drains the queue before the bus is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from standby.config import CaptureConfig
from standby.data.redaction import Redactor
from standby.events import (
    Bus,
    BusError,
    EventTooLarge,
    InferenceCompleted,
    open_bus,
)
from standby.gateway.metrics import Metrics
from standby.gateway.router import Outcome
from standby.protocol import ChatRequest, FinishReason, Usage

log = logging.getLogger("standby.capture")

SOURCE = "standby/gateway"
RETRIES = 3
# Events built between two yields to the event loop: building one costs ~20 us (redaction,
# validation), so a 256-event batch in one go would stall every request for ~5 ms.
SLICE = 32


@dataclass(slots=True, eq=False)
class Captured:
    """What the request path hands over: plain references, no copying or validation."""

    request_id: str
    outcome: Outcome
    request: ChatRequest
    response: str
    finish_reason: FinishReason
    usage: Usage | None
    latency_s: float
    stream: bool
    key_id: str | None
    model_version: str | None


# Put on the queue by close(): everything before it is written, then the writer ends.
_STOP = Captured("", Outcome(""), ChatRequest(()), "", "stop", None, 0.0, False, None, None)


class Capture:
    def __init__(self, config: CaptureConfig, metrics: Metrics, bus: Bus | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.bus = bus
        self.queue: asyncio.Queue[Captured] = asyncio.Queue(config.queue_size)
        self.redact = Redactor(config.redact_patterns, defaults=config.redact_defaults)
        self._writer: asyncio.Task[None] | None = None
        self._filled = asyncio.Event()
        self._count = {
            outcome: metrics.capture_events.labels(outcome)
            for outcome in ("written", "filtered", "dropped")
        }

    async def start(self) -> None:
        """Open the bus (a bad URL or unwritable path stops start-up) and start the writer."""
        if self.bus is None:
            self.bus = open_bus(self.config.bus)
        await self.bus.check()
        self._writer = asyncio.create_task(self._run(), name="capture-writer")

    def offer(self, item: Captured) -> None:
        """Never blocks: a full queue drops the event and counts it."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self._count["dropped"].inc()
            return
        if self.queue.qsize() >= self.config.batch_size:
            self._filled.set()

    def filtered(self) -> None:
        self._count["filtered"].inc()

    def depth(self) -> int:
        return self.queue.qsize()

    async def close(self) -> None:
        """Flush what is queued (up to ``drain_timeout_s``), then close the bus."""
        if self._writer is not None:
            await self.queue.put(_STOP)
            self._filled.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), self.config.drain_timeout_s)
            except TimeoutError:
                lost = self.queue.qsize()
                log.error("capture: drain timed out, %d events not written", lost)
                self._count["dropped"].inc(lost)
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer
        if self.bus is not None:
            await self.bus.close()

    async def _run(self) -> None:
        batch_size = self.config.batch_size
        stopping = False
        while not stopping:
            batch = [await self.queue.get()]
            # Let the batch fill for up to the flush window: one timer per batch, not per event
            # (offer() sets the event once a full batch is waiting).
            if self.queue.qsize() < batch_size - 1 and batch[0] is not _STOP:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._filled.wait(), self.config.flush_interval_s)
            self._filled.clear()
            while len(batch) < batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            if any(item is _STOP for item in batch):
                batch = [item for item in batch if item is not _STOP]
                while not self.queue.empty():  # anything offered after the stop marker
                    batch.append(self.queue.get_nowait())
                stopping = True
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[Captured]) -> None:
        events = []
        for i, item in enumerate(batch):
            if i and i % SLICE == 0:
                await asyncio.sleep(0)
            try:
                events.append(self._event(item))
            except ValueError as e:  # pydantic ValidationError: bad data is counted, not fatal
                log.warning("capture: event %s rejected: %s", item.request_id, _one_line(e))
                self._count["dropped"].inc()
        try:
            await self._publish(events)
        except EventTooLarge:
            # One oversized answer must not take its batch with it: write them one by one.
            for event in events:
                try:
                    await self._publish([event])
                except EventTooLarge as e:
                    log.warning("capture: event %s dropped: %s", event.data.request_id, e)
                    self._count["dropped"].inc()

    async def _publish(self, events: list[InferenceCompleted]) -> None:
        """Write with retries and back-off; after the last failure the events are counted as
        dropped (never raised: capture must not break serving). Oversized events raise."""
        assert self.bus is not None
        for attempt in range(1, RETRIES + 1):
            try:
                await self.bus.publish_many("inference.completed", events)
            except EventTooLarge:
                raise
            except BusError as e:
                log.error("capture: writing %d events failed (%s), try %d", len(events), e, attempt)
                if attempt == RETRIES:
                    self._count["dropped"].inc(len(events))
                    return
                await asyncio.sleep(0.1 * 2**attempt)
            else:
                self._count["written"].inc(len(events))
                return

    def _event(self, item: Captured) -> InferenceCompleted:
        req, outcome, usage = item.request, item.outcome, item.usage
        # One validation of plain dicts: pydantic-core does it in one pass (3x cheaper than
        # building the nested models one constructor at a time).
        data = {
            "request_id": item.request_id,
            "route": outcome.route,
            "backend": outcome.backend,
            "provenance": outcome.provenance,
            "model": outcome.route,
            "model_version": item.model_version,
            "messages": [{"role": m.role, "content": self.redact(m.content)} for m in req.messages],
            "params": req.params(),
            "response": self.redact(item.response),
            "finish_reason": item.finish_reason,
            "usage": {
                "prompt_tokens": usage.prompt_tokens if usage else 0,
                "completion_tokens": usage.completion_tokens if usage else 0,
            },
            "latency_s": item.latency_s,
            "ttft_s": outcome.ttft_s,
            "fallback_reason": outcome.fallback_reason,
            "stream": item.stream,
            "key_id": item.key_id,
        }
        return InferenceCompleted.model_validate({"source": SOURCE, "data": data})


def _one_line(error: Exception) -> str:
    return str(error).splitlines()[0][:200]
