"""The OpenAI-compatible surface of the SIMULATED Gemini (``/v1beta/openai/chat/completions``):
the same answers and faults as the native surface, in OpenAI's request, response, chunk and
error shapes."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from standby.sim.answers import Answer, SimRequest, count_tokens, split_chunks
from standby.sim.gemini_candidates import variant
from standby.sim.gemini_history import Tooling, openai_history, openai_tools, with_tooling
from standby.sim.gemini_media import OPENAI_MEDIA, check_openai_part
from standby.sim.gemini_tools import respond
from standby.sim.surface import (
    GOOGLE_STATUS,
    BadRequest,
    Outcome,
    Surface,
    Turn,
    cached_by_body,
    json_response,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
_DONE = b"data: [DONE]\n\n"


def _content(message: dict[str, Any], i: int) -> str:
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        for j, p in enumerate(content):  # images, audio, PDFs: checked, not looked at
            if isinstance(p, dict) and p.get("type") in OPENAI_MEDIA:
                check_openai_part(p, f"messages[{i}].content[{j}]")
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)  # type: ignore[arg-type]
    raise BadRequest(f"messages[{i}].content must be a string or a list of content parts")


def _int(data: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"{name} must be an integer in [{lo}, {hi}]")
    return value


@cached_by_body
def parse(body: bytes) -> tuple[str, SimRequest, bool, bool]:
    """A chat-completions body as ``(model, request, stream, include_usage)``; raises
    BadRequest."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    model = data.get("model")
    messages = data.get("messages")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    tokens, prompt, prefill, seen, tooled = 0, "", None, [], False
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{i}] must be an object")
        role, text = message.get("role"), _content(message, i)
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise BadRequest(f"messages[{i}].role {role!r} is not supported")
        tokens += count_tokens(text)
        seen.append(text)
        if role == "user":
            prompt, prefill = text, None
        elif role == "tool" or message.get("tool_calls"):
            tooled, prefill = True, None
        elif role == "assistant":
            prefill = text if prefill is None else prefill + text
    max_tokens = _int(data, "max_completion_tokens", 1, 1 << 31)
    if max_tokens is None:
        max_tokens = _int(data, "max_tokens", 1, 1 << 31)
    stop = data.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stops is not None and (
        not isinstance(stops, list)
        or len(stops) > 5
        or not all(isinstance(s, str) and s for s in stops)
    ):
        raise BadRequest("stop must be a string or a list of at most 5 non-empty strings")
    json_mode, schema = _response_format(data.get("response_format"))
    req = SimRequest(
        prompt,
        prefill,
        tokens,
        max_tokens=max_tokens,
        stop=tuple(stops or ()),
        json_mode=json_mode,
        schema=schema,
        candidates=_int(data, "n", 1, 8) or 1,
        context="\n".join(seen),
    )
    if tooled or "tools" in data or "tool_choice" in data:
        declared = openai_tools(data)
        history = openai_history(messages) if tooled else Tooling()
        req = with_tooling(req, declared, history)
    options = data.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return model.removeprefix("models/"), req, data.get("stream") is True, include_usage


def _response_format(fmt: Any) -> tuple[bool, dict[str, Any] | None]:
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return False, None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        raise BadRequest("response_format.type must be text, json_object or json_schema")
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return True, schema if isinstance(schema, dict) else None


def _usage(req: SimRequest, used: int) -> dict[str, int]:
    return {
        "prompt_tokens": req.prompt_tokens,
        "completion_tokens": used,
        "total_tokens": req.prompt_tokens + used,
    }


def _tool_calls(ans: Answer) -> list[dict[str, Any]]:
    """The calls in OpenAI's shape, the signature where Google's surface puts it."""
    out = []
    for call in ans.calls:
        item: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.args},
        }
        if call.signature is not None:
            item["extra_content"] = {"google": {"thought_signature": call.signature}}
        out.append(item)
    return out


def _finish(ans: Answer | None, outcome: Outcome) -> str:
    if ans is None:
        # MALFORMED_FUNCTION_CALL has no OpenAI finish reason: an empty answer, "stop".
        return "stop" if outcome == "malformed_call" else "content_filter"
    return "tool_calls" if ans.calls else _FINISH[ans.finish]


@lru_cache(maxsize=2048)
def _body_template(model: str, req: SimRequest, ans: Answer | None, outcome: Outcome) -> bytes:
    """The whole answer as JSON without its closing brace (``id`` and ``created`` go there);
    with ``n`` > 1 the choices are the native surface's candidates (``gemini_candidates``)."""
    answers = _answers(req, ans)
    body = {
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": i,
                "message": _message(a),
                "finish_reason": _finish(a, outcome),
                "logprobs": None,
            }
            for i, a in enumerate(answers)
        ],
        "usage": _usage(req, sum(a.tokens for a in answers if a is not None)),
    }
    return orjson.dumps(body)[:-1]


def _answers(req: SimRequest, ans: Answer | None) -> list[Answer | None]:
    """The answer of each choice (one when there is no answer)."""
    if ans is None:
        return [None]
    return [variant(ans, i, req.json_mode) for i in range(req.candidates)]


def _message(ans: Answer | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": ans.text if ans else None}
    if ans is not None and ans.calls:
        message["content"] = ans.text or None
        message["tool_calls"] = _tool_calls(ans)
    return message


def _deltas(ans: Answer | None) -> list[dict[str, Any]]:
    """The delta of each chunk: text pieces, then one chunk per call (arguments whole)."""
    if ans is None:
        return [{"role": "assistant"}]
    deltas: list[dict[str, Any]] = []
    if ans.text or not ans.calls:
        deltas = [{"content": piece} for piece in split_chunks(ans.text)]
    for index, call in enumerate(_tool_calls(ans)):
        deltas.append({"tool_calls": [{"index": index, **call}]})
    deltas[0] = {"role": "assistant", **deltas[0]}
    return deltas


@lru_cache(maxsize=2048)
def _chunk_templates(
    model: str, req: SimRequest, ans: Answer | None, include_usage: bool, outcome: Outcome
) -> tuple[bytes, ...]:
    """Each chunk as JSON without its closing brace; the usage chunk last when asked for."""
    answers = _answers(req, ans)
    per_choice = [_deltas(a) for a in answers]
    bodies: list[dict[str, Any]] = []
    for i in range(max(len(d) for d in per_choice)):
        choices = [
            {
                "index": c,
                "delta": deltas[i],
                "finish_reason": None if i < len(deltas) - 1 else _finish(answers[c], outcome),
            }
            for c, deltas in enumerate(per_choice)
            if i < len(deltas)
        ]
        bodies.append({"object": "chat.completion.chunk", "model": model, "choices": choices})
    if include_usage:
        usage = _usage(req, sum(a.tokens for a in answers if a is not None))
        bodies.append(
            {"object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage}
        )
    return tuple(orjson.dumps(b)[:-1] for b in bodies)


class OpenAISurface(Surface):
    """OpenAI chat-completions shapes."""

    def error(self, status: int, message: str, retry_after: int | None = None) -> web.Response:
        err = {
            "message": message,
            "type": _ERROR_TYPES.get(status, "server_error"),
            "param": None,
            "code": GOOGLE_STATUS.get(status, "UNKNOWN"),
        }
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return json_response({"error": err}, status, headers)

    def body(self, turn: Turn, outcome: Outcome) -> bytes:
        ans = respond(turn.model, turn.req, outcome, turn.scripted)
        tail = b',"id":"chatcmpl-sim-%08x","created":%d}' % (turn.seq, int(time.time()))
        return _body_template(turn.model, turn.req, ans, outcome) + tail

    def frames(
        self, turn: Turn, outcome: Outcome, extra: dict[str, Any]
    ) -> tuple[list[bytes], int]:
        ans = respond(turn.model, turn.req, outcome, turn.scripted)
        include_usage = bool(extra.get("include_usage"))
        templates = _chunk_templates(turn.model, turn.req, ans, include_usage, outcome)
        tail = b',"id":"chatcmpl-sim-%08x","created":%d}\n\n' % (turn.seq, extra["created"])
        frames = [b"data: " + t + tail for t in templates]
        frames.append(_DONE)
        return frames, len(templates) - 1 - include_usage

    def malformed_frame(self, extra: dict[str, Any]) -> bytes:
        return b"data: {simulated malformed chunk\n\n"


OPENAI = OpenAISurface()
