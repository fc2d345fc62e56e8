"""Caps on what a backend read through httpx2 (TGI's client, huggingface_hub) may send back:
the same ``backends.<name>.limits`` that :mod:`standby.providers.http` applies to aiohttp
answers, enforced under the client, on the bytes as they arrive.

A server-sent-event answer (``text/event-stream``) is held to ``max_stream_bytes`` in all and
``max_event_bytes`` a line; any other answer, error bodies too, to ``max_body_bytes``. The
client asks for ``Accept-Encoding: identity`` and a compressed answer is refused, so the bytes
counted here are the bytes the client decodes (a small gzip body cannot grow past a cap).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2

from standby.config import UpstreamLimits
from standby.errors import UpstreamProtocolError, UpstreamTooLarge

IDENTITY = {"accept-encoding": "identity"}


class CappedTransport(httpx2.AsyncBaseTransport):
    """Wraps a transport: every answer's body comes through a byte counter."""

    def __init__(
        self, backend: str, limits: UpstreamLimits, inner: httpx2.AsyncBaseTransport
    ) -> None:
        self.backend = backend
        self.limits = limits
        self._inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            await response.aclose()
            raise UpstreamProtocolError(
                self.backend, f"a compressed answer ({encoding[:40]}) although identity was asked"
            )
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        lim = self.limits
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            response.stream = _Counted(
                self.backend, response.stream, "stream", lim.max_stream_bytes, lim.max_event_bytes
            )
            return response
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > lim.max_body_bytes:
            await response.aclose()
            raise UpstreamTooLarge(self.backend, "answer", lim.max_body_bytes, "max_body_bytes")
        response.stream = _Counted(self.backend, response.stream, "answer", lim.max_body_bytes)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Counted(httpx2.AsyncByteStream):
    """A body that raises ``UpstreamTooLarge`` once over ``limit`` bytes, or, with
    ``max_line``, once a line runs past it without a newline (one ``rfind`` per read)."""

    def __init__(
        self,
        backend: str,
        inner: httpx2.AsyncByteStream,
        what: str,
        limit: int,
        max_line: int | None = None,
    ) -> None:
        self.backend, self.what, self.limit, self.max_line = backend, what, limit, max_line
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = line = 0
        field = "max_stream_bytes" if self.max_line is not None else "max_body_bytes"
        async for chunk in self._inner:
            total += len(chunk)
            if total > self.limit:
                raise UpstreamTooLarge(self.backend, self.what, self.limit, field)
            if self.max_line is not None:
                end = chunk.rfind(b"\n")
                line = line + len(chunk) if end < 0 else len(chunk) - end - 1
                if line > self.max_line:
                    raise UpstreamTooLarge(
                        self.backend, "stream line", self.max_line, "max_event_bytes"
                    )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()
