"""SIMULATION: a tiny stand-in for vLLM's OpenAI-compatible server with LoRA adapters loaded at
runtime. Not a model server: every answer is a fixed sentence that names the model (base model
or LoRA adapter) that served it, so a test can tell which adapter answered. Used by tests of
promotion (the gateway loads the promoted adapter and switches its model name).

Wire behaviour copied from vLLM's OpenAI server (``entrypoints/openai/serving_models.py`` and
``api_server.py``):

- ``POST /v1/chat/completions``: a whole ``chat.completion`` or SSE ``chat.completion.chunk``s
  ending with ``data: [DONE]`` (usage in a last chunk when ``stream_options.include_usage``).
  A ``model`` that is neither the base model nor a loaded adapter is a 404 ``NotFoundError``:
  "The model `x` does not exist." Requests with ``tools`` get tool calls as vLLM started with
  ``--enable-auto-tool-choice`` gives them (``vllm_answers``; ``auto_tool_choice=False`` is a
  vLLM started without it: ``auto`` is then a 400).
- ``GET /v1/models``: the base model, then every loaded adapter (``parent`` = the base).
- ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}`` (vLLM needs
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` for it): 200 with the text
  ``Success: LoRA adapter 'NAME' added successfully.``; a name already loaded is a 400
  ``InvalidUserInput`` ("... has already been loaded."); a path without an adapter is a 404
  ``NotFoundError`` ("Loading lora NAME failed: No adapter found for PATH"); an adapter whose
  ``adapter_config.json`` is not a LoRA config is a 400 ``BadRequestError``.
- ``POST /v1/unload_lora_adapter {"lora_name"}``: 200 ``Success: LoRA adapter 'NAME' removed
  successfully.``; an unknown name is a 404.
- Errors are ``{"error": {"message", "type", "param", "code"}}``.

Unlike vLLM, a stream whose adapter is unloaded while it is in flight ends with an error event
(vLLM's behaviour there is version-dependent; the simulation is strict so that tests notice an
adapter removed from under a request).

``latency_s`` delays the first token and every further token by that much (requests stay in
flight). ``calls`` records every load/unload request (``(path, body, status)``), ``requests``
every chat-completions body received.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from standby.sim import vllm_answers, vllm_choices
from standby.sim.background import AiohttpServer
from standby.sim.vllm_answers import Reply

BASE_MODEL = "standby-sim/gemma-3-1b-it"


def answer_for(model: str) -> str:
    """The simulated answer: names the model (adapter) that served it."""
    return f"Served by {model}. This is the simulated vLLM answer."


def _unloaded(model: str) -> str:
    return f"LoRA adapter {model} was unloaded mid-request"


def _error(status: int, message: str, err_type: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": err_type, "param": param, "code": status}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _chunk(cid: str, model: str, created: int, **fields: Any) -> bytes:
    payload = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    payload.update(fields)
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@dataclass
class Lora:
    name: str
    path: str
    generation: int  # tells a re-loaded adapter from the one a stream started on


@dataclass
class VLLMSim:
    """The simulated server's state and routes; ``app()`` builds the aiohttp application."""

    base_model: str = BASE_MODEL
    latency_s: float = 0.0
    loras: dict[str, Lora] = field(default_factory=dict)
    calls: list[tuple[str, Any, int]] = field(default_factory=list)
    served: list[str] = field(default_factory=list)  # the model of every answered request
    requests: list[dict[str, Any]] = field(default_factory=list)  # every chat body received
    auto_tool_choice: bool = True  # as --enable-auto-tool-choice; off: "auto" is a 400
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/load_lora_adapter", self._load)
        app.router.add_post("/v1/unload_lora_adapter", self._unload)
        app.router.add_get("/health", self._health)
        return app

    def add_lora(self, name: str, path: str) -> None:
        """A static adapter, as ``--lora-modules NAME=PATH`` at start."""
        self.loras[name] = Lora(name, path, next(self._ids))

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        cards = [
            {
                "id": self.base_model,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": self.base_model,
                "parent": None,
            }
        ]
        cards += [
            {
                "id": lora.name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": lora.path,
                "parent": self.base_model,
            }
            for lora in self.loras.values()
        ]
        return web.json_response({"object": "list", "data": cards})

    async def _body(self, request: web.Request) -> Any:
        try:
            return orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return None

    async def _load(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        resp = self._do_load(body if isinstance(body, dict) else {})
        self.calls.append((request.path, body, resp.status))
        return resp

    def _do_load(self, body: dict[str, Any]) -> web.Response:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return _error(
                400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput"
            )
        if name in self.loras:
            return _error(
                400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput"
            )
        config_file = Path(str(path)) / "adapter_config.json"
        if not config_file.is_file():
            return _error(
                404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError"
            )
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
            if config.get("peft_type") != "LORA":
                raise ValueError(f"peft_type is {config.get('peft_type')!r}, not 'LORA'")
        except (ValueError, AttributeError) as e:
            return _error(400, f"Loading lora {name} failed: {e}", "BadRequestError")
        self.add_lora(str(name), str(path))
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name = body.get("lora_name") if isinstance(body, dict) else None
        if not name:
            resp = _error(
                400,
                "either 'lora_name' and 'lora_int_id' needs to be provided.",
                "InvalidUserInput",
            )
        elif name not in self.loras:
            resp = _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        else:
            del self.loras[name]
            resp = web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")
        self.calls.append((request.path, body, resp.status))
        return resp

    def _alive(self, model: str, lora: Lora | None) -> bool:
        """The adapter a request started on is still loaded (the same load of it)."""
        return lora is None or self.loras.get(model) is lora

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "messages: field required", "BadRequestError", "messages")
        self.requests.append(body)
        model = str(body.get("model") or "")
        lora = self.loras.get(model)
        if model != self.base_model and lora is None:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        try:
            reply = vllm_answers.reply(body, model, answer_for(model), self.auto_tool_choice)
        except vllm_answers.BadRequest as e:
            return _error(400, str(e), "BadRequestError", e.param)
        if body.get("stream"):
            return await self._stream(request, body, model, lora, reply)
        await asyncio.sleep(self.latency_s * (1 + len(reply.deltas)))
        if not self._alive(model, lora):
            return _error(500, _unloaded(model), "InternalServerError")
        self.served.append(model)
        answers = vllm_choices.replies(body, reply)
        choices = [
            {
                "index": i,
                "finish_reason": r.finish,
                "message": r.message,
                "logprobs": vllm_choices.whole(body, r, i),
            }
            for i, r in enumerate(answers)
        ]
        return web.json_response(
            {
                "id": f"chatcmpl-sim-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": choices,
                "usage": vllm_choices.usage(body, answers),
            }
        )

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        model: str,
        lora: Lora | None,
        reply: Reply,
    ) -> web.StreamResponse:
        cid, created = f"chatcmpl-sim-{next(self._ids)}", int(time.time())

        def chunk(**fields: Any) -> bytes:
            return _chunk(cid, model, created, **fields)

        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        answers = vllm_choices.replies(body, reply)
        first = {"role": "assistant", "content": ""}
        for i in range(len(answers)):
            await resp.write(chunk(choices=[{"index": i, "delta": first, "finish_reason": None}]))
        # The choices' pieces interleaved, one choice per chunk (as vLLM sends them).
        steps = max(len(r.deltas) for r in answers)
        pieces = [
            (j, i, r.deltas[j])
            for j in range(steps)
            for i, r in enumerate(answers)
            if j < len(r.deltas)
        ]
        for step, index, delta in pieces:
            await asyncio.sleep(self.latency_s if index == 0 else 0)
            if not self._alive(model, lora):
                error = {
                    "message": _unloaded(model),
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
                await resp.write(b"data: " + orjson.dumps({"error": error}) + b"\n\n")
                await resp.write_eof()
                return resp
            logprobs = vllm_choices.piece(body, delta, step, index)
            choice = {"index": index, "delta": delta, "finish_reason": None, "logprobs": logprobs}
            await resp.write(chunk(choices=[choice]))
        for i, r in enumerate(answers):
            last = {"index": i, "delta": {}, "finish_reason": r.stream_finish}
            await resp.write(chunk(choices=[last]))
        options = body.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            await resp.write(chunk(choices=[], usage=vllm_choices.usage(body, answers)))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self.served.append(model)
        return resp


def serve(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> tuple[VLLMSim, AiohttpServer]:
    """Start the simulation on a background thread; returns its state and the server."""
    sim = VLLMSim(**kwargs)
    server = AiohttpServer(sim.app(), host, port)
    server.start()
    return sim, server


def main() -> None:  # pragma: no cover - manual use: python -m standby.sim.vllm
    import argparse

    parser = argparse.ArgumentParser(description="Simulated vLLM server with LoRA (not a model).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--lora-modules", nargs="*", default=[], metavar="NAME=PATH")
    parser.add_argument(
        "--no-auto-tool-choice",
        action="store_true",
        help='as vLLM without --enable-auto-tool-choice: tool_choice "auto" is a 400',
    )
    args = parser.parse_args()
    sim = VLLMSim(auto_tool_choice=not args.no_auto_tool_choice)
    for module in args.lora_modules:
        name, _, path = module.partition("=")
        sim.add_lora(name, path)
    web.run_app(sim.app(), host=args.host, port=args.port)


if __name__ == "__main__":  # pragma: no cover
    main()
