"""The failover table of docs/architecture.md, row by row, in-process: scripted ``FakeProvider``
backends behind the real ASGI app. Each row is checked for whole answers and streams: status, body,
headers, breaker state and metric counters. ``test_failover.py`` keeps the end-to-end smoke rows
(real uvicorn, the simulated Gemini, the tiny local Gemma)."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from standby.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from standby.protocol import Message
from standby.providers.fake import Blocked, Cut, FakeProvider, Hang, Reply, Step
from tests.fixtures.fake_gateway import HELLO, ROUTE, Answer, fake_config, fake_gateway

P, F = "primary", "fallback"
RESCUE = Reply("Rescued ", "answer.")
MODES = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])

FAILOVER: list[tuple[str, Step, str]] = [
    ("connect-refused", UpstreamConnectError(P, "connection refused"), "connect"),
    ("reset", UpstreamConnectError(P, "connection reset by peer"), "connect"),
    ("connect-timeout", UpstreamTimeout(P, "connect", 0.2), "timeout"),
    ("hang", Hang(), "timeout"),  # first_token_s, a whole answer's as a stream's
    ("429", UpstreamStatusError(P, 429, "RESOURCE_EXHAUSTED"), "rate_limited"),
    ("500", UpstreamStatusError(P, 500, "internal"), "server_error"),
    ("502", UpstreamStatusError(P, 502, "bad gateway"), "server_error"),
    ("503", UpstreamStatusError(P, 503, "unavailable"), "server_error"),
    ("504", UpstreamStatusError(P, 504, "deadline exceeded"), "server_error"),
    ("401", UpstreamStatusError(P, 401, "API key not valid"), "auth"),
    ("403", UpstreamStatusError(P, 403, "permission denied"), "auth"),
    ("malformed", UpstreamProtocolError(P, "not JSON"), "server_error"),
]


def standby(answer: Answer, backend: str, provenance: str, reason: str | None) -> None:
    expected = {"backend": backend, "provenance": provenance, "fallback_reason": reason}
    assert answer.standby == expected


def assert_rescued(answer: Answer, reason: str) -> None:
    assert answer.status == 200
    assert (answer.text, answer.finish) == ("Rescued answer.", "stop")
    assert answer.headers["x-standby-backend"] == F
    assert answer.headers["x-standby-fallback-reason"] == reason
    standby(answer, F, "fallback", reason)
    if answer.events:
        assert answer.done


@MODES
@pytest.mark.parametrize(
    ("step", "reason"), [r[1:] for r in FAILOVER], ids=[r[0] for r in FAILOVER]
)
async def test_failure_fails_over_counts_and_opens_the_breaker(
    step: Step, reason: str, stream: bool
) -> None:
    primary, fallback = FakeProvider(P, default=step), FakeProvider(F, default=RESCUE)
    async with fake_gateway(primary, fallback) as gw:
        for attempt in range(3):
            assert_rescued(await gw.ask(stream=stream), reason)
            assert gw.breaker(P) == ("CLOSED" if attempt < 2 else "OPEN")
        assert len(primary.requests) == 3
        # Open breaker: the primary is skipped without being called.
        assert_rescued(await gw.ask(stream=stream), "breaker_open")
        assert len(primary.requests) == 3
        assert gw.metric("standby_upstream_errors_total", backend=P, reason=reason) == 3
        assert gw.metric("standby_upstream_errors_total", backend=P, reason="breaker_open") == 0
        for why, count in ((reason, 3), ("breaker_open", 1)):
            labels = {"route": ROUTE, "from_backend": P, "to_backend": F, "reason": why}
            assert gw.metric("standby_fallbacks_total", **labels) == count
        assert gw.metric("standby_requests_total", route=ROUTE, backend=F, outcome="ok") == 4
        assert gw.metric("standby_requests_total", route=ROUTE, backend=P, outcome="ok") == 0
        assert gw.metric("standby_breaker_state", backend=P) == 2
        assert gw.metric("standby_tokens_total", backend=F, type="output") == 4 * 2
        assert gw.metric("standby_in_flight_requests", route=ROUTE) == 0


PHASES: list[tuple[str, bool, Step, dict[str, float], str]] = [
    ("connect", False, UpstreamTimeout(P, "connect", 0.2), {}, "connect timeout after 0.2s"),
    # A whole answer is read as a stream, under the same three limits.
    ("whole-first-token", False, Hang(), {"total_s": 5}, "first_token timeout after 0.2s"),
    ("whole-idle", False, Hang("Hello "), {"total_s": 5}, "idle timeout after 0.2s"),
    (
        "whole-total",
        False,
        Hang(),
        {"first_token_s": 5, "total_s": 0.2},
        "total timeout after 0.2s",
    ),
    # The limit after content is shorter than the one before it: the stream's timer, set for
    # the first piece, is set again sooner.
    (
        "whole-idle-sooner",
        False,
        Hang("Hello "),
        {"first_token_s": 5, "total_s": 5},
        "idle timeout after 0.2s",
    ),
    # Pieces at 0.15 and 0.3 s, the third too late: the timer comes due at first_token_s
    # (0.3 s) while pieces are still coming, is set again for what is left of total_s and
    # fires then.
    (
        "whole-total-after-content",
        False,
        Reply("Hello ", "wor", "never", delay_s=0.15),
        {"first_token_s": 0.3, "idle_s": 5, "total_s": 0.4},
        "total timeout after 0.4s",
    ),
    ("stream-first-token", True, Hang(), {"total_s": 5}, "first_token timeout after 0.2s"),
    (
        "stream-total",
        True,
        Hang(),
        {"first_token_s": 5, "total_s": 0.2},
        "total timeout after 0.2s",
    ),
]


@pytest.mark.parametrize(
    ("stream", "step", "limits", "message"), [p[1:] for p in PHASES], ids=[p[0] for p in PHASES]
)
async def test_each_time_limit_fires_and_is_named(
    stream: bool, step: Step, limits: dict[str, float], message: str
) -> None:
    config = fake_config(P)
    config["backends"][P]["timeouts"].update(limits)
    async with fake_gateway(FakeProvider(P, default=step), config=config) as gw:
        began = time.monotonic()
        answer = await gw.ask(stream=stream)
        assert time.monotonic() - began < 2
    assert answer.status == 503
    [error] = answer.body["standby"]["errors"]
    assert (error["backend"], error["error"], error["reason"]) == (P, "UpstreamTimeout", "timeout")
    assert error["message"] == message


@MODES
async def test_pieces_that_keep_coming_are_read_past_every_single_limit(stream: bool) -> None:
    # Each piece within idle_s (0.2 s), the whole answer longer than first_token_s and idle_s
    # together: no limit fires, however often the stream's one timer comes due in between.
    pieces = [f"w{i} " for i in range(12)]
    config = fake_config(P)
    config["backends"][P]["timeouts"].update({"total_s": 5})
    primary = FakeProvider(P, default=Reply(*pieces, delay_s=0.05))
    async with fake_gateway(primary, config=config) as gw:
        began = time.monotonic()
        answer = await gw.ask(stream=stream)
        assert time.monotonic() - began >= 0.6
    assert answer.status == 200
    assert (answer.text, answer.finish) == ("".join(pieces), "stop")
    standby(answer, P, "primary", None)


async def test_idle_timeout_after_content_ends_the_stream_with_an_error_event() -> None:
    async with fake_gateway(FakeProvider(P, Hang("Hello "))) as gw:
        answer = await gw.ask(stream=True)
    assert answer.status == 200 and not answer.done
    assert answer.text == "Hello "
    error = answer.events[-1]["error"]
    assert error["code"] == "stream_interrupted"
    assert "idle timeout after 0.2s" in error["message"]


async def test_retry_after_of_a_429_holds_the_breaker_open() -> None:
    limited = UpstreamStatusError(P, 429, "RESOURCE_EXHAUSTED", retry_after=5)
    primary, fallback = FakeProvider(P, limited), FakeProvider(F, default=RESCUE)
    async with fake_gateway(primary, fallback, breaker={"failures": 1, "cooldown_s": 1}) as gw:
        assert_rescued(await gw.ask(), "rate_limited")
        ready = (await gw.http.get("/readyz")).json()["backends"][P]
    assert ready["breaker"] == "open"
    assert 4 < ready["retry_in_s"] <= 5  # Retry-After 5 s beats the 1 s cool-down


CLIENT_ERRORS = [(400, 400), (404, 404), (413, 413), (422, 400)]


@MODES
@pytest.mark.parametrize(
    ("upstream", "status"), CLIENT_ERRORS, ids=[str(c[0]) for c in CLIENT_ERRORS]
)
async def test_client_errors_are_returned_not_failed_over_nor_counted(
    upstream: int, status: int, stream: bool
) -> None:
    rejected = UpstreamStatusError(P, upstream, "Invalid JSON payload")
    primary, fallback = FakeProvider(P, default=rejected), FakeProvider(F)
    async with fake_gateway(primary, fallback) as gw:
        for _ in range(4):
            answer = await gw.ask(stream=stream)
            assert answer.status == status
            assert answer.body["error"]["code"] == "upstream_rejected"
            assert "Invalid JSON payload" in answer.body["error"]["message"]
            assert answer.headers["x-standby-backend"] == P
        assert gw.breaker(P) == "CLOSED"
        assert fallback.requests == []
        assert (
            gw.metric("standby_requests_total", route=ROUTE, backend=P, outcome="client_error") == 4
        )
        for reason in ("server_error", "client_error", "auth"):
            assert gw.metric("standby_upstream_errors_total", backend=P, reason=reason) == 0


@MODES
async def test_blocked_answer_is_a_content_filter_by_default(stream: bool) -> None:
    primary, fallback = FakeProvider(P, default=Blocked()), FakeProvider(F)
    async with fake_gateway(primary, fallback) as gw:
        for _ in range(4):
            answer = await gw.ask(stream=stream)
            assert (answer.status, answer.text, answer.finish) == (200, "", "content_filter")
            assert answer.headers["x-standby-backend"] == P
            assert "x-standby-fallback-reason" not in answer.headers
            standby(answer, P, "primary", None)
        assert gw.breaker(P) == "CLOSED"
        assert fallback.requests == []


@MODES
async def test_blocked_answer_can_opt_into_fallback(stream: bool) -> None:
    primary = FakeProvider(P, default=Blocked(), on_blocked="fallback")
    async with fake_gateway(primary, FakeProvider(F, default=RESCUE)) as gw:
        for _ in range(4):
            assert_rescued(await gw.ask(stream=stream), "blocked")
        assert gw.breaker(P) == "CLOSED"  # a refusal is not an outage
        assert len(primary.requests) == 4
        assert gw.metric("standby_upstream_errors_total", backend=P, reason="blocked") == 4


STITCHED: list[tuple[str, Step, dict[str, float], str]] = [
    ("cut", Cut("Hello ", "wor"), {}, "connect"),
    ("idle", Hang("Hello ", "wor"), {}, "timeout"),
    # Two pieces 0.2 s apart, then the 0.5 s total runs out before the third.
    (
        "total",
        Reply("Hello ", "wor", "never", delay_s=0.2),
        {"first_token_s": 1, "idle_s": 1, "total_s": 0.5},
        "timeout",
    ),
]


@pytest.mark.parametrize(
    ("step", "limits", "reason"), [s[1:] for s in STITCHED], ids=[s[0] for s in STITCHED]
)
async def test_stream_broken_after_content_is_stitched_onto_the_fallback(
    step: Step, limits: dict[str, float], reason: str
) -> None:
    primary, fallback = FakeProvider(P, step), FakeProvider(F, Reply("ld", "."))
    config = fake_config(P, F)
    config["backends"][P]["timeouts"].update(limits)
    async with fake_gateway(primary, fallback, config=config) as gw:
        answer = await gw.ask(stream=True)
        assert answer.status == 200 and answer.done
        assert answer.headers["x-standby-backend"] == P  # sent with the primary's first piece
        assert "x-standby-fallback-reason" not in answer.headers
        assert (answer.text, answer.finish) == ("Hello world.", "stop")
        standby(answer, F, "stitched", "mid_stream")
        [continued] = fallback.requests
        assert continued.continue_final
        assert continued.messages[-1] == Message("assistant", "Hello wor")
        assert continued.messages[:-1] == primary.requests[0].messages
        assert gw.breaker(P) == "CLOSED"  # one failure counted, threshold is three
        labels = {"route": ROUTE, "from_backend": P, "to_backend": F, "reason": "mid_stream"}
        assert gw.metric("standby_fallbacks_total", **labels) == 1
        assert gw.metric("standby_upstream_errors_total", backend=P, reason=reason) == 1
        assert gw.metric("standby_requests_total", route=ROUTE, backend=F, outcome="ok") == 1
        assert gw.metric("standby_time_to_first_token_seconds_count", route=ROUTE, backend=F) == 1


async def test_a_continuation_can_itself_be_continued() -> None:
    third = FakeProvider("third", Reply("!"))
    fakes = FakeProvider(P, Cut("Hel")), FakeProvider(F, Cut("lo")), third
    async with fake_gateway(*fakes) as gw:
        answer = await gw.ask(stream=True)
    assert (answer.text, answer.done) == ("Hello!", True)
    standby(answer, "third", "stitched", "mid_stream")
    assert third.requests[0].messages[-1] == Message("assistant", "Hello")


@pytest.mark.parametrize(
    ("fallback_step", "message"),
    [
        (None, "stream interrupted: all backends of route 'chat' failed: primary: Upstream"),
        (UpstreamStatusError(F, 503, "down"), "stream interrupted: all backends"),
        (
            UpstreamStatusError(F, 400, "too long"),
            "stream interrupted: fallback: UpstreamStatusError",
        ),
    ],
    ids=["no-fallback", "fallback-fails", "fallback-rejects"],
)
async def test_a_cut_stream_nothing_can_continue_ends_in_an_error_event(
    fallback_step: UpstreamError | None, message: str
) -> None:
    fakes = [FakeProvider(P, Cut("Hello ", "wor"))]
    if fallback_step is not None:
        fakes.append(FakeProvider(F, fallback_step))
    async with fake_gateway(*fakes) as gw:
        answer = await gw.ask(stream=True)
        # Counted against the backend that answered last: the primary.
        assert gw.metric("standby_requests_total", route=ROUTE, backend=P, outcome="error") == 1
    assert answer.status == 200 and not answer.done  # never ended as a clean success
    assert answer.text == "Hello wor"  # the partial answer did arrive
    error = answer.events[-1]["error"]
    assert error["code"] == "stream_interrupted"
    assert error["message"].startswith(message)


async def test_the_sdk_raises_on_an_interrupted_stream() -> None:
    async with fake_gateway(FakeProvider(P, Cut("Hello "))) as gw:
        stream = await gw.sdk().chat.completions.create(model=ROUTE, messages=HELLO, stream=True)
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass


async def test_a_client_error_mid_stream_ends_the_stream_without_moving_on() -> None:
    cut = Cut("Hello ", error=UpstreamStatusError(P, 400, "bad continuation"))
    fallback = FakeProvider(F)
    async with fake_gateway(FakeProvider(P, cut), fallback) as gw:
        answer = await gw.ask(stream=True)
    assert answer.text == "Hello " and not answer.done
    assert answer.events[-1]["error"]["code"] == "stream_interrupted"
    assert fallback.requests == []  # a client error does not move on, even mid-stream


@MODES
async def test_every_backend_failing_is_a_503_naming_each(stream: bool) -> None:
    primary = FakeProvider(P, UpstreamStatusError(P, 503, "unavailable"))
    fallback = FakeProvider(F, UpstreamConnectError(F, "connection refused"))
    async with fake_gateway(primary, fallback) as gw:
        answer = await gw.ask(stream=stream)
        assert (
            gw.metric("standby_requests_total", route=ROUTE, backend="none", outcome="error") == 1
        )
    assert answer.status == 503
    assert answer.headers["retry-after"] == "1"
    error = answer.body["error"]
    assert (error["type"], error["code"]) == ("service_unavailable_error", "all_backends_failed")
    assert "primary: UpstreamStatusError" in error["message"]
    assert "fallback: UpstreamConnectError" in error["message"]
    errors = [(e["backend"], e["error"], e["reason"]) for e in answer.body["standby"]["errors"]]
    assert errors == [
        (P, "UpstreamStatusError", "server_error"),
        (F, "UpstreamConnectError", "connect"),
    ]


async def test_all_failed_retry_after_is_the_shortest_hint() -> None:
    primary = FakeProvider(P, UpstreamStatusError(P, 429, "quota", retry_after=7))
    fallback = FakeProvider(F, UpstreamStatusError(F, 429, "quota", retry_after=12))
    async with fake_gateway(primary, fallback) as gw:
        answer = await gw.ask()
    assert (answer.status, answer.headers["retry-after"]) == (503, "7")


@MODES
async def test_open_breaker_is_skipped_without_waiting(stream: bool) -> None:
    primary, fallback = FakeProvider(P, default=Hang()), FakeProvider(F, default=RESCUE)
    async with fake_gateway(primary, fallback, breaker={"failures": 1}) as gw:
        assert_rescued(await gw.ask(stream=stream), "timeout")  # waits the time limit once
        began = time.monotonic()
        assert_rescued(await gw.ask(stream=stream), "breaker_open")
        assert time.monotonic() - began < 0.15  # under the 0.2 s limit: nobody waited for it
        assert len(primary.requests) == 1


async def test_after_the_cool_down_one_probe_closes_the_breaker() -> None:
    primary = FakeProvider(P, UpstreamStatusError(P, 503, "down"), default=Reply("Back."))
    async with fake_gateway(
        primary, FakeProvider(F), breaker={"failures": 1, "cooldown_s": 0.3}
    ) as gw:
        await gw.ask()
        assert gw.metric("standby_breaker_state", backend=P) == 2
        await asyncio.sleep(0.35)
        answer = await gw.ask()
        assert (answer.headers["x-standby-backend"], answer.text) == (P, "Back.")
        assert gw.breaker(P) == "CLOSED"
        assert gw.metric("standby_breaker_state", backend=P) == 0


@MODES
async def test_busy_backend_is_skipped_without_a_call(stream: bool) -> None:
    primary, fallback = FakeProvider(P), FakeProvider(F, default=RESCUE)
    primary.busy = True
    async with fake_gateway(primary, fallback) as gw:
        assert_rescued(await gw.ask(stream=stream), "busy")
        assert primary.requests == []
        assert gw.breaker(P) == "CLOSED"
        fallback.busy = True
        answer = await gw.ask(stream=stream)
    assert answer.status == 503
    errors = [(e["backend"], e["reason"]) for e in answer.body["standby"]["errors"]]
    assert errors == [(P, "busy"), (F, "busy")]
