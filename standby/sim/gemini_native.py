"""Gemini's own REST shapes for the SIMULATED Gemini: ``GenerateContentRequest`` parsing and
``GenerateContentResponse`` bodies / stream chunks, rendered once per distinct answer and then
only stamped with a ``responseId``."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from standby.sim.answers import (
    Answer,
    SimRequest,
    answer,
    count_tokens,
    scripted_answer,
    split_chunks,
)
from standby.sim.surface import (
    GOOGLE_STATUS,
    BadRequest,
    Outcome,
    Surface,
    cached_by_body,
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


def _texts(parts: Any, where: str) -> str:
    if not isinstance(parts, list):
        raise BadRequest(f"{where}.parts must be a list")
    out = []
    for part in parts:
        if not isinstance(part, dict):
            raise BadRequest(f"{where}.parts[] must be objects")
        text = part.get("text")
        if text is not None:
            if not isinstance(text, str):
                raise BadRequest(f"{where}.parts[].text must be a string")
            out.append(text)
    return "".join(out)


def _get(config: dict[str, Any], camel: str, snake: str) -> Any:
    # proto3 JSON accepts both spellings; litellm sends snake_case, google-genai camelCase.
    value = config.get(camel)
    return config.get(snake) if value is None else value


def _num(config: dict[str, Any], camel: str, snake: str, lo: float, hi: float) -> Any:
    value = _get(config, camel, snake)
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
    tokens, prompt, prefill, seen = 0, "", None, []
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise BadRequest(f"contents[{i}] must be an object")
        role = content.get("role") or "user"
        if role not in ("user", "model", "function"):
            raise BadRequest(f"Please use a valid role: user, model. (got {role!r})")
        text = _texts(content.get("parts"), f"contents[{i}]")
        tokens += count_tokens(text)
        seen.append(text)
        if role == "user":
            prompt, prefill = text, None
        elif role == "model":
            prefill = text if prefill is None else prefill + text
    system = _get(data, "systemInstruction", "system_instruction")
    if system is not None:
        if not isinstance(system, dict):
            raise BadRequest("systemInstruction must be a Content object")
        instruction = _texts(system.get("parts"), "systemInstruction")
        tokens += count_tokens(instruction)
        seen.insert(0, instruction)
    context = "\n".join(seen)
    config = _get(data, "generationConfig", "generation_config")
    if config is None:
        return SimRequest(prompt, prefill, tokens, context=context)
    if not isinstance(config, dict):
        raise BadRequest("generationConfig must be an object")
    return _with_config(config, SimRequest(prompt, prefill, tokens, context=context))


def _with_config(config: dict[str, Any], req: SimRequest) -> SimRequest:
    _num(config, "temperature", "temperature", 0, 2)
    _num(config, "topP", "top_p", 0, 1)
    max_tokens = _num(config, "maxOutputTokens", "max_output_tokens", 1, 1 << 31)
    candidates = _num(config, "candidateCount", "candidate_count", 1, 8)
    stop = _get(config, "stopSequences", "stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or len(stop) > 5:
            raise BadRequest("generationConfig.stopSequences must be a list of at most 5")
        if not all(isinstance(s, str) and s for s in stop):
            raise BadRequest("generationConfig.stopSequences must be non-empty strings")
    mime = _get(config, "responseMimeType", "response_mime_type") or "text/plain"
    if mime not in ("text/plain", "application/json", "text/x.enum"):
        raise BadRequest(f"generationConfig.responseMimeType {mime!r} is not supported")
    schema = next((config[k] for k in _SCHEMA_KEYS if k in config), None)
    if schema is not None and mime != "application/json":
        raise BadRequest("responseSchema needs responseMimeType application/json")
    return SimRequest(
        req.prompt,
        req.prefill,
        req.prompt_tokens,
        max_tokens=None if max_tokens is None else int(max_tokens),
        stop=tuple(stop or ()),
        json_mode=mime == "application/json",
        schema=schema if isinstance(schema, dict) else None,
        candidates=int(candidates or 1),
        context=req.context,
    )


def _envelope(
    req: SimRequest, outcome: Outcome, text: str, finish: str | None, used: int | None
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
    else:
        content = {"parts": [{"text": text}], "role": "model"}
        body = {
            "candidates": [
                {"content": content, "finishReason": finish, "index": i}
                if finish
                else {"content": content, "index": i}
                for i in range(req.candidates)
            ]
        }
    usage = {"promptTokenCount": req.prompt_tokens}
    if used is not None:
        usage["candidatesTokenCount"] = used
    usage["totalTokenCount"] = req.prompt_tokens + (used or 0)
    body["usageMetadata"] = usage
    return body


@lru_cache(maxsize=2048)
def _templates(
    model: str, req: SimRequest, outcome: Outcome, ans: Answer | None, stream: bool
) -> tuple[bytes, ...]:
    """Each body of the answer as JSON without its closing brace (``responseId`` goes there)."""
    if ans is None:
        bodies = [_envelope(req, outcome, "", None, None)]
    elif not stream:
        bodies = [_envelope(req, outcome, ans.text, ans.finish, ans.tokens * req.candidates)]
    else:
        pieces = split_chunks(ans.text)
        last = len(pieces) - 1
        bodies = [
            _envelope(
                req,
                outcome,
                piece,
                ans.finish if i == last else None,
                ans.tokens * req.candidates if i == last else None,
            )
            for i, piece in enumerate(pieces)
        ]
    for body in bodies:
        body["modelVersion"] = model
    return tuple(orjson.dumps(b)[:-1] for b in bodies)


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

    def _render(
        self,
        model: str,
        seq: int,
        req: SimRequest,
        outcome: Outcome,
        stream: bool,
        scripted: str | None,
    ) -> list[bytes]:
        ans = scripted_answer(scripted) if scripted is not None else None
        if ans is None and outcome == "ok":
            ans = answer(req)
        # SimRequest's hash leaves out the schema; the answer (in the key) reflects it.
        tail = b',"responseId":"sim-%08x"}' % seq
        return [t + tail for t in _templates(model, req, outcome, ans, stream)]

    def body(
        self, model: str, seq: int, req: SimRequest, outcome: Outcome, scripted: str | None = None
    ) -> bytes:
        return self._render(model, seq, req, outcome, False, scripted)[0]

    def frames(
        self,
        model: str,
        seq: int,
        req: SimRequest,
        outcome: Outcome,
        extra: dict[str, Any],
        scripted: str | None = None,
    ) -> tuple[list[bytes], int]:
        bodies = self._render(model, seq, req, outcome, True, scripted)
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
