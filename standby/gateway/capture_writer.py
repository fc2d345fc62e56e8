"""The capture writer: a child process of the gateway that turns captured answers into
``inference.completed`` events (redacted, validated, encoded) and writes them to the bus in
batches.

Why a process: the gateway serves requests on one event loop, and its CPU is what limits its
throughput. Redacting, validating and encoding an answer and writing it (an SQLite insert or a
Redis XADD) cost ~25 us of CPU; here that runs beside the gateway instead of inside it. The
gateway keeps an answer for at most ~20 ms and sends it here as plain JSON (``data_of`` in
``standby.gateway.capture``, ~2 us of its CPU per answer); this process gathers the frames into
the bus's large batches (``batch_size``, ``flush_interval_s``).

Frames on stdin / stdout start with a 4-byte big-endian length.

One writer per gateway process (``standby serve``), or one per host (``standby serve --workers
N``): then the supervisor starts it with a ``"socket"`` path in its first frame, and each worker
speaks the protocol below over its own connection to that unix socket (a ``{"secrets": [...]}``
frame first, answered ``["ready"]``); the reports of a worker's frames go back on its
connection. A worker ends its input with a half-close, and the writer closes the connection once
that worker's frames are written and reported. The supervisor's stdin stays open while the
workers serve; its EOF stops the writer.

    gateway -> writer   ``{"config": the CaptureConfig, "secrets": [...]}`` (JSON: the
                        configured secret values, taken out of every event), then batch frames
                        (``batch_frame``: an 8-byte sequence number, then JSON ``{"at": unix
                        time, "answers": [data, ...]}``, each ``data`` InferenceCompletedData's
                        fields, not redacted yet, and ``"secrets"`` after a key reload);
                        EOF: stop
    writer -> gateway   JSON: ["ready"] or ["failed", kind, message, reason] once, then per
                        write ["done", [seq, ...], written, [[level, message], ...]]: the
                        frames it covered and how many of their answers were written; the
                        gateway counts the rest as dropped

Redaction happens here, before anything is written: the unredacted text only crosses the pipe
between the gateway and its own child. An answer that does not make a valid event (or is over
the size limit) is dropped alone and logged; a frame that is not valid JSON is dropped whole.
The writer ignores SIGINT and SIGTERM (a Ctrl-C or ``docker stop`` reaches the whole process
group): it stops when its stdin closes, after writing every frame it has received, so a gateway
that exits cleanly or dies loses nothing it had already handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from standby.config import CaptureConfig
from standby.errors import ConfigError
from standby.gctune import freeze_startup_objects
from standby.redaction import Redactor
from standby.scrub import Scrubber
from standby.store import (
    Bus,
    BusError,
    EventTooLarge,
    MalformedEvent,
    encode_inference_completed,
    open_bus,
)

SOURCE = "standby/gateway"  # the events' source: they describe the gateway's answers
RETRIES = 3
Log = list[list[Any]]  # [[logging level, message], ...], logged by the gateway
Report = Callable[[Any], None]  # sends a report to the gateway (worker) that sent the frames
# What the write loop is given: a batch (seq, payload, its gateway's Report), a connection whose
# input ended (closed once what it sent is written and reported), or None: stop.
Item = tuple[int, bytes, Report] | asyncio.StreamWriter | None


def frame(message: Any) -> bytes:
    body = orjson.dumps(message)
    return len(body).to_bytes(4, "big") + body


def batch_frame(seq: int, payload: bytes) -> bytes:
    """A batch of answers: the frame's length, the batch's sequence number (8 bytes, readable
    even when the payload is not), then the JSON payload."""
    return (len(payload) + 8).to_bytes(4, "big") + seq.to_bytes(8, "big") + payload


async def _read_payload(reader: asyncio.StreamReader) -> bytes | None:
    """The next frame's bytes after its length, or None at a clean end of the stream (EOF
    between frames); EOF inside a frame raises IncompleteReadError."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise
        return None
    return await reader.readexactly(int.from_bytes(head, "big"))


async def read_batch(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """The next batch frame (sequence number, JSON payload), or None at the end."""
    raw = await _read_payload(reader)
    return None if raw is None else (int.from_bytes(raw[:8], "big"), raw[8:])


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next JSON message, or None at the end."""
    raw = await _read_payload(reader)
    return None if raw is None else orjson.loads(raw)


def event_body(data: Any, at: datetime, redact: Redactor, scrub: Scrubber | None = None) -> bytes:
    """One answer's ``inference.completed`` event as it is written: every text the client or a
    backend wrote redacted, the data validated, the envelope encoded, and the configured
    secrets (``scrub``) taken out of the encoded event. MalformedEvent or EventTooLarge when it
    cannot be.

    Redacted before anything else looks at them: every message's text members (content, a
    tool turn's result, names, call ids), the response, each tool call's ``arguments`` (JSON
    text, redacted value by value so that it stays JSON) and id and name, the sampling
    parameters (``stop``, ``response_format`` and its schema) and the offered tools (names,
    descriptions, parameter schemas). A field that is not what the envelope expects fails
    validation, so nothing unredacted passes."""
    if not isinstance(data, dict):
        raise MalformedEvent("invalid event: data: not a JSON object")
    messages = data.get("messages")
    messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    calls = data.get("tool_calls")
    calls = [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []
    for message in messages:
        inner = message.get("tool_calls")
        if isinstance(inner, list):
            calls += [c for c in inner if isinstance(c, dict)]
    # Every text at once: the pre-checks run once over all of them.
    slots = [(m, k) for m in messages for k in _MESSAGE_TEXTS if isinstance(m.get(k), str)]
    slots += [(c, k) for c in calls for k in ("id", "name") if isinstance(c.get(k), str)]
    if isinstance(data.get("response"), str):
        slots.append((data, "response"))
    texts = [holder[key] for holder, key in slots]
    if texts:
        redacted = redact.many(texts)
        if redacted is not texts:
            for (holder, key), text in zip(slots, redacted, strict=True):
                holder[key] = text
    for call in calls:
        if isinstance(call.get("arguments"), str):
            call["arguments"] = redact.json_text(call["arguments"])
    for key in ("params", "tools"):
        if key in data:
            data[key] = redact.json_value(data[key])
    body = encode_inference_completed(data, source=SOURCE, at=at)
    return scrub.json(body) if scrub else body


_MESSAGE_TEXTS = ("content", "name", "tool_call_id")


def read_answers(payload: bytes) -> tuple[datetime, list[Any], list[str]]:
    """A batch frame's time, answers and secrets learnt since the last frame (a key reload);
    MalformedEvent when the payload is not that shape."""
    try:
        batch = orjson.loads(payload)
        at = datetime.fromtimestamp(batch["at"], UTC)
        answers = batch["answers"]
        secrets = batch.get("secrets", [])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError) as e:
        raise MalformedEvent(f"unreadable capture frame ({type(e).__name__})") from None
    if not isinstance(answers, list):
        raise MalformedEvent("unreadable capture frame (answers is not a list)")
    if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
        raise MalformedEvent("unreadable capture frame (secrets is not a list of strings)")
    return at, answers, secrets


class Writer:
    """Turns the answers of the frames it is given into events and publishes them in batches of
    up to ``batch_size``, at the latest ``flush_interval_s`` after the first one arrived; each
    flush reports, to each gateway that sent some of them, the frames it covered and how many
    of their answers were written."""

    def __init__(
        self,
        config: CaptureConfig,
        bus: Bus,
        report: Report,
        secrets: list[str] | None = None,
    ) -> None:
        self.bus = bus
        self.batch_size = config.batch_size
        self.flush_interval_s = config.flush_interval_s
        self.redact = Redactor(config.redact_patterns, defaults=config.redact_defaults)
        self.scrub = Scrubber(secrets or ())  # the gateway's configured secret values
        self.report = report  # where reports go when a frame does not say (one gateway)
        self.bodies: list[bytes] = []  # valid encoded events, not written yet
        self.seqs: dict[Report, list[int]] = {}  # the frames they came in, by gateway
        self.counts: dict[Report, int] = {}  # each gateway's answers among the bodies
        self.logs: Log = []
        self.first_at = 0.0

    def add(self, seq: int, payload: bytes, source: Report | None = None) -> None:
        """Keep the event of each answer in the frame (sent by ``source``'s gateway); an answer
        that makes no valid event is dropped alone (and logged; the gateway counts it), an
        unreadable frame whole."""
        if not self.seqs:
            self.first_at = time.monotonic()
        source = source or self.report
        self.seqs.setdefault(source, []).append(seq)
        try:
            at, answers, secrets = read_answers(payload)
        except MalformedEvent as e:
            self.log(logging.ERROR, f"capture: frame {seq} dropped: {e}")
            return
        self.scrub.add(secrets)
        for data in answers:
            try:
                self.bodies.append(event_body(data, at, self.redact, self.scrub))
                self.counts[source] = self.counts.get(source, 0) + 1
            except (MalformedEvent, EventTooLarge) as e:
                rid = data.get("request_id") if isinstance(data, dict) else None
                self.log(logging.WARNING, f"capture: event {rid} dropped: {e}")

    def due_in(self) -> float | None:
        """Seconds until the held events must be written; None when none are held."""
        if not self.seqs:
            return None
        if len(self.bodies) >= self.batch_size:
            return 0.0
        return max(0.0, self.first_at + self.flush_interval_s - time.monotonic())

    async def flush(self) -> None:
        """Write what is held and report it: bus failures are retried with back-off, then
        counted as dropped, never raised."""
        if not self.seqs:
            return
        bodies, seqs, counts = self.bodies, self.seqs, self.counts
        self.bodies, self.seqs, self.counts = [], {}, {}
        published = False
        for attempt in range(1, RETRIES + 1):
            try:
                if bodies:
                    await self.bus.publish_encoded("inference.completed", bodies)
            except BusError as e:
                self.log(
                    logging.ERROR,
                    f"capture: writing {len(bodies)} events failed ({e}), try {attempt}",
                )
                if attempt < RETRIES:
                    await asyncio.sleep(0.1 * 2**attempt)
            else:
                published = True
                break
        logs, self.logs = self.logs, []
        for source, covered in seqs.items():  # the logs go with the first report
            source(["done", covered, counts.get(source, 0) if published else 0, logs])
            logs = []

    def log(self, level: int, message: str) -> None:
        self.logs.append([level, message])


async def serve(reader: asyncio.StreamReader, out: IO[bytes]) -> int:
    def report(message: Any) -> None:
        try:
            out.write(frame(message))
            out.flush()
        except OSError:  # the gateway is gone: keep writing what was handed over
            pass

    first = await read_frame(reader)
    if first is None:
        return 0
    config = CaptureConfig.model_validate(first["config"])
    try:
        bus = open_bus(config.bus)
        await bus.check()
    except (ConfigError, BusError) as e:
        kind = "config" if isinstance(e, ConfigError) else "bus"
        report(["failed", kind, str(e), getattr(e, "reason", "error")])
        return 1
    writer = Writer(config, bus, report, first.get("secrets"))
    frames: asyncio.Queue[Item] = asyncio.Queue()
    server: asyncio.Server | None = None
    if first.get("socket"):  # the host's writer: workers connect; stdin's end stops it
        server = await asyncio.start_unix_server(
            lambda r, w: _connection(r, w, writer, frames), path=first["socket"], limit=1 << 20
        )
        reading = asyncio.create_task(_read_control(reader, frames))
    else:  # one gateway's: its frames on stdin, their end stops it
        reading = asyncio.create_task(_read_frames(reader, frames, report, None))
    freeze_startup_objects()
    report(["ready"])
    try:
        await _write(writer, frames)
    finally:
        reading.cancel()
        if server is not None:
            server.close()
        await bus.close()
    return 0


async def _write(writer: Writer, frames: asyncio.Queue[Item]) -> None:
    """Write what arrives until told to stop; then what is held."""
    while True:
        try:
            message = await asyncio.wait_for(frames.get(), writer.due_in())
        except TimeoutError:
            await writer.flush()
            continue
        if message is None:
            break
        if isinstance(message, asyncio.StreamWriter):  # a worker's input ended
            await writer.flush()  # its frames, reported on its connection
            await _close(message)
            continue
        writer.add(*message)
        if len(writer.bodies) >= writer.batch_size:
            await writer.flush()
    await writer.flush()


async def _close(conn: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        await conn.drain()
    conn.close()
    with contextlib.suppress(OSError):
        await conn.wait_closed()


async def _read_frames(
    reader: asyncio.StreamReader, frames: asyncio.Queue[Item], source: Report, end: Item
) -> None:
    """Batches into ``frames`` (read while the writer writes), then ``end`` at the end of
    input; a frame cut off by the gateway's death ends the input too."""
    try:
        while (batch := await read_batch(reader)) is not None:
            frames.put_nowait((*batch, source))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        frames.put_nowait(end)


async def _read_control(reader: asyncio.StreamReader, frames: asyncio.Queue[Item]) -> None:
    """The host's writer: the supervisor sends nothing more; the end of its stdin is the end."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while await reader.read(4096):
            pass
    frames.put_nowait(None)


async def _connection(
    reader: asyncio.StreamReader,
    conn: asyncio.StreamWriter,
    writer: Writer,
    frames: asyncio.Queue[Item],
) -> None:
    """One worker's connection: its secrets, ``["ready"]``, then its batches."""

    def report(message: Any) -> None:
        if not conn.is_closing():  # a worker that died: what it sent is still written
            conn.write(frame(message))

    try:
        hello = await read_frame(reader)
    except (asyncio.IncompleteReadError, ConnectionError, orjson.JSONDecodeError):
        hello = None
    if not isinstance(hello, dict):
        await _close(conn)
        return
    secrets = hello.get("secrets")
    writer.scrub.add(
        [s for s in secrets if isinstance(s, str)] if isinstance(secrets, list) else []
    )
    report(["ready"])
    await _read_frames(reader, frames, report, conn)


async def _main() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    # Frames go to a private copy of stdout; anything a library prints lands on stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    with out:
        return await serve(reader, out)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(asyncio.run(_main()))


if __name__ == "__main__":
    main()
