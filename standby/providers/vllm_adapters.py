"""vLLM's runtime LoRA API on one server: ``{base_url}/load_lora_adapter``,
``/unload_lora_adapter`` and ``/models``, beside ``{base_url}/chat/completions``.

Its own aiohttp session (a promotion is rare and may wait on a large adapter), opened on first
use. aiohttp and vLLM's error bodies become ``AdapterLoadError`` here and nowhere else. Answers
are read within the backend's ``limits.max_body_bytes``, error bodies within
``http.MAX_ERROR_BODY``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from standby.config import OpenAIBackend
from standby.errors import UpstreamTooLarge
from standby.providers import http
from standby.providers.hotswap import AdapterLoadError

# Statuses after which loading may still succeed (the server is busy or failed on its side).
RETRY_STATUSES = frozenset({408, 429})


class VLLMAdapters:
    """Loads and unloads LoRA adapters on the vLLM server of one openai backend."""

    def __init__(self, name: str, config: OpenAIBackend) -> None:
        self.name = name
        self.max_body = config.limits.max_body_bytes
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

    async def loaded(self) -> set[str]:
        """The model names the server serves now (base models and adapters)."""
        url = f"{self.base}/models"
        async with _translated(url), self._client().get(url) as resp:
            if resp.status != 200:
                raise AdapterLoadError(f"{url}: HTTP {resp.status}", retry=True)
            body = orjson.loads(await http.read_capped(self.name, resp, self.max_body))
        return {str(card.get("id")) for card in body.get("data") or () if isinstance(card, dict)}

    async def load(self, name: str, path: str) -> None:
        """Load ``path`` as ``name``; a name already loaded counts as loaded (version names are
        never reused, so it is this adapter, loaded by another replica or an earlier try)."""
        status, message = await self._post(
            "load_lora_adapter", {"lora_name": name, "lora_path": path}
        )
        if status == 200 or (status == 400 and "already been loaded" in message):
            return
        retry = status >= 500 or status in RETRY_STATUSES
        raise AdapterLoadError(f"load_lora_adapter: HTTP {status}: {message}", retry=retry)

    async def unload(self, name: str) -> None:
        """Unload ``name``; one that is not loaded (another replica unloaded it) is fine."""
        status, message = await self._post("unload_lora_adapter", {"lora_name": name})
        if status not in (200, 404):
            raise AdapterLoadError(f"unload_lora_adapter: HTTP {status}: {message}", retry=True)

    async def _post(self, endpoint: str, payload: dict[str, str]) -> tuple[int, str]:
        url = f"{self.base}/{endpoint}"
        async with _translated(url), self._client().post(url, data=orjson.dumps(payload)) as r:
            return r.status, error_message(await http.read_head(r, http.MAX_ERROR_BODY))


@asynccontextmanager
async def _translated(url: str) -> AsyncIterator[None]:
    """The one boundary: a server that cannot be reached or answers garbage may do better at
    the next poll."""
    try:
        yield
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, UpstreamTooLarge) as e:
        raise AdapterLoadError(f"{url}: {e!r}", retry=True) from e


def error_message(body: bytes | bytearray) -> str:
    """vLLM's error message (``{"error": {"message"}}``, or the older flat ``{"message"}``),
    or the body's text."""
    try:
        payload: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")[:300]
    if isinstance(payload, dict):
        err = payload.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if payload.get("message"):
            return str(payload["message"])[:300]
    return str(payload)[:300]
