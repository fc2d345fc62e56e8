"""The provider contract. The router knows nothing about any vendor: it calls ``complete()`` or
``stream()`` and classifies the ``UpstreamError`` subclasses they raise.

Each provider module translates its client's exceptions into ``standby.errors`` in one place,
most specific first, and never by matching message text.
"""

from __future__ import annotations

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

    async def complete(self, request: ChatRequest) -> Completion:
        """One whole answer. Raises ``UpstreamError`` subclasses only."""

    def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """The answer in pieces; the last ``Delta`` carries ``finish_reason``. Raises
        ``UpstreamError`` subclasses only, also after some deltas were yielded."""

    async def close(self) -> None:
        """Release clients, threads and memory."""


ProviderFactory = Callable[[str, "BackendConfig"], Provider]


def build_provider(name: str, config: BackendConfig) -> Provider:
    """Create the provider for one backend entry of the config (imports lazily, so the gateway
    image needs neither torch nor litellm unless a backend uses them)."""
    from standby import config as c

    if isinstance(config, c.GeminiBackend):
        from standby.providers.gemini import GeminiProvider

        return GeminiProvider(name, config)
    if isinstance(config, c.OpenAIBackend):
        from standby.providers.openai_compat import OpenAICompatProvider

        return OpenAICompatProvider(name, config)
    if isinstance(config, c.TGIBackend):
        from standby.providers.tgi import TGIProvider

        return TGIProvider(name, config)
    if isinstance(config, c.LiteLLMBackend):
        from standby.providers.litellm import LiteLLMProvider

        return LiteLLMProvider(name, config)
    from standby.providers.local import LocalProvider

    return LocalProvider(name, config)


async def aclose(iterator: AsyncIterator[object]) -> None:
    """Close an async generator (a provider's stream) so its connection is released now."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
