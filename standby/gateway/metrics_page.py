"""The ``/metrics`` page, rendered at most a few times a second.

``/metrics`` is public (docs/security.md) and rendering it costs about 50 times an
unauthenticated chat request (every series formatted: ~0.9 ms against ~18 us in-process), so a
flood of scrapes would take the event loop from keyed requests. Renders are paced by a token
bucket: a burst of ``BURST`` renders, refilled at ``RENDERS_PER_S``; a scrape that finds the
bucket empty gets the page rendered last, at most ``1 / RENDERS_PER_S`` seconds old. Prometheus
(one scrape every 15 s or so) and a person polling always get a fresh page; a flood costs one
render per refill and a time check per request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import generate_latest

if TYPE_CHECKING:
    from standby.gateway.app import Gateway

RENDERS_PER_S = 5.0
BURST = 10.0


class MetricsPage:
    """The last rendered page and the bucket that paces renders; ``renders`` counts them."""

    __slots__ = ("_at", "_page", "_render", "_tokens", "renders")

    def __init__(self, render: Callable[[], bytes]) -> None:
        self._render = render
        self._page = b""
        self._tokens = BURST
        self._at = time.monotonic()
        self.renders = 0

    def get(self) -> bytes:
        now = time.monotonic()
        tokens = min(BURST, self._tokens + (now - self._at) * RENDERS_PER_S)
        self._at = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            self._page = self._render()
            self.renders += 1
        else:
            self._tokens = tokens
        return self._page


def render(gw: Gateway) -> bytes:
    """The page itself, with the gauges that are computed at scrape time refreshed first (a
    breaker's cool-down ends without any request)."""
    ready = {name: p.ready() for name, p in gw.failover.providers.items()}
    gw.metrics.refresh(gw.failover.breakers, ready)
    if gw.capture is not None:
        gw.metrics.capture_queue_depth.set(gw.capture.depth())
    return generate_latest(gw.metrics.registry)
