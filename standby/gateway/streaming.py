"""Server-sent events in OpenAI's chunk format. A stream always ends in ``data: [DONE]`` or in
an error event; a broken stream is never ended as if it were a clean success. Text and
tool-call pieces go out as ``delta.content`` / ``delta.tool_calls``; the final chunk carries the
one ``finish_reason`` (``tool_calls`` when the answer ended in calls)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from standby.errors import AllBackendsFailed, UpstreamError
from standby.gateway.failover import FailoverStream, StreamFailure
from standby.protocol import Delta, chunk_body, error_body
from standby.providers.base import aclose

log = logging.getLogger("standby.gateway")

DONE = b"data: [DONE]\n\n"


class Last(bytes):
    """A stream's last piece when it does not end in ``[DONE]`` (the Responses events): it
    goes out with the end of the body, in one send."""


def sse(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_body(
    stream: FailoverStream,
    first: Delta | StreamFailure,
    *,
    completion_id: str,
    model: str,
    include_usage: bool,
    on_end: Callable[[str, Delta | None], None],
) -> AsyncIterator[bytes]:
    """Turn the failover's deltas into SSE bytes. ``on_end(outcome, final delta)`` runs
    exactly once, with ``ok`` or ``error``, however the stream ends (client disconnects
    included), once the body has started.

    With ``n`` > 1 each piece goes out as a chunk of its choice (``Delta.index``); each choice
    gets its ``role`` on its first chunk and its own finish chunk, and the stream ends (usage
    chunk, ``[DONE]``) once every choice has finished. One choice (the usual request) takes a
    path with no per-choice bookkeeping; its bytes are the same."""
    body = _one_choice if stream.request.n == 1 else _choices
    return body(stream, first, completion_id, model, include_usage, on_end)


async def _one_choice(
    stream: FailoverStream,
    first: Delta | StreamFailure,
    completion_id: str,
    model: str,
    include_usage: bool,
    on_end: Callable[[str, Delta | None], None],
) -> AsyncIterator[bytes]:
    created = int(time.time())
    role = True  # the choice's first chunk carries its role
    status = "error"
    final: Delta | None = None
    try:
        item: Delta | StreamFailure | None = first
        iterator = aiter(stream)
        while item is not None:
            if isinstance(item, StreamFailure):
                yield sse(_failure_body(item.error))
                return
            out = []  # everything one item produces goes out in one write
            if item.text or item.tool_calls or item.logprobs:
                delta = _delta(item, role=role)
                out.append(sse(_chunk(completion_id, created, model, item, delta, None)))
                role = False
            if item.finish_reason is not None:
                opening = {"role": "assistant", "content": ""} if role else {}
                last = _chunk(completion_id, created, model, item, opening, item.finish_reason)
                last["standby"] = stream.outcome.extra()
                out.append(sse(last))
                if include_usage and item.usage is not None:
                    out.append(sse(_usage_chunk(completion_id, created, model, item)))
                out.append(DONE)
                status = "ok"
                final = item
            if out:
                yield b"".join(out)
            item = await anext(iterator, None)
    finally:
        # Bookkeeping first: if the client went away this task may be cancelled at any await.
        stream.abandon()
        on_end(status, final)
        await stream.aclose()


async def _choices(
    stream: FailoverStream,
    first: Delta | StreamFailure,
    completion_id: str,
    model: str,
    include_usage: bool,
    on_end: Callable[[str, Delta | None], None],
) -> AsyncIterator[bytes]:
    created = int(time.time())
    role_sent: set[int] = set()
    finished: set[int] = set()
    choices = stream.request.n
    status = "error"
    final: Delta | None = None
    try:
        item: Delta | StreamFailure | None = first
        iterator = aiter(stream)
        while item is not None:
            if isinstance(item, StreamFailure):
                yield sse(_failure_body(item.error))
                return
            out = []  # everything one item produces goes out in one write
            index = item.index
            if item.text or item.tool_calls or item.logprobs:
                delta = _delta(item, role=index not in role_sent)
                out.append(sse(_chunk(completion_id, created, model, item, delta, None)))
                role_sent.add(index)
            if item.finish_reason is not None:
                opening = {} if index in role_sent else {"role": "assistant", "content": ""}
                last = _chunk(completion_id, created, model, item, opening, item.finish_reason)
                finished.add(index)
                if len(finished) >= choices:
                    last["standby"] = stream.outcome.extra()
                out.append(sse(last))
            if len(finished) >= choices:
                if include_usage and item.usage is not None:
                    out.append(sse(_usage_chunk(completion_id, created, model, item)))
                out.append(DONE)
                status = "ok"
                final = item
            if out:
                yield b"".join(out)
            item = await anext(iterator, None)
    finally:
        # Bookkeeping first: if the client went away this task may be cancelled at any await.
        stream.abandon()
        on_end(status, final)
        await stream.aclose()


def _chunk(
    completion_id: str,
    created: int,
    model: str,
    item: Delta,
    delta: dict[str, Any],
    finish: str | None,
) -> dict[str, Any]:
    """The chunk of ``item``'s choice with ``delta`` (its logprobs unless it is the finish)."""
    return chunk_body(
        completion_id=completion_id,
        created=created,
        model=model,
        delta=delta,
        finish_reason=finish,
        index=item.index,
        logprobs=item.logprobs if finish is None else None,
    )


def _usage_chunk(completion_id: str, created: int, model: str, item: Delta) -> dict[str, Any]:
    return chunk_body(
        completion_id=completion_id,
        created=created,
        model=model,
        delta={},
        usage=item.usage,
        with_choice=False,
    )


class SSEResponse(Response):
    """A server-sent-event stream sent straight over ASGI: one ``send`` per piece and a
    disconnect check between pieces (Starlette's StreamingResponse starts a task group and a
    listener task per stream, which costs more than the whole gateway hop)."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        self.status_code = 200
        self.background = None
        self.body_iterator = body
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")] + [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        disconnected = asyncio.ensure_future(receive())  # the body was read: only disconnects
        try:
            # Start the body before the first send: a generator that never started skips its
            # ``finally`` on aclose(), and that is where the request's bookkeeping (in-flight
            # count, concurrency slot) is given back.
            piece = await anext(self.body_iterator, None)
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            while piece is not None:
                if disconnected.done():
                    break
                # the end of a clean stream closes the body too
                last = type(piece) is Last or piece.endswith(DONE)
                # A send waits while the client is behind; one that stopped reading is
                # disconnected by the server (http_protocol: send timeout) and the send returns.
                await send({"type": "http.response.body", "body": piece, "more_body": not last})
                if last or disconnected.done():  # gone: no further pull from the backend
                    break
                piece = await anext(self.body_iterator, None)
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            disconnected.cancel()
            await aclose(self.body_iterator)


def _delta(item: Delta, *, role: bool) -> dict[str, Any]:
    """A chunk's ``delta`` for a piece with text and/or tool-call pieces (OpenAI's shapes:
    ``content``, ``tool_calls[]`` with ``index``; ``role`` on the stream's first chunk)."""
    delta: dict[str, Any] = {"role": "assistant"} if role else {}
    if item.text:
        delta["content"] = item.text
    if item.tool_calls:
        delta["tool_calls"] = [piece.openai() for piece in item.tool_calls]
    return delta


def _failure_body(error: Exception) -> dict[str, object]:
    return error_body(failure_message(error), type="server_error", code="stream_interrupted")


def failure_message(error: Exception) -> str:
    """Why a stream that had sent content ended in an error (logged as a warning)."""
    if isinstance(error, AllBackendsFailed):
        message = f"stream interrupted: {error}"
    elif isinstance(error, UpstreamError):
        message = f"stream interrupted: {error.backend}: {error.kind} ({error.message})"
    else:
        message = "stream interrupted"
    log.warning("%s", message)
    return message
