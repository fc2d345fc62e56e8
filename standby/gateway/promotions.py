"""The gateway follows the model registry: every ``registry.poll_s`` it asks which version each
followed backend should serve and, when that changed (a promotion or a rollback), switches the
backend to it and updates the fallback-model metrics.

- ``local`` backends swap the adapter in place (requests in flight finish on the old one).
- ``openai`` backends (vLLM with runtime LoRA updating) get the version's adapter loaded into
  the server through ``POST /v1/load_lora_adapter`` under the version's name (already loaded,
  by another gateway replica, is fine), then new requests are sent with ``model`` = that name;
  requests already sent keep theirs. The replaced version's adapter is unloaded once no request
  can still use it: after the backend's ``timeouts.total_s`` (the router's limit on any
  request) plus one poll interval (other replicas switch within one) plus a second. Each poll
  also checks the serving adapter is still loaded (a restarted vLLM forgets runtime adapters,
  another replica may have unloaded it) and loads it again if not.

A version the backend rejects (a bad adapter path, an adapter vLLM cannot load) is logged once
and skipped until the registry changes: the version served before keeps serving. A server that
cannot be reached (vLLM still starting) is logged once and tried again at every poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import aiohttp
import orjson

from standby.config import LocalBackend, OpenAIBackend, Settings
from standby.errors import GatewayError
from standby.gateway.metrics import Metrics
from standby.store.registry import ModelVersion, Registry
from standby.store.state import StateStore, open_state

log = logging.getLogger("standby.gateway.promotions")


class Swappable(Protocol):
    """What a followed local backend offers (``LocalProvider``; typed here without importing
    torch)."""

    config: LocalBackend

    async def swap_adapter(self, adapter: str, revision: str | None = None) -> str: ...


class Switchable(Protocol):
    """What a followed openai backend offers (``OpenAICompatProvider``)."""

    config: OpenAIBackend
    model: str

    def use_model(self, model: str) -> None: ...


class AdapterLoadError(GatewayError):
    """The server did not load an adapter. ``retry``: it may load later (the server could not
    be reached or failed on its side); otherwise it rejected the adapter."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class VLLMLoras:
    """vLLM's runtime LoRA API on one server (``{base_url}/load_lora_adapter`` beside
    ``{base_url}/chat/completions``)."""

    def __init__(self, backend: str, config: OpenAIBackend) -> None:
        self.backend = backend
        self.base = config.base_url.rstrip("/")
        self.headers = {"content-type": "application/json"}
        if config.api_key is not None:
            self.headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self.timeout = aiohttp.ClientTimeout(total=60, connect=config.timeouts.connect_s)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, endpoint: str, payload: dict[str, str]) -> tuple[int, str]:
        url = f"{self.base}/{endpoint}"
        try:
            async with self._client().post(url, data=orjson.dumps(payload)) as resp:
                return resp.status, _message(await resp.read())
        except (aiohttp.ClientError, TimeoutError) as e:
            raise AdapterLoadError(f"{url}: {e!r}", retry=True) from e

    async def loaded(self) -> set[str]:
        """The model names the server serves now (base models and adapters)."""
        url = f"{self.base}/models"
        try:
            async with self._client().get(url) as resp:
                if resp.status != 200:
                    raise AdapterLoadError(f"{url}: HTTP {resp.status}", retry=True)
                body = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as e:
            raise AdapterLoadError(f"{url}: {e!r}", retry=True) from e
        return {str(card.get("id")) for card in body.get("data") or () if isinstance(card, dict)}

    async def load(self, name: str, path: str) -> None:
        """Load ``path`` as ``name``; a name already loaded counts as loaded (version names are
        never reused, so it is this adapter, loaded by another replica or an earlier try)."""
        status, message = await self._post(
            "load_lora_adapter", {"lora_name": name, "lora_path": path}
        )
        if status == 200 or (status == 400 and "already been loaded" in message):
            return
        retry = status >= 500 or status in (408, 429)
        raise AdapterLoadError(f"load_lora_adapter: HTTP {status}: {message}", retry=retry)

    async def unload(self, name: str) -> None:
        """Unload ``name``; one that is not loaded (another replica unloaded it) is fine."""
        status, message = await self._post("unload_lora_adapter", {"lora_name": name})
        if status not in (200, 404):
            raise AdapterLoadError(f"unload_lora_adapter: HTTP {status}: {message}", retry=True)


def _message(body: bytes) -> str:
    """vLLM's error message (``{"error": {"message"}}``, or the older flat
    ``{"message"}``), or the body's text."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")[:300]
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if payload.get("message"):
            return str(payload["message"])[:300]
    return str(payload)[:300]


class ModelFollower:
    def __init__(self, settings: Settings, providers: dict[str, Any], metrics: Metrics):
        """``providers``: the followed backends (LocalProviders, OpenAICompatProviders)."""
        self.settings = settings
        self.providers = providers
        self.metrics = metrics
        self.serving: dict[str, str] = {}  # backend -> registry version now served
        self._failed: dict[str, str] = {}  # backend -> version the backend rejected
        self._waiting: dict[str, str] = {}  # backend -> version whose server was unreachable
        self.loras: dict[str, VLLMLoras] = {
            name: VLLMLoras(name, p.config)
            for name, p in providers.items()
            if isinstance(p.config, OpenAIBackend)
        }
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
            except GatewayError as e:
                log.warning("registry: cannot read the serving version of %s: %s", name, e)
                continue
            if wanted is None:
                continue
            if wanted.version == self.serving.get(name):
                if name in self.loras:
                    await self._still_loaded(name, wanted)
                continue
            if self._failed.get(name) == wanted.version:
                continue
            if name in self.loras:
                await self._switch(name, provider, wanted)
            else:
                await self._swap(name, provider, wanted)

    async def _swap(self, name: str, provider: Swappable, wanted: ModelVersion) -> None:
        try:
            await provider.swap_adapter(wanted.adapter, wanted.adapter_revision)
        except GatewayError as e:
            log.error("registry: %s cannot serve %s: %s", name, wanted.version, e)
            self._failed[name] = wanted.version
            return
        self._served(name, wanted, provider.config.model)

    async def _switch(self, name: str, provider: Switchable, wanted: ModelVersion) -> None:
        """Load the version's adapter into the vLLM server, then send new requests to it."""
        try:
            await self._load(name, wanted)
        except AdapterLoadError as e:
            if not e.retry:
                log.error("registry: %s cannot serve %s: %s", name, wanted.version, e)
                self._failed[name] = wanted.version
            elif self._waiting.get(name) != wanted.version:
                log.warning("registry: %s cannot load %s yet (trying again every %ss): %s",
                            name, wanted.version, self.settings.registry.poll_s, e)  # fmt: skip
                self._waiting[name] = wanted.version
            return
        previous = self.serving.get(name)
        provider.use_model(wanted.version)
        self._served(name, wanted, wanted.base_model or provider.config.model)
        if previous is not None and self.settings.registry.unload_previous:
            grace = provider.config.timeouts.total_s + self.settings.registry.poll_s + 1
            task = asyncio.create_task(self._unload_later(name, previous, grace))
            self._unloads.add(task)
            task.add_done_callback(self._unloads.discard)

    async def _load(self, name: str, wanted: ModelVersion) -> None:
        if wanted.adapter_revision is not None:
            raise AdapterLoadError(
                f"vLLM loads an adapter at its default revision only (registered with revision "
                f"{wanted.adapter_revision!r}): register a local folder instead", retry=False
            )  # fmt: skip
        await self.loras[name].load(
            wanted.version, self.settings.registry.served_path(wanted.adapter)
        )

    async def _still_loaded(self, name: str, wanted: ModelVersion) -> None:
        """Load the serving adapter again when the server lost it (a restarted vLLM)."""
        try:
            if wanted.version in await self.loras[name].loaded():
                return
            log.warning("registry: %s lost adapter %s (server restarted?): loading it again",
                        name, wanted.version)  # fmt: skip
            await self._load(name, wanted)
        except AdapterLoadError as e:
            if self._waiting.get(name) != wanted.version:
                log.warning("registry: %s cannot check or load %s: %s", name, wanted.version, e)
                self._waiting[name] = wanted.version
            return
        self._waiting.pop(name, None)

    async def _unload_later(self, name: str, version: str, grace: float) -> None:
        await asyncio.sleep(grace)
        if self.serving.get(name) == version:  # rolled back to it meanwhile
            return
        try:
            await self.loras[name].unload(version)
            log.info("registry: %s unloaded adapter %s", name, version)
        except AdapterLoadError as e:
            log.warning("registry: %s could not unload adapter %s: %s", name, version, e)

    def _served(self, name: str, wanted: ModelVersion, base: str) -> None:
        self.serving[name] = wanted.version
        self._failed.pop(name, None)
        self._waiting.pop(name, None)
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
        for loras in self.loras.values():
            await loras.close()
        if self._state is not None:
            await self._state.close()
