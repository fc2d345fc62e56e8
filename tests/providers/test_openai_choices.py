"""Several choices and logprobs from OpenAI-style servers (``openai_choices``), for the
``openai``-type provider and litellm: against the simulated vLLM, and a small server here that
ignores ``n`` or sends logprobs without ``bytes``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from standby.config import LiteLLMBackend, OpenAIBackend
from standby.errors import UpstreamProtocolError
from standby.protocol import ChatRequest, Completion, Delta, Message
from standby.providers.litellm import LiteLLMProvider
from standby.providers.openai_compat import OpenAICompatProvider
from standby.sim.vllm import BASE_MODEL
from tests.fixtures.providers import Start, chat_server
from tests.fixtures.sim import RunningSim
from tests.fixtures.vllm_sim import StartVLLM

pytestmark = pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)

ASK = (Message("user", "Name three colours"),)
KINDS = pytest.mark.parametrize("kind", ["openai", "litellm"])


async def _provider(kind: str, base_url: str, started: Start) -> Any:
    if kind == "openai":
        config = OpenAIBackend(type="openai", base_url=base_url, model=BASE_MODEL)
        return await started(OpenAICompatProvider("oa", config))
    lm = LiteLLMBackend(
        type="litellm", model=f"openai/{BASE_MODEL}", api_base=base_url, api_key="unused"
    )
    return await started(LiteLLMProvider("lm", lm))


def _by_index(deltas: list[Delta]) -> tuple[dict[int, str], dict[int, str], list[Any]]:
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, str] = {}
    logprobs: dict[int, list[Any]] = defaultdict(list)
    for d in deltas:
        texts[d.index] += d.text
        logprobs[d.index] += d.logprobs or []
        if d.finish_reason is not None:
            assert d.index not in finishes
            finishes[d.index] = d.finish_reason
    return dict(texts), finishes, [logprobs[i] for i in sorted(logprobs)]


@KINDS
async def test_n_and_logprobs_whole_and_streamed(
    kind: str, start_vllm: StartVLLM, started: Start
) -> None:
    vllm = start_vllm()
    p = await _provider(kind, vllm.base_url, started)
    request = ChatRequest(messages=ASK, n=2, logprobs=True, top_logprobs=2)
    whole: Completion = await p.complete(request)
    choices = [whole, *whole.alternatives]
    assert len(choices) == 2 and choices[0].text != choices[1].text
    for c in choices:
        assert c.logprobs is not None
        assert "".join(i["token"] for i in c.logprobs) == c.text
        assert all(len(i["top_logprobs"]) == 2 for i in c.logprobs)
    assert whole.usage.completion_tokens == sum(len(c.text.split()) for c in choices)
    deltas = [d async for d in p.stream(request)]
    texts, finishes, logprobs = _by_index(deltas)
    assert texts == {0: choices[0].text, 1: choices[1].text}
    assert finishes == {0: "stop", 1: "stop"}
    assert logprobs == [choices[0].logprobs, choices[1].logprobs]
    assert deltas[-1].usage is not None and deltas[-1].finish_reason is not None
    assert [b.get("n") for b in vllm.sim.requests] == [2, 2]
    assert all(b.get("top_logprobs") == 2 for b in vllm.sim.requests)


def _one_choice(body: dict[str, Any]) -> tuple[bytes, list[bytes]]:
    """A server that ignores ``n`` and leaves ``bytes`` out of its logprobs."""
    item = {"token": "Hi", "logprob": -0.5, "top_logprobs": [{"token": "Hi", "logprob": -0.5}]}
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": "Hi"},
        "finish_reason": "stop",
        "logprobs": {"content": [item]},
    }
    whole = {"object": "chat.completion", "model": "m", "choices": [choice]}
    chunk = {
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop", "logprobs": None}
        ],
    }
    frames = [b"data: " + orjson.dumps(chunk) + b"\n\n", b"data: [DONE]\n\n"]
    return orjson.dumps(whole), frames


@pytest.fixture(scope="module")
def one_choice_server() -> Iterator[str]:
    with chat_server(_one_choice) as url:
        yield url


async def test_a_server_that_ignores_n_has_failed(one_choice_server: str, started: Start) -> None:
    p = await _provider("openai", one_choice_server, started)
    with pytest.raises(UpstreamProtocolError, match="asked for 2 choices"):
        await p.complete(ChatRequest(messages=ASK, n=2))
    got = []
    with pytest.raises(UpstreamProtocolError, match=r"none came for \[1\]"):
        async for d in p.stream(ChatRequest(messages=ASK, n=2)):
            got.append(d)
    assert [d.text for d in got] == ["Hi"]


async def test_logprobs_get_their_bytes(one_choice_server: str, started: Start) -> None:
    p = await _provider("openai", one_choice_server, started)
    whole = await p.complete(ChatRequest(messages=ASK, logprobs=True, top_logprobs=1))
    assert whole.logprobs == [
        {
            "token": "Hi",
            "logprob": -0.5,
            "bytes": [72, 105],
            "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]}],
        }
    ]


async def test_a_server_that_ignores_logprobs_has_failed(
    one_choice_server: str, sim: RunningSim, started: Start
) -> None:
    """Gemini's OpenAI surface (simulated) sends no logprobs; the small server here sends
    them whole but not streamed: either way the answer is the backend's failure."""
    surface = await _provider("openai", f"{sim.url}/v1beta/openai", started)
    asked = ChatRequest(messages=ASK, logprobs=True)
    with pytest.raises(UpstreamProtocolError, match="no logprobs"):
        await surface.complete(asked)
    p = await _provider("openai", one_choice_server, started)
    with pytest.raises(UpstreamProtocolError, match="no logprobs"):
        async for _ in p.stream(asked):
            raise AssertionError("text without logprobs was passed on")
