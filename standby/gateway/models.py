"""``GET /v1/models/{id}`` (the openai SDK's ``client.models.retrieve``): a route alias as
OpenAI's ``Model``. Aliases may contain ``/`` (``google/gemma``), so the id is the rest of the
path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from standby.errors import ModelNotFoundError
from standby.gateway.errors import JSON

if TYPE_CHECKING:
    from standby.gateway.app import Gateway

models_api = APIRouter()


@models_api.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> Response:
    gw: Gateway = request.app.state.gateway
    gw.authorize(request.headers.get("authorization"))
    if model_id not in gw.settings.routes:
        raise ModelNotFoundError(
            f"The model `{model_id}` does not exist on this gateway.",
            param="model",
            code="model_not_found",
        )
    body = {"id": model_id, "object": "model", "created": gw.created, "owned_by": "standby"}
    return Response(orjson.dumps(body), media_type=JSON)
