"""The simulated TGI under a grammar (standby.sim.tgi, tgi_grammar, tgi_chat): its native API
through huggingface_hub's own client and its Messages API through the openai SDK answer JSON
that validates against the schema, and the grammar shapes TGI refuses are refused as TGI
refuses them (422: plain text when the body does not deserialize, a ``validation`` error for a
schema TGI cannot compile)."""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
import jsonschema
import orjson
import pytest
from huggingface_hub import AsyncInferenceClient, TextGenerationInputGrammarType
from huggingface_hub.errors import ValidationError
from openai import OpenAI, UnprocessableEntityError
from openai.types.chat import ChatCompletion

from tests.fixtures.tgi_sim import RunningTGI

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "maximum": 3}},
    "required": ["city", "days"],
}
ASK = [{"role": "user", "content": "Weather in Oslo?"}]


class _Client(AsyncInferenceClient):
    """huggingface_hub's client on a plain httpx2 pool (its own session refuses every URL in
    the suite's offline mode, HF_HUB_OFFLINE)."""

    def __init__(self, url: str) -> None:
        super().__init__(base_url=url, api_key="unused")
        self._pool = httpx2.AsyncClient(trust_env=False)

    async def _get_async_client(self) -> httpx2.AsyncClient:
        return self._pool

    async def close(self) -> None:
        await super().close()  # type: ignore[no-untyped-call]
        await self._pool.aclose()


def _client(sim: RunningTGI) -> _Client:
    return _Client(sim.url)


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client() as http:
        return http.post(url, json=body)


@pytest.mark.parametrize(
    "grammar",
    [
        {"type": "json", "value": SCHEMA},
        {"type": "json_object", "value": SCHEMA},
        {"type": "json", "value": orjson.dumps(SCHEMA).decode()},  # a string holding the schema
        {"type": "json_schema", "value": {"name": "weather", "schema": SCHEMA}},
    ],
)
async def test_native_json_grammar_answers_an_instance(
    tgi_sim: RunningTGI, grammar: dict[str, Any]
) -> None:
    async with _client(tgi_sim) as client:
        whole = await client.text_generation(
            "Weather?", grammar=grammar, max_new_tokens=100, return_full_text=False
        )
        events = await client.text_generation(
            "Weather?", grammar=grammar, stream=True, details=True
        )
        streamed = [e.token.text async for e in events if not e.token.special]
    jsonschema.validate(orjson.loads(whole), SCHEMA)
    assert "".join(streamed) == whole
    assert len(streamed) > 1


async def test_native_grammar_type_of_huggingface_hub(tgi_sim: RunningTGI) -> None:
    grammar = TextGenerationInputGrammarType(type="json", value=SCHEMA)
    async with _client(tgi_sim) as client:
        out = await client.text_generation("Weather?", grammar=grammar, return_full_text=False)
    assert orjson.loads(out) == {"city": orjson.loads(out)["city"], "days": 3}


@pytest.mark.parametrize(
    ("grammar", "says"),
    [
        ({"type": "xml", "value": SCHEMA}, "unknown variant `xml`"),
        ({"type": "json"}, "missing field `value`"),
        ({"type": "json_schema", "value": SCHEMA}, "missing field `schema`"),
    ],
)
async def test_native_grammar_of_the_wrong_shape_is_a_plain_422(
    tgi_sim: RunningTGI, grammar: dict[str, Any], says: str
) -> None:
    for stream in (False, True):  # before any stream starts
        body = {"inputs": "hi", "parameters": {"grammar": grammar}, "stream": stream}
        resp = _post(tgi_sim.url, body)
        assert resp.status_code == 422
        assert resp.headers["content-type"].startswith("text/plain")
        assert resp.text.startswith("Failed to deserialize the JSON body into the target type")
        assert says in resp.text


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"type": "object"}, "Grammar must have a 'properties' field"),
        ({"type": "array", "items": {"type": "string"}}, "Grammar must have a 'properties' field"),
        ({"type": 12, "properties": {}}, "grammar is not valid"),
        ("{not json", "grammar is not valid"),
        (12, "grammar is not supported"),
    ],
)
async def test_native_grammar_tgi_cannot_compile_is_a_validation_error(
    tgi_sim: RunningTGI, value: Any, says: str
) -> None:
    async with _client(tgi_sim) as client:
        with pytest.raises(ValidationError, match="Input validation error") as caught:
            await client.text_generation("hi", grammar={"type": "json", "value": value})
    assert says in str(caught.value)
    body = {"inputs": "hi", "parameters": {"grammar": {"type": "json", "value": value}}}
    resp = _post(f"{tgi_sim.url}/generate", body)
    assert resp.status_code == 422
    assert resp.json()["error_type"] == "validation"


# -- the Messages API -----------------------------------------------------------------------------


def _openai(sim: RunningTGI) -> OpenAI:
    return OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)


def test_messages_api_takes_tgis_response_format(tgi_sim: RunningTGI) -> None:
    fmt = {"type": "json_object", "value": SCHEMA}
    with _openai(tgi_sim) as client:
        whole, chunks = _json_twice(client, fmt)
    content = whole.choices[0].message.content or ""
    jsonschema.validate(orjson.loads(content), SCHEMA)
    assert whole.choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert chunks[-1].usage is not None
    assert tgi_sim.requests[0]["path"] == "/v1/chat/completions"


def _json_twice(client: OpenAI, fmt: dict[str, Any]) -> tuple[ChatCompletion, list[Any]]:
    """The whole answer and the streamed chunks under TGI's ``response_format``."""
    whole = client.chat.completions.create(
        model="tgi", messages=ASK, extra_body={"response_format": fmt}
    )
    stream = client.chat.completions.create(
        model="tgi",
        messages=ASK,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"response_format": fmt},
    )
    with stream:
        return whole, list(stream)


@pytest.mark.parametrize(
    "fmt",
    [
        {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}},  # OpenAI's shape
        {"type": "json_object"},  # OpenAI's JSON mode: TGI needs a value
    ],
)
def test_messages_api_refuses_openais_shapes(tgi_sim: RunningTGI, fmt: dict[str, Any]) -> None:
    with _openai(tgi_sim) as client, pytest.raises(UnprocessableEntityError) as caught:
        client.chat.completions.create(
            model="tgi", messages=ASK, extra_body={"response_format": fmt}
        )
    assert "Failed to deserialize the JSON body" in caught.value.response.text


def test_messages_api_refuses_a_grammar_with_tools(tgi_sim: RunningTGI) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": SCHEMA}}
    with _openai(tgi_sim) as client, pytest.raises(UnprocessableEntityError) as caught:
        client.chat.completions.create(
            model="tgi",
            messages=ASK,
            tools=[tool],  # type: ignore[list-item]
            extra_body={"response_format": {"type": "json_object", "value": SCHEMA}},
        )
    assert caught.value.response.json() == {
        "error": "Tool error: Grammar and tools are mutually exclusive",
        "error_type": "tool_error",
    }
