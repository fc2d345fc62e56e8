"""``response_format`` in each non-local backend's dialect, against the simulators that speak
those servers' protocols: OpenAI's shape to vLLM (openai and litellm backends), TGI's grammar to
TGI's Messages API (``structured_output: tgi``) and native API; and the requests a backend
cannot constrain are ``unsupported`` there (skipped by failover), never sent without their
format."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest

from standby.config import LiteLLMBackend, OpenAIBackend, TGIBackend
from standby.errors import UpstreamStatusError
from standby.protocol import ChatRequest, Message
from standby.providers.litellm import LiteLLMProvider
from standby.providers.openai_compat import OpenAICompatProvider
from standby.providers.tgi import TGIProvider
from standby.sim.vllm import BASE_MODEL
from tests.fixtures.providers import WEATHER, Start, collect, joined
from tests.fixtures.tgi_sim import RunningTGI
from tests.fixtures.vllm_sim import StartVLLM

pytestmark = pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "maximum": 3}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True},
}
ASK = (Message("user", "Plan a trip."),)
STRUCTURED = ChatRequest(messages=ASK, response_format=SCHEMA_FORMAT)
JSON_MODE = ChatRequest(messages=ASK, response_format={"type": "json_object"})
NO_PROPERTIES = ChatRequest(
    messages=ASK,
    response_format={"type": "json_schema", "json_schema": {"schema": {"type": "array"}}},
)


def _valid(text: str) -> None:
    jsonschema.validate(orjson.loads(text), SCHEMA)


async def _openai(started: Start, url: str, **kw: Any) -> OpenAICompatProvider:
    config = OpenAIBackend(type="openai", base_url=url, model=BASE_MODEL, **kw)
    return await started(OpenAICompatProvider("be", config))


# -- openai-type: OpenAI's shape (vLLM) ----------------------------------------------------------


async def test_openai_dialect_sends_openais_shape_to_vllm(
    started: Start, start_vllm: StartVLLM
) -> None:
    vllm = start_vllm()
    p = await _openai(started, vllm.base_url)
    assert p.unsupported(STRUCTURED) is None and p.unsupported(JSON_MODE) is None
    whole = await p.complete(STRUCTURED)
    streamed = joined(await collect(p, STRUCTURED))
    _valid(whole.text)
    assert streamed == whole.text
    assert [r["response_format"] for r in vllm.sim.requests] == [SCHEMA_FORMAT] * 2


# -- openai-type: TGI's Messages API --------------------------------------------------------------


async def test_tgi_dialect_sends_tgis_grammar(started: Start, tgi_sim: RunningTGI) -> None:
    p = await _openai(started, f"{tgi_sim.url}/v1", structured_output="tgi")
    assert p.unsupported(STRUCTURED) is None
    whole = await p.complete(STRUCTURED)
    streamed = joined(await collect(p, STRUCTURED))
    _valid(whole.text)
    assert streamed == whole.text
    sent = [r["body"]["response_format"] for r in tgi_sim.requests]
    assert sent == [{"type": "json_object", "value": SCHEMA}] * 2  # strict: TGI always constrains


async def test_openais_shape_is_what_tgi_refuses(started: Start, tgi_sim: RunningTGI) -> None:
    """Why the key exists: TGI's Messages API answers OpenAI's shape with a 422."""
    p = await _openai(started, f"{tgi_sim.url}/v1")
    with pytest.raises(UpstreamStatusError) as caught:
        await p.complete(STRUCTURED)
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (JSON_MODE, "json_object (any JSON object) cannot be constrained"),
        (NO_PROPERTIES, "whose root has 'properties'"),
        (
            ChatRequest(messages=ASK, response_format=SCHEMA_FORMAT, tools=(WEATHER,)),
            "cannot take a response_format and tools together",
        ),
    ],
)
async def test_tgi_dialect_skips_what_tgi_refuses(
    started: Start, tgi_sim: RunningTGI, request_: ChatRequest, says: str
) -> None:
    p = await _openai(started, f"{tgi_sim.url}/v1", structured_output="tgi")
    assert says in (p.unsupported(request_) or "")


async def test_none_skips_every_response_format(started: Start, start_vllm: StartVLLM) -> None:
    p = await _openai(started, start_vllm().base_url, structured_output="none")
    for request in (STRUCTURED, JSON_MODE):
        assert p.unsupported(request) == (
            "backend 'be': configured without structured output (structured_output: none)"
        )
    assert p.unsupported(ChatRequest(messages=ASK)) is None


# -- TGI's native API ------------------------------------------------------------------------------


async def test_tgi_native_constrains_to_the_schema(started: Start, tgi_sim: RunningTGI) -> None:
    p = await started(TGIProvider("tgi", TGIBackend(type="tgi", base_url=tgi_sim.url)))
    assert p.unsupported(STRUCTURED) is None
    whole = await p.complete(STRUCTURED)
    streamed = joined(await collect(p, STRUCTURED))
    _valid(whole.text)
    assert streamed == whole.text
    grammars = [r["body"]["parameters"]["grammar"] for r in tgi_sim.requests]
    assert grammars == [{"type": "json", "value": SCHEMA}] * 2


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (JSON_MODE, "json_object (any JSON object) cannot be constrained"),
        (NO_PROPERTIES, "whose root has 'properties'"),
    ],
)
async def test_tgi_native_skips_what_tgi_refuses(
    started: Start, tgi_sim: RunningTGI, request_: ChatRequest, says: str
) -> None:
    p = await started(TGIProvider("tgi", TGIBackend(type="tgi", base_url=tgi_sim.url)))
    assert says in (p.unsupported(request_) or "")


async def test_tgi_native_without_grammar_support_skips(
    started: Start, tgi_sim: RunningTGI
) -> None:
    config = TGIBackend(type="tgi", base_url=tgi_sim.url, structured_output=False)
    p = await started(TGIProvider("tgi", config))
    assert p.unsupported(STRUCTURED) == (
        "configured without grammar support (structured_output: false)"
    )
    assert p.unsupported(ChatRequest(messages=ASK)) is None


# -- litellm -------------------------------------------------------------------------------------


async def _litellm(started: Start, model: str, url: str, **kw: Any) -> LiteLLMProvider:
    config = LiteLLMBackend(type="litellm", model=model, api_base=url, api_key="unused", **kw)
    return await started(LiteLLMProvider("lm", config))


async def test_litellm_forwards_openais_shape(started: Start, start_vllm: StartVLLM) -> None:
    vllm = start_vllm()
    p = await _litellm(started, f"hosted_vllm/{BASE_MODEL}", vllm.base_url)
    assert p.unsupported(STRUCTURED) is None
    whole = await p.complete(STRUCTURED)
    streamed = joined(await collect(p, STRUCTURED))
    _valid(whole.text)
    assert streamed == whole.text
    assert [r["response_format"] for r in vllm.sim.requests] == [SCHEMA_FORMAT] * 2


async def test_litellm_skips_when_told_or_when_it_does_not_forward(
    started: Start, start_vllm: StartVLLM
) -> None:
    url = start_vllm().base_url
    told = await _litellm(started, f"openai/{BASE_MODEL}", url, structured_output=False)
    assert "structured output" in (told.unsupported(STRUCTURED) or "")
    # litellm has no response_format for Cohere's chat: it would raise, or drop it silently
    # with drop_params.
    cohere = await _litellm(started, "cohere/command-r", url)
    assert "structured output" in (cohere.unsupported(JSON_MODE) or "")
    assert cohere.unsupported(ChatRequest(messages=ASK)) is None
