"""Per-request accounting: what a finished request adds to the metrics, and whether its answer
is captured. Called once per request (``RequestRecord.finish``), after failover is done; the
failover itself reports nothing but breaker state changes (``Metrics.breaker_changed``)."""

from __future__ import annotations

import time

from standby.config import Settings
from standby.errors import FALLBACK_REASONS
from standby.gateway.failover import Outcome
from standby.gateway.metrics import Metrics
from standby.protocol import Usage

# Skips that are no failure of the backend (it was not called): counted as fallback reasons,
# not as the backend's errors.
_NOT_CALLED = frozenset({"breaker_open", "unsupported"})


class Accounting:
    """The gateway's request metrics and its per-route capture switch."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.metrics = metrics
        self._no_capture = {alias for alias, r in settings.routes.items() if not r.capture}
        for name in settings.backends:
            metrics.breaker_state.labels(name).set(0)
        routes = {alias: list(r.backends) for alias, r in settings.routes.items()}
        metrics.declare(routes, FALLBACK_REASONS)

    def capture_off(self, alias: str) -> bool:
        """The route opted out of capture (``routes.<alias>.capture: false``)."""
        return alias in self._no_capture

    def record(self, outcome: Outcome, started: float, status: str, usage: Usage | None) -> None:
        """Count one finished request: its outcome, duration, time to first token, tokens,
        every backend failure on the way and the fallback that answered it."""
        m = self.metrics
        backend = outcome.backend or "none"
        m.c_requests(outcome.route, backend, status).inc()
        m.c_duration(outcome.route, backend).observe(time.perf_counter() - started)
        if outcome.ttft_s is not None:
            m.c_ttft(outcome.route, backend).observe(outcome.ttft_s)
        if usage is not None and outcome.backend:
            m.c_tokens(outcome.backend, "input").inc(usage.prompt_tokens)
            m.c_tokens(outcome.backend, "output").inc(usage.completion_tokens)
        for error in outcome.errors:
            if error.reason not in _NOT_CALLED:
                m.upstream_errors.labels(error.backend, error.reason).inc()
        # A stream that broke and was not continued ends on the backend that failed: no
        # fallback happened, so none is counted.
        if outcome.backend and outcome.errors and outcome.errors[0].backend != outcome.backend:
            m.fallbacks.labels(
                outcome.route, outcome.errors[0].backend, outcome.backend, outcome.fallback_reason
            ).inc()
