"""A scripted in-process backend, for tests and drills: the real ``Provider`` contract with
answers queued per call (in the spirit of httpx's ``MockTransport`` and llm's ``MockModel``).

    fake = FakeProvider("primary", UpstreamStatusError("primary", 503, "down"), Reply("Hi"))
    Gateway(settings, providers={"primary": fake, ...})

Each ``complete()`` or ``stream()`` call takes the next step of ``script`` (``default`` once the
script is used up; tests may append to it). A step is a ``Reply``, a ``Blocked`` answer, a
``Cut`` stream, a ``Hang``, or any ``UpstreamError``, which the call raises before answering. A
``Reply`` or ``Cut`` may carry tool calls (``calls=``): streamed after its text, each as a first
piece with the call's id, name and signature, then its arguments in ``piece_chars`` pieces; and
a thought summary (``thoughts=``, its pieces), streamed before the text when the request asks
for summaries (``ChatRequest.thought_summaries``), as Gemini gives one. ``requests`` keeps every
request received (a stitched continuation's prefill included); ``busy`` makes ``ready()`` say
no; ``no_tools`` makes it unsupported for requests that use tools.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Literal

from standby.capabilities import ALL, Need, missing
from standby.errors import UpstreamBlocked, UpstreamConnectError, UpstreamError
from standby.protocol import ChatRequest, Completion, Delta, FinishReason, Usage
from standby.tool_calls import ToolCall, ToolCallDelta

PIECE_CHARS = 8  # a streamed call's arguments arrive in pieces of this many characters


class Reply:
    """An answer: streamed as these pieces, whole as their concatenation; ``calls`` are tool
    calls after the text (the finish reason is then ``tool_calls`` unless given)."""

    __slots__ = (
        "calls",
        "delay_s",
        "finish_reason",
        "model_version",
        "piece_chars",
        "pieces",
        "thoughts",
    )

    def __init__(
        self,
        *pieces: str,
        calls: Sequence[ToolCall] = (),
        thoughts: Sequence[str] = (),
        finish_reason: FinishReason | None = None,
        model_version: str | None = None,
        delay_s: float = 0.0,
        piece_chars: int = PIECE_CHARS,
    ) -> None:
        self.pieces = pieces
        self.calls = tuple(calls)
        self.thoughts = tuple(thoughts)
        self.finish_reason: FinishReason = finish_reason or ("tool_calls" if calls else "stop")
        self.model_version = model_version
        self.delay_s = delay_s  # before each piece: a slow backend
        self.piece_chars = piece_chars


class Blocked:
    """The backend refuses to answer (safety): an empty ``content_filter`` answer, or
    ``UpstreamBlocked`` when the provider has ``on_blocked="fallback"`` (as Gemini does)."""

    __slots__ = ("why",)

    def __init__(self, why: str = "finishReason SAFETY") -> None:
        self.why = why


class Cut:
    """A stream that sends ``thoughts`` (when asked for), ``pieces`` (then the pieces of
    ``calls``) and then fails with ``error`` (default: a connection reset). A whole answer
    fails with ``error`` at once."""

    __slots__ = ("calls", "error", "pieces", "thoughts")

    def __init__(
        self,
        *pieces: str,
        calls: Sequence[ToolCall] = (),
        thoughts: Sequence[str] = (),
        error: UpstreamError | None = None,
    ) -> None:
        self.pieces = pieces
        self.calls = tuple(calls)
        self.thoughts = tuple(thoughts)
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
        supports: frozenset[Need] = ALL,
    ) -> None:
        self.name = name
        self.script: deque[Step] = deque(script)
        self.default: Step = default if default is not None else Reply("A fake answer.")
        self.on_blocked = on_blocked
        self.model_version = model_version
        self.cannot = no_tools  # set: why this fake cannot answer a request that uses tools
        self.supports = supports  # what else it can do (all of it by default)
        self.busy = False
        self.started = False
        self.closed = False
        self.requests: list[ChatRequest] = []

    async def start(self) -> None:
        self.started = True

    def ready(self) -> bool:
        return self.started and not self.busy and not self.closed

    def unsupported(self, request: ChatRequest) -> str | None:
        if request.uses_tools and self.cannot:
            return self.cannot
        return missing(request, self.supports | {"tools"}, self.name)

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
            usage=_usage(request, text, step.calls),
            model_version=self._version(step),
            tool_calls=step.calls,
            reasoning="".join(step.thoughts) if request.thought_summaries else "",
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        step = self._next(request)
        thoughts = step.thoughts if request.thought_summaries and not isinstance(step, Hang) else ()
        if isinstance(step, Reply):
            deltas = _deltas(step.pieces, step.calls, step.piece_chars, thoughts)
            *head, last = deltas or [Delta()]
            for delta in head:
                await asyncio.sleep(step.delay_s)
                yield delta
            await asyncio.sleep(step.delay_s)
            last.finish_reason = step.finish_reason
            last.usage = _usage(request, "".join(step.pieces), step.calls)
            last.model_version = self._version(step)
            yield last
            return
        calls = step.calls if isinstance(step, Cut) else ()
        for delta in _deltas(step.pieces, calls, PIECE_CHARS, thoughts):
            yield delta
        if isinstance(step, Cut):
            raise step.error or UpstreamConnectError(self.name, "connection reset")
        await asyncio.Event().wait()

    def _version(self, step: Reply) -> str | None:
        return step.model_version or self.model_version


def _deltas(
    pieces: Sequence[str], calls: Sequence[ToolCall], chars: int, thoughts: Sequence[str] = ()
) -> list[Delta]:
    """The stream of an answer: its thought summary's pieces, its text pieces, then each call
    as a first piece (id, name, signature) and its arguments in pieces of ``chars``
    characters."""
    deltas = [Delta(reasoning=piece) for piece in thoughts]
    deltas += [Delta(text=piece) for piece in pieces]
    for i, call in enumerate(calls):
        first = ToolCallDelta(i, id=call.id, name=call.name, signature=call.signature)
        deltas.append(Delta(tool_calls=(first,)))
        args = call.arguments
        deltas += [
            Delta(tool_calls=(ToolCallDelta(i, arguments=args[at : at + chars]),))
            for at in range(0, len(args), chars)
        ]
    return deltas


def _usage(request: ChatRequest, answer: str, calls: Sequence[ToolCall] = ()) -> Usage:
    """Words in and out (a call's arguments count as words of the answer): deterministic
    counts for the token metrics."""
    prompt = sum(len(m.content.split()) for m in request.messages)
    out = len(answer.split()) + sum(len(c.arguments.split()) + 1 for c in calls)
    return Usage(prompt_tokens=prompt, completion_tokens=out)
