"""``standby serve --workers N`` (N > 1): N worker processes behind one port, supervised.

The supervising process binds the port once (``listening_socket``: a port that is taken is
said at once) and starts each worker with a fresh interpreter (multiprocessing's ``spawn``),
handing it the bound socket as an inherited file descriptor. Every worker listens on that one
socket, so they share one accept queue and the kernel gives each new connection to one worker
that is waiting in ``accept``. (``SO_REUSEPORT`` would give each worker its own queue, filled by
a hash of the client's address: a busy worker's queue waits while another idles, and the
connections queued to a worker that dies are reset.) Spawn, not fork: a worker starts as a new
process, not as a copy of one that may hold threads or locks, and a restarted worker starts
exactly as the first did.

The supervisor serves no request. It restarts a worker that dies (after 0.5 s, then longer
while it keeps dying; ``standby_worker_restarts_total``), forwards SIGHUP (key reload) to every
worker, and on SIGTERM or SIGINT sends SIGTERM to every worker, each of which drains as one
gateway does (in-flight requests, then its captured answers), and waits for them. A worker
that fails while the port is first starting (a backend that cannot start, a bad key file)
stops them all: its one-line error is on stderr and the supervisor exits with its code.

Shared between the workers, through a run directory the supervisor makes and deletes
(``worker_env``): the breakers (``shared_breakers``), admission caps and per-key rate limits
(``shared_limits``: a dead worker's slot of requests in flight is zeroed before it is
restarted), the capture writer (``capture_host``: one process for the host, which the workers
feed over a unix socket; started before them, restarted when it dies, stopped after them), each
local backend's model process (``model_host``: the weights loaded once, served to the workers
over a unix socket; started before them, restarted when it dies, stopped after them) and the
metrics (prometheus-client's multiprocess mode). Per worker: stored responses' connections.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, Counter, values
from prometheus_client.multiprocess import mark_process_dead

from standby.config import Settings
from standby.errors import ConfigError, StandbyError
from standby.gateway.capture_host import HostCaptureWriter
from standby.gateway.model_host import ModelHosts
from standby.gateway.restarts import RestartDelays
from standby.gateway.shared_breakers import BreakerTable
from standby.gateway.shared_limits import clear_worker, create_tables
from standby.gateway.worker_env import (
    METRICS_DIR_ENV,
    RUN_DIR_ENV,
    SUPERVISOR_PID_ENV,
    WORKER_INDEX_ENV,
    breaker_table_path,
    metrics_dir,
)

log = logging.getLogger("standby.workers")

POLL_S = 0.5

SetupLogging = Callable[[str], None]


def serve_workers(
    settings: Settings,
    *,
    setup_logging: SetupLogging,
    log_level: str = "info",
    config_path: str | Path | None = None,
) -> int:
    """Serve the port with ``settings.server.workers`` processes until SIGTERM/SIGINT; the exit
    code (0 after a clean drain). ``setup_logging`` sets up each worker's logging (the CLI's)."""
    from standby.gateway.server import listening_socket

    sock = listening_socket(settings.server.host, settings.server.port)
    run = Path(tempfile.mkdtemp(prefix="standby-workers-"))
    saved = {
        name: os.environ.get(name) for name in (RUN_DIR_ENV, METRICS_DIR_ENV, SUPERVISOR_PID_ENV)
    }
    capture = HostCaptureWriter(settings, run) if settings.capture.enabled else None
    context = multiprocessing.get_context("spawn")
    models = ModelHosts(context, settings, run, setup_logging, log_level)
    try:
        metrics_dir(run).mkdir()
        BreakerTable.create(breaker_table_path(run), settings)
        create_tables(run, settings)
        if capture is not None:
            capture.start()  # before the workers, which connect to it as they start
        models.start()  # each local backend's model loaded once, before the workers
        # Read by the workers (spawned with this environment) and by prometheus-client there.
        os.environ[RUN_DIR_ENV] = str(run)
        os.environ[METRICS_DIR_ENV] = str(metrics_dir(run))
        os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())  # POST /admin/keys/reload asks it
        supervisor = Supervisor(
            settings, sock, run, setup_logging, log_level, config_path, capture, models
        )
        return supervisor.run()  # every worker has ended (drained) when it returns
    finally:
        models.stop()  # after the workers, which drained through them
        if capture is not None:
            capture.stop()  # it writes what the workers handed it, then exits
        sock.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(run, ignore_errors=True)


class Worker:
    """One worker slot: its process now, and whether that process said it was serving."""

    def __init__(self, index: int, process: BaseProcess, ready: Connection) -> None:
        self.index = index
        self.process = process
        self.ready = ready
        self.serving = False
        self.started = time.monotonic()
        self.delays = RestartDelays()  # carried to the process that replaces this one
        self.restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        sock: socket.socket,
        run: Path,
        setup_logging: SetupLogging,
        log_level: str,
        config_path: str | Path | None,
        capture: HostCaptureWriter | None = None,
        models: ModelHosts | None = None,
    ) -> None:
        self.settings = settings
        self.capture = capture
        self.models = models
        self.sock = sock
        self.run_dir = run
        self.args = (setup_logging, settings, log_level, config_path)
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[Worker] = []
        self.stopping = False
        self.port_served = False  # some worker served: later deaths are restarted
        self.restarts = restart_counter(CollectorRegistry())
        self.worker_restarts = self.restarts.labels("worker")

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        try:
            self.workers = [self._start(i) for i in range(self.settings.server.workers)]
            return self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stop_all()

    def _start(self, index: int, delays: RestartDelays | None = None) -> Worker:
        receive, send = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker_main,
            args=(*self.args, self.sock, send, index),
            name=f"standby-worker-{index}",
        )
        process.start()
        send.close()
        worker = Worker(index, process, receive)
        if delays is not None:
            worker.delays = delays
        return worker

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGHUP:
            log.info("SIGHUP: reloading the keys of %d workers", len(self.workers))
            self._signal_all(signal.SIGHUP)
            return
        if not self.stopping:
            log.info("%s: draining %d workers", signal.Signals(sig).name, len(self.workers))
        self.stopping = True
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: int) -> None:
        for worker in self.workers:
            if worker.restart_at is None and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):  # ended, not yet reaped
                    os.kill(worker.process.pid, sig)

    def _supervise(self) -> int:
        code = 0
        while True:
            alive = [w for w in self.workers if w.restart_at is None]
            if self.stopping and not any(w.process.exitcode is None for w in alive):
                return code
            waits: list[Any] = [w.process.sentinel for w in alive]
            waits += [w.ready for w in alive if not w.ready.closed]
            if self.capture is not None:
                waits += self.capture.waitable()
            if self.models is not None:
                waits += self.models.waitable()
            wait(waits, timeout=self._next_timeout())
            if self.capture is not None:
                self.capture.check(self.stopping)
            if self.models is not None and (died := self.models.check(self.stopping)):
                self.restarts.labels("model_host").inc(died)
            for worker in alive:
                if not worker.ready.closed and worker.ready.poll():
                    worker.serving = self.port_served = _said_ready(worker.ready)
                if worker.process.exitcode is not None:
                    failed = self._ended(worker)
                    if failed is not None:
                        code = failed
            if code and not self.stopping:  # a worker failed to start the port: stop all
                self.stopping = True
                self._signal_all(signal.SIGTERM)
            now = time.monotonic()
            for i, worker in enumerate(self.workers):
                if worker.restart_at is not None and now >= worker.restart_at and not self.stopping:
                    self.workers[i] = self._start(worker.index, worker.delays)

    def _ended(self, worker: Worker) -> int | None:
        """A worker's process ended: forget its live gauges; restart it later, or return the
        exit code that stops the supervisor (a failure before the port was ever served)."""
        pid, exitcode = worker.process.pid, worker.process.exitcode
        assert pid is not None and exitcode is not None
        mark_process_dead(pid, str(metrics_dir(self.run_dir)))  # type: ignore[no-untyped-call]
        clear_worker(self.run_dir, self.settings, worker.index)  # its requests are not in flight
        worker.process.close()
        worker.ready.close()
        if self.stopping:
            worker.restart_at = math.inf
            return None
        if not self.port_served:
            worker.restart_at = math.inf
            return exitcode or 1
        delay = worker.delays.after(time.monotonic() - worker.started)
        worker.restart_at = time.monotonic() + delay
        self.worker_restarts.inc()
        log.error(
            "worker %d (pid %d) exited with code %d; restarting it in %.1f s",
            worker.index,
            pid,
            exitcode,
            delay,
        )
        return None

    def _next_timeout(self) -> float:
        if self.stopping:
            return POLL_S
        now = time.monotonic()
        pending = [w.restart_at - now for w in self.workers if w.restart_at is not None]
        if self.capture is not None and (writer := self.capture.next_timeout()) is not None:
            pending.append(writer)
        if self.models is not None and (model := self.models.next_timeout()) is not None:
            pending.append(model)
        return max(0.0, min([POLL_S, *pending]))

    def _stop_all(self) -> None:
        """On the way out: every worker gets SIGTERM and is waited for (its drain included)."""
        self._signal_all(signal.SIGTERM)
        for worker in self.workers:
            if worker.restart_at is None:
                worker.process.join()


def _said_ready(ready: Connection) -> bool:
    """The worker's one message (it serves), or False when it ended before sending it."""
    try:
        return bool(ready.recv())
    except EOFError:
        return False
    finally:
        ready.close()


def restart_counter(registry: CollectorRegistry) -> Counter:
    """``standby_worker_restarts_total{kind}`` on ``registry`` (kind ``worker`` or
    ``model_host``, a local backend's model process); in the supervisor, kept in the
    multiprocess files (so every worker's ``/metrics`` shows it): prometheus-client picks its
    value store when first imported, and the supervisor imported it before the run directory
    existed, so it is picked again here."""
    previous = values.ValueClass
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    try:
        counter = Counter(
            "standby_worker_restarts",
            "Processes restarted after they died (standby serve --workers N > 1), by kind: "
            "worker, model_host (a local backend's model process).",
            ["kind"],
            registry=registry,
        )
        for kind in ("worker", "model_host"):  # each child's value is made here
            counter.labels(kind).inc(0)  # written at zero, so the first restart shows in rate()
    finally:
        values.ValueClass = previous
    return counter


def _worker_main(
    setup_logging: SetupLogging,
    settings: Settings,
    log_level: str,
    config_path: str | Path | None,
    sock: socket.socket,
    ready: Connection,
    index: int,
) -> None:
    """A worker process: one gateway serving the inherited socket; errors as the CLI says them."""
    from standby.gateway.server import serve

    os.environ[WORKER_INDEX_ENV] = str(index)  # its slot in the shared admission counts
    setup_logging(log_level)

    def started(server: object, gw: object) -> None:
        ready.send(True)
        ready.close()

    try:
        serve(settings, log_level=log_level, config_path=config_path, sock=sock, on_started=started)
    except (ConfigError, StandbyError) as e:
        print(f"standby: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        print(f"standby: error: {e.strerror or e}{where}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
