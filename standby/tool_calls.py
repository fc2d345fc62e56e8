"""Tools and tool calls, normalized: what a request offers (``Tool``, ``ToolChoice``), what an
answer calls (``ToolCall``, streamed as ``ToolCallDelta`` pieces), and their OpenAI wire shapes.

Every provider translates its vendor's shapes to and from these; the gateway writes them to the
client as OpenAI's ``tool_calls``. A call's ``arguments`` is JSON text, as in OpenAI's protocol
(a backend may stream it in pieces). ``signature`` is Gemini's ``thoughtSignature`` for the call:
the client receives it as ``extra_content.google.thought_signature`` (the shape of Google's own
OpenAI-compatible surface) and sends it back with the history, so a later turn on Gemini carries
the signature Gemini requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ToolMode = Literal["auto", "none", "required"]


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; ``parameters`` is its arguments' JSON Schema."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def openai(self) -> dict[str, Any]:
        optional: dict[str, Any] = {
            "description": self.description,
            "parameters": self.parameters,
            "strict": self.strict,
        }
        function = {"name": self.name, **{k: v for k, v in optional.items() if v is not None}}
        return {"type": "function", "function": function}


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``auto`` (the model decides), ``none`` (no call), ``required`` (at least one call);
    ``function`` set: exactly that function must be called (``mode`` is then ``required``)."""

    mode: ToolMode = "auto"
    function: str | None = None

    def openai(self) -> str | dict[str, Any]:
        if self.function is not None:
            return {"type": "function", "function": {"name": self.function}}
        return self.mode


AUTO = ToolChoice()  # the default: the model decides whether to call


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model made: ``id`` pairs it with the ``tool`` message that answers it."""

    id: str
    name: str
    arguments: str = "{}"
    signature: str | None = None

    def openai(self) -> dict[str, Any]:
        """The call as an OpenAI ``tool_calls[]`` item (whole answers and assistant history)."""
        body: dict[str, Any] = {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
        if self.signature is not None:
            body["extra_content"] = {"google": {"thought_signature": self.signature}}
        return body


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A streamed piece of the call at ``index`` (0-based, in the answer's order of calls). The
    first piece of a call has ``id`` and ``name``; ``arguments`` pieces concatenate."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    signature: str | None = None

    def openai(self) -> dict[str, Any]:
        """The piece as an OpenAI chunk's ``delta.tool_calls[]`` item."""
        body: dict[str, Any] = {"index": self.index}
        function: dict[str, Any] = {}
        if self.id is not None:
            body["id"] = self.id
            body["type"] = "function"
        if self.name is not None:
            function["name"] = self.name
        if self.arguments or self.name is not None:
            function["arguments"] = self.arguments
        if function:
            body["function"] = function
        if self.signature is not None:
            body["extra_content"] = {"google": {"thought_signature": self.signature}}
        return body


def whole_calls(deltas: list[ToolCallDelta]) -> tuple[ToolCall, ...]:
    """The calls that streamed pieces add up to (for capture and for a whole-answer view)."""
    calls: dict[int, dict[str, Any]] = {}
    for d in deltas:
        call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": [], "signature": None})
        for key in ("id", "name", "signature"):  # a later piece's value, where it has one
            if (value := getattr(d, key)) is not None:
                call[key] = value
        call["arguments"].append(d.arguments)
    return tuple(
        ToolCall(c["id"], c["name"], "".join(c["arguments"]) or "{}", c["signature"])
        for _, c in sorted(calls.items())
    )
