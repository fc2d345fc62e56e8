"""The model process's side of the hop (``local_wire``): one started ``LocalProvider`` served to
the gateway's workers on a unix socket (``standby serve --workers N``; the process itself is
run by ``standby.gateway.model_host``).

Each request connection gets the provider's deltas as they are produced; when the worker closes
it early (its client went away, or one of its time limits ran out), the request's task is
cancelled, which closes the provider's stream: a waiting request leaves the queue and a running
row stops at its next token, as in one process. Watch connections get the model's state at once
and again within ``poll_s`` of each change (queue full or not, a new adapter served).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from standby.errors import Unsupported, UpstreamError, UpstreamProtocolError, one_line
from standby.providers.local import LocalProvider
from standby.providers.local_wire import (
    END,
    FrameError,
    HostState,
    delta_message,
    error_message,
    read_frame,
    request_of,
    state_message,
)

log = logging.getLogger("standby.providers.local")


class ModelServer:
    """Serves ``provider`` (started) on a unix socket; ``following`` names the registry version
    it serves when the registry is followed (else None)."""

    def __init__(
        self,
        provider: LocalProvider,
        following: Callable[[], str | None] = lambda: None,
        *,
        poll_s: float = 0.05,
    ) -> None:
        self.provider = provider
        self.following = following
        self.poll_s = poll_s
        self._server: asyncio.AbstractServer | None = None
        self._state: HostState | None = None
        self._watchers: set[asyncio.StreamWriter] = set()
        self._requests: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def state(self) -> HostState:
        p = self.provider
        served = p.served()
        return HostState(
            ready=p.ready(),
            no_tools=p.no_tools,
            supports=tuple(sorted(p.supports)),
            vocab_size=p.vocab_size,
            version=served.version,
            base_model=served.base_model,
            adapter=served.adapter,
            following=self.following(),
        )

    async def start(self, path: Path) -> None:
        """Listen on ``path`` (replacing a socket left by a process that died), readable and
        writable by this user only."""
        await asyncio.to_thread(path.unlink, missing_ok=True)
        umask = os.umask(0o177)  # the socket is created 0600
        try:
            self._server = await asyncio.start_unix_server(self._connected, path=str(path))
        finally:
            os.umask(umask)
        self._state = self.state()
        self._ticker = asyncio.create_task(self._tick(), name="model-state")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            self.changed()

    def changed(self) -> None:
        """Send the state to every watcher if it changed since last sent."""
        state = self.state()
        if state == self._state:
            return
        self._state = state
        message = state_message(state)
        for writer in list(self._watchers):
            writer.write(message)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        try:
            first = await read_frame(reader)
            if not isinstance(first, dict):
                return
            if first.get("op") == "watch":
                await self._watch(reader, writer)
            elif first.get("op") == "stream" and task is not None:
                self._requests.add(task)
                await self._stream(reader, writer, first.get("request"))
        except (ConnectionError, asyncio.IncompleteReadError, FrameError):
            pass  # the worker went away or sent garbage: nothing to answer
        finally:
            self._requests.discard(task)
            writer.close()

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._state is not None
        writer.write(state_message(self._state))
        self._watchers.add(writer)
        try:
            while await reader.read(4096):  # the worker sends nothing more; EOF when it goes
                pass
        finally:
            self._watchers.discard(writer)

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: Any
    ) -> None:
        """Answer one request; stop it when the worker closes the connection first."""
        gone = asyncio.ensure_future(reader.read(1))  # b"" (EOF) when the worker closes
        pump = asyncio.ensure_future(self._pump(data, writer))
        try:
            await asyncio.wait({gone, pump}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await task

    async def _pump(self, data: Any, writer: asyncio.StreamWriter) -> None:
        name = self.provider.name
        try:
            request = request_of(data)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            await _send(writer, error_message(UpstreamProtocolError(name, f"bad request: {e}")))
            return
        try:
            why = self.provider.unsupported(request)
            if why is not None:
                raise Unsupported(name, why)
            async with contextlib.aclosing(self.provider.stream(request)) as deltas:
                async for delta in deltas:
                    if writer.is_closing():
                        return  # the worker went away; closing the stream stops the row
                    writer.write(delta_message(delta))
                    await writer.drain()
            reply = END
        except ConnectionError:
            return  # the worker went away: the stream is closed, its row stopped
        except UpstreamError as e:
            reply = error_message(e)
        except Exception as e:  # the boundary: nothing raw reaches a worker
            log.exception("%s: model process failed a request", name)
            reply = error_message(UpstreamError(name, f"model process: {one_line(e)}"))
        await _send(writer, reply)

    async def close(self, grace_s: float) -> None:
        """Stop accepting, let requests in flight finish for up to ``grace_s``, then stop
        them; watchers see the connection end (the model is no longer ready)."""
        if self._server is not None:
            self._server.close()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._requests:
            await asyncio.wait(set(self._requests), timeout=grace_s)
        for task in list(self._requests):
            task.cancel()
        for writer in list(self._watchers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)


async def _send(writer: asyncio.StreamWriter, message: bytes) -> None:
    """Write the last frame of a request, unless the worker already went away."""
    if writer.is_closing():
        return
    writer.write(message)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
