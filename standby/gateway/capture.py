"""Capture: every answered request becomes an ``inference.completed`` event, without slowing
the request or losing one on a clean shutdown.

request path ──offer()──► bounded queue ──► sender task ──► capture writer process ──► bus
                 │ full? drop + count      (redact, encode;  (validate; batches of
                 │                          small frames)     batch_size)
The request only does a ``put_nowait``. Every ``SEND_WINDOW_S`` (or ``SEND_BATCH`` answers) the
sender redacts and encodes the queued answers and sends them to the writer process
(``standby.gateway.capture_writer``), which validates and writes them away from the gateway's
event loop and GIL, in batches of ``batch_size`` within ``flush_interval_s``, and reports what
it wrote; the reports feed ``standby_capture_events_total``. Sent answers not yet reported are
bounded (``2 * batch_size``), so a slow bus fills the queue and further answers are dropped and
counted, never blocking a client. A writer that dies is restarted; the answers it had not
reported are counted as dropped. On shutdown the sender sends what is queued and closes the
writer's stdin; the writer writes it all and exits (``drain_timeout_s`` bounds the wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sys
from dataclasses import dataclass

import orjson

from standby.config import CaptureConfig
from standby.data.redaction import Redactor
from standby.errors import ConfigError
from standby.events import BusError, EventTooLarge, encode_inference_completed
from standby.gateway.capture_writer import batch_frame, frame, read_frame
from standby.gateway.metrics import Metrics
from standby.gateway.router import Outcome
from standby.protocol import ChatRequest, FinishReason, Usage

log = logging.getLogger("standby.capture")

SOURCE = "standby/gateway"

# The sender's cadence: answers leave the gateway's memory within 20 ms. Holding them for a
# whole bus batch (~100 ms at 2.5k req/s) kept ~1k requests' objects alive and cost the gateway
# 5-10 % more CPU per request (measured with the writer pinned to another core).
SEND_BATCH = 64
SEND_WINDOW_S = 0.02
START_TIMEOUT_S = 60.0
RESTART_DELAYS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


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


# Put on the queue by close(): everything before it is sent, then the sender ends.
_STOP = Captured("", Outcome(""), ChatRequest(()), "", "stop", None, 0.0, False, None, None)


def encode(item: Captured, redact: Redactor) -> bytes:
    """The ``inference.completed`` event of one answer, redacted and encoded (not validated:
    the writer validates before it writes)."""
    req, outcome, usage = item.request, item.outcome, item.usage
    data = {
        "request_id": item.request_id,
        "route": outcome.route,
        "backend": outcome.backend,
        "provenance": outcome.provenance,
        "model": outcome.route,
        "model_version": item.model_version,
        "messages": [{"role": m.role, "content": redact(m.content)} for m in req.messages],
        "params": req.params(),
        "response": redact(item.response),
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
    return encode_inference_completed(data, source=SOURCE)


class WriterProcess:
    """One capture writer process and the frames it has not reported yet."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.stdin = proc.stdin
        self.stdout = proc.stdout
        self.pending: dict[int, int] = {}  # frame seq -> answers in it, until reported
        self.alive = True

    @classmethod
    async def spawn(cls, config: CaptureConfig) -> WriterProcess:
        """Start a writer and wait until its bus is open: a bad URL or an unusable bus is the
        writer's one-line ConfigError / BusError, raised here."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "standby.gateway.capture_writer",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        writer = cls(proc)
        try:
            writer.stdin.write(frame(config.model_dump(mode="json")))
            reply = await asyncio.wait_for(read_frame(writer.stdout), START_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, orjson.JSONDecodeError):
            reply = None
        except BaseException:
            await writer.kill()
            raise
        if reply == ["ready"]:
            return writer
        await writer.kill()
        if isinstance(reply, list) and len(reply) == 4 and reply[0] == "failed":
            _, kind, message, reason = reply
            raise ConfigError(message) if kind == "config" else BusError(message, reason=reason)
        raise BusError(
            f"capture writer did not start (exit code {proc.returncode})", reason="unavailable"
        )

    async def kill(self) -> None:
        self.alive = False
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()


class Capture:
    def __init__(self, config: CaptureConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.queue: asyncio.Queue[Captured] = asyncio.Queue(config.queue_size)
        self.redact = Redactor(config.redact_patterns, defaults=config.redact_defaults)
        self._writer: WriterProcess | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._filled = asyncio.Event()  # a full frame is waiting in the queue
        self._progress = asyncio.Event()  # the writer reported, or was replaced
        self._seq = itertools.count()
        self._holding = 0  # answers the sender holds while it waits for the writer
        self._window_s = min(SEND_WINDOW_S, config.flush_interval_s)
        self._max_pending = 2 * config.batch_size + SEND_BATCH
        self._stop_queued = False  # _STOP is in the queue
        self._all_sent = False
        self._count = {
            outcome: metrics.capture_events.labels(outcome)
            for outcome in ("written", "filtered", "dropped")
        }

    async def start(self) -> None:
        """Start the writer process (a bad bus URL or unwritable path stops start-up), then the
        tasks that feed it and read its reports."""
        self._writer = await WriterProcess.spawn(self.config)
        self._tasks = [
            asyncio.create_task(self._frames(), name="capture-sender"),
            asyncio.create_task(self._reports(), name="capture-reports"),
        ]

    def offer(self, item: Captured) -> None:
        """Never blocks: a full queue drops the event and counts it."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self._count["dropped"].inc()
            return
        if self.queue.qsize() >= SEND_BATCH:
            self._filled.set()

    def filtered(self) -> None:
        self._count["filtered"].inc()

    def depth(self) -> int:
        """Answers not written yet: queued, held by the sender, or with the writer."""
        pending = sum(self._writer.pending.values()) if self._writer else 0
        return self.queue.qsize() + self._holding + pending

    async def close(self) -> None:
        """Send what is queued and let the writer write it (up to ``drain_timeout_s``)."""
        if not self._tasks:
            return

        async def drain() -> None:
            await self.queue.put(_STOP)
            self._stop_queued = True
            self._filled.set()
            await asyncio.gather(*self._tasks)

        try:
            await asyncio.wait_for(drain(), self.config.drain_timeout_s)
        except TimeoutError:
            lost = self.depth() - self._stop_queued
            log.error("capture: drain timed out, %d events not written", lost)
            self._count["dropped"].inc(lost)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._writer is not None:
                await self._writer.kill()

    # -- the sender: queue -> writer ---------------------------------------------------------

    async def _frames(self) -> None:
        stopping = False
        while not stopping:
            frame = [await self.queue.get()]
            # Let the frame fill for up to the send window: one timer per frame, not per answer
            # (offer() sets the event once a full frame is waiting).
            if self.queue.qsize() < SEND_BATCH - 1 and frame[0] is not _STOP:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._filled.wait(), self._window_s)
            self._filled.clear()
            while len(frame) < SEND_BATCH and not self.queue.empty():
                frame.append(self.queue.get_nowait())
            if any(item is _STOP for item in frame):
                self._stop_queued = False
                frame = [item for item in frame if item is not _STOP]
                stopping = True
            if frame:
                await self._send(self._encode(frame))
        while not self.queue.empty():  # anything offered after the stop marker
            count = min(SEND_BATCH, self.queue.qsize())
            await self._send(self._encode([self.queue.get_nowait() for _ in range(count)]))
        self._all_sent = True
        if self._writer is not None and self._writer.alive:
            self._writer.stdin.close()  # the writer writes what it has, reports, and exits

    def _encode(self, frame: list[Captured]) -> list[bytes]:
        bodies = []
        for item in frame:
            try:
                bodies.append(encode(item, self.redact))
            except (EventTooLarge, TypeError) as e:  # one answer, never its frame
                log.warning("capture: event %s dropped: %s", item.request_id, e)
                self._count["dropped"].inc()
        return bodies

    async def _send(self, bodies: list[bytes]) -> None:
        if not bodies:
            return
        self._holding = len(bodies)
        writer = await self._room()
        seq = next(self._seq)
        writer.pending[seq] = len(bodies)
        self._holding = 0
        writer.stdin.write(batch_frame(seq, bodies))
        with contextlib.suppress(ConnectionError):  # a dead writer: _reports counts the frame
            await writer.stdin.drain()

    async def _room(self) -> WriterProcess:
        """The writer, once it is alive and has room for another frame."""
        while True:
            writer = self._writer
            if (
                writer is not None
                and writer.alive
                and sum(writer.pending.values()) < self._max_pending
            ):
                return writer
            self._progress.clear()
            await self._progress.wait()

    # -- the writer's reports ----------------------------------------------------------------

    async def _reports(self) -> None:
        while True:
            writer = self._writer
            assert writer is not None
            await self._read_reports(writer)
            code = await writer.proc.wait()
            writer.alive = False
            lost = sum(writer.pending.values())
            writer.pending.clear()
            self._count["dropped"].inc(lost)
            if self._all_sent:
                if code or lost:
                    log.error("capture: the writer exited with code %s, %d events lost", code, lost)
                return
            log.error("capture: the writer exited with code %s, %d events lost; restarting",
                      code, lost)  # fmt: skip
            self._writer = await self._restart()
            self._progress.set()

    async def _read_reports(self, writer: WriterProcess) -> None:
        """Account for each report until the writer's stdout ends."""
        while True:
            try:
                report = await read_frame(writer.stdout)
            except (asyncio.IncompleteReadError, orjson.JSONDecodeError):
                report = None
            if report is None:
                return
            _, seqs, written, dropped, logs = report
            for seq in seqs:
                writer.pending.pop(seq, None)
            for level, message in logs:
                log.log(level, message)
            if written:
                self._count["written"].inc(written)
            if dropped:
                self._count["dropped"].inc(dropped)
            self._progress.set()

    async def _restart(self) -> WriterProcess:
        for attempt in itertools.count():
            await asyncio.sleep(RESTART_DELAYS_S[min(attempt, len(RESTART_DELAYS_S) - 1)])
            try:
                return await WriterProcess.spawn(self.config)
            except (ConfigError, BusError) as e:
                log.error("capture: the writer did not restart: %s", e)
        raise AssertionError("unreachable")
