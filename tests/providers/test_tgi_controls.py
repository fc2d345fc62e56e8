"""Penalties and reasoning effort on TGI's native API, and a conversation of system messages
only, against the simulated TGI through the real huggingface_hub client."""

from __future__ import annotations

from standby.config import TGIBackend
from standby.protocol import ChatRequest, Message
from standby.providers.tgi import TGIProvider
from tests.fixtures.providers import HELLO, Start
from tests.fixtures.tgi_sim import RunningTGI


async def test_frequency_penalty_is_sent_presence_and_effort_are_not(
    tgi_sim: RunningTGI, started: Start
) -> None:
    p = await started(TGIProvider("tgi", TGIBackend(type="tgi", base_url=tgi_sim.url)))
    request = ChatRequest(
        messages=HELLO.messages,
        frequency_penalty=0.5,
        presence_penalty=1.0,
        reasoning_effort="high",
        service_tier="flex",
    )
    await p.complete(request)
    params = tgi_sim.requests[-1]["body"]["parameters"]
    assert params["frequency_penalty"] == 0.5
    assert not {"presence_penalty", "reasoning_effort", "service_tier"} & set(params)


async def test_a_system_only_conversation_is_a_user_turn(
    tgi_sim: RunningTGI, started: Start
) -> None:
    p = await started(TGIProvider("tgi", TGIBackend(type="tgi", base_url=tgi_sim.url)))
    answer = await p.complete(ChatRequest(messages=(Message("system", "Greet the user."),)))
    assert answer.text
    inputs = tgi_sim.requests[-1]["body"]["inputs"]
    assert inputs == "<start_of_turn>user\nGreet the user.<end_of_turn>\n<start_of_turn>model\n"
