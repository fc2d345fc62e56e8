"""The provider contract. The router knows nothing about any vendor: it reads ``stream()``
(a whole answer too, added up, so that its time limits apply to it) and classifies the
``UpstreamError`` subclasses raised; ``complete()`` is what the evaluator's batch inference and
the judge's client call.

Each provider module translates its client's exceptions into ``standby.errors`` in one place,
most specific first, and never by matching message text.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from standby.protocol import ChatRequest, Completion, Delta

if TYPE_CHECKING:
    from standby.config import BackendConfig


@runtime_checkable
class Provider(Protocol):
    """One backend. ``name`` is the backend's key in the config."""

    name: str

    async def start(self) -> None:
        """Open clients / load weights. Called once before the first request."""

    def ready(self) -> bool:
        """True when the backend can take a request now (weights loaded, queue not full)."""

    def unsupported(self, request: ChatRequest) -> str | None:
        """Why this backend cannot answer ``request`` at all (it needs tools, say, and the
        backend has none), in a few words for the client; None when it can. Failover skips
        such a backend (reason ``unsupported``) without calling it."""

    async def complete(self, request: ChatRequest) -> Completion:
        """One whole answer. Raises ``UpstreamError`` subclasses only."""

    def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """The answer in pieces; the last ``Delta`` carries ``finish_reason``. Raises
        ``UpstreamError`` subclasses only, also after some deltas were yielded."""

    async def close(self) -> None:
        """Release clients, threads and memory."""


ProviderFactory = Callable[[str, "BackendConfig"], Provider]


# One map from a config backend ``type`` to its provider, as ``module:Class``: imported only
# when a backend uses it, so the gateway image needs neither torch nor litellm.
PROVIDERS: dict[str, str] = {
    "gemini": "standby.providers.gemini:GeminiProvider",
    "openai": "standby.providers.openai_compat:OpenAICompatProvider",
    "tgi": "standby.providers.tgi:TGIProvider",
    "litellm": "standby.providers.litellm:LiteLLMProvider",
    "local": "standby.providers.local:LocalProvider",
}


# Backends with an ``embeddings:`` section are embedding models (``providers.embedder``).
EMBEDDERS: dict[str, str] = {
    "gemini": "standby.providers.gemini_embed:GeminiEmbedder",
    "openai": "standby.providers.openai_embed:OpenAIEmbedder",
}


def provider_class(kind: str, *, embeddings: bool = False) -> ProviderFactory:
    """The provider class for backend type ``kind`` (imported now)."""
    module, _, cls = (EMBEDDERS if embeddings else PROVIDERS)[kind].partition(":")
    factory: ProviderFactory = getattr(importlib.import_module(module), cls)
    return factory


def build_provider(name: str, config: BackendConfig) -> Provider:
    """Create the provider for one backend entry of the config."""
    embeddings = getattr(config, "embeddings", None) is not None
    return provider_class(config.type, embeddings=embeddings)(name, config)


async def aclose(iterator: AsyncIterator[object]) -> None:
    """Close an async generator (a provider's stream) so its connection is released now."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
