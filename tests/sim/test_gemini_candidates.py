"""The simulated Gemini's several candidates: distinct, the same on both surfaces (native
``candidateCount``, OpenAI ``n``), whole and streamed; JSON answers and calls the same in each."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import aiohttp
import orjson

from tests.fixtures.sim import RunningSim

PROMPT = "Name three colours"


async def _post(sim: RunningSim, path: str, body: dict[str, Any]) -> bytes:
    async with aiohttp.ClientSession() as s, s.post(sim.url + path, json=body) as r:
        assert r.status == 200, await r.text()
        return await r.read()


def _events(raw: bytes) -> list[Any]:
    lines = raw.splitlines()
    return [orjson.loads(x[6:]) for x in lines if x.startswith(b"data: {")]


async def _native(sim: RunningSim, stream: bool, config: dict[str, Any]) -> list[str]:
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}], "generationConfig": config}
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    raw = await _post(sim, f"/v1beta/models/m:{method}", body)
    texts: dict[int, str] = defaultdict(str)
    for payload in _events(raw) if stream else [orjson.loads(raw)]:
        for cand in payload.get("candidates", ()):
            texts[cand.get("index", 0)] += cand["content"]["parts"][0]["text"]
    return [texts[i] for i in sorted(texts)]


async def _openai(sim: RunningSim, stream: bool, extra: dict[str, Any]) -> list[str]:
    body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    raw = await _post(sim, "/v1beta/openai/chat/completions", {**body, **extra})
    if not stream:
        return [c["message"]["content"] for c in orjson.loads(raw)["choices"]]
    texts: dict[int, str] = defaultdict(str)
    for chunk in _events(raw):
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
    return [texts[i] for i in sorted(texts)]


async def test_candidates_are_distinct_and_agree_across_surfaces(sim: RunningSim) -> None:
    whole = await _native(sim, False, {"candidateCount": 3})
    assert len(whole) == 3 and len(set(whole)) == 3
    assert await _native(sim, True, {"candidateCount": 3}) == whole
    assert await _openai(sim, False, {"n": 3}) == whole
    assert await _openai(sim, True, {"n": 3}) == whole
    assert sorted(whole[1].split()) == sorted(whole[0].split())  # the same words, rotated


async def test_json_answers_are_the_same_in_every_candidate(sim: RunningSim) -> None:
    config = {"candidateCount": 2, "responseMimeType": "application/json"}
    first, second = await _native(sim, False, config)
    assert first == second and isinstance(orjson.loads(first), dict)


async def test_logprobs_need_response_logprobs(sim: RunningSim) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "generationConfig": {"logprobs": 2},
    }
    url = f"{sim.url}/v1beta/models/m:generateContent"
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        assert r.status == 400
        assert "responseLogprobs" in (await r.json())["error"]["message"]
