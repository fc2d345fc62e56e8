"""``POST /v1/responses``: OpenAI's Responses API as a second surface over the chat core.

The request is read (``responses_models``), translated into the same ``ChatRequest`` the chat
endpoint builds (``responses_input``), admitted, answered and recorded by the same functions
as chat (``routes.admit``, ``complete``, ``open_stream``: failover, breakers, admission,
metrics, access log, capture), and the answer is written back as a ``response`` object
(``responses_body``) or as the Responses stream events (``responses_stream``). Errors are the
same OpenAI error bodies, through the same boundary (``routes.answered``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from standby.errors import parse_json
from standby.gateway.access import RequestRecord
from standby.gateway.errors import JSON
from standby.gateway.responses_body import ResponseShape, whole_body
from standby.gateway.responses_input import chat_request
from standby.gateway.responses_stream import response_events
from standby.gateway.routes import (
    admit,
    answered,
    complete,
    open_record,
    open_stream,
    read_body,
    stream_headers,
)
from standby.gateway.streaming import SSEResponse
from standby.openai_models import log_ignored_fields
from standby.responses_models import ResponsesRequest

if TYPE_CHECKING:
    from standby.gateway.app import Gateway

responses_api = APIRouter()

RESPONSES_PATH = "/v1/responses"
_SCHEMA = ResponsesRequest.model_json_schema()


@responses_api.post(
    RESPONSES_PATH,
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _SCHEMA}}}
    },
)
async def create_response(request: Request) -> Response:
    """One Responses request, start to end: the only place its errors become a response."""
    gw: Gateway = request.app.state.gateway
    record = open_record(gw, request)
    return await answered(record, _respond(gw, request, record))


async def _respond(gw: Gateway, request: Request, record: RequestRecord) -> Response:
    record.key_id = gw.authorize(request.headers.get("authorization"))
    server = gw.settings.server
    body = await read_body(request, server.max_body_bytes, server.body_timeout_s)
    parsed = parse_json(ResponsesRequest, body)
    log_ignored_fields(parsed)
    names = gw.failover.resolve(parsed.model)
    chat = chat_request(parsed)
    shape = ResponseShape(parsed)
    outcome, leave = await admit(gw, record, parsed.model, names, chat)
    if parsed.stream:
        stream, first, on_end = await open_stream(gw, record, leave)
        events = response_events(stream, first, shape, on_end)
        return SSEResponse(events, stream_headers(stream, record))
    completion = await complete(gw, record, leave)
    answer = whole_body(shape, completion, outcome.extra())
    return Response(orjson.dumps(answer), media_type=JSON, headers=outcome.headers())
