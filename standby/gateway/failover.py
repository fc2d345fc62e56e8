"""Ordered failover across a route's backends (the failover table in docs/architecture.md is the
contract).

Failover knows no vendor and no metrics: it reads ``Provider.stream()``, enforces the backend's
time limits, consults and feeds each backend's circuit breaker (whose state changes go to a
callback), and classifies failures by exception type (``UpstreamError.failover`` / ``counts``
/ ``reason``). What happened is written into the request's ``Outcome``; accounting reads it
once the request is over.

Whole and streamed answers walk the backends with the same loop (``walk``): a stream until its
first content, a whole answer until it is complete. A whole answer is read from the backend's
stream too, under the same limits (``TimedStream``), and added up (``protocol.Assembly``): a
non-streamed HTTP answer says nothing until it is whole, so a hung backend would cost
``total_s``; read so, it costs ``first_token_s``, and one that stalls mid-answer ``idle_s``.
Every provider is read so: the HTTP ones (gemini, openai, tgi, litellm) stream what they answer
whole, with the same capabilities (``unsupported`` does not depend on the mode), and the local
one's ``complete()`` is its own stream added up, whose first piece waits for its queue as a
stream's does. After text was sent, a broken stream walks the rest of the route again to
continue the partial answer (stitching); after a tool-call piece was sent it is not continued
(a call cannot be finished by another model), nor is a stream of several choices (``n`` > 1):
the client gets an error event. A backend that cannot serve the request
(``Provider.unsupported``: tools, say) is skipped without being called; when every backend of
the route was skipped so, the request is what cannot be served (a 400), not the backends (a
503).
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from standby.capabilities import FIELDS
from standby.config import Settings, Timeouts
from standby.errors import (
    AllBackendsFailed,
    BackendBusy,
    BreakerOpen,
    ModelNotFoundError,
    RequestError,
    Unsupported,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from standby.gateway.breaker import CircuitBreaker, OnChange
from standby.gateway.shared_breakers import BreakerTable
from standby.gateway.timed_stream import TimedStream
from standby.protocol import Assembly, ChatRequest, Completion, Delta, FinishReason
from standby.providers.base import Provider, aclose
from standby.tool_calls import ToolCallDelta

Provenance = Literal["primary", "fallback", "stitched"]
T = TypeVar("T")


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

    def headers(self) -> dict[str, str]:
        """``x-standby-backend`` (who sent the first byte) and ``x-standby-fallback-reason``."""
        headers = {"x-standby-backend": self.first_backend or self.backend}
        if self.fallback_reason is not None:
            headers["x-standby-fallback-reason"] = self.fallback_reason
        return headers


@dataclass(slots=True)
class StreamFailure:
    """Yielded instead of a Delta when a stream broke after content was sent and could not be
    continued: the client must get an error event, never a clean end."""

    error: Exception


class Failover:
    """The routes' ordered backends, their breakers and time limits."""

    def __init__(
        self,
        settings: Settings,
        providers: dict[str, Provider],
        on_breaker_change: OnChange | None = None,
    ) -> None:
        self.routes = {alias: list(r.backends) for alias, r in settings.routes.items()}
        self.providers = providers
        self.timeouts: dict[str, Timeouts] = {n: b.timeouts for n, b in settings.backends.items()}
        # A worker of several (`standby serve --workers N`) shares its breakers with the others.
        table = BreakerTable.for_worker(settings)
        self.breakers: dict[str, CircuitBreaker] = {
            name: CircuitBreaker(name, settings.breaker_for(name), on_breaker_change)
            if table is None
            else table.breaker(name, settings.breaker_for(name), on_breaker_change)
            for name in settings.backends
        }

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

    async def complete(self, request: ChatRequest, outcome: Outcome) -> Completion:
        """Answer from the first backend that can; ``outcome`` records what happened."""

        async def attempt(name: str) -> Completion:
            # Read as a stream under the same limits as one: a backend that says nothing within
            # first_token_s (or stalls for idle_s) is left then, not after total_s. A stream
            # that ends before each of the n choices finished is a failure (TimedStream), never
            # a short answer.
            timed = TimedStream(name, self.providers[name].stream(request), self.timeouts[name])
            whole = Assembly(request.n, logprobs=request.logprobs)
            try:
                while True:
                    delta = await timed.next()
                    if delta.index >= request.n:
                        raise UpstreamProtocolError(
                            name, f"a piece of choice {delta.index}, {request.n} asked for"
                        )
                    if whole.add(delta):
                        return whole.completion()
            finally:
                await timed.aclose()

        name, completion = await self.walk(outcome, self.resolve(outcome.route), request, attempt)
        self.settle(name, None)
        return completion

    def stream(self, request: ChatRequest, outcome: Outcome) -> FailoverStream:
        """The answer in pieces; ``outcome`` records what happened, also after a stitch."""
        return FailoverStream(self, self.resolve(outcome.route), request, outcome)

    async def walk(
        self,
        outcome: Outcome,
        names: list[str],
        request: ChatRequest | None,
        attempt: Callable[[str], Awaitable[T]],
        *,
        mid_stream: bool = False,
    ) -> tuple[str, T]:
        """Try ``names`` in order until ``attempt`` succeeds; return who answered and what.

        Skips backends that cannot serve ``request``, busy ones and open breakers without
        calling them; settles every failure with the backend's breaker and records it in
        ``outcome``. A client error (no failover) is raised at once, as is any error once
        content was sent (``mid_stream``); when every backend failed, ``AllBackendsFailed``
        (a ``RequestError`` when none could serve the request at all). The answering
        backend's breaker claim is left for the caller to ``settle`` once the answer is
        complete."""
        unsupported: list[UpstreamError] = []
        for name in names:
            skipped = self._claim(name, request)
            if skipped is not None:
                outcome.failed(skipped)
                if isinstance(skipped, Unsupported):
                    unsupported.append(skipped)
                continue
            try:
                result = await attempt(name)
            except UpstreamError as error:
                self.settle(name, error)
                if isinstance(error, Unsupported):  # found out by the backend itself
                    unsupported.append(error)
                if not error.failover and not mid_stream:
                    outcome.backend = name
                    raise
                outcome.failed(error, mid_stream=mid_stream)
                if not error.failover:
                    raise
                continue
            except BaseException:
                self.breakers[name].release()
                raise
            outcome.backend = name
            outcome.first_backend = outcome.first_backend or name
            if name != self.routes[outcome.route][0] and outcome.provenance == "primary":
                outcome.provenance = "fallback"
            return name, result
        if unsupported and len(unsupported) == len(names) and not mid_stream:
            raise _cannot_serve(outcome.route, unsupported, request)
        raise AllBackendsFailed(outcome.route, outcome.errors)

    def _claim(self, name: str, request: ChatRequest | None) -> UpstreamError | None:
        """Reserve ``name`` for one call, or say why it must be skipped (without touching its
        breaker when the request is what it cannot serve)."""
        provider = self.providers[name]
        # No request to check: embeddings (``gateway.embeddings``), which every backend of an
        # embeddings route takes.
        why = provider.unsupported(request) if request is not None else None
        if why is not None:
            return Unsupported(name, why)
        if not provider.ready():
            return BackendBusy(name, "not ready (loading or queue full)")
        if not self.breakers[name].allow():
            return BreakerOpen(name)
        return None

    def settle(self, name: str, error: UpstreamError | None) -> None:
        """Give the breaker claim of ``name`` back with the call's verdict."""
        breaker = self.breakers[name]
        if error is None:
            breaker.record_success()
        elif error.counts:
            retry = error.retry_after if isinstance(error, UpstreamStatusError) else None
            breaker.record_failure(retry)
        else:
            breaker.release()


def _cannot_serve(
    route: str, skipped: list[UpstreamError], request: ChatRequest | None
) -> RequestError:
    """The 400 for a request that no backend of ``route`` can serve, naming each one's why (and,
    when the request needs one thing only, the field that asks for it)."""
    why = "; ".join(f"{e.backend}: {e.message}" for e in skipped)
    needs = request.needs() if request is not None else frozenset()
    param = FIELDS[next(iter(needs))] if len(needs) == 1 else None
    return RequestError(
        f"no backend of route {route!r} can serve this request: {why}",
        param=param,
        code="unsupported",
    )


class FailoverStream:
    """One streaming request across the route's backends.

    Failure before the first content moves to the next backend invisibly. Failure after text
    continues on the next backend from the partial answer (``ChatRequest.continued``, which
    keeps the request's tools; logprobs of the continued part are the next backend's); failure
    after only a thought summary (``Delta.reasoning``: no answer begun) starts the answer over
    on the next backend with the request as it came. When nothing can continue it, a
    tool-call piece was already sent, or the request asked for several choices (``n`` > 1:
    one partial answer per choice, which no backend continues together), a ``StreamFailure``
    is yielded so the client sees an error event. ``resumed`` counts the moves to another
    backend after content was sent. The stream ends when each of the ``n`` choices has
    finished.
    """

    def __init__(
        self, failover: Failover, names: list[str], request: ChatRequest, outcome: Outcome
    ) -> None:
        self.failover = failover
        self.names = names
        self.request = request
        self.outcome = outcome
        self.started = time.perf_counter()
        self.sent: list[str] = []  # the text of choice 0 sent to the client
        self.reasoned = False  # a piece of a thought summary was sent
        self.resumed = 0  # moves to another backend after content was sent
        self.calls: list[ToolCallDelta] = []  # the tool-call pieces of choice 0 sent
        self.finishes: dict[int, FinishReason] = {}  # choice index -> its finish reason
        self._claimed: str | None = None
        self._gen = self._run()

    def __aiter__(self) -> AsyncIterator[Delta | StreamFailure]:
        return self._gen

    async def first(self) -> Delta | StreamFailure:
        """The first item; raises (AllBackendsFailed, client errors) before any byte is sent."""
        return await anext(self._gen)

    async def aclose(self) -> None:
        await aclose(self._gen)

    def abandon(self) -> None:
        """The client went away: give back the breaker claim of the backend in use now.
        Synchronous, so it also runs when the closing task is being cancelled."""
        if self._claimed is not None:
            self.failover.breakers[self._claimed].release()
            self._claimed = None

    async def _open(self, name: str, request: ChatRequest) -> tuple[Delta, TimedStream]:
        """Start ``name``'s stream and read up to its first content (or its finish)."""
        timed = TimedStream(
            name, self.failover.providers[name].stream(request), self.failover.timeouts[name]
        )
        try:
            while True:
                delta = await timed.next()
                if (
                    delta.text
                    or delta.tool_calls
                    or delta.reasoning
                    or delta.finish_reason is not None
                ):
                    return delta, timed
        except BaseException:
            await timed.aclose()
            raise

    async def _run(self) -> AsyncIterator[Delta | StreamFailure]:
        failover, outcome = self.failover, self.outcome
        names, request = self.names, self.request
        while True:
            try:
                attempt = functools.partial(self._open, request=request)
                began = bool(self.sent) or self.reasoned
                name, (delta, timed) = await failover.walk(
                    outcome, names, request, attempt, mid_stream=began
                )
            except (UpstreamError, AllBackendsFailed) as error:
                if not began:
                    raise
                yield StreamFailure(error)
                return
            self._claimed = name
            try:
                while True:
                    if delta.text or delta.tool_calls or delta.reasoning:
                        if outcome.ttft_s is None:
                            outcome.ttft_s = time.perf_counter() - self.started
                        if delta.text and delta.index == 0:
                            self.sent.append(delta.text)
                        if delta.index == 0:
                            self.calls.extend(delta.tool_calls)
                            if delta.reasoning:
                                self.reasoned = True
                    if delta.finish_reason is not None:
                        self.finishes[delta.index] = delta.finish_reason
                    if len(self.finishes) >= self.request.n:
                        # The backend's verdict before the last piece is handed on: the client
                        # ends the body on that piece and closes this generator at the yield.
                        self._claimed = None
                        failover.settle(name, None)
                        yield delta
                        return
                    yield delta
                    delta = await timed.next()
            except UpstreamError as error:
                self._claimed = None
                failover.settle(name, error)
                outcome.failed(error, mid_stream=True)
                if not error.failover or self.calls or self.request.n > 1:
                    yield StreamFailure(error)
                    return
            finally:
                self.abandon()
                await timed.aclose()
            # Continue the partial answer on the backends after this one; with no answer text
            # sent (a thought summary only), the next one answers the request from the start.
            names = names[names.index(name) + 1 :]
            self.resumed += 1
            if self.sent:
                request = self.request.continued("".join(self.sent))
                outcome.provenance = "stitched"
