"""Gemini's own REST shapes for the SIMULATED Gemini: ``GenerateContentRequest`` parsing and
``GenerateContentResponse`` bodies / stream chunks, rendered once per distinct answer and then
only stamped with a ``responseId``."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from standby.sim.answers import Answer, SimRequest, count_tokens
from standby.sim.gemini_candidates import variant
from standby.sim.gemini_config import cached_tokens, thought_tokens
from standby.sim.gemini_history import Tooling, native_history, native_tools, with_tooling
from standby.sim.gemini_media import check_blob
from standby.sim.gemini_tools import native_parts, respond
from standby.sim.logprobs import gemini_result, tokens
from standby.sim.surface import (
    GOOGLE_STATUS,
    BadRequest,
    Outcome,
    Surface,
    Turn,
    cached_by_body,
    get_field,
    json_response,
    retry_info,
)

SAFETY_RATINGS = (
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
)
_TOP_LEVEL = frozenset(
    {
        *("contents", "model", "labels", "tools"),
        *("systemInstruction", "system_instruction", "generationConfig", "generation_config"),
        *("safetySettings", "safety_settings", "toolConfig", "tool_config"),
        *("cachedContent", "cached_content", "serviceTier", "service_tier"),
    }
)
_SCHEMA_KEYS = (
    "responseJsonSchema",
    "response_json_schema",
    "responseSchema",
    "response_schema",
    "_responseJsonSchema",
)


def _texts(parts: Any, where: str) -> tuple[str, bool, int]:
    """The text of a content's parts, whether it has function calls or responses, and the
    prompt tokens of its ``inlineData`` blobs (checked: ``gemini_media``)."""
    if not isinstance(parts, list):
        raise BadRequest(f"{where}.parts must be a list")
    out = []
    tooled = False
    blobs = 0
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            raise BadRequest(f"{where}.parts[] must be objects")
        blob = get_field(part, "inlineData", "inline_data")
        if blob is not None:
            blobs += check_blob(blob, f"{where}.parts[{j}].inline_data")
            continue
        text = part.get("text")
        if text is not None:
            if not isinstance(text, str):
                raise BadRequest(f"{where}.parts[].text must be a string")
            if not part.get("thought"):
                out.append(text)
        elif len(part) > 1 or "thoughtSignature" not in part:
            tooled = True  # functionCall / functionResponse (checked in gemini_history)
    return "".join(out), tooled, blobs


def _num(config: dict[str, Any], camel: str, snake: str, lo: float, hi: float) -> Any:
    value = get_field(config, camel, snake)
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi
    ):
        raise BadRequest(f"generationConfig.{camel} must be a number in [{lo:g}, {hi:g}]")
    return value


@cached_by_body
def parse_native(body: bytes) -> SimRequest:
    """A ``GenerateContentRequest`` body as a :class:`SimRequest`; raises BadRequest."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("Invalid JSON payload received.") from None
    if not isinstance(data, dict):
        raise BadRequest("Invalid JSON payload received: expected an object.")
    for name in data:
        if name not in _TOP_LEVEL:
            raise BadRequest(
                f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
            )
    contents = data.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    tokens, prompt, prefill, seen, tooled = 0, "", None, [], False
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise BadRequest(f"contents[{i}] must be an object")
        role = content.get("role") or "user"
        if role not in ("user", "model", "function"):
            raise BadRequest(f"Please use a valid role: user, model. (got {role!r})")
        text, tool_parts, blob_tokens = _texts(content.get("parts"), f"contents[{i}]")
        tooled = tooled or tool_parts
        tokens += count_tokens(text) + blob_tokens
        seen.append(text)
        if role == "model":
            prefill = text if prefill is None else prefill + text
        else:
            prefill = None
            if role == "user" and (text or not tool_parts):
                prompt = text  # function responses keep the user's prompt
    system = get_field(data, "systemInstruction", "system_instruction")
    cached = 0
    if system is not None:
        if not isinstance(system, dict):
            raise BadRequest("systemInstruction must be a Content object")
        instruction, _, _ = _texts(system.get("parts"), "systemInstruction")
        tokens += count_tokens(instruction)
        cached = cached_tokens(count_tokens(instruction))
        seen.insert(0, instruction)
    req = SimRequest(prompt, prefill, tokens, context="\n".join(seen), cached_tokens=cached)
    if tooled or "tools" in data or "toolConfig" in data or "tool_config" in data:
        declared = native_tools(data)
        history = native_history(contents) if tooled else Tooling()
        req = with_tooling(req, declared, history)
    config = get_field(data, "generationConfig", "generation_config")
    if config is None:
        return req
    if not isinstance(config, dict):
        raise BadRequest("generationConfig must be an object")
    return _with_config(config, req)


def _with_config(config: dict[str, Any], req: SimRequest) -> SimRequest:
    _num(config, "temperature", "temperature", 0, 2)
    _num(config, "topP", "top_p", 0, 1)
    max_tokens = _num(config, "maxOutputTokens", "max_output_tokens", 1, 1 << 31)
    candidates = _num(config, "candidateCount", "candidate_count", 1, 8)
    logprobs = get_field(config, "responseLogprobs", "response_logprobs") is True
    top = _num(config, "logprobs", "logprobs", 0, 20)
    if top is not None and not logprobs:
        raise BadRequest("generationConfig.logprobs is only valid with responseLogprobs: true")
    stop = get_field(config, "stopSequences", "stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or len(stop) > 5:
            raise BadRequest("generationConfig.stopSequences must be a list of at most 5")
        if not all(isinstance(s, str) and s for s in stop):
            raise BadRequest("generationConfig.stopSequences must be non-empty strings")
    mime = get_field(config, "responseMimeType", "response_mime_type") or "text/plain"
    if mime not in ("text/plain", "application/json", "text/x.enum"):
        raise BadRequest(f"generationConfig.responseMimeType {mime!r} is not supported")
    schema = next((config[k] for k in _SCHEMA_KEYS if k in config), None)
    if schema is not None and mime != "application/json":
        raise BadRequest("responseSchema needs responseMimeType application/json")
    thinking = get_field(config, "thinkingConfig", "thinking_config")
    thoughts = isinstance(thinking, dict) and (
        get_field(thinking, "includeThoughts", "include_thoughts") is True
    )
    return replace(
        req,
        max_tokens=None if max_tokens is None else int(max_tokens),
        stop=tuple(stop or ()),
        json_mode=mime == "application/json",
        schema=schema if isinstance(schema, dict) else None,
        candidates=int(candidates or 1),
        include_thoughts=thoughts,
        thinking=thought_tokens(config),
        logprobs=logprobs,
        top_logprobs=None if top is None else int(top),
    )


def _envelope(
    req: SimRequest,
    outcome: Outcome,
    candidates: list[dict[str, Any]],
    used: int | None,
    thoughts: int = 0,
) -> dict[str, Any]:
    body: dict[str, Any]
    if outcome == "blocked":
        body = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": SAFETY_RATINGS}}
    elif outcome == "safety":
        body = {
            "candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": SAFETY_RATINGS}]
        }
    elif outcome == "recitation":
        body = {"candidates": [{"finishReason": "RECITATION", "index": 0}]}
    elif outcome == "malformed_call":
        message = "Malformed function call: the call did not parse (simulated fault)."
        cand = {"finishReason": "MALFORMED_FUNCTION_CALL", "finishMessage": message, "index": 0}
        body = {"candidates": [cand]}
    else:
        body = {"candidates": candidates}
    usage = {"promptTokenCount": req.prompt_tokens}
    if req.cached_tokens:
        usage["cachedContentTokenCount"] = req.cached_tokens
    if used is not None:
        usage["candidatesTokenCount"] = used
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
    usage["totalTokenCount"] = req.prompt_tokens + (used or 0) + (thoughts if used else 0)
    body["usageMetadata"] = usage
    return body


@lru_cache(maxsize=2048)
def _templates(
    model: str, req: SimRequest, outcome: Outcome, ans: Answer | None, stream: bool
) -> tuple[bytes, ...]:
    """Each body of the answer as JSON without its closing brace (``responseId`` goes there)."""
    if ans is None:
        bodies = [_envelope(req, outcome, [], None)]
    else:
        answers = [variant(ans, i, req.json_mode) for i in range(req.candidates)]
        per_body = _candidates(model, req, answers, stream)
        last = len(per_body) - 1
        used = sum(a.tokens for a in answers)
        thoughts = (count_tokens(ans.thought) if ans.thought else 0) + req.thinking
        bodies = [
            _envelope(req, outcome, cands, used, thoughts)
            if i == last
            else _envelope(req, outcome, cands, None)
            for i, cands in enumerate(per_body)
        ]
    for body in bodies:
        body["modelVersion"] = model
    return tuple(orjson.dumps(b)[:-1] for b in bodies)


def _candidates(
    model: str, req: SimRequest, answers: list[Answer], stream: bool
) -> list[list[dict[str, Any]]]:
    """The candidates of each body: every answer's next piece while it has one, its
    ``finishReason`` with its last (``gemini_candidates``)."""
    chunks = [native_parts(model, a, stream) for a in answers]
    steps = [0] * len(answers)
    bodies: list[list[dict[str, Any]]] = []
    for at in range(max(len(c) for c in chunks)):
        cands = []
        for i, (a, parts) in enumerate(zip(answers, chunks, strict=True)):
            if at >= len(parts):
                continue
            cand: dict[str, Any] = {"content": {"parts": parts[at], "role": "model"}}
            if at == len(parts) - 1:
                cand["finishReason"] = a.finish
            if req.logprobs:
                text = "".join(p.get("text", "") for p in parts[at] if not p.get("thought"))
                pieces = tokens(text)
                cand["logprobsResult"] = gemini_result(pieces, req.top_logprobs, steps[i], i)
                steps[i] += len(pieces)
            cand["index"] = i
            cands.append(cand)
        bodies.append(cands)
    return bodies


class NativeSurface(Surface):
    """Gemini's own REST shapes."""

    def error(self, status: int, message: str, retry_after: int | None = None) -> web.Response:
        err: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": GOOGLE_STATUS.get(status, "UNKNOWN"),
        }
        if retry_after is not None:
            err["details"] = [retry_info(retry_after)]
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return json_response({"error": err}, status, headers)

    def _render(self, turn: Turn, outcome: Outcome, stream: bool) -> list[bytes]:
        ans = respond(turn.model, turn.req, outcome, turn.scripted)
        # SimRequest's hash leaves out the schema; the answer (in the key) reflects it.
        tail = b',"responseId":"sim-%08x"}' % turn.seq
        return [t + tail for t in _templates(turn.model, turn.req, outcome, ans, stream)]

    def body(self, turn: Turn, outcome: Outcome) -> bytes:
        return self._render(turn, outcome, False)[0]

    def frames(
        self, turn: Turn, outcome: Outcome, extra: dict[str, Any]
    ) -> tuple[list[bytes], int]:
        bodies = self._render(turn, outcome, True)
        if extra.get("sse"):
            return [b"data: " + b + b"\r\n\r\n" for b in bodies], len(bodies) - 1
        # Without alt=sse Gemini streams one JSON array, an element at a time.
        frames = [b",\r\n" + b for b in bodies]
        frames[0] = b"[" + bodies[0]
        frames[-1] += b"]"
        return frames, len(bodies) - 1

    def malformed_frame(self, extra: dict[str, Any]) -> bytes:
        return b"data: {simulated malformed chunk\r\n\r\n" if extra.get("sse") else b"[{malformed"


NATIVE = NativeSurface()
