"""Gemini's REST shapes for the Gemini provider: the normalized request as a
``GenerateContentRequest`` body, and a ``GenerateContentResponse`` (whole or one stream chunk)
reduced to what the gateway needs. A user turn's images, audio and files become ``inlineData``
parts among its text parts, in order. Parts marked ``thought: true`` (thought summaries, given
when ``thinkingConfig.includeThoughts`` asked for them: ``gemini_controls``) are kept apart
from the answer's text (``Choice.thought``).

Tools: ``tools`` become ``functionDeclarations`` with ``parametersJsonSchema`` (full JSON
Schema), ``tool_choice`` becomes ``toolConfig.functionCallingConfig`` (AUTO / ANY / NONE,
``allowedFunctionNames`` for a named function). An assistant message's calls become a ``model``
content's ``functionCall`` parts, each with the ``thoughtSignature`` it came with; consecutive
``tool`` messages become one ``user`` content of ``functionResponse`` parts.

Thought signatures, as Google documents them (https://ai.google.dev/gemini-api/docs/thought-
signatures, "Signatures in function calling parts" and the FAQ; Vertex AI's page says the same):
Gemini 3 returns a ``thoughtSignature`` on the first ``functionCall`` part of each step (for
parallel calls only on the first one) and validates strictly the function calls of the *current
turn* only: every model step since the last user message that is not a function response must
carry its signature on its first ``functionCall`` part, or the request is a 400. Earlier turns
are not validated. For calls Gemini did not make (here: calls made by the fallback during an
outage) Google documents a placeholder, ``skip_thought_signature_validator`` (or
``context_engineering_is_the_way_to_go``), set in the signature field. So: a signature that came
back with a call goes out on that call's part; a current-turn step whose first call has none
gets the placeholder on that part; nothing else is added.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from standby.errors import UpstreamProtocolError
from standby.protocol import ChatRequest, FinishReason, Message, Usage
from standby.providers.gemini_controls import NO_CONTROLS, Controls
from standby.providers.gemini_logprobs import openai_logprobs
from standby.tool_calls import Tool, ToolCall, ToolChoice

# Google's documented signature for function calls Gemini did not generate (works on the Gemini
# API and on Vertex AI), sent as the literal value of the field.
PLACEHOLDER_SIGNATURE = "skip_thought_signature_validator"

# Gemini's finish reasons (google-genai's ``types.FinishReason``; a test walks every member),
# each with its OpenAI finish reason. Unlisted (newer) reasons read as ``stop``.
# The answer was cut at a token limit (CONTINUATION: the per-request limit, more could follow).
LENGTH_REASONS = frozenset({"MAX_TOKENS", "CONTINUATION"})
# The model refused, or a filter stopped it (of the text or of an image; Model Armor; an
# escalation rule; an account limited for policy violations): ``content_filter``.
BLOCKED_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "OTHER",
        "LANGUAGE",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "IMAGE_OTHER",
        "MODEL_ARMOR",
        "ESCALATION",
        "PUP_LIMITED_DISABLED",
    }
)
# A failed answer (a broken tool call or response, an image it was meant to make and did not):
# a backend failure, never an empty success.
FAILED_REASONS = frozenset(
    {
        "MALFORMED_FUNCTION_CALL",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MISSING_THOUGHT_SIGNATURE",
        "MALFORMED_RESPONSE",
        "NO_IMAGE",
    }
)


def request_body(request: ChatRequest, controls: Controls = NO_CONTROLS) -> dict[str, Any]:
    """Map the normalized request onto Gemini's ``GenerateContentRequest``, with the
    backend's ``controls`` (thinking, penalties, safety settings, service tier).

    A conversation of system messages only is sent as one user turn of their text: Gemini
    refuses an empty ``contents``, and the instruction is then all there is to answer."""
    system: list[dict[str, str]] = []
    contents: list[dict[str, Any]] = []
    called = False
    for m in request.messages:
        role = m.role
        if role == "system":
            system.append({"text": m.content})
        elif role == "user":
            contents.append({"role": "user", "parts": _user_parts(m)})
        elif role == "assistant" and not m.tool_calls:
            contents.append({"role": "model", "parts": [{"text": m.content}]})
        else:
            called = True
            _tool_turn(contents, m)
    if called:
        _sign_current_turn(contents)
    if not contents:
        contents, system = [{"role": "user", "parts": system}], []
    gen = _generation(request)
    controls.generation(request, gen)
    body: dict[str, Any] = {"contents": contents, "generationConfig": gen}
    if system:
        body["systemInstruction"] = {"parts": system}
    controls.body(request, body)
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
        config = _tool_config(request.tool_choice)
        if config is not None:
            body["toolConfig"] = config
    return body


def _generation(request: ChatRequest) -> dict[str, Any]:
    gen: dict[str, Any] = {"candidateCount": request.n}
    if request.logprobs:
        gen["responseLogprobs"] = True
        if request.top_logprobs:
            gen["logprobs"] = request.top_logprobs
    if request.temperature is not None:
        gen["temperature"] = request.temperature
    if request.top_p is not None:
        gen["topP"] = request.top_p
    if request.max_tokens is not None:
        gen["maxOutputTokens"] = request.max_tokens
    if request.stop:
        gen["stopSequences"] = list(request.stop)
    if request.seed is not None:
        gen["seed"] = request.seed
    fmt = request.response_format
    if fmt is not None:
        gen["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if fmt["type"] == "json_schema" and schema:
            gen["responseJsonSchema"] = schema
    return gen


def _user_parts(m: Message) -> list[dict[str, Any]]:
    """A user turn's parts: its text, or with media its texts and ``inlineData`` blobs (base64
    bytes and MIME type: images, audio, PDFs) in the order the client sent them."""
    if not m.parts:
        return [{"text": m.content}]
    return [
        {"text": p}
        if isinstance(p, str)
        else {"inlineData": {"mimeType": p.mime_type, "data": p.base64()}}
        for p in m.parts
        if not isinstance(p, str) or p
    ]


def _declaration(tool: Tool) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        declaration["description"] = tool.description
    if tool.parameters is not None:
        declaration["parametersJsonSchema"] = tool.parameters
    return declaration


def _tool_config(choice: ToolChoice) -> dict[str, Any] | None:
    if choice.function is not None:
        config = {"mode": "ANY", "allowedFunctionNames": [choice.function]}
    elif choice.mode == "required":
        config = {"mode": "ANY"}
    elif choice.mode == "none":
        config = {"mode": "NONE"}
    else:
        return None  # AUTO is Gemini's default
    return {"functionCallingConfig": config}


def _tool_turn(contents: list[dict[str, Any]], m: Message) -> None:
    """Append an assistant message with calls, or a tool result (grouped with the results
    right before it into one ``user`` content, as Gemini expects)."""
    if m.role == "tool":
        response = {"name": m.name, "id": m.tool_call_id, "response": _result(m)}
        result = {"functionResponse": response}
        last = contents[-1] if contents else None
        if last is not None and last["role"] == "user" and "functionResponse" in last["parts"][0]:
            last["parts"].append(result)
        else:
            contents.append({"role": "user", "parts": [result]})
        return
    parts: list[dict[str, Any]] = [{"text": m.content}] if m.content else []
    for call in m.tool_calls:
        fc = {"name": call.name, "args": _args(call), "id": call.id}
        part: dict[str, Any] = {"functionCall": fc}
        if call.signature is not None:
            part["thoughtSignature"] = call.signature
        parts.append(part)
    contents.append({"role": "model", "parts": parts})


def _result(m: Message) -> dict[str, Any]:
    """A tool's content as ``functionResponse.response``: its JSON object, else the text."""
    text = m.content
    if text.lstrip().startswith("{"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(value, dict):
                return value
    return {"result": text}


def _args(call: ToolCall) -> dict[str, Any]:
    """A history call's arguments as an object (the request reader checked they are one)."""
    value = orjson.loads(call.arguments or "{}")
    return value if isinstance(value, dict) else {}


def _sign_current_turn(contents: list[dict[str, Any]]) -> None:
    """Put the placeholder on the first ``functionCall`` part of each step of the current turn
    that has no signature (the rule in the module docstring)."""
    for content in reversed(contents):
        parts = content["parts"]
        if content["role"] == "user":
            if any("functionResponse" not in p for p in parts):
                return  # the user's message that began the current turn
            continue
        first = next((p for p in parts if "functionCall" in p), None)
        if first is not None and "thoughtSignature" not in first:
            first["thoughtSignature"] = PLACEHOLDER_SIGNATURE


def usage(meta: Any) -> Usage | None:
    """``usageMetadata`` as OpenAI counts it: thoughts are completion tokens (and reported as
    ``reasoning_tokens``), cached tokens are part of the prompt (``cached_tokens``)."""
    if not isinstance(meta, dict):
        return None
    thoughts = meta.get("thoughtsTokenCount")
    cached = meta.get("cachedContentTokenCount")
    return Usage(
        prompt_tokens=int(meta.get("promptTokenCount", 0)),
        completion_tokens=int(meta.get("candidatesTokenCount", 0)) + int(thoughts or 0),
        reasoning_tokens=None if thoughts is None else int(thoughts),
        cached_tokens=None if cached is None else int(cached),
    )


def new_call_id() -> str:
    """An id for a call Gemini gave none (made once per call, so stable across a stream)."""
    return "call_" + os.urandom(12).hex()


def tool_call(part: dict[str, Any], backend: str) -> ToolCall:
    """A ``functionCall`` part as a call: Gemini's ``id`` when given, compact JSON arguments,
    the part's ``thoughtSignature``."""
    call = part["functionCall"]
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise UpstreamProtocolError(backend, "functionCall part without a name")
    args = call.get("args")
    if args is not None and not isinstance(args, dict):
        raise UpstreamProtocolError(backend, "functionCall args is not an object")
    signature = part.get("thoughtSignature")
    return ToolCall(
        call.get("id") or new_call_id(),
        call["name"],
        orjson.dumps(args or {}).decode(),
        signature if isinstance(signature, str) else None,
    )


class Choice:
    """One candidate of a response: its text, calls, finish, logprobs (OpenAI's items),
    ``thought`` (the text of its ``thought: true`` parts: a thought summary, given when
    ``thinkingConfig.includeThoughts`` asked for it; never part of ``text``) and ``index``
    among the ``candidateCount`` asked for (a stream chunk may carry only some)."""

    __slots__ = ("blocked", "calls", "finish", "index", "logprobs", "text", "thought")

    def __init__(self, cand: Any, backend: str) -> None:
        if not isinstance(cand, dict):
            raise UpstreamProtocolError(backend, "a candidate is not an object")
        # proto3 JSON leaves a zero out: a candidate without ``index`` is candidate 0.
        index = cand.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 8:
            raise UpstreamProtocolError(backend, "a candidate's index is not 0..7")
        self.index: int = index
        found = cand.get("logprobsResult")
        self.logprobs = openai_logprobs(found, backend) if found is not None else None
        self.text = ""
        self.calls: tuple[ToolCall, ...] = ()
        self.finish: FinishReason | None = None
        self.blocked: str | None = None
        parts = (cand.get("content") or {}).get("parts") or ()
        texts = []
        calls = []
        thoughts = []
        for p in parts:
            if "functionCall" in p:
                calls.append(tool_call(p, backend))
            elif p.get("thought"):
                thoughts.append(p.get("text", ""))
            else:
                texts.append(p.get("text", ""))
        self.text = "".join(texts)
        self.thought = "".join(thoughts)
        if calls:
            self.calls = tuple(calls)
        reason = cand.get("finishReason")
        if reason is None or reason == "FINISH_REASON_UNSPECIFIED":
            return
        if reason in LENGTH_REASONS:
            self.finish = "length"
        elif reason in BLOCKED_REASONS:
            self.finish = "content_filter"
            self.blocked = f"finishReason {reason}"
        elif reason in FAILED_REASONS:
            message = cand.get("finishMessage")
            raise UpstreamProtocolError(
                backend, f"finishReason {reason}" + (f": {message}" if message else "")
            )
        else:
            self.finish = "tool_calls" if calls else "stop"


class Parsed:
    """One ``GenerateContentResponse`` reduced to what the gateway needs: its ``choices`` (one
    per candidate, by index) and, for the first of them, ``text`` / ``calls`` / ``finish``.
    ``blocked`` says why the prompt or any candidate was refused. ``meta`` is the raw
    ``usageMetadata`` (``usage`` reads it): a stream repeats it on every chunk, and only the
    last one's counts are kept, so a stream reads it once, at its end."""

    __slots__ = ("blocked", "calls", "choices", "finish", "meta", "text", "version")

    def __init__(self, payload: Any, backend: str) -> None:
        if not isinstance(payload, dict):
            raise UpstreamProtocolError(backend, "response is not a JSON object")
        self.meta: Any = payload.get("usageMetadata")
        self.version: str | None = payload.get("modelVersion")
        self.text = ""
        self.calls: tuple[ToolCall, ...] = ()
        self.finish: FinishReason | None = None
        self.blocked: str | None = None
        self.choices: tuple[Choice, ...] = ()
        feedback = payload.get("promptFeedback")
        candidates = payload.get("candidates")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self.blocked = f"prompt blocked: {feedback['blockReason']}"
            self.finish = "content_filter"
            return
        if not candidates:
            if "usageMetadata" in payload:  # a usage-only trailer chunk
                return
            self.blocked = "no candidates"
            self.finish = "content_filter"
            return
        if not isinstance(candidates, list):
            raise UpstreamProtocolError(backend, "candidates is not a list")
        if len(candidates) == 1:  # the usual answer: no sorting, no search (hot path)
            first = Choice(candidates[0], backend)
            self.choices = (first,)
            self.blocked = first.blocked
        else:
            choices = [Choice(c, backend) for c in candidates]
            self.choices = tuple(sorted(choices, key=lambda c: c.index))
            first = self.choices[0]
            self.blocked = next((c.blocked for c in self.choices if c.blocked), None)
        self.text, self.calls, self.finish = first.text, first.calls, first.finish

    @property
    def usage(self) -> Usage | None:
        return usage(self.meta)
