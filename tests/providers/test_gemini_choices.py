"""Several candidates (``n`` -> ``candidateCount``) and logprobs (``responseLogprobs`` /
``logprobs``) on the Gemini provider, against the simulated Gemini, whose answers are read back
with the google-genai SDK's own types."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import aiohttp
import orjson
import pytest
from google.genai import types

from standby.config import GeminiBackend
from standby.errors import UpstreamProtocolError
from standby.protocol import ChatRequest, Message
from standby.providers.gemini import GeminiProvider
from standby.providers.gemini_wire import Parsed, request_body
from tests.fixtures.providers import Start
from tests.fixtures.sim import SIM_KEY, RunningSim

ASK = (Message("user", "Name three colours"),)


async def _provider(sim: RunningSim, started: Start) -> GeminiProvider:
    config = GeminiBackend(
        type="gemini", model="gemini-2.5-flash", api_key=SIM_KEY, base_url=sim.url
    )
    return await started(GeminiProvider("gemini", config))


async def _native(sim: RunningSim, request: ChatRequest, method: str) -> list[Any]:
    """The simulator's raw answer bodies (one, or each streamed chunk) for ``request``."""
    url = f"{sim.url}/v1beta/models/gemini-2.5-flash:{method}"
    body = request_body(request)
    types.GenerationConfig.model_validate(body["generationConfig"])  # what the SDK would send
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        raw = await r.read()
    if method == "generateContent":
        return [orjson.loads(raw)]
    return [orjson.loads(line[6:]) for line in raw.splitlines() if line.startswith(b"data: ")]


def test_the_request_asks_for_candidates_and_logprobs() -> None:
    request = ChatRequest(messages=ASK, n=3, logprobs=True, top_logprobs=2)
    config = request_body(request)["generationConfig"]
    assert (config["candidateCount"], config["responseLogprobs"], config["logprobs"]) == (
        3,
        True,
        2,
    )
    plain = request_body(ChatRequest(messages=ASK))["generationConfig"]
    assert plain["candidateCount"] == 1
    assert "responseLogprobs" not in plain and "logprobs" not in plain
    assert (
        "logprobs" not in request_body(ChatRequest(messages=ASK, logprobs=True))["generationConfig"]
    )


@pytest.mark.parametrize("method", ["generateContent", "streamGenerateContent?alt=sse"])
async def test_the_simulator_answers_in_the_sdk_types(sim: RunningSim, method: str) -> None:
    request = ChatRequest(messages=ASK, n=3, logprobs=True, top_logprobs=2)
    bodies = await _native(sim, request, method)
    seen: set[int] = set()
    for body in bodies:
        response = types.GenerateContentResponse.model_validate(body)
        for cand in response.candidates or ():
            assert cand.index is not None
            seen.add(cand.index)
            result = cand.logprobs_result
            assert result is not None and result.chosen_candidates and result.top_candidates
            assert len(result.chosen_candidates) == len(result.top_candidates)
            for top in result.top_candidates:
                probs = [c.log_probability for c in top.candidates or ()]
                assert len(probs) == 2 and probs == sorted(probs, reverse=True)
    assert seen == {0, 1, 2}


async def test_n_whole_answers_are_distinct_choices(sim: RunningSim, started: Start) -> None:
    p = await _provider(sim, started)
    one = await p.complete(ChatRequest(messages=ASK))
    three = await p.complete(ChatRequest(messages=ASK, n=3))
    choices = [three, *three.alternatives]
    assert len(choices) == 3 and len({c.text for c in choices}) == 3
    assert three.text == one.text  # choice 0 is the answer n=1 gets
    assert all(c.finish_reason == "stop" and c.logprobs is None for c in choices)
    words = sum(len(c.text.split()) for c in choices)
    assert three.usage.completion_tokens == words  # every candidate counted, once
    assert all(c.usage.completion_tokens == 0 for c in three.alternatives)


async def test_n_streamed_choices_add_up_to_the_whole_ones(sim: RunningSim, started: Start) -> None:
    p = await _provider(sim, started)
    request = ChatRequest(messages=ASK, n=3)
    whole = await p.complete(request)
    deltas = [d async for d in p.stream(request)]
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, str] = {}
    for d in deltas:
        texts[d.index] += d.text
        if d.finish_reason is not None:
            assert d.index not in finishes
            finishes[d.index] = d.finish_reason
    assert [texts[i] for i in range(3)] == [c.text for c in (whole, *whole.alternatives)]
    assert finishes == {0: "stop", 1: "stop", 2: "stop"}
    assert deltas[-1].usage is not None
    assert deltas[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(d.usage is None for d in deltas[:-1])


def _check_items(items: list[dict[str, Any]], text: str, top: int) -> None:
    assert "".join(i["token"] for i in items) == text
    for item in items:
        assert item["bytes"] == list(item["token"].encode())
        assert item["logprob"] <= 0 and math.isfinite(item["logprob"])
        alts = item["top_logprobs"]
        assert len(alts) == top and alts[0]["token"] == item["token"]
        assert [a["logprob"] for a in alts] == sorted((a["logprob"] for a in alts), reverse=True)
        assert all(a["bytes"] == list(a["token"].encode()) for a in alts)


async def test_logprobs_whole_and_streamed(sim: RunningSim, started: Start) -> None:
    p = await _provider(sim, started)
    request = ChatRequest(messages=ASK, n=2, logprobs=True, top_logprobs=2)
    whole = await p.complete(request)
    for choice in (whole, *whole.alternatives):
        assert choice.logprobs is not None
        _check_items(choice.logprobs, choice.text, 2)
    streamed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    async for d in p.stream(request):
        streamed[d.index] += d.logprobs or []
    assert streamed[0] == whole.logprobs
    assert streamed[1] == whole.alternatives[0].logprobs


async def test_logprobs_without_top_tokens(sim: RunningSim, started: Start) -> None:
    p = await _provider(sim, started)
    whole = await p.complete(ChatRequest(messages=ASK, logprobs=True))
    assert whole.logprobs and all(i["top_logprobs"] == [] for i in whole.logprobs)


def test_a_candidate_without_index_is_the_first_and_bad_logprobs_fail() -> None:
    payload = {
        "candidates": [
            {"content": {"parts": [{"text": "b"}]}, "index": 1, "finishReason": "STOP"},
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "MAX_TOKENS"},
        ]
    }
    parsed = Parsed(payload, "gemini")
    assert [(c.index, c.text, c.finish) for c in parsed.choices] == [
        (0, "a", "length"),
        (1, "b", "stop"),
    ]
    assert (parsed.text, parsed.finish) == ("a", "length")
    bad = {"candidates": [{"content": {"parts": [{"text": "a"}]}, "logprobsResult": [1]}]}
    with pytest.raises(UpstreamProtocolError):
        Parsed(bad, "gemini")
