"""Run the gateway: start the backends, serve HTTP with uvicorn, close the backends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn

from standby.config import Settings
from standby.errors import ConfigError
from standby.gateway.admin import reload_keys
from standby.gateway.app import Gateway, create_app
from standby.gateway.http_limits import protocol_class
from standby.gateway.http_protocol import with_send_timeout
from standby.gctune import freeze_startup_objects

log = logging.getLogger("standby.gateway")


class GatewayServer(uvicorn.Server):
    """uvicorn's server, minus one habit: after a graceful shutdown uvicorn re-raises the
    SIGTERM/SIGINT it caught, which kills the process before the gateway drains its captured
    answers. Here the signal only starts the shutdown; the process then exits normally."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


SIGNALS = (signal.SIGINT, signal.SIGTERM)


def uvicorn_config(gw: Gateway, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(
        create_app(gw),
        host=host,
        port=port,
        lifespan="off",
        log_level=log_level,
        access_log=False,
        # uvicorn's httptools protocol, plus limits on each request's head (size, count, time)
        # and a send timeout (a client that stops taking its answer is disconnected)
        http=with_send_timeout(
            protocol_class(gw.settings.server, gw.metrics),
            gw.settings.server.send_timeout_s,
        ),
        proxy_headers=False,  # client addresses are not used; saves a layer per request
        server_header=False,
        # uvicorn waits this long for in-flight requests (streams too) after SIGTERM; it
        # passes the value to asyncio.wait_for, so a fraction of a second works.
        timeout_graceful_shutdown=gw.settings.server.shutdown_grace_s,  # type: ignore[arg-type]
    )


async def run_gateway(
    settings: Settings,
    *,
    log_level: str = "info",
    on_started: Callable[[uvicorn.Server, Gateway], None] | None = None,
    config_path: str | Path | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Start every backend (errors propagate: the caller prints one line), then serve until
    SIGINT/SIGTERM, then close the backends. SIGHUP reloads the keys (``config_path``'s
    ``server`` section and the key file), keeping the old ones if that fails. ``sock``: a bound
    socket to serve (a worker's, from ``standby.gateway.workers``) instead of binding one."""
    host, port = settings.server.host, settings.server.port
    # The port first: a port that is taken is said at once, not after minutes of loading a model.
    sock = sock if sock is not None else listening_socket(host, port)
    gw = Gateway(settings)
    gw.config_path = Path(config_path) if config_path is not None else None
    try:
        await gw.start()
    except BaseException:
        sock.close()
        raise
    hup = _on_sighup(gw)
    try:
        server = GatewayServer(uvicorn_config(gw, host, port, log_level))
        if on_started is not None:
            watcher = asyncio.create_task(_when_started(server, gw, on_started))
        await server.serve(sockets=[sock])
        if on_started is not None:
            watcher.cancel()
    finally:
        sock.close()
        if hup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await gw.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (uvicorn listens on it); an ``OSError`` naming the
    address when it cannot be had (taken, or not an address of this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def _on_sighup(gw: Gateway) -> bool:
    """Reload keys on SIGHUP (main thread only: a gateway in a test thread has no signals)."""
    if threading.current_thread() is not threading.main_thread():
        return False

    def reload() -> None:
        with contextlib.suppress(ConfigError):  # logged; the old keys stay
            reload_keys(gw)

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    return True


async def _when_started(
    server: uvicorn.Server, gw: Gateway, callback: Callable[[uvicorn.Server, Gateway], None]
) -> None:
    # uvicorn exposes start-up only as a flag.
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    callback(server, gw)


def serve(
    settings: Settings,
    *,
    log_level: str = "info",
    on_started: Callable[[uvicorn.Server, Gateway], None] | None = None,
    config_path: str | Path | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Blocking entry point for the CLI (uvloop when installed)."""

    def started(server: uvicorn.Server, gw: Gateway) -> None:
        freeze_startup_objects()
        if on_started is not None:
            on_started(server, gw)

    main = run_gateway(
        settings, log_level=log_level, on_started=started, config_path=config_path, sock=sock
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(main)
    else:
        uvloop.run(main)
