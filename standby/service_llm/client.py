"""The service-LLM client: one hosted model (Gemini direct, or anything litellm knows) used as
a tool by the judge and the synthetic-data generator, built on the gateway's providers.

    async with ServiceLLM(settings, concurrency=8) as llm:
        result = await llm.generate_json(prompt, MyModel)   # JsonResult: .ok, .value, .error
        completion = await llm.complete("plain text prompt")

- pacing: requests leave at most ``rate_limit_per_minute`` a minute, evenly spaced; a 429's
  Retry-After holds every worker off, not just the one that saw it;
- at most ``concurrency`` calls in flight;
- retries with exponential backoff and jitter on 429, 5xx, timeouts and broken connections;
  401/403/404 (bad key, unknown model) raise :class:`ServiceLLMConfigError` at once: retrying
  cannot help and every later call would fail the same way;
- ``generate_json`` asks for JSON by schema, reads it (also from code fences), validates it and
  re-asks up to ``service_llm_reasks`` times, quoting the problem; after that, or when the
  retries run out, it returns a failed :class:`JsonResult` and the caller's run goes on;
- :class:`CallStats` counts calls, retries, re-asks and tokens for cost reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel

from standby import scrub
from standby.config import GeminiBackend, LiteLLMBackend, Timeouts
from standby.errors import (
    CLIENT_STATUSES,
    StandbyError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from standby.protocol import ChatRequest, Completion, Message
from standby.providers.base import Provider, build_provider
from standby.service_llm.jsonout import MalformedOutput, parse_output, schema_of
from standby.service_llm.pacing import Pacer, backoff_delay
from standby.service_llm.settings import ServiceLLMSettings

log = logging.getLogger("standby.service_llm")

T = TypeVar("T", bound=BaseModel)

REASK = (
    "Your previous reply could not be used: {reason}. Reply again with only a JSON object that "
    "matches the requested schema, and nothing else."
)
_ECHO_LIMIT = 4000  # characters of a bad answer quoted back in the re-ask


class ServiceLLMError(StandbyError):
    """A call to the service LLM failed for good."""


class ServiceLLMConfigError(ServiceLLMError):
    """The service LLM refuses us (bad key, no such model): stop the run, say why."""


class ServiceLLMUnavailable(ServiceLLMError):
    """Retries ran out (429s, 5xx, timeouts), or the service rejected this one request."""


@dataclass
class CallStats:
    """What the service LLM cost: ``calls`` are HTTP requests sent (retries and re-asks
    included); ``malformed`` answers that were not usable JSON; ``json_failed`` results given
    up on."""

    calls: int = 0
    ok: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    gave_up: int = 0
    malformed: int = 0
    reasks: int = 0
    json_failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        out = asdict(self)
        out["total_tokens"] = self.prompt_tokens + self.completion_tokens
        return out


@dataclass(frozen=True)
class JsonResult(Generic[T]):
    """A structured answer, or why there is none. ``answers`` counts the answers read (1 + the
    re-asks); ``raw`` is the last answer's text."""

    value: T | None
    error: str | None = None
    answers: int = 0
    raw: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> T:
        if self.value is None:
            raise ServiceLLMError(f"no usable answer: {self.error}")
        return self.value


def build_backend(settings: ServiceLLMSettings) -> GeminiBackend | LiteLLMBackend:
    """The provider config for the service LLM (the same backends the gateway uses)."""
    timeout = settings.service_llm_timeout_s
    timeouts = Timeouts(connect_s=min(10.0, timeout), total_s=timeout)
    key = settings.api_key()
    if key:  # the judge's and synth's errors and logs must not hold it either
        scrub.register([key])
    if settings.service_llm_provider == "gemini":
        data: dict[str, Any] = {
            "type": "gemini",
            "model": settings.service_model_name.removeprefix("models/"),
            "api_key": key,
            "timeouts": timeouts,
        }
        if settings.service_llm_base_url:
            data["base_url"] = settings.service_llm_base_url
        return GeminiBackend.model_validate(data)
    return LiteLLMBackend.model_validate(
        {
            "type": "litellm",
            "model": settings.service_model_name,
            "api_key": key,
            "api_base": settings.service_llm_base_url,
            "timeouts": timeouts,
        }
    )


class ServiceLLM:
    """A paced, retrying client of one hosted model (see the module doc)."""

    def __init__(
        self,
        settings: ServiceLLMSettings,
        *,
        concurrency: int = 4,
        provider: Provider | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.settings = settings
        self.provider = provider or build_provider("service-llm", build_backend(settings))
        self.pacer = Pacer(settings.rate_limit_per_minute)
        self.stats = CallStats()
        self.generation = settings.generation_config()
        self._slots = asyncio.Semaphore(concurrency)
        self._started = False

    @property
    def model_id(self) -> str:
        """``provider/model``, as recorded next to every judgement or generated row."""
        s = self.settings
        name = s.service_model_name
        return name if s.service_llm_provider == "litellm" else f"gemini/{name}"

    async def start(self) -> None:
        if not self._started:
            await self.provider.start()
            self._started = True

    async def close(self) -> None:
        if self._started:
            await self.provider.close()
            self._started = False

    async def __aenter__(self) -> ServiceLLM:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _request(
        self,
        prompt: str | Sequence[Message],
        system: str | None,
        response_format: dict[str, Any] | None,
        overrides: dict[str, Any],
    ) -> ChatRequest:
        messages = (Message("user", prompt),) if isinstance(prompt, str) else tuple(prompt)
        if system:
            messages = (Message("system", system), *messages)
        gen = {**self.generation, **{k: v for k, v in overrides.items() if v is not None}}
        return ChatRequest(
            messages=messages,
            temperature=gen.get("temperature"),
            top_p=gen.get("top_p"),
            max_tokens=gen.get("max_tokens"),
            seed=gen.get("seed"),
            response_format=response_format,
        )

    async def complete(
        self,
        prompt: str | Sequence[Message],
        *,
        system: str | None = None,
        response_format: dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> Completion:
        """One answer, paced and retried. Raises ServiceLLMConfigError (stop the run) or
        ServiceLLMUnavailable (this call failed; others may still work)."""
        request = self._request(
            prompt,
            system,
            response_format,
            {"temperature": temperature, "max_tokens": max_tokens, "seed": seed},
        )
        async with self._slots:
            return await self._with_retries(request)

    async def _with_retries(self, request: ChatRequest) -> Completion:
        s = self.settings
        if not self._started:
            await self.start()
        error: UpstreamError | None = None
        for attempt in range(s.service_llm_max_retries + 1):
            if attempt:
                self.stats.retries += 1
            await self.pacer.acquire()
            self.stats.calls += 1
            try:
                completion = await asyncio.wait_for(
                    self.provider.complete(request), s.service_llm_timeout_s
                )
            except TimeoutError:
                error = UpstreamTimeout(self.provider.name, "total", s.service_llm_timeout_s)
                self.stats.timeouts += 1
            except UpstreamStatusError as e:
                error = e
                self._refuse_for_good(e)
            except UpstreamError as e:
                error = e
                self.stats.timeouts += isinstance(e, UpstreamTimeout)
            else:
                self.stats.ok += 1
                self.stats.prompt_tokens += completion.usage.prompt_tokens
                self.stats.completion_tokens += completion.usage.completion_tokens
                return completion
            if attempt == s.service_llm_max_retries:
                break
            hint = error.retry_after if isinstance(error, UpstreamStatusError) else None
            if hint is not None:
                self.pacer.hold_off(hint)
            delay = backoff_delay(
                attempt, s.service_llm_backoff_s, s.service_llm_max_backoff_s, hint
            )
            log.info("%s: %s; retry %d in %.2fs", self.model_id, error, attempt + 1, delay)
            await asyncio.sleep(delay)
        self.stats.gave_up += 1
        tries = s.service_llm_max_retries + 1
        raise ServiceLLMUnavailable(f"{self.model_id}: {error} (after {tries} attempts)")

    def _refuse_for_good(self, e: UpstreamStatusError) -> None:
        """Count a status error; raise at once where retrying cannot help."""
        if e.status == 429:
            self.stats.rate_limited += 1
        elif e.status >= 500:
            self.stats.server_errors += 1
        elif e.status in CLIENT_STATUSES and e.status != 404:
            raise ServiceLLMUnavailable(f"{self.model_id} rejected the request: {e.message}")
        else:  # 401, 403, 404 and anything else: our key or model name is wrong
            raise ServiceLLMConfigError(f"{self.model_id}: {e.message}")

    @overload
    async def generate_json(
        self,
        prompt: str | Sequence[Message],
        shape: type[T],
        *,
        system: str | None = ...,
        temperature: float | None = ...,
        max_tokens: int | None = ...,
        name: str = ...,
    ) -> JsonResult[T]: ...

    @overload
    async def generate_json(
        self,
        prompt: str | Sequence[Message],
        shape: dict[str, Any],
        *,
        system: str | None = ...,
        temperature: float | None = ...,
        max_tokens: int | None = ...,
        name: str = ...,
    ) -> JsonResult[Any]: ...

    async def generate_json(
        self,
        prompt: str | Sequence[Message],
        shape: type[T] | dict[str, Any],
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        name: str = "response",
    ) -> JsonResult[Any]:
        """A JSON answer of ``shape`` (a pydantic model: the value is an instance; a JSON
        schema: the parsed JSON). Never raises for bad answers or exhausted retries: the
        result says what went wrong. Raises ServiceLLMConfigError only."""
        fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema_of(shape)}}
        base = (Message("user", prompt),) if isinstance(prompt, str) else tuple(prompt)
        messages = base
        raw: str | None = None
        reason = "no answer"
        answers = 0
        for attempt in range(self.settings.service_llm_reasks + 1):
            if attempt:
                self.stats.reasks += 1
            try:
                completion = await self.complete(
                    messages,
                    system=system,
                    response_format=fmt,
                    temperature=temperature,
                    max_tokens=max_tokens,
                )
            except ServiceLLMUnavailable as e:
                self.stats.json_failed += 1
                return JsonResult(None, str(e), answers, raw)
            answers += 1
            raw = completion.text
            try:
                return JsonResult(parse_output(raw, shape), None, answers, raw)
            except MalformedOutput as e:
                self.stats.malformed += 1
                reason = str(e)
                if completion.finish_reason == "length":
                    reason += " (the answer was cut at the token limit)"
            messages = (
                *base,
                Message("assistant", raw[:_ECHO_LIMIT]),
                Message("user", REASK.format(reason=reason)),
            )
        self.stats.json_failed += 1
        return JsonResult(None, f"malformed answer {answers} times: {reason}", answers, raw)
