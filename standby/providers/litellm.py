"""Any provider litellm knows (``model`` in litellm's ``provider/name`` form), through
``litellm.acompletion``.

litellm costs ~7 ms CPU per call and ~4-5 s to import (docs/benchmarks.md, "Upstream client cost"),
so it is imported lazily in ``start()`` and is meant for backends off the hot path. Its own retries
are switched off: the router, not litellm, decides when to try another backend. Its exceptions are
translated in ``translate()`` by type and ``status_code``, never by message text.

``response_format`` goes as OpenAI's shape, which litellm translates for its provider; a
backend whose provider litellm does not forward it to (``get_supported_openai_params``), or one
configured ``structured_output: false``, is ``unsupported`` for requests with one.

Tools go through ``acompletion(tools=, tool_choice=, parallel_tool_calls=)`` in OpenAI's shapes
(``openai_tools``), and the calls in its answers are checked the same way as an OpenAI-compatible
server's. Gemini's thought signatures travel as litellm carries them for ``gemini/`` and
``vertex_ai/`` models (``provider_specific_fields``, not packed into the call id), and as
``extra_content`` to Gemini's OpenAI surface; no other server sees them.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import aiohttp
import httpx
import httpx2

from standby.capabilities import Need, media_needs, missing
from standby.chat_format import template_flags
from standby.config import LiteLLMBackend, Timeouts
from standby.errors import (
    UpstreamBlocked,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from standby.protocol import ChatRequest, Completion, Delta, FinishReason, Usage
from standby.providers import http
from standby.providers.gemini_controls import SERVICE_TIERS, litellm_thinking
from standby.providers.openai_choices import (
    StreamState,
    by_index,
    joined,
    logprobs_items,
    require_logprobs,
)
from standby.providers.openai_compat import OPENAI_FINISH
from standby.providers.openai_tools import (
    finish_with_calls,
    is_gemini_surface,
    parse_calls,
    tool_fields,
    wire_messages,
)

# litellm prefixes of OpenAI-compatible servers that understand vLLM's continuation flags.
_CONTINUE_PREFIXES = ("hosted_vllm/", "openai/")

# litellm prefixes whose calls carry Gemini's thought signatures in ``provider_specific_fields``.
_GEMINI_PREFIXES = ("gemini/", "vertex_ai/")

_litellm: ModuleType | None = None


def _import_litellm() -> ModuleType:
    global _litellm
    if _litellm is None:
        # litellm fetches a cost map from the internet at import unless told not to.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        module: Any = importlib.import_module("litellm")
        module.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on errors
        # Its stream handling loads tiktoken's encoding on first use (0.5-1 s here): load it
        # now, not on the first answer (failover reads every answer as a stream).
        importlib.import_module("litellm.litellm_core_utils.default_encoding")
        _litellm = module
    return _litellm


def _finish(value: Any) -> FinishReason | None:
    return None if value is None else OPENAI_FINISH.get(str(value), "stop")


def _usage(raw: Any) -> Usage | None:
    """litellm's ``Usage`` (a pydantic model of OpenAI's shape), details included."""
    if raw is None:
        return None
    return Usage.from_openai(raw.model_dump() if hasattr(raw, "model_dump") else dict(raw))


def _plain_calls(raw: Any) -> list[Any] | None:
    """litellm's tool-call objects as OpenAI's plain shapes, a Gemini signature moved from
    ``provider_specific_fields`` to where ``openai_tools`` reads it."""
    if not raw:
        return None
    out: list[Any] = []
    for call in raw:
        item = call.model_dump() if hasattr(call, "model_dump") else call
        fields = item.get("provider_specific_fields") if isinstance(item, dict) else None
        signature = fields.get("thought_signature") if isinstance(fields, dict) else None
        if signature:
            item["extra_content"] = {"google": {"thought_signature": signature}}
        out.append(item)
    return out


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first (litellm wraps the transport's exception in
    one or two of its own, and a broken stream in ``MidStreamFallbackError.original_exception``)."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not seen for seen in out) and len(out) < 16:
        out.append(cur)
        cur = cur.__cause__ or getattr(cur, "original_exception", None) or cur.__context__
    return out


def _transport(backend: str, exc: BaseException, timeouts: Timeouts) -> UpstreamError | None:
    if isinstance(exc, httpx.ConnectTimeout | httpx2.ConnectTimeout):
        return UpstreamTimeout(backend, "connect", timeouts.connect_s)
    if isinstance(exc, httpx.TimeoutException | httpx2.TimeoutException | TimeoutError):
        return UpstreamTimeout(backend, "total", timeouts.total_s)
    if isinstance(exc, httpx.ConnectError | httpx2.ConnectError | aiohttp.ClientConnectorError):
        return UpstreamConnectError(backend, "cannot connect")
    if isinstance(
        exc,
        httpx.TransportError | httpx2.TransportError | aiohttp.ClientError | ConnectionError,
    ):
        return UpstreamConnectError(backend, "connection closed by the backend")
    return None


def translate(backend: str, exc: BaseException, timeouts: Timeouts) -> UpstreamError:
    """The one mapping from litellm's exceptions to ours.

    litellm's own class is not enough: a refused connection to an ``openai/`` model arrives as
    ``InternalServerError`` (500), Gemini's 503 as ``InternalServerError`` (500), an unparsable
    Gemini body as ``BadRequestError`` (422). So the cause chain is read, by type: the
    backend's HTTP status first, then transport failures, then parse failures; litellm's class
    and ``status_code`` only when the chain says nothing more."""
    if isinstance(exc, UpstreamError):
        return exc
    lm = _import_litellm()
    if isinstance(exc, lm.ContentPolicyViolationError):
        return UpstreamBlocked(backend, "content policy violation")
    message = str(getattr(exc, "message", "") or type(exc).__name__)[: http.MAX_ERROR_TEXT]
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, httpx.HTTPStatusError | httpx2.HTTPStatusError):
            status = e.response.status_code
            retry = http.retry_after(e.response.headers)
            return UpstreamStatusError(backend, status, message, retry_after=retry)
    for e in chain:
        if (err := _transport(backend, e, timeouts)) is not None:
            return err
    if any(isinstance(e, ValueError) for e in chain):
        return UpstreamProtocolError(backend, "malformed response")
    if isinstance(exc, lm.Timeout):
        return UpstreamTimeout(backend, "total", timeouts.total_s)
    if isinstance(exc, lm.APIConnectionError):
        return UpstreamConnectError(backend, "cannot reach the backend")
    code = 429 if isinstance(exc, lm.RateLimitError) else getattr(exc, "status_code", None)
    if isinstance(code, int) and 400 <= code <= 599:
        return UpstreamStatusError(backend, code, message)
    # litellm is a large black box; whatever else escapes it is still this backend's failure.
    return UpstreamProtocolError(backend, f"litellm raised {type(exc).__name__}")


class LiteLLMProvider:
    """One litellm model. ``config.extra`` is passed to ``acompletion`` as is."""

    # The documented default for a refused answer; LiteLLMBackend has no ``on_blocked`` knob yet.
    on_blocked = "content_filter"

    def __init__(self, name: str, config: LiteLLMBackend) -> None:
        self.name = name
        self.config = config
        self._lm: ModuleType | None = None
        # ``n`` and ``logprobs`` go as OpenAI's; the answer must carry them (openai_choices).
        self.supports: frozenset[Need] = frozenset(
            {"tools", "structured_output", "choices", "logprobs"}
        )
        self.supports |= media_needs(config.modalities)  # forwarded as OpenAI content parts
        if not config.structured_output:
            self.supports -= {"structured_output"}
        # Only the connect phase is litellm's to time; the router owns the other limits.
        self._timeout = httpx.Timeout(None, connect=config.timeouts.connect_s)

    async def start(self) -> None:
        if self._lm is None:
            self._lm = await asyncio.to_thread(_import_litellm)
        if not self._takes_response_format(self._lm):
            self.supports = self.supports - {"structured_output"}

    def _takes_response_format(self, lm: ModuleType) -> bool:
        """Whether litellm forwards ``response_format`` to this provider (where it does not,
        litellm raises, or drops it silently with ``drop_params``)."""
        try:
            model, provider, _, _ = lm.get_llm_provider(model=self.config.model)
            params = lm.get_supported_openai_params(model=model, custom_llm_provider=provider)
        except Exception:  # litellm does not know the provider: it cannot say it forwards it
            return False
        return "response_format" in (params or ())

    def ready(self) -> bool:
        return self._lm is not None

    def unsupported(self, request: ChatRequest) -> str | None:
        if request.uses_tools and not self.config.tools:
            return "configured without tool calling (tools: false)"
        return missing(request, self.supports, f"backend {self.name!r}")

    async def close(self) -> None:
        if self._lm is not None:
            await _stop_logging_worker()
        self._lm = None

    def _kwargs(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        cfg = self.config
        kw: dict[str, Any] = dict(cfg.extra)
        kw.update(
            model=cfg.model,
            messages=self._messages(request),
            stream=stream,
            num_retries=0,  # the router decides failover, not litellm
            max_retries=0,
            timeout=self._timeout,
        )
        if cfg.api_base is not None:
            kw["api_base"] = cfg.api_base
        if cfg.api_key is not None:
            kw["api_key"] = cfg.api_key.get_secret_value()
        kw.update(request.params())
        kw.update(tool_fields(request))
        if cfg.model.startswith(_GEMINI_PREFIXES):
            kw["thought_signature_in_tool_call_id"] = False
            if request.reasoning_effort is not None:
                del kw["reasoning_effort"]  # as gemini_controls maps it, which litellm can send
                kw.update(litellm_thinking(cfg.model, request.reasoning_effort))
            if kw.get("service_tier") not in SERVICE_TIERS:
                kw.pop("service_tier", None)  # litellm sends "auto" as priority, "scale" as is
        if stream:
            kw["stream_options"] = {"include_usage": True}
        if request.continue_final and cfg.model.startswith(_CONTINUE_PREFIXES):
            extra_body = dict(kw.get("extra_body") or {})
            extra_body.update(template_flags(continue_final=True))
            kw["extra_body"] = extra_body
        return kw

    def _messages(self, request: ChatRequest) -> list[dict[str, Any]]:
        if not self.config.model.startswith(_GEMINI_PREFIXES):
            surface = is_gemini_surface(self.config.api_base or "")
            return wire_messages(request.messages, signatures=surface)
        # litellm's Gemini reads the signature here, and adds Google's placeholder where none is.
        messages = wire_messages(request.messages, signatures=False)
        for wire, m in zip(messages, request.messages, strict=True):
            for wire_call, call in zip(wire.get("tool_calls", ()), m.tool_calls, strict=True):
                if call.signature is not None:
                    wire_call["provider_specific_fields"] = {"thought_signature": call.signature}
        return messages

    def _blocked_is_answer(self, err: UpstreamError) -> bool:
        return isinstance(err, UpstreamBlocked) and self.on_blocked == "content_filter"

    async def complete(self, request: ChatRequest) -> Completion:
        assert self._lm is not None, "start() not called"
        try:
            resp = await self._lm.acompletion(**self._kwargs(request, stream=False))
            picked = by_index(self.name, list(resp.choices), request.n)
            choices = [self._choice(c) for c in picked]
            if request.logprobs:
                require_logprobs(self.name, choices)
            first = joined(choices)
            first.usage = _usage(getattr(resp, "usage", None)) or Usage()
            first.model_version = getattr(resp, "model", None)
            return first
        except Exception as e:
            err = translate(self.name, e, self.config.timeouts)
            if self._blocked_is_answer(err):
                return joined([Completion("", "content_filter") for _ in range(request.n)])
            raise err from e

    def _choice(self, choice: Any) -> Completion:
        text = choice.message.content or ""
        if not isinstance(text, str):
            raise UpstreamProtocolError(self.name, "content is not a string")
        calls = parse_calls(self.name, _plain_calls(choice.message.tool_calls))
        finish = _finish(choice.finish_reason) or "stop"
        return Completion(
            text=text,
            finish_reason=finish_with_calls(finish, bool(calls)),
            tool_calls=calls,
            logprobs=logprobs_items(self.name, _logprobs(getattr(choice, "logprobs", None))),
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        assert self._lm is not None, "start() not called"
        chunks: Any = None
        state = StreamState(self.name, request.n, _finish, _usage, request.logprobs)
        last: list[Delta] = []
        try:
            chunks = await self._lm.acompletion(**self._kwargs(request, stream=True))
            async for chunk in chunks:
                state.feed(_plain_chunk(chunk))
                for delta in state.deltas():
                    yield delta
            if state.finishes and not _backend_finished(chunks):
                state.finishes.clear()  # litellm made the finish_reason up at a bare end
            if state.finishes and len(state.finishes) < request.n:
                # litellm's stream wrapper passes on the finish of one choice only (n > 1):
                # the others ended with it.
                said = next(iter(state.finishes.values()))
                for index in range(request.n):
                    state.finishes.setdefault(index, said)
            if not state.finished():
                raise UpstreamConnectError(self.name, "stream ended without a finish_reason")
            last = state.last_deltas()
        except Exception as e:
            err = translate(self.name, e, self.config.timeouts)
            if not self._blocked_is_answer(err):
                raise err from e
            last = [
                Delta(finish_reason="content_filter", index=i)
                for i in range(request.n)
                if i not in state.finishes
            ]
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        for delta in last:
            yield delta


def _logprobs(raw: Any) -> Any:
    """A choice's ``logprobs`` in OpenAI's plain shape, read attribute by attribute (a
    ``model_dump`` of litellm's objects builds schemas that warn on first use)."""
    if raw is None or isinstance(raw, dict):
        return raw
    content = getattr(raw, "content", None)
    if content is None:
        return None

    def token(t: Any) -> dict[str, Any]:
        if isinstance(t, dict):
            return t
        item = {name: getattr(t, name, None) for name in ("token", "logprob", "bytes")}
        top = getattr(t, "top_logprobs", None)
        if top is not None:
            item["top_logprobs"] = [token(x) for x in top]
        return item

    return {"content": [token(t) for t in content]}


def _plain_chunk(chunk: Any) -> dict[str, Any]:
    """A litellm stream chunk as OpenAI's chunk dict, its calls' Gemini signatures where
    ``openai_tools`` reads them."""
    choices = []
    for choice in getattr(chunk, "choices", None) or ():
        delta = getattr(choice, "delta", None)
        plain: dict[str, Any] = {}
        if delta is not None:
            plain["content"] = getattr(delta, "content", None)
            plain["tool_calls"] = _plain_calls(getattr(delta, "tool_calls", None))
        choices.append(
            {
                "index": getattr(choice, "index", 0),
                "finish_reason": getattr(choice, "finish_reason", None),
                "delta": plain,
                "logprobs": _logprobs(getattr(choice, "logprobs", None)),
            }
        )
    return {
        "choices": choices,
        "usage": getattr(chunk, "usage", None),
        "model": getattr(chunk, "model", None),
    }


async def _stop_logging_worker() -> None:
    """Stop litellm's logging worker when it runs on this event loop. litellm starts it, a
    task on the loop of its first call, and never stops it: a gateway's loop that ends with it
    pending leaves a coroutine that is destroyed later, on whatever runs then ("Event loop is
    closed")."""
    module = importlib.import_module("litellm.litellm_core_utils.logging_worker")
    worker = getattr(module, "GLOBAL_LOGGING_WORKER", None)
    # Its tasks belong to one loop; another loop's are not ours to wait for.
    if worker is not None and getattr(worker, "_bound_loop", None) is asyncio.get_running_loop():
        await worker.stop(timeout=1.0)


def _backend_finished(chunks: Any) -> bool:
    """Whether the backend itself sent a finish reason. litellm's stream wrapper invents
    ``finish_reason: stop`` when a non-OpenAI stream (e.g. ``gemini/``) simply ends; its
    ``received_finish_reason`` / ``intermittent_finish_reason`` record what really arrived.
    If a litellm upgrade drops those attributes, the chunks' own finish reason is trusted."""
    names = ("received_finish_reason", "intermittent_finish_reason")
    if not all(hasattr(chunks, n) for n in names):
        return True
    return any(getattr(chunks, n) is not None for n in names)
