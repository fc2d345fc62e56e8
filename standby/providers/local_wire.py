"""The wire format of the hop between a gateway worker and the host's model process
(``standby serve --workers N`` with a ``local`` backend): the one owner of what crosses that
unix socket, read by ``local_host`` (the model process) and ``local_remote`` (each worker).

A frame is a 4-byte big-endian length and an orjson body. A worker opens one connection per
request and sends ``{"op": "stream", "request": ...}``; the model process answers with
``{"delta": ...}`` frames as the model produces them, then ``{"end": true}``, or an
``{"error": ...}`` frame at any point. Closing the connection early cancels the generation (the
model process stops its row and frees its slot). A worker also keeps one ``{"op": "watch"}``
connection, on which the model process sends ``{"state": ...}`` at once and again whenever it
changes (loaded, queue full, the version served).

Errors keep their type across the hop (failover classifies by type): each ``UpstreamError``
subclass the local provider raises is sent by name and raised again as that class; any other
becomes an ``UpstreamError`` with the same message.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson

from standby.capabilities import Need
from standby.errors import (
    BackendBusy,
    Unsupported,
    UpstreamBlocked,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
)
from standby.media import Media
from standby.protocol import ChatRequest, Delta, Message, Usage
from standby.tool_calls import Tool, ToolCall, ToolCallDelta, ToolChoice

MAX_FRAME = 256 * 1024 * 1024  # a request of 16 MiB of media is ~22 MiB in base64
_OPTIONS = orjson.OPT_NON_STR_KEYS  # logit_bias has int keys

# The errors that keep their type: (backend, message) is all each one carries.
ERRORS: dict[str, type[UpstreamError]] = {
    cls.__name__: cls
    for cls in (
        UpstreamError,
        UpstreamProtocolError,
        UpstreamConnectError,
        UpstreamBlocked,
        BackendBusy,
        Unsupported,
    )
}


class FrameError(Exception):
    """A frame over ``MAX_FRAME`` or a body that is not JSON: the connection is unusable."""


def _default(value: Any) -> Any:
    if isinstance(value, bytes):  # a Media's data
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot send {type(value).__name__} to the model process")


def frame(message: Any) -> bytes:
    body = orjson.dumps(message, default=_default, option=_OPTIONS)
    return len(body).to_bytes(4, "big") + body


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message, or None when the other side closed the connection between frames.
    ``asyncio.IncompleteReadError`` when it closed inside one; ``FrameError`` on a bad one."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise
    size = int.from_bytes(head, "big")
    if size > MAX_FRAME:
        raise FrameError(f"frame of {size} bytes (at most {MAX_FRAME})")
    try:
        return orjson.loads(await reader.readexactly(size))
    except orjson.JSONDecodeError as e:
        raise FrameError(f"frame is not JSON: {e}") from None


# -- requests ----------------------------------------------------------------------------------

_SPECIAL = {"messages", "stop", "tools", "tool_choice", "logit_bias"}
_PLAIN = tuple(f.name for f in dataclasses.fields(ChatRequest) if f.name not in _SPECIAL)


def stream_message(request: ChatRequest) -> bytes:
    """The frame that asks for ``request``'s answer (dataclasses are orjson's own)."""
    return frame({"op": "stream", "request": request})


def request_of(data: dict[str, Any]) -> ChatRequest:
    bias = data.get("logit_bias")
    return ChatRequest(
        messages=tuple(_message(m) for m in data["messages"]),
        stop=tuple(data["stop"]),
        tools=tuple(Tool(**t) for t in data["tools"]),
        tool_choice=ToolChoice(**data["tool_choice"]),
        logit_bias={int(k): v for k, v in bias.items()} if bias else None,
        **{k: data[k] for k in _PLAIN},
    )


def _message(data: dict[str, Any]) -> Message:
    return Message(
        role=data["role"],
        content=data["content"],
        tool_calls=tuple(ToolCall(**c) for c in data["tool_calls"]),
        tool_call_id=data["tool_call_id"],
        name=data["name"],
        parts=tuple(p if isinstance(p, str) else _media(p) for p in data["parts"]),
    )


def _media(data: dict[str, Any]) -> Media:
    return Media(**{**data, "data": base64.b64decode(data["data"])})


# -- answers -----------------------------------------------------------------------------------

END = frame({"end": True})


def delta_message(delta: Delta) -> bytes:
    return frame({"delta": delta})


def delta_of(data: dict[str, Any]) -> Delta:
    usage = data["usage"]
    return Delta(
        text=data["text"],
        finish_reason=data["finish_reason"],
        usage=Usage(**usage) if usage is not None else None,
        model_version=data["model_version"],
        tool_calls=tuple(ToolCallDelta(**t) for t in data["tool_calls"]),
        logprobs=data["logprobs"],
        index=data["index"],
    )


def error_message(error: UpstreamError) -> bytes:
    kind = type(error).__name__ if type(error).__name__ in ERRORS else "UpstreamError"
    return frame({"error": {"type": kind, "backend": error.backend, "message": error.message}})


def error_of(data: dict[str, Any]) -> UpstreamError:
    return ERRORS.get(data["type"], UpstreamError)(data["backend"], data["message"])


# -- the model process's state -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostState:
    """What a worker needs to know without asking per request: whether the model takes a
    request now (loaded, queue not full), what it can do (``local_support``), and what it
    serves (``hotswap.ServedModel``'s fields, and the registry version it follows, if any)."""

    ready: bool
    no_tools: str | None
    supports: tuple[Need, ...]
    vocab_size: int | None
    version: str
    base_model: str
    adapter: str | None
    following: str | None = None


def state_message(state: HostState) -> bytes:
    return frame({"state": state})


def state_of(data: dict[str, Any]) -> HostState:
    return HostState(**{**data, "supports": tuple(data["supports"])})
