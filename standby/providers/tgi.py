"""Text Generation Inference's native API (``POST /`` with ``stream``) through
``huggingface_hub.AsyncInferenceClient.text_generation``.

TGI's native route takes a prompt string, so the chat is rendered here (by
``standby.chat_format``): with the chat template of ``chat_template_model`` when set, else with
Gemma's turn format. Facts about the client that
shape this module (huggingface_hub 2.4):

- It sends the locally saved Hub token (``HF_TOKEN`` / ``hf auth login``) as Bearer to *any*
  ``base_url`` when no key is given; we always pass a key and drop the header when the
  backend has none, so a user's Hub token never reaches a self-hosted server.
- It keeps every streamed response open on the client's exit stack until ``close()``; a
  client per request on one pooled httpx2 client releases each connection when its request
  ends, also when the router abandons a stream. That client reads through ``CappedTransport``,
  which holds answers to the backend's ``limits``.
- Once a TGI stream has started (HTTP 200), TGI reports errors as SSE events, which the client
  raises as ``OverloadedError`` / ``ValidationError`` / ``GenerationError`` ... with no status
  code; they are mapped to TGI's own status for that error type.
- TGI keeps a matched stop sequence in its output; OpenAI semantics drop it, so we do too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextvars import ContextVar
from typing import Any, cast

import httpx2
from huggingface_hub import AsyncInferenceClient, TextGenerationInputGrammarType
from huggingface_hub.errors import (
    GenerationError,
    HfHubHTTPError,
    IncompleteGenerationError,
    InferenceTimeoutError,
    OverloadedError,
    TextGenerationError,
    ValidationError,
)

from standby.capabilities import Need, missing
from standby.chat_format import chat_of, chat_template, gemma_prompt, render_text
from standby.config import TGIBackend
from standby.errors import (
    ConfigError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from standby.protocol import ChatRequest, Completion, Delta, FinishReason, Usage
from standby.providers import http, tgi_grammar
from standby.providers.capped_transport import IDENTITY, CappedTransport

# TGI answers these error types with these statuses (router/src/server.rs); inside a stream
# the status is 200 and only the type is left.
_TGI_STATUS: tuple[tuple[type[TextGenerationError], int], ...] = (
    (ValidationError, 422),
    (GenerationError, 424),
    (OverloadedError, 429),
    (IncompleteGenerationError, 500),
)
_FINISH: dict[str, FinishReason] = {
    "length": "length",
    "eos_token": "stop",
    "stop_sequence": "stop",
}
_MAX_ERROR_BODY = 65_536
# TGI's JSON answer counts the prompt only in its `x-prompt-tokens` header, which the client
# does not return; the response hook drops it here for the request running in this task.
_prompt_tokens: ContextVar[list[int] | None] = ContextVar("tgi_prompt_tokens", default=None)


def _grammar(fmt: dict[str, Any] | None) -> TextGenerationInputGrammarType | None:
    """OpenAI ``response_format`` as TGI's JSON grammar (``tgi_grammar``)."""
    found = tgi_grammar.grammar(fmt)
    if found is None:
        return None
    return TextGenerationInputGrammarType(type="json", value=found["value"])


def _strip_stop(text: str, stops: Sequence[str]) -> str:
    for s in stops:
        if s and text.endswith(s):
            return text[: -len(s)]
    return text


def _held(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` might be the start of a stop sequence, so must
    not be sent yet (TGI would include the whole sequence; we drop it)."""
    for k in range(min(len(text), max((len(s) for s in stops), default=1) - 1), 0, -1):
        tail = text[-k:]
        if any(s.startswith(tail) for s in stops):
            return k
    return 0


def _status_error(backend: str, status: int, message: str, headers: Any = None) -> UpstreamError:
    retry = http.retry_after(headers) if headers is not None else None
    return UpstreamStatusError(backend, status, message[: http.MAX_ERROR_TEXT], retry_after=retry)


def translate(backend: str, exc: BaseException, connect_s: float) -> UpstreamError:
    """The one mapping from huggingface_hub / httpx2 exceptions to ours, most specific first."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TextGenerationError):  # TGI's {"error", "error_type"}
        cause = exc.__cause__
        if isinstance(cause, HfHubHTTPError):
            resp = cause.response
            return _status_error(backend, resp.status_code, str(exc), resp.headers)
        status = next((s for t, s in _TGI_STATUS if isinstance(exc, t)), 500)
        return _status_error(backend, status, str(exc) or type(exc).__name__)
    if isinstance(exc, HfHubHTTPError):
        resp = exc.response
        message = exc.server_message or resp.reason_phrase or "error"
        return _status_error(backend, resp.status_code, message, resp.headers)
    if isinstance(exc, InferenceTimeoutError | httpx2.TimeoutException):
        # Only the connect timeout is configured; the router owns every other limit.
        return UpstreamTimeout(backend, "connect", connect_s)
    if isinstance(exc, httpx2.ConnectError):
        return UpstreamConnectError(backend, "cannot connect")
    if isinstance(exc, httpx2.NetworkError | httpx2.RemoteProtocolError | ConnectionError):
        return UpstreamConnectError(backend, "connection closed by the backend")
    if isinstance(exc, httpx2.HTTPError):
        return UpstreamProtocolError(backend, type(exc).__name__)
    if isinstance(exc, ValueError | TypeError | KeyError | AttributeError):
        # Raised by the client's parsers on a body that is not TGI's JSON.
        return UpstreamProtocolError(backend, f"malformed response ({type(exc).__name__})")
    raise exc


async def _on_response(response: httpx2.Response) -> None:
    """Keep TGI's prompt-token count; load a small error body before the client raises, so
    its message is available (huggingface_hub's own client does the same)."""
    box = _prompt_tokens.get()
    count = response.headers.get("x-prompt-tokens", "")
    if box is not None and count.isdigit():
        box.append(int(count))
    if response.status_code >= 400:
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) < _MAX_ERROR_BODY:
            await response.aread()


class _RequestClient(AsyncInferenceClient):
    """A client for one request that borrows the provider's pooled httpx2 client."""

    def __init__(self, pool: httpx2.AsyncClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool = pool

    async def _get_async_client(self) -> httpx2.AsyncClient:
        return self._pool


# response_format becomes TGI's JSON grammar (json_schema only: ``tgi_grammar``).
TGI_SUPPORTS: frozenset[Need] = frozenset({"structured_output"})


class TGIProvider:
    """One TGI server, spoken to in its native protocol."""

    def __init__(self, name: str, config: TGIBackend) -> None:
        self.name = name
        self.config = config
        self._pool: httpx2.AsyncClient | None = None
        self._tokenizer: Any = None
        self._client_kwargs: dict[str, Any] = {"base_url": config.base_url.rstrip("/")}
        if config.api_key is not None:
            self._client_kwargs["api_key"] = config.api_key.get_secret_value()
        else:
            # A placeholder key stops the client from looking up the user's Hub token; the
            # None header then removes the Authorization header it would build from it.
            self._client_kwargs["api_key"] = "unused"
            self._client_kwargs["headers"] = {"authorization": None}

    async def start(self) -> None:
        if self.config.chat_template_model and self._tokenizer is None:
            self._tokenizer = await asyncio.to_thread(self._load_tokenizer)
        if self._pool is None:
            pool = httpx2.Limits(max_connections=256, max_keepalive_connections=64)
            inner = httpx2.AsyncHTTPTransport(limits=pool, trust_env=False)
            self._pool = httpx2.AsyncClient(
                timeout=httpx2.Timeout(None, connect=self.config.timeouts.connect_s),
                transport=CappedTransport(self.name, self.config.limits, inner),
                headers=IDENTITY,
                event_hooks={"response": [_on_response]},
                trust_env=False,
            )

    def _load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        path = self.config.chat_template_model
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"backends.{self.name}.chat_template_model: cannot load a tokenizer from "
                f"{path!r}: {e}"
            ) from None
        if chat_template(tokenizer) is None:
            raise ConfigError(
                f"backends.{self.name}.chat_template_model: {path!r} has no chat template"
            )
        return tokenizer

    def ready(self) -> bool:
        return self._pool is not None and not self._pool.is_closed

    def unsupported(self, request: ChatRequest) -> str | None:
        if request.uses_tools:
            return "TGI's native API has no tool calling (use an openai-type backend for TGI)"
        if request.response_format is not None and not self.config.structured_output:
            return "configured without grammar support (structured_output: false)"
        if (why := tgi_grammar.refusal(request.response_format)) is not None:
            return f"backend {self.name!r} (TGI): {why}"
        return missing(request, TGI_SUPPORTS, f"backend {self.name!r} (TGI)")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    def render(self, request: ChatRequest) -> str:
        """The prompt string TGI receives."""
        chat, cont = chat_of(request.messages), request.continue_final
        if self._tokenizer is None:
            return gemma_prompt(chat, continue_final=cont)
        try:
            return render_text(self._tokenizer, chat, continue_final=cont)
        except Exception as e:  # jinja2 / transformers: this template cannot render this chat
            raise UpstreamProtocolError(
                self.name, f"chat template cannot render the request: {e}"
            ) from e

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "details": True,
            "return_full_text": False,  # TGI's `/` defaults it to true for text-generation models
            "max_new_tokens": request.max_tokens or self.config.max_new_tokens,
            "stop": list(request.stop) or None,
            "seed": request.seed,
            # TGI's own frequency_penalty (OpenAI's range); it has no presence penalty, and its
            # repetition_penalty is another measure (a divisor), so presence_penalty is dropped.
            "frequency_penalty": request.frequency_penalty,
            "grammar": _grammar(request.response_format),
        }
        # TGI rejects temperature 0 and top_p outside (0, 1): greedy means do_sample false.
        t = request.temperature
        if t is not None:
            params["do_sample"] = t > 0
            params["temperature"] = t if t > 0 else None
        if request.top_p is not None and 0 < request.top_p < 1:
            params["top_p"] = request.top_p
        return params

    def _client(self) -> _RequestClient:
        assert self._pool is not None, "start() not called"
        timeout = httpx2.Timeout(None, connect=self.config.timeouts.connect_s)
        # The client passes `timeout` to httpx2 per request; it is typed float but any httpx2
        # timeout works, and None there would switch the connect timeout off.
        return _RequestClient(self._pool, timeout=cast(Any, timeout), **self._client_kwargs)

    async def complete(self, request: ChatRequest) -> Completion:
        prompt = self.render(request)
        client = self._client()
        prompt_tokens: list[int] = []
        box = _prompt_tokens.set(prompt_tokens)
        try:
            out = await client.text_generation(prompt, stream=False, **self._params(request))
            text = out.generated_text
            details = out.details
            if not isinstance(text, str) or details is None:
                raise UpstreamProtocolError(self.name, "response without generated_text/details")
            finish = _FINISH.get(str(details.finish_reason), "stop")
            usage = Usage(
                prompt_tokens[-1] if prompt_tokens else len(details.prefill or ()),
                int(details.generated_tokens or 0),
            )
        except Exception as e:
            raise translate(self.name, e, self.config.timeouts.connect_s) from e
        finally:
            _prompt_tokens.reset(box)
            await client.close()  # type: ignore[no-untyped-call]
        if details.finish_reason == "stop_sequence":
            text = _strip_stop(text, request.stop)
        return Completion(text=text, finish_reason=finish, usage=usage)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        prompt = self.render(request)
        stops = request.stop
        pending = ""
        final: Delta | None = None
        client = self._client()
        events: AsyncIterable[Any] | None = None
        try:
            events = await client.text_generation(prompt, stream=True, **self._params(request))
            async for event in events:
                token = event.token
                if token is None:
                    raise UpstreamProtocolError(self.name, "stream event without a token")
                if not token.special:
                    pending += token.text
                if event.details is not None:
                    reason = str(event.details.finish_reason)
                    if reason == "stop_sequence":
                        pending = _strip_stop(pending, stops)
                    usage = Usage(
                        int(event.details.input_length or 0),
                        int(event.details.generated_tokens or 0),
                    )
                    final = Delta(finish_reason=_FINISH.get(reason, "stop"), usage=usage)
                    break
                cut = len(pending) - _held(pending, stops) if stops else len(pending)
                if cut > 0:
                    text, pending = pending[:cut], pending[cut:]
                    yield Delta(text=text)
        except Exception as e:
            raise translate(self.name, e, self.config.timeouts.connect_s) from e
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
            await client.close()  # type: ignore[no-untyped-call]
        if final is None:
            # TGI always ends a stream with an event that carries the details.
            raise UpstreamConnectError(self.name, "stream ended before TGI's final event")
        if pending:
            yield Delta(text=pending)
        yield final
