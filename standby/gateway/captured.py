"""What capture keeps of an answered request (``Captured``) and its ``inference.completed``
data as plain JSON values (``data_of``), built on the request path at a dict literal's cost.

Tool fields are written only when the request used tools (offered functions, calls and
results in its history, calls in the answer), so a plain-text answer's event has exactly the
fields it had before tools existed. Likewise ``media`` only on a user turn that had images,
audio or files: their kind, type, size and digest, and their bytes only with ``keep_media``
(``media.keep_in_capture``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from standby.gateway.failover import Outcome
from standby.media import Media
from standby.protocol import ChatRequest, FinishReason, Message, Usage
from standby.store.envelope import (
    CapturedMediaJSON,
    CapturedToolCallJSON,
    ChatMessageJSON,
    InferenceCompletedJSON,
)
from standby.tool_calls import ToolCall


@dataclass(slots=True, eq=False)
class Captured:
    """What the request path hands over: plain references, no copying or validation."""

    request_id: str
    outcome: Outcome
    request: ChatRequest
    response: str
    finish_reason: FinishReason
    usage: Usage | None
    latency_s: float
    stream: bool
    key_id: str | None
    model_version: str | None
    tool_calls: tuple[ToolCall, ...] = ()


def data_of(item: Captured, *, keep_media: bool = False) -> InferenceCompletedJSON:
    """One answer's ``inference.completed`` data as plain values, not redacted yet: the writer
    redacts it, validates it and encodes its event before anything is written. The envelope's
    TypedDict names the fields; building it costs what a dict literal costs."""
    req, outcome, usage = item.request, item.outcome, item.usage
    data: InferenceCompletedJSON = {
        "request_id": item.request_id,
        "route": outcome.route,
        "backend": outcome.backend,
        "provenance": outcome.provenance,
        "model": outcome.route,
        "model_version": item.model_version,
        "messages": [
            _tool_message(m)
            if m.tool_calls or m.tool_call_id is not None
            else _media_message(m, keep_media)
            if m.parts
            else {"role": m.role, "content": m.content}
            for m in req.messages
        ],
        "params": req.params(),
        "response": item.response,
        "finish_reason": item.finish_reason,
        "usage": {
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
        },
        "latency_s": item.latency_s,
        "ttft_s": outcome.ttft_s,
        "fallback_reason": outcome.fallback_reason,
        "stream": item.stream,
        "key_id": item.key_id,
    }
    if req.tools:
        data["tools"] = [
            {"name": t.name, "description": t.description, "parameters": t.parameters}
            for t in req.tools
        ]
    if item.tool_calls:
        data["tool_calls"] = _calls(item.tool_calls)
    return data


def _tool_message(m: Message) -> ChatMessageJSON:
    """An assistant turn with calls, or a tool turn with the call it answers."""
    message: ChatMessageJSON = {"role": m.role, "content": m.content}
    if m.tool_calls:
        message["tool_calls"] = _calls(m.tool_calls)
    if m.tool_call_id is not None:
        message["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        message["name"] = m.name
    return message


def _media_message(m: Message, keep: bool) -> ChatMessageJSON:
    """A user turn with media: its text, and what each medium was (its bytes if ``keep``)."""
    return {"role": m.role, "content": m.content, "media": [_medium(x, keep) for x in m.media]}


def _medium(media: Media, keep: bool) -> CapturedMediaJSON:
    out: CapturedMediaJSON = {
        "kind": media.kind,
        "mime_type": media.mime_type,
        "bytes": len(media.data),
        "digest": media.digest(),
    }
    if keep:
        out["data"] = media.base64()
    return out


def _calls(calls: Iterable[ToolCall]) -> list[CapturedToolCallJSON]:
    return [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls]
