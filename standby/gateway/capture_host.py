"""The host's one capture writer under ``standby serve --workers N`` (N > 1), as its supervisor
runs it: started before the workers, restarted when it dies, stopped after them.

The writer (``standby.gateway.capture_writer``) is the supervisor's child; its first frame names
the unix socket in the run directory that the workers connect to (``capture.HostWriter``). The
supervisor waits for it to open the bus: a bad bus URL or an unusable bus stops ``standby
serve`` with the writer's one-line error, as in one process. Afterwards its stdin stays open and
unused; closing it, once every worker has drained into it, lets it write what it holds and exit.
It ignores SIGTERM and SIGINT (they reach the whole process group), so a supervisor killed
outright still leaves it to write what it was handed: its stdin ends then too.
"""

from __future__ import annotations

import contextlib
import logging
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import orjson

from standby.config import Settings
from standby.errors import ConfigError
from standby.gateway.capture import START_TIMEOUT_S
from standby.gateway.capture_writer import frame
from standby.gateway.restarts import RestartDelays
from standby.gateway.secrets import secret_values
from standby.gateway.worker_env import capture_socket_path
from standby.store import BusError

log = logging.getLogger("standby.capture")


class HostCaptureWriter:
    """The supervisor's handle on the host's writer process."""

    def __init__(self, settings: Settings, run: Path) -> None:
        self.settings = settings
        self.socket = capture_socket_path(run)
        self.proc: subprocess.Popen[bytes] | None = None
        self.delays = RestartDelays()
        self.started = 0.0
        self.restart_at: float | None = None

    def start(self) -> None:
        """Start the writer and wait until it serves its socket; ConfigError / BusError (its
        one line) when it cannot open the bus."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "standby.gateway.capture_writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        first = {
            "config": self.settings.capture.model_dump(mode="json"),
            "secrets": secret_values(self.settings),
            "socket": str(self.socket),
        }
        try:
            proc.stdin.write(frame(first))
            proc.stdin.flush()
            reply = _read_reply(proc.stdout, START_TIMEOUT_S)
        except OSError:
            reply = None
        if reply == ["ready"]:
            self.proc = proc
            self.started = time.monotonic()
            self.restart_at = None
            return
        proc.kill()
        proc.wait()
        if isinstance(reply, list) and len(reply) == 4 and reply[0] == "failed":
            _, kind, message, reason = reply
            raise ConfigError(message) if kind == "config" else BusError(message, reason=reason)
        raise BusError(
            f"capture writer did not start (exit code {proc.returncode})", reason="unavailable"
        )

    def waitable(self) -> list[Any]:
        """What the supervisor's wait() watches: the writer's stdout ends when it dies."""
        if self.proc is None or self.proc.stdout is None or self.proc.stdout.closed:
            return []
        return [self.proc.stdout]

    def check(self, stopping: bool) -> None:
        """The supervisor's turn: note a writer that died, restart it when its delay is over."""
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            self._forget()
            delay = self.delays.after(time.monotonic() - self.started)
            self.restart_at = time.monotonic() + delay
            log.error(
                "capture: the host's writer exited with code %s; restarting it in %.1f s",
                code,
                delay,
            )
        if self.restart_at is not None and time.monotonic() >= self.restart_at and not stopping:
            try:
                self.start()
            except (ConfigError, BusError) as e:
                delay = self.delays.after(None)
                self.restart_at = time.monotonic() + delay
                log.error("capture: the host's writer did not restart: %s", e)

    def next_timeout(self) -> float | None:
        return None if self.restart_at is None else max(0.0, self.restart_at - time.monotonic())

    def stop(self) -> None:
        """After every worker ended: the writer writes what it holds and exits (waited for up
        to ``drain_timeout_s``, then killed)."""
        proc = self.proc
        if proc is None:
            return
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(self.settings.capture.drain_timeout_s)
        except subprocess.TimeoutExpired:
            log.error("capture: the host's writer did not finish in time; killed")
            proc.kill()
            proc.wait()
        self._forget()

    def _forget(self) -> None:
        if self.proc is not None:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        self.proc = None


def _read_reply(out: IO[bytes], timeout_s: float) -> Any:
    """The writer's first message, or None when it ended or said nothing in time."""
    ready, _, _ = select.select([out], [], [], timeout_s)
    if not ready:
        return None
    head = out.read(4)
    if len(head) < 4:
        return None
    body = out.read(int.from_bytes(head, "big"))
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
