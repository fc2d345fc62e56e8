"""Capture with several choices: one event per request, whose answer is choice 0 (whole and
streamed), with ``n`` and ``logprobs`` kept in its params so a dataset can leave it out."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.captured import stored
from tests.fixtures.gateway import ROUTE, StartGateway, base_config
from tests.fixtures.sim import RunningSim

HELLO = [{"role": "user", "content": "Capture several answers."}]


async def test_choice_0_is_the_captured_answer(
    sim: RunningSim, tmp_path: Path, start_gateway: StartGateway
) -> None:
    db = tmp_path / "events.db"
    config = base_config(sim.url, None)
    config["capture"] = {"enabled": True, "bus": f"sqlite:///{db}", "flush_interval_s": 0.05}
    gw = start_gateway(config)
    client = gw.client()
    whole = client.chat.completions.create(model=ROUTE, messages=HELLO, n=3, logprobs=True)
    streamed: dict[int, str] = {}
    for chunk in client.chat.completions.create(model=ROUTE, messages=HELLO, n=2, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + (choice.delta.content or "")
    gw.stop()  # a clean stop drains the queue

    events = await stored(db)
    assert len(events) == 2
    first, second = (e.data for e in events)
    assert first.response == whole.choices[0].message.content
    assert first.response != whole.choices[1].message.content
    assert first.params == {"n": 3, "logprobs": True}
    assert whole.usage is not None
    assert first.usage.completion_tokens == whole.usage.completion_tokens  # every choice's
    assert second.response == streamed[0] != streamed[1]
    assert (second.params, second.finish_reason, second.stream) == ({"n": 2}, "stop", True)
