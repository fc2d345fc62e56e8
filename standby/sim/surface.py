"""What each protocol surface of the simulated Gemini (native REST, OpenAI-compatible) provides
to the shared fault-and-answer flow in :mod:`standby.sim.gemini`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web

from standby.sim.answers import Answer, SimRequest

Outcome = Literal["ok", "safety", "blocked", "recitation", "malformed_call"]

GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",  # Google has no canonical code for these two
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_T = TypeVar("_T")
_CACHE_BODIES_UP_TO = 4096  # bytes: benchmarks and tests repeat small bodies

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_JSON_STREAM_HEADERS = {"Content-Type": "application/json"}


class BadRequest(Exception):
    """The request body is malformed: a 400 on whichever surface received it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def cached_by_body(parse: Callable[[bytes], _T]) -> Callable[[bytes], _T]:
    """Memoize a pure body parser for small bodies (a result must never be mutated)."""
    cached = lru_cache(maxsize=1024)(parse)

    def wrapper(body: bytes) -> _T:
        return cached(body) if len(body) <= _CACHE_BODIES_UP_TO else parse(body)

    wrapper.__doc__ = parse.__doc__
    return wrapper


def get_field(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """A field under either spelling: proto3 JSON accepts both (litellm sends snake_case,
    google-genai camelCase)."""
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def retry_info(seconds: int) -> dict[str, str]:
    """The ``google.rpc.RetryInfo`` detail Gemini attaches to a 429."""
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds}s"}


@dataclass(frozen=True, slots=True)
class Turn:
    """One request to answer: the ``model`` asked, the server's ``seq`` number for it, the
    parsed ``req``, and the ``scripted`` answer that replaces the simulated one, if any."""

    model: str
    seq: int
    req: SimRequest
    scripted: Answer | None = None


class Surface:
    """One protocol surface: how errors, whole answers and stream frames look on the wire."""

    def error(self, status: int, message: str, retry_after: int | None = None) -> web.Response:
        raise NotImplementedError

    def body(self, turn: Turn, outcome: Outcome) -> bytes:
        """The whole (non-streamed) answer body."""
        raise NotImplementedError

    def frames(
        self, turn: Turn, outcome: Outcome, extra: dict[str, Any]
    ) -> tuple[list[bytes], int]:
        """Every frame of the stream, and the index of the frame that finishes the answer
        (a ``cut-<n>`` fault never sends that one)."""
        raise NotImplementedError

    def malformed_frame(self, extra: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def stream_headers(self, extra: dict[str, Any]) -> dict[str, str]:
        return _SSE_HEADERS if extra.get("sse", True) else _JSON_STREAM_HEADERS
