"""Every fault of the simulated Gemini as a client sees it on the wire, the control endpoints,
and request validation. Raw aiohttp, so that broken connections and bodies stay observable."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from standby.sim.answers import base_answer, split_chunks
from tests.fixtures.sim import SIM_KEY, RunningSim

PROMPT = "Why is the sky blue?"
ANSWER = base_answer(PROMPT)
BODY = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
CHAT = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": PROMPT}]}


def native(model: str, stream: bool = False) -> str:
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1beta/models/{model}:{method}"


async def post(
    sim: RunningSim, path: str, body: Any = BODY, limit_s: float = 10, **kw: Any
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit_s)) as s,
        s.post(sim.url + path, data=data, **kw) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def sse_events(sim: RunningSim, path: str, body: Any = BODY) -> tuple[list[bytes], float]:
    """Data lines of a stream (``[DONE]`` included) and the seconds they took after headers."""
    async with (
        aiohttp.ClientSession() as s,
        s.post(sim.url + path, data=orjson.dumps(body)) as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/event-stream"
        start = time.monotonic()
        events = [line[6:].strip() async for line in r.content if line.startswith(b"data: ")]
        return events, time.monotonic() - start


def texts(events: list[bytes]) -> list[str]:
    return [orjson.loads(e)["candidates"][0]["content"]["parts"][0]["text"] for e in events]


# --- errors -----------------------------------------------------------------------------------

GOOGLE = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@pytest.mark.parametrize("status", sorted(GOOGLE))
async def test_error_status_in_google_shape(sim: RunningSim, status: int) -> None:
    for stream in (False, True):
        code, headers, body = await post(sim, native(f"error-{status}", stream))
        err = orjson.loads(body)["error"]
        assert (code, err["code"], err["status"]) == (status, status, GOOGLE[status])
        assert f"simulated fault error-{status}" in err["message"]
        assert ("Retry-After" in headers) == (status == 429)


async def test_429_carries_retry_after_and_retry_info(sim: RunningSim) -> None:
    _, headers, body = await post(sim, native("error-429"))
    assert headers["Retry-After"] == "1"
    detail = orjson.loads(body)["error"]["details"][0]
    assert detail == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
    _, headers, body = await post(sim, native("error-429-retry-12"))
    assert headers["Retry-After"] == "12"
    assert orjson.loads(body)["error"]["details"][0]["retryDelay"] == "12s"


async def test_openai_surface_errors_in_openai_shape(sim: RunningSim) -> None:
    code, headers, body = await post(
        sim, "/v1beta/openai/chat/completions", {**CHAT, "model": "error-429"}
    )
    assert (code, headers["Retry-After"]) == (429, "1")
    assert orjson.loads(body)["error"]["type"] == "rate_limit_error"


# --- timing -----------------------------------------------------------------------------------


async def test_slow_delays_then_answers(sim: RunningSim) -> None:
    start = time.monotonic()
    code, _, body = await post(sim, native("slow-300"))
    assert time.monotonic() - start >= 0.29
    assert code == 200
    assert orjson.loads(body)["candidates"][0]["content"]["parts"][0]["text"] == ANSWER


async def test_slow_stream_delays_the_first_chunk(sim: RunningSim) -> None:
    async with aiohttp.ClientSession() as s:
        start = time.monotonic()
        async with s.post(sim.url + native("slow-300", True), json=BODY) as r:
            first = await r.content.readline()
            assert time.monotonic() - start >= 0.29
            assert first.startswith(b"data: ")
            rest = await r.read()
    assert rest.count(b"data: ") == 7


async def test_hang_never_answers_and_the_server_stays_up(sim: RunningSim) -> None:
    with pytest.raises(TimeoutError):
        await post(sim, native("hang"), limit_s=0.3)
    with pytest.raises(TimeoutError):
        await post(sim, native("hang", True), limit_s=0.3)
    code, _, _ = await post(sim, native("gemini-2.5-flash"))
    assert code == 200


async def test_hung_request_ends_when_its_client_goes_away(sim: RunningSim) -> None:
    async with aiohttp.ClientSession() as s:
        pending = asyncio.ensure_future(s.post(sim.url + native("hang"), json=BODY))
        for _ in range(100):
            if sim.sim.in_flight == 1:
                break
            await asyncio.sleep(0.01)
        assert sim.sim.in_flight == 1
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
    for _ in range(100):
        if sim.sim.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert sim.sim.in_flight == 0


async def test_idle_spaces_stream_chunks(sim: RunningSim) -> None:
    events, took = await sse_events(sim, native("idle-60", True))
    assert "".join(texts(events)) == ANSWER
    assert took >= 7 * 0.06 - 0.02  # asyncio may fire a timer up to a clock tick early
    start = time.monotonic()
    code, _, _ = await post(sim, native("idle-500"))
    assert code == 200
    assert time.monotonic() - start < 0.5  # non-streaming answers are not delayed


# --- broken connections -----------------------------------------------------------------------


async def test_cut_stream_sends_n_chunks_then_breaks(sim: RunningSim) -> None:
    got: list[bytes] = []
    async with (
        aiohttp.ClientSession() as s,
        s.post(sim.url + native("cut-3", True), json=BODY) as r,
    ):
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in r.content:
                if line.startswith(b"data: "):
                    got.append(line[6:].strip())
    assert texts(got) == list(split_chunks(ANSWER)[:3])
    assert all("finishReason" not in orjson.loads(e)["candidates"][0] for e in got)


async def test_cut_never_sends_the_finishing_chunk(sim: RunningSim) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(sim.url + native("cut-99", True), json=BODY) as r,
    ):
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()


async def test_cut_openai_stream(sim: RunningSim) -> None:
    body = {**CHAT, "model": "cut-2", "stream": True}
    async with (
        aiohttp.ClientSession() as s,
        s.post(sim.url + "/v1beta/openai/chat/completions", json=body) as r,
    ):
        lines = []
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in r.content:
                lines.append(line)
    assert sum(line.startswith(b"data: ") for line in lines) == 2
    assert b"data: [DONE]\n" not in lines


@pytest.mark.parametrize("path", [native("cut-2"), native("reset"), native("reset", True)])
async def test_connection_dropped_without_a_response(sim: RunningSim, path: str) -> None:
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await post(sim, path)


async def test_reset_is_a_tcp_reset(sim: RunningSim) -> None:
    with pytest.raises(aiohttp.ClientOSError) as info:
        await post(sim, native("reset"))
    assert isinstance(info.value.__cause__ or info.value, ConnectionResetError | OSError)
    assert "reset" in str(info.value).lower()


# --- answers that are not answers --------------------------------------------------------------


async def test_safety_recitation_and_blocked_shapes(sim: RunningSim) -> None:
    _, _, body = await post(sim, native("safety"))
    cand = orjson.loads(body)["candidates"][0]
    assert cand["finishReason"] == "SAFETY"
    assert "content" not in cand
    _, _, body = await post(sim, native("recitation"))
    assert orjson.loads(body)["candidates"][0]["finishReason"] == "RECITATION"
    _, _, body = await post(sim, native("blocked"))
    data = orjson.loads(body)
    assert "candidates" not in data
    assert data["promptFeedback"]["blockReason"] == "SAFETY"
    events, _ = await sse_events(sim, native("blocked", True))
    assert [orjson.loads(e)["promptFeedback"]["blockReason"] for e in events] == ["SAFETY"]


async def test_malformed_bodies(sim: RunningSim) -> None:
    code, _, body = await post(sim, native("malformed"))
    assert code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    events, _ = await sse_events(sim, native("malformed", True))
    assert len(events) == 1
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(events[0])
    code, _, body = await post(
        sim, "/v1beta/openai/chat/completions", {**CHAT, "model": "malformed"}
    )
    assert code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)


async def test_flaky_by_model_name_fails_n_times(sim: RunningSim) -> None:
    codes = [(await post(sim, native("flaky-2")))[0] for _ in range(4)]
    assert codes == [503, 503, 200, 200]


# --- control endpoints ------------------------------------------------------------------------


async def control(sim: RunningSim, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        if body is None and path != "/_sim/reset":
            async with s.get(sim.url + path) as r:
                return r.status, orjson.loads(await r.read())
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with s.post(sim.url + path, data=data) as r:
            return r.status, orjson.loads(await r.read())


async def test_control_fault_applies_to_ordinary_models_only(sim: RunningSim) -> None:
    assert await control(sim, "/_sim/fault", {"fault": "error-500"}) == (
        200,
        {"fault": "error-500"},
    )
    assert (await post(sim, native("gemini-2.5-flash")))[0] == 500
    assert (await post(sim, "/v1beta/openai/chat/completions", CHAT))[0] == 500
    assert (await post(sim, native("ok")))[0] == 200  # a fault-named model keeps its own fault
    assert (await post(sim, native("error-404")))[0] == 404
    await control(sim, "/_sim/fault", {"fault": "ok"})
    assert (await post(sim, native("gemini-2.5-flash")))[0] == 200


async def test_control_flaky_counts_from_when_it_was_set(sim: RunningSim) -> None:
    sim.sim.set_fault("flaky-1")
    assert [(await post(sim, native("m")))[0] for _ in range(2)] == [503, 200]
    await control(sim, "/_sim/fault", {"fault": "flaky-1"})
    assert [(await post(sim, native("m")))[0] for _ in range(2)] == [503, 200]


async def test_control_rejects_unknown_specs(sim: RunningSim) -> None:
    for bad in ({"fault": "explode"}, {"nope": 1}, {"fault": 3}, b"not json"):
        code, body = await control(sim, "/_sim/fault", bad)
        assert code == 400
        assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert sim.sim.fault == "ok"


async def test_stats_and_reset(sim: RunningSim) -> None:
    await post(sim, native("gemini-2.5-flash"))
    await post(sim, native("error-429"))
    await post(sim, "/v1beta/openai/chat/completions", CHAT)
    sim.sim.set_fault("slow-1")
    assert await control(sim, "/_sim/stats") == (
        200,
        {
            "requests": 3,
            "by_model": {"gemini-2.5-flash": 2, "error-429": 1},
            "fault": "slow-1",
            "in_flight": 0,
            "scripted": 0,
            "script_pending": 0,
        },
    )
    code, body = await control(sim, "/_sim/reset")
    assert (code, body) == (
        200,
        {
            "requests": 0,
            "by_model": {},
            "fault": "ok",
            "in_flight": 0,
            "scripted": 0,
            "script_pending": 0,
        },
    )
    assert await control(sim, "/healthz") == (200, {"status": "ok", "simulation": "gemini"})


# --- requests and routes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "Invalid JSON"),
        ({}, "contents is not specified"),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "robot", "parts": [{"text": "x"}]}]}, "valid role"),
        ({**BODY, "max_tokens": 3}, 'Unknown name "max_tokens"'),
        ({**BODY, "generationConfig": {"temperature": 5}}, "temperature"),
        ({**BODY, "generationConfig": {"maxOutputTokens": 0}}, "maxOutputTokens"),
        ({**BODY, "generationConfig": {"stopSequences": "x"}}, "stopSequences"),
    ],
)
async def test_malformed_request_is_invalid_argument(
    sim: RunningSim, body: Any, needle: str
) -> None:
    code, _, raw = await post(sim, native("gemini-2.5-flash"), body)
    err = orjson.loads(raw)["error"]
    assert (code, err["status"]) == (400, "INVALID_ARGUMENT")
    assert needle in err["message"]


async def test_unknown_method_is_not_found(sim: RunningSim) -> None:
    code, _, raw = await post(sim, "/v1beta/models/gemini-2.5-flash:explode")
    assert (code, orjson.loads(raw)["error"]["status"]) == (404, "NOT_FOUND")


async def test_v1_path_and_query_key(sim_with_key: RunningSim) -> None:
    code, _, raw = await post(sim_with_key, f"/v1/models/m:generateContent?key={SIM_KEY}")
    assert code == 200
    assert orjson.loads(raw)["candidates"][0]["content"]["parts"][0]["text"] == ANSWER
    code, _, raw = await post(sim_with_key, native("m"))
    assert (code, orjson.loads(raw)["error"]["status"]) == (401, "UNAUTHENTICATED")
    code, _, raw = await post(sim_with_key, native("m"), headers={"x-goog-api-key": "bad"})
    assert (code, orjson.loads(raw)["error"]["status"]) == (403, "PERMISSION_DENIED")


async def test_stream_without_sse_is_a_json_array(sim: RunningSim) -> None:
    code, _, raw = await post(sim, "/v1beta/models/m:streamGenerateContent")
    assert code == 200
    chunks = orjson.loads(raw)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == ANSWER


async def test_candidate_count_and_json_mode(sim: RunningSim) -> None:
    config = {"candidateCount": 2, "responseMimeType": "application/json"}
    _, _, raw = await post(sim, native("m"), {**BODY, "generationConfig": config})
    data = orjson.loads(raw)
    assert [c["index"] for c in data["candidates"]] == [0, 1]
    assert orjson.loads(data["candidates"][1]["content"]["parts"][0]["text"]) == {"answer": ANSWER}
    assert data["usageMetadata"]["candidatesTokenCount"] == 2 * len(
        data["candidates"][0]["content"]["parts"][0]["text"].split()
    )


async def test_openai_surface_bad_body_is_counted_without_a_model(sim: RunningSim) -> None:
    code, _, raw = await post(sim, "/v1beta/openai/chat/completions", {"messages": []})
    assert code == 400
    assert orjson.loads(raw)["error"]["type"] == "invalid_request_error"
    assert sim.sim.stats()["requests"] == 1
    assert sim.sim.stats()["by_model"] == {}


async def test_many_concurrent_requests(sim: RunningSim) -> None:
    results = await asyncio.gather(*(post(sim, native(f"m{i % 4}")) for i in range(50)))
    assert all(code == 200 for code, _, _ in results)
    assert sim.sim.stats()["requests"] == 50
