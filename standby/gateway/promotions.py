"""The gateway follows the model registry: every ``registry.poll_s`` it asks which version each
followed local backend should serve and, when that changed (a promotion or a rollback), swaps the
adapter in place (requests in flight finish on the old one) and updates the fallback-model
metrics. A version that cannot load is logged once and skipped until the registry changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from standby.config import LocalBackend, Settings
from standby.errors import GatewayError
from standby.gateway.metrics import Metrics
from standby.pipeline.registry import ModelVersion, Registry
from standby.pipeline.state import StateStore, open_state

log = logging.getLogger("standby.gateway.promotions")


class Swappable(Protocol):
    """What a followed backend offers (``LocalProvider``; typed here without importing torch)."""

    config: LocalBackend

    async def swap_adapter(self, adapter: str, revision: str | None = None) -> str: ...


class ModelFollower:
    def __init__(self, settings: Settings, providers: dict[str, Any], metrics: Metrics):
        """``providers``: the followed backends (LocalProviders)."""
        followed: dict[str, Swappable] = providers
        self.settings = settings
        self.providers = followed
        self.metrics = metrics
        self.serving: dict[str, str] = {}  # backend -> registry version now loaded
        self._failed: dict[str, str] = {}  # backend -> version that did not load
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
            except GatewayError as e:
                log.warning("registry: cannot read the serving version of %s: %s", name, e)
                continue
            if wanted is None or wanted.version == self.serving.get(name):
                continue
            if self._failed.get(name) == wanted.version:
                continue
            await self._swap(name, provider, wanted)

    async def _swap(self, name: str, provider: Swappable, wanted: ModelVersion) -> None:
        try:
            await provider.swap_adapter(wanted.adapter, wanted.adapter_revision)
        except GatewayError as e:
            log.error("registry: %s cannot serve %s: %s", name, wanted.version, e)
            self._failed[name] = wanted.version
            return
        self.serving[name] = wanted.version
        self._failed.pop(name, None)
        base = provider.config.model
        self.metrics.fallback_model_info.clear()
        self.metrics.fallback_model_info.labels(wanted.version, base).set(1)
        for criterion, score in wanted.scores.items():
            if criterion in ("similarity", "precision"):
                self.metrics.fallback_model_score.labels(criterion).set(score)
        log.info("registry: %s now serves %s (%s)", name, wanted.version, wanted.adapter)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._state is not None:
            await self._state.close()
