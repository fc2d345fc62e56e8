"""A ``local`` backend served by the host's one model process (``standby serve --workers N``):
each worker's provider forwards to it over a unix socket (``local_wire``) instead of loading
its own copy of the weights. Same contract as ``local.LocalProvider``, without torch.

- ``stream()`` opens a connection per request and yields the deltas as the model produces
  them; closing the stream early (the client went away, a time limit ran out) closes the
  connection, which stops the generation in the model process and frees its slot.
- ``ready()``, ``unsupported()`` and ``served()`` read the model's state, which the model
  process pushes on a connection this provider keeps open (and opens again, every
  ``RECONNECT_S``, after the model process died). Until the first state arrives, and while the
  model process is away, the backend is not ready: failover skips it without touching its
  breaker, as it skips a model still loading in one process.
- A request the model process cannot take fails fast: ``UpstreamConnectError`` when its socket
  refuses or the connection ends before the answer did; the errors the model raises keep their
  type (``BackendBusy``, ``Unsupported``, ``UpstreamError``...).
- Promotions are followed once, by the model process (``following``: the registry version it
  serves), so the adapter is swapped once per promotion whatever the number of workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from pathlib import Path

from standby.config import LocalBackend
from standby.errors import UpstreamConnectError, UpstreamProtocolError
from standby.protocol import ChatRequest, Completion, Delta, assembled
from standby.providers.hotswap import ServedModel
from standby.providers.local_support import LOCAL_SUPPORTS, local_unsupported, version_of
from standby.providers.local_wire import (
    FrameError,
    HostState,
    delta_of,
    error_of,
    frame,
    read_frame,
    state_of,
    stream_message,
)

log = logging.getLogger("standby.providers.local")

RECONNECT_S = (0.1, 0.2, 0.5, 1.0)  # between tries to reach a model process that is away
FIRST_STATE_S = 10.0  # start() waits this long for the model process's state, then goes on


class HostedLocalProvider:
    """A local backend whose model runs in the process listening on ``socket``."""

    def __init__(self, name: str, config: LocalBackend, socket: Path) -> None:
        self.name = name
        self.config = config
        self.socket = socket
        self.state: HostState | None = None
        self._seen = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name=f"model-watch-{self.name}")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._seen.wait(), FIRST_STATE_S)
        if self.state is None:
            log.warning("%s: the model process is not answering yet", self.name)

    async def _watch(self) -> None:
        tries = 0
        while True:
            writer = None
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.socket))
                writer.write(frame({"op": "watch"}))
                while (message := await read_frame(reader)) is not None:
                    if tries:
                        log.info("%s: the model process is back", self.name)
                    tries = 0
                    self.state = state_of(message["state"])
                    self._seen.set()
            except (OSError, asyncio.IncompleteReadError, FrameError, KeyError, TypeError):
                pass
            finally:
                if writer is not None:
                    writer.close()
            if self.state is not None:
                log.warning("%s: lost the model process; reconnecting", self.name)
            self.state = None
            await asyncio.sleep(RECONNECT_S[min(tries, len(RECONNECT_S) - 1)])
            tries += 1

    def ready(self) -> bool:
        return self.state is not None and self.state.ready

    def unsupported(self, request: ChatRequest) -> str | None:
        """What the model cannot do, as far as its last state says (the model process checks
        a ``response_format`` schema itself, and answers ``Unsupported`` for one it cannot
        compile)."""
        state = self.state
        return local_unsupported(
            self.name,
            request,
            no_tools=state.no_tools if state else None,
            supports=frozenset(state.supports) if state else LOCAL_SUPPORTS,
            vocab_size=state.vocab_size if state else None,
        )

    def served(self) -> ServedModel:
        """What the model process serves now (before it said: the configured model)."""
        state = self.state
        if state is not None:
            return ServedModel(state.version, state.base_model, state.adapter)
        cfg = self.config
        if cfg.adapter:
            version = version_of(cfg.adapter, cfg.adapter_revision)
            return ServedModel(version, cfg.model, cfg.adapter)
        return ServedModel(version_of(cfg.model, cfg.revision), cfg.model, None)

    def following(self) -> str | None:
        """The registry version the model process serves (None: none, or not known yet)."""
        return self.state.following if self.state is not None else None

    async def complete(self, request: ChatRequest) -> Completion:
        return await assembled(request, self.stream(request))

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.socket))
        except OSError as e:
            raise UpstreamConnectError(
                self.name, f"model process unreachable: {e.strerror or e}"
            ) from None
        try:
            writer.write(stream_message(request))
            while True:
                try:
                    message = await read_frame(reader)
                except (OSError, asyncio.IncompleteReadError):
                    message = None
                except FrameError as e:
                    raise UpstreamProtocolError(self.name, f"model process: {e}") from None
                if message is None:
                    raise UpstreamConnectError(self.name, "model process closed the connection")
                delta = message.get("delta")
                if delta is not None:
                    yield delta_of(delta)
                elif "end" in message:
                    return
                else:
                    raise error_of(message["error"])
        finally:
            writer.close()  # before the end: the model process stops this generation

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        self.state = None
