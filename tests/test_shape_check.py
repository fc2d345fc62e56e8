"""The check every test gateway runs (``tests/fixtures/shape_check.py``) catches answers that
break OpenAI's schemas: whole answers, stream chunks, error events and errors by status, and
lets valid ones through. Without this, a check that never fails would pass every test."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.types import Receive, Scope, Send

from tests.fixtures.shape_check import ShapeCheck, schema_for

GOOD_COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
}
GOOD_CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
}
GOOD_ERROR = {
    "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
}


def app_sending(status: int, body: bytes, content_type: bytes) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", content_type)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        half = len(body) // 2  # in two pieces, as streams go out
        await send({"type": "http.response.body", "body": body[:half], "more_body": True})
        await send({"type": "http.response.body", "body": body[half:], "more_body": False})

    return app


async def problems_of(path: str, status: int, body: bytes, sse: bool = False) -> list[str]:
    kind = b"text/event-stream" if sse else b"application/json"
    check = ShapeCheck(app_sending(status, body, kind))
    scope = {"type": "http", "path": path, "method": "POST" if "chat" in path else "GET"}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    await check(scope, receive, send)
    return check.problems


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


CHAT = "/v1/chat/completions"


async def test_valid_answers_pass() -> None:
    assert await problems_of(CHAT, 200, orjson.dumps(GOOD_COMPLETION)) == []
    assert await problems_of(CHAT, 200, sse(GOOD_CHUNK, GOOD_CHUNK), sse=True) == []
    assert await problems_of(CHAT, 400, orjson.dumps(GOOD_ERROR)) == []


@pytest.mark.parametrize(
    ("status", "body", "stream", "found"),
    [
        (200, {**GOOD_COMPLETION, "object": "completion"}, False, "object"),
        (200, {k: v for k, v in GOOD_COMPLETION.items() if k != "created"}, False, "created"),
        (200, {**GOOD_CHUNK, "choices": [{"delta": {}}]}, True, "choices.0"),
        (200, {"error": {"message": "cut"}}, True, "ErrorResponse"),
        (503, {"detail": "Not Found"}, False, "ErrorResponse"),
    ],
)
async def test_broken_answers_are_caught(
    status: int, body: dict[str, Any], stream: bool, found: str
) -> None:
    raw = sse(body) if stream else orjson.dumps(body)
    problems = await problems_of(CHAT, status, raw, sse=stream)
    assert problems and any(found in p for p in problems), problems


def test_each_endpoint_has_its_schema() -> None:
    assert schema_for(CHAT, "POST", 200) == "CreateChatCompletionResponse"
    assert schema_for("/v1/models/x/y", "GET", 200) == "Model"
    assert schema_for("/v1/nope", "GET", 404) == "ErrorResponse"
    assert schema_for("/healthz", "GET", 200) is None


def events(*items: dict[str, Any]) -> bytes:
    """A Responses stream: each event as ``event:`` and ``data:`` lines, numbered from 0."""
    return b"".join(
        b"event: "
        + e["type"].encode()
        + b"\ndata: "
        + orjson.dumps({**e, "sequence_number": i})
        + b"\n\n"
        for i, e in enumerate(items)
    )


DELTA = {
    "type": "response.output_text.delta",
    "item_id": "msg_1",
    "output_index": 0,
    "content_index": 0,
    "delta": "hi",
    "logprobs": [],
}
RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "model": "m",
    "output": [],
    "parallel_tool_calls": True,
    "metadata": {},
    "tool_choice": "auto",
    "tools": [],
    "temperature": None,
    "top_p": None,
}
DONE = {"type": "response.completed", "response": RESPONSE}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (events(DELTA, DONE), None),
        (events(DELTA), "not a final event"),
        (events({**DELTA, "delta": 3}, DONE), "3 is not of type 'string'"),
        (events({**DELTA, "type": "response.bogus"}, DONE), "is no ResponseStreamEvent"),
        (events(DELTA, DONE).replace(b'"sequence_number":1', b'"sequence_number":5'), "1 expected"),
        (events(DELTA, {**DONE, "response": {**RESPONSE, "status": "done"}}), "'done' is not one"),
    ],
    ids=["valid", "no-final-event", "bad-field", "unknown-type", "out-of-order", "bad-response"],
)
async def test_responses_streams_are_checked_event_by_event(
    body: bytes, problem: str | None
) -> None:
    found = await problems_of("/v1/responses", 200, body, sse=True)
    if problem is None:
        assert found == []
    else:
        assert any(problem in p for p in found), found
