"""Run the gateway: start the backends, serve HTTP with uvicorn, close the backends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import uvicorn

from standby.config import Settings
from standby.gateway.app import Gateway, create_app

log = logging.getLogger("standby.gateway")


def uvicorn_config(gw: Gateway, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(
        create_app(gw),
        host=host,
        port=port,
        lifespan="off",
        log_level=log_level,
        access_log=False,
        http="httptools",
        proxy_headers=False,  # client addresses are not used; saves a layer per request
        server_header=False,
        timeout_graceful_shutdown=30,
    )


async def run_gateway(
    settings: Settings,
    *,
    log_level: str = "info",
    on_started: Callable[[uvicorn.Server], None] | None = None,
) -> None:
    """Start every backend (errors propagate: the caller prints one line), then serve until
    SIGINT/SIGTERM, then close the backends."""
    gw = Gateway(settings)
    await gw.start()
    try:
        host, port = settings.server.host, settings.server.port
        server = uvicorn.Server(uvicorn_config(gw, host, port, log_level))
        if on_started is not None:
            watcher = asyncio.create_task(_when_started(server, on_started))
        await server.serve()
        if on_started is not None:
            watcher.cancel()
    finally:
        await gw.close()


async def _when_started(server: uvicorn.Server, callback: Callable[[uvicorn.Server], None]) -> None:
    # uvicorn exposes start-up only as a flag.
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    callback(server)


def serve(
    settings: Settings,
    *,
    log_level: str = "info",
    on_started: Callable[[uvicorn.Server], None] | None = None,
) -> None:
    """Blocking entry point for the CLI (uvloop when installed)."""
    main = run_gateway(settings, log_level=log_level, on_started=on_started)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(main)
    else:
        uvloop.run(main)
