"""Pacing and backoff for calls to a hosted LLM.

:class:`Pacer` spaces requests evenly (one every ``60 / rpm`` seconds, reserved in order
of arrival), so a quota of N per minute is met without bursts and without the original tool's
"sleep after every batch", which idled the workers and still burst at each batch start.
"""

from __future__ import annotations

import asyncio
import random
import time


class Pacer:
    """At most ``per_minute`` acquisitions per minute, evenly spaced. Concurrent callers each
    reserve the next free slot, then sleep until it comes."""

    def __init__(self, per_minute: float) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.interval = 60.0 / per_minute
        self._next = 0.0
        self._hold_until = 0.0
        self.waited_s = 0.0

    async def acquire(self) -> None:
        while True:
            now = time.monotonic()
            slot = max(now, self._next, self._hold_until)
            self._next = slot + self.interval
            delay = slot - now
            if delay > 0:
                self.waited_s += delay
                await asyncio.sleep(delay)
            if time.monotonic() >= self._hold_until:
                return
            # A Retry-After arrived while this caller slept: its slot is void, take a new one.

    def hold_off(self, seconds: float) -> None:
        """The server said to wait (Retry-After): no slot is handed out for ``seconds``, also
        to callers that already hold one and are waiting for it."""
        self._hold_until = max(self._hold_until, time.monotonic() + seconds)


def backoff_delay(
    attempt: int, base_s: float, cap_s: float, retry_after: float | None = None
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential with "equal jitter"
    (half fixed, half random, so retries of many workers spread out but never shrink to 0);
    a server's Retry-After is a floor, even above ``cap_s``."""
    ceiling = min(cap_s, base_s * (2.0**attempt))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, retry_after + random.uniform(0, min(base_s, 1.0) / 4))
    return delay
