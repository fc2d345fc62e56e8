"""One backend's stream under its time limits (``Timeouts``): the first piece within
``first_token_s``, each next one within ``idle_s``, all of it within ``total_s``. Failover
reads every backend's stream through one, for streamed and whole answers alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from standby.config import Timeouts
from standby.errors import UpstreamProtocolError, UpstreamTimeout
from standby.protocol import Delta
from standby.providers.base import aclose


class TimedStream:
    """One backend's stream under its first-token / idle / total limits."""

    def __init__(self, name: str, source: AsyncIterator[Delta], limits: Timeouts) -> None:
        self.name = name
        self.source = source
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + limits.total_s
        self.got_content = False

    async def next(self) -> Delta:
        limits = self.limits
        if self.got_content:
            limit, phase = limits.idle_s, "idle"
        else:
            limit, phase = limits.first_token_s, "first_token"
        remaining = self.deadline - self.loop.time()
        if remaining <= limit:
            limit, phase = max(remaining, 0.0), "total"
        try:
            async with asyncio.timeout(limit):
                delta = await anext(self.source)
        except StopAsyncIteration:
            raise UpstreamProtocolError(self.name, "stream ended without a finish") from None
        except TimeoutError:
            seconds = limits.total_s if phase == "total" else limit
            raise UpstreamTimeout(self.name, phase, seconds) from None
        self.got_content = self.got_content or bool(
            delta.text or delta.tool_calls or delta.reasoning
        )
        return delta

    async def aclose(self) -> None:
        await aclose(self.source)
