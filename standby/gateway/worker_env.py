"""How a worker process finds what it shares with the other workers of its port.

``standby serve --workers N`` (N > 1) makes a fresh run directory, names it in the environment
of the worker processes it starts (``standby.gateway.workers``), and deletes it when they have
all ended. It holds the breaker table (``standby.gateway.shared_breakers``), the admission
counts and rate-limit buckets (``standby.gateway.shared_limits``), the host's capture writer's
socket (``standby.gateway.capture_host``), the sockets of the model processes of ``local``
backends (``standby.gateway.model_host``) and prometheus-client's multiprocess files
(``metrics/``, also named by ``PROMETHEUS_MULTIPROC_DIR``, which prometheus-client reads when it
is imported). A gateway outside such a supervisor (one process,
``--workers 1``, or a test's in-process server) finds no run directory and shares nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
from pathlib import Path

RUN_DIR_ENV = "STANDBY_WORKERS_DIR"
WORKER_INDEX_ENV = "STANDBY_WORKER_INDEX"  # set by each worker for itself: 0 .. N-1
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable
SUPERVISOR_PID_ENV = "STANDBY_SUPERVISOR_PID"  # the process that started the workers


def run_dir() -> Path | None:
    """The run directory of this worker's supervisor; None in a gateway of one process."""
    value = os.environ.get(RUN_DIR_ENV)
    return Path(value) if value else None


def reload_every_worker() -> bool:
    """Ask the supervisor to reload the keys of every worker (it forwards SIGHUP to each, this
    one included); False in a gateway of one process, which has nobody to ask."""
    pid = os.environ.get(SUPERVISOR_PID_ENV)
    if run_dir() is None or not pid:
        return False
    os.kill(int(pid), signal.SIGHUP)
    return True


def worker_index() -> int:
    """This worker's slot, 0 .. N-1 (a restarted worker takes the slot of the one it replaces)."""
    return int(os.environ.get(WORKER_INDEX_ENV, "0"))


def metrics_dir(run: Path) -> Path:
    return run / "metrics"


def breaker_table_path(run: Path) -> Path:
    return run / "breakers"


def admission_path(run: Path) -> Path:
    return run / "admission"


def rate_buckets_path(run: Path) -> Path:
    return run / "rate-buckets"


def capture_socket_path(run: Path) -> Path:
    return run / "capture.sock"


def model_socket_path(run: Path, backend: str) -> Path:
    """The socket of the model process serving local backend ``backend`` (a digest of the name
    when it is long or unusual: a unix socket's path has at most 107 bytes)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", backend):
        backend = hashlib.sha256(backend.encode()).hexdigest()[:16]
    return run / f"model-{backend}.sock"
