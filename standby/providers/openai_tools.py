"""Tools on the OpenAI chat-completions wire, for the providers that speak it (``openai``-type
servers, litellm): the request's tools and its history out, the calls of an answer in.

What goes out: ``tools`` / ``tool_choice`` / ``parallel_tool_calls`` when tools are offered;
assistant turns with ``tool_calls`` (``content`` null when the turn is only calls); ``tool``
turns with ``tool_call_id`` and the function's ``name`` (vLLM's and TGI's chat templates read
it; OpenAI's cookbook sends it too). A call's Gemini signature goes out only to Gemini's own
OpenAI surface, as ``extra_content.google.thought_signature``; other servers never see it.

What comes in is checked, because a call the client cannot run is no answer: a call without
an id or a name, or whose arguments (once all pieces have arrived) are not a JSON object, is
an ``UpstreamProtocolError``: the router fails over instead of passing it on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from standby.errors import UpstreamProtocolError
from standby.protocol import ChatRequest, FinishReason, Message
from standby.providers.gemini_wire import PLACEHOLDER_SIGNATURE
from standby.providers.openai_media import content_parts
from standby.tool_calls import ToolCall, ToolCallDelta


def is_gemini_surface(base_url: str) -> bool:
    """Whether ``base_url`` is Gemini's OpenAI-compatible surface (Google AI's
    ``.../v1beta/openai``, Vertex AI's ``.../endpoints/openapi``, or a simulator at such a
    path): the one kind of server that wants thought signatures back."""
    path = urlsplit(base_url).path.rstrip("/")
    return path.endswith(("/v1beta/openai", "/endpoints/openapi"))


def tool_fields(request: ChatRequest) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls``; none when no tools are offered
    (vLLM refuses a ``tool_choice`` without ``tools``)."""
    if not request.tools:
        return {}
    fields: dict[str, Any] = {
        "tools": [t.openai() for t in request.tools],
        "tool_choice": request.tool_choice.openai(),
    }
    if request.parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = request.parallel_tool_calls
    return fields


def wire_messages(messages: tuple[Message, ...], *, signatures: bool) -> list[dict[str, Any]]:
    """The history as OpenAI messages; ``signatures``: the server is Gemini's surface."""
    return [_wire_message(m, signatures) for m in messages]


def _wire_message(m: Message, signatures: bool) -> dict[str, Any]:
    if m.role == "tool":
        out: dict[str, Any] = {"role": "tool", "tool_call_id": m.tool_call_id}
        if m.name is not None:
            out["name"] = m.name
        out["content"] = m.content
        return out
    if not m.tool_calls:
        return {"role": m.role, "content": content_parts(m.parts) if m.parts else m.content}
    calls = [_wire_call(c, signatures) for c in m.tool_calls]
    if signatures and all(c.signature is None for c in m.tool_calls):
        # Gemini checks the first call of each step; this turn was not Gemini's, so it gets
        # Google's documented placeholder instead of a 400.
        calls[0]["extra_content"] = {"google": {"thought_signature": PLACEHOLDER_SIGNATURE}}
    return {"role": "assistant", "content": m.content or None, "tool_calls": calls}


def _wire_call(call: ToolCall, signatures: bool) -> dict[str, Any]:
    body = call.openai()
    if not signatures:
        body.pop("extra_content", None)
    return body


def finish_with_calls(finish: FinishReason, has_calls: bool) -> FinishReason:
    """The finish reason the client gets. vLLM ends a forced call (``tool_choice`` required or
    named) with ``stop``, OpenAI with ``stop`` too; an answer with calls ends with
    ``tool_calls`` here. A server's ``tool_calls`` with no call in the answer is a plain stop."""
    if has_calls and finish == "stop":
        return "tool_calls"
    if not has_calls and finish == "tool_calls":
        return "stop"
    return finish


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _signature(raw: dict[str, Any]) -> str | None:
    extra = raw.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    return _text(google.get("thought_signature")) if isinstance(google, dict) else None


def _arguments_text(backend: str, value: Any) -> str:
    """A piece of arguments as text; a server that sends the arguments object itself (not JSON
    text) is taken at its word."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    raise UpstreamProtocolError(backend, "tool call arguments are not text")


def checked_arguments(backend: str, name: str, arguments: str) -> str:
    """``arguments`` when it is a JSON object (empty counts as ``{}``); else the backend's
    failure."""
    if not arguments.strip():
        return "{}"
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(
            backend, f"tool call {name!r}: arguments are not valid JSON"
        ) from None
    if not isinstance(value, dict):
        raise UpstreamProtocolError(backend, f"tool call {name!r}: arguments are not an object")
    return arguments


def parse_calls(backend: str, raw: Any) -> tuple[ToolCall, ...]:
    """``message.tool_calls`` of a whole answer, checked."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise UpstreamProtocolError(backend, "message.tool_calls is not a list")
    calls = []
    for item in raw:
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict):
            raise UpstreamProtocolError(backend, "a tool call has no function")
        call_id, name = _text(item.get("id")), _text(function.get("name"))
        if call_id is None or name is None:
            raise UpstreamProtocolError(backend, "a tool call has no id or no function name")
        arguments = _arguments_text(backend, function.get("arguments"))
        arguments = checked_arguments(backend, name, arguments)
        calls.append(ToolCall(call_id, name, arguments, _signature(item)))
    return tuple(calls)


@dataclass(slots=True)
class _Call:
    index: int  # the gateway's: 0, 1, ... in the order the calls began
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class StreamedCalls:
    """The tool calls of one stream, assembled from ``delta.tool_calls`` pieces: the first
    piece of a call must carry its id and name (a server may send the whole call in it);
    later pieces add arguments. Indices are renumbered 0, 1, ... in the order calls begin."""

    __slots__ = ("_backend", "_by_key", "_calls")

    def __init__(self, backend: str) -> None:
        self._backend = backend
        self._by_key: dict[int, _Call] = {}
        self._calls: list[_Call] = []

    def __bool__(self) -> bool:
        return bool(self._calls)

    def feed(self, raw: Any) -> list[ToolCallDelta]:
        """The pieces of one chunk's ``delta.tool_calls``, checked and renumbered."""
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise UpstreamProtocolError(self._backend, "delta.tool_calls is not a list")
        return [self._piece(item) for item in raw]

    def _piece(self, item: Any) -> ToolCallDelta:
        if not isinstance(item, dict):
            raise UpstreamProtocolError(self._backend, "a tool call piece is not an object")
        function = item.get("function") or {}
        if not isinstance(function, dict):
            raise UpstreamProtocolError(self._backend, "a tool call piece's function is wrong")
        call_id, name = _text(item.get("id")), _text(function.get("name"))
        arguments = _arguments_text(self._backend, function.get("arguments"))
        call = self._call_for(item.get("index"), call_id)
        if call is None:
            if call_id is None or name is None:
                raise UpstreamProtocolError(
                    self._backend, "a streamed tool call began without an id or a function name"
                )
            call = _Call(len(self._calls), call_id, name)
            self._calls.append(call)
            if isinstance(key := item.get("index"), int):
                self._by_key[key] = call
            call.arguments.append(arguments)
            return ToolCallDelta(call.index, call_id, name, arguments, _signature(item))
        if (call_id is not None and call_id != call.id) or (name is not None and name != call.name):
            raise UpstreamProtocolError(self._backend, "a streamed tool call changed its id/name")
        call.arguments.append(arguments)
        return ToolCallDelta(call.index, arguments=arguments, signature=_signature(item))

    def _call_for(self, index: Any, call_id: str | None) -> _Call | None:
        """The call a piece continues; None when it begins one. Without an ``index`` (some
        servers omit it) a new id begins a call and a piece without an id continues the last."""
        if isinstance(index, int) and not isinstance(index, bool):
            known = self._by_key.get(index)
            if known is not None and call_id is not None and call_id != known.id:
                return None  # servers that send each whole call at index 0: a new id, a new call
            return known
        if index is not None:
            raise UpstreamProtocolError(self._backend, "a tool call piece's index is not a number")
        if call_id is not None:
            return next((c for c in self._calls if c.id == call_id), None)
        return self._calls[-1] if self._calls else None

    def finish(self) -> tuple[ToolCall, ...]:
        """The whole calls once the stream has ended; arguments that do not add up to a JSON
        object are the backend's failure."""
        return tuple(
            ToolCall(c.id, c.name, checked_arguments(self._backend, c.name, "".join(c.arguments)))
            for c in self._calls
        )


def merge_pieces(pieces: list[ToolCallDelta]) -> tuple[ToolCallDelta, ...]:
    """Consecutive pieces of the same call as one (the events of one network read go to the
    client as one chunk)."""
    out: list[ToolCallDelta] = []
    for p in pieces:
        last = out[-1] if out else None
        if last is not None and last.index == p.index and p.id is None:
            out[-1] = ToolCallDelta(
                last.index,
                last.id,
                last.name,
                last.arguments + p.arguments,
                last.signature or p.signature,
            )
        else:
            out.append(p)
    return tuple(out)
