"""SIMULATION: what the simulated vLLM (``standby.sim.vllm``) answers, text or tool calls, the
way vLLM's OpenAI server does when started with ``--enable-auto-tool-choice
--tool-call-parser``. Not a model: what it calls is decided by these rules.

- ``tool_choice: none`` (or no tools): text.
- ``required``: a call of the first tool offered; a named function: a call of that function.
- ``auto`` (the default when tools are offered): a call of the first tool when the last message
  is the user's; text once the last message is a tool result, so an agent loop (ask, call,
  result, answer) ends. The text names the tool results it read.
- Parallel calls, one per tool offered, when ``parallel_tool_calls`` is not false, two or more
  tools are offered, the choice is ``auto`` or ``required``, and the last user message says
  ``in parallel``.
- One call per step, when the current turn's user message (the last one) says
  ``one at a time`` and the choice is ``auto``: the first offered tool with no result since that
  message, until every one has a result, then text (the Gemini simulator's ``-tool-chain``), so
  an agent loop can take several steps.
- ``response_format`` (when no call is made): ``json_object`` gets ``{"answer": <text>}``,
  ``json_schema`` an instance of its schema (``schema_instance``), as compact JSON streamed in
  pieces of ``JSON_PIECE`` characters (``max_tokens`` counts pieces); vLLM's 400s for a format
  it cannot read (an unknown ``type``, ``json_schema`` without its object or schema).
- Arguments are a minimal instance of the function's JSON Schema (``answers.example_for_schema``,
  strings ``"simulated"``).

Wire shapes copied from vLLM (``entrypoints/openai/serving_chat.py``): call ids
``chatcmpl-tool-<hex>``; a whole answer's message carries ``tool_calls`` (an empty list for
text) and ``refusal: null``; a forced call (``required`` or named) ends ``stop`` in a whole
answer, an ``auto`` one ``tool_calls``, and every streamed call ends ``tool_calls``. A streamed
call's first delta has ``index``, ``id``, ``type``, ``function.name`` and ``arguments: ""``;
the arguments follow in pieces. A bad request is a 400 in the OpenAI error shape:
``tool_choice`` without ``tools``, a named function that is not offered, ``auto`` on a server
started without auto tool choice (vLLM's own message), a ``tool`` message whose
``tool_call_id`` answers no earlier call.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from standby.sim.answers import example_for_schema
from standby.sim.schema_instance import json_answer

JSON_PIECE = 8  # characters of a JSON answer per streamed delta (and per "token")
PARALLEL_TRIGGER = "in parallel"
CHAIN_TRIGGER = "one at a time"
ARGUMENT_TEXT = "simulated"
AUTO_TOOL_CHOICE_OFF = (
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
)


class BadRequest(ValueError):
    """A request vLLM answers with 400; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class BadToolRequest(BadRequest):
    """A 400 about ``tools``, ``tool_choice`` or the tool messages of the history."""


@dataclass(frozen=True, slots=True)
class Calls:
    """The calls to answer with (OpenAI ``tool_calls`` items); ``forced``: the request made
    them (``required`` or a named function), so a whole answer ends ``stop``."""

    items: tuple[dict[str, Any], ...]
    forced: bool

    def chunks(self, pieces: int = 3) -> list[dict[str, Any]]:
        """The streamed ``delta``s: per call, a first one with its id and name, then the
        arguments in up to ``pieces`` parts."""
        deltas: list[dict[str, Any]] = []
        for index, call in enumerate(self.items):
            function = call["function"]
            head = {"name": function["name"], "arguments": ""}
            first = {"index": index, "id": call["id"], "type": "function", "function": head}
            deltas.append({"tool_calls": [first]})
            args: str = function["arguments"]
            step = max(1, -(-len(args) // pieces))
            for at in range(0, len(args), step):
                piece = {"index": index, "function": {"arguments": args[at : at + step]}}
                deltas.append({"tool_calls": [piece]})
        return deltas

    def tokens(self) -> int:
        return sum(len(c["function"]["arguments"]) // 4 + 1 for c in self.items)


def content_text(content: Any) -> str:
    """An OpenAI message's content as text (its text parts joined), for the simulators."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _functions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        return {}
    if not isinstance(tools, list):
        raise BadToolRequest("tools: Input should be a valid list", "tools")
    functions: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
            or not function.get("name")
        ):
            raise BadToolRequest(f"tools.{i}: a function tool with a name is required", "tools")
        functions[str(function["name"])] = function
    return functions


def check_history(messages: list[Any]) -> None:
    """Every ``tool`` message answers a call an earlier assistant message made."""
    called: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            continue
        for call in m.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                called.add(call["id"])
        if m.get("role") == "tool" and m.get("tool_call_id") not in called:
            raise BadToolRequest(
                f"messages.{i}: a 'tool' message must answer a tool call of an earlier "
                f"assistant message (tool_call_id {m.get('tool_call_id')!r} matches none)",
                f"messages.{i}.tool_call_id",
            )


def _turn(messages: list[Any]) -> tuple[str, set[str]]:
    """The current turn's user message (the last one) and the functions answered since it."""
    turn = [m for m in messages if isinstance(m, dict)]
    users = [i for i, m in enumerate(turn) if m.get("role") == "user"]
    if not users:
        return "", set()
    called: dict[Any, Any] = {}
    answered: set[str] = set()
    for m in turn[users[-1] + 1 :]:
        for call in m.get("tool_calls") or ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                called[call.get("id")] = call["function"].get("name")
        if m.get("role") == "tool" and m.get("tool_call_id") in called:
            answered.add(str(called[m["tool_call_id"]]))
    return content_text(turn[users[-1]].get("content")), answered


def _choice(body: dict[str, Any], functions: dict[str, Any]) -> tuple[str, str | None]:
    """(mode, named function) after vLLM's checks."""
    choice = body.get("tool_choice")
    if choice is not None and choice != "none" and not functions:
        raise BadToolRequest("When using `tool_choice`, `tools` must be set.", "tool_choice")
    if choice is None:
        return ("auto" if functions else "none"), None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name not in functions:
            raise BadToolRequest(
                "The tool specified in `tool_choice` does not match any of the specified `tools`",
                "tool_choice",
            )
        return "required", str(name)
    if choice not in ("none", "auto", "required"):
        raise BadToolRequest(
            '`tool_choice` must either be a named tool, "auto", "required", or "none".',
            "tool_choice",
        )
    return str(choice), None


def plan(body: dict[str, Any], *, auto_tool_choice: bool = True) -> Calls | None:
    """The calls ``body`` gets, or None for a text answer; ``BadToolRequest`` for a 400."""
    messages: list[Any] = body.get("messages") or []
    check_history(messages)
    functions = _functions(body)
    mode, named = _choice(body, functions)
    if mode == "auto" and not auto_tool_choice:
        raise BadToolRequest(AUTO_TOOL_CHOICE_OFF, "tool_choice")
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if mode == "auto" and functions:
        asked, answered = _turn(messages)
        if CHAIN_TRIGGER in asked.lower():
            left = [name for name in functions if name not in answered]
            return Calls((_call(left[0], functions[left[0]]),), forced=False) if left else None
    if mode == "none" or (mode == "auto" and last.get("role") != "user"):
        return None
    if named is not None:
        chosen = [named]
    elif (
        body.get("parallel_tool_calls") is not False
        and len(functions) > 1
        and PARALLEL_TRIGGER in content_text(last.get("content")).lower()
    ):
        chosen = list(functions)
    else:
        chosen = [next(iter(functions))]
    return Calls(tuple(_call(name, functions[name]) for name in chosen), forced=mode != "auto")


def _call(name: str, function: dict[str, Any]) -> dict[str, Any]:
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    arguments = example_for_schema(schema, ARGUMENT_TEXT)
    return {
        "id": f"chatcmpl-tool-{uuid.uuid4().hex}",
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def answer_after_tools(model: str, messages: list[Any]) -> str | None:
    """The text answer to a history that ends with tool results (None otherwise): it names
    the model and quotes the results it read."""
    results: list[str] = []
    for m in reversed(messages):
        if not isinstance(m, dict) or m.get("role") != "tool":
            break
        results.insert(0, content_text(m.get("content")))
    if not results:
        return None
    quoted = "; ".join(results)
    if len(quoted) > 80:
        quoted = quoted[:77] + "..."
    return f"Served by {model}. The tool said: {quoted}"


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer, whole (``message``, ``finish``) and streamed (``deltas``, ``stream_finish``)."""

    message: dict[str, Any]
    deltas: list[dict[str, Any]]
    finish: str
    stream_finish: str
    completion_tokens: int

    def usage(self) -> dict[str, int]:
        done = self.completion_tokens
        return {"prompt_tokens": 5, "completion_tokens": done, "total_tokens": 5 + done}


def structured(body: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """(a JSON answer is asked for, its schema) from ``response_format``; BadRequest for a
    format vLLM refuses."""
    fmt = body.get("response_format")
    if fmt is None:
        return False, None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise BadRequest(
            f"response_format.type: Input should be 'text', 'json_object' or 'json_schema' "
            f"(got {kind!r})",
            "response_format",
        )
    if kind == "text":
        return False, None
    if kind == "json_object":
        return True, None
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise BadRequest(
            "response_format.json_schema: an object with a 'schema' is required for json_schema",
            "response_format",
        )
    return True, schema


def reply(body: dict[str, Any], model: str, text: str, auto_tool_choice: bool = True) -> Reply:
    """The answer to ``body``: tool calls by the rules above, else JSON (``response_format``),
    else text (``text``, or the answer to the tool results the history ends with) cut to
    ``max_tokens`` words."""
    as_json, schema = structured(body)
    calls = plan(body, auto_tool_choice=auto_tool_choice)
    if calls is not None:
        message = {
            "role": "assistant",
            "content": "" if calls.forced else None,
            "refusal": None,
            "tool_calls": list(calls.items),
        }
        finish = "stop" if calls.forced else "tool_calls"
        return Reply(message, calls.chunks(), finish, "tool_calls", calls.tokens())
    text = answer_after_tools(model, body["messages"]) or text
    if as_json:
        raw = json_answer(schema, text)
        pieces = [raw[at : at + JSON_PIECE] for at in range(0, len(raw), JSON_PIECE)]
    else:
        pieces = [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    finish = "stop"
    if isinstance(limit, int) and 0 < limit < len(pieces):
        pieces, finish = pieces[:limit], "length"
    deltas = [{"content": p} for p in pieces]
    message = {"role": "assistant", "content": "".join(pieces), "refusal": None, "tool_calls": []}
    return Reply(message, deltas, finish, finish, len(pieces))
