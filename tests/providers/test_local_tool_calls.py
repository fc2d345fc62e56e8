"""LocalProvider with tools, end to end on tiny Gemmas: Gemma 3's template cannot declare tools
(the backend says so), Gemma 4's can; the tiny Gemma 4 trained on two fixed answers
(tests/fixtures/tiny_model.py) calls a function, whole and streamed, and answers from the
result. Bad calls are protocol errors."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from standby.config import LocalBackend
from standby.errors import UpstreamProtocolError
from standby.protocol import ChatRequest, Completion, Delta, Message
from standby.providers.local import LocalProvider
from standby.tool_calls import ToolChoice, whole_calls
from tests.fixtures.tiny_model import ANSWER, ASK, FOLLOW_UP
from tests.fixtures.tool_calls import PARIS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def local(model: Path, **kw: Any) -> LocalProvider:
    kw = {"max_new_tokens": 64, "device": "cpu", "max_batch_size": 4} | kw
    return LocalProvider("gemma", LocalBackend(type="local", model=str(model), **kw))


def greedy(request: ChatRequest, **changes: Any) -> ChatRequest:
    return dataclasses.replace(request, temperature=0, **changes)


@pytest_asyncio.fixture(scope="module")
async def provider(tiny_tool_model_dir: Path) -> AsyncIterator[LocalProvider]:
    p = local(tiny_tool_model_dir)
    await p.start()
    yield p
    await p.close()


async def collect(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [d async for d in stream]


async def test_a_template_without_tools_is_unsupported_for_tool_requests(
    tiny_model_dir: Path,
) -> None:
    p = local(tiny_model_dir)
    await p.start()
    try:
        reason = f"the chat template of {tiny_model_dir} has no tool support"
        assert p.unsupported(ASK) == reason
        history_only = dataclasses.replace(FOLLOW_UP, tools=())  # calls in the history alone
        assert p.unsupported(history_only) == reason
        assert p.unsupported(ChatRequest(messages=(Message("user", "Hi"),))) is None
    finally:
        await p.close()


async def test_gemma4_calls_a_function(provider: LocalProvider) -> None:
    assert provider.unsupported(ASK) is None
    answer = await provider.complete(greedy(ASK))
    assert (answer.text, answer.finish_reason) == ("", "tool_calls")
    (call,) = answer.tool_calls
    assert (call.name, json.loads(call.arguments)) == (PARIS.name, json.loads(PARIS.arguments))
    assert call.id.startswith("call_")
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 10


async def test_the_streamed_call_comes_whole_after_its_id_and_name(
    provider: LocalProvider,
) -> None:
    deltas = await collect(provider.stream(greedy(ASK)))
    pieces = [c for d in deltas for c in d.tool_calls]
    assert [(c.index, c.id is not None, c.name) for c in pieces] == [
        (0, True, PARIS.name),
        (0, False, None),
    ]
    assert json.loads(pieces[1].arguments) == json.loads(PARIS.arguments)
    assert [d.finish_reason for d in deltas] == [None] * (len(deltas) - 1) + ["tool_calls"]
    assert deltas[-1].usage is not None and deltas[-1].model_version is not None
    whole = await provider.complete(greedy(ASK))
    assert [(c.name, c.arguments) for c in whole_calls(pieces)] == [
        (c.name, c.arguments) for c in whole.tool_calls
    ]


async def test_gemma4_answers_from_the_tool_result(provider: LocalProvider) -> None:
    answer = await provider.complete(greedy(FOLLOW_UP))
    assert (answer.text, answer.finish_reason, answer.tool_calls) == (ANSWER, "stop", ())
    deltas = await collect(provider.stream(greedy(FOLLOW_UP)))
    assert len(deltas) > 3  # text still streams in pieces
    assert "".join(d.text for d in deltas) == ANSWER


async def test_a_named_function_is_called(provider: LocalProvider) -> None:
    named = greedy(ASK, tool_choice=ToolChoice("required", PARIS.name))
    (call,) = (await provider.complete(named)).tool_calls
    assert json.loads(call.arguments) == json.loads(PARIS.arguments)


@pytest.mark.parametrize(
    "request_",
    [
        greedy(FOLLOW_UP, tool_choice=ToolChoice("required")),  # it would rather answer
        greedy(ASK, max_tokens=6),  # the call is cut off
    ],
    ids=["required-but-no-valid-call", "cut-off"],
)
async def test_no_valid_call_is_a_protocol_error(
    provider: LocalProvider, request_: ChatRequest
) -> None:
    with pytest.raises(UpstreamProtocolError, match=r"^gemma: "):
        await provider.complete(request_)
    with pytest.raises(UpstreamProtocolError):
        await collect(provider.stream(request_))
    assert (await provider.complete(greedy(FOLLOW_UP))).text == ANSWER  # still serving


async def test_tool_and_plain_requests_share_a_batch(provider: LocalProvider) -> None:
    plain = ChatRequest(messages=(Message("user", "Hello there"),), temperature=0)
    alone = await provider.complete(plain)
    batches = provider.stats.batches
    answers: list[Completion] = await asyncio.gather(
        provider.complete(greedy(ASK)),
        provider.complete(plain),
        provider.complete(greedy(FOLLOW_UP)),
    )
    assert provider.stats.batches - batches < 3  # at least two of them ran together
    assert [a.finish_reason for a in answers] == ["tool_calls", alone.finish_reason, "stop"]
    assert answers[1].text == alone.text and answers[2].text == ANSWER


async def test_gemma4_serves_plain_text_batched_as_alone(tiny_gemma4_dir: Path) -> None:
    p = local(tiny_gemma4_dir, max_new_tokens=12)
    await p.start()
    try:
        asks = [ChatRequest(messages=(Message("user", q),), temperature=0) for q in ("Hi", "Why?")]
        alone = [await p.complete(r) for r in asks]
        together = await asyncio.gather(*(p.complete(r) for r in asks))
        assert [a.text for a in together] == [a.text for a in alone]
        assert all(a.text and a.usage.completion_tokens for a in alone)
        streamed = await collect(p.stream(asks[0]))
        assert "".join(d.text for d in streamed) == alone[0].text
    finally:
        await p.close()


async def test_a_partial_answer_with_tools_offered_is_continued(provider: LocalProvider) -> None:
    """Mid-stream failover hands over the text so far; the tools stay declared."""
    partial = greedy(FOLLOW_UP).continued(ANSWER[:8])
    assert partial.tools and partial.continue_final
    answer = await provider.complete(partial)
    assert (ANSWER[:8] + answer.text, answer.finish_reason) == (ANSWER, "stop")
