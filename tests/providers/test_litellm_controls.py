"""reasoning_effort, service_tier, penalties and usage details through litellm, against the
simulated Gemini on both surfaces (which refuses what Gemini refuses: ``sim.gemini_config``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from standby.config import LiteLLMBackend
from standby.protocol import ChatRequest, Message
from standby.providers.gemini_controls import EFFORTS
from standby.providers.litellm import LiteLLMProvider
from tests.fixtures.providers import Start
from tests.fixtures.sim import RunningSim

pytestmark = pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)
HELLO = Message("user", "Say hello")


async def provider(started: Start, sim: RunningSim, model: str) -> LiteLLMProvider:
    base = f"{sim.url}/v1beta" if model.startswith("gemini/") else f"{sim.url}/v1beta/openai"
    config = LiteLLMBackend(type="litellm", model=model, api_base=base, api_key="any-key")
    return await started(LiteLLMProvider("lm", config))


def last_body(sim: RunningSim) -> dict[str, Any]:
    return orjson.loads(sim.sim.received[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("model", ["gemini/gemini-3.8-flash", "gemini/gemini-2.5-pro"])
async def test_every_effort_reaches_gemini_as_a_value_it_accepts(
    sim: RunningSim, started: Start, model: str
) -> None:
    """Forwarded as is, litellm raises on "max" and "xhigh" and sends MINIMAL to 3.8 Flash and
    a 0 budget to 2.5 Pro (both 400s): the gateway's own table is sent instead."""
    p = await provider(started, sim, model)
    sent = []
    for effort in EFFORTS:
        answer = await p.complete(ChatRequest(messages=(HELLO,), reasoning_effort=effort))
        assert answer.text
        sent.append(last_body(sim)["generationConfig"]["thinkingConfig"])
    if "2.5" in model:
        assert [t["thinkingBudget"] for t in sent] == [128, 512, 1024, 8192, 16384, 24576, 32768]
    else:
        levels = ["low", "low", "low", "medium", "high", "high", "high"]
        assert [t["thinkingLevel"] for t in sent] == levels


async def test_reasoning_tokens_come_back_in_usage(sim: RunningSim, started: Start) -> None:
    p = await provider(started, sim, "gemini/gemini-2.5-flash")
    whole = await p.complete(ChatRequest(messages=(HELLO,), reasoning_effort="high"))
    # litellm asks Gemini for thought summaries whenever it sets a budget; the simulator counts
    # the summary's words as thought tokens too, as Gemini counts its summary.
    assert last_body(sim)["generationConfig"]["thinkingConfig"]["includeThoughts"] is True
    summary = "Simulated thought about: Say hello. Plan: answering in text."
    assert whole.usage.reasoning_tokens == 16384 // 64 + len(summary.split())


async def test_service_tier_and_effort_are_forwarded_to_openai_servers(
    sim: RunningSim, started: Start
) -> None:
    p = await provider(started, sim, "openai/gemini-3.8-flash")
    request = ChatRequest(
        messages=(HELLO,), reasoning_effort="max", service_tier="flex", frequency_penalty=0.5
    )
    await p.complete(request)
    body = last_body(sim)
    assert (body["reasoning_effort"], body["service_tier"]) == ("max", "flex")
    assert body["frequency_penalty"] == 0.5


@pytest.mark.parametrize(("tier", "sent"), [("flex", "flex"), ("auto", None), ("scale", None)])
async def test_service_tier_to_gemini(
    sim: RunningSim, started: Start, tier: str, sent: str | None
) -> None:
    """litellm sends "auto" to Gemini as priority (a dearer tier than asked) and "scale" as is
    (a 400): like the native provider, only default / flex / priority go."""
    p = await provider(started, sim, "gemini/gemini-3.8-flash")
    await p.complete(ChatRequest(messages=(HELLO,), service_tier=tier))
    assert last_body(sim).get("serviceTier") == sent
