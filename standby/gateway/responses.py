"""``POST /v1/responses``: OpenAI's Responses API as a second surface over the chat core.

The request is read (``responses_models``), translated into the same ``ChatRequest`` the chat
endpoint builds (``responses_input``), admitted, answered and recorded by the same functions
as chat (``routes.admit``, ``complete``, ``open_stream``: failover, breakers, admission,
metrics, access log, capture), and the answer is written back as a ``response`` object
(``responses_body``) or as the Responses stream events (``responses_stream``). Errors are the
same OpenAI error bodies, through the same boundary (``routes.answered``).

``store`` (default true, as on OpenAI) keeps the finished response under the caller's gateway
key; ``previous_response_id`` continues one; ``GET`` / ``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items`` read and delete them (``responses_state``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from standby.errors import RequestError, parse_json
from standby.gateway.access import RequestRecord
from standby.gateway.errors import JSON
from standby.gateway.responses_body import ResponseShape, whole_body
from standby.gateway.responses_input import chat_request, input_items
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
    return await serve_response(request)


async def responses_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/responses`` as a bare ASGI call, as chat's ``routes.chat_asgi``: FastAPI's
    routing and middleware layers are skipped (they cost as much CPU per request as the rest of
    the gateway's own work here), with the same handler and error boundary as the routed
    endpoint."""
    response = await serve_response(Request(scope, receive))
    await response(scope, receive, send)


async def serve_response(request: Request) -> Response:
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
    history: list[dict[str, Any]] = []
    if parsed.previous_response_id is not None:
        previous = await gw.responses.continued(
            parsed.previous_response_id, record.key_id, len(body)
        )
        history = previous.history()
    chat = chat_request(parsed, history)
    shape = ResponseShape(parsed)
    keep = None
    if parsed.store is not False:
        conversation = [*history, *input_items(parsed)]

        async def keep(response: dict[str, Any]) -> None:
            await gw.responses.keep(record.key_id, response, conversation, len(history))

    outcome, leave = await admit(gw, record, parsed.model, names, chat)
    if parsed.stream:
        stream, first, on_end = await open_stream(gw, record, leave)
        events = response_events(stream, first, shape, on_end, keep)
        return SSEResponse(events, stream_headers(stream, record))
    completion = await complete(gw, record, leave)
    answer = whole_body(shape, completion, outcome.extra())
    if keep is not None:
        await keep(answer)
    return Response(orjson.dumps(answer), media_type=JSON, headers=outcome.headers())


@responses_api.get(RESPONSES_PATH + "/{response_id}")
async def retrieve_response(response_id: str, request: Request) -> Response:
    """A stored response of the caller's key (``client.responses.retrieve``); 404 otherwise."""
    gw: Gateway = request.app.state.gateway
    key_id = gw.authorize(request.headers.get("authorization"))
    stored = await gw.responses.load(response_id, key_id)
    return Response(orjson.dumps(stored.response), media_type=JSON)


@responses_api.delete(RESPONSES_PATH + "/{response_id}")
async def delete_response(response_id: str, request: Request) -> Response:
    """Delete a stored response of the caller's key (``client.responses.delete``)."""
    gw: Gateway = request.app.state.gateway
    key_id = gw.authorize(request.headers.get("authorization"))
    await gw.responses.delete(response_id, key_id)
    body = {"id": response_id, "object": "response", "deleted": True}
    return Response(orjson.dumps(body), media_type=JSON)


@responses_api.get(RESPONSES_PATH + "/{response_id}/input_items")
async def list_input_items(response_id: str, request: Request) -> Response:
    """The items of a stored response's own request (``client.responses.input_items.list``),
    newest first unless ``order=asc``, ``limit`` (1 to 100, default 20) at a time, after the
    item ``after``."""
    gw: Gateway = request.app.state.gateway
    key_id = gw.authorize(request.headers.get("authorization"))
    query = request.query_params
    limit_text = query.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise RequestError("limit: must be a whole number from 1 to 100", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise RequestError("order: must be asc or desc", param="order")
    items = (await gw.responses.load(response_id, key_id)).own_input()
    if order == "desc":
        items.reverse()
    after = query.get("after")
    if after is not None:
        at = next((i for i, item in enumerate(items) if item["id"] == after), None)
        if at is None:
            raise RequestError(
                f"after: no input item of this response has the id {after[:128]!r}", param="after"
            )
        items = items[at + 1 :]
    limit = int(limit_text)
    page = items[:limit]
    body = {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
    return Response(orjson.dumps(body), media_type=JSON)
