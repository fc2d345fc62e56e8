"""One backend's stream under its time limits (``Timeouts``): the first piece within
``first_token_s``, each next one within ``idle_s``, all of it within ``total_s``. Failover
reads every backend's stream through one, for streamed and whole answers alike.

One timer per stream, not one per piece: ``next`` moves the piece's expiry (a float) and arms
the loop's timer only when it has none or it is set later than the new expiry (the switch to
``idle_s`` or to what is left of ``total_s``). A timer that fires before the expiry it guards
(the pieces kept coming) is set again for it; one that fires while no piece is awaited (the
caller is writing to its client, which no limit here covers) is dropped until the next
``next``. Cancelling the reading task and turning that cancellation into the limit's error
follows ``asyncio.timeout``: a cancellation of the task by anyone else still propagates."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

from standby.config import Timeouts
from standby.errors import UpstreamProtocolError, UpstreamTimeout
from standby.protocol import Delta
from standby.providers.base import aclose


class TimedStream:
    """One backend's stream under its first-token / idle / total limits."""

    __slots__ = (
        "_armed",
        "_expires",
        "_fired",
        "_handle",
        "_reader",
        "deadline",
        "got_content",
        "limits",
        "loop",
        "name",
        "source",
    )

    def __init__(self, name: str, source: AsyncIterator[Delta], limits: Timeouts) -> None:
        self.name = name
        self.source = source
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + limits.total_s
        self.got_content = False
        self._expires = 0.0  # when the piece being awaited is late
        self._armed = math.inf  # when the timer fires (inf: no timer)
        self._handle: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[object] | None = None  # the task awaiting a piece now
        self._fired = False  # the timer cancelled the reader

    async def next(self) -> Delta:
        limits = self.limits
        if self.got_content:
            limit, phase = limits.idle_s, "idle"
        else:
            limit, phase = limits.first_token_s, "first_token"
        now = self.loop.time()
        remaining = self.deadline - now
        if remaining <= limit:
            limit, phase = max(remaining, 0.0), "total"
        self._expires = expires = now + limit
        if expires < self._armed:
            self._arm(expires, limit)
        reader = asyncio.current_task()
        assert reader is not None, "TimedStream.next outside a task"
        cancelling = reader.cancelling()
        self._reader = reader
        try:
            delta = await anext(self.source)
        except BaseException as e:
            self._reader = None
            if self._fired:
                self._fired = False
                if reader.uncancel() <= cancelling and type(e) is asyncio.CancelledError:
                    seconds = limits.total_s if phase == "total" else limit
                    raise UpstreamTimeout(self.name, phase, seconds) from None
            if type(e) is StopAsyncIteration:
                raise UpstreamProtocolError(self.name, "stream ended without a finish") from None
            raise
        self._reader = None
        if self._fired:  # the source took the cancellation and went on: as asyncio.timeout
            self._fired = False
            reader.uncancel()
        if not self.got_content:
            self.got_content = bool(delta.text or delta.tool_calls or delta.reasoning)
        return delta

    def _arm(self, when: float, delay: float) -> None:
        # call_later, not call_at: half the cost on uvloop, and ``delay`` is at hand.
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self.loop.call_later(delay, self._on_timer, when)
        self._armed = when

    def _on_timer(self, when: float) -> None:
        self._handle, self._armed = None, math.inf
        reader = self._reader
        if reader is None:
            return  # no piece awaited: the next ``next`` arms it again
        expires = self._expires
        if expires > when:  # pieces came since it was set: wait for the latest one's limit
            self._arm(expires, expires - self.loop.time())
            return
        self._fired = True
        reader.cancel()

    async def aclose(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle, self._armed = None, math.inf
        await aclose(self.source)
