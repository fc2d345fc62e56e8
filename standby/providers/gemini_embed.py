"""Gemini embedding models (``gemini-embedding-001`` and later) over REST:
``POST /{version}/models/{model}:batchEmbedContents``, up to ``max_batch`` texts a call, each
with the backend's ``taskType`` and the request's ``dimensions`` as ``outputDimensionality``.
Errors are translated where chat's are (:mod:`standby.providers.http`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from standby.config import GeminiBackend
from standby.embeddings import Embeddings
from standby.errors import UpstreamProtocolError
from standby.providers.embedder import Embedder, vectors_of


class GeminiEmbedder(Embedder):
    def __init__(self, name: str, config: GeminiBackend) -> None:
        assert config.embeddings is not None
        model = f"models/{config.model.removeprefix('models/')}"
        headers = {"content-type": "application/json"}
        if config.api_key is not None:
            headers["x-goog-api-key"] = config.api_key.get_secret_value()
        super().__init__(
            name,
            config.timeouts,
            config.embeddings.max_batch,
            url=f"{config.base_url.rstrip('/')}/{config.api_version}/{model}:batchEmbedContents",
            headers=headers,
            limits=config.limits,
        )
        self.config = config
        self.task_type = config.embeddings.task_type
        self._model = model

    def request_body(self, texts: Sequence[str], dimensions: int | None) -> dict[str, Any]:
        common: dict[str, Any] = {"model": self._model}
        if self.task_type is not None:
            common["taskType"] = self.task_type
        if dimensions is not None:
            common["outputDimensionality"] = dimensions
        return {"requests": [{**common, "content": {"parts": [{"text": t}]}} for t in texts]}

    async def embed_batch(self, texts: Sequence[str], dimensions: int | None) -> Embeddings:
        payload = await self.post(self.request_body(texts, dimensions))
        if not isinstance(payload, dict):
            raise UpstreamProtocolError(self.name, "response is not a JSON object")
        usage = payload.get("usageMetadata")
        tokens = usage.get("promptTokenCount") if isinstance(usage, dict) else None
        return Embeddings(
            vectors_of(self.name, payload.get("embeddings"), "values"),
            tokens if isinstance(tokens, int) else 0,
        )
