"""Run a server on a background thread with its own event loop: the demo runs the simulated
Gemini beside the gateway this way, and tests start real servers on 127.0.0.1 with it."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn
from aiohttp import web


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class BackgroundServer:
    """Base: a thread owning an event loop; subclasses say how to serve and how to stop."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _serve(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _shutdown(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # surfaced to start()'s caller
            self._error = e
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self, timeout: float = 30) -> BackgroundServer:
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"server:{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"server on {self.url} did not start in {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"server on {self.url} failed to start") from self._error
        return self

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout)

    def stop(self, timeout: float = 30) -> None:
        if self._thread is None or self._loop is None or not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout)
        self._thread.join(timeout)
        self._thread = None


class AiohttpServer(BackgroundServer):
    """An aiohttp ``web.Application`` on a background thread."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.app = app
        self._stop: asyncio.Event | None = None

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    async def _shutdown(self) -> None:
        assert self._stop is not None
        self._stop.set()


class UvicornServer(BackgroundServer):
    """An ASGI app under a real ``uvicorn.Server`` on a background thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> None:
        super().__init__(host, port)
        kwargs.setdefault("log_level", "warning")
        kwargs.setdefault("lifespan", "on")
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, **kwargs))

    async def _serve(self) -> None:
        serve = asyncio.ensure_future(self.server.serve())
        # uvicorn exposes start-up only as a flag, so poll it.
        while not self.server.started and not serve.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if serve.done():
            serve.result()
            raise RuntimeError("uvicorn exited during start-up")
        self._ready.set()
        await serve

    async def _shutdown(self) -> None:
        self.server.should_exit = True
