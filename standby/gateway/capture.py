"""Capture: every answered request becomes an ``inference.completed`` event, without slowing
the request or losing one on a clean shutdown.

request path ──offer()──► bounded buffer ──frames──► capture writer process ──► bus
                 │ full? drop + count   (JSON, every 20 ms   (redact, validate, encode;
                 │                       or 64 answers)       batches of batch_size)
``offer()`` encodes the answer's data as JSON (the cost is in docs/benchmarks.md; the request's
objects are freed with the request) and appends it to a buffer. Every ``SEND_WINDOW_S`` (or
``SEND_BATCH`` answers) the buffer goes to the writer process (``standby.gateway.capture_writer``)
as one frame on its stdin: a non-blocking write, no task or queue per answer. The writer redacts
the answers, validates and encodes their events and writes them, away from the gateway's event
loop and GIL, in batches of ``batch_size`` within ``flush_interval_s``, and reports how many it
wrote; the reports feed ``standby_capture_events_total``. Sent answers not yet reported are
bounded (``2 * batch_size + SEND_BATCH``): a slow bus keeps answers in the buffer, which fills
(``queue_size``), and further answers are dropped and counted, never blocking a client. A writer
that dies is restarted; the answers it had not reported are counted as dropped. On shutdown the
buffer is sent and the writer's stdin closed; the writer writes it all and exits
(``drain_timeout_s`` bounds the wait).

Under ``standby serve --workers N`` (N > 1) the host has one writer, started by the supervisor
(``standby.gateway.workers``), and each worker's buffer goes to it over a unix socket in the run
directory instead of a child's stdin (:class:`HostWriter`): the same frames and reports, and
the same bounds, per worker. On shutdown a worker half-closes its connection and waits for the
reports of all it sent; the writer stops once the supervisor, after every worker, closes its
stdin. A writer that dies is restarted by the supervisor; the workers count what it had not
reported as dropped and connect to the new one.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import logging
import sys
import time
from pathlib import Path

import orjson

from standby.config import CaptureConfig
from standby.errors import ConfigError
from standby.gateway.capture_writer import batch_frame, frame, read_frame
from standby.gateway.captured import Captured, data_of
from standby.gateway.metrics import Metrics
from standby.gateway.restarts import delay_of
from standby.gateway.worker_env import capture_socket_path, run_dir
from standby.store import MAX_EVENT_BYTES, BusError

log = logging.getLogger("standby.capture")

# How often the buffer goes to the writer: answers leave the gateway within 20 ms (what a
# SIGKILLed gateway can lose), in frames of up to 64.
SEND_BATCH = 64
SEND_WINDOW_S = 0.02
START_TIMEOUT_S = 60.0


def payload(answers: list[bytes], secrets: list[str] | None = None) -> bytes:
    """A batch frame's JSON: the time it left the gateway, the answers (each already JSON), and
    secrets the writer does not know yet."""
    learnt = b',"secrets":' + orjson.dumps(secrets) if secrets else b""
    return b"".join(
        (b'{"at":', orjson.dumps(time.time()), learnt, b',"answers":[', b",".join(answers), b"]}")
    )


class WriterLink(abc.ABC):
    """A capture writer as one gateway sees it: frames go out on ``stdin``, reports come back on
    ``stdout``; and the frames it has not reported yet."""

    def __init__(self, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.pending: dict[int, int] = {}  # frame seq -> answers in it, until reported
        self.unreported = 0  # answers sent and not reported yet: the sum of pending
        self.alive = True

    @abc.abstractmethod
    def end_input(self) -> None:
        """No more frames: the writer writes what it has, reports it, and ends ``stdout``."""

    @abc.abstractmethod
    async def ended(self) -> int | None:
        """Once ``stdout`` ended: the writer process's exit code (None: not this one's)."""

    @abc.abstractmethod
    async def kill(self) -> None:
        """Stop now: what the writer had not reported is lost (the caller counts it)."""


class HostWriter(WriterLink):
    """The host's writer (``standby serve --workers N``), over this worker's connection."""

    @classmethod
    async def connect(cls, path: Path, secrets: list[str]) -> HostWriter:
        """Connect and hand over the secrets this worker knows; BusError when the writer is
        not there (not started yet, or being restarted)."""
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
        except OSError as e:
            raise BusError(
                f"the host's capture writer is not running ({e.strerror or e})",
                reason="unavailable",
            ) from None
        link = cls(writer, reader)
        try:
            writer.write(frame({"secrets": secrets}))
            reply = await asyncio.wait_for(read_frame(reader), START_TIMEOUT_S)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, orjson.JSONDecodeError):
            reply = None
        except BaseException:
            await link.kill()
            raise
        if reply != ["ready"]:
            await link.kill()
            raise BusError("the host's capture writer did not answer", reason="unavailable")
        return link

    def end_input(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):  # already gone: its reports end
            self.stdin.write_eof()

    async def ended(self) -> int | None:
        self.alive = False
        self.stdin.close()
        with contextlib.suppress(OSError):
            await self.stdin.wait_closed()
        return None

    async def kill(self) -> None:
        self.alive = False
        self.stdin.transport.abort()


class WriterProcess(WriterLink):
    """One gateway's own capture writer process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        super().__init__(proc.stdin, proc.stdout)
        self.proc = proc

    def end_input(self) -> None:
        self.stdin.close()

    async def ended(self) -> int | None:
        code = await self.proc.wait()
        self.alive = False
        return code

    @classmethod
    async def spawn(cls, config: CaptureConfig, secrets: list[str] | None = None) -> WriterProcess:
        """Start a writer and wait until its bus is open: a bad URL or an unusable bus is the
        writer's one-line ConfigError / BusError, raised here. ``secrets``: the configured
        secret values it takes out of every event."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "standby.gateway.capture_writer",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        writer = cls(proc)
        try:
            writer.stdin.write(
                frame({"config": config.model_dump(mode="json"), "secrets": secrets or []})
            )
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
    def __init__(
        self,
        config: CaptureConfig,
        metrics: Metrics,
        *,
        keep_media: bool = False,
        secrets: list[str] | None = None,
    ) -> None:
        self.config = config
        self.secrets = list(secrets or [])  # configured secret values: the writer scrubs them
        self._new_secrets: list[str] = []  # learnt since the last frame (a key reload)
        self.keep_media = keep_media  # media.keep_in_capture: bytes too, not only digests
        self.metrics = metrics
        self._buffer: list[bytes] = []  # encoded answers not sent to the writer yet
        self._timer: asyncio.TimerHandle | None = None  # sends the buffer at the window's end
        self._writer: WriterLink | None = None
        self._reports_task: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()  # the writer reported, or was replaced
        self._seq = itertools.count()
        self._window_s = min(SEND_WINDOW_S, config.flush_interval_s)
        self._max_unreported = 2 * config.batch_size + SEND_BATCH
        self._all_sent = False  # closing: the writer's stdin is closed
        self._count = {
            outcome: metrics.capture_events.labels(outcome)
            for outcome in ("written", "filtered", "dropped")
        }
        run = run_dir()  # a worker of several: the host's writer, else its own
        self._host_writer = capture_socket_path(run) if run is not None else None

    async def _open(self) -> WriterLink:
        if self._host_writer is not None:
            return await HostWriter.connect(self._host_writer, self.secrets)
        return await WriterProcess.spawn(self.config, self.secrets)

    async def start(self) -> None:
        """Start the writer process, or connect to the host's (a bad bus URL or unwritable path
        stops start-up), then the task that reads its reports."""
        self._writer = await self._open()
        self._reports_task = asyncio.create_task(self._reports(), name="capture-reports")

    def offer(self, item: Captured) -> None:
        """Never blocks: a full buffer drops the event and counts it.

        The answer is kept as JSON, so the request's objects are freed with the request; one
        that cannot be encoded, or is over the event size limit before redaction, is dropped
        here, alone."""
        if self._all_sent:
            self._drop(item.request_id, "the gateway has shut capture down")
            return
        try:
            answer = orjson.dumps(data_of(item, keep_media=self.keep_media))
        except TypeError as e:  # not encodable (request validation should prevent it)
            self._drop(item.request_id, str(e))
            return
        if len(answer) > MAX_EVENT_BYTES:
            self._drop(item.request_id, f"it is {len(answer)} bytes, over the event size limit")
            return
        buffer = self._buffer
        if len(buffer) >= self.config.queue_size:
            self._count["dropped"].inc()
            return
        buffer.append(answer)
        if len(buffer) >= SEND_BATCH:
            self._send()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._window_s, self._send)

    def add_secrets(self, secrets: list[str]) -> None:
        """Secret values learnt after start-up (a key reload): the next frame carries them to
        the writer, before the answers in it."""
        new = [s for s in secrets if s not in self.secrets]
        self.secrets += new
        self._new_secrets += new

    def filtered(self) -> None:
        self._count["filtered"].inc()

    def depth(self) -> int:
        """Answers not written yet: in the buffer or with the writer."""
        return len(self._buffer) + (self._writer.unreported if self._writer else 0)

    async def close(self) -> None:
        """Send the buffer and let the writer write it (up to ``drain_timeout_s``)."""
        if self._reports_task is None:
            return
        reports = self._reports_task

        async def drain() -> None:
            while self._buffer:
                self._progress.clear()
                self._send()
                if self._buffer:  # the writer is busy, or being restarted
                    await self._progress.wait()
            self._all_sent = True
            if self._writer is not None and self._writer.alive:
                self._writer.end_input()  # the writer writes what it has, reports, and ends
            await reports

        try:
            await asyncio.wait_for(drain(), self.config.drain_timeout_s)
        except TimeoutError:
            self._all_sent = True
            lost = self.depth()
            log.error("capture: drain timed out, %d events not written", lost)
            self._count["dropped"].inc(lost)
            self._buffer.clear()
            reports.cancel()
            await asyncio.gather(reports, return_exceptions=True)
            if self._writer is not None:
                self._writer.unreported = 0
                await self._writer.kill()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drop(self, request_id: str, why: str) -> None:
        log.warning("capture: event %s dropped: %s", request_id, why)
        self._count["dropped"].inc()

    # -- the buffer -> the writer ------------------------------------------------------------

    def _send(self) -> None:
        """Send the buffer in frames of up to SEND_BATCH while the writer has room; what stays
        is sent when the writer reports or is replaced (``_reports``)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        writer, buffer = self._writer, self._buffer
        if writer is None or self._all_sent:
            return
        while buffer and writer.alive and writer.unreported < self._max_unreported:
            answers = buffer[:SEND_BATCH]
            del buffer[:SEND_BATCH]
            seq = next(self._seq)
            writer.pending[seq] = len(answers)
            writer.unreported += len(answers)
            secrets, self._new_secrets = self._new_secrets, []
            with contextlib.suppress(ConnectionError):  # a dead writer: _reports counts it
                writer.stdin.write(batch_frame(seq, payload(answers, secrets)))

    # -- the writer's reports ----------------------------------------------------------------

    async def _reports(self) -> None:
        while True:
            writer = self._writer
            assert writer is not None
            await self._read_reports(writer)
            code = await writer.ended()
            lost, writer.unreported = writer.unreported, 0
            writer.pending.clear()
            self._count["dropped"].inc(lost)
            ended = "went away" if code is None else f"exited with code {code}"
            if self._all_sent:
                if code or lost:
                    log.error("capture: the writer %s, %d events lost", ended, lost)
                return
            log.error("capture: the writer %s, %d events lost; restarting", ended, lost)
            self._writer = await self._restart()
            self._progress.set()
            self._send()

    async def _read_reports(self, writer: WriterLink) -> None:
        """Account for each report until the writer's stdout ends."""
        while True:
            try:
                report = await read_frame(writer.stdout)
            except (asyncio.IncompleteReadError, orjson.JSONDecodeError):
                report = None
            if report is None:
                return
            _, seqs, written, logs = report
            sent = sum(writer.pending.pop(seq, 0) for seq in seqs)
            writer.unreported -= sent
            for level, message in logs:
                log.log(level, message)
            if written:
                self._count["written"].inc(written)
            if sent > written:
                self._count["dropped"].inc(sent - written)
            self._progress.set()
            if self._buffer:
                self._send()

    async def _restart(self) -> WriterLink:
        """A new writer process; a worker's: a connection to the one its supervisor restarts."""
        for attempt in itertools.count():
            await asyncio.sleep(delay_of(attempt))
            try:
                return await self._open()
            except (ConfigError, BusError) as e:
                log.error("capture: the writer did not restart: %s", e)
        raise AssertionError("unreachable")
