"""Server-sent events in OpenAI's chunk format. A stream always ends in ``data: [DONE]`` or in
an error event; a broken stream is never ended as if it were a clean success."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

import orjson

from standby.errors import AllBackendsFailed, UpstreamError
from standby.gateway.router import RoutedStream, StreamFailure
from standby.protocol import Delta, Usage, chunk_body, error_body

log = logging.getLogger("standby.gateway")

DONE = b"data: [DONE]\n\n"


def sse(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def sse_body(
    stream: RoutedStream,
    first: Delta | StreamFailure,
    *,
    completion_id: str,
    model: str,
    include_usage: bool,
    on_end: Callable[[str, Usage | None], None],
) -> AsyncIterator[bytes]:
    """Turn routed deltas into SSE bytes. ``on_end(outcome, usage)`` runs exactly once, with
    ``ok`` or ``error``, however the stream ends (client disconnects included)."""
    created = int(time.time())
    role_sent = False
    status = "error"
    usage: Usage | None = None
    try:
        item: Delta | StreamFailure | None = first
        iterator = aiter(stream)
        while item is not None:
            if isinstance(item, StreamFailure):
                yield sse(_failure_body(item.error))
                return
            if item.text:
                delta = {"content": item.text}
                if not role_sent:
                    delta["role"] = "assistant"
                    role_sent = True
                yield sse(
                    chunk_body(completion_id=completion_id, created=created, model=model,
                               delta=delta)
                )  # fmt: skip
            if item.finish_reason is not None:
                last = chunk_body(
                    completion_id=completion_id, created=created, model=model,
                    delta={} if role_sent else {"role": "assistant", "content": ""},
                    finish_reason=item.finish_reason,
                )  # fmt: skip
                last["standby"] = stream.outcome.extra()
                yield sse(last)
                if include_usage and item.usage is not None:
                    yield sse(
                        chunk_body(completion_id=completion_id, created=created, model=model,
                                   delta={}, usage=item.usage, with_choice=False)
                    )  # fmt: skip
                status = "ok"
                usage = item.usage
            item = await anext(iterator, None)
        if status == "ok":
            yield DONE
    finally:
        # Bookkeeping first: if the client went away this task may be cancelled at any await.
        stream.abandon()
        on_end(status, usage)
        await stream.aclose()


def _failure_body(error: Exception) -> dict[str, object]:
    if isinstance(error, AllBackendsFailed):
        message = f"stream interrupted: {error}"
    elif isinstance(error, UpstreamError):
        message = f"stream interrupted: {error.backend}: {error.kind} ({error.message})"
    else:
        message = "stream interrupted"
    log.warning("%s", message)
    return error_body(message, type="server_error", code="stream_interrupted")
