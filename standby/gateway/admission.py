"""Admission: a cap on requests in flight, globally and per route.

A request over a cap is refused at once (503 ``overloaded`` with ``Retry-After``) instead of
queueing: a queue without a bound turns a burst into memory growth and into timeouts for
everyone. Two integer counters per request, no lock (one event loop).
"""

from __future__ import annotations

from standby.errors import Overloaded
from standby.gateway.metrics import Metrics


class Admission:
    """``enter(route)`` before serving (raises :class:`Overloaded` over a cap), ``leave(route)``
    once the request (or its stream) has ended. ``None`` (or 0) means no cap."""

    __slots__ = ("global_limit", "in_flight", "limits", "rejected", "total")

    def __init__(
        self, global_limit: int | None, limits: dict[str, int | None], metrics: Metrics
    ) -> None:
        self.global_limit = global_limit or 0
        self.limits = {route: limit or 0 for route, limit in limits.items()}
        self.in_flight = dict.fromkeys(limits, 0)
        self.total = 0
        self.rejected = {
            (route, scope): metrics.rejected.labels(route, scope)
            for route in limits
            for scope in ("route", "global")
        }

    def enter(self, route: str) -> None:
        limit = self.limits.get(route, 0)
        if self.global_limit and self.total >= self.global_limit:
            self.rejected[route, "global"].inc()
            raise Overloaded(f"The gateway is at its limit of {self.global_limit} requests.")
        if limit and self.in_flight[route] >= limit:
            self.rejected[route, "route"].inc()
            raise Overloaded(f"Route {route!r} is at its limit of {limit} requests.")
        self.total += 1
        self.in_flight[route] += 1

    def leave(self, route: str) -> None:
        self.total -= 1
        self.in_flight[route] -= 1
