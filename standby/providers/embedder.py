"""What embedding backends share: the ``Provider`` contract, so that start-up, readiness,
breakers and ``/readyz`` treat them like any backend, and an ``embed()`` call that failover
walks for ``POST /v1/embeddings``. They answer no chat request: ``unsupported`` says so, and a
chat request sent to an embeddings route gets that in its 400."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

import aiohttp
import orjson

from standby.config import Timeouts, UpstreamLimits
from standby.embeddings import EmbeddingRequest, Embeddings
from standby.errors import Unsupported, UpstreamProtocolError
from standby.protocol import ChatRequest, Completion, Delta
from standby.providers import http

T = TypeVar("T")


class Embedder:
    """Base of the embedding backends: one pooled HTTP session, and ``embed()`` split into
    calls of at most ``max_batch`` texts, sent at once."""

    def __init__(
        self,
        name: str,
        timeouts: Timeouts,
        max_batch: int,
        *,
        url: str,
        headers: dict[str, str],
        limits: UpstreamLimits,
    ) -> None:
        self.name = name
        self.timeouts = timeouts
        self.max_batch = max_batch
        self.url = url
        self.headers = headers
        self.limits = limits
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = http.new_session(self.timeouts)

    def ready(self) -> bool:
        return self._session is not None

    async def close(self) -> None:
        await http.aclose_quietly(self._session)
        self._session = None

    def unsupported(self, request: ChatRequest) -> str | None:
        return "an embedding model: send embeddings requests to POST /v1/embeddings"

    async def complete(self, request: ChatRequest) -> Completion:
        raise Unsupported(self.name, self.unsupported(request) or "")

    def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        raise Unsupported(self.name, self.unsupported(request) or "")

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "start() not called"
        return self._session

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """One vector per text, in order. Raises ``UpstreamError`` subclasses only."""
        texts = request.texts
        batches = [texts[i : i + self.max_batch] for i in range(0, len(texts), self.max_batch)]
        parts = await gather_all([self.embed_batch(b, request.dimensions) for b in batches])
        vectors = [v for part in parts for v in part.vectors]
        if len(vectors) != len(texts):
            raise UpstreamProtocolError(
                self.name, f"{len(vectors)} embeddings for {len(texts)} inputs"
            )
        return Embeddings(vectors, sum(p.prompt_tokens for p in parts))

    async def embed_batch(self, texts: Sequence[str], dimensions: int | None) -> Embeddings:
        """One call to the backend for ``texts``."""
        raise NotImplementedError

    async def post(self, body: dict[str, Any]) -> Any:
        """POST ``body`` to the backend's embeddings URL; its JSON answer (caps and errors as
        every HTTP provider's: ``http.post_json``)."""
        data = orjson.dumps(body)
        return await http.post_json(
            self.session, self.name, self.url, data, self.headers, self.timeouts, self.limits
        )


async def gather_all(calls: list[Awaitable[T]]) -> list[T]:
    """Every result in order; on the first failure the other calls are cancelled."""
    if len(calls) == 1:
        return [await calls[0]]
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def vectors_of(backend: str, items: object, key: str) -> list[list[float]]:
    """``[item[key], ...]`` as lists of floats, or an ``UpstreamProtocolError``."""
    if not isinstance(items, list):
        raise UpstreamProtocolError(backend, "no list of embeddings in the answer")
    out: list[list[float]] = []
    for item in items:
        values = item.get(key) if isinstance(item, dict) else None
        if not isinstance(values, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in values
        ):
            raise UpstreamProtocolError(backend, "an embedding is not a list of numbers")
        out.append([float(x) for x in values])
    return out
