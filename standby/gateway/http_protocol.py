"""The gateway's HTTP/1.1 connections: uvicorn's httptools protocol plus a send timeout.

uvicorn never gives up on a client that stops reading. A streamed answer waits in ``send``
(flow control) for as long as the client likes, holding its concurrency slot; a whole answer
is handed to the transport in one write and the response counts as done, while its bytes wait
in memory; and closing such a connection (``transport.close()``) waits for those bytes to be
taken first, so neither the socket nor its buffers are ever freed. Here, whenever bytes wait
for a client (the transport's buffer went over its high-water mark, or a finished response left
some unsent), the client must take at least ``PROGRESS_BYTES`` of them (or all) every
``server.send_timeout_s``; one that does not has its connection reset. That frees the socket,
the transport's buffer and the kernel's send buffer (up to ``net.ipv4.tcp_wmem``'s maximum,
4 MiB by default) at once, and uvicorn then tells the application the client is gone: a
stream's ``send`` returns, the stream ends as an error and gives its slot back.

Nothing runs for a client that keeps up: the watch starts only when the transport pauses
writing, so the hot path pays no timer per chunk.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

log = logging.getLogger("standby.gateway")

# asyncio's and uvloop's default marks: writes pause above 64 KiB unsent and resume at 16 KiB.
PROGRESS_BYTES = 16 << 10
"""What a client must take per ``send_timeout_s`` while bytes wait for it (about 550 bytes a
second at the default 30 s: a trickle below that is treated as a stall)."""

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset, unsent bytes dropped


class SendTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose connections are aborted when the client stops taking
    the answer for ``send_timeout_s`` (a class attribute: :func:`with_send_timeout` sets it).
    Its methods call ``super()``, so it combines with other subclasses of uvicorn's protocol."""

    send_timeout_s: float = 30.0

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._stall: asyncio.TimerHandle | None = None
        self._unsent = 0  # the bytes waiting when the current watch started

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unwatch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.get_write_buffer_size():  # a whole answer the client has not taken
            self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._unwatch()
        super().connection_lost(exc)

    def _watch(self) -> None:
        if self._stall is None:
            self._unsent = self.transport.get_write_buffer_size()
            self._stall = self.loop.call_later(self.send_timeout_s, self._check)

    def _unwatch(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _check(self) -> None:
        self._stall = None
        unsent = self.transport.get_write_buffer_size()
        if not unsent:
            return
        if self._unsent - unsent >= PROGRESS_BYTES:  # slow, but reading: watch on
            self._watch()
            return
        log.info(
            "client took %d of %d bytes waiting for it in %gs: connection aborted",
            self._unsent - unsent,
            self._unsent,
            self.send_timeout_s,
        )
        sock = self.transport.get_extra_info("socket")
        if sock is not None:  # a reset, not a close: the kernel drops its send buffer too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.transport.abort()


def with_send_timeout(
    base: type[HttpToolsProtocol], send_timeout_s: float
) -> type[SendTimeoutProtocol]:
    """The protocol class for uvicorn's ``http`` setting: ``base`` (uvicorn's httptools
    protocol, or a subclass with other checks of its own) with this server's send timeout."""
    name = f"SendTimeout{base.__name__}"
    made = type(name, (SendTimeoutProtocol, base), {"send_timeout_s": send_timeout_s})
    return cast(type[SendTimeoutProtocol], made)
