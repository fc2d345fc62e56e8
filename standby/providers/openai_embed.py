"""Embedding models behind an OpenAI-compatible server (vLLM, TEI, Ollama, Gemini's OpenAI
surface): ``POST {base_url}/embeddings`` with the texts, ``encoding_format: float`` and the
request's ``dimensions``; the backend's ``extra_body`` is merged in first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from standby.config import OpenAIBackend
from standby.embeddings import Embeddings
from standby.errors import UpstreamProtocolError
from standby.providers.embedder import Embedder, vectors_of


class OpenAIEmbedder(Embedder):
    def __init__(self, name: str, config: OpenAIBackend) -> None:
        assert config.embeddings is not None
        headers = {"content-type": "application/json"}
        if config.api_key is not None:
            headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        super().__init__(
            name,
            config.timeouts,
            config.embeddings.max_batch,
            url=f"{config.base_url.rstrip('/')}/embeddings",
            headers=headers,
            limits=config.limits,
        )
        self.config = config

    def request_body(self, texts: Sequence[str], dimensions: int | None) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.config.extra_body)
        body.update(model=self.config.model, input=list(texts), encoding_format="float")
        if dimensions is not None:
            body["dimensions"] = dimensions
        return body

    async def embed_batch(self, texts: Sequence[str], dimensions: int | None) -> Embeddings:
        payload = await self.post(self.request_body(texts, dimensions))
        items = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            raise UpstreamProtocolError(self.name, "no data list in the embeddings answer")
        try:  # servers may answer out of order: index says where each goes
            items = sorted(items, key=lambda d: int(d["index"]))
        except (KeyError, TypeError, ValueError):
            raise UpstreamProtocolError(self.name, "an embedding has no index") from None
        usage = payload.get("usage") if isinstance(payload, dict) else None
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return Embeddings(
            vectors_of(self.name, items, "embedding"), tokens if isinstance(tokens, int) else 0
        )
