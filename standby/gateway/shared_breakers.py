"""Breakers shared by the worker processes of one port (``server.workers`` > 1).

Each backend's breaker state (state, consecutive failures, the probe flag, the cool-down's end,
a drill's hold, the per-second outcome buckets of the window) lives in one record of a small
file in the supervisor's run directory, mapped into every worker (a ``shared_table``). A call
that may change the state locks the backend's record (an ``fcntl`` byte-range lock: one per
record, released by the kernel if a worker dies holding it), reads the record, runs
:class:`CircuitBreaker`'s own logic on it and writes it back. So the workers act as one
breaker: ``failures`` consecutive failures in total open it for all of them, and in half-open
exactly one request of the host probes.

What almost every request does takes no lock: with the breaker closed, ``allow`` reads the
state byte, and a success with no failure counted since the last one adds one to this worker's
own count of the current second (a ring of per-second counts per worker in the record, which
only that worker writes; the locked calls add every worker's ring to the window's outcomes).
A call that reads the state byte just before another worker changes it acts as if it came
just before that change. Everything else (a failure, a success that resets the consecutive
count or closes a half-open breaker, any call while not closed, a drill) takes the lock.

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
from standby.gateway.worker_env import breaker_table_path, run_dir, worker_index

T = TypeVar("T")

# state, held (0: not held, else the held State + 1), probe out, consecutive failures,
# cool-down end (monotonic seconds), buckets in use
_HEAD = struct.Struct("<bbbxIdI4x")
_STATE = struct.Struct("<b")  # the head's first byte
_CONSECUTIVE = struct.Struct("<I")  # at the head's offset 4
_BUCKET = struct.Struct("<qII")  # second, ok, failed
_SUCCESS = struct.Struct("<qq")  # a worker's ring entry: second, successes in it
_COUNT = struct.Struct("<q")  # the successes of a ring entry (its second half)
_CLOSED = int(State.CLOSED)


def _capacity(config: BreakerConfig) -> int:
    """Buckets a window can hold: one per second it spans, plus the partial ones at its ends."""
    return math.ceil(config.window_s) + 2


def _record_size(capacity: int, workers: int) -> int:
    """The head, the window's buckets, then one ring of ``capacity`` seconds per worker."""
    return _HEAD.size + capacity * _BUCKET.size + workers * capacity * _SUCCESS.size


def layout(settings: Settings) -> dict[str, tuple[int, int]]:
    """Each backend's record: its offset in the file and the buckets it has room for. Every
    process computes it from the same settings, so they agree without telling each other."""
    slots: dict[str, tuple[int, int]] = {}
    offset = 0
    for name in sorted(settings.backends):
        capacity = _capacity(settings.breaker_for(name))
        slots[name] = (offset, capacity)
        offset += _record_size(capacity, settings.server.workers)
    return slots


class BreakerTable:
    """The mapped file of one worker: every backend's record."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.slots = layout(settings)
        self.workers = settings.server.workers
        self.table = SharedTable(path)

    @staticmethod
    def create(path: Path, settings: Settings) -> None:
        """The supervisor's part: a file of closed breakers (all zero bytes), before any worker."""
        workers = settings.server.workers
        slots = layout(settings)
        size = max(offset + _record_size(cap, workers) for offset, cap in slots.values())
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
    """A :class:`CircuitBreaker` whose state is the backend's record in a :class:`BreakerTable`;
    ``worker`` is this process's ring (``worker_index()``: 0 .. workers - 1)."""

    def __init__(
        self,
        backend: str,
        config: BreakerConfig,
        table: BreakerTable,
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.monotonic,
        worker: int | None = None,
    ) -> None:
        super().__init__(backend, config, on_change, clock)
        self._table = table.table
        self._map = table.table.map
        self._offset, self._capacity = table.slots[backend]
        self._size = _record_size(self._capacity, table.workers)
        self._rings = self._offset + _HEAD.size + self._capacity * _BUCKET.size
        self._all_rings = struct.Struct(f"<{2 * table.workers * self._capacity}q")
        index = worker_index() if worker is None else worker
        if not 0 <= index < table.workers:
            raise ValueError(f"worker {index} of a table for {table.workers} workers")
        self._ring = self._rings + index * self._capacity * _SUCCESS.size

    def _shared(self, op: Callable[[], T]) -> T:
        """Run ``op`` on the record, locked: read it, run, write it back."""

        def run() -> T:
            self._load()
            result = op()
            self._store()
            return result

        return self._table.locked(self._offset, self._size, run)

    def _state(self) -> int:
        """The state byte, read without the lock (one byte: never half written)."""
        state: int = _STATE.unpack_from(self._map, self._offset)[0]
        return state

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

    def _count(self, ok: bool) -> tuple[int, int]:
        """The window's outcomes (locked): the record's buckets and every worker's successes
        counted without the lock, each ring entry whose second is still in the window."""
        okays, fails = super()._count(ok)
        horizon = self._clock() - self.config.window_s
        rings = self._all_rings.unpack_from(self._map, self._rings)
        okays += sum(rings[i + 1] for i in range(0, len(rings), 2) if rings[i] >= horizon)
        return okays, fails

    def outcomes(self) -> tuple[int, int]:
        """The host's successes and failures in the window now, as a failure counts them."""

        def read() -> tuple[int, int]:
            horizon = self._clock() - self.config.window_s
            inside = [b for b in self._buckets if b[0] >= horizon]
            rings = self._all_rings.unpack_from(self._map, self._rings)
            okays = sum(rings[i + 1] for i in range(0, len(rings), 2) if rings[i] >= horizon)
            return okays + sum(b[1] for b in inside), sum(b[2] for b in inside)

        return self._shared(read)

    def _clear_rings(self) -> None:
        """The window starts over (locked: a breaker closing, a drill)."""
        self._map[self._rings : self._offset + self._size] = bytes(
            self._offset + self._size - self._rings
        )

    def _count_success(self) -> None:
        """One success in this worker's ring, no lock (only this worker writes it). A new
        second's count is written before the second, so a reader that sees the new second sees
        its count; one that sees the old second with the new count skips the entry as out of
        the window (the ring holds ``capacity`` seconds, more than the window)."""
        second = int(self._clock())
        at = self._ring + (second % self._capacity) * _SUCCESS.size
        was, n = _SUCCESS.unpack_from(self._map, at)
        if was == second:
            _COUNT.pack_into(self._map, at + 8, n + 1)
        else:
            _COUNT.pack_into(self._map, at + 8, 1)
            _COUNT.pack_into(self._map, at, second)

    def allow(self) -> bool:
        if self._state() == _CLOSED:  # closed: every request may go, nothing changes
            return True
        return self._shared(super().allow)

    def current_state(self) -> State:
        if self._state() == _CLOSED:
            return State.CLOSED
        return self._shared(super().current_state)

    def seconds_until_retry(self) -> float:
        if self._state() != int(State.OPEN):
            return 0.0
        return self._shared(super().seconds_until_retry)

    def record_success(self) -> None:
        if (
            self._state() == _CLOSED
            and _CONSECUTIVE.unpack_from(self._map, self._offset + 4)[0] == 0
        ):
            self._count_success()  # nothing to reset, nothing to close: counted only
            return

        def succeed() -> None:
            closing = self.state != State.CLOSED and self.forced is None
            CircuitBreaker.record_success(self)
            if closing:  # the buckets were cleared: the rings too
                self._clear_rings()

        self._shared(succeed)

    def record_failure(self, retry_after: float | None = None) -> None:
        base = super().record_failure
        self._shared(lambda: base(retry_after))

    def force(self, state: State | None) -> None:
        def hold() -> None:
            CircuitBreaker.force(self, state)
            self._clear_rings()

        self._shared(hold)

    def release(self) -> None:
        if self._state() != int(State.HALF_OPEN):  # no probe to give back
            return
        self._shared(super().release)
