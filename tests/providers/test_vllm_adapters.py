"""An openai backend serving vLLM loads, switches to and unloads LoRA adapters at runtime
(``hotswap.RuntimeAdapters``), against the simulated vLLM (standby.sim.vllm)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from standby.config import OpenAIBackend
from standby.protocol import ChatRequest, Message
from standby.providers.hotswap import AdapterLoadError, RuntimeAdapters, ServedModel
from standby.providers.openai_compat import OpenAICompatProvider
from standby.providers.vllm_adapters import error_message
from standby.sim.vllm import BASE_MODEL, answer_for
from tests.fixtures.vllm_sim import RunningVLLM, StartVLLM

HELLO = ChatRequest(messages=(Message("user", "Say hello"),))


def adapter(path: Path, peft_type: str = "LORA") -> str:
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type}))
    return str(path)


@pytest.fixture
def vllm(start_vllm: StartVLLM) -> RunningVLLM:
    return start_vllm()


@pytest.fixture
async def provider(vllm: RunningVLLM) -> AsyncIterator[OpenAICompatProvider]:
    config = OpenAIBackend(type="openai", base_url=vllm.base_url, model=BASE_MODEL)
    p = OpenAICompatProvider("gemma", config)
    await p.start()
    yield p
    await p.close()


async def test_load_switch_and_unload(
    provider: OpenAICompatProvider, vllm: RunningVLLM, tmp_path: Path
) -> None:
    assert isinstance(provider, RuntimeAdapters)
    assert provider.served() is None  # its configured model, under no version of its own
    await provider.load_adapter("v1", adapter(tmp_path / "v1"))
    await provider.load_adapter("v1", str(tmp_path / "v1"))  # loaded already: fine
    assert await provider.loaded_models() == {BASE_MODEL, "v1"}
    assert provider.use_model("v1") == ServedModel("v1", BASE_MODEL)
    assert provider.use_model("v1", "google/gemma-3-1b-it").base_model == "google/gemma-3-1b-it"
    assert (await provider.complete(HELLO)).text == answer_for("v1")
    deltas = [d async for d in provider.stream(HELLO)]
    assert deltas[-1].model_version == "v1"  # the last piece names the model that answered
    await provider.unload_adapter("v1")
    await provider.unload_adapter("v1")  # not loaded any more: fine
    assert await provider.loaded_models() == {BASE_MODEL}
    assert vllm.calls("load") == [("v1", 200), ("v1", 400)]


async def test_a_rejected_adapter_is_not_retried(
    provider: OpenAICompatProvider, tmp_path: Path
) -> None:
    with pytest.raises(AdapterLoadError, match="HTTP 404: Loading lora v2 failed") as missing:
        await provider.load_adapter("v2", str(tmp_path / "nowhere"))
    assert not missing.value.retry
    with pytest.raises(AdapterLoadError, match=r"HTTP 400: .*not 'LORA'") as wrong:
        await provider.load_adapter("v3", adapter(tmp_path / "v3", peft_type="IA3"))
    assert not wrong.value.retry


async def test_a_server_that_cannot_be_reached_may_load_later(refused_port: int) -> None:
    base_url = f"http://127.0.0.1:{refused_port}/v1"
    p = OpenAICompatProvider("gemma", OpenAIBackend(type="openai", base_url=base_url, model="m"))
    try:
        for attempt in (p.load_adapter("v1", "/adapters/v1"), p.loaded_models()):
            with pytest.raises(AdapterLoadError, match=f"{refused_port}") as e:
                await attempt
            assert e.value.retry
    finally:
        await p.close()


def test_error_messages_in_every_shape_vllm_sends() -> None:
    assert error_message(b'{"error": {"message": "no such adapter"}}') == "no such adapter"
    assert error_message(b'{"message": "older flat shape"}') == "older flat shape"
    assert error_message(b"Internal Server Error") == "Internal Server Error"
    assert error_message(b'["odd"]') == "['odd']"
    assert len(error_message(b"x" * 1000)) == 300
