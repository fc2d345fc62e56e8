"""A scripted in-process backend, for tests and drills: the real ``Provider`` contract with
answers queued per call (in the spirit of httpx's ``MockTransport`` and llm's ``MockModel``).

    fake = FakeProvider("primary", UpstreamStatusError("primary", 503, "down"), Reply("Hi"))
    Gateway(settings, providers={"primary": fake, ...})

Each ``complete()`` or ``stream()`` call takes the next step of ``script`` (``default`` once
the script is used up; tests may append to it). A step is a ``Reply``, a ``Blocked`` answer, a
``Cut`` stream, a ``Hang``, or any ``UpstreamError``, which the call raises before answering.
``requests`` keeps every request received (a stitched continuation's prefill included);
``busy`` makes ``ready()`` say no.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal

from standby.errors import UpstreamBlocked, UpstreamConnectError, UpstreamError
from standby.protocol import ChatRequest, Completion, Delta, FinishReason, Usage


class Reply:
    """An answer: streamed as these pieces, whole as their concatenation."""

    __slots__ = ("delay_s", "finish_reason", "model_version", "pieces")

    def __init__(
        self,
        *pieces: str,
        finish_reason: FinishReason = "stop",
        model_version: str | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.pieces = pieces
        self.finish_reason = finish_reason
        self.model_version = model_version
        self.delay_s = delay_s  # before each piece: a slow backend


class Blocked:
    """The backend refuses to answer (safety): an empty ``content_filter`` answer, or
    ``UpstreamBlocked`` when the provider has ``on_blocked="fallback"`` (as Gemini does)."""

    __slots__ = ("why",)

    def __init__(self, why: str = "finishReason SAFETY") -> None:
        self.why = why


class Cut:
    """A stream that sends ``pieces`` and then fails with ``error`` (default: a connection
    reset). A whole answer fails with ``error`` at once."""

    __slots__ = ("error", "pieces")

    def __init__(self, *pieces: str, error: UpstreamError | None = None) -> None:
        self.pieces = pieces
        self.error = error


class Hang:
    """Sends ``pieces`` (a stream only) and then nothing, ever: the caller's time limits must
    end the call."""

    __slots__ = ("pieces",)

    def __init__(self, *pieces: str) -> None:
        self.pieces = pieces


Step = Reply | Blocked | Cut | Hang | UpstreamError


class FakeProvider:
    """A backend that plays its script; see the module docstring."""

    def __init__(
        self,
        name: str,
        *script: Step,
        default: Step | None = None,
        on_blocked: Literal["content_filter", "fallback"] = "content_filter",
        model_version: str | None = None,
        no_tools: str | None = None,
    ) -> None:
        self.name = name
        self.script: deque[Step] = deque(script)
        self.default: Step = default if default is not None else Reply("A fake answer.")
        self.on_blocked = on_blocked
        self.model_version = model_version
        self.cannot = no_tools  # set: why this fake cannot answer a request that uses tools
        self.busy = False
        self.started = False
        self.closed = False
        self.requests: list[ChatRequest] = []

    async def start(self) -> None:
        self.started = True

    def ready(self) -> bool:
        return self.started and not self.busy and not self.closed

    def unsupported(self, request: ChatRequest) -> str | None:
        return self.cannot if request.uses_tools else None

    async def close(self) -> None:
        self.closed = True

    def _next(self, request: ChatRequest) -> Reply | Cut | Hang:
        self.requests.append(request)
        step = self.script.popleft() if self.script else self.default
        if isinstance(step, UpstreamError):
            raise step.with_traceback(None)  # the same error may be scripted for every call
        if isinstance(step, Blocked):
            if self.on_blocked == "fallback":
                raise UpstreamBlocked(self.name, step.why)
            return Reply(finish_reason="content_filter", model_version=self.model_version)
        return step

    async def complete(self, request: ChatRequest) -> Completion:
        step = self._next(request)
        if isinstance(step, Hang):
            await asyncio.Event().wait()
        if isinstance(step, Cut):
            raise step.error or UpstreamConnectError(self.name, "connection reset")
        assert isinstance(step, Reply)
        await asyncio.sleep(step.delay_s * len(step.pieces))
        text = "".join(step.pieces)
        return Completion(
            text=text,
            finish_reason=step.finish_reason,
            usage=_usage(request, text),
            model_version=self._version(step),
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        step = self._next(request)
        if isinstance(step, Reply):
            *head, last = step.pieces or ("",)
            for piece in head:
                await asyncio.sleep(step.delay_s)
                yield Delta(text=piece)
            await asyncio.sleep(step.delay_s)
            usage = _usage(request, "".join(step.pieces))
            yield Delta(
                text=last,
                finish_reason=step.finish_reason,
                usage=usage,
                model_version=self._version(step),
            )
            return
        for piece in step.pieces:
            yield Delta(text=piece)
        if isinstance(step, Cut):
            raise step.error or UpstreamConnectError(self.name, "connection reset")
        await asyncio.Event().wait()

    def _version(self, step: Reply) -> str | None:
        return step.model_version or self.model_version


def _usage(request: ChatRequest, answer: str) -> Usage:
    """Words in and out: deterministic counts for the token metrics."""
    prompt = sum(len(m.content.split()) for m in request.messages)
    return Usage(prompt_tokens=prompt, completion_tokens=len(answer.split()))
