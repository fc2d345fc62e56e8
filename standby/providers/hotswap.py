"""Backends whose model changes while the gateway runs: what a promotion or a rollback needs
from a provider, without knowing its vendor.

- ``AdapterSwapping`` (the local backend): loads a LoRA adapter in-process and serves new
  requests with it; requests in flight finish on the adapter they started with.
- ``RuntimeAdapters`` (an openai backend serving vLLM): the server loads an adapter under a
  name at runtime; the provider then sends that name as ``model``.
- ``FollowedElsewhere`` (a local backend under ``standby serve --workers N``): the host's model
  process follows the registry and swaps; a worker only reads which version it serves.

Both say what they serve (``served()``), which the gateway publishes as
``standby_fallback_model_info``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from standby.errors import StandbyError


@dataclass(frozen=True, slots=True)
class ServedModel:
    """What a hot-swappable backend answers with now: the ``model_version`` its answers carry,
    the base model under it, and the LoRA adapter (a path or Hub id; None: none or unknown)."""

    version: str
    base_model: str
    adapter: str | None = None


class AdapterLoadError(StandbyError):
    """A server did not load (or unload) an adapter. ``retry``: it may succeed later (the
    server could not be reached or failed on its side); otherwise it rejected the adapter."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


@runtime_checkable
class HotSwappable(Protocol):
    """A backend whose served model can change at runtime."""

    name: str

    def served(self) -> ServedModel | None:
        """What it serves now; None while it serves its configured model under no version of
        its own (an openai backend before its first switch)."""


@runtime_checkable
class AdapterSwapping(HotSwappable, Protocol):
    """Swaps its LoRA adapter in-process (``LocalProvider``)."""

    async def swap_adapter(self, adapter: str, revision: str | None = None) -> str:
        """Serve new requests with ``adapter``; returns the new model version. UpstreamError
        (the serving adapter unchanged) when it cannot load."""


@runtime_checkable
class RuntimeAdapters(HotSwappable, Protocol):
    """Its server loads adapters by name at runtime (``OpenAICompatProvider`` on vLLM).
    Every method raises ``AdapterLoadError`` only."""

    async def load_adapter(self, name: str, path: str) -> None:
        """Load ``path`` into the server as ``name``; a name already loaded counts as loaded."""

    async def unload_adapter(self, name: str) -> None:
        """Unload ``name``; one that is not loaded is fine."""

    async def loaded_models(self) -> set[str]:
        """The model names the server serves now (base models and adapters)."""

    def use_model(self, model: str, base_model: str | None = None) -> ServedModel:
        """Send ``model`` from the next request on (requests already sent keep theirs);
        ``base_model``: the model under it, when known. Returns what is served now."""


@runtime_checkable
class FollowedElsewhere(HotSwappable, Protocol):
    """Its model is swapped by another process that follows the registry itself
    (``local_remote.HostedLocalProvider``: the host's one model process)."""

    def following(self) -> str | None:
        """The registry version served now (None: none yet, or not known)."""
