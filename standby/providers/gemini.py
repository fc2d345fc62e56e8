"""Google Gemini over its REST API, the default primary.

Direct REST on the shared aiohttp session rather than google-genai or litellm: the primary is on
every request's path and those clients cost 10-35x more CPU per call (see docs/benchmarks.md).
Wire format: ``POST /{version}/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``, key in ``x-goog-api-key``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from standby.config import GeminiBackend
from standby.errors import UpstreamBlocked, UpstreamConnectError, UpstreamProtocolError
from standby.protocol import ChatRequest, Completion, Delta, FinishReason, Usage
from standby.providers import http

# Gemini finish reasons that mean "the model refused / was stopped by a filter".
BLOCKED_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "OTHER",
        "IMAGE_SAFETY",
        "LANGUAGE",
    }
)


def request_body(request: ChatRequest) -> dict[str, Any]:
    """Map the normalized request onto Gemini's ``GenerateContentRequest``."""
    system: list[dict[str, str]] = []
    contents: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role == "system":
            system.append({"text": m.content})
        else:
            role = "model" if m.role == "assistant" else "user"
            contents.append({"role": role, "parts": [{"text": m.content}]})
    gen: dict[str, Any] = {"candidateCount": 1}
    if request.temperature is not None:
        gen["temperature"] = request.temperature
    if request.top_p is not None:
        gen["topP"] = request.top_p
    if request.max_tokens is not None:
        gen["maxOutputTokens"] = request.max_tokens
    if request.stop:
        gen["stopSequences"] = list(request.stop)
    if request.seed is not None:
        gen["seed"] = request.seed
    fmt = request.response_format
    if fmt is not None:
        gen["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if fmt["type"] == "json_schema" and schema:
            gen["responseJsonSchema"] = schema
    body: dict[str, Any] = {"contents": contents, "generationConfig": gen}
    if system:
        body["systemInstruction"] = {"parts": system}
    return body


def _usage(meta: Any) -> Usage | None:
    if not isinstance(meta, dict):
        return None
    out = int(meta.get("candidatesTokenCount", 0)) + int(meta.get("thoughtsTokenCount", 0))
    return Usage(prompt_tokens=int(meta.get("promptTokenCount", 0)), completion_tokens=out)


class _Parsed:
    """One ``GenerateContentResponse`` reduced to what the gateway needs."""

    __slots__ = ("blocked", "finish", "text", "usage", "version")

    def __init__(self, payload: Any, backend: str) -> None:
        if not isinstance(payload, dict):
            raise UpstreamProtocolError(backend, "response is not a JSON object")
        self.usage = _usage(payload.get("usageMetadata"))
        self.version: str | None = payload.get("modelVersion")
        self.text = ""
        self.finish: FinishReason | None = None
        self.blocked: str | None = None
        feedback = payload.get("promptFeedback")
        candidates = payload.get("candidates")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self.blocked = f"prompt blocked: {feedback['blockReason']}"
            self.finish = "content_filter"
            return
        if not candidates:
            if "usageMetadata" in payload:  # a usage-only trailer chunk
                return
            self.blocked = "no candidates"
            self.finish = "content_filter"
            return
        cand = candidates[0]
        parts = (cand.get("content") or {}).get("parts") or ()
        self.text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
        reason = cand.get("finishReason")
        if reason is None or reason == "FINISH_REASON_UNSPECIFIED":
            return
        if reason == "MAX_TOKENS":
            self.finish = "length"
        elif reason in BLOCKED_REASONS:
            self.finish = "content_filter"
            self.blocked = f"finishReason {reason}"
        else:
            self.finish = "stop"


class GeminiProvider:
    """The Gemini primary. Blocked answers become ``finish_reason: content_filter`` unless the
    backend is configured with ``on_blocked: fallback``."""

    def __init__(self, name: str, config: GeminiBackend) -> None:
        self.name = name
        self.config = config
        base = f"{config.base_url.rstrip('/')}/{config.api_version}/models/{config.model}"
        self._url = f"{base}:generateContent"
        self._stream_url = f"{base}:streamGenerateContent?alt=sse"
        self._headers = {"content-type": "application/json"}
        if config.api_key is not None:
            self._headers["x-goog-api-key"] = config.api_key.get_secret_value()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = http.new_session(self.config.timeouts)

    def ready(self) -> bool:
        return self._session is not None

    def unsupported(self, request: ChatRequest) -> str | None:
        return None

    async def close(self) -> None:
        await http.aclose_quietly(self._session)
        self._session = None

    def _check_blocked(self, parsed: _Parsed) -> None:
        if parsed.blocked and self.config.on_blocked == "fallback":
            raise UpstreamBlocked(self.name, parsed.blocked)

    async def complete(self, request: ChatRequest) -> Completion:
        assert self._session is not None, "start() not called"
        data = orjson.dumps(request_body(request))
        payload = await http.post_json(
            self._session, self.name, self._url, data, self._headers, self.config.timeouts
        )
        parsed = _Parsed(payload, self.name)
        self._check_blocked(parsed)
        return Completion(
            text=parsed.text,
            finish_reason=parsed.finish or "stop",
            usage=parsed.usage or Usage(),
            model_version=parsed.version,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        assert self._session is not None, "start() not called"
        data = orjson.dumps(request_body(request))
        finish: FinishReason | None = None
        usage: Usage | None = None
        version: str | None = None
        try:
            async with self._session.post(
                self._stream_url, data=http.body(data), headers=self._headers
            ) as resp:
                await http.raise_for_status(self.name, resp)
                async for batch in http.sse_batches(resp):
                    texts = []
                    for payload in batch:
                        parsed = _Parsed(orjson.loads(payload), self.name)
                        self._check_blocked(parsed)
                        usage = parsed.usage or usage
                        version = parsed.version or version
                        finish = parsed.finish or finish
                        texts.append(parsed.text)
                    text = "".join(texts)
                    if finish is not None:
                        # Gemini said the answer is complete: the last text, the finish and the
                        # usage travel together (one piece, one write to the client).
                        final = Delta(text, finish, usage=usage, model_version=version)
                        break
                    if text:
                        yield Delta(text=text)
        except Exception as e:
            raise http.translate(self.name, e, self.config.timeouts.connect_s) from e
        if finish is None:
            # The connection closed cleanly but Gemini never said the answer was finished.
            raise UpstreamConnectError(self.name, "stream ended without a finishReason")
        yield final
