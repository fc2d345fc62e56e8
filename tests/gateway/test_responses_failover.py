"""``POST /v1/responses`` over scripted backends (``FakeProvider`` behind the real ASGI app,
every answer and event checked against OpenAI's schemas by ``ShapeCheck``): the Responses
surface gets the chat core's failover: a primary that is down, a stream cut after text
(continued on the fallback, marked stitched), a stream cut after a function-call piece (ended
with ``response.failed``), blocked and truncated answers (``incomplete``), the official SDK's
view of each, and 400s that name what cannot be served."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from standby.config import parse_settings
from standby.errors import UpstreamStatusError
from standby.gateway.app import Gateway, create_app
from standby.providers.fake import Blocked, Cut, FakeProvider, Reply
from standby.tool_calls import ToolCall
from tests.fixtures.fake_gateway import ROUTE, fake_config
from tests.fixtures.shape_check import ShapeCheck

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}
CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}', signature="c2lnbmVk")


@dataclass
class Served:
    """What a client saw: the status, headers and the JSON body or the stream's events."""

    status: int
    headers: httpx.Headers
    body: dict[str, Any]
    events: list[dict[str, Any]]

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    @property
    def final(self) -> dict[str, Any]:
        """The response object: the body, or the last event's ``response``."""
        return self.body if not self.events else dict(self.events[-1]["response"])

    @property
    def deltas(self) -> str:
        return "".join(e["delta"] for e in self.events if e["type"].endswith("text.delta"))


@dataclass
class Harness:
    gateway: Gateway
    http: httpx.AsyncClient

    async def ask(self, *, stream: bool = False, **fields: Any) -> Served:
        body = {"model": ROUTE, "input": "Tell me about failover.", "stream": stream, **fields}
        r = await self.http.post("/v1/responses", json=body)
        if not r.headers["content-type"].startswith("text/event-stream"):
            return Served(r.status_code, r.headers, r.json(), [])
        events = [
            json.loads(line.removeprefix("data: "))
            for line in r.text.splitlines()
            if line.startswith("data: ")
        ]
        return Served(r.status_code, r.headers, {}, events)

    def sdk(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url="http://standby/v1", api_key="unused", max_retries=0, http_client=self.http
        )


@contextlib.asynccontextmanager
async def harness(*fakes: FakeProvider) -> AsyncIterator[Harness]:
    """A started gateway over ``fakes`` whose every answer goes through ``ShapeCheck``."""
    gw = Gateway(
        parse_settings(fake_config(*(f.name for f in fakes)), "test"), {f.name: f for f in fakes}
    )
    await gw.start()
    shapes = ShapeCheck(create_app(gw))
    try:
        transport = httpx.ASGITransport(app=shapes)
        async with httpx.AsyncClient(transport=transport, base_url="http://standby") as http:
            yield Harness(gw, http)
    finally:
        await gw.close()
    assert shapes.problems == []
    assert shapes.checked > 0


MODES = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


@MODES
async def test_a_primary_that_is_down_is_answered_by_the_fallback(stream: bool) -> None:
    down = FakeProvider("primary", default=UpstreamStatusError("primary", 503, "down"))
    fallback = FakeProvider("fallback", default=Reply("The fallback ", "answers."))
    async with harness(down, fallback) as h:
        served = await h.ask(stream=stream)
    assert served.status == 200
    assert served.headers["x-standby-backend"] == "fallback"
    assert served.headers["x-standby-fallback-reason"] == "server_error"
    final = served.final
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == "The fallback answers."
    assert final["standby"] == {
        "backend": "fallback",
        "provenance": "fallback",
        "fallback_reason": "server_error",
    }
    if stream:
        assert served.deltas == "The fallback answers."
        assert served.types[:2] == ["response.created", "response.in_progress"]
        assert [e["sequence_number"] for e in served.events] == list(range(len(served.events)))


async def test_a_stream_cut_after_text_is_continued_on_the_fallback_as_one_response() -> None:
    primary = FakeProvider("primary", Cut("Failover keeps ", "answering "))
    fallback = FakeProvider("fallback", default=Reply("when Gemini stops."))
    async with harness(primary, fallback) as h:
        served = await h.ask(stream=True)
    assert served.headers["x-standby-backend"] == "primary"  # who sent the first byte
    assert served.types[-1] == "response.completed"
    assert served.deltas == "Failover keeps answering when Gemini stops."
    message = served.final["output"]
    assert [item["type"] for item in message] == ["message"]  # one item, stitched
    assert message[0]["content"][0]["text"] == served.deltas
    assert served.final["standby"]["provenance"] == "stitched"
    # The fallback was asked to continue the partial answer, not to start over.
    continued = fallback.requests[0]
    assert continued.continue_final
    assert continued.messages[-1].content == "Failover keeps answering "


async def test_a_stream_cut_after_a_function_call_piece_fails_and_is_not_continued() -> None:
    primary = FakeProvider("primary", Cut(calls=[CALL]))
    fallback = FakeProvider("fallback")
    async with harness(primary, fallback) as h:
        served = await h.ask(stream=True, tools=[WEATHER])
    assert served.types[-1] == "response.failed"
    failed = served.final
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error"
    assert "stream interrupted" in failed["error"]["message"]
    assert failed["output"][0]["type"] == "function_call"
    assert failed["output"][0]["status"] == "incomplete"
    assert "response.function_call_arguments.done" not in served.types
    assert fallback.requests == []  # a call is not finished by another model


async def test_the_sdk_stream_of_a_failed_response_has_no_final_response() -> None:
    primary = FakeProvider("primary", Cut("Half an ", "answer"))
    async with (
        harness(primary) as h,
        h.sdk() as client,
        client.responses.stream(model=ROUTE, input="Go") as stream,
    ):
        types = [event.type async for event in stream]
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            await stream.get_final_response()
    assert types[-1] == "response.failed"


@MODES
async def test_function_calls_are_items_with_call_id_name_arguments_and_signature(
    stream: bool,
) -> None:
    second = ToolCall("call_2", "get_weather", '{"city": "Oslo"}')
    primary = FakeProvider("primary", Reply("Looking up.", calls=[CALL, second]))
    async with harness(primary) as h:
        served = await h.ask(stream=stream, tools=[WEATHER], tool_choice="auto")
    final = served.final
    assert final["status"] == "completed"
    assert [item["type"] for item in final["output"]] == [
        "message",
        "function_call",
        "function_call",
    ]
    calls = final["output"][1:]
    assert [(c["call_id"], c["name"], c["arguments"]) for c in calls] == [
        ("call_1", "get_weather", '{"city": "Paris"}'),
        ("call_2", "get_weather", '{"city": "Oslo"}'),
    ]
    assert calls[0]["extra_content"] == {"google": {"thought_signature": "c2lnbmVk"}}
    assert "extra_content" not in calls[1]
    if stream:
        done = [e for e in served.events if e["type"] == "response.function_call_arguments.done"]
        assert [e["arguments"] for e in done] == ['{"city": "Paris"}', '{"city": "Oslo"}']
        pieces = [e for e in served.events if e["type"].endswith("arguments.delta")]
        assert len(pieces) > 2  # the arguments arrived in pieces
        assert all(e["item_id"] == calls[0]["id"] for e in pieces[:3])


async def test_the_history_goes_back_to_the_backend_as_chat_turns_with_the_signature() -> None:
    primary = FakeProvider("primary", Reply("Sunny in Paris."))
    history = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Looking up.", "annotations": []}],
        },
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
            "extra_content": {"google": {"thought_signature": "c2lnbmVk"}},
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]
    async with harness(primary) as h:
        served = await h.ask(input=history, instructions="Be brief.", tools=[WEATHER])
    assert served.status == 200
    sent = primary.requests[0].messages
    assert [(m.role, m.content) for m in sent] == [
        ("system", "Be brief."),
        ("user", "Weather in Paris?"),
        ("assistant", "Looking up."),
        ("tool", "sunny"),
    ]
    assert sent[2].tool_calls == (CALL,)  # the call joined the turn it followed, signed
    assert sent[3].tool_call_id == "call_1" and sent[3].name == "get_weather"


@MODES
@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (Blocked(), "content_filter"),
        (Reply("Cut sho", finish_reason="length"), "max_output_tokens"),
    ],
    ids=["blocked", "max-output-tokens"],
)
async def test_blocked_and_truncated_answers_are_incomplete(
    step: Blocked | Reply, reason: str, stream: bool
) -> None:
    async with harness(FakeProvider("primary", step)) as h:
        served = await h.ask(stream=stream, max_output_tokens=3)
    final = served.final
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": reason}
    assert final["max_output_tokens"] == 3
    if stream:
        assert served.types[-1] == "response.incomplete"


REFUSED = [
    ({"tools": [WEATHER, {"type": "web_search"}]}, "tools.1.type", "'web_search' tools"),
    (
        {"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]},
        "tools.0.type",
        "file_search",
    ),
    ({"background": True}, "background", "background responses are not supported"),
    ({"conversation": "conv_1"}, "conversation", "conversation objects are not kept"),
    (
        {"input": [{"role": "user", "content": "hi"}, {"type": "item_reference", "id": "x"}]},
        "input.1.type",
        "'item_reference' are not supported",
    ),
    (
        {"input": [{"type": "function_call_output", "call_id": "nope", "output": "1"}]},
        "input.0.call_id",
        "no earlier function_call item",
    ),
    (
        {"tools": [{**WEATHER, "parameters": {"type": "nonsense"}}]},
        "tools.0.parameters",
        "not a valid JSON Schema",
    ),
    ({"tool_choice": {"type": "function", "name": "f"}}, "tool_choice", "not among tools"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
        "input.0.content.0",
        "needs image_url",
    ),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format", "schema"),
    ({"max_output_tokens": 0}, "max_output_tokens", "greater than or equal to 1"),
]


@pytest.mark.parametrize(("fields", "param", "words"), REFUSED, ids=[r[1] for r in REFUSED])
async def test_what_cannot_be_served_is_a_400_naming_the_field(
    fields: dict[str, Any], param: str, words: str
) -> None:
    primary = FakeProvider("primary")
    async with harness(primary) as h:
        served = await h.ask(**fields)
    assert served.status == 400
    error = served.body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words in error["message"]
    assert primary.requests == []  # no backend was asked


async def test_the_request_reaches_the_backend_with_its_settings() -> None:
    primary = FakeProvider("primary", Reply('{"city": "Paris"}'))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    async with harness(primary) as h:
        served = await h.ask(
            temperature=0.2,
            top_p=0.9,
            max_output_tokens=50,
            reasoning={"effort": "low"},
            text={
                "format": {"type": "json_schema", "name": "place", "schema": schema},
                "verbosity": "low",
            },
            metadata={"team": "search"},
            store=False,
            user="u-1",
            safety_identifier="s-1",
            parallel_tool_calls=False,
            tools=[WEATHER],
            tool_choice={"type": "function", "name": "get_weather"},
        )
    assert served.status == 200
    sent = primary.requests[0]
    assert (sent.temperature, sent.top_p, sent.max_tokens) == (0.2, 0.9, 50)
    assert sent.reasoning_effort == "low"
    assert sent.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema, "strict": None},
    }
    assert sent.tool_choice.function == "get_weather"
    assert sent.parallel_tool_calls is False
    echo = served.body
    assert echo["metadata"] == {"team": "search"}
    assert echo["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert echo["text"]["format"]["name"] == "place"
    assert echo["text"]["verbosity"] == "low"  # echoed, not applied
    assert echo["reasoning"]["effort"] == "low"
    assert echo["usage"]["total_tokens"] == (
        echo["usage"]["input_tokens"] + echo["usage"]["output_tokens"]
    )
