"""Hot-swapping the local fallback's LoRA adapter under load: requests already accepted finish on
the adapter they started with, new ones get the new adapter, nothing fails, and adapters nobody
needs any more are unloaded. Real tiny Gemma, real adapters, greedy decoding (answers are exact).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from standby.config import LocalBackend
from standby.errors import UpstreamError
from standby.protocol import ChatRequest, Completion, Message
from standby.providers.local import LocalProvider
from standby.sim.tiny_model import build_tiny_lora_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [f"tell me about item {i}" for i in range(6)]


@pytest.fixture(scope="module")
def second_adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    return build_tiny_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("lora-2"), seed=2)


def ask(text: str) -> ChatRequest:
    return ChatRequest(messages=(Message("user", text),), temperature=0, max_tokens=24)


def local(model: Path, adapter: Path | None = None, **kw: int) -> LocalProvider:
    config = LocalBackend(
        type="local",
        model=str(model),
        device="cpu",
        max_new_tokens=24,
        adapter=str(adapter) if adapter else None,
        **kw,
    )
    return LocalProvider("gemma", config)


async def answers_of(provider: LocalProvider) -> dict[str, str]:
    """What ``provider`` answers each prompt alone."""
    return {p: (await provider.complete(ask(p))).text for p in PROMPTS}


async def reference(model: Path, adapter: Path | None) -> dict[str, str]:
    p = local(model, adapter)
    await p.start()
    try:
        return await answers_of(p)
    finally:
        await p.close()


def loaded_adapters(provider: LocalProvider) -> set[str]:
    assert provider.worker is not None
    return set(getattr(provider.worker.model, "peft_config", {}))


async def test_in_flight_requests_finish_on_their_adapter_and_new_ones_get_the_new_one(
    tiny_model_dir: Path, tiny_adapter_dir: Path, second_adapter_dir: Path
) -> None:
    base = await reference(tiny_model_dir, None)
    first = await reference(tiny_model_dir, tiny_adapter_dir)
    second = await reference(tiny_model_dir, second_adapter_dir)
    assert base != first != second  # each adapter visibly changes the answers

    provider = local(tiny_model_dir, max_batch_size=2, max_queue=64)
    await provider.start()
    try:
        versions = [provider.model_version]
        expected_by_version = {str(tiny_model_dir): base}
        done: list[Completion] = []
        asked: list[str] = []

        async def client(n: int) -> None:
            for i in range(n):
                prompt = PROMPTS[i % len(PROMPTS)]
                asked.append(prompt)
                done.append(await provider.complete(ask(prompt)))

        load = [asyncio.create_task(client(9)) for _ in range(4)]
        for adapter, answers in ((tiny_adapter_dir, first), (second_adapter_dir, second)):
            await asyncio.sleep(0.3)  # swap while requests of every client are queued/running
            versions.append(await provider.swap_adapter(str(adapter)))
            expected_by_version[str(adapter)] = answers
        await asyncio.gather(*load)  # no request failed

        assert versions == [str(tiny_model_dir), str(tiny_adapter_dir), str(second_adapter_dir)]
        seen = {c.model_version for c in done}
        assert len(done) == 36 and len(seen) >= 2
        completions = {id(c): c for c in done}
        for c in completions.values():
            assert c.model_version is not None
            assert c.text in expected_by_version[c.model_version].values()
        # Exact: every answer is what its version answers that prompt alone.
        by_task = list(zip(asked, done, strict=False))
        for prompt, c in by_task:
            assert c.model_version is not None
            assert c.text == expected_by_version[c.model_version][prompt]
        assert await answers_of(provider) == second
        assert loaded_adapters(provider) == {"standby_2"}  # the first one was unloaded
        assert provider.stats.swaps == 2
    finally:
        await provider.close()


async def test_a_bad_adapter_leaves_the_serving_one(
    tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    provider = local(tiny_model_dir, tiny_adapter_dir)
    await provider.start()
    try:
        before = await answers_of(provider)
        with pytest.raises(UpstreamError, match="no such directory"):
            await provider.swap_adapter(str(tmp_path / "missing"))
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "adapter_config.json").write_text("{not json")
        with pytest.raises(UpstreamError, match="cannot load adapter"):
            await provider.swap_adapter(str(tmp_path / "broken"))
        assert provider.model_version == str(tiny_adapter_dir)
        assert await answers_of(provider) == before
    finally:
        await provider.close()
