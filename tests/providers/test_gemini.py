"""GeminiProvider against the simulated Gemini (standby.sim): whole and streamed answers agree,
down to the model version on the last piece."""

from __future__ import annotations

from standby.config import GeminiBackend
from standby.protocol import ChatRequest, Message
from standby.providers.gemini import GeminiProvider
from tests.fixtures.sim import SIM_KEY, RunningSim

HELLO = ChatRequest(messages=(Message("user", "Say hello"),))


async def test_stream_and_complete_agree_on_the_model_version(sim: RunningSim) -> None:
    config = GeminiBackend(
        type="gemini", model="gemini-2.5-flash", api_key=SIM_KEY, base_url=sim.url
    )
    p = GeminiProvider("gemini", config)
    await p.start()
    try:
        whole = await p.complete(HELLO)
        deltas = [d async for d in p.stream(HELLO)]
    finally:
        await p.close()
    assert "".join(d.text for d in deltas) == whole.text
    assert deltas[-1].finish_reason == whole.finish_reason == "stop"
    assert deltas[-1].model_version == whole.model_version == "gemini-2.5-flash"
    assert {d.model_version for d in deltas[:-1]} <= {None}
