"""``POST /v1/responses`` is served by a bare ASGI call (``responses.responses_asgi``, wired in
``app.GatewayApp``), not through FastAPI: the same requests sent to the FastAPI app
(``app.create_api``, whose route runs the same handler) get the same status, headers and bytes,
answers, streams and errors alike (ids and times aside, which are new per response)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from standby.config import parse_settings
from standby.gateway.app import Gateway, create_api, create_app
from standby.providers.fake import FakeProvider, Reply
from tests.fixtures.fake_gateway import ROUTE, fake_config

KEY = "sk-paths-test-key-0000"
ASK = {"model": ROUTE, "input": "Tell me about failover."}


def body(**fields: Any) -> bytes:
    return httpx.Request("POST", "/", json={**ASK, **fields}).content


# (name, headers, body, the status both give)
CASES: list[tuple[str, dict[str, str], bytes, int]] = [
    ("whole", {}, body(), 200),
    ("stream", {}, body(stream=True), 200),
    ("not JSON", {}, b'{"model": ', 400),
    ("no input", {}, b'{"model": "chat"}', 400),
    ("unknown model", {}, body(model="nope"), 404),
    ("built-in tool", {}, body(tools=[{"type": "web_search"}]), 400),
    ("unknown previous", {}, body(previous_response_id="resp_x"), 404),
    ("over the size limit", {}, body(input="x" * 5000), 413),
    ("wrong key", {"authorization": "Bearer sk-wrong"}, body(), 401),
]
# What is new in each response: ids (resp_, msg_, the request id) and times.
NEW = [
    (re.compile(rb"\b(resp|msg)_[0-9a-f]{32,48}\b"), rb"\1_ID"),
    (re.compile(rb'"(created_at|completed_at)":\d+'), rb'"\1":0'),
]


def same_parts(body: bytes) -> bytes:
    for pattern, replacement in NEW:
        body = pattern.sub(replacement, body)
    return body


async def served(app: Any, headers: dict[str, str], content: bytes) -> tuple[Any, ...]:
    transport = httpx.ASGITransport(app=app)
    sent = {"authorization": f"Bearer {KEY}", "content-type": "application/json", **headers}
    async with httpx.AsyncClient(transport=transport, base_url="http://standby") as client:
        r = await client.post("/v1/responses", content=content, headers=sent)
    kept = [(k, "ID" if k == "x-request-id" else v) for k, v in r.headers.multi_items()]
    return r.status_code, kept, same_parts(r.content)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_the_bare_path_answers_as_the_fastapi_route(
    case: tuple[str, dict[str, str], bytes, int],
) -> None:
    _, headers, content, status = case
    config = fake_config("primary")
    config["server"] |= {"api_keys": [KEY], "max_body_bytes": 4096}
    fake = FakeProvider("primary", default=Reply("Hello ", "there."))
    gw = Gateway(parse_settings(config, "test"), {"primary": fake})
    await gw.start()
    try:
        bare = await served(create_app(gw), headers, content)
        routed = await served(create_api(gw), headers, content)
    finally:
        await gw.close()
    assert bare[0] == status
    assert bare == routed
