"""Circuit breaker per backend.

closed ──(N consecutive failures, or failure ratio over the window)──► open
open ──(cool-down, or the backend's Retry-After if longer, elapsed)──► half-open
half-open: exactly one real request probes; success ► closed, failure ► open again.
While open (and while the probe is out) requests skip the backend without waiting for it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from enum import IntEnum

from standby.config import BreakerConfig

log = logging.getLogger("standby.breaker")


class State(IntEnum):
    """Values are the ``standby_breaker_state`` gauge: 0 closed, 1 half-open, 2 open."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


OnChange = Callable[[str, State, State], None]


class CircuitBreaker:
    def __init__(
        self,
        backend: str,
        config: BreakerConfig,
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.config = config
        self._on_change = on_change
        self._clock = clock
        self.state = State.CLOSED
        self.open_until = 0.0
        self._consecutive = 0
        self._probe_out = False
        self.forced: State | None = None  # held open or closed by a drill (force())
        # Per-second buckets [second, ok, failed] covering the last window_s seconds.
        self._buckets: deque[list[int]] = deque()

    def _set(self, state: State) -> None:
        old, self.state = self.state, state
        if old != state:
            log.warning("breaker %s: %s -> %s", self.backend, old.name, state.name)
            if self._on_change is not None:
                self._on_change(self.backend, old, state)

    def allow(self) -> bool:
        """May a request go to this backend now? In half-open, True for the one probe only."""
        if self.state == State.CLOSED:
            return True
        if self.state == State.OPEN:
            if self._clock() < self.open_until:
                return False
            self._set(State.HALF_OPEN)
            self._probe_out = False
        if self._probe_out:
            return False
        self._probe_out = True
        return True

    def current_state(self) -> State:
        """The state as seen now: an open breaker whose cool-down is over reads half-open even
        before a request arrives to probe (for metrics and readiness)."""
        if self.state == State.OPEN and self._clock() >= self.open_until:
            return State.HALF_OPEN
        return self.state

    def seconds_until_retry(self) -> float:
        return max(0.0, self.open_until - self._clock()) if self.state == State.OPEN else 0.0

    def _count(self, ok: bool) -> tuple[int, int]:
        now = self._clock()
        second = int(now)
        buckets = self._buckets
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0])
        buckets[-1][1 if ok else 2] += 1
        horizon = now - self.config.window_s
        while buckets and buckets[0][0] < horizon:
            buckets.popleft()
        okays = sum(b[1] for b in buckets)
        fails = sum(b[2] for b in buckets)
        return okays, fails

    def record_success(self) -> None:
        self._consecutive = 0
        self._count(True)
        if self.state != State.CLOSED and self.forced is None:
            self._probe_out = False
            self._buckets.clear()
            self._set(State.CLOSED)

    def record_failure(self, retry_after: float | None = None) -> None:
        self._consecutive += 1
        okays, fails = self._count(False)
        cfg = self.config
        tripped = self.state == State.HALF_OPEN or self._consecutive >= cfg.failures
        total = okays + fails
        if total >= cfg.min_requests and fails / total >= cfg.failure_ratio:
            tripped = True
        if tripped and self.forced is None:
            cooldown = max(cfg.cooldown_s, retry_after or 0.0)
            self.open_until = self._clock() + min(cooldown, cfg.max_cooldown_s)
            self._probe_out = False
            self._set(State.OPEN)

    def force(self, state: State | None) -> None:
        """For drills (``POST /admin/breakers/{backend}/...``): OPEN holds the breaker open
        (no request reaches the backend) and CLOSED holds it closed (failures no longer trip
        it) until the next ``force``; None resets it: closed, counters cleared, not held."""
        self.forced = state
        self._consecutive = 0
        self._probe_out = False
        self._buckets.clear()
        self.open_until = math.inf if state == State.OPEN else 0.0
        self._set(State.OPEN if state == State.OPEN else State.CLOSED)

    def release(self) -> None:
        """The request that held the half-open probe ended without a verdict (client error,
        cancelled): let the next request probe instead."""
        if self.state == State.HALF_OPEN:
            self._probe_out = False
