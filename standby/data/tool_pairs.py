"""Tool pairs: the one owner of how a tool-using answer is stored and read back.

A pair whose request offered tools is a row of TRL's conversational tool-calling dataset
format: ``messages`` in OpenAI's shape (assistant turns may carry ``tool_calls``, each
``{"id", "type": "function", "function": {"name", "arguments"}}`` with the arguments as JSON
text; ``tool`` turns carry ``tool_call_id`` and the function's ``name``), and a ``tools``
column, the functions offered as OpenAI's ``{"type": "function", "function": {...}}`` (JSON
text in exports, which TRL reads as such). The last message is the answer being learned: text,
or calls with empty content.

The materializer builds rows here (``tool_turns``); the trainer and batch inference read them
back as the protocol's ``Message`` and ``Tool`` (``messages_of``, ``tools_of``), so a row is
rendered by ``chat_format`` exactly as a request is when served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from standby.protocol import Message
from standby.store import InferenceCompletedData
from standby.store.envelope import CapturedToolCall, ChatMessage
from standby.tool_calls import Tool, ToolCall

Turn = dict[str, Any]


def uses_tools(d: InferenceCompletedData) -> bool:
    """Tools offered, called or answered in this event."""
    return bool(d.tools or d.tool_calls) or any(
        m.tool_calls or m.role == "tool" for m in d.messages
    )


def _calls(calls: Sequence[CapturedToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def _turn(m: ChatMessage) -> Turn:
    turn: Turn = {"role": m.role, "content": m.content}
    if m.tool_calls:
        turn["tool_calls"] = _calls(m.tool_calls)
    if m.role == "tool":
        turn |= {"tool_call_id": m.tool_call_id or "", "name": m.name or ""}
    return turn


def tool_turns(d: InferenceCompletedData) -> tuple[list[Turn], list[Turn]] | str:
    """(messages ending on the answer, tools) of a tool-using event, or why it cannot be a
    pair: one user turn, earlier assistant turns only as calls of this agent loop (a text turn
    may be the fallback's, and the no_robots convention needs one question), every call's
    arguments a JSON object (the trainer renders them as one)."""
    users = [m for m in d.messages if m.role == "user"]
    if len(users) != 1 or any(m.role == "assistant" and not m.tool_calls for m in d.messages):
        return "multi_turn"
    answer = ChatMessage(role="assistant", content=d.response, tool_calls=d.tool_calls or None)
    calls = [c for m in (*d.messages, answer) for c in m.tool_calls or ()]
    if not all(_is_object(c.arguments) for c in calls):
        return "bad_tool_arguments"
    tools = [Tool(t.name, t.description, t.parameters).openai() for t in d.tools or ()]
    return [_turn(m) for m in (*d.messages, answer)], tools


def _is_object(text: str) -> bool:
    try:
        return isinstance(orjson.loads(text or "{}"), dict)
    except orjson.JSONDecodeError:
        return False


def tool_prompt_id(base_id: str, context: Sequence[Turn], tools: Sequence[Turn]) -> str:
    """The dedup key of a tool pair: the plain prompt id of its question, plus the tools and
    the history before the answer (the same question with other tool results is another
    prompt). Call ids are left out (each conversation draws its own), texts are normalised
    and arguments compared as JSON, so the same step of two conversations is one prompt."""
    body = orjson.dumps(
        {"context": [_key(t) for t in context], "tools": list(tools)},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(base_id.encode() + b"\ntools\n" + body).hexdigest()


def _key(turn: Turn) -> Turn:
    from standby.data.pairs import normalise  # pairs imports this module

    calls = [
        (c["function"]["name"], orjson.loads(c["function"]["arguments"] or "{}"))
        for c in turn.get("tool_calls") or ()
    ]
    return {
        "role": turn["role"],
        "content": normalise(str(turn.get("content") or "")),
        "calls": calls,
        "name": turn.get("name"),
    }


def answer_chars(answer: Mapping[str, Any]) -> int:
    """An answer's length for the length filters: its text, or its calls' names and arguments
    when it has calls (a call's text is often empty)."""
    text = str(answer.get("content") or "")
    calls = answer.get("tool_calls") or []
    return len(text) + sum(
        len(c["function"]["name"]) + len(c["function"]["arguments"]) for c in calls
    )


# -- reading rows back -------------------------------------------------------------------------


def tools_of(value: Any) -> tuple[Tool, ...]:
    """The ``tools`` column (JSON text, a list, or null) as protocol Tools."""
    if value is None or value == "":
        return ()
    items = orjson.loads(value) if isinstance(value, str | bytes) else value
    out = []
    for item in items:
        f = item.get("function", item)
        out.append(Tool(f["name"], f.get("description"), f.get("parameters")))
    return tuple(out)


def calls_of(turn: Mapping[str, Any]) -> tuple[ToolCall, ...]:
    """A stored turn's tool calls (none, for a text turn)."""
    return tuple(
        ToolCall(str(c.get("id") or ""), c["function"]["name"], c["function"]["arguments"] or "{}")
        for c in turn.get("tool_calls") or ()
    )


def messages_of(turns: Sequence[Mapping[str, Any]]) -> tuple[Message, ...]:
    """Stored turns as the protocol's messages (what ``chat_format.tool_chat`` renders)."""
    return tuple(
        Message(
            t["role"],
            str(t.get("content") or ""),
            tool_calls=calls_of(t),
            tool_call_id=t.get("tool_call_id") if t["role"] == "tool" else None,
            name=t.get("name") if t["role"] == "tool" else None,
        )
        for t in turns
    )


def call_dicts(calls: Sequence[ToolCall]) -> list[dict[str, str]]:
    """Calls as the ``{name, arguments}`` records batch inference writes."""
    return [{"name": c.name, "arguments": c.arguments} for c in calls]


def calls_text(calls: Sequence[Mapping[str, str]]) -> str:
    """Calls written out for a reader (the judge, the report): ``name(arguments)``, one a line."""
    return "\n".join(f"{c['name']}({c['arguments']})" for c in calls)
