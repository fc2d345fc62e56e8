"""Google Gemini over its REST API, the default primary.

Direct REST on the shared aiohttp session rather than google-genai or litellm: the primary is on
every request's path and those clients cost 10-35x more CPU per call (see docs/benchmarks.md).
Wire format: ``POST /{version}/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``, key in ``x-goog-api-key``; the mapping of requests and
answers (tools, function calls, thought signatures) is in :mod:`standby.providers.gemini_wire`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from standby.capabilities import Need, missing
from standby.config import GeminiBackend
from standby.errors import UpstreamBlocked, UpstreamConnectError
from standby.protocol import ChatRequest, Completion, Delta, FinishReason, Usage
from standby.providers import http
from standby.providers.gemini_controls import Controls
from standby.providers.gemini_wire import Parsed, request_body
from standby.tool_calls import ToolCallDelta

# Gemini has no logit bias; everything else a request can need it does (media: inlineData
# parts, gemini_wire).
GEMINI_SUPPORTS: frozenset[Need] = frozenset(
    {"tools", "structured_output", "image", "audio", "file"}
)


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
        self.supports: frozenset[Need] = GEMINI_SUPPORTS
        self._controls = Controls.of(config)

    async def start(self) -> None:
        self._session = http.new_session(self.config.timeouts)

    def ready(self) -> bool:
        return self._session is not None

    def unsupported(self, request: ChatRequest) -> str | None:
        return missing(request, self.supports, "Gemini")

    async def close(self) -> None:
        await http.aclose_quietly(self._session)
        self._session = None

    def _check_blocked(self, parsed: Parsed) -> None:
        if parsed.blocked and self.config.on_blocked == "fallback":
            raise UpstreamBlocked(self.name, parsed.blocked)

    async def complete(self, request: ChatRequest) -> Completion:
        assert self._session is not None, "start() not called"
        data = orjson.dumps(request_body(request, self._controls))
        payload = await http.post_json(
            self._session, self.name, self._url, data, self._headers, self.config.timeouts
        )
        parsed = Parsed(payload, self.name)
        self._check_blocked(parsed)
        finish = parsed.finish or ("tool_calls" if parsed.calls else "stop")
        return Completion(
            text=parsed.text,
            finish_reason=finish,
            usage=parsed.usage or Usage(),
            model_version=parsed.version,
            tool_calls=parsed.calls[:1] if request.parallel_tool_calls is False else parsed.calls,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        assert self._session is not None, "start() not called"
        data = orjson.dumps(request_body(request, self._controls))
        finish: FinishReason | None = None
        usage: Usage | None = None
        version: str | None = None
        calls = 0  # calls so far: the index of the next one
        try:
            async with self._session.post(
                self._stream_url, data=http.body(data), headers=self._headers
            ) as resp:
                await http.raise_for_status(self.name, resp)
                async for batch in http.sse_batches(resp):
                    texts = []
                    pieces: list[ToolCallDelta] = []
                    for payload in batch:
                        parsed = Parsed(orjson.loads(payload), self.name)
                        self._check_blocked(parsed)
                        usage = parsed.usage or usage
                        version = parsed.version or version
                        finish = parsed.finish or finish
                        texts.append(parsed.text)
                        for c in parsed.calls:
                            if calls and request.parallel_tool_calls is False:
                                break  # Gemini has no such switch: the first call stands
                            # Gemini sends each functionCall part whole: one piece per call.
                            pieces.append(
                                ToolCallDelta(calls, c.id, c.name, c.arguments, c.signature)
                            )
                            calls += 1
                    text = "".join(texts)
                    if finish is not None:
                        # Gemini said the answer is complete: the last text, the finish and the
                        # usage travel together (one piece, one write to the client).
                        if calls and finish == "stop":
                            finish = "tool_calls"
                        final = Delta(
                            text,
                            finish,
                            usage=usage,
                            model_version=version,
                            tool_calls=tuple(pieces),
                        )
                        break
                    if text or pieces:
                        yield Delta(text=text, tool_calls=tuple(pieces))
        except Exception as e:
            raise http.translate(self.name, e, self.config.timeouts.connect_s) from e
        if finish is None:
            # The connection closed cleanly but Gemini never said the answer was finished.
            raise UpstreamConnectError(self.name, "stream ended without a finishReason")
        yield final
