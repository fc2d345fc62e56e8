"""Capture of requests that use tools: the event keeps the tools offered, the history's calls
and results and the answer's calls (a stream's pieces joined), redacted like the rest; a
plain-text answer's event has exactly the fields it had before tools."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from standby.gateway.capture_writer import event_body
from standby.gateway.captured import Captured, data_of
from standby.gateway.failover import Outcome
from standby.protocol import ChatRequest, Message
from standby.providers.fake import FakeProvider, Reply
from standby.redaction import Redactor
from standby.store.envelope import CapturedTool, CapturedToolCall, ChatMessage
from standby.tool_calls import ToolCall
from tests.fixtures.fake_gateway import ROUTE, fake_config, fake_gateway
from tests.fixtures.tool_calls import PARIS, SIGNED, TOKYO, TOOLS, WEATHER, history
from tests.gateway.test_capture import stored
from tests.gateway.test_capture_writer import answer

OLD_FIELDS = list(answer())  # an event's data fields before tools


def capturing(*fakes: FakeProvider, db: Path) -> dict[str, Any]:
    config = fake_config(*(f.name for f in fakes))
    config["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": 0.05}
    return config


async def test_tool_fields_are_captured_whole_and_streamed(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    fake = FakeProvider("gemini", Reply(calls=[PARIS, TOKYO]), Reply("Sunny", calls=[SIGNED]))
    messages = history(PARIS, "sunny, 21 C")
    async with fake_gateway(fake, config=capturing(fake, db=db)) as gw:
        for stream in (False, True):
            got = await gw.ask(stream=stream, messages=messages, tools=TOOLS)
            assert got.status == 200
    whole, streamed = (e.data for e in await stored(db))
    weather = WEATHER["function"]
    assert whole.tools == [
        CapturedTool(
            name="get_weather", description=weather["description"], parameters=weather["parameters"]
        ),
        CapturedTool(name="get_time", parameters=TOOLS[1]["function"]["parameters"]),
    ]
    call = CapturedToolCall(id=PARIS.id, name=PARIS.name, arguments=PARIS.arguments)
    assert whole.messages[1:] == [
        ChatMessage(role="assistant", content="", tool_calls=[call]),
        ChatMessage(role="tool", content="sunny, 21 C", tool_call_id=PARIS.id, name=PARIS.name),
    ]
    assert (whole.response, whole.finish_reason) == ("", "tool_calls")
    assert [c.id for c in whole.tool_calls or []] == [PARIS.id, TOKYO.id]
    # The stream's pieces, joined; the signature is not kept.
    assert (streamed.response, streamed.stream) == ("Sunny", True)
    assert streamed.tool_calls == [
        CapturedToolCall(id=SIGNED.id, name=SIGNED.name, arguments=SIGNED.arguments)
    ]


def test_a_plain_text_answer_has_the_fields_it_had_before_tools() -> None:
    request = ChatRequest((Message("user", "Hello"),))
    item = Captured("r1", Outcome(ROUTE), request, "Hi", "stop", None, 0.1, False, None, None)
    assert list(data_of(item)) == OLD_FIELDS
    assert list(data_of(item)["messages"][0]) == ["role", "content"]


def test_tool_arguments_and_results_are_redacted_and_stay_json() -> None:
    secret = "carol@example.org"
    call = {
        "id": "c1",
        "name": "send",
        "arguments": json.dumps({"to": secret, "n": 4111111111111111}),
    }
    data = answer(
        messages=[
            {"role": "user", "content": "Mail her."},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": f"sent to {secret}", "tool_call_id": "c1", "name": "send"},
        ],
        response="",
        finish_reason="tool_calls",
        tool_calls=[
            {**call, "id": "c2", "arguments": json.dumps({"api_key": "abcdef1234567890XYZ"})}
        ],
        tools=[{"name": "send", "description": None, "parameters": None}],
    )
    raw = event_body(data, datetime.now(UTC), Redactor())
    assert secret.encode() not in raw and b"4111" not in raw and b"abcdef123" not in raw
    event = orjson.loads(raw)["data"]
    sent = event["messages"][1]["tool_calls"][0]["arguments"]
    assert json.loads(sent) == {"to": "[EMAIL]", "n": "[CARD]"}
    assert event["messages"][2]["content"] == "sent to [EMAIL]"
    assert json.loads(event["tool_calls"][0]["arguments"]) == {"api_key": "[API_KEY]"}


def test_arguments_without_anything_to_redact_are_kept_as_sent() -> None:
    spaced = '{"city": "Paris",  "unit": "celsius"}'
    call = ToolCall("c1", "get_weather", spaced)
    data = answer(tool_calls=[{"id": call.id, "name": call.name, "arguments": spaced}])
    event = orjson.loads(event_body(data, datetime.now(UTC), Redactor()))["data"]
    assert event["tool_calls"][0]["arguments"] == spaced
