"""The gateway follows the model registry: every ``registry.poll_s`` it asks which version each
followed backend should serve and, when that changed (a promotion or a rollback), switches the
backend to it and updates the fallback-model metrics.

- ``local`` backends swap the adapter in place (requests in flight finish on the old one).
- ``openai`` backends (vLLM with runtime LoRA updating) get the version's adapter loaded into
  the server (``providers.vllm_adapters``) under the version's name (already loaded,
  by another gateway replica, is fine), then new requests are sent with ``model`` = that name;
  requests already sent keep theirs. The replaced version's adapter is unloaded once no request
  can still use it: after the backend's ``timeouts.total_s`` (the router's limit on any
  request) plus one poll interval (other replicas switch within one) plus a second. Each poll
  also checks the serving adapter is still loaded (a restarted vLLM forgets runtime adapters,
  another replica may have unloaded it) and loads it again if not.

- ``local`` backends under ``standby serve --workers N`` are swapped by the host's model process,
  which follows the registry itself (once for the host); a worker only waits until that process
  serves the version the registry names, then updates its metrics.

A version the backend rejects (a bad adapter path, an adapter vLLM cannot load) is logged once
and skipped until the registry changes: the version served before keeps serving. A server that
cannot be reached (vLLM still starting) is logged once and tried again at every poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from standby.config import Settings
from standby.errors import StandbyError
from standby.gateway.metrics import Metrics
from standby.providers.hotswap import (
    AdapterLoadError,
    AdapterSwapping,
    FollowedElsewhere,
    HotSwappable,
    RuntimeAdapters,
)
from standby.store import open_state
from standby.store.registry import ModelVersion, Registry
from standby.store.state import StateStore

log = logging.getLogger("standby.gateway.promotions")


class ModelFollower:
    """Keeps each followed backend on the version the registry names for it."""

    def __init__(
        self, settings: Settings, providers: Mapping[str, object], metrics: Metrics
    ) -> None:
        """``providers``: the followed backends; each must be ``hotswap.AdapterSwapping``,
        ``hotswap.RuntimeAdapters`` or ``hotswap.FollowedElsewhere`` (TypeError otherwise)."""
        self.settings = settings
        self.metrics = metrics
        self.serving: dict[str, str] = {}  # backend -> registry version now served
        self._failed: dict[str, str] = {}  # backend -> version the backend rejected
        self._waiting: dict[str, str] = {}  # backend -> version whose server was unreachable
        self.providers: dict[str, HotSwappable] = {}
        for name, p in providers.items():
            if not isinstance(p, RuntimeAdapters | AdapterSwapping | FollowedElsewhere):
                raise TypeError(f"backend {name!r} cannot change its model at runtime")
            self.providers[name] = p
        self._unloads: set[asyncio.Task[None]] = set()
        self._state: StateStore | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the registry and apply what it says now, then keep following it."""
        self._state = open_state(self.settings.registry_url)
        registry = Registry(self._state)
        await self.check(registry)
        self._task = asyncio.create_task(self._run(registry), name="registry-follower")

    async def _run(self, registry: Registry) -> None:
        while True:
            await asyncio.sleep(self.settings.registry.poll_s)
            await self.check(registry)

    async def check(self, registry: Registry) -> None:
        for name, provider in self.providers.items():
            try:
                wanted = await registry.serving(name)
            except StandbyError as e:
                log.warning("registry: cannot read the serving version of %s: %s", name, e)
                continue
            if wanted is None:
                continue
            if wanted.version == self.serving.get(name):
                if isinstance(provider, RuntimeAdapters):
                    await self._still_loaded(provider, wanted)
                continue
            if self._failed.get(name) == wanted.version:
                continue
            if isinstance(provider, RuntimeAdapters):
                await self._switch(name, provider, wanted)
            elif isinstance(provider, AdapterSwapping):
                await self._swap(name, provider, wanted)
            elif isinstance(provider, FollowedElsewhere):  # swapped there: report it once done
                if provider.following() != wanted.version:
                    continue
                served = provider.served()
                assert served is not None, "a swapped backend serves a version"
                self._served(name, wanted, served.base_model)

    async def _swap(self, name: str, provider: AdapterSwapping, wanted: ModelVersion) -> None:
        try:
            await provider.swap_adapter(wanted.adapter, wanted.adapter_revision)
        except StandbyError as e:
            log.error("registry: %s cannot serve %s: %s", name, wanted.version, e)
            self._failed[name] = wanted.version
            return
        served = provider.served()
        assert served is not None, "a swapped backend serves a version"
        self._served(name, wanted, served.base_model)

    async def _switch(self, name: str, provider: RuntimeAdapters, wanted: ModelVersion) -> None:
        """Load the version's adapter into the vLLM server, then send new requests to it."""
        try:
            await self._load(provider, wanted)
        except AdapterLoadError as e:
            if not e.retry:
                log.error("registry: %s cannot serve %s: %s", name, wanted.version, e)
                self._failed[name] = wanted.version
            elif self._waiting.get(name) != wanted.version:
                log.warning(
                    "registry: %s cannot load %s yet (trying again every %ss): %s",
                    name,
                    wanted.version,
                    self.settings.registry.poll_s,
                    e,
                )
                self._waiting[name] = wanted.version
            return
        previous = self.serving.get(name)
        served = provider.use_model(wanted.version, wanted.base_model)
        self._served(name, wanted, served.base_model)
        if previous is not None and self.settings.registry.unload_previous:
            timeouts = self.settings.backends[name].timeouts
            grace = timeouts.total_s + self.settings.registry.poll_s + 1
            task = asyncio.create_task(self._unload_later(provider, previous, grace))
            self._unloads.add(task)
            task.add_done_callback(self._unloads.discard)

    async def _load(self, provider: RuntimeAdapters, wanted: ModelVersion) -> None:
        if wanted.adapter_revision is not None:
            raise AdapterLoadError(
                f"vLLM loads an adapter at its default revision only (registered with revision "
                f"{wanted.adapter_revision!r}): register a local folder instead",
                retry=False,
            )
        path = self.settings.registry.served_path(wanted.adapter)
        await provider.load_adapter(wanted.version, path)

    async def _still_loaded(self, provider: RuntimeAdapters, wanted: ModelVersion) -> None:
        """Load the serving adapter again when the server lost it (a restarted vLLM)."""
        name = provider.name
        try:
            if wanted.version in await provider.loaded_models():
                return
            log.warning(
                "registry: %s lost adapter %s (server restarted?): loading it again",
                name,
                wanted.version,
            )
            await self._load(provider, wanted)
        except AdapterLoadError as e:
            if self._waiting.get(name) != wanted.version:
                log.warning("registry: %s cannot check or load %s: %s", name, wanted.version, e)
                self._waiting[name] = wanted.version
            return
        self._waiting.pop(name, None)

    async def _unload_later(self, provider: RuntimeAdapters, version: str, grace: float) -> None:
        await asyncio.sleep(grace)
        name = provider.name
        if self.serving.get(name) == version:  # rolled back to it meanwhile
            return
        try:
            await provider.unload_adapter(version)
            log.info("registry: %s unloaded adapter %s", name, version)
        except AdapterLoadError as e:
            log.warning("registry: %s could not unload adapter %s: %s", name, version, e)

    def _served(self, name: str, wanted: ModelVersion, base: str) -> None:
        self.serving[name] = wanted.version
        self._failed.pop(name, None)
        self._waiting.pop(name, None)
        # Zeroed before cleared: under --workers N a series lives on in this worker's metrics
        # file after clear(), and the page shows each series' maximum over the workers.
        for labels in list(self.metrics.fallback_model_info._metrics):
            self.metrics.fallback_model_info.labels(*labels).set(0)
        self.metrics.fallback_model_info.clear()
        self.metrics.fallback_model_info.labels(wanted.version, base).set(1)
        for criterion, score in wanted.scores.items():
            if criterion in ("similarity", "precision"):
                self.metrics.fallback_model_score.labels(criterion).set(score)
        log.info("registry: %s now serves %s (%s)", name, wanted.version, wanted.adapter)

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._unloads) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._state is not None:
            await self._state.close()
