"""LocalProvider's structured output on the tiny random-weight Gemmas: the weights say gibberish,
so whatever JSON comes out is the grammar's doing. Every finished answer must parse and validate
against its schema (``jsonschema``); rows with different formats, or none, share a batch; a
schema the library cannot compile is the client's problem (``unsupported``, then a 400)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
import pytest_asyncio

from standby.config import LocalBackend
from standby.errors import UpstreamError
from standby.protocol import ChatRequest, Message
from standby.providers.local import LocalProvider
from standby.tool_calls import ToolChoice
from tests.fixtures.gateway import ROUTE, StartGateway
from tests.fixtures.tiny_model import ASK

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Nested objects, enums, arrays, required fields; strings and arrays bounded so that a random
# model finishes within the token budget.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["yes", "no", "maybe"]},
        "score": {"type": "integer", "minimum": 0, "maximum": 100},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2},
        "source": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "maxLength": 10},
                "kind": {"enum": ["book", "web"]},
            },
            "required": ["title", "kind"],
            "additionalProperties": False,
        },
        "ok": {"type": "boolean"},
    },
    "required": ["answer", "score", "tags", "source", "ok"],
    "additionalProperties": False,
}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
JSON_OBJECT = {"type": "json_object"}


def ask(text: str, **kw: Any) -> ChatRequest:
    kw.setdefault("temperature", 0)
    return ChatRequest(messages=(Message("user", text),), **kw)


def local(model: Path, **kw: Any) -> LocalProvider:
    kw = {"max_new_tokens": 96, "device": "cpu", "max_batch_size": 4} | kw
    return LocalProvider("gemma", LocalBackend(type="local", model=str(model), **kw))


@pytest_asyncio.fixture(scope="module")
async def provider(tiny_model_dir: Path) -> AsyncIterator[LocalProvider]:
    p = local(tiny_model_dir)
    await p.start()
    yield p
    await p.close()


def valid(text: str, schema: dict[str, Any]) -> Any:
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value


async def test_json_schema_answers_validate(provider: LocalProvider) -> None:
    requests = [
        ask(f"Question {i}?", temperature=1.0, seed=i, response_format=JSON_SCHEMA)
        for i in range(4)
    ]
    answers = await asyncio.gather(*(provider.complete(r) for r in requests))
    assert all(a.finish_reason == "stop" for a in answers), [a.text for a in answers]
    values = [valid(a.text, SCHEMA) for a in answers]
    assert len({json.dumps(v) for v in values}) > 1  # sampled, not one fixed answer


async def test_json_object_answers_parse_as_objects(provider: LocalProvider) -> None:
    for seed in range(3):
        c = await provider.complete(
            ask("Give me JSON.", temperature=1.0, seed=seed, response_format=JSON_OBJECT)
        )
        if c.finish_reason == "stop":
            assert isinstance(json.loads(c.text), dict), c.text
        else:  # a random model may write a long object: cut, it still starts like one
            assert c.text.startswith("{")
    plain = await provider.complete(ask("Give me JSON."))
    with pytest.raises(ValueError):  # the same model unconstrained writes no JSON at all
        json.loads(plain.text)


async def test_rows_of_different_formats_share_a_batch(provider: LocalProvider) -> None:
    plain = ask("Tell me about the sea.", max_tokens=12)
    requests = [
        ask("Schema, please.", response_format=JSON_SCHEMA),
        ask("JSON.", response_format=JSON_OBJECT),
        plain,
    ]
    alone = await provider.complete(plain)
    before = provider.stats.batch_sizes[3]
    schema, obj, text = await asyncio.gather(*(provider.complete(r) for r in requests))
    assert provider.stats.batch_sizes[3] == before + 1
    valid(schema.text, SCHEMA)
    assert obj.text.startswith("{")
    assert text.text == alone.text  # the other rows' grammars did not touch this row


async def test_a_stream_is_the_whole_answer_in_pieces(provider: LocalProvider) -> None:
    request = ask("Stream it.", temperature=1.0, seed=7, response_format=JSON_SCHEMA)
    deltas = [d async for d in provider.stream(request)]
    whole = await provider.complete(request)
    assert len(deltas) > 5
    assert "".join(d.text for d in deltas) == whole.text
    assert deltas[-1].finish_reason == "stop"
    valid(whole.text, SCHEMA)


async def test_max_tokens_cuts_the_json_with_finish_reason_length(provider: LocalProvider) -> None:
    c = await provider.complete(ask("Short.", max_tokens=4, response_format=JSON_SCHEMA))
    assert (c.finish_reason, c.usage.completion_tokens) == ("length", 4)
    assert c.text.startswith('{"answer')  # the grammar's only way to begin (properties in order)
    with pytest.raises(ValueError):
        json.loads(c.text)  # the partial JSON is what it is


def test_a_schema_the_library_cannot_compile_is_unsupported(provider: LocalProvider) -> None:
    def fmt(schema: dict[str, Any]) -> dict[str, Any]:
        return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}

    for schema, why in [
        ({"type": "foo"}, "Invalid type: foo"),
        ({"$ref": "#/$defs/missing"}, "does not exist"),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "oneOf"),
        ({"type": "string", "minLength": 3, "maxLength": 1}, "Unsatisfiable"),
    ]:
        reason = provider.unsupported(ask("x", response_format=fmt(schema)))
        assert reason is not None and why in reason
        assert reason.startswith("response_format.json_schema.schema cannot be enforced: ")
    assert provider.unsupported(ask("x", response_format=JSON_SCHEMA)) is None


async def test_tools_that_may_be_called_cannot_be_combined_with_a_format(
    tiny_gemma4_dir: Path,
) -> None:
    p = local(tiny_gemma4_dir)
    await p.start()
    try:
        both = ChatRequest(messages=ASK.messages, tools=ASK.tools, response_format=JSON_SCHEMA)
        assert "response_format while it may call tools" in (p.unsupported(both) or "")
        no_calls = ChatRequest(
            messages=ASK.messages,
            tools=ASK.tools,
            tool_choice=ToolChoice("none"),
            response_format=JSON_SCHEMA,
            temperature=0,
        )
        assert p.unsupported(no_calls) is None
        c = await p.complete(no_calls)  # Gemma 4's template and tokenizer, constrained
        valid(c.text, SCHEMA)
    finally:
        await p.close()


def test_a_schema_no_backend_can_enforce_is_a_400_naming_why(
    start_gateway: StartGateway, tiny_model_dir: Path
) -> None:
    config = {
        "server": {"host": "127.0.0.1", "port": 0, "api_keys": []},
        "backends": {
            "gemma": {
                "type": "local",
                "model": str(tiny_model_dir),
                "max_new_tokens": 96,
                "threads": 1,
            }
        },
        "routes": {ROUTE: ["gemma"]},
        "capture": {"enabled": False},
    }
    gateway = start_gateway(config)
    client = gateway.client()
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=ROUTE,
            messages=[{"role": "user", "content": "Hi"}],
            response_format=bad,  # type: ignore[arg-type]
        )
    assert "Invalid type: foo" in caught.value.message
    answer = client.chat.completions.create(
        model=ROUTE,
        messages=[{"role": "user", "content": "Hi"}],
        response_format=JSON_SCHEMA,  # type: ignore[arg-type]
        temperature=0,
    )
    assert answer.choices[0].finish_reason == "stop"
    valid(answer.choices[0].message.content or "", SCHEMA)


async def test_a_continued_partial_answer_is_finished_under_the_schema(
    provider: LocalProvider,
) -> None:
    """Mid-stream failover: the grammar first reads the partial JSON the client already has."""
    partial = '{"answer":"maybe","score":4'
    request = ask("Go on.", response_format=JSON_SCHEMA).continued(partial)
    c = await provider.complete(request)
    assert c.finish_reason == "stop"
    valid(partial + c.text, SCHEMA)
    broken = ask("Go on.", response_format=JSON_SCHEMA).continued('{"colour":')
    with pytest.raises(UpstreamError, match="does not match response_format"):
        await provider.complete(broken)
