"""Any OpenAI-compatible chat-completions server: vLLM, TGI's Messages API, ``transformers
serve``, Ollama, OpenAI itself.

Plain ``POST {base_url}/chat/completions`` on the shared aiohttp session with orjson, not the openai
SDK: the SDK costs ~10x more CPU per call on this path (docs/benchmarks.md, "Upstream client cost").
A partial answer to continue (mid-stream failover) is sent as the last, assistant message with
vLLM's ``continue_final_message: true, add_generation_prompt: false``. (``transformers serve`` 5.24
rejects those fields with 422 and cannot continue a message at all; that error is reported as
is, never turned into a silently restarted answer.)

Streams: usage arrives in a chunk after the finish chunk (``stream_options.include_usage``), so
the final Delta is sent at ``[DONE]`` or at the end of the body. ``transformers serve`` sends no
``[DONE]``; a body that ends with neither ``[DONE]`` nor a finish_reason was cut.

Structured output: ``response_format`` goes in the server's dialect (``structured_output``):
OpenAI's shape (vLLM, OpenAI, Ollama), TGI's Messages API grammar ``{"type": "json_object",
"value": <schema>}`` (``tgi_grammar``: json_schema only, never with tools), or not at all
(``none``: such a request is ``unsupported`` here, never sent without its format).

Tools (``openai_tools``): forwarded, and the calls of answers and streams parsed and checked,
unless the backend says ``tools: false`` (a vLLM started without ``--enable-auto-tool-choice``,
a TGI without grammar support): then a request that uses tools is ``unsupported`` here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from standby.capabilities import Need, media_needs, missing
from standby.chat_format import template_flags
from standby.config import OpenAIBackend
from standby.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamStatusError
from standby.protocol import ChatRequest, Completion, Delta, FinishReason, Usage
from standby.providers import http, tgi_grammar
from standby.providers.hotswap import ServedModel
from standby.providers.openai_choices import (
    StreamState,
    by_index,
    joined,
    logprobs_items,
    require_logprobs,
)
from standby.providers.openai_tools import (
    finish_with_calls,
    is_gemini_surface,
    parse_calls,
    tool_fields,
    wire_messages,
)
from standby.providers.vllm_adapters import VLLMAdapters

OPENAI_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    # The legacy ``function_call`` answer is not read (no server sends it unasked).
    "function_call": "stop",
}


def request_body(
    model: str,
    request: ChatRequest,
    extra_body: Mapping[str, Any],
    *,
    stream: bool,
    signatures: bool = False,
    structured_output: str = "openai",
) -> dict[str, Any]:
    """The chat-completions body for ``request``; ``extra_body`` (vendor knobs such as vLLM's
    ``top_k``) is merged first, so the request's own fields win. ``signatures``: the server is
    Gemini's OpenAI surface, which gets the calls' thought signatures back.
    ``structured_output``: the dialect of ``response_format`` (``OpenAIBackend``)."""
    body: dict[str, Any] = dict(extra_body)
    body["model"] = model
    body["messages"] = wire_messages(request.messages, signatures=signatures)
    body.update(request.params())
    body.update(tool_fields(request))
    if structured_output == "tgi" and request.response_format is not None:
        body["response_format"] = tgi_grammar.grammar(request.response_format, kind="json_object")
    if request.continue_final:
        body.update(template_flags(continue_final=True))
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


def _finish(value: Any) -> FinishReason | None:
    if value is None:
        return None
    return OPENAI_FINISH.get(str(value), "stop")


def _usage(raw: Any) -> Usage | None:
    return Usage.from_openai(raw) if isinstance(raw, dict) else None


def _error_in_body(backend: str, payload: dict[str, Any]) -> UpstreamStatusError | None:
    """An error object sent with a 200 (vLLM and others report mid-stream failures so)."""
    err = payload.get("error")
    if err is None:
        return None
    if not isinstance(err, dict):
        err = {"message": str(err)}
    code = err.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    return UpstreamStatusError(backend, status, str(err.get("message") or "error")[:300])


def parse_completion(
    backend: str, payload: Any, n: int = 1, *, logprobs: bool = False
) -> Completion:
    """A non-streaming ``chat.completion`` body with ``n`` choices (and their ``logprobs`` when
    asked for); anything else is an UpstreamProtocolError."""
    if not isinstance(payload, dict):
        raise UpstreamProtocolError(backend, "response is not a JSON object")
    if (err := _error_in_body(backend, payload)) is not None:
        raise err
    try:
        choices = [_choice(backend, c) for c in by_index(backend, payload.get("choices"), n)]
        if logprobs:
            require_logprobs(backend, choices)
        first = joined(choices)
        first.usage = _usage(payload.get("usage")) or Usage()
        first.model_version = payload.get("model")
        return first
    except UpstreamProtocolError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
        raise UpstreamProtocolError(backend, f"unexpected chat.completion shape ({e!r})") from e


def _choice(backend: str, choice: dict[str, Any]) -> Completion:
    message = choice["message"]
    text = message.get("content") or ""
    if not isinstance(text, str):
        raise TypeError("content is not a string")
    calls = parse_calls(backend, message.get("tool_calls"))
    finish = _finish(choice.get("finish_reason")) or "stop"
    return Completion(
        text=text,
        finish_reason=finish_with_calls(finish, bool(calls)),
        tool_calls=calls,
        logprobs=logprobs_items(backend, choice.get("logprobs")),
    )


# Forwarded under OpenAI's own names: an OpenAI-compatible server does what OpenAI does.
OPENAI_SUPPORTS: frozenset[Need] = frozenset(
    {"tools", "structured_output", "logprobs", "choices", "logit_bias"}
)


class OpenAICompatProvider:
    """One OpenAI-compatible server. ``config.model`` is what the server calls the model (for
    ``transformers serve`` that is the pinned path); ``model`` is the name sent now, which a
    promotion switches to a LoRA adapter loaded into vLLM (``load_adapter``, ``use_model``:
    ``hotswap.RuntimeAdapters``)."""

    def __init__(self, name: str, config: OpenAIBackend) -> None:
        self.name = name
        self.config = config
        self.model = config.model
        # Media only as its config says (modalities); the rest is forwarded as is.
        self.supports: frozenset[Need] = OPENAI_SUPPORTS | media_needs(config.modalities)
        self._url = f"{config.base_url.rstrip('/')}/chat/completions"
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if config.api_key is not None:
            self._headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._stream_headers = {**self._headers, "accept": "text/event-stream"}
        self._session: aiohttp.ClientSession | None = None
        self._served: ServedModel | None = None
        self._adapters: VLLMAdapters | None = None
        self._signatures = is_gemini_surface(config.base_url)

    async def start(self) -> None:
        if self._session is None or self._session.closed:
            self._session = http.new_session(self.config.timeouts)

    def ready(self) -> bool:
        return self._session is not None and not self._session.closed

    def unsupported(self, request: ChatRequest) -> str | None:
        if request.uses_tools and not self.config.tools:
            return "configured without tool calling (tools: false)"
        if (why := self._structured_refusal(request)) is not None:
            return f"backend {self.name!r}: {why}"
        return missing(request, self.supports, f"backend {self.name!r}")

    def _structured_refusal(self, request: ChatRequest) -> str | None:
        dialect = self.config.structured_output
        if request.response_format is None or dialect == "openai":
            return None
        if dialect == "none":
            return "configured without structured output (structured_output: none)"
        # dialect "tgi". TGI's Messages API: "Grammar and tools are mutually exclusive".
        if request.tools:
            return "TGI's Messages API cannot take a response_format and tools together"
        return tgi_grammar.refusal(request.response_format)

    async def close(self) -> None:
        await http.aclose_quietly(self._session)
        self._session = None
        if self._adapters is not None:
            await self._adapters.close()

    def served(self) -> ServedModel | None:
        return self._served

    def use_model(self, model: str, base_model: str | None = None) -> ServedModel:
        """Send ``model`` from the next request on; requests already sent keep theirs."""
        self.model = model
        self._served = ServedModel(model, base_model or self.config.model)
        return self._served

    def _vllm(self) -> VLLMAdapters:
        if self._adapters is None:
            self._adapters = VLLMAdapters(self.name, self.config)
        return self._adapters

    async def load_adapter(self, name: str, path: str) -> None:
        await self._vllm().load(name, path)

    async def unload_adapter(self, name: str) -> None:
        await self._vllm().unload(name)

    async def loaded_models(self) -> set[str]:
        return await self._vllm().loaded()

    def _body(self, request: ChatRequest, *, stream: bool) -> bytes:
        return orjson.dumps(
            request_body(
                self.model,
                request,
                self.config.extra_body,
                stream=stream,
                signatures=self._signatures,
                structured_output=self.config.structured_output,
            )
        )

    async def complete(self, request: ChatRequest) -> Completion:
        assert self._session is not None, "start() not called"
        data = self._body(request, stream=False)
        payload = await http.post_json(
            self._session,
            self.name,
            self._url,
            data,
            self._headers,
            self.config.timeouts,
            self.config.limits,
        )
        return parse_completion(self.name, payload, request.n, logprobs=request.logprobs)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        assert self._session is not None, "start() not called"
        data = self._body(request, stream=True)
        state = StreamState(self.name, request.n, _finish, _usage, request.logprobs)
        try:
            async with self._session.post(
                self._url, data=http.body(data), headers=self._stream_headers
            ) as resp:
                await http.raise_for_status(self.name, resp)
                # Closed here, not by the garbage collector: a generator left after a `break`
                # is finalized through the loop's thread-safe wake-up (~0.1 ms a request).
                batches = http.sse_batches(self.name, resp, self.config.limits)
                async with contextlib.aclosing(batches):
                    async for batch in batches:
                        for payload in batch:
                            if payload == b"[DONE]":
                                state.done = True
                                break
                            state.feed(self._chunk(orjson.loads(payload)))
                        for delta in state.deltas():
                            yield delta
                        if state.done:
                            break
        except Exception as e:
            raise http.translate(self.name, e, self.config.timeouts.connect_s) from e
        if not state.finished():
            # The body ended cleanly, but the server never said the answer was complete.
            raise UpstreamConnectError(self.name, "stream ended without finish_reason or [DONE]")
        for delta in state.last_deltas():
            yield delta

    def _chunk(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise UpstreamProtocolError(self.name, "stream chunk is not a JSON object")
        if (err := _error_in_body(self.name, payload)) is not None:
            raise err
        return payload
