"""LocalProvider against the tiny random-weight Gemma: real weights, real threads, no mocks.

Greedy decoding is deterministic, so "the right answer" for a request is what the model gives
it alone (or what ``model.generate`` gives for the same prompt).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch

from standby.config import LocalBackend
from standby.errors import BackendBusy, UpstreamError
from standby.protocol import ChatRequest, Completion, Delta, Message
from standby.providers.base import Provider
from standby.providers.hotswap import AdapterSwapping, ServedModel
from standby.providers.local import LocalProvider
from tests.fixtures.providers import Start

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_NEW = 48


def ask(text: str, **kw: Any) -> ChatRequest:
    kw.setdefault("temperature", 0)
    return ChatRequest(messages=(Message("user", text),), **kw)


def local(model: Path | str, **kw: Any) -> LocalProvider:
    kw.setdefault("max_new_tokens", MAX_NEW)
    kw.setdefault("device", "cpu")  # float32: greedy answers are the same alone or batched
    return LocalProvider("gemma", LocalBackend(type="local", model=str(model), **kw))


@pytest_asyncio.fixture(scope="module")
async def provider(tiny_model_dir: Path) -> AsyncIterator[LocalProvider]:
    p = local(tiny_model_dir, max_batch_size=4, max_queue=8)
    await p.start()
    yield p
    await p.close()


async def first_delta(stream: AsyncIterator[Delta]) -> Delta:
    """Wait until the worker is generating this stream (its first piece arrived)."""
    async for delta in stream:
        assert delta.finish_reason is None, "the request meant to keep the worker busy ended"
        return delta
    raise AssertionError("stream ended without a delta")


def generate_ids(p: LocalProvider, prompt: list[int], max_new_tokens: int) -> list[int]:
    """What plain greedy ``model.generate`` answers for ``prompt`` (eos tokens dropped)."""
    assert p.worker is not None
    with torch.inference_mode():
        out = p.worker.model.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
    return [t for t in out[0, len(prompt) :].tolist() if t not in p.worker.eos]


def direct_generate(p: LocalProvider, prompt: list[int], max_new_tokens: int) -> str:
    assert p.worker is not None
    ids = generate_ids(p, prompt, max_new_tokens)
    return str(p.worker.tokenizer.decode(ids, skip_special_tokens=True))


def prompt_of(p: LocalProvider, request: ChatRequest) -> list[int]:
    assert p.worker is not None
    return p.worker.render(request)


async def test_is_a_provider_and_completes(provider: LocalProvider, tiny_model_dir: Path) -> None:
    assert isinstance(provider, Provider)
    assert provider.ready()
    request = ask("What is the capital of France?")
    c = await provider.complete(request)
    assert c.finish_reason in ("stop", "length")
    assert c.usage.prompt_tokens == len(prompt_of(provider, request))
    assert 1 <= c.usage.completion_tokens <= MAX_NEW
    assert c.model_version == str(tiny_model_dir)
    assert "<start_of_turn>" not in c.text and "model\n" not in c.text


async def test_stream_equals_complete_and_plain_generate(provider: LocalProvider) -> None:
    request = ask("Why is the sky blue?")
    deltas = [d async for d in provider.stream(request)]
    c = await provider.complete(request)
    assert [d.finish_reason for d in deltas[:-1]] == [None] * (len(deltas) - 1)
    assert deltas[-1].finish_reason == c.finish_reason
    assert deltas[-1].usage == c.usage
    assert deltas[-1].model_version == c.model_version is not None
    assert {d.model_version for d in deltas[:-1]} == {None}
    assert "".join(d.text for d in deltas) == c.text
    assert len(deltas) > 3  # really incremental
    assert c.text == await asyncio.to_thread(
        direct_generate, provider, prompt_of(provider, request), MAX_NEW
    )


async def test_max_tokens_is_per_row_and_capped(provider: LocalProvider) -> None:
    short = await provider.complete(ask("Tell me a long story.", max_tokens=3))
    assert (short.finish_reason, short.usage.completion_tokens) == ("length", 3)
    capped = await provider.complete(ask("Tell me a long story.", max_tokens=10_000))
    assert capped.usage.completion_tokens <= MAX_NEW
    assert capped.text.startswith(short.text)


async def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    provider: LocalProvider,
) -> None:
    requests = [
        ask("Hi"),
        ask("How many legs does a spider have? Count them carefully.", max_tokens=7),
        ask("Summarize this article, please.", max_tokens=20),
        ChatRequest(
            messages=(Message("system", "Be brief."), Message("user", "Explain gravity simply.")),
            temperature=0,
        ),
    ]
    solo = [await provider.complete(r) for r in requests]
    before = provider.stats.batch_sizes[len(requests)]
    # Keep the worker busy so that all four wait in the queue and leave in one batch.
    blocker = provider.stream(ask("Write a poem about rain.", seed=7))
    await first_delta(blocker)
    together = await asyncio.gather(*(provider.complete(r) for r in requests))
    await blocker.aclose()
    assert provider.stats.batch_sizes[len(requests)] == before + 1
    for alone, batched in zip(solo, together, strict=True):
        assert batched.text == alone.text
        assert batched.finish_reason == alone.finish_reason
        assert batched.usage == alone.usage


async def test_a_row_that_stops_early_gets_no_extra_text(provider: LocalProvider) -> None:
    base = await provider.complete(ask("Describe the green door."))
    text = base.text
    k = next(i for i in range(4, len(text) - 3) if "\ufffd" not in text[i : i + 3])
    stop = text[k : k + 3]
    other = ask("Describe the quiet room.")
    other_alone = await provider.complete(other)
    blocker = provider.stream(ask("Write a poem about rain.", seed=7))
    await first_delta(blocker)
    stopped, unaffected = await asyncio.gather(
        provider.complete(ask("Describe the green door.", stop=(stop, "never-seen"))),
        provider.complete(other),
    )
    await blocker.aclose()
    assert stopped.finish_reason == "stop"
    assert stopped.text == text[: text.find(stop)]
    assert stopped.usage.completion_tokens < base.usage.completion_tokens
    assert unaffected.text == other_alone.text


async def test_each_row_stops_at_its_own_end_of_turn(
    provider: LocalProvider, tiny_model_dir: Path, tmp_path: Path
) -> None:
    request = ask("Describe the green door.")
    ids = await asyncio.to_thread(generate_ids, provider, prompt_of(provider, request), MAX_NEW)
    # Random weights rarely end a turn: declare the answer's 5th token an end-of-turn token.
    end = ids[4]
    first = ids.index(end)
    model_dir = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, model_dir)
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    gen["eos_token_id"] = [*gen["eos_token_id"], end]
    gen_path.write_text(json.dumps(gen))
    p = local(model_dir, max_batch_size=4)
    await p.start()
    try:
        other = ask("Tell me a long story.")
        other_alone = await p.complete(other)
        blocker = p.stream(ask("Write a poem about rain.", seed=7))
        await first_delta(blocker)
        stopped, unaffected = await asyncio.gather(p.complete(request), p.complete(other))
        await blocker.aclose()
        assert p.stats.batch_sizes[2] == 1
    finally:
        await p.close()
    assert stopped.finish_reason == "stop"
    assert stopped.usage.completion_tokens == first + 1  # the end-of-turn token counts
    assert stopped.text == provider.worker.tokenizer.decode(ids[:first], skip_special_tokens=True)
    assert unaffected == other_alone


async def test_sampling_follows_temperature_and_seed(provider: LocalProvider) -> None:
    greedy = await provider.complete(ask("Hello", temperature=None, max_tokens=16))
    zero = await provider.complete(ask("Hello", temperature=0, max_tokens=16))
    assert greedy.text == zero.text  # the tiny model's generation_config is greedy
    hot = [
        await provider.complete(ask("Hello", temperature=1.5, top_p=0.95, seed=s, max_tokens=16))
        for s in (1, 1, 2)
    ]
    assert hot[0].text == hot[1].text
    assert hot[0].text != hot[2].text


async def test_no_temperature_follows_the_models_generation_config(
    provider: LocalProvider, tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "sampling"
    shutil.copytree(tiny_model_dir, model_dir)
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    gen_path.write_text(json.dumps(gen | {"do_sample": True, "top_k": 64, "top_p": 0.95}))
    p = local(model_dir)
    await p.start()
    try:
        default = [await p.complete(ask("Hello", temperature=None, seed=3, max_tokens=16))]
        default.append(await p.complete(ask("Hello", temperature=None, seed=3, max_tokens=16)))
        zero = await p.complete(ask("Hello", temperature=0, max_tokens=16))
    finally:
        await p.close()
    greedy = await provider.complete(ask("Hello", temperature=0, max_tokens=16))
    assert zero.text == greedy.text  # temperature 0 is greedy whatever the model says
    assert default[0].text == default[1].text != greedy.text  # sampled, seeded


async def test_continue_final_continues_the_partial_answer(provider: LocalProvider) -> None:
    first = await provider.complete(ask("Tell me about the river."))
    partial = first.text[: len(first.text) // 2].strip() or "The river"
    request = ask("Tell me about the river.").continued(partial)
    prompt = prompt_of(provider, request)
    assert provider.worker is not None
    rendered = provider.worker.tokenizer.decode(prompt)
    assert rendered.endswith("<start_of_turn>model\n" + partial)  # open turn, no <end_of_turn>
    c = await provider.complete(request)
    assert c.usage.prompt_tokens == len(prompt)
    assert c.text == await asyncio.to_thread(direct_generate, provider, prompt, MAX_NEW)


async def test_event_loop_keeps_running_while_loading_and_generating(
    tiny_model_dir: Path,
) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    p = local(tiny_model_dir, max_new_tokens=64)
    try:
        began = time.perf_counter()
        await p.start()
        await asyncio.gather(
            *(p.complete(ask(f"Story number {i}", max_tokens=64)) for i in range(3))
        )
        took = time.perf_counter() - began
    finally:
        task.cancel()
        await p.close()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 10
    assert max(gaps) < max(0.2, took / 4), (max(gaps), took)


@pytest.fixture
async def one_slot(tiny_model_dir: Path, started: Start) -> LocalProvider:
    """A started provider with one row and one place in its queue."""
    return await started(local(tiny_model_dir, max_batch_size=1, max_queue=1, max_new_tokens=200))


async def test_busy_at_once_when_the_queue_is_full(one_slot: LocalProvider) -> None:
    p = one_slot
    running = p.stream(ask("Write a poem about rain.", max_tokens=200))
    await first_delta(running)
    tasks = [asyncio.create_task(p.complete(ask(f"Q {i}", max_tokens=4))) for i in range(4)]
    await asyncio.sleep(0)  # each task submits; one waits in the queue
    assert sum(t.done() for t in tasks) == 3  # refused at once, not after waiting
    assert not p.ready()
    await running.aclose()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert p.ready()
    busy = [r for r in results if isinstance(r, BackendBusy)]
    done = [r for r in results if isinstance(r, Completion)]
    assert (len(done), len(busy)) == (1, 3)
    assert busy[0].backend == "gemma" and not busy[0].counts


async def test_cancelled_requests_free_their_slot_and_stop_their_row(
    one_slot: LocalProvider,
) -> None:
    p = one_slot
    running = p.stream(ask("Write a poem about rain.", max_tokens=200))
    await first_delta(running)
    waiting = asyncio.create_task(p.complete(ask("Waiting", max_tokens=4)))
    await asyncio.sleep(0)
    assert not p.ready()
    with pytest.raises(BackendBusy):
        await p.complete(ask("No room"))
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    assert p.ready()  # the waiting request's slot is free again
    await running.aclose()  # the consumer goes away mid-generation
    after = await p.complete(ask("Next", max_tokens=4))
    assert p.stats.cancelled == 2
    tokens_of_running = p.stats.generated_tokens - after.usage.completion_tokens
    assert tokens_of_running < 200


async def test_adapter_loads_and_changes_the_answer(
    provider: LocalProvider, tiny_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    tuned = local(tiny_model_dir, adapter=str(tiny_adapter_dir), adapter_revision="v1")
    await tuned.start()
    try:
        request = ask("What is the capital of France?")
        a, b = await provider.complete(request), await tuned.complete(request)
    finally:
        await tuned.close()
    assert b.model_version == f"{tiny_adapter_dir}@v1"
    # What the gateway publishes as standby_fallback_model_info, and swaps on a promotion.
    assert isinstance(tuned, AdapterSwapping)
    assert tuned.served() == ServedModel(
        b.model_version, str(tiny_model_dir), str(tiny_adapter_dir)
    )
    assert provider.served() == ServedModel(str(tiny_model_dir), str(tiny_model_dir), None)
    assert a.text != b.text


async def test_load_errors_are_one_line_upstream_errors(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    no_template = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, no_template)
    (no_template / "chat_template.jinja").unlink()
    cases = {
        str(tmp_path / "missing"): "no such directory",
        "standby-tests/no-such-model": "cannot load model",
        str(no_template): "has no chat template",
    }
    for model, expected in cases.items():
        p = local(model)
        with pytest.raises(UpstreamError) as info:
            await p.start()
        message = str(info.value)
        assert expected in message and model in message
        assert "\n" not in message and message.startswith("gemma: ")
        assert not p.ready()
    missing = local(tiny_model_dir, adapter=str(tmp_path / "no-adapter"))
    with pytest.raises(UpstreamError, match=r"adapter '.*no-adapter': no such directory"):
        await missing.start()
    empty = local(tiny_model_dir, adapter=str(tmp_path))
    with pytest.raises(UpstreamError, match=r"cannot load adapter .*adapter_config\.json"):
        await empty.start()


async def test_generation_errors_are_upstream_errors(provider: LocalProvider) -> None:
    with pytest.raises(UpstreamError, match=r"prompt has \d+ tokens"):
        await provider.complete(ask("word " * 3000))
    with pytest.raises(UpstreamError, match="not loaded"):
        await local("unused").complete(ask("hi"))
    assert provider.ready()  # the worker survived


async def test_close_fails_requests_in_flight(tiny_model_dir: Path) -> None:
    p = local(tiny_model_dir, max_new_tokens=200)
    await p.start()
    running = p.stream(ask("Write a poem about rain.", max_tokens=200))
    await first_delta(running)
    await p.close()
    with pytest.raises(UpstreamError, match="closed"):
        async for _ in running:
            pass
    assert not p.ready()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
async def test_an_unavailable_device_fails_at_start(tiny_model_dir: Path) -> None:
    p = local(tiny_model_dir, device="cuda")
    with pytest.raises(UpstreamError, match="device 'cuda' is not available"):
        await p.start()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
async def test_auto_device_is_cuda_in_bfloat16(tiny_model_dir: Path) -> None:
    p = local(tiny_model_dir, device="auto")
    await p.start()
    try:
        assert p.worker is not None
        assert p.worker.model.device.type == "cuda"
        assert p.worker.model.dtype == torch.bfloat16
        results = await asyncio.gather(*(p.complete(ask(f"Q {i}", max_tokens=8)) for i in range(3)))
        assert all(1 <= r.usage.completion_tokens <= 8 for r in results)
    finally:
        await p.close()
