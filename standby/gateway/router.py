"""Ordered failover across a route's backends (the DESIGN failover table is the contract).

The router knows no vendor: it calls ``Provider.complete()`` / ``stream()``, enforces the
backend's time limits, consults and feeds each backend's circuit breaker, and classifies
failures by exception type (``UpstreamError.failover`` / ``counts`` / ``reason``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from standby.config import Settings, Timeouts
from standby.errors import (
    FALLBACK_REASONS,
    AllBackendsFailed,
    BackendBusy,
    BreakerOpen,
    ModelNotFoundError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from standby.gateway.breaker import CircuitBreaker
from standby.gateway.metrics import Metrics
from standby.protocol import ChatRequest, Completion, Delta
from standby.providers.base import Provider, aclose

Provenance = Literal["primary", "fallback", "stitched"]


@dataclass(slots=True)
class Outcome:
    """What happened to one request: who answered, why it fell back, every failure on the way."""

    route: str
    backend: str = ""
    first_backend: str = ""
    provenance: Provenance = "primary"
    fallback_reason: str | None = None
    errors: list[UpstreamError] = field(default_factory=list)
    ttft_s: float | None = None

    def failed(self, error: UpstreamError, *, mid_stream: bool = False) -> None:
        self.errors.append(error)
        if self.fallback_reason is None:
            self.fallback_reason = "mid_stream" if mid_stream else error.reason

    def extra(self) -> dict[str, str | None]:
        """The ``standby`` field of a response body / final chunk."""
        return {
            "backend": self.backend,
            "provenance": self.provenance,
            "fallback_reason": self.fallback_reason,
        }


@dataclass(slots=True)
class StreamFailure:
    """Yielded instead of a Delta when a stream broke after content was sent and could not be
    continued: the client must get an error event, never a clean end."""

    error: Exception


class Router:
    def __init__(self, settings: Settings, providers: dict[str, Provider], metrics: Metrics):
        self.routes = {alias: list(r.backends) for alias, r in settings.routes.items()}
        self._no_capture = {alias for alias, r in settings.routes.items() if not r.capture}
        self.providers = providers
        self.metrics = metrics
        self.timeouts: dict[str, Timeouts] = {n: b.timeouts for n, b in settings.backends.items()}
        self.breakers = {
            name: CircuitBreaker(name, settings.breaker_for(name), metrics.breaker_changed)
            for name in settings.backends
        }
        for name in settings.backends:
            metrics.breaker_state.labels(name).set(0)
        metrics.declare(self.routes, FALLBACK_REASONS)

    def capture_off(self, alias: str) -> bool:
        return alias in self._no_capture

    def resolve(self, alias: str) -> list[str]:
        names = self.routes.get(alias)
        if names is None:
            known = ", ".join(sorted(self.routes))
            raise ModelNotFoundError(
                f"The model `{alias}` does not exist on this gateway (routes: {known}).",
                param="model",
                code="model_not_found",
            )
        return names

    def _claim(self, name: str) -> UpstreamError | None:
        """Reserve ``name`` for one call, or say why it must be skipped."""
        if not self.providers[name].ready():
            return BackendBusy(name, "not ready (loading or queue full)")
        if not self.breakers[name].allow():
            return BreakerOpen(name)
        return None

    def _settle(self, name: str, error: UpstreamError | None) -> None:
        breaker = self.breakers[name]
        if error is None:
            breaker.record_success()
        elif error.counts:
            retry = error.retry_after if isinstance(error, UpstreamStatusError) else None
            breaker.record_failure(retry)
        else:
            breaker.release()

    def _answered(self, outcome: Outcome, name: str, names: list[str]) -> None:
        outcome.backend = name
        outcome.first_backend = outcome.first_backend or name
        if name != names[0] and outcome.provenance == "primary":
            outcome.provenance = "fallback"

    def record(self, outcome: Outcome, started: float, status: str) -> None:
        """Count one finished request (called once per request by the route handler)."""
        m = self.metrics
        backend = outcome.backend or "none"
        m.c_requests(outcome.route, backend, status).inc()
        m.c_duration(outcome.route, backend).observe(time.perf_counter() - started)
        if outcome.ttft_s is not None:
            m.c_ttft(outcome.route, backend).observe(outcome.ttft_s)
        for error in outcome.errors:
            if error.reason != "breaker_open":
                m.upstream_errors.labels(error.backend, error.reason).inc()
        if outcome.backend and outcome.errors:
            m.fallbacks.labels(
                outcome.route, outcome.errors[0].backend, outcome.backend, outcome.fallback_reason
            ).inc()

    async def complete(self, request: ChatRequest, outcome: Outcome) -> Completion:
        """Answer from the first backend that can; ``outcome`` records what happened."""
        alias = outcome.route
        names = self.resolve(alias)
        for name in names:
            skipped = self._claim(name)
            if skipped is not None:
                outcome.failed(skipped)
                continue
            limit = self.timeouts[name].total_s
            try:
                async with asyncio.timeout(limit):
                    completion = await self.providers[name].complete(request)
            except TimeoutError:
                error: UpstreamError = UpstreamTimeout(name, "total", limit)
            except UpstreamError as e:
                error = e
            except BaseException:
                self.breakers[name].release()
                raise
            else:
                self._settle(name, None)
                self._answered(outcome, name, names)
                self._count_tokens(name, completion)
                return completion
            self._settle(name, error)
            if not error.failover:
                outcome.backend = name
                raise error
            outcome.failed(error)
        raise AllBackendsFailed(alias, outcome.errors)

    def _count_tokens(self, name: str, completion: Completion | Delta) -> None:
        usage = completion.usage
        if usage is not None:
            self.metrics.c_tokens(name, "input").inc(usage.prompt_tokens)
            self.metrics.c_tokens(name, "output").inc(usage.completion_tokens)

    def stream(self, alias: str, request: ChatRequest) -> RoutedStream:
        return RoutedStream(self, alias, self.resolve(alias), request)


class RoutedStream:
    """One streaming request across the route's backends.

    Failure before the first content moves to the next backend invisibly. Failure after content
    continues on the next backend from the partial answer (``ChatRequest.continued``); when
    nothing can continue it, a ``StreamFailure`` is yielded so the client sees an error event.
    """

    def __init__(self, router: Router, alias: str, names: list[str], request: ChatRequest):
        self.router = router
        self.names = names
        self.request = request
        self.outcome = Outcome(alias)
        self.started = time.perf_counter()
        self._claimed: str | None = None
        self.sent: list[str] = []
        self._gen = self._run()

    def __aiter__(self) -> AsyncIterator[Delta | StreamFailure]:
        return self._gen

    async def first(self) -> Delta | StreamFailure:
        """The first item; raises (AllBackendsFailed, client errors) before any byte is sent."""
        return await anext(self._gen)

    async def aclose(self) -> None:
        await aclose(self._gen)

    async def _attempt(
        self, name: str, request: ChatRequest, sent: list[str]
    ) -> AsyncIterator[Delta]:
        """Stream from one backend under its first-token / idle / total limits."""
        limits = self.router.timeouts[name]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.total_s
        source = self.router.providers[name].stream(request)
        got_content = False
        try:
            while True:
                if got_content:
                    limit, phase = limits.idle_s, "idle"
                else:
                    limit, phase = limits.first_token_s, "first_token"
                remaining = deadline - loop.time()
                if remaining <= limit:
                    limit, phase = max(remaining, 0.0), "total"
                try:
                    async with asyncio.timeout(limit):
                        delta = await anext(source)
                except StopAsyncIteration:
                    raise UpstreamProtocolError(name, "stream ended without a finish") from None
                except TimeoutError:
                    seconds = limits.total_s if phase == "total" else limit
                    raise UpstreamTimeout(name, phase, seconds) from None
                if delta.text and not sent:
                    self.outcome.ttft_s = time.perf_counter() - self.started
                got_content = got_content or bool(delta.text)
                yield delta
                if delta.finish_reason is not None:
                    return
        finally:
            await aclose(source)

    def abandon(self) -> None:
        """The client went away: give back the breaker claim of the backend in use now.
        Synchronous, so it also runs when the closing task is being cancelled."""
        if self._claimed is not None:
            self.router.breakers[self._claimed].release()
            self._claimed = None

    def _settle(self, name: str, error: UpstreamError | None) -> None:
        self._claimed = None
        self.router._settle(name, error)

    async def _run(self) -> AsyncIterator[Delta | StreamFailure]:
        router, outcome = self.router, self.outcome
        request, sent = self.request, self.sent
        for name in self.names:
            skipped = router._claim(name)
            if skipped is not None:
                outcome.failed(skipped)
                continue
            self._claimed = name
            attempt = self._attempt(name, request, sent)
            try:
                async for delta in attempt:
                    if outcome.backend != name:
                        router._answered(outcome, name, self.names)
                    if delta.text:
                        sent.append(delta.text)
                    if delta.finish_reason is not None:
                        router._count_tokens(name, delta)
                    yield delta
                self._settle(name, None)
                return
            except UpstreamError as error:
                self._settle(name, error)
                if not error.failover and not sent:
                    outcome.backend = name
                    raise
                outcome.failed(error, mid_stream=bool(sent))
                if not sent:
                    continue
                if error.failover:
                    request = self.request.continued("".join(sent))
                    outcome.provenance = "stitched"
                    continue
                yield StreamFailure(error)
                return
            finally:
                self.abandon()
                await aclose(attempt)
        failure = AllBackendsFailed(outcome.route, outcome.errors)
        if not sent:
            raise failure
        yield StreamFailure(failure)
