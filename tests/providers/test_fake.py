"""FakeProvider plays its script through the real Provider contract."""

from __future__ import annotations

import asyncio

import pytest

from standby.errors import UpstreamBlocked, UpstreamConnectError, UpstreamStatusError
from standby.protocol import ChatRequest, Delta, Message
from standby.providers.base import Provider
from standby.providers.fake import Blocked, Cut, FakeProvider, Hang, Reply

HELLO = ChatRequest(messages=(Message("user", "Say hello"),))


async def collect(fake: FakeProvider) -> list[Delta]:
    return [d async for d in fake.stream(HELLO)]


async def test_whole_and_streamed_answers_agree() -> None:
    fake = FakeProvider("f", default=Reply("Hello ", "there.", model_version="v1"))
    await fake.start()
    assert isinstance(fake, Provider) and fake.ready()
    whole = await fake.complete(HELLO)
    deltas = await collect(fake)
    assert "".join(d.text for d in deltas) == whole.text == "Hello there."
    assert [d.finish_reason for d in deltas] == [None, "stop"]
    assert deltas[-1].usage == whole.usage and whole.usage.completion_tokens == 2
    assert deltas[-1].model_version == whole.model_version == "v1"
    assert fake.requests == [HELLO, HELLO]


async def test_steps_are_played_in_order_then_the_default() -> None:
    error = UpstreamStatusError("f", 503, "down", retry_after=3)
    fake = FakeProvider("f", error, Cut("Hel"), default=Reply("ok"))
    with pytest.raises(UpstreamStatusError) as raised:
        await fake.complete(HELLO)
    assert raised.value.retry_after == 3
    pieces: list[str] = []
    with pytest.raises(UpstreamConnectError):
        async for delta in fake.stream(HELLO):
            pieces.append(delta.text)
    assert pieces == ["Hel"]
    assert (await fake.complete(HELLO)).text == "ok"
    assert (await fake.complete(HELLO)).text == "ok"


async def test_blocked_is_a_content_filter_unless_configured_to_fail_over() -> None:
    answer = await FakeProvider("f", Blocked()).complete(HELLO)
    assert (answer.text, answer.finish_reason) == ("", "content_filter")
    with pytest.raises(UpstreamBlocked):
        await FakeProvider("f", Blocked(), on_blocked="fallback").complete(HELLO)


async def test_hang_never_answers_and_busy_is_not_ready() -> None:
    fake = FakeProvider("f", Hang(), Hang("partial"))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await fake.complete(HELLO)
    stream = fake.stream(HELLO)
    assert (await anext(stream)).text == "partial"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await anext(stream)
    await fake.start()
    fake.busy = True
    assert not fake.ready()
