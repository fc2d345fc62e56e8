"""HTTP surface: thin handlers that parse, call failover and shape the answer.

A chat request has one error boundary, ``serve_chat``: whatever goes wrong becomes its OpenAI
error response there (``errors.error_response``), for the bare ASGI hot path and the routed
endpoint alike. Every other endpoint's errors reach the same function through FastAPI's
exception handlers (``app.create_api``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from standby.errors import BodyTimeoutError, BodyTooLargeError, parse_json
from standby.gateway.access import RequestRecord, new_id, request_id
from standby.gateway.errors import JSON, error_response
from standby.gateway.failover import FailoverStream, Outcome, StreamFailure
from standby.gateway.streaming import SSEResponse, sse_body
from standby.openai_models import ChatCompletionRequest, log_ignored_fields
from standby.protocol import ChatRequest, Completion, Delta, completion_body
from standby.tool_calls import whole_calls

if TYPE_CHECKING:
    from standby.gateway.app import Gateway

api = APIRouter()

CHAT_PATH = "/v1/chat/completions"
CHAT_SCHEMA_REF = {"$ref": "#/components/schemas/ChatCompletionRequest"}


def _gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refusing anything over ``limit`` bytes before reading it all, or
    not received within ``timeout_s`` (uvicorn has no such limit: a slow-loris client would
    hold its connection and memory for as long as it likes)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"Request body is over the limit of {limit} bytes.")
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for part in request.stream():
                size += len(part)
                if size > limit:
                    raise BodyTooLargeError(f"Request body is over the limit of {limit} bytes.")
                parts.append(part)
    except TimeoutError:
        raise BodyTimeoutError(
            f"Request body not received within {timeout_s:g}s.", code="body_timeout"
        ) from None
    return b"".join(parts)


def parse_request(body: bytes) -> ChatCompletionRequest:
    parsed = parse_json(ChatCompletionRequest, body)
    log_ignored_fields(parsed)
    return parsed


@api.post(
    CHAT_PATH,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CHAT_SCHEMA_REF}},
        }
    },
)
async def chat_completions(request: Request) -> Response:
    return await serve_chat(request)


async def chat_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/chat/completions`` as a bare ASGI call: the hot path skips FastAPI's routing
    and middleware layers (a quarter of the gateway's CPU per request, measured), with the same
    handler and the same error mapping as the routed endpoint."""
    response = await serve_chat(Request(scope, receive))
    await response(scope, receive, send)


async def serve_chat(request: Request) -> Response:
    """One chat request, start to end: the only place its errors become a response."""
    gw = _gateway(request)
    record = open_record(gw, request)
    return await answered(record, _chat(gw, request, record))


def open_record(gw: Gateway, request: Request) -> RequestRecord:
    """The record of a chat request (either surface): its id, and the capture it goes to
    unless the client opted out with ``x-standby-capture: off``."""
    rid = request_id(request.headers.get("x-request-id"))
    capture = gw.capture
    if capture is not None and request.headers.get("x-standby-capture", "").lower() == "off":
        capture.filtered()
        capture = None
    return RequestRecord(gw.accounting, rid, capture)


async def answered(record: RequestRecord, work: Awaitable[Response]) -> Response:
    """The response of ``work``, or its error as the response (the one error boundary of a
    chat or embeddings request); the record finishes either way (a stream's when it ends)."""
    try:
        response = await work
    except Exception as exc:
        response = error_response(exc, record.request_id)
        record.failed(exc, response.status_code)
        return response
    if not record.stream:
        record.finish(200)
    response.headers["x-request-id"] = record.request_id
    return response


async def _chat(gw: Gateway, request: Request, record: RequestRecord) -> Response:
    record.key_id = gw.authorize(request.headers.get("authorization"))
    server = gw.settings.server
    parsed = parse_request(await read_body(request, server.max_body_bytes, server.body_timeout_s))
    alias = parsed.model
    names = gw.failover.resolve(alias)
    chat = ChatRequest.from_openai(parsed)
    completion_id = f"chatcmpl-{new_id()}"
    outcome, leave = await admit(gw, record, alias, names, chat)
    if parsed.stream:
        stream, first, on_end = await open_stream(gw, record, leave)
        include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
        chunks = sse_body(
            stream,
            first,
            completion_id=completion_id,
            model=parsed.model,
            include_usage=include_usage,
            on_end=on_end,
        )
        return SSEResponse(chunks, stream_headers(stream, record))
    completion = await complete(gw, record, leave)
    body = completion_body(
        completion_id=completion_id,
        model=alias,
        completion=completion,
        extra=outcome.extra(),
    )
    return Response(orjson.dumps(body), media_type=JSON, headers=outcome.headers())


# -- what every chat surface (chat completions, Responses) shares once its request is read -----


async def admit(
    gw: Gateway, record: RequestRecord, alias: str, names: list[str], chat: ChatRequest
) -> tuple[Outcome, Callable[[], None]]:
    """Admit ``chat`` on the route ``alias`` (whose backends are ``names``): the record gets the
    request and its one ``Outcome``; over ``max_concurrency`` it is a 503 now, no queueing; it
    counts as in flight; its image URLs become bytes. Returns the outcome and ``leave``, to be
    called once when the answer is over (``complete`` and ``open_stream`` see to it)."""
    record.chat = chat
    admission = gw.admission
    record.outcome = outcome = Outcome(alias)  # the one Outcome, whole answer or stream
    admission.enter(alias)  # over max_concurrency: 503 overloaded now, no queueing
    in_flight = gw.metrics.c_in_flight(alias)
    in_flight.inc()

    def leave() -> None:
        in_flight.dec()
        admission.leave(alias)

    if any(m.parts for m in chat.messages):
        # Image URLs become bytes now, inside admission (a fetch holds memory and time), and
        # only when a backend of the route reads media at all (else failover's 400 says so).
        try:
            if any(gw.failover.providers[n].unsupported(chat) is None for n in names):
                record.chat = await gw.fetcher.fetch(chat)
        except BaseException:
            leave()
            raise
    return outcome, leave


async def complete(gw: Gateway, record: RequestRecord, leave: Callable[[], None]) -> Completion:
    """The admitted request's whole answer (``failover.complete``), recorded for accounting
    and capture: choice 0 is the answer recorded; its usage counts every choice."""
    assert record.chat is not None and record.outcome is not None
    try:
        completion = await gw.failover.complete(record.chat, record.outcome)
    finally:
        leave()
    record.answered(
        completion.text, completion.finish_reason, completion.usage, completion.tool_calls
    )
    record.model_version = completion.model_version
    return completion


OnEnd = Callable[[str, Delta | None], None]


async def open_stream(
    gw: Gateway, record: RequestRecord, leave: Callable[[], None]
) -> tuple[FailoverStream, Delta | StreamFailure, OnEnd]:
    """The admitted request's stream, its first item (failover before it is invisible; an
    error here is still a proper error response) and the ``on_end(status, last)`` that records
    the answer and finishes the record once the stream is over, however it ends."""
    assert record.chat is not None and record.outcome is not None
    stream = gw.failover.stream(record.chat, record.outcome)
    try:
        first = await stream.first()
    except BaseException:
        leave()
        raise
    record.stream = True

    def on_end(status: str, last: Delta | None) -> None:
        leave()
        if last is not None and last.finish_reason is not None:
            # Choice 0 is the answer recorded (and captured); usage covers every choice.
            calls = whole_calls(stream.calls) if stream.calls else ()
            finish = stream.finishes.get(0, last.finish_reason)
            record.answered("".join(stream.sent), finish, last.usage, calls)
            record.model_version = last.model_version
        record.finish(200, status)

    return stream, first, on_end


def stream_headers(stream: FailoverStream, record: RequestRecord) -> dict[str, str]:
    """An event stream's headers: who answered first, no caching or proxy buffering."""
    headers = stream.outcome.headers()
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"
    headers["x-request-id"] = record.request_id
    return headers


@api.get("/v1/models")
async def list_models(request: Request) -> Response:
    gw = _gateway(request)
    gw.authorize(request.headers.get("authorization"))
    data = [
        {"id": alias, "object": "model", "created": gw.created, "owned_by": "standby"}
        for alias in gw.failover.routes
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)


@api.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type=JSON)


@api.get("/readyz")
async def readyz(request: Request) -> Response:
    """Which backends can take a request now; 503 when no route has a usable backend."""
    gw = _gateway(request)
    backends = {}
    for name, provider in gw.failover.providers.items():
        breaker = gw.failover.breakers[name]
        ready = provider.ready()
        backends[name] = {
            "ready": ready,
            "breaker": breaker.current_state().name.lower().replace("_", "-"),
            "retry_in_s": round(breaker.seconds_until_retry(), 3),
        }
    usable = {
        alias: [n for n in names if backends[n]["ready"] and backends[n]["breaker"] != "open"]
        for alias, names in gw.failover.routes.items()
    }
    ok = any(usable.values())
    body = {"status": "ready" if ok else "unavailable", "backends": backends, "routes": usable}
    return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type=JSON)


@api.get("/metrics")
async def metrics(request: Request) -> Response:
    """Public; rendered at most a few times a second (``metrics_page``), so a flood of scrapes
    costs little more than a 404."""
    page = _gateway(request).metrics_page.get()
    return Response(page, media_type=CONTENT_TYPE_LATEST)


__all__ = ["api", "chat_asgi", "serve_chat"]
