"""Scripted replies of the simulated Gemini, over HTTP as a client sees them."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from standby.sim.answers import base_answer
from tests.fixtures.sim import RunningSim

PROMPT = "Why is the sky blue?"
BODY = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
NATIVE = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
OPENAI = "/v1beta/openai/chat/completions"


async def call(sim: RunningSim, path: str, body: Any = BODY) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.post(sim.url + path, data=orjson.dumps(body)) as r:
        return r.status, await r.read()


def text_of(raw: bytes) -> str:
    return str(orjson.loads(raw)["candidates"][0]["content"]["parts"][0]["text"])


async def test_replies_are_taken_in_order_then_normal_answers_resume(sim: RunningSim) -> None:
    status, raw = await call(
        sim, "/_sim/script", {"replies": ["{not json", '```json\n{"a": 1}\n```']}
    )
    assert status == 200
    assert orjson.loads(raw)["pending"] == [
        {"text": "{not json"},
        {"text": '```json\n{"a": 1}\n```'},
    ]
    got = [text_of((await call(sim, NATIVE))[1]) for _ in range(3)]
    assert got == ["{not json", '```json\n{"a": 1}\n```', base_answer(PROMPT)]
    stats = sim.sim.stats()
    assert (stats["scripted"], stats["script_pending"], stats["requests"]) == (2, 0, 3)


async def test_usage_counts_the_scripted_words(sim: RunningSim) -> None:
    sim.sim.script(["one two three"])
    body = orjson.loads((await call(sim, NATIVE))[1])
    assert body["usageMetadata"]["candidatesTokenCount"] == 3
    assert body["candidates"][0]["finishReason"] == "STOP"


async def test_match_picks_the_request_whose_text_contains_it(sim: RunningSim) -> None:
    sim.sim.script(["for the judge"], match="JUDGE-ME")
    assert text_of((await call(sim, NATIVE))[1]) == base_answer(PROMPT)
    judged = {
        "systemInstruction": {"parts": [{"text": "JUDGE-ME please"}]},
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
    }
    assert text_of((await call(sim, NATIVE, judged))[1]) == "for the judge"
    assert sim.sim.stats()["script_pending"] == 0


async def test_a_scripted_fault_behaves_as_its_spec(sim: RunningSim) -> None:
    sim.sim.script([{"fault": "error-429-retry-2"}, {"fault": "error-500"}, {"fault": "malformed"}])
    async with aiohttp.ClientSession() as s:
        async with s.post(sim.url + NATIVE, data=orjson.dumps(BODY)) as r:
            assert (r.status, r.headers["Retry-After"]) == (429, "2")
        async with s.post(sim.url + NATIVE, data=orjson.dumps(BODY)) as r:
            assert r.status == 500
        async with s.post(sim.url + NATIVE, data=orjson.dumps(BODY)) as r:
            assert r.status == 200
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(await r.read())
    assert text_of((await call(sim, NATIVE))[1]) == base_answer(PROMPT)


async def test_openai_surface_and_streams_take_scripted_text(sim: RunningSim) -> None:
    sim.sim.script(["scripted openai answer", "scripted streamed answer with several words"])
    chat = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": PROMPT}]}
    status, raw = await call(sim, OPENAI, chat)
    assert status == 200
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == "scripted openai answer"
    async with aiohttp.ClientSession() as s, s.post(sim.url + STREAM, data=orjson.dumps(BODY)) as r:
        events = [line[6:].strip() async for line in r.content if line.startswith(b"data: ")]
    assert "".join(text_of(e) for e in events) == "scripted streamed answer with several words"


async def test_scripted_calls_answer_on_both_surfaces(sim: RunningSim) -> None:
    calls = [{"name": "lookup", "args": {"q": "sky"}}, {"name": "lookup", "args": {"q": "sea"}}]
    status, raw = await call(sim, "/_sim/script", {"replies": [{"calls": calls}] * 2})
    assert (status, orjson.loads(raw)["pending"]) == (200, [{"calls": calls}] * 2)
    parts = orjson.loads((await call(sim, NATIVE))[1])["candidates"][0]["content"]["parts"]
    assert [p["functionCall"] for p in parts] == calls
    chat = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": PROMPT}]}
    choice = orjson.loads((await call(sim, OPENAI, chat))[1])["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [c["function"]["arguments"] for c in choice["message"]["tool_calls"]] == [
        '{"q":"sky"}',
        '{"q":"sea"}',
    ]


async def test_bad_scripts_are_refused_and_reset_clears(sim: RunningSim) -> None:
    bad_calls = [{"calls": []}, {"calls": [{"name": "f", "args": [1]}]}, {"calls": [{}]}]
    for bad in ({"replies": "x"}, {"replies": [{"fault": "nope"}]}, {"replies": [3]}, {}):
        status, _ = await call(sim, "/_sim/script", bad)
        assert status == 400, bad
    for reply in bad_calls:
        status, _ = await call(sim, "/_sim/script", {"replies": [reply]})
        assert status == 400, reply
    sim.sim.script(["a", "b"])
    async with aiohttp.ClientSession() as s, s.get(sim.url + "/_sim/script") as r:
        assert len((await r.json())["pending"]) == 2
    await call(sim, "/_sim/reset", {})
    assert sim.sim.stats()["script_pending"] == 0
    assert text_of((await call(sim, NATIVE))[1]) == base_answer(PROMPT)
