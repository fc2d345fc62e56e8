"""``n`` > 1 and ``logprobs`` / ``top_logprobs`` end to end: the openai SDK against a real
gateway over the simulated Gemini, with the simulated vLLM (``openai`` type) and litellm (to
the same vLLM) as fallbacks and the simulated TGI (native API: neither) skipped. Every answer
and chunk is checked against OpenAI's schemas by the gateway fixture."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import httpx
import openai
import pytest

from standby.sim.vllm import BASE_MODEL
from tests.fixtures.gateway import FAST, StartGateway
from tests.fixtures.sim import RunningSim
from tests.fixtures.tgi_sim import RunningTGI
from tests.fixtures.vllm_sim import RunningVLLM, StartVLLM

ASK = [{"role": "user", "content": "Name three colours"}]
ROUTE, FALLBACKS, TGI_ONLY, LITELLM = "gemini", "fallbacks", "tgi-only", "litellm"
MODES = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
# pydantic warns about litellm's ReadOnly TypedDicts when litellm first builds them.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)


def _config(sim: RunningSim, vllm: RunningVLLM, tgi: RunningTGI) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "api_keys": []},
        "backends": {
            "gemini": {
                "type": "gemini",
                "model": "gemini-2.5-flash",
                "api_key": "sim-key",
                "base_url": sim.url,
                "timeouts": dict(FAST),
            },
            "tgi": {"type": "tgi", "base_url": tgi.url, "timeouts": dict(FAST)},
            "vllm": {
                "type": "openai",
                "base_url": vllm.base_url,
                "model": BASE_MODEL,
                "timeouts": dict(FAST),
            },
            "litellm": {
                "type": "litellm",
                "model": f"openai/{BASE_MODEL}",
                "api_base": vllm.base_url,
                "api_key": "unused",
                "timeouts": dict(FAST),
            },
        },
        "routes": {
            ROUTE: ["gemini", "vllm"],
            FALLBACKS: ["gemini", "tgi", "vllm"],
            LITELLM: ["gemini", "litellm"],
            TGI_ONLY: ["tgi"],
        },
        "breaker": {"failures": 50, "cooldown_s": 1, "window_s": 30},
        "capture": {"enabled": False},
    }


@pytest.fixture
def gateway(
    start_gateway: StartGateway, sim: RunningSim, start_vllm: StartVLLM, tgi_sim: RunningTGI
) -> tuple[openai.OpenAI, RunningSim, RunningVLLM, RunningTGI, str]:
    vllm = start_vllm()
    server = start_gateway(_config(sim, vllm, tgi_sim))
    return server.client(), sim, vllm, tgi_sim, server.url


def _streamed(chunks: list[Any]) -> tuple[dict[int, str], dict[int, str], list[Any]]:
    """Text and finish reason by choice index, and the usage chunks, of a stream."""
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, str] = {}
    usages = []
    for chunk in chunks:
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason is not None:
                assert choice.index not in finishes, "a choice finished twice"
                finishes[choice.index] = choice.finish_reason
    return dict(texts), finishes, usages


def test_n_whole_answer_has_a_choice_per_index(gateway: Any) -> None:
    client, *_ = gateway
    answer = client.chat.completions.create(model=ROUTE, messages=ASK, n=3)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    texts = [c.message.content for c in answer.choices]
    assert len(set(texts)) == 3 and all(texts)
    assert {c.finish_reason for c in answer.choices} == {"stop"}
    assert all(c.logprobs is None for c in answer.choices)
    assert answer.usage is not None
    assert answer.usage.completion_tokens == sum(len(t.split()) for t in texts if t)
    one = client.chat.completions.create(model=ROUTE, messages=ASK)
    assert one.choices[0].message.content == texts[0]


def test_n_streamed_ends_when_every_choice_finished(gateway: Any) -> None:
    client, *_ = gateway
    whole = client.chat.completions.create(model=ROUTE, messages=ASK, n=3)
    chunks = list(
        client.chat.completions.create(
            model=ROUTE,
            messages=ASK,
            n=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts, finishes, usages = _streamed(chunks)
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert finishes == {0: "stop", 1: "stop", 2: "stop"}
    assert len(usages) == 1 and chunks[-1].usage is not None and chunks[-1].choices == []
    assert usages[0].completion_tokens == whole.usage.completion_tokens
    roles = [(c.choices[0].index, c.choices[0].delta.role) for c in chunks if c.choices]
    assert sorted(i for i, role in roles if role == "assistant") == [0, 1, 2]


def _check_logprobs(content: str, items: list[Any], top: int) -> None:
    assert "".join(i.token for i in items) == content
    for item in items:
        assert item.bytes == list(item.token.encode())
        assert len(item.top_logprobs) == top
        assert item.top_logprobs[0].token == item.token
        values = [t.logprob for t in item.top_logprobs]
        assert values == sorted(values, reverse=True)


def _streamed_logprobs(chunks: list[Any]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = defaultdict(list)
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.logprobs is not None:
                out[choice.index] += choice.logprobs.content or []
    return dict(out)


@pytest.mark.parametrize("route", [ROUTE, FALLBACKS, LITELLM])
def test_logprobs_whole_and_streamed(gateway: Any, route: str) -> None:
    """On Gemini, and, with Gemini down, on the vLLM fallback (TGI skipped) and through
    litellm."""
    client, sim, vllm, tgi, _ = gateway
    if route != ROUTE:
        sim.sim.set_fault("error-503")
    ask = {"model": route, "messages": ASK, "n": 2, "logprobs": True, "top_logprobs": 2}
    whole = client.chat.completions.with_raw_response.create(**ask)
    answer = whole.parse()
    expected = "gemini" if route == ROUTE else "vllm" if route == FALLBACKS else "litellm"
    assert whole.headers["x-standby-backend"] == expected
    assert [c.index for c in answer.choices] == [0, 1]
    assert answer.choices[0].message.content != answer.choices[1].message.content
    for choice in answer.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        _check_logprobs(choice.message.content or "", choice.logprobs.content, 2)
    chunks = list(client.chat.completions.create(**ask, stream=True))
    texts, finishes, _ = _streamed(chunks)
    assert texts == {c.index: c.message.content for c in answer.choices}
    assert set(finishes) == {0, 1}
    streamed = _streamed_logprobs(chunks)
    assert [[i.token for i in streamed[k]] for k in (0, 1)] == [
        [i.token for i in c.logprobs.content or []] for c in answer.choices if c.logprobs
    ]
    assert tgi.requests == []  # TGI's native API has neither: skipped, never called
    if route != ROUTE:
        assert [r.get("n") for r in vllm.sim.requests] == [2, 2]


@MODES
def test_a_route_where_no_backend_can_is_a_400_naming_the_need(gateway: Any, stream: bool) -> None:
    client, *_ = gateway
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=TGI_ONLY, messages=ASK, n=2, stream=stream)
    assert "several choices (n > 1)" in info.value.message and info.value.param == "n"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=TGI_ONLY, messages=ASK, logprobs=True)
    assert "logprobs" in info.value.message and info.value.param == "logprobs"


def test_a_stream_of_several_choices_cut_midway_is_not_stitched(gateway: Any) -> None:
    """n = 1 would continue on vLLM from the partial text; with n > 1 there is one partial
    answer per choice, so the client gets an error event and vLLM is never asked."""
    client, sim, vllm, _, url = gateway
    sim.sim.set_fault("cut-3")
    stream = client.chat.completions.create(model=ROUTE, messages=ASK, n=2, stream=True)
    got: list[Any] = []
    with pytest.raises(openai.APIError, match="stream interrupted"):
        for chunk in stream:
            got.append(chunk)
    texts, finishes, _ = _streamed(got)
    assert set(texts) == {0, 1} and finishes == {}
    assert vllm.sim.requests == []
    metrics = httpx.get(f"{url}/metrics").text
    assert f'standby_requests_total{{backend="gemini",outcome="error",route="{ROUTE}"}} 1.0' in (
        metrics
    )


def test_several_choices_count_as_one_request(gateway: Any) -> None:
    client, *_, url = gateway
    client.chat.completions.create(model=ROUTE, messages=ASK, n=3)
    metrics = httpx.get(f"{url}/metrics").text
    assert f'standby_requests_total{{backend="gemini",outcome="ok",route="{ROUTE}"}} 1.0' in (
        metrics
    )


def test_a_stitched_stream_has_the_fallbacks_logprobs_for_its_continued_part(
    gateway: Any,
) -> None:
    """n = 1, cut mid-answer: vLLM continues the text and the logprobs of what it adds are
    its own, so the tokens of the whole stream still spell its text."""
    client, sim, vllm, _, _ = gateway
    sim.sim.set_fault("cut-3")
    chunks = list(
        client.chat.completions.create(
            model=ROUTE, messages=ASK, logprobs=True, top_logprobs=2, stream=True
        )
    )
    texts, finishes, _ = _streamed(chunks)
    assert finishes == {0: "stop"}
    last = next(c for c in reversed(chunks) if c.choices)
    assert last.model_extra is not None
    assert last.model_extra["standby"]["provenance"] == "stitched"
    tokens = [i.token for i in _streamed_logprobs(chunks)[0]]
    assert "".join(tokens) == texts[0]
    assert len(vllm.sim.requests) == 1 and vllm.sim.requests[0]["logprobs"] is True
    continued = vllm.sim.requests[0]["messages"][-1]["content"]
    assert texts[0].startswith(continued) and len(texts[0]) > len(continued)


@MODES
def test_each_choice_has_its_own_tool_calls(gateway: Any, stream: bool) -> None:
    client, *_ = gateway
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    ask = {"model": ROUTE, "messages": ASK, "n": 2, "tools": tools, "tool_choice": "required"}
    if not stream:
        answer = client.chat.completions.create(**ask)
        for choice in answer.choices:
            assert choice.finish_reason == "tool_calls"
            calls = choice.message.tool_calls or []
            assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
        return
    pieces: dict[int, list[Any]] = defaultdict(list)
    finishes = {}
    for chunk in client.chat.completions.create(**ask, stream=True):
        for choice in chunk.choices:
            pieces[choice.index] += choice.delta.tool_calls or []
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert finishes == {0: "tool_calls", 1: "tool_calls"}
    for index in (0, 1):
        assert [(p.index, p.function.name) for p in pieces[index]] == [(0, "get_weather")]
