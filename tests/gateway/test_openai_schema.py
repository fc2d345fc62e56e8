"""The schema check itself: the vendored OpenAI schemas read as JSON Schema (3.0-style
``nullable`` included) and catch what a client would trip on, so a passing answer means
something."""

from __future__ import annotations

from typing import Any

from tests.fixtures.openai_schema import problems, without_nullable

CHUNK = "CreateChatCompletionStreamResponse"


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        **extra,
    }


def test_nullable_becomes_a_null_type_enum_member_or_any_of() -> None:
    assert without_nullable({"type": "string", "enum": ["a"], "nullable": True}) == {
        "type": ["string", "null"],
        "enum": ["a", None],
    }
    assert without_nullable({"$ref": "#/x", "nullable": True, "description": "d"}) == {
        "description": "d",
        "anyOf": [{"$ref": "#/x"}, {"type": "null"}],
    }
    assert without_nullable({"type": "string", "nullable": False}) == {"type": "string"}


def test_nulls_the_document_allows_pass() -> None:
    assert problems(CHUNK, chunk({}, None, usage=None)) == []


def test_what_a_client_would_trip_on_is_caught() -> None:
    piece = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    assert problems(CHUNK, chunk({"tool_calls": [piece]})) == [
        "choices.0.delta.tool_calls.0: 'index' is a required property"
    ]
    assert problems(CHUNK, chunk({}, "tool_call")) == [
        "choices.0.finish_reason: 'tool_call' is not one of "
        "['stop', 'length', 'tool_calls', 'content_filter', 'function_call', None]"
    ]
    whole = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
                "finish_reason": "tool_calls",
                "logprobs": None,
            }
        ],
    }
    assert problems("CreateChatCompletionResponse", whole)  # a call without type and function
