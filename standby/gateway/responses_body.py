"""The Responses API's ``response`` object and its output items, built from an answer.

``ResponseShape`` holds what every body of one response repeats (its id, creation time, the
request's settings echoed back as OpenAI does); ``body()`` adds the status, output items and
usage. A whole answer (``Completion``) and a stream (``responses_stream``) build the same items:
a ``reasoning`` item with the thought summary when the request asked for one and the backend
gave it, a ``message`` with one ``output_text`` part when the answer has text, then one
``function_call`` item per call. Plain dicts, serialized with orjson, as chat's bodies are.
"""

from __future__ import annotations

import time
from typing import Any

from standby.gateway.responses_ids import ResponseIds
from standby.protocol import Completion, FinishReason, Usage
from standby.responses_models import ResponsesRequest
from standby.tool_calls import ToolCall

# Why an answer is incomplete, by its finish reason (the others complete it).
INCOMPLETE: dict[FinishReason, str] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}


class ResponseShape:
    """What every body of one response carries besides its output and status."""

    __slots__ = ("created_at", "echo", "id", "ids", "model")

    def __init__(self, req: ResponsesRequest) -> None:
        self.ids = ResponseIds(kept=req.store is not False)
        self.id = self.ids.id
        self.created_at = int(time.time())
        self.model = req.model
        reasoning = req.reasoning
        self.echo: dict[str, Any] = {
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "metadata": req.metadata or {},
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": req.previous_response_id,
            "reasoning": {"effort": reasoning.effort, "summary": reasoning.summarized()}
            if reasoning
            else None,
            "store": req.store is not False,  # kept unless the client says not to
            "temperature": req.temperature,
            "text": _text(req),
            "tool_choice": _tool_choice(req),
            "tools": [_tool(t) for t in req.tools or ()],
            "top_p": req.top_p,
            "truncation": "disabled",
            "user": req.user,
            "safety_identifier": req.safety_identifier,
        }
        if req.user is None:
            del self.echo["user"]  # a string when present, in OpenAI's schema

    def body(
        self,
        *,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None = None,
        incomplete: str | None = None,
        error: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "model": self.model,
            "output": output,
            **self.echo,
        }
        if usage is not None:
            body["usage"] = usage_body(usage)
        if extra is not None:
            body["standby"] = extra
        return body

    def finished(
        self,
        output: list[dict[str, Any]],
        finish: FinishReason,
        usage: Usage | None,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        """The body of a whole answer that ended for ``finish``."""
        incomplete = INCOMPLETE.get(finish)
        status = "incomplete" if incomplete else "completed"
        return self.body(
            status=status, output=output, usage=usage, incomplete=incomplete, extra=extra
        )


def whole_body(
    shape: ResponseShape, completion: Completion, extra: dict[str, Any]
) -> dict[str, Any]:
    """The ``response`` object of a whole answer."""
    done = "incomplete" if completion.finish_reason in INCOMPLETE else "completed"
    output: list[dict[str, Any]] = []
    if completion.reasoning:
        output.append(reasoning_item(shape.ids.item("rs"), [completion.reasoning], "completed"))
    if completion.text or not completion.tool_calls:
        output.append(message_item(shape.ids.item("msg"), completion.text, done))
    output.extend(
        call_item(shape.ids.item("fc"), call, "completed") for call in completion.tool_calls
    )
    return shape.finished(output, completion.finish_reason, completion.usage, extra)


def summary_part(text: str) -> dict[str, str]:
    return {"type": "summary_text", "text": text}


def reasoning_item(id: str, summary: list[str], status: str) -> dict[str, Any]:
    """A ``reasoning`` item: the thought summary as ``summary_text`` parts (no
    ``encrypted_content``: Gemini's thinking state travels in its calls' thought signatures)."""
    return {
        "id": id,
        "type": "reasoning",
        "summary": [summary_part(text) for text in summary],
        "status": status,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(id: str, text: str | None, status: str) -> dict[str, Any]:
    """An assistant ``message`` item: one ``output_text`` part (none while it is opening)."""
    content = [text_part(text)] if text is not None else []
    return {"id": id, "type": "message", "role": "assistant", "status": status, "content": content}


def call_item(id: str, call: ToolCall, status: str) -> dict[str, Any]:
    """A ``function_call`` item; Gemini's thought signature rides along as on chat
    (``extra_content.google.thought_signature``) and comes back with the history."""
    item: dict[str, Any] = {
        "id": id,
        "type": "function_call",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }
    if call.signature is not None:
        item["extra_content"] = {"google": {"thought_signature": call.signature}}
    return item


def usage_body(usage: Usage) -> dict[str, Any]:
    """Usage in the Responses API's words (its details always present, zero when unknown)."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens or 0,
            "cache_write_tokens": 0,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _tool(raw: dict[str, Any]) -> dict[str, Any]:
    """A function tool as the response echoes it (every field OpenAI's schema requires)."""
    return {
        "type": "function",
        "name": raw.get("name"),
        "description": raw.get("description"),
        "parameters": raw.get("parameters"),
        "strict": raw.get("strict"),
    }


def _text(req: ResponsesRequest) -> dict[str, Any]:
    """``text`` as echoed: the format, and the verbosity asked for (accepted, not applied: no
    backend kind has such a control; docs/responses.md)."""
    fmt = req.text.format if req.text is not None else None
    text: dict[str, Any] = {
        "format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}
    }
    verbosity = req.text.verbosity if req.text is not None else None
    if verbosity in ("low", "medium", "high"):
        text["verbosity"] = verbosity
    return text


def _tool_choice(req: ResponsesRequest) -> str | dict[str, str]:
    choice = req.tool_choice
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    return {"type": "function", "name": choice.name}
