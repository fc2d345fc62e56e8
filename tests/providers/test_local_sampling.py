"""LocalProvider's sampling controls on the tiny random-weight Gemma, real generation:
``logit_bias`` forces and bans tokens, the penalties follow OpenAI's formula step by step,
logprobs come in OpenAI's ``ChatCompletionTokenLogprob`` shape and belong to the tokens
taken, and ``n`` gives that many choices, whole and streamed."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch

from standby.config import LocalBackend
from standby.errors import BackendBusy
from standby.protocol import ChatRequest, Message
from standby.providers.local import LocalProvider
from tests.fixtures.openai_schema import problems

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKENS = 24


def ask(text: str, **kw: Any) -> ChatRequest:
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", TOKENS)
    return ChatRequest(messages=(Message("user", text),), **kw)


@pytest_asyncio.fixture(scope="module")
async def provider(tiny_model_dir: Path) -> AsyncIterator[LocalProvider]:
    p = LocalProvider(
        "gemma",
        LocalBackend(
            type="local",
            model=str(tiny_model_dir),
            device="cpu",
            max_new_tokens=64,
            max_batch_size=4,
        ),
    )
    await p.start()
    yield p
    await p.close()


def greedy_ids(p: LocalProvider, request: ChatRequest) -> list[int]:
    assert p.worker is not None
    prompt = p.worker.render(request)
    with torch.inference_mode():
        out = p.worker.model.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=TOKENS,
            do_sample=False,
        )
    return [int(t) for t in out[0, len(prompt) :]]


def spelled(c_logprobs: list[dict[str, Any]] | None) -> list[bytes]:
    """The answer's tokens, each as its bytes (from its logprobs)."""
    return [bytes(item["bytes"]) for item in c_logprobs or ()]


async def test_logit_bias_bans_and_forces_tokens(provider: LocalProvider) -> None:
    assert provider.worker is not None and provider.grammars is not None
    request = ask("Tell me a story.", logprobs=True)
    first = (await asyncio.to_thread(greedy_ids, provider, request))[0]
    plain = await provider.complete(request)
    spelling = provider.grammars.token_bytes(first)
    assert spelled(plain.logprobs)[0] == spelling
    banned = await provider.complete(
        ask("Tell me a story.", logprobs=True, logit_bias={first: -100})
    )
    assert spelling not in spelled(banned.logprobs)
    word = next(t for t in range(300, 1000) if provider.grammars.token_bytes(t).isalpha())
    forced = await provider.complete(ask("Tell me a story.", max_tokens=5, logit_bias={word: 100}))
    spelled_word = provider.grammars.token_bytes(word).decode()
    assert (forced.text, forced.finish_reason) == (spelled_word * 5, "length")


@pytest.mark.parametrize(
    ("presence", "frequency"), [(2.0, 0.0), (0.0, 1.5), (0.5, 0.7), (-2.0, 0.0)]
)
async def test_penalties_follow_openais_formula(
    provider: LocalProvider, presence: float, frequency: float
) -> None:
    """Greedy with top_logprobs 20: at every step the token taken must have the best
    ``logprob - presence * (count > 0) - frequency * count`` among the model's top 20
    (logprobs are the model's own, before the penalties)."""
    base = await provider.complete(ask("Go on and on.", max_tokens=32))
    c = await provider.complete(
        ask(
            "Go on and on.",
            max_tokens=32,
            logprobs=True,
            top_logprobs=20,
            presence_penalty=presence,
            frequency_penalty=frequency,
        )
    )
    assert c.logprobs is not None
    counts: Counter[bytes] = Counter()

    def adjusted(entry: dict[str, Any]) -> float:
        n = counts[bytes(entry["bytes"])]
        return float(entry["logprob"]) - presence * (n > 0) - frequency * n

    for item in c.logprobs:
        best = max(adjusted(e) for e in item["top_logprobs"])
        assert adjusted(item) >= best - 1e-4
        counts[bytes(item["bytes"])] += 1
    assert c.text != base.text  # and the distribution really moved
    repeats = max(counts.values())
    if presence > 0 or frequency > 0:
        assert repeats == 1  # against logits this flat, a penalty rules out any repeat
    else:
        assert repeats > 2  # a negative presence penalty makes the model repeat itself


async def test_logprobs_are_openais_shape_and_belong_to_the_answer(provider: LocalProvider) -> None:
    c = await provider.complete(ask("Why is grass green?", logprobs=True, top_logprobs=3))
    assert c.logprobs is not None and len(c.logprobs) == c.usage.completion_tokens - (
        c.finish_reason == "stop"
    )
    for item in c.logprobs:
        assert problems("ChatCompletionTokenLogprob", item) == []
        top = item["top_logprobs"]
        assert len(top) == 3
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert item["token"] == top[0]["token"] and item["logprob"] == top[0]["logprob"]  # greedy
        assert item["logprob"] < 0
    assert b"".join(spelled(c.logprobs)).decode(errors="replace") == c.text
    streamed = [d async for d in provider.stream(ask("Why is grass green?", logprobs=True))]
    items = [i for d in streamed for i in d.logprobs or ()]
    assert [i["token"] for i in items] == [i["token"] for i in c.logprobs]
    assert all(i["top_logprobs"] == [] for i in items)  # top_logprobs not asked: none
    assert (await provider.complete(ask("Why is grass green?"))).logprobs is None


async def test_n_gives_that_many_choices_whole_and_streamed(provider: LocalProvider) -> None:
    request = ask("Name a colour.", temperature=1.0, seed=3, n=3, max_tokens=8)
    c = await provider.complete(request)
    choices = [c, *c.alternatives]
    assert len(choices) == 3
    assert len({x.text for x in choices}) > 1  # independent samples
    assert c.usage.completion_tokens == 3 * 8
    deltas = [d async for d in provider.stream(request)]
    assert {d.index for d in deltas} == {0, 1, 2}
    for i, choice in enumerate(choices):
        mine = [d for d in deltas if d.index == i]
        assert "".join(d.text for d in mine) == choice.text  # same seed, same batch
        assert [d.finish_reason for d in mine][-1] == choice.finish_reason
        assert sum(d.finish_reason is not None for d in mine) == 1
    assert [d.usage for d in deltas[:-1]] == [None] * (len(deltas) - 1)
    assert deltas[-1].usage == c.usage


async def test_choices_that_do_not_all_fit_in_the_queue_leave_none_behind(
    tiny_model_dir: Path,
) -> None:
    p = LocalProvider(
        "gemma",
        LocalBackend(type="local", model=str(tiny_model_dir), device="cpu", max_queue=1),
    )
    await p.start()
    try:
        with pytest.raises(BackendBusy):
            await p.complete(ask("Many, please.", n=3, max_tokens=32))
        assert p.worker is not None and not p.worker.full()
        c = await p.complete(ask("One more.", max_tokens=4))
        assert c.usage.completion_tokens == 4
    finally:
        await p.close()
