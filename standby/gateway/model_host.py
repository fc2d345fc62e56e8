"""The host's one model process per ``local`` backend under ``standby serve --workers N``
(N > 1), as its supervisor runs it: started before the workers, restarted when it dies, stopped
after them.

The process (``_host_main``, a fresh interpreter: multiprocessing's ``spawn``) loads the backend's
``LocalProvider`` (weights, batching, adapters: as in one process), follows the model registry
when ``registry.follow`` names the backend (so a promotion is swapped once for the host), and
serves the provider on a unix socket in the run directory (``providers.local_host``, 0600). Every
worker's provider for that backend forwards to it (``providers.local_remote``).

The supervisor waits for the model to load before it starts the workers: a model that cannot
load stops ``standby serve`` with the provider's one-line error, as in one process. The model
process ignores SIGTERM and SIGINT (they reach the whole process group), so the workers can
drain through it; it stops when the supervisor closes its end of their pipe (after every worker
ended, or when the supervisor dies): it lets requests in flight finish for up to
``server.shutdown_grace_s``, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from standby.config import LocalBackend, Settings
from standby.errors import ConfigError, StandbyError, UpstreamError
from standby.gateway.restarts import RestartDelays
from standby.gateway.worker_env import (
    METRICS_DIR_ENV,
    RUN_DIR_ENV,
    SUPERVISOR_PID_ENV,
    model_socket_path,
)

log = logging.getLogger("standby.workers")

STOP_KILL_S = 10.0  # beyond shutdown_grace_s, how long a stopping model process may take

SetupLogging = Callable[[str], None]


def local_backends(settings: Settings) -> list[str]:
    return [n for n, b in settings.backends.items() if isinstance(b, LocalBackend)]


class ModelHost:
    """The supervisor's handle on the model process of one local backend."""

    def __init__(
        self,
        context: SpawnContext,
        settings: Settings,
        name: str,
        run: Path,
        setup_logging: SetupLogging,
        log_level: str,
    ) -> None:
        self.context = context
        self.settings = settings
        self.name = name
        self.socket = model_socket_path(run, name)
        self.args = (setup_logging, settings, log_level, name, str(self.socket))
        self.process: BaseProcess | None = None
        self.pipe: Connection | None = None  # ours; closing it stops the process
        self.serving = False
        self.serving_since: float | None = None  # when the running process said it serves
        self.delays = RestartDelays()
        self.restart_at: float | None = None

    def start(self) -> None:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=_host_main, args=(*self.args, theirs), name=f"standby-model-{self.name}"
        )
        process.start()
        theirs.close()
        self.process, self.pipe = process, ours
        self.serving, self.restart_at = False, None
        self.serving_since = None

    def wait_ready(self) -> None:
        """Until the model serves; its error (the one line the provider gave) when it cannot."""
        assert self.process is not None and self.pipe is not None
        from multiprocessing.connection import wait

        wait([self.pipe, self.process.sentinel])
        said = self._said()
        if said is not None:
            self._forget()
            raise said
        if not self.serving:
            code = self.process.exitcode
            self._forget()
            raise StandbyError(f"{self.name}: the model process exited with code {code}")

    def _said(self) -> StandbyError | None:
        """Read the process's message, if one waits: ready, or why it could not start."""
        assert self.pipe is not None
        try:
            if not self.pipe.poll():
                return None
            message = self.pipe.recv()
        except (EOFError, OSError):
            return None
        if message == ("ready",):
            self.serving, self.serving_since = True, time.monotonic()
            log.info("%s: the model process serves (%s)", self.name, self.socket.name)
            return None
        kind, backend, text = message
        if kind == "upstream":
            return UpstreamError(backend, text)
        return ConfigError(text) if kind == "config" else StandbyError(text)

    def waitable(self) -> list[Any]:
        if self.process is None or self.pipe is None:
            return []
        return [self.process.sentinel, *([] if self.serving else [self.pipe])]

    def check(self, stopping: bool) -> bool:
        """The supervisor's turn: True when the process just died (to be counted)."""
        died = False
        if self.process is not None and self.pipe is not None:
            if not self.serving:
                said = self._said()
                if said is not None:
                    log.error("%s: the model process cannot start: %s", self.name, said)
            if self.process.exitcode is not None:
                code = self.process.exitcode
                self._forget()
                died = True
                # Timed from serving, not from the start: a model that loads for minutes and
                # then fails must not be reloaded every 0.5 s.
                since = self.serving_since
                delay = self.delays.after(None if since is None else time.monotonic() - since)
                self.restart_at = time.monotonic() + delay
                log.error(
                    "%s: the model process exited with code %s; restarting it in %.1f s",
                    self.name,
                    code,
                    delay,
                )
        if self.restart_at is not None and time.monotonic() >= self.restart_at and not stopping:
            self.start()
        return died

    def next_timeout(self) -> float | None:
        return None if self.restart_at is None else max(0.0, self.restart_at - time.monotonic())

    def stop(self) -> None:
        """After every worker ended: the process finishes what it serves and exits (killed
        after ``shutdown_grace_s`` and a few seconds more)."""
        process = self.process
        if process is None:
            return
        assert self.pipe is not None
        self.pipe.close()
        process.join(self.settings.server.shutdown_grace_s + STOP_KILL_S)
        if process.exitcode is None:
            log.error("%s: the model process did not stop in time; killed", self.name)
            process.kill()
            process.join()
        self._forget()

    def _forget(self) -> None:
        if self.pipe is not None:
            with contextlib.suppress(OSError):
                self.pipe.close()
        if self.process is not None and self.process.exitcode is not None:
            self.process.close()
        self.process = self.pipe = None
        self.serving = False


class ModelHosts:
    """Every local backend's model process."""

    def __init__(
        self,
        context: SpawnContext,
        settings: Settings,
        run: Path,
        setup_logging: SetupLogging,
        log_level: str,
    ) -> None:
        self.hosts = [
            ModelHost(context, settings, name, run, setup_logging, log_level)
            for name in local_backends(settings)
        ]

    def start(self) -> None:
        """Start them all, then wait for each model to load (in parallel)."""
        for host in self.hosts:
            host.start()
        try:
            for host in self.hosts:
                host.wait_ready()
        except BaseException:
            self.stop()
            raise

    def waitable(self) -> list[Any]:
        return [w for host in self.hosts for w in host.waitable()]

    def check(self, stopping: bool) -> int:
        """How many died since the last check (each is restarted after its delay)."""
        return sum(host.check(stopping) for host in self.hosts)

    def next_timeout(self) -> float | None:
        pending = [t for host in self.hosts if (t := host.next_timeout()) is not None]
        return min(pending, default=None)

    def stop(self) -> None:
        for host in self.hosts:
            if host.pipe is not None:
                with contextlib.suppress(OSError):
                    host.pipe.close()  # every one starts to drain now
        for host in self.hosts:
            host.stop()


def _host_main(
    setup_logging: SetupLogging,
    settings: Settings,
    log_level: str,
    name: str,
    socket: str,
    pipe: Connection,
) -> None:
    """The model process: load, serve the socket until the supervisor's pipe closes."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the workers drain through this process
    # Not a worker: no shared admission slot, and its metrics (prometheus-client reads this
    # when first imported, below) stay its own.
    for var in (RUN_DIR_ENV, METRICS_DIR_ENV, SUPERVISOR_PID_ENV):
        os.environ.pop(var, None)
    setup_logging(log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(_host(settings, name, Path(socket), pipe))
    else:
        uvloop.run(_host(settings, name, Path(socket), pipe))


async def _host(settings: Settings, name: str, socket: Path, pipe: Connection) -> None:
    from prometheus_client import CollectorRegistry

    from standby.gateway.metrics import Metrics
    from standby.gateway.promotions import ModelFollower
    from standby.gctune import freeze_startup_objects
    from standby.providers.local import LocalProvider
    from standby.providers.local_host import ModelServer

    config = settings.backends[name]
    assert isinstance(config, LocalBackend)
    provider = LocalProvider(name, config)
    follower: ModelFollower | None = None
    try:
        await provider.start()
        if name in settings.registry.follow:  # this process follows, once for the host
            metrics = Metrics(CollectorRegistry())  # the workers publish what it serves
            follower = ModelFollower(settings, {name: provider}, metrics)
            await follower.start()
        follows = follower
        server = ModelServer(
            provider, lambda: follows.serving.get(name) if follows is not None else None
        )
        await server.start(socket)
    except (StandbyError, OSError) as e:
        if isinstance(e, UpstreamError):
            said = ("upstream", e.backend, e.message)
        elif isinstance(e, OSError):  # the socket cannot be made
            said = ("other", name, f"{name}: cannot serve {socket}: {e.strerror or e}")
        else:
            said = ("config" if isinstance(e, ConfigError) else "other", name, str(e))
        with contextlib.suppress(OSError):  # the supervisor may be gone
            pipe.send(said)
        if follower is not None:
            await follower.close()
        await provider.close()
        return
    freeze_startup_objects()
    try:
        pipe.send(("ready",))
    except OSError:  # the supervisor is gone: nobody to serve
        await server.close(0)
        await provider.close()
        return
    stop = asyncio.Event()
    asyncio.get_running_loop().add_reader(pipe.fileno(), stop.set)  # readable: closed
    await stop.wait()
    await server.close(settings.server.shutdown_grace_s)
    if follower is not None:
        await follower.close()
    await provider.close()
