"""The one error hierarchy of standby.

    StandbyError                    (GatewayError: its old name, kept as an alias for a release)
     ├── ConfigError                 bad configuration file or flags (start-up fails with one line)
     ├── RequestError                the client's request is wrong: OpenAI error, no failover
     │    ├── AuthenticationError    401 missing / wrong gateway key
     │    ├── ModelNotFoundError     404 unknown model alias
     │    ├── BodyTooLargeError      413 request body over server.max_body_bytes
     │    ├── BodyTimeoutError       408 request body not received within server.body_timeout_s
     │    └── RateLimited            429 over server.rate_limit_per_key (Retry-After)
     ├── UpstreamError               a backend failed; carries the backend name
     │    ├── UpstreamTimeout        connect / first_token / idle / total
     │    ├── UpstreamConnectError   refused, reset, DNS failure
     │    ├── UpstreamStatusError    the backend answered an HTTP error status
     │    ├── UpstreamProtocolError  the backend answered something we cannot parse
     │    ├── UpstreamTooLarge       the answer went over one of backends.<name>.limits
     │    ├── UpstreamBlocked        the backend refused to answer (safety, recitation)
     │    ├── BackendBusy            a local backend's queue is full
     │    ├── Unsupported            skipped: the request needs what the backend cannot do
     │    └── BreakerOpen            skipped: the backend's circuit breaker is open
     ├── AllBackendsFailed           every backend of a route failed; keeps each error in order
     └── Overloaded                  503 at once: the gateway or route is at server.max_concurrency

Foreign exceptions (aiohttp, litellm, huggingface_hub, torch) are translated into these at one
boundary per provider; everything after that classifies by type and status code only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from standby.scrub import scrub_config, scrub_cut

# Status codes a backend returns when the *client's* request is at fault: no failover.
CLIENT_STATUSES = frozenset({400, 404, 413, 422})


# Every ``UpstreamError.reason`` (the ``reason`` label of standby_fallbacks_total).
FALLBACK_REASONS = (
    "timeout",
    "connect",
    "rate_limited",
    "server_error",
    "auth",
    "breaker_open",
    "mid_stream",
    "blocked",
    "busy",
    "unsupported",
    "too_large",
)


class StandbyError(Exception):
    """Base of every error standby raises on purpose."""


GatewayError = StandbyError  # the root's first name; importers move to StandbyError


@dataclass(frozen=True, slots=True)
class Problem:
    """The first problem of a pydantic ``ValidationError``: where (a dotted path), what, its
    pydantic error type, and how many other problems there were."""

    loc: str
    msg: str
    type: str
    more: int

    @property
    def suffix(self) -> str:
        """`` (and N more problems)``, or nothing when this was the only one."""
        if not self.more:
            return ""
        return f" (and {self.more} more problem{'s' if self.more > 1 else ''})"

    def line(self) -> str:
        """``field.path: what is wrong (and N more problems)``."""
        where = f"{self.loc}: " if self.loc else ""
        return f"{where}{self.msg}{self.suffix}"


def first_problem(err: ValidationError, *within: str) -> Problem:
    """The first problem of ``err``, its path prefixed by ``within`` (a section name, say).
    Validator wrappers (``function-after``...) are left out of the path, and pydantic's
    ``Value error, `` prefix out of the message."""
    first = err.errors(include_url=False)[0]
    path = [*within, *(str(p) for p in first["loc"] if not str(p).startswith("function-"))]
    msg = str(first["msg"]).removeprefix("Value error, ")
    return Problem(".".join(path), msg, str(first["type"]), err.error_count() - 1)


def validation_message(err: ValidationError, *within: str) -> str:
    """One line for a pydantic error: ``field.path: what is wrong (and N more problems)``."""
    return first_problem(err, *within).line()


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, short enough for a log line or an error body."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:limit]


class ConfigError(StandbyError):
    """The configuration cannot be used; the message is one line naming file, field, problem,
    and never a secret: the process's configured secrets, key-shaped words (a key pasted as a
    route name) and URL passwords are taken out of it (``scrub.scrub_config``)."""

    def __init__(self, message: str) -> None:
        super().__init__(scrub_config(message))


class RequestError(StandbyError):
    """The client's request is invalid; maps to an OpenAI error body."""

    status: int = 400
    type: str = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


M = TypeVar("M", bound=BaseModel)


def parse_json(model: type[M], body: bytes) -> M:
    """A JSON request body as ``model``, or a ``RequestError`` (a 400) naming the first
    problem's field: the one reader of the gateway's request bodies."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        problem = first_problem(e)
        raise RequestError(problem.line(), param=problem.loc or None) from None


class AuthenticationError(RequestError):
    status = 401
    type = "authentication_error"


class ModelNotFoundError(RequestError):
    status = 404


class BodyTooLargeError(RequestError):
    status = 413


class BodyTimeoutError(RequestError):
    """The request body did not arrive within ``server.body_timeout_s`` (a slow client)."""

    status = 408


class RateLimited(RequestError):
    """Over ``server.rate_limit_per_key``: 429 with Retry-After."""

    status = 429
    type = "rate_limit_error"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Rate limit reached for this API key; retry after {retry_after} s.",
            code="rate_limit_exceeded",
        )
        self.retry_after = retry_after


class UpstreamError(StandbyError):
    """A backend failed. ``reason`` is the fixed metric label; ``failover`` says whether the
    router should try the next backend; ``counts`` whether the breaker records a failure."""

    reason: ClassVar[str] = "server_error"
    failover: bool = True
    counts: bool = True

    def __init__(self, backend: str, message: str) -> None:
        # An upstream may echo the key it was sent: the process's configured secrets never
        # reach a client, a log line or a capture through this message, even cut short.
        message = scrub_cut(message)
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.message = message

    @property
    def kind(self) -> str:
        """Short class name shown to clients in an all-backends-failed body."""
        return type(self).__name__


class UpstreamTimeout(UpstreamError):
    reason = "timeout"

    def __init__(self, backend: str, phase: str, seconds: float) -> None:
        super().__init__(backend, f"{phase} timeout after {seconds:g}s")
        self.phase = phase


class UpstreamConnectError(UpstreamError):
    reason = "connect"


class UpstreamProtocolError(UpstreamError):
    reason = "server_error"


class UpstreamTooLarge(UpstreamError):
    """The backend's answer went over one of its caps (``backends.<name>.limits``): a whole
    body, one stream line or a whole stream. The rest is not read; the next backend answers
    and the breaker counts it (a backend that sends endless bodies is broken)."""

    reason = "too_large"

    def __init__(self, backend: str, what: str, limit: int, field: str) -> None:
        super().__init__(
            backend, f"{what} over the limit of {limit} bytes (backends.{backend}.limits.{field})"
        )
        self.limit = limit
        self.field = field


class UpstreamStatusError(UpstreamError):
    """An HTTP error status from the backend, classified by code (the failover table in
    docs/architecture.md)."""

    def __init__(
        self,
        backend: str,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
    ) -> None:
        message = scrub_cut(message)
        super().__init__(backend, f"HTTP {status}: {message}")
        self.status = status
        self.upstream_message = message
        self.retry_after = retry_after
        self.failover = status not in CLIENT_STATUSES
        self.counts = self.failover

    @property
    def reason(self) -> str:  # type: ignore[override]
        if self.status == 429:
            return "rate_limited"
        if self.status in (401, 403):
            return "auth"
        if self.status in CLIENT_STATUSES:
            return "client_error"
        return "server_error"


class UpstreamBlocked(UpstreamError):
    """The backend refused to answer; only raised when the route opts into ``on_blocked:
    fallback`` (the default returns ``finish_reason: content_filter`` to the client)."""

    reason = "blocked"
    counts = False


class BackendBusy(UpstreamError):
    reason = "busy"
    counts = False


class Unsupported(UpstreamError):
    """Skipped: the request needs what this backend cannot do (tools, say). Not the backend's
    fault, so its breaker does not count it; when no backend of the route can, the client's
    request is what cannot be served (a 400 naming why)."""

    reason = "unsupported"
    counts = False


class BreakerOpen(UpstreamError):
    reason = "breaker_open"
    counts = False

    def __init__(self, backend: str) -> None:
        super().__init__(backend, "circuit breaker open")


class AllBackendsFailed(StandbyError):
    """Every backend of a route failed; ``errors`` keeps each one in route order."""

    def __init__(self, route: str, errors: list[UpstreamError]) -> None:
        self.route = route
        self.errors = errors
        detail = "; ".join(f"{e.backend}: {e.kind} ({e.message})" for e in errors)
        super().__init__(f"all backends of route {route!r} failed: {detail}")

    @property
    def retry_after(self) -> int:
        """Seconds a client should wait: the shortest Retry-After a backend gave, else 1."""
        hints = [e.retry_after for e in self.errors if isinstance(e, UpstreamStatusError)]
        known = [h for h in hints if h is not None]
        return max(1, int(min(known))) if known else 1


class Overloaded(StandbyError):
    """Refused before any backend was called: too many requests in flight (global or route
    ``max_concurrency``). A 503 with ``Retry-After``, so clients back off instead of queueing."""

    retry_after = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
