"""The one mapping from any exception to an HTTP status and an OpenAI error body."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.responses import Response

from standby.errors import (
    AllBackendsFailed,
    Overloaded,
    RateLimited,
    RequestError,
    UpstreamError,
    UpstreamStatusError,
)
from standby.protocol import error_body

log = logging.getLogger("standby.gateway")

JSON = "application/json"


def error_status(exc: BaseException) -> int:
    """The HTTP status ``error_response`` gives ``exc``."""
    if isinstance(exc, RequestError):
        return exc.status
    if isinstance(exc, AllBackendsFailed | Overloaded):
        return 503
    if isinstance(exc, UpstreamStatusError) and not exc.failover:
        return 400 if exc.status == 422 else exc.status
    if isinstance(exc, UpstreamError):
        return 502
    if isinstance(exc, HTTPException):
        return exc.status_code
    return 500


def error_response(exc: BaseException, request_id: str | None = None) -> Response:
    status = error_status(exc)
    headers: dict[str, str] = {"x-request-id": request_id} if request_id else {}
    if isinstance(exc, RequestError):
        body = error_body(exc.message, type=exc.type, param=exc.param, code=exc.code)
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, AllBackendsFailed):
        headers["Retry-After"] = str(exc.retry_after)
        body = error_body(str(exc), type="service_unavailable_error", code="all_backends_failed")
        body["standby"] = {
            "errors": [
                {"backend": e.backend, "error": e.kind, "reason": e.reason, "message": e.message}
                for e in exc.errors
            ]
        }
    elif isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after)
        body = error_body(exc.message, type="service_unavailable_error", code="overloaded")
    elif isinstance(exc, UpstreamStatusError) and not exc.failover:
        # The backend says the client's request is wrong: pass that on, do not fail over.
        headers["x-standby-backend"] = exc.backend
        body = error_body(
            f"backend {exc.backend!r} rejected the request: {exc.upstream_message}",
            type="invalid_request_error",
            code="upstream_rejected",
        )
    elif isinstance(exc, UpstreamError):
        body = error_body(str(exc), type="server_error", code=exc.reason)
    elif isinstance(exc, HTTPException):
        body = error_body(str(exc.detail), type="invalid_request_error")
        headers.update(exc.headers or {})
    else:
        log.error("unhandled error", exc_info=exc)
        body = error_body("Internal error in the gateway.", type="server_error")
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=JSON)
