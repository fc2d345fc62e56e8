"""Prometheus metrics (names and labels: docs/runbook.md). Label values come only from the
config (route, backend names) or fixed sets (reason, outcome): never a user, key or prompt."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from standby.gateway.breaker import CircuitBreaker, State
from standby.gateway.worker_env import metrics_dir, run_dir


def _kept_pid() -> Callable[[], int]:
    """This process's pid, asked of the kernel once (and again in a forked child)."""
    pid = [os.getpid()]
    os.register_at_fork(after_in_child=lambda: pid.__setitem__(0, os.getpid()))
    return lambda: pid[0]


# In a worker of several, prometheus-client picked its multiprocess values when imported (it saw
# PROMETHEUS_MULTIPROC_DIR), and each of their writes asks the kernel for the pid to notice a
# fork: 9 system calls per streamed request. Picked again here, before any value exists, with
# the pid kept (a fork still changes it, so a forked child still starts its own files).
if values.ValueClass._multiprocess:
    values.ValueClass = values.MultiProcessValue(_kept_pid())  # type: ignore[no-untyped-call]


class Children:
    """``metric.labels(...)`` costs a lock, validation and a dict lookup on every call; the hot
    path keeps the children it has seen. Label values are bounded (config names, fixed sets),
    so the cache is too."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self.cache.get(values)
        if child is None:
            child = self.cache[values] = self.metric.labels(*values)
        return child


ADMIN_ACTIONS = (
    "breaker_open",
    "breaker_close",
    "breaker_reset",
    "keys_reload",
    "model_promote",
    "model_rollback",
)
# Why a connection's request head was refused (``gateway/http_limits.py``).
REFUSED_HEAD_REASONS = ("headers_too_large", "too_many_headers", "header_timeout", "no_head")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """All gateway series, on their own registry (one per app, so tests and several apps in
    one process never share counters).

    In a worker of several (``standby serve --workers N``) the values live in prometheus-client's
    multiprocess files (it saw ``PROMETHEUS_MULTIPROC_DIR`` when imported) and ``registry`` is
    a collector of every worker's files: counters and histograms summed, each gauge by its
    ``multiprocess_mode`` (ignored in one process): live workers only, summed for in-flight
    requests and queue depths, the most recent value for states set at scrape time, the
    maximum for the constant ones."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        run = run_dir() if registry is None else None
        r: CollectorRegistry | None
        if run is None:
            self.registry = r = registry or CollectorRegistry()
        else:
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, path=str(metrics_dir(run)))  # type: ignore[no-untyped-call]
            r = None  # the series are read back from the files, not from this process
        self.requests = Counter(
            "standby_requests",
            "Requests answered, by the backend that answered.",
            ["route", "backend", "outcome"],
            registry=r,
        )
        self.fallbacks = Counter(
            "standby_fallbacks",
            "Requests moved from one backend to the next.",
            ["route", "from_backend", "to_backend", "reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "standby_upstream_errors",
            "Failures of each backend (also when another answered).",
            ["backend", "reason"],
            registry=r,
        )
        self.duration = Histogram(
            "standby_request_duration_seconds",
            "Whole request duration.",
            ["route", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "standby_time_to_first_token_seconds",
            "Time to the first streamed token.",
            ["route", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "standby_tokens",
            "Tokens in and out, as the backend reported them.",
            ["backend", "type"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "standby_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["backend"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.in_flight = Gauge(
            "standby_in_flight_requests",
            "Requests being served now.",
            ["route"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejected = Counter(
            "standby_rejected_requests",
            "Requests refused at once: route or global max_concurrency reached (503 overloaded).",
            ["route", "scope"],
            registry=r,
        )
        self.refused_heads = Counter(
            "standby_refused_request_heads",
            "Connections closed before a request reached the gateway, by reason: "
            "headers_too_large / too_many_headers (431), header_timeout (408), no_head "
            "(nothing sent within server.header_timeout_s).",
            ["reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "standby_rate_limited",
            "Requests refused with 429: over server.rate_limit_per_key.",
            ["key_id"],
            registry=r,
        )
        self.admin_actions = Counter(
            "standby_admin_actions",
            "Calls of the /admin endpoints, by action and outcome.",
            ["action", "outcome"],
            registry=r,
        )
        self.key_reloads = Counter(
            "standby_key_reloads",
            "Key reloads (SIGHUP or /admin/keys/reload), by outcome.",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ok", "error"):  # at zero, so the first one shows in rate()
            self.key_reloads.labels(outcome)
            for action in ADMIN_ACTIONS:
                self.admin_actions.labels(action, outcome)
        self.backend_ready = Gauge(
            "standby_backend_ready",
            "1 when the backend can take requests now.",
            ["backend"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )

        self.fallback_model_score = Gauge(
            "standby_fallback_model_score",
            "Judge score (1-100) of the serving fallback model, from its standby-model.json.",
            ["criterion"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.capture_events = Counter(
            "standby_capture_events",
            "Captured answers: written to the bus, filtered or dropped.",
            ["outcome"],
            registry=r,
        )
        self.capture_queue_depth = Gauge(
            "standby_capture_queue_depth",
            "Captured answers waiting to be written.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.backend_role = Gauge(
            "standby_backend_role",
            "1 per route and backend: role primary (first in the route) or fallback (later).",
            ["route", "backend", "role"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.fallback_model_info = Gauge(
            "standby_fallback_model_info",
            "The model serving the local fallback (value 1).",
            ["version", "base_model"],
            registry=r,
            multiprocess_mode="livemax",
        )

        self.c_requests = Children(self.requests)
        self.c_duration = Children(self.duration)
        self.c_ttft = Children(self.ttft)
        self.c_tokens = Children(self.tokens)
        self.c_in_flight = Children(self.in_flight)
        self.c_refused_heads = Children(self.refused_heads)

    def declare(self, routes: dict[str, list[str]], reasons: tuple[str, ...]) -> None:
        """Create every expected label combination at zero, so the first increment of a series
        is visible to ``rate()`` (a series born at 1 shows no increase); and the role of each
        backend in each route, from the route's order (the alert rules read it)."""
        for route, backends in routes.items():
            for position, backend in enumerate(backends):
                role = "fallback" if position else "primary"
                self.backend_role.labels(route, backend, role).set(1)
            for backend in (*backends, "none"):
                for outcome in ("ok", "client_error", "error"):
                    self.requests.labels(route, backend, outcome)
            for backend in backends:
                for reason in reasons:
                    self.upstream_errors.labels(backend, reason)
            for to_backend in backends[1:]:
                for reason in reasons:
                    self.fallbacks.labels(route, backends[0], to_backend, reason)
        for outcome in ("client_error",):
            self.requests.labels("none", "none", outcome)
        for reason in REFUSED_HEAD_REASONS:
            self.refused_heads.labels(reason)

    def refresh(self, breakers: dict[str, CircuitBreaker], ready: dict[str, bool]) -> None:
        """Gauges computed at scrape time (a breaker's cool-down ends without any request)."""
        for name, breaker in breakers.items():
            self.breaker_state.labels(name).set(int(breaker.current_state()))
        for name, ok in ready.items():
            self.backend_ready.labels(name).set(1 if ok else 0)

    def refused_head(self, reason: str) -> None:
        """A connection closed by the request-head limits (``http_limits``)."""
        self.c_refused_heads(reason).inc()

    def breaker_changed(self, backend: str, old: State, new: State) -> None:
        self.breaker_state.labels(backend).set(int(new))
