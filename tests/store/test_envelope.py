"""The envelope: typed round trips, ids, the size limit, and what a malformed event says."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, get_args, get_type_hints

import orjson
import pytest
from pydantic import ValidationError

from standby.protocol import FinishReason
from standby.store import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    SPEC_VERSION,
    BreakerChanged,
    BreakerChangedData,
    EventTooLarge,
    InferenceCompleted,
    MalformedEvent,
    PipelineEvent,
    decode_event,
    encode_event,
    encode_inference_completed,
    new_event_id,
)
from standby.store.envelope import (
    CapturedTool,
    CapturedToolCall,
    CapturedToolCallJSON,
    CapturedToolJSON,
    ChatMessage,
    ChatMessageJSON,
    InferenceCompletedData,
    InferenceCompletedJSON,
    TokenUsage,
    TokenUsageJSON,
)
from tests.store.conftest import inference_event


def test_inference_completed_round_trips_with_every_field() -> None:
    event = inference_event(1, model_version="gemini-2.5-flash-001", fallback_reason=None)
    raw = encode_event(event)
    body = orjson.loads(raw)
    assert list(body) == ["specversion", "id", "time", "source", "type", "data"]
    assert body["specversion"] == SPEC_VERSION == "1.0"
    assert body["type"] == "inference.completed"
    assert body["time"].endswith("Z")  # RFC 3339 UTC
    assert body["data"]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert body["data"]["messages"] == [{"role": "user", "content": "question 1"}]
    back = decode_event(raw)
    assert isinstance(back, InferenceCompleted) and back == event
    assert back.time.tzinfo is not None


def test_the_capture_encoder_writes_what_the_model_would() -> None:
    """encode_inference_completed (the data dict encoded with orjson) reads back as the same
    event as the model path, with the same layout and a new id and time."""
    event = inference_event(1, model_version="v1", stream=True, usage={"prompt_tokens": 3})
    data = event.data.model_dump(mode="json")
    raw = encode_inference_completed(dict(data), source="tests")
    body = orjson.loads(raw)
    assert list(body) == list(orjson.loads(encode_event(event)))
    assert body["time"].endswith("Z") and body["id"] != event.id
    back = decode_event(raw)
    assert isinstance(back, InferenceCompleted)
    assert back.data == event.data and back.source == "tests"
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)  # the capture writer's frame time
    assert decode_event(encode_inference_completed(dict(data), source="t", at=at)).time == at


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"provenance": "guessed"}, "provenance"),
        ({"latency_s": -1.0}, "latency_s"),
        ({"messages": []}, "messages"),
        ({"surprise": 1}, "surprise"),
        ({"key_id": "sk-not-a-digest"}, "key_id"),
    ],
)
def test_the_capture_encoder_refuses_data_off_the_schema(
    change: dict[str, Any], message: str
) -> None:
    """encode_inference_completed validates the data it is given (the envelope's fields are its
    own) and names the field, in one line, like decode_event does for the same data."""
    data = {**inference_event(0).data.model_dump(mode="json"), **change}
    with pytest.raises(MalformedEvent, match=rf"^invalid event: data\.{message}\b") as err:
        encode_inference_completed(data, source="tests")
    assert err.value.reason == "malformed" and "\n" not in str(err.value)
    with pytest.raises(MalformedEvent, match=rf"\bdata\.{message}\b"):
        decode_event(_raw(**{f"data_{key}": value for key, value in change.items()}))


def test_breaker_and_pipeline_events_round_trip() -> None:
    breaker = BreakerChanged(
        source="gateway",
        data=BreakerChangedData(
            backend="gemini", old_state="closed", new_state="open", open_for_s=30
        ),
    )
    promoted = PipelineEvent(type="model.promoted", source="pipeline", data={"version": "v3"})
    assert decode_event(encode_event(breaker)) == breaker
    assert decode_event(encode_event(promoted)) == promoted
    assert set(EVENT_TYPES) == {
        "inference.completed",
        "breaker.changed",
        "dataset.snapshot_created",
        "training.completed",
        "evaluation.completed",
        "model.promoted",
        "model.rolled_back",
    }
    for kind in EVENT_TYPES[2:]:
        assert decode_event(encode_event(PipelineEvent(type=kind, source="p"))).type == kind  # type: ignore[arg-type]


def test_ids_are_unique_and_sort_by_time() -> None:
    first = new_event_id()
    ids = {new_event_id() for _ in range(10_000)}
    time.sleep(0.002)
    later = new_event_id()
    assert len(ids) == 10_000
    assert len(first) == 32 and int(first, 16) >= 0
    assert first[:12] <= min(ids)[:12] and later > max(ids)
    assert int(later[:12], 16) == pytest.approx(time.time() * 1000, abs=2000)
    assert inference_event(0).id != inference_event(0).id


def test_the_size_limit_is_on_encoded_bytes() -> None:
    fits = inference_event(0, response="a" * (MAX_EVENT_BYTES - 1000))
    assert len(encode_event(fits)) <= MAX_EVENT_BYTES
    with pytest.raises(EventTooLarge) as err:
        encode_event(inference_event(0, response="a" * MAX_EVENT_BYTES))
    assert err.value.size > err.value.limit == MAX_EVENT_BYTES
    assert str(err.value).startswith("event of type 'inference.completed' is ")
    with pytest.raises(MalformedEvent, match="over 1048576"):
        decode_event(b" " * (MAX_EVENT_BYTES + 1))
    data = inference_event(0, response="a" * MAX_EVENT_BYTES).data.model_dump(mode="json")
    with pytest.raises(EventTooLarge):
        encode_inference_completed(data, source="tests")


def _raw(**changes: Any) -> bytes:
    body = orjson.loads(encode_event(inference_event(0)))
    for key, value in changes.items():
        if key.startswith("data_"):
            body["data"][key[5:]] = value
        else:
            body[key] = value
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "invalid event: Invalid JSON"),
        (b"[1, 2]", "invalid event: Input should be an object"),
        (_raw(specversion="2.0"), "unsupported event specversion '2.0' (this reader: 1.0)"),
        (_raw(specversion="2.0", type="new.kind"), "unsupported event specversion '2.0'"),
        (_raw(type="inference.started"), "does not match any of the expected tags"),
        (_raw(source=""), "inference.completed.source: String should have at least 1 character"),
        (_raw(data_provenance="cache"), "data.provenance: Input should be 'primary', 'fallback'"),
        (_raw(data_key_id="sk-live-123"), "data.key_id: String should match pattern"),
        (_raw(data_messages=[]), "data.messages: List should have at least 1 item"),
        (_raw(data_latency_s=-1), "data.latency_s: Input should be greater than or equal to 0"),
        (_raw(data_extra="x"), "data.extra: Extra inputs are not permitted"),
        (_raw(time="yesterday"), "inference.completed.time: Input should be a valid datetime"),
    ],
)
def test_malformed_events_say_what_is_wrong_in_one_line(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedEvent) as err:
        decode_event(raw)
    assert message in str(err.value)
    assert err.value.reason == "malformed" and "\n" not in str(err.value)


def test_models_validate_on_construction_and_are_frozen() -> None:
    event = inference_event(0)
    with pytest.raises(ValidationError):
        inference_event(0, finish_reason="because")
    with pytest.raises(ValidationError):
        event.source = "other"
    assert event.time <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("typed_dict", "model"),
    [
        (InferenceCompletedJSON, InferenceCompletedData),
        (ChatMessageJSON, ChatMessage),
        (TokenUsageJSON, TokenUsage),
        (CapturedToolCallJSON, CapturedToolCall),
        (CapturedToolJSON, CapturedTool),
    ],
)
def test_the_capture_shape_has_the_models_fields_in_order(typed_dict: type, model: type) -> None:
    """The gateway builds ``InferenceCompletedJSON`` by hand (no model on the request path):
    every field of the model the writer validates it against, and no other (mypy checks the
    capture path builds every one)."""
    assert list(get_type_hints(typed_dict)) == list(model.model_fields)


def test_tool_fields_round_trip_and_are_left_out_when_absent() -> None:
    call = CapturedToolCall(id="c1", name="get_weather", arguments='{"city":"Paris"}')
    messages = [
        ChatMessage(role="user", content="Weather?"),
        ChatMessage(role="assistant", content="", tool_calls=[call]),
        ChatMessage(role="tool", content="sunny", tool_call_id="c1", name="get_weather"),
    ]
    tools = [CapturedTool(name="get_weather", parameters={"type": "object"})]
    event = inference_event(1, messages=messages, tools=tools, tool_calls=[call])
    raw = encode_event(event)
    assert decode_event(raw) == event
    data = orjson.loads(raw)["data"]
    assert data["messages"][0] == {"role": "user", "content": "Weather?"}
    assert data["tools"] == [
        {"name": "get_weather", "description": None, "parameters": {"type": "object"}}
    ]
    # Without tools, the encoded event is what it was before the fields existed.
    plain = orjson.loads(encode_event(inference_event(2)))["data"]
    assert not {"tools", "tool_calls"} & set(plain)
    assert set(plain["messages"][0]) == {"role", "content"}


def test_an_event_written_before_tool_fields_still_decodes() -> None:
    old = orjson.loads(encode_event(inference_event(3)))
    back = decode_event(orjson.dumps(old))
    assert isinstance(back, InferenceCompleted)
    assert back.data.tools is None and back.data.tool_calls is None
    assert back.data.messages[0].tool_calls is None


def test_finish_reasons_are_the_protocols() -> None:
    assert get_args(InferenceCompletedData.model_fields["finish_reason"].annotation) == get_args(
        FinishReason
    )
    assert "tool_calls" in get_args(FinishReason)
