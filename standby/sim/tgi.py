"""SIMULATION: a tiny stand-in for Text Generation Inference (TGI), speaking TGI's native API
as ``huggingface_hub.AsyncInferenceClient.text_generation`` expects it. Not a model server: the
answer is a fixed sentence, cut into word tokens. Used by tests and failover drills.

Wire format copied from TGI's router (``router/src/server.rs``):

- ``POST /`` (``stream`` in the body picks JSON or SSE; the JSON answer is a one-element *list*,
  and ``return_full_text`` defaults to true, as for a model tagged ``text-generation``),
  ``POST /generate`` (one object), ``POST /generate_stream`` (SSE).
- SSE events are ``data:{"index","token":{id,text,logprob,special},"generated_text","details"}``;
  the last one carries ``generated_text`` and, with ``details``, ``finish_reason``
  (``length`` | ``eos_token`` | ``stop_sequence``), ``generated_tokens``, ``input_length``.
- Errors are ``{"error", "error_type"}``; 422 validation, 424 generation, 429 overloaded,
  500 incomplete_generation. Once a stream has started (status 200) TGI reports even
  validation and overload errors as an SSE error event, and so does this simulation.
- ``GET /info``, ``GET /health``; ``POST /v1/chat/completions``, TGI's Messages API
  (``tgi_chat``).
- ``parameters.grammar`` as TGI reads it (``tgi_grammar``): a JSON grammar makes the answer an
  instance of its schema; a grammar of the wrong shape is a plain-text 422 before any answer,
  an invalid or property-less schema a 422 ``validation`` error.

Faults (``POST /_sim/fault {"fault": SPEC}``; sticky until set back to ``ok``):

    ok                    answer normally
    error-<status>        that HTTP status before any body (e.g. a proxy's 503)
    error-429-retry-<s>   429 with ``Retry-After: <s>``
    overloaded            TGI's own overload: 429 JSON, or an SSE error event in a stream
    stream-error-<n>      stream: <n> tokens, then a ``generation`` error event
    cut-<n>               stream: <n> tokens, then the connection is aborted; non-stream:
                          the connection is aborted before any answer
    end-<n>               stream: <n> tokens, then a clean end without the final event
    malformed             200 whose body (stream: first event) is not JSON
    hang                  never answer

``GET /_sim/requests`` lists what was received since the last fault change: each request's
path, Authorization header and JSON body.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from standby.sim import tgi_chat, tgi_grammar
from standby.sim.background import AiohttpServer
from standby.sim.schema_instance import json_answer

ANSWER = "Hello from the simulated TGI server. This answer is the same every time."
EOS_TEXT = "<end_of_turn>"
MODEL_ID = "standby-sim/tiny-gemma"
DEFAULT_MAX_NEW_TOKENS = 100
MAX_STOP_SEQUENCES = 4
GRAMMAR_FIELD = "parameters.grammar"
_TOKEN = re.compile(r"\s*\S+")
_FAULT = re.compile(
    r"(ok|overloaded|malformed|hang)|error-(\d{3})(?:-retry-(\d+))?|"
    r"(stream-error|cut|end)-(\d+)"
)


@dataclass(frozen=True, slots=True)
class TGIFault:
    """A parsed fault: ``value`` is the status (error) or token count (cut, end,
    stream-error); ``retry_after`` the Retry-After seconds of an error."""

    kind: str
    value: int = 0
    retry_after: int | None = None


def parse_fault(spec: str) -> TGIFault | None:
    """The fault ``spec`` names, or ``None`` if it is not one."""
    m = _FAULT.fullmatch(spec)
    if m is None:
        return None
    if m.group(1):
        return TGIFault(m.group(1))
    if m.group(2):
        status = int(m.group(2))
        if not 400 <= status <= 599:
            return None
        retry = int(m.group(3)) if m.group(3) else None
        return TGIFault("error", status, retry)
    return TGIFault(m.group(4), int(m.group(5)))


class _Invalid(Exception):
    """A TGI validation error (422, error_type ``validation``)."""


def _validate(body: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
        raise _Invalid("Failed to deserialize the JSON body: missing field `inputs`")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise _Invalid("`parameters` must be an object")
    if not body["inputs"]:
        raise _Invalid("`inputs` cannot be empty")
    temperature = params.get("temperature")
    if temperature is not None and temperature <= 0:
        raise _Invalid("`temperature` must be strictly positive")
    top_p = params.get("top_p")
    if top_p is not None and not 0 < top_p < 1:
        raise _Invalid("`top_p` must be > 0.0 and < 1.0")
    max_new = params.get("max_new_tokens")
    if max_new is not None and max_new < 1:
        raise _Invalid("`max_new_tokens` must be strictly positive")
    if len(params.get("stop") or ()) > MAX_STOP_SEQUENCES:
        raise _Invalid(f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences")
    try:
        tgi_grammar.schema_of(params.get("grammar"), GRAMMAR_FIELD)
    except tgi_grammar.InvalidGrammar as e:
        raise _Invalid(str(e)) from None
    return body["inputs"], params


def undecodable(body: Any, field: str, grammar: Any) -> web.Response | None:
    """The 422 in plain text TGI's JSON extractor gives a grammar of the wrong shape, before
    any answer (a stream too) starts; None when it deserializes."""
    try:
        tgi_grammar.schema_of(grammar, field)
    except tgi_grammar.Undecodable as e:
        text = f"Failed to deserialize the JSON body into the target type: {e}"
        return web.Response(status=422, text=text)
    except tgi_grammar.InvalidGrammar:
        return None  # a validation error, reported after deserializing
    return None


def _grammar_of(body: Any) -> Any:
    params = body.get("parameters") if isinstance(body, dict) else None
    return params.get("grammar") if isinstance(params, dict) else None


@dataclass(slots=True)
class _Generation:
    tokens: list[dict[str, Any]]
    text: str
    finish_reason: str


def generate(inputs: str, params: dict[str, Any]) -> _Generation:
    """The deterministic answer, honouring ``max_new_tokens`` and ``stop`` like TGI does (the
    stop sequence stays in the text); under a JSON grammar, an instance of its schema."""
    limit = int(params.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
    stops = [s for s in params.get("stop") or () if s]
    answer = ANSWER
    if (schema := tgi_grammar.schema_of(params.get("grammar"), GRAMMAR_FIELD)) is not None:
        answer = json_answer(schema, ANSWER)
    tokens: list[dict[str, Any]] = []
    text = ""
    for i, piece in enumerate(_TOKEN.findall(answer)):
        tokens.append({"id": 100 + i, "text": piece, "logprob": -0.25, "special": False})
        text += piece
        if any(text.endswith(s) for s in stops):  # TGI matches a stop at the end only
            return _Generation(tokens, text, "stop_sequence")
        if len(tokens) >= limit:
            return _Generation(tokens, text, "length")
    tokens.append({"id": 1, "text": EOS_TEXT, "logprob": -0.01, "special": True})
    return _Generation(tokens, text, "eos_token")


def _error(status: int, message: str, error_type: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if error_type is not None:
        body["error_type"] = error_type
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _event(payload: dict[str, Any]) -> bytes:
    return b"data:" + orjson.dumps(payload) + b"\n\n"


class TGISim:
    """The simulated server's state and routes; ``app()`` builds the aiohttp application."""

    def __init__(self) -> None:
        self.fault = TGIFault("ok")
        self.requests: list[Any] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self._compat)
        app.router.add_post("/generate", self._generate)
        app.router.add_post("/generate_stream", self._generate_stream)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/", self._health)
        app.router.add_get("/health", self._health)
        app.router.add_get("/info", self._info)
        app.router.add_post("/_sim/fault", self._set_fault)
        app.router.add_get("/_sim/requests", self._get_requests)
        return app

    async def _set_fault(self, request: web.Request) -> web.Response:
        body = await request.json(loads=orjson.loads)
        fault = parse_fault(str(body.get("fault", "")))
        if fault is None:
            return _error(400, f"unknown fault {body.get('fault')!r}")
        self.fault = fault
        self.requests.clear()
        return web.json_response({"fault": body["fault"]})

    async def _get_requests(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.requests), content_type="application/json")

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _info(self, request: web.Request) -> web.Response:
        info = {
            "model_id": MODEL_ID,
            "model_sha": None,
            "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": 128,
            "max_best_of": 2,
            "max_stop_sequences": MAX_STOP_SEQUENCES,
            "max_input_tokens": 4095,
            "max_total_tokens": 4096,
            "validation_workers": 2,
            "max_client_batch_size": 4,
            "router": "text-generation-router",
            "version": "3.3.6-standby-sim",
            "sha": None,
            "docker_label": None,
        }
        return web.Response(body=orjson.dumps(info), content_type="application/json")

    async def _read(self, request: web.Request) -> Any:
        """The JSON body (None if it is not JSON), recorded with the path and the
        Authorization header for ``GET /_sim/requests``."""
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        auth = request.headers.get("Authorization")
        self.requests.append({"path": request.path, "authorization": auth, "body": body})
        return body

    async def _compat(self, request: web.Request) -> web.StreamResponse:
        body = await self._read(request)
        stream = isinstance(body, dict) and bool(body.get("stream"))
        if stream:
            return await self._stream(request, body, full_text_default=True)
        return await self._whole(request, body, full_text_default=True, as_list=True)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await self._read(request)
        return await self._whole(request, body, full_text_default=False)

    async def _generate_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, await self._read(request), full_text_default=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        """TGI's Messages API (``tgi_chat``); only the faults that answer before a body."""
        body = await self._read(request)
        if (early := await self._http_fault()) is not None:
            return early
        if (refused := tgi_chat.refused(body)) is not None:
            return refused
        inputs, params = tgi_chat.generation_request(body)
        gen = generate(inputs, params)
        return await tgi_chat.answer(
            request, MODEL_ID, body, len(inputs.split()), gen.tokens, gen.finish_reason
        )

    async def _http_fault(self) -> web.Response | None:
        """The faults that answer before any body is sent."""
        fault = self.fault
        if fault.kind == "hang":
            await asyncio.Event().wait()
        if fault.kind == "error":
            resp = _error(fault.value, f"simulated HTTP {fault.value}")
            if fault.retry_after is not None:
                resp.headers["Retry-After"] = str(fault.retry_after)
            return resp
        return None

    async def _whole(
        self, request: web.Request, body: Any, *, full_text_default: bool, as_list: bool = False
    ) -> web.Response:
        if (early := await self._http_fault()) is not None:
            return early
        if (refused := undecodable(body, GRAMMAR_FIELD, _grammar_of(body))) is not None:
            return refused
        if self.fault.kind == "overloaded":
            return _error(429, "Model is overloaded", "overloaded")
        if self.fault.kind == "cut":
            assert request.transport is not None
            request.transport.abort()  # the connection drops before any answer
            return web.Response()
        try:
            inputs, params = _validate(body)
        except _Invalid as e:
            return _error(422, f"Input validation error: {e}", "validation")
        if self.fault.kind == "malformed":
            return web.Response(body=b"<html>not json", content_type="application/json")
        gen = generate(inputs, params)
        full_text = params.get("return_full_text")
        want_full = full_text_default if full_text is None else full_text
        out: dict[str, Any] = {"generated_text": inputs + gen.text if want_full else gen.text}
        if params.get("details"):
            out["details"] = {
                "finish_reason": gen.finish_reason,
                "generated_tokens": len(gen.tokens),
                "seed": params.get("seed") if params.get("do_sample") else None,
                "prefill": [],
                "tokens": gen.tokens,
                "top_tokens": [],
            }
        payload: Any = [out] if as_list else out
        headers = {
            "x-prompt-tokens": str(len(inputs.split())),
            "x-generated-tokens": str(len(gen.tokens)),
        }
        return web.Response(
            body=orjson.dumps(payload), content_type="application/json", headers=headers
        )

    async def _stream(
        self, request: web.Request, body: Any, *, full_text_default: bool
    ) -> web.StreamResponse:
        if (early := await self._http_fault()) is not None:
            return early
        if (refused := undecodable(body, GRAMMAR_FIELD, _grammar_of(body))) is not None:
            return refused
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        fault = self.fault
        if fault.kind == "overloaded":
            await resp.write(_event({"error": "Model is overloaded", "error_type": "overloaded"}))
            await resp.write_eof()
            return resp
        try:
            inputs, params = _validate(body)
        except _Invalid as e:
            await resp.write(
                _event({"error": f"Input validation error: {e}", "error_type": "validation"})
            )
            await resp.write_eof()
            return resp
        if fault.kind == "malformed":
            await resp.write(b"data:{not json\n\n")
            await resp.write_eof()
            return resp
        gen = generate(inputs, params)
        last = len(gen.tokens) - 1
        for index, token in enumerate(gen.tokens):
            if fault.kind in ("cut", "end", "stream-error") and index == fault.value:
                if fault.kind == "cut":
                    assert request.transport is not None
                    request.transport.abort()  # mid-body: no terminating chunk
                elif fault.kind == "stream-error":
                    await resp.write(
                        _event(
                            {
                                "error": "Request failed during generation: simulated CUDA error",
                                "error_type": "generation",
                            }
                        )
                    )
                    await resp.write_eof()
                else:
                    await resp.write_eof()
                return resp
            event: dict[str, Any] = {
                "index": index + 1,
                "token": token,
                "top_tokens": None,
                "generated_text": None,
                "details": None,
            }
            if index == last:
                full_text = params.get("return_full_text")
                want_full = full_text_default if full_text is None else full_text
                event["generated_text"] = inputs + gen.text if want_full else gen.text
                if params.get("details"):
                    event["details"] = {
                        "finish_reason": gen.finish_reason,
                        "generated_tokens": len(gen.tokens),
                        "seed": None,
                        "input_length": len(inputs.split()),
                    }
            await resp.write(_event(event))
        await resp.write_eof()
        return resp


def serve(host: str = "127.0.0.1", port: int = 0) -> tuple[TGISim, AiohttpServer]:
    """Start the simulation on a background thread; returns its state and the server."""
    sim = TGISim()
    server = AiohttpServer(sim.app(), host, port)
    server.start()
    return sim, server


def main() -> None:  # pragma: no cover - manual use: python -m standby.sim.tgi
    import argparse

    parser = argparse.ArgumentParser(description="Simulated TGI server (not a model).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    web.run_app(TGISim().app(), host=args.host, port=args.port)


if __name__ == "__main__":  # pragma: no cover
    main()
