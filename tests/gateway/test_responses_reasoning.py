"""``reasoning`` output items on ``POST /v1/responses`` over scripted backends (``FakeProvider``,
which gives a thought summary when the request asks for one, as Gemini does; every body and
event checked against OpenAI's schemas by ``ShapeCheck``): the item before the answer's, whole
and streamed; nothing without ``reasoning.summary``; a backend that breaks during its summary
(the answer starts over on the next backend, the cut part ``incomplete``); ``reasoning`` items
sent back are accepted and reach no backend."""

from __future__ import annotations

from typing import Any

import pytest

from standby.providers.fake import Cut, FakeProvider, Reply
from tests.gateway.test_responses_failover import CALL, MODES, WEATHER, harness

SUMMARY = {"effort": "low", "summary": "auto"}
THOUGHTS = ("Weighing the question. ", "Plan: answer briefly.")


def reasoning_events(events: list[dict[str, Any]]) -> list[tuple[str, int | None]]:
    """Each reasoning event's type (less ``response.``) and summary index."""
    return [
        (e["type"].removeprefix("response."), e.get("summary_index"))
        for e in events
        if "reasoning" in e["type"] or e.get("item", {}).get("type") == "reasoning"
    ]


@MODES
async def test_a_thought_summary_is_a_reasoning_item_before_the_message(stream: bool) -> None:
    primary = FakeProvider("primary", Reply("Short ", "answer.", thoughts=THOUGHTS))
    async with harness(primary) as h:
        served = await h.ask(stream=stream, reasoning=SUMMARY)
    final = served.final
    assert final["status"] == "completed"
    reasoning, message = final["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["summary"] == [{"type": "summary_text", "text": "".join(THOUGHTS)}]
    assert reasoning["status"] == "completed"
    assert message["content"][0]["text"] == "Short answer."
    assert final["reasoning"] == {"effort": "low", "summary": "auto"}  # echoed
    assert primary.requests[0].thought_summaries
    if stream:
        assert served.types[2:9] == [
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
        ]
        assert served.types[9] == "response.output_item.added"  # then the message
        deltas = [e for e in served.events if e["type"].endswith("summary_text.delta")]
        assert [e["delta"] for e in deltas] == list(THOUGHTS)
        assert {(e["item_id"], e["output_index"], e["summary_index"]) for e in deltas} == {
            (reasoning["id"], 0, 0)
        }
        assert served.deltas == "".join(THOUGHTS) + "Short answer."  # every *text.delta
        message_events = [e for e in served.events if e.get("item_id") == message["id"]]
        assert {e["output_index"] for e in message_events} == {1}


@MODES
async def test_calls_follow_the_reasoning_item(stream: bool) -> None:
    primary = FakeProvider("primary", Reply(calls=[CALL], thoughts=THOUGHTS))
    async with harness(primary) as h:
        served = await h.ask(stream=stream, reasoning=SUMMARY, tools=[WEATHER])
    assert [i["type"] for i in served.final["output"]] == ["reasoning", "function_call"]
    call = served.final["output"][1]
    assert call["extra_content"] == {"google": {"thought_signature": "c2lnbmVk"}}
    if stream:
        done = [e for e in served.events if e["type"] == "response.output_item.done"]
        assert [e["item"]["type"] for e in done] == ["reasoning", "function_call"]


@MODES
async def test_no_summary_asked_no_reasoning_item(stream: bool) -> None:
    primary = FakeProvider("primary", default=Reply("An answer.", thoughts=THOUGHTS))
    async with harness(primary) as h:
        effort_only = await h.ask(stream=stream, reasoning={"effort": "low"})
        plain = await h.ask(stream=stream)
    for served in (effort_only, plain):
        assert [i["type"] for i in served.final["output"]] == ["message"]
        assert not reasoning_events(served.events)
    assert not any(r.thought_summaries for r in primary.requests)


async def test_a_summary_and_no_answer_is_an_empty_message_after_it() -> None:
    primary = FakeProvider("primary", default=Reply(thoughts=THOUGHTS))
    async with harness(primary) as h:
        whole = await h.ask(reasoning=SUMMARY)
        streamed = await h.ask(stream=True, reasoning=SUMMARY)
    for served in (whole, streamed):
        output = served.final["output"]
        assert [i["type"] for i in output] == ["reasoning", "message"]
        assert output[1]["content"][0]["text"] == ""


async def test_a_fallback_gives_no_reasoning_item() -> None:
    down = FakeProvider("primary", Cut(error=None))
    fallback = FakeProvider("fallback", default=Reply("The fallback answers."))
    async with harness(down, fallback) as h:
        served = await h.ask(stream=True, reasoning=SUMMARY)
    assert [i["type"] for i in served.final["output"]] == ["message"]
    assert served.final["standby"]["provenance"] == "fallback"


async def test_a_stream_cut_during_its_summary_starts_the_answer_over_on_the_fallback() -> None:
    """The cut summary part is done ``incomplete`` (its item too); the fallback answers the
    request from the start (no answer text was sent: nothing to continue)."""
    primary = FakeProvider("primary", Cut(thoughts=THOUGHTS))
    fallback = FakeProvider("fallback", default=Reply("The fallback ", "answers."))
    async with harness(primary, fallback) as h:
        served = await h.ask(stream=True, reasoning=SUMMARY)
    assert served.headers["x-standby-backend"] == "primary"  # it sent the first byte
    final = served.final
    assert final["status"] == "completed"
    reasoning, message = final["output"]
    assert reasoning["status"] == "incomplete"
    assert reasoning["summary"] == [{"type": "summary_text", "text": "".join(THOUGHTS)}]
    assert message["content"][0]["text"] == "The fallback answers."
    assert final["standby"] == {
        "backend": "fallback",
        "provenance": "fallback",  # every word of the answer is the fallback's
        "fallback_reason": "mid_stream",
    }
    assert reasoning_events(served.events) == [
        ("output_item.added", None),
        ("reasoning_summary_part.added", 0),
        ("reasoning_summary_text.delta", 0),
        ("reasoning_summary_text.delta", 0),
        ("reasoning_summary_text.done", 0),
        ("reasoning_summary_part.done", 0),
        ("output_item.done", None),
    ]
    part_done = next(e for e in served.events if e["type"].endswith("summary_part.done"))
    assert part_done["status"] == "incomplete"
    # The fallback got the request as the client sent it, not a continuation.
    (asked,) = fallback.requests
    assert not asked.continue_final
    assert [m.role for m in asked.messages] == ["user"]


async def test_a_next_backend_that_thinks_too_adds_the_next_summary_part() -> None:
    primary = FakeProvider("primary", Cut(thoughts=THOUGHTS[:1]))
    second = FakeProvider("second", default=Reply("Answer.", thoughts=["Thinking anew."]))
    async with harness(primary, second) as h:
        served = await h.ask(stream=True, reasoning=SUMMARY)
    reasoning = served.final["output"][0]
    assert reasoning["summary"] == [
        {"type": "summary_text", "text": THOUGHTS[0]},
        {"type": "summary_text", "text": "Thinking anew."},
    ]
    assert reasoning["status"] == "incomplete"
    parts = [e for e in served.events if e["type"].endswith("summary_part.done")]
    assert [(e["summary_index"], e.get("status")) for e in parts] == [
        (0, "incomplete"),
        (1, None),
    ]


async def test_a_cut_summary_with_no_backend_left_fails_with_the_item_incomplete() -> None:
    primary = FakeProvider("primary", Cut(thoughts=THOUGHTS))
    async with harness(primary) as h:
        served = await h.ask(stream=True, reasoning=SUMMARY)
    assert served.types[-1] == "response.failed"
    (reasoning,) = served.final["output"]
    assert reasoning["type"] == "reasoning" and reasoning["status"] == "incomplete"


REPLAYED = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "Should look it up."}],
        "status": "completed",
    },
    {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
        "extra_content": {"google": {"thought_signature": "c2lnbmVk"}},
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny", "status": "completed"},
    {"type": "reasoning", "summary": []},
]


async def test_reasoning_items_sent_back_are_accepted_and_reach_no_backend() -> None:
    primary = FakeProvider("primary", Reply("Sunny."))
    async with harness(primary) as h:
        served = await h.ask(input=REPLAYED, tools=[WEATHER], reasoning=SUMMARY)
        items = await h.http.get(f"/v1/responses/{served.body['id']}/input_items?order=asc")
    assert served.status == 200
    sent = primary.requests[0].messages
    assert [(m.role, m.content) for m in sent] == [
        ("user", "Weather in Paris?"),
        ("assistant", ""),
        ("tool", "sunny"),
    ]
    assert sent[1].tool_calls == (CALL,)
    assert "Should look it up" not in repr(primary.requests[0])
    assert items.json()["data"][4]["id"].startswith("rs_")  # given one where it had none
    assert [i["type"] for i in items.json()["data"]] == [
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
        "reasoning",
    ]


async def test_a_stored_reasoning_item_is_left_out_of_a_continuation() -> None:
    primary = FakeProvider(
        "primary", Reply(calls=[CALL], thoughts=THOUGHTS), Reply("Sunny in Paris.")
    )
    async with harness(primary) as h:
        first = await h.ask(input="Weather in Paris?", tools=[WEATHER], reasoning=SUMMARY)
        assert first.body["output"][0]["type"] == "reasoning"
        second = await h.ask(
            previous_response_id=first.body["id"],
            input=[{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
            tools=[WEATHER],
        )
    assert second.status == 200
    continued = primary.requests[1].messages
    assert [m.role for m in continued] == ["user", "assistant", "tool"]
    assert continued[1].tool_calls == (CALL,)
    assert THOUGHTS[0] not in repr(primary.requests[1])


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "reasoning", "id": "rs_1"}, "input.0.summary"),
        ({"type": "reasoning", "summary": [{"type": "text", "text": "x"}]}, "input.0.summary.0"),
    ],
)
async def test_a_malformed_reasoning_item_is_a_400_naming_it(
    item: dict[str, Any], param: str
) -> None:
    primary = FakeProvider("primary")
    async with harness(primary) as h:
        served = await h.ask(input=[item, {"role": "user", "content": "hi"}])
    assert served.status == 400
    assert served.body["error"]["param"].startswith(param)
    assert primary.requests == []


async def test_an_unknown_summary_setting_is_a_400() -> None:
    async with harness(FakeProvider("primary")) as h:
        served = await h.ask(reasoning={"summary": "verbose"})
    assert served.status == 400
    assert served.body["error"]["param"] == "reasoning.summary"
