"""Limits on a request's head (request line and headers), enforced by the HTTP protocol
before the application, so before any key check.

uvicorn's httptools protocol keeps every header line it is sent until the blank line that ends
them, with no limit on size, count or time: a few connections sending endless header lines
fill the memory, and connections sending a byte a second (slow loris) are held forever. The
protocol here is uvicorn's with three checks added:

- the head may be at most ``max_header_bytes`` bytes: counted per read (``data_received``),
  so the bytes held for one connection are at most the limit plus one read of the transport
  (256 KiB at most); beyond it a 431;
- at most ``max_headers`` header lines: counted on the parsed list after each read and once
  more when the head ends, before the request is handed to the application; beyond it a 431;
- the head must be complete within ``header_timeout_s`` of the connection opening or, on a
  kept-alive connection, of the previous response's end; beyond it a 408 when part of a head
  came, else the connection is just closed. An idle kept-alive connection is closed earlier,
  by uvicorn's keep-alive timeout (5 s).

Each refusal closes the connection and is counted in
``standby_refused_request_heads_total{reason}`` (the refusal's code, or ``no_head`` for a
connection closed because nothing came). On the hot path the cost is an addition and two
comparisons per read and a clock read per request: the deadline is a number, checked by one
timer per connection (due at the deadline, or every ``header_timeout_s`` while a request is
being served), not a timer armed and cancelled per request."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from standby.config import ServerConfig
from standby.protocol import error_body

log = logging.getLogger("standby.gateway")


@dataclass(frozen=True, slots=True)
class HeadLimits:
    max_bytes: int
    max_count: int
    timeout_s: float

    @classmethod
    def of(cls, server: ServerConfig) -> HeadLimits:
        return cls(server.max_header_bytes, server.max_headers, server.header_timeout_s)


class RefusalCounter(Protocol):
    """Counts refusals by reason (the gateway's ``Metrics``)."""

    def refused_head(self, reason: str) -> None: ...


class _HeadRefused(Exception):
    """Raised inside the parser's callback to stop parsing a head that is refused."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of ``limits`` on each request's head.
    ``protocol_class`` makes a subclass carrying the limits (uvicorn builds the protocol
    itself, from its config, and passes nothing else)."""

    limits: ClassVar[HeadLimits]
    counter: ClassVar[RefusalCounter]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # from a message's end (or the connection's start) to its head's
        self._head_bytes = 0
        self._head_deadline: float | None = None  # None while a request is being served
        self._head_timer: asyncio.TimerHandle | None = None

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        timeout = self.limits.timeout_s
        self._head_deadline = self.loop.time() + timeout
        self._head_timer = self.loop.call_later(timeout, self._check_head_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, with the head counted and a refusal answered as such.
        self._unset_keepalive_if_required()
        if self._reading_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as e:
            if isinstance(e.__context__, _HeadRefused):  # httptools chains the callback's error
                self._too_many_headers()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._reading_head:
            if self._head_bytes > self.limits.max_bytes:
                self._refuse(
                    431,
                    f"Request line and headers are over the limit of {self.limits.max_bytes} "
                    "bytes.",
                    "headers_too_large",
                )
            elif self.headers is not None and len(self.headers) > self.limits.max_count:
                self._too_many_headers()

    # Parser callbacks

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_deadline = None
        if len(self.headers) > self.limits.max_count:
            raise _HeadRefused  # the application never sees this request
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True  # what comes next is the next request's head
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed its keep-alive timer: the connection stays open and no pipelined request
        # was started, so the next head's time starts now.
        if self.timeout_keep_alive_task is not None:
            self._head_deadline = self.loop.time() + self.limits.timeout_s

    # Deadline and refusals

    def _check_head_deadline(self) -> None:
        """The connection's one timer. A deadline is only ever set to ``timeout_s`` from now,
        and the timer is due by then (at the deadline, or ``timeout_s`` after a check that found
        none), so it never fires after a deadline it enforces."""
        self._head_timer = None
        if self.transport.is_closing():
            return
        deadline, now, timeout = self._head_deadline, self.loop.time(), self.limits.timeout_s
        if deadline is None:  # a request is being served: look again later
            self._head_timer = self.loop.call_later(timeout, self._check_head_deadline)
        elif now < deadline:
            self._head_timer = self.loop.call_at(deadline, self._check_head_deadline)
        elif self._reading_head and self._head_bytes:
            message = f"Request headers not received within {timeout:g}s."
            self._refuse(408, message, "header_timeout")
        else:  # nothing of a head came (or only the rest of a body nobody reads): just close
            log.debug("closed a connection that sent no request head within %gs", timeout)
            self.counter.refused_head("no_head")
            self.transport.close()

    def _too_many_headers(self) -> None:
        self._refuse(
            431,
            f"Request has more than {self.limits.max_count} header lines.",
            "too_many_headers",
        )

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer ``status`` with an OpenAI error body and close the connection. While an
        earlier response on this connection is still being sent (the client pipelined the
        refused head behind it), the connection is closed without an answer: a status line
        cannot go in the middle of another response."""
        log.debug("refused a request head with %d: %s", status, message)
        self.counter.refused_head(code)
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        body = orjson.dumps(error_body(message, type="invalid_request_error", code=code))
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        content.append(body)
        self.transport.write(b"".join(content))
        self.transport.close()


def protocol_class(server: ServerConfig, counter: RefusalCounter) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=``, with ``server``'s head limits; each
    refusal is counted by ``counter``."""

    class Limited(LimitedHttpToolsProtocol):
        limits = HeadLimits.of(server)

    Limited.counter = counter
    return Limited
