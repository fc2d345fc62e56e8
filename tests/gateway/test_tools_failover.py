"""The failover rules for requests that use tools (the failover table in docs/architecture.md),
in-process: transparent failover before the first chunk, no stitching once a tool-call piece was
sent, stitching of text with the tools kept, and backends that cannot do tools skipped (reason
``unsupported``), with a 400 when none of the route can."""

from __future__ import annotations

import openai
import pytest

from standby.errors import UpstreamConnectError, UpstreamStatusError
from standby.protocol import Message
from standby.providers.fake import Cut, FakeProvider, Reply
from tests.fixtures.fake_gateway import HELLO, ROUTE, fake_gateway
from tests.fixtures.openai_schema import assert_chat_completion, assert_chunk
from tests.fixtures.tool_calls import ASK_WEATHER, PARIS, TOOLS, streamed_calls

P, F = "primary", "fallback"
MODES = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
NO_TOOLS = "this backend has no tool calling"


@MODES
async def test_failure_before_the_first_chunk_fails_over_with_the_tools(stream: bool) -> None:
    primary = FakeProvider(P, UpstreamStatusError(P, 503, "unavailable"))
    fallback = FakeProvider(F, Reply(calls=[PARIS]))
    async with fake_gateway(primary, fallback) as gw:
        answer = await gw.ask(stream=stream, messages=ASK_WEATHER, tools=TOOLS)
    assert answer.status == 200 and answer.finish == "tool_calls"
    assert answer.headers["x-standby-backend"] == F
    assert answer.standby == {
        "backend": F,
        "provenance": "fallback",
        "fallback_reason": "server_error",
    }
    if stream:
        assert streamed_calls(answer.events) == [PARIS.openai()] and answer.done
    else:
        assert answer.body["choices"][0]["message"]["tool_calls"] == [PARIS.openai()]
    assert fallback.requests[0].tools == primary.requests[0].tools != ()


async def test_a_stream_cut_after_a_tool_call_piece_is_not_stitched() -> None:
    primary = FakeProvider(P, Cut("Checking.", calls=[PARIS]))
    fallback = FakeProvider(F)
    async with fake_gateway(primary, fallback) as gw:
        answer = await gw.ask(stream=True, messages=ASK_WEATHER, tools=TOOLS)
        assert gw.metric("standby_upstream_errors_total", backend=P, reason="connect") == 1
        assert gw.metric("standby_requests_total", route=ROUTE, backend=P, outcome="error") == 1
        assert (
            gw.sample(
                "standby_fallbacks_total",
                route=ROUTE,
                from_backend=P,
                to_backend=P,
                reason="mid_stream",
            )
            is None
        )  # no fallback happened
    assert fallback.requests == []  # a call cannot be finished by another model
    assert answer.status == 200 and not answer.done
    assert streamed_calls(answer.events) == [PARIS.openai()]  # what had arrived
    error = answer.events[-1]["error"]
    assert error["code"] == "stream_interrupted"
    assert error["message"] == (
        "stream interrupted: primary: UpstreamConnectError (connection reset)"
    )
    for event in answer.events[:-1]:
        assert_chunk(event)


async def test_the_sdk_raises_on_a_stream_cut_after_a_tool_call_piece() -> None:
    async with fake_gateway(FakeProvider(P, Cut(calls=[PARIS])), FakeProvider(F)) as gw:
        stream = await gw.sdk().chat.completions.create(
            model=ROUTE,
            messages=ASK_WEATHER,
            tools=TOOLS,
            stream=True,
        )
        with pytest.raises(openai.APIError, match="stream interrupted"):
            async for _ in stream:
                pass


async def test_text_cut_with_tools_offered_is_stitched_and_keeps_the_tools() -> None:
    primary = FakeProvider(P, Cut("Let me ", "look"))
    fallback = FakeProvider(F, Reply(" that up.", calls=[PARIS]))
    async with fake_gateway(primary, fallback) as gw:
        answer = await gw.ask(stream=True, messages=ASK_WEATHER, tools=TOOLS, tool_choice="auto")
    assert answer.done and answer.text == "Let me look that up."
    assert answer.finish == "tool_calls"
    assert streamed_calls(answer.events) == [PARIS.openai()]
    assert answer.standby == {
        "backend": F,
        "provenance": "stitched",
        "fallback_reason": "mid_stream",
    }
    [continued] = fallback.requests
    assert continued.continue_final
    assert continued.messages[-1] == Message("assistant", "Let me look")
    assert continued.tools == primary.requests[0].tools and len(continued.tools) == 2
    for event in answer.events:
        assert_chunk(event)


# -- backends that cannot do tools --------------------------------------------------------------


@MODES
async def test_a_backend_without_tools_is_skipped_uncalled_and_counted(stream: bool) -> None:
    primary = FakeProvider(P, no_tools=NO_TOOLS)
    fallback = FakeProvider(F, Reply(calls=[PARIS]))
    async with fake_gateway(primary, fallback, breaker={"failures": 1}) as gw:
        labels = {"route": ROUTE, "from_backend": P, "to_backend": F, "reason": "unsupported"}
        assert gw.sample("standby_fallbacks_total", **labels) == 0  # declared at start
        answer = await gw.ask(stream=stream, messages=ASK_WEATHER, tools=TOOLS)
        assert answer.status == 200 and answer.finish == "tool_calls"
        assert answer.headers["x-standby-fallback-reason"] == "unsupported"
        assert primary.requests == []
        assert gw.breaker(P) == "CLOSED"  # not the backend's fault
        assert gw.metric("standby_fallbacks_total", **labels) == 1
        # The same backend still answers plain text.
        plain = await gw.ask(stream=stream)
        assert plain.status == 200 and plain.standby["backend"] == P
        assert len(primary.requests) == 1


async def test_a_history_with_tool_calls_also_needs_a_backend_with_tools() -> None:
    primary = FakeProvider(P, no_tools=NO_TOOLS)
    fallback = FakeProvider(F, Reply("It is sunny."))
    history = [
        *ASK_WEATHER,
        {"role": "assistant", "content": None, "tool_calls": [PARIS.openai()]},
        {"role": "tool", "tool_call_id": PARIS.id, "content": "sunny"},
    ]
    async with fake_gateway(primary, fallback) as gw:
        answer = await gw.ask(messages=history)  # no tools offered this turn
    assert answer.standby["backend"] == F and primary.requests == []
    assert_chat_completion(answer.body)


@MODES
async def test_no_backend_of_the_route_can_do_tools_is_a_400_naming_why(stream: bool) -> None:
    primary = FakeProvider(P, no_tools=NO_TOOLS)
    fallback = FakeProvider(F, no_tools="the local model has no tool template")
    async with fake_gateway(primary, fallback) as gw:
        answer = await gw.ask(stream=stream, messages=ASK_WEATHER, tools=TOOLS)
        assert (
            gw.metric("standby_requests_total", route=ROUTE, backend="none", outcome="client_error")
            == 1
        )
        # Not an error of the backend (it was not called).
        assert gw.metric("standby_upstream_errors_total", backend=P, reason="unsupported") == 0
    assert answer.status == 400
    assert answer.body["error"] == {
        "message": (
            f"no backend of route 'chat' can serve this request: primary: {NO_TOOLS}; "
            "fallback: the local model has no tool template"
        ),
        "type": "invalid_request_error",
        "param": "tools",  # the one thing the request needs that nobody has
        "code": "unsupported",
    }
    assert primary.requests == fallback.requests == []


async def test_the_sdk_raises_bad_request_when_no_backend_can_do_tools() -> None:
    async with fake_gateway(FakeProvider(P, no_tools=NO_TOOLS)) as gw:
        with pytest.raises(openai.BadRequestError, match="can serve this request"):
            await gw.sdk().chat.completions.create(
                model=ROUTE,
                messages=ASK_WEATHER,
                tools=TOOLS,
            )


@MODES
async def test_unsupported_mixed_with_other_failures_stays_a_503(stream: bool) -> None:
    primary = FakeProvider(P, no_tools=NO_TOOLS)
    fallback = FakeProvider(F, UpstreamConnectError(F, "connection refused"))
    async with fake_gateway(primary, fallback) as gw:
        answer = await gw.ask(stream=stream, messages=ASK_WEATHER, tools=TOOLS)
    assert answer.status == 503
    assert answer.body["error"]["code"] == "all_backends_failed"
    reasons = [(e["backend"], e["reason"]) for e in answer.body["standby"]["errors"]]
    assert reasons == [(P, "unsupported"), (F, "connect")]


async def test_plain_text_requests_never_hit_the_unsupported_skip() -> None:
    only = FakeProvider(P, no_tools=NO_TOOLS)
    async with fake_gateway(only) as gw:
        answer = await gw.ask(messages=HELLO)
    assert answer.status == 200 and answer.standby["fallback_reason"] is None


async def test_a_continuation_skips_a_backend_without_tools() -> None:
    primary = FakeProvider(P, Cut("Let me ", "look"))
    no_tools = FakeProvider(F, no_tools=NO_TOOLS)
    third = FakeProvider("third", Reply(" it up."))
    async with fake_gateway(primary, no_tools, third) as gw:
        answer = await gw.ask(stream=True, messages=ASK_WEATHER, tools=TOOLS)
    assert answer.done and answer.text == "Let me look it up."
    assert answer.standby == {
        "backend": "third",
        "provenance": "stitched",
        "fallback_reason": "mid_stream",
    }
    assert no_tools.requests == [] and third.requests[0].tools == primary.requests[0].tools
