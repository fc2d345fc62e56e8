"""SIMULATION: TGI's Messages API (``POST /v1/chat/completions``) on the simulated TGI, for an
``openai`` backend with ``structured_output: tgi``. Not a model: the answer is the simulated
TGI's (``tgi.generate``) over the messages' text.

Wire behaviour copied from TGI's router (router/src/lib.rs ``ChatRequest``, server.rs):

- ``response_format`` is TGI's grammar, ``{"type": "json_object" | "json" | "json_schema" |
  "regex", "value": ...}`` (``tgi_grammar``); OpenAI's ``{"type": "json_schema",
  "json_schema": {...}}`` or a bare ``{"type": "json_object"}`` fail to deserialize (422, plain
  text). A schema without ``properties`` is a 422 ``validation`` error; ``response_format`` with
  ``tools`` a 422 ``tool_error`` ("Grammar and tools are mutually exclusive").
- The answer: ``id: ""``, ``system_fingerprint``, ``finish_reason`` ``stop`` for the end of
  sequence (``length`` and ``stop_sequence`` as they are); streamed, one chunk per token with
  the finish on the last, a usage chunk when ``stream_options.include_usage``, then
  ``data: [DONE]``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from standby.sim import tgi_grammar
from standby.sim.vllm_answers import content_text

FINGERPRINT = "3.3.6-standby-sim"
FIELD = "response_format"


def _error(status: int, message: str, error_type: str) -> web.Response:
    body = {"error": message, "error_type": error_type}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def refused(body: Any) -> web.Response | None:
    """TGI's 422 for a chat request it does not take (None: it takes it)."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return web.Response(
            status=422,
            text="Failed to deserialize the JSON body into the target type: missing field "
            "`messages`",
        )
    fmt = body.get(FIELD)
    try:
        tgi_grammar.schema_of(fmt, FIELD)
    except tgi_grammar.Undecodable as e:
        text = f"Failed to deserialize the JSON body into the target type: {e}"
        return web.Response(status=422, text=text)
    except tgi_grammar.InvalidGrammar as e:
        return _error(422, f"Input validation error: {e}", "validation")
    if fmt is not None and body.get("tools") is not None:
        return _error(422, "Tool error: Grammar and tools are mutually exclusive", "tool_error")
    return None


def generation_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The prompt and native parameters a chat request becomes (what ``tgi.generate`` takes)."""
    turns = [m for m in body["messages"] if isinstance(m, dict)]
    inputs = "\n".join(content_text(m.get("content")) for m in turns)
    params = {
        "max_new_tokens": body.get("max_tokens") or body.get("max_completion_tokens"),
        "stop": body.get("stop"),
        "grammar": body.get(FIELD),
    }
    return inputs or " ", params


async def answer(
    request: web.Request,
    model: str,
    body: dict[str, Any],
    prompt_tokens: int,
    tokens: list[dict[str, Any]],
    native_finish: str,
) -> web.StreamResponse:
    """The chat answer made of the native generation's ``tokens``, whole or streamed."""
    finish = "stop" if native_finish == "eos_token" else native_finish
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(tokens),
        "total_tokens": prompt_tokens + len(tokens),
    }
    if not body.get("stream"):
        text = "".join(t["text"] for t in tokens if not t["special"])
        payload = completion(model, text, finish, usage)
        return web.Response(body=orjson.dumps(payload), content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        delta = {"role": "assistant", "content": "" if token["special"] else token["text"]}
        await resp.write(chunk(model, delta, finish if index == last else None))
    options = body.get("stream_options") or {}
    if isinstance(options, dict) and options.get("include_usage"):
        await resp.write(chunk(model, None, None, usage=usage))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def completion(model: str, text: str, finish: str, usage: dict[str, int]) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return {
        "object": "chat.completion",
        "id": "",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
        "usage": usage,
    }


def chunk(model: str, delta: dict[str, Any] | None, finish: str | None, **extra: Any) -> bytes:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    payload = {
        "object": "chat.completion.chunk",
        "id": "",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": None,
    }
    payload.update(extra)
    return b"data: " + orjson.dumps(payload) + b"\n\n"
