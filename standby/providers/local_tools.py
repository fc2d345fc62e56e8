"""Tool calls of the local model: Gemma 4's call syntax read back into ``ToolCall`` s.

Gemma 4 (Google's "Gemma 4 Prompt Formatting" page; the chat template of
``google/gemma-4-E2B-it``) writes a call as ``<|tool_call>call:NAME{key:value,...}<tool_call|>``:
strings between two ``<|"|>`` tokens (literal, no escapes), numbers, ``true``/``false`` bare,
objects ``{k:v,...}`` with bare keys, arrays ``[v,...]``. ``parse_call`` reads that into JSON
arguments; ``check_call`` accepts a call only if the request offered the function and its
arguments match the declared JSON Schema. Anything else is the backend failing
(``UpstreamProtocolError``: failover or a clear error follows), never a made-up success.

No constrained decoding: the kept libraries that do it for transformers (outlines,
lm-format-enforcer) are not dependencies here, and a JSON grammar would not even fit Gemma's
non-JSON call syntax. Instead a request that must call (``required`` or a named function) gets
the start of the call written for the model (``forced_prefix``), and every call is validated.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from standby.errors import UpstreamProtocolError
from standby.protocol import ChatRequest, Delta, FinishReason
from standby.tool_calls import Tool, ToolCall, ToolCallDelta

CALL_START, CALL_END = "<|tool_call>", "<tool_call|>"
QUOTE = '<|"|>'  # Gemma 4's string delimiter, one token
RESULT_START = "<|tool_response>"  # the model stops here to wait for a result

_NAME = re.compile(r"call:\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}


class SyntaxProblem(ValueError):
    """The text is not Gemma 4's call syntax (the message says where)."""


def parse_call(body: str) -> tuple[str, dict[str, Any]]:
    """The function name and arguments of ``call:NAME{...}`` (the text between the call
    tokens)."""
    match = _NAME.match(body.strip())
    if match is None:
        raise SyntaxProblem(f"expected call:NAME{{...}}, got {body[:40]!r}")
    text = body.strip()
    reader = _Reader(text, match.end())
    arguments = reader.value()
    reader.end()
    if not isinstance(arguments, dict):
        raise SyntaxProblem("the arguments are not an object")
    return match.group(1), arguments


class _Reader:
    """A recursive-descent reader of one value of Gemma 4's argument syntax."""

    def __init__(self, text: str, at: int) -> None:
        self.text = text
        self.at = at

    def _skip(self) -> None:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1

    def _peek(self, token: str) -> bool:
        self._skip()
        return self.text.startswith(token, self.at)

    def _take(self, token: str) -> None:
        if not self._peek(token):
            raise SyntaxProblem(f"expected {token!r} at {self.text[self.at : self.at + 20]!r}")
        self.at += len(token)

    def end(self) -> None:
        self._skip()
        if self.at != len(self.text):
            raise SyntaxProblem(f"unexpected text after the arguments: {self.text[self.at :]!r}")

    def value(self) -> Any:
        if self._peek(QUOTE):
            return self._string()
        if self._peek("{"):
            return self._object()
        if self._peek("["):
            return self._array()
        number = _NUMBER.match(self.text, self.at)
        if number:
            self.at = number.end()
            literal = number.group()
            return float(literal) if any(c in literal for c in ".eE") else int(literal)
        word = _KEY.match(self.text, self.at)
        if word and word.group() in _WORDS:
            self.at = word.end()
            return _WORDS[word.group()]
        raise SyntaxProblem(f"expected a value at {self.text[self.at : self.at + 20]!r}")

    def _string(self) -> str:
        self._take(QUOTE)
        close = self.text.find(QUOTE, self.at)
        if close < 0:
            raise SyntaxProblem("a string is not closed")
        s, self.at = self.text[self.at : close], close + len(QUOTE)
        return s

    def _object(self) -> dict[str, Any]:
        self._take("{")
        out: dict[str, Any] = {}
        while not self._peek("}"):
            if out:
                self._take(",")
            key = self._key()
            if key in out:
                raise SyntaxProblem(f"argument {key!r} given twice")
            self._take(":")
            out[key] = self.value()
        self._take("}")
        return out

    def _key(self) -> str:
        if self._peek(QUOTE):
            return self._string()
        word = _KEY.match(self.text, self.at)
        if word is None:
            raise SyntaxProblem(f"expected a key at {self.text[self.at : self.at + 20]!r}")
        self.at = word.end()
        return word.group()

    def _array(self) -> list[Any]:
        self._take("[")
        out: list[Any] = []
        while not self._peek("]"):
            if out:
                self._take(",")
            out.append(self.value())
        self._take("]")
        return out


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def check_call(
    backend: str, request: ChatRequest, name: str, arguments: dict[str, Any]
) -> ToolCall:
    """The call as a ``ToolCall`` when ``request`` allows it: the function was offered (and is
    the one ``tool_choice`` names, if it names one) and the arguments match its schema."""
    choice = request.tool_choice
    if choice.mode == "none":
        raise UpstreamProtocolError(backend, f"the model called {name!r} with tool_choice none")
    if choice.function is not None and name != choice.function:
        raise UpstreamProtocolError(
            backend, f"the model called {name!r}; tool_choice requires {choice.function!r}"
        )
    tool = next((t for t in request.tools if t.name == name), None)
    if tool is None:
        raise UpstreamProtocolError(backend, f"the model called an unknown function {name!r}")
    problem = schema_problem(tool, arguments)
    if problem is not None:
        raise UpstreamProtocolError(backend, f"the model's arguments for {name!r}: {problem}")
    return ToolCall(new_call_id(), name, json.dumps(arguments, ensure_ascii=False))


def schema_problem(tool: Tool, arguments: dict[str, Any]) -> str | None:
    """Why ``arguments`` do not match the tool's JSON Schema (None when they do)."""
    schema = tool.parameters if tool.parameters is not None else {"type": "object"}
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        return f"the declared schema is invalid ({e.message})"
    error = jsonschema.exceptions.best_match(cls(schema).iter_errors(arguments))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message}" + (f" (at {where})" if where else "")


def forced_prefix(request: ChatRequest) -> str:
    """The start of the answer written for the model: a request that must call a function
    begins with the call tokens (and the function's name when it is named)."""
    choice = request.tool_choice
    if not request.tools or request.continue_final or choice.mode != "required":
        return ""
    if choice.function is not None:
        return f"{CALL_START}call:{choice.function}{{"
    return f"{CALL_START}call:"


def tool_support(tokenizer: Any, model: str, renders_tools: bool) -> str | None:
    """Why the local model cannot answer requests with tools (None when it can): its chat
    template must render tools, and its output must be Gemma 4's call syntax."""
    if not renders_tools:
        return f"the chat template of {model} has no tool support"
    vocab = tokenizer.get_vocab()
    if not all(t in vocab for t in (CALL_START, CALL_END, QUOTE)):
        return (
            f"the chat template of {model} declares tools, but the local backend reads only "
            f"Gemma 4's tool-call syntax ({CALL_START}call:NAME{{...}}{CALL_END})"
        )
    return None


class ToolStream:
    """Splits the model's raw output (special tokens kept) into text and whole, checked calls.

    Text streams as it comes, less special tokens (as plain decoding would drop them) and less
    a tail that may begin a call or a special token. From ``<|tool_call>`` on, output is held
    until the call is complete and valid; it then comes out as two ``ToolCallDelta`` s (id and
    name; arguments).
    ``finish`` says how the answer ends: ``tool_calls`` when calls were made.
    """

    def __init__(self, backend: str, request: ChatRequest, specials: tuple[str, ...]) -> None:
        self.backend = backend
        self.request = request
        self.specials = tuple(sorted((s for s in specials if s), key=len, reverse=True))
        self.held = (CALL_START, *self.specials)  # a tail that may begin one of these waits
        self.pending = ""
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> list[Delta]:
        """The deltas ``text`` (the next piece of output) completes."""
        self.pending += text
        out: list[Delta] = []
        while True:
            start = self.pending.find(CALL_START)
            if start < 0:
                keep = _prefix_len(self.pending, self.held)
                self._text(out, self.pending[: len(self.pending) - keep])
                self.pending = self.pending[len(self.pending) - keep :]
                return out
            end = self.pending.find(CALL_END, start)
            if end < 0:
                self._text(out, self.pending[:start])
                self.pending = self.pending[start:]
                return out
            self._text(out, self.pending[:start])
            self._call(out, self.pending[start + len(CALL_START) : end])
            self.pending = self.pending[end + len(CALL_END) :]

    def finish(self, reason: FinishReason) -> tuple[list[Delta], FinishReason]:
        """The last deltas and the answer's finish reason, once the output has ended."""
        if self.pending.startswith(CALL_START):
            raise UpstreamProtocolError(
                self.backend,
                "the model's tool call was cut off"
                + (" at max_tokens" if reason == "length" else " (no closing token)"),
            )
        out: list[Delta] = []
        self._text(out, self.pending)
        self.pending = ""
        if self.request.tool_choice.mode == "required" and not self.calls:
            raise UpstreamProtocolError(self.backend, "tool_choice requires a call; none was made")
        return out, ("tool_calls" if self.calls and reason == "stop" else reason)

    def _text(self, out: list[Delta], text: str) -> None:
        for special in self.specials:
            text = text.replace(special, "")
        if text:
            out.append(Delta(text=text))

    def _call(self, out: list[Delta], body: str) -> None:
        if self.calls and self.request.parallel_tool_calls is False:
            return  # one call asked for: the first one stands, later ones are dropped
        try:
            name, arguments = parse_call(body)
        except SyntaxProblem as e:
            raise UpstreamProtocolError(self.backend, f"unreadable tool call: {e}") from None
        call = check_call(self.backend, self.request, name, arguments)
        index = len(self.calls)
        self.calls.append(call)
        out.append(Delta(tool_calls=(ToolCallDelta(index, id=call.id, name=call.name),)))
        out.append(Delta(tool_calls=(ToolCallDelta(index, arguments=call.arguments),)))


def _prefix_len(text: str, tokens: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of one of ``tokens``."""
    best = 0
    for token in tokens:
        for n in range(min(len(token) - 1, len(text)), best, -1):
            if text.endswith(token[:n]):
                best = n
                break
    return best
