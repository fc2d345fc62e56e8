"""The simulated Gemini seen through the real clients: google-genai (sync and async), litellm
and the official openai SDK. Fault behaviour on the wire is in test_gemini_faults.py."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from typing import Any

import litellm
import openai
import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel

from standby.sim.answers import base_answer, split_chunks
from tests.fixtures.sim import SIM_KEY, RunningSim
from tests.sim.conftest import genai_client

pytestmark = [
    # litellm declares TypedDicts with ReadOnly items; pydantic warns when it first builds them.
    pytest.mark.filterwarnings(
        "ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
    ),
]

MODEL = "gemini-2.5-flash"
PROMPT = "Name three colours of the rainbow."
ANSWER = base_answer(PROMPT)


def _openai(url: str, key: str = "test-key") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1beta/openai/", api_key=key, max_retries=0)


# --- google-genai -----------------------------------------------------------------------------


def test_genai_generate_content(client: genai.Client, sim: RunningSim) -> None:
    r = client.models.generate_content(model=MODEL, contents=PROMPT)
    assert r.text == ANSWER
    assert r.candidates is not None
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.usage_metadata is not None
    assert r.usage_metadata.prompt_token_count == 6
    assert r.usage_metadata.candidates_token_count == 40
    assert r.usage_metadata.total_token_count == 46
    assert r.model_version == MODEL
    assert r.response_id
    assert sim.sim.stats() == {
        "requests": 1,
        "by_model": {MODEL: 1},
        "fault": "ok",
        "in_flight": 0,
        "scripted": 0,
        "script_pending": 0,
    }


def test_genai_stream_is_8_chunks_of_the_same_answer(client: genai.Client) -> None:
    chunks = list(client.models.generate_content_stream(model=MODEL, contents=PROMPT))
    assert [c.text for c in chunks] == list(split_chunks(ANSWER))
    assert len(chunks) == 8
    finishes = [c.candidates[0].finish_reason for c in chunks if c.candidates]
    assert finishes == [None] * 7 + [types.FinishReason.STOP]
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.candidates_token_count == 40


async def test_genai_async_client_matches_sync(client: genai.Client) -> None:
    r = await client.aio.models.generate_content(model=MODEL, contents=PROMPT)
    assert r.text == ANSWER
    pieces = [
        c.text
        async for c in await client.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
    ]
    assert pieces == list(split_chunks(ANSWER))


def test_genai_generation_config_is_honoured(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        max_output_tokens=5, temperature=0.3, top_p=0.9, seed=7, system_instruction="Be brief."
    )
    r = client.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    assert r.text == "Simulated Gemini answer to: Name"
    assert r.candidates is not None
    assert r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert r.usage_metadata is not None
    assert r.usage_metadata.prompt_token_count == 8  # the system instruction counts
    stop = types.GenerateContentConfig(stop_sequences=["rainbow"])
    r = client.models.generate_content(model=MODEL, contents=PROMPT, config=stop)
    assert r.text == "Simulated Gemini answer to: Name three colours of the "


class Assessment(BaseModel):
    score: int
    reason: str


class Judgement(BaseModel):
    similarity_assessment: Assessment
    precision_assessment: Assessment


def test_genai_structured_output_parses(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        response_mime_type="application/json", response_schema=Judgement
    )
    r = client.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    assert isinstance(r.parsed, Judgement)
    # The evaluator's judgement schema: the simulated judge answers (this prompt is not the
    # judge's template, so it scores 1 and says why; tests/sim/test_judge.py scores for real).
    assert r.parsed.similarity_assessment.reason.startswith("simulated judge: the prompt is not")
    config = types.GenerateContentConfig(
        response_mime_type="application/json", response_json_schema=Judgement.model_json_schema()
    )
    r = client.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    assert Judgement.model_validate_json(r.text or "").precision_assessment.score == 1


def test_genai_prefill_is_continued_without_repeating(client: genai.Client) -> None:
    partial = "".join(split_chunks(ANSWER)[:3])
    contents = [
        types.Content(role="user", parts=[types.Part(text=PROMPT)]),
        types.Content(role="model", parts=[types.Part(text=partial)]),
    ]
    r = client.models.generate_content(model=MODEL, contents=contents)
    assert partial + (r.text or "") == ANSWER


@pytest.mark.parametrize(
    ("model", "error", "code"),
    [("error-429", errors.ClientError, 429), ("error-503", errors.ServerError, 503)],
)
def test_genai_errors(client: genai.Client, model: str, error: type[Exception], code: int) -> None:
    with pytest.raises(error) as info:
        client.models.generate_content(model=model, contents=PROMPT)
    assert isinstance(info.value, errors.APIError)
    assert info.value.code == code
    if code == 429:
        assert info.value.status == "RESOURCE_EXHAUSTED"
        assert info.value.details["error"]["details"][0]["retryDelay"] == "1s"


def test_genai_blocked_answers(client: genai.Client) -> None:
    r = client.models.generate_content(model="safety", contents=PROMPT)
    assert r.text is None
    assert r.candidates is not None
    assert r.candidates[0].finish_reason == types.FinishReason.SAFETY
    r = client.models.generate_content(model="recitation", contents=PROMPT)
    assert r.candidates is not None
    assert r.candidates[0].finish_reason == types.FinishReason.RECITATION
    r = client.models.generate_content(model="blocked", contents=PROMPT)
    assert not r.candidates
    assert r.prompt_feedback is not None
    assert r.prompt_feedback.block_reason == types.BlockedReason.SAFETY


def test_genai_api_key_checked_when_configured(sim_with_key: RunningSim) -> None:
    good = genai_client(sim_with_key.url, SIM_KEY)
    assert good.models.generate_content(model=MODEL, contents=PROMPT).text == ANSWER
    bad = genai_client(sim_with_key.url, "wrong-key")
    with pytest.raises(errors.ClientError) as info:
        bad.models.generate_content(model=MODEL, contents=PROMPT)
    assert (info.value.code, info.value.status) == (403, "PERMISSION_DENIED")
    good.close()
    bad.close()


# --- litellm ----------------------------------------------------------------------------------


async def _litellm(sim: RunningSim, model: str = MODEL, **kw: Any) -> Any:
    """litellm's answer from ``gemini/<model>`` on the simulator (``PROMPT`` unless
    ``messages`` says otherwise)."""
    kw.setdefault("messages", [{"role": "user", "content": PROMPT}])
    return await litellm.acompletion(
        model=f"gemini/{model}", api_base=f"{sim.url}/v1beta", api_key="test-key", **kw
    )


async def test_litellm_completion(sim: RunningSim) -> None:
    r = await _litellm(sim)
    assert r.choices[0].message.content == ANSWER
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (6, 40)
    r = await _litellm(
        sim,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}],
        max_tokens=3,
        stop=["zzz"],
    )
    assert r.choices[0].message.content == "Simulated Gemini answer"
    assert r.choices[0].finish_reason == "length"


async def test_litellm_rate_limit(sim: RunningSim) -> None:
    with pytest.raises(litellm.RateLimitError) as info:
        await _litellm(sim, "error-429", num_retries=0)
    assert info.value.status_code == 429


async def test_litellm_stream(sim: RunningSim) -> None:
    stream = await _litellm(sim, stream=True)
    pieces, finish = [], None
    async for chunk in stream:
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == ANSWER
    assert finish == "stop"


# --- openai SDK against the OpenAI-compatible surface ------------------------------------------


async def test_openai_sdk_completion(sim: RunningSim) -> None:
    async with _openai(sim.url) as client:
        r = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}]
        )
    assert r.choices[0].message.content == ANSWER
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 40, 46)
    assert r.model == MODEL


async def test_openai_sdk_stream_with_usage(sim: RunningSim) -> None:
    async with _openai(sim.url) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=20,
        )
        chunks = [c async for c in stream]
    content = [c.choices[0].delta.content for c in chunks if c.choices]
    assert content == list(split_chunks(" ".join(ANSWER.split()[:20])))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 20


async def test_openai_sdk_stream_without_usage(sim: RunningSim) -> None:
    async with _openai(sim.url) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        chunks = [c async for c in stream]
    assert all(c.usage is None and c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ANSWER


async def test_openai_sdk_errors(sim: RunningSim) -> None:
    async with _openai(sim.url) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(
                model="error-503", messages=[{"role": "user", "content": PROMPT}]
            )
        assert info.value.status_code == 503
        assert info.value.body == {
            "message": "The model is overloaded. Please try again later. "
            "(simulated fault error-503)",
            "type": "server_error",
            "param": None,
            "code": "UNAVAILABLE",
        }
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(
                model="error-429-retry-9", messages=[{"role": "user", "content": PROMPT}]
            )
        assert limited.value.response.headers["retry-after"] == "9"
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model=MODEL, messages=[])


async def test_openai_sdk_content_filter(sim: RunningSim) -> None:
    async with _openai(sim.url) as client:
        r = await client.chat.completions.create(
            model="safety", messages=[{"role": "user", "content": PROMPT}]
        )
    assert r.choices[0].finish_reason == "content_filter"
    assert r.choices[0].message.content is None


async def test_openai_sdk_auth(sim_with_key: RunningSim) -> None:
    async with _openai(sim_with_key.url, SIM_KEY) as client:
        r = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": PROMPT}]
        )
        assert r.choices[0].message.content == ANSWER
    async with _openai(sim_with_key.url, "wrong") as client:
        with pytest.raises(openai.PermissionDeniedError):
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": PROMPT}]
            )


async def test_native_and_openai_surfaces_agree(client: genai.Client, sim: RunningSim) -> None:
    config = types.GenerateContentConfig(max_output_tokens=12, stop_sequences=["standby"])
    native = client.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    async with _openai(sim.url) as oai:
        compat = await oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=12,
            stop="standby",
        )
    assert native.text == compat.choices[0].message.content
    assert compat.choices[0].finish_reason == "length"
