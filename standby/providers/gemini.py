"""Google Gemini over its REST API, the default primary.

Direct REST on the shared aiohttp session rather than google-genai or litellm: the primary is on
every request's path and those clients cost 10-35x more CPU per call (see docs/benchmarks.md).
Wire format: ``POST /{version}/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``, key in ``x-goog-api-key``; the mapping of requests and
answers (tools, function calls, thought signatures) is in :mod:`standby.providers.gemini_wire`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from standby.capabilities import Need, missing
from standby.config import GeminiBackend
from standby.errors import UpstreamBlocked, UpstreamConnectError, UpstreamProtocolError
from standby.protocol import ChatRequest, Completion, Delta, FinishReason, Usage
from standby.providers import http
from standby.providers.gemini_controls import Controls
from standby.providers.gemini_wire import Choice, Parsed, request_body, usage
from standby.tool_calls import ToolCallDelta

# Gemini has no logit bias; everything else a request can need it does (media: inlineData
# parts, gemini_wire; several choices:
# ``candidateCount``, up to 8; logprobs: ``responseLogprobs`` / ``logprobs``).
GEMINI_SUPPORTS: frozenset[Need] = frozenset(
    {"tools", "structured_output", "choices", "logprobs", "image", "audio", "file"}
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
            self._session,
            self.name,
            self._url,
            data,
            self._headers,
            self.config.timeouts,
            self.config.limits,
        )
        parsed = Parsed(payload, self.name)
        self._check_blocked(parsed)
        # A refused prompt has no candidates: each choice asked for is an empty refusal.
        choices = [_completion(c, request) for c in parsed.choices] or [
            Completion("", parsed.finish or "content_filter") for _ in range(request.n)
        ]
        if request.logprobs and parsed.choices:
            _require_logprobs(self.name, [(c.text, c.logprobs) for c in choices])
        first = choices[0]
        first.usage = parsed.usage or Usage()  # Gemini's counts cover every candidate
        first.model_version = parsed.version
        first.alternatives = tuple(choices[1:])
        return first

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        assert self._session is not None, "start() not called"
        data = orjson.dumps(request_body(request, self._controls))
        state = (
            _OneStreamed(request, self.name) if request.n == 1 else _Streamed(request, self.name)
        )
        final: list[Delta] = []
        try:
            async with self._session.post(
                self._stream_url, data=http.body(data), headers=self._headers
            ) as resp:
                await http.raise_for_status(self.name, resp)
                # Closed here, not by the garbage collector: a generator left after a `break`
                # is finalized through the loop's thread-safe wake-up (~0.1 ms a request).
                batches = http.sse_batches(self.name, resp, self.config.limits)
                async with contextlib.aclosing(batches):
                    async for batch in batches:
                        for payload in batch:
                            parsed = Parsed(orjson.loads(payload), self.name)
                            self._check_blocked(parsed)
                            state.feed(parsed)
                        deltas = state.deltas()
                        if state.done():
                            # Gemini said every candidate is complete: the last pieces, the
                            # finishes and the usage go out together (one write to the client).
                            final = deltas
                            if final:  # the last usageMetadata's counts, read once, here
                                final[-1].usage = usage(state.meta)
                            break
                        for delta in deltas:
                            yield delta
        except Exception as e:
            raise http.translate(self.name, e, self.config.timeouts.connect_s) from e
        if not final:
            # The connection closed cleanly but Gemini never said the answer was finished.
            raise UpstreamConnectError(self.name, "stream ended without a finishReason")
        final[-1].model_version = state.version
        for delta in final:
            yield delta


class _OneStreamed:
    """``_Streamed`` for one candidate (``n`` = 1, the usual request): the same Deltas, without
    the maps and the sorting that several candidates need."""

    __slots__ = (
        "_finish",
        "_index",
        "_logprobs",
        "_pieces",
        "_texts",
        "_thoughts",
        "backend",
        "calls",
        "finished",
        "meta",
        "request",
        "version",
    )

    def __init__(self, request: ChatRequest, backend: str) -> None:
        self.request = request
        self.backend = backend
        self.calls = 0
        self.finished = False
        self.meta: dict[str, Any] | None = None  # the last usageMetadata
        self.version: str | None = None
        # What the read being fed said.
        self._index = 0
        self._texts: list[str] = []
        self._thoughts: list[str] = []
        self._pieces: list[ToolCallDelta] = []
        self._logprobs: list[dict[str, Any]] | None = None
        self._finish: FinishReason | None = None

    def feed(self, parsed: Parsed) -> None:
        if isinstance(parsed.meta, dict):  # read into counts once, at the end (usage())
            self.meta = parsed.meta
        self.version = parsed.version or self.version
        if not parsed.choices and parsed.finish is not None:
            self._finish = self._finish or parsed.finish  # a refused prompt
        for c in parsed.choices:
            self._index = c.index
            self._texts.append(c.text)
            if c.thought and self.request.thought_summaries:
                self._thoughts.append(c.thought)
            if c.logprobs is not None:
                self._logprobs = (self._logprobs or []) + c.logprobs
            for call in c.calls:
                if self.calls and self.request.parallel_tool_calls is False:
                    break  # Gemini has no such switch: the first call stands
                self._pieces.append(
                    ToolCallDelta(self.calls, call.id, call.name, call.arguments, call.signature)
                )
                self.calls += 1
            self._finish = c.finish or self._finish

    def deltas(self) -> list[Delta]:
        """The Delta of the read just fed (none when it said nothing); the finish once."""
        finish = None if self.finished else self._finish
        if finish is not None:
            self.finished = True
            if self.calls and finish == "stop":
                finish = "tool_calls"
        texts, pieces, logprobs = self._texts, self._pieces, self._logprobs
        text = texts[0] if len(texts) == 1 else "".join(texts)
        thought = "".join(self._thoughts) if self._thoughts else ""
        out = []
        if text or thought or pieces or logprobs or finish is not None:
            out.append(
                Delta(
                    text,
                    finish,
                    tool_calls=tuple(pieces),
                    logprobs=logprobs,
                    index=self._index,
                    reasoning=thought,
                )
            )
        self._texts, self._pieces, self._logprobs, self._finish = [], [], None, None
        if thought:
            self._thoughts = []
        if self.request.logprobs:
            _require_logprobs(self.backend, [(d.text, d.logprobs) for d in out])
        return out

    def done(self) -> bool:
        return self.finished


def _require_logprobs(backend: str, texts: list[tuple[str, list[dict[str, Any]] | None]]) -> None:
    """Text without the ``logprobsResult`` asked for: a failure of this backend (a model that
    ignores ``responseLogprobs``), never an answer without them."""
    if any(text and logprobs is None for text, logprobs in texts):
        raise UpstreamProtocolError(
            backend, "the answer has no logprobsResult, which was asked for"
        )


def _completion(choice: Choice, request: ChatRequest) -> Completion:
    """One candidate of a whole answer as a choice."""
    calls = choice.calls[:1] if request.parallel_tool_calls is False else choice.calls
    finish = choice.finish or ("tool_calls" if calls else "stop")
    return Completion(
        text=choice.text,
        finish_reason=finish,
        tool_calls=calls,
        logprobs=choice.logprobs,
        reasoning=choice.thought if request.thought_summaries else "",
    )


class _Piece:
    """What one network read said about one candidate."""

    __slots__ = ("finish", "logprobs", "pieces", "texts", "thoughts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.thoughts: list[str] = []
        self.pieces: list[ToolCallDelta] = []
        self.logprobs: list[dict[str, Any]] | None = None
        self.finish: FinishReason | None = None


class _Streamed:
    """A stream's candidates so far: each one's calls (their count is the next call's index)
    and finish; what the chunks of one network read add, as one Delta per candidate."""

    def __init__(self, request: ChatRequest, backend: str) -> None:
        self.request = request
        self.backend = backend
        self.calls: dict[int, int] = {}
        self.finished: set[int] = set()
        self.meta: dict[str, Any] | None = None  # the last usageMetadata
        self.version: str | None = None
        self._read: dict[int, _Piece] = {}

    def feed(self, parsed: Parsed) -> None:
        if isinstance(parsed.meta, dict):  # read into counts once, at the end (usage())
            self.meta = parsed.meta
        self.version = parsed.version or self.version
        if not parsed.choices and parsed.finish is not None:
            # A refused prompt: every candidate ends, empty.
            for index in range(self.request.n):
                self._piece(index).finish = self._piece(index).finish or parsed.finish
        for c in parsed.choices:
            piece = self._piece(c.index)
            piece.texts.append(c.text)
            if c.thought and self.request.thought_summaries:
                piece.thoughts.append(c.thought)
            if c.logprobs is not None:
                piece.logprobs = (piece.logprobs or []) + c.logprobs
            for call in c.calls:
                made = self.calls.get(c.index, 0)
                if made and self.request.parallel_tool_calls is False:
                    break  # Gemini has no such switch: the first call stands
                # Gemini sends each functionCall part whole: one piece per call.
                piece.pieces.append(
                    ToolCallDelta(made, call.id, call.name, call.arguments, call.signature)
                )
                self.calls[c.index] = made + 1
            piece.finish = c.finish or piece.finish

    def _piece(self, index: int) -> _Piece:
        piece = self._read.get(index)
        if piece is None:
            piece = self._read[index] = _Piece()
        return piece

    def deltas(self) -> list[Delta]:
        """The Deltas of the read just fed, by candidate; a candidate's finish once."""
        out = []
        for index in sorted(self._read):
            piece = self._read[index]
            finish = None if index in self.finished else piece.finish
            if finish is not None:
                self.finished.add(index)
                if self.calls.get(index) and finish == "stop":
                    finish = "tool_calls"
            text = "".join(piece.texts)
            thought = "".join(piece.thoughts)
            if text or thought or piece.pieces or piece.logprobs or finish is not None:
                out.append(
                    Delta(
                        text,
                        finish,
                        tool_calls=tuple(piece.pieces),
                        logprobs=piece.logprobs,
                        index=index,
                        reasoning=thought,
                    )
                )
        self._read = {}
        if self.request.logprobs:
            _require_logprobs(self.backend, [(d.text, d.logprobs) for d in out])
        return out

    def done(self) -> bool:
        return len(self.finished) >= self.request.n
