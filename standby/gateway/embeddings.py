"""``POST /v1/embeddings``: a thin handler over the same failover walk, breakers, admission,
metrics and access log as chat. An embeddings route's backends share one embedding space
(checked at config load), so any of them may answer. Nothing is captured."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from standby.embeddings import (
    EmbeddingRequest,
    EmbeddingRequestBody,
    Embeddings,
    check_limits,
    embedding_body,
    parse_embedding_request,
)
from standby.errors import RequestError, UpstreamTimeout
from standby.gateway.access import RequestRecord, request_id
from standby.gateway.errors import JSON
from standby.gateway.failover import Failover, Outcome
from standby.gateway.routes import answered, read_body
from standby.protocol import Usage
from standby.providers.embedder import Embedder

if TYPE_CHECKING:
    from standby.gateway.app import Gateway

embeddings_api = APIRouter()

EMBEDDINGS_PATH = "/v1/embeddings"


_TOKENS = {"type": "array", "items": {"type": "integer"}, "minItems": 1}
# OpenAI's input forms (token arrays included, which get a 400 here): the handler parses the
# raw body itself, for the size limit and OpenAI's error shape, so the document says it.
_INPUT = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
        _TOKENS,
        {"type": "array", "items": _TOKENS, "minItems": 1},
    ]
}
_SCHEMA = EmbeddingRequestBody.model_json_schema()
_SCHEMA["properties"]["input"] = _INPUT


@embeddings_api.post(
    EMBEDDINGS_PATH,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _SCHEMA}}}
    },
)
async def create_embeddings(request: Request) -> Response:
    """One embeddings request, start to end: the only place its errors become a response."""
    gw: Gateway = request.app.state.gateway
    rid = request_id(request.headers.get("x-request-id"))
    record = RequestRecord(gw.accounting, rid, None)  # no capture: vectors are no pairs
    return await answered(record, _embeddings(gw, request, record))


async def _embeddings(gw: Gateway, request: Request, record: RequestRecord) -> Response:
    record.key_id = gw.authorize(request.headers.get("authorization"))
    server = gw.settings.server
    parsed = parse_embedding_request(
        await read_body(request, server.max_body_bytes, server.body_timeout_s)
    )
    alias = parsed.model
    gw.failover.resolve(alias)  # unknown: 404 model_not_found
    route = gw.settings.routes[alias]
    if route.kind != "embeddings":
        embedding_routes = sorted(
            a for a, r in gw.settings.routes.items() if r.kind == "embeddings"
        )
        raise RequestError(
            f"The model `{alias}` is a chat route; embeddings routes: "
            f"{', '.join(embedding_routes) or 'none'}.",
            param="model",
            code="model_not_found",
        )
    check_limits(parsed.request, route.max_inputs, route.max_input_chars)
    record.outcome = outcome = Outcome(alias)
    gw.admission.enter(alias)
    in_flight = gw.metrics.c_in_flight(alias)
    in_flight.inc()
    try:
        result = await embed(gw.failover, parsed.request, outcome)
    finally:
        in_flight.dec()
        gw.admission.leave(alias)
    record.usage = Usage(prompt_tokens=result.prompt_tokens, completion_tokens=0)
    body = embedding_body(alias, result, parsed.encoding_format)
    body["standby"] = outcome.extra()
    return Response(orjson.dumps(body), media_type=JSON, headers=outcome.headers())


async def embed(failover: Failover, request: EmbeddingRequest, outcome: Outcome) -> Embeddings:
    """The vectors from the first backend of the route that gives them; each call is bounded
    by the backend's ``timeouts.total_s``."""

    async def attempt(name: str) -> Embeddings:
        embedder = failover.providers[name]
        assert isinstance(embedder, Embedder), f"{name} is no embedding backend"
        limit = failover.timeouts[name].total_s
        try:
            async with asyncio.timeout(limit):
                return await embedder.embed(request)
        except TimeoutError:
            raise UpstreamTimeout(name, "total", limit) from None

    name, result = await failover.walk(outcome, failover.resolve(outcome.route), None, attempt)
    failover.settle(name, None)
    return result
