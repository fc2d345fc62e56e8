"""Breakers shared by the worker processes of one port (``server.workers`` > 1).

Each backend's breaker state (state, consecutive failures, the probe flag, the cool-down's end,
a drill's hold, the per-second outcome buckets of the window) lives in one record of a small
file in the supervisor's run directory, mapped into every worker (a ``shared_table``). Each
breaker call locks the backend's record (an ``fcntl`` byte-range lock: one per record, released
by the kernel if a worker dies holding it), reads the record, runs :class:`CircuitBreaker`'s
own logic on it and writes it back. So the workers act as one breaker: ``failures``
consecutive failures in total open it for all of them, and in half-open exactly one request of
the host probes.

The clock is ``time.monotonic`` (``CLOCK_MONOTONIC``), one clock for every process of the host,
so a cool-down's end written by one worker means the same instant to the others. A worker that
did not make a transition does not log it or call ``on_change``; ``/metrics`` reads
``current_state()`` at scrape time.
"""

from __future__ import annotations

import math
import struct
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from standby.config import BreakerConfig, Settings
from standby.gateway.breaker import CircuitBreaker, OnChange, State
from standby.gateway.shared_table import SharedTable
from standby.gateway.worker_env import breaker_table_path, run_dir

T = TypeVar("T")

# state, held (0: not held, else the held State + 1), probe out, consecutive failures,
# cool-down end (monotonic seconds), buckets in use
_HEAD = struct.Struct("<bbbxIdI4x")
_BUCKET = struct.Struct("<qII")  # second, ok, failed


def _capacity(config: BreakerConfig) -> int:
    """Buckets a window can hold: one per second it spans, plus the partial ones at its ends."""
    return math.ceil(config.window_s) + 2


def layout(settings: Settings) -> dict[str, tuple[int, int]]:
    """Each backend's record: its offset in the file and the buckets it has room for. Every
    process computes it from the same settings, so they agree without telling each other."""
    slots: dict[str, tuple[int, int]] = {}
    offset = 0
    for name in sorted(settings.backends):
        capacity = _capacity(settings.breaker_for(name))
        slots[name] = (offset, capacity)
        offset += _HEAD.size + capacity * _BUCKET.size
    return slots


class BreakerTable:
    """The mapped file of one worker: every backend's record."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.slots = layout(settings)
        self.table = SharedTable(path)

    @staticmethod
    def create(path: Path, settings: Settings) -> None:
        """The supervisor's part: a file of closed breakers (all zero bytes), before any worker."""
        slots = layout(settings)
        size = max(offset + _HEAD.size + cap * _BUCKET.size for offset, cap in slots.values())
        SharedTable.create(path, size)

    @classmethod
    def for_worker(cls, settings: Settings) -> BreakerTable | None:
        """The table of this worker's supervisor; None in a gateway of one process."""
        run = run_dir()
        return cls(breaker_table_path(run), settings) if run is not None else None

    def breaker(
        self, backend: str, config: BreakerConfig, on_change: OnChange | None
    ) -> SharedBreaker:
        return SharedBreaker(backend, config, self, on_change)


class SharedBreaker(CircuitBreaker):
    """A :class:`CircuitBreaker` whose state is the backend's record in a :class:`BreakerTable`."""

    def __init__(
        self,
        backend: str,
        config: BreakerConfig,
        table: BreakerTable,
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(backend, config, on_change, clock)
        self._table = table.table
        self._map = table.table.map
        self._offset, self._capacity = table.slots[backend]
        self._size = _HEAD.size + self._capacity * _BUCKET.size

    def _shared(self, op: Callable[[], T]) -> T:
        """Run ``op`` on the record, locked: read it, run, write it back."""

        def run() -> T:
            self._load()
            result = op()
            self._store()
            return result

        return self._table.locked(self._offset, self._size, run)

    def _load(self) -> None:
        state, held, probe, consecutive, open_until, n = _HEAD.unpack_from(self._map, self._offset)
        self.state = State(state)
        self.forced = State(held - 1) if held else None
        self._probe_out = bool(probe)
        self._consecutive = consecutive
        self.open_until = open_until
        at = self._offset + _HEAD.size
        self._buckets = deque(
            list(_BUCKET.unpack_from(self._map, at + i * _BUCKET.size)) for i in range(n)
        )

    def _store(self) -> None:
        buckets = self._buckets
        while len(buckets) > self._capacity:  # not reached: the window prunes them first
            buckets.popleft()
        held = 0 if self.forced is None else int(self.forced) + 1
        _HEAD.pack_into(
            self._map,
            self._offset,
            int(self.state),
            held,
            int(self._probe_out),
            self._consecutive,
            self.open_until,
            len(buckets),
        )
        at = self._offset + _HEAD.size
        for i, (second, ok, failed) in enumerate(buckets):
            _BUCKET.pack_into(self._map, at + i * _BUCKET.size, second, ok, failed)

    def allow(self) -> bool:
        return self._shared(super().allow)

    def current_state(self) -> State:
        return self._shared(super().current_state)

    def seconds_until_retry(self) -> float:
        return self._shared(super().seconds_until_retry)

    def record_success(self) -> None:
        self._shared(super().record_success)

    def record_failure(self, retry_after: float | None = None) -> None:
        base = super().record_failure
        self._shared(lambda: base(retry_after))

    def force(self, state: State | None) -> None:
        base = super().force
        self._shared(lambda: base(state))

    def release(self) -> None:
        self._shared(super().release)
