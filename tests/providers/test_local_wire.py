"""The hop between a worker and the model process (``providers/local_wire.py``): what a request,
its answer's pieces and its errors become on the wire, and back."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from standby.errors import (
    BackendBusy,
    Unsupported,
    UpstreamError,
    UpstreamTimeout,
)
from standby.media import Media
from standby.protocol import ChatRequest, Delta, Message, Usage
from standby.providers.local_wire import (
    MAX_FRAME,
    FrameError,
    delta_message,
    delta_of,
    error_message,
    error_of,
    read_frame,
    request_of,
    stream_message,
)
from standby.tool_calls import Tool, ToolCall, ToolCallDelta, ToolChoice


def body(frame: bytes) -> dict[str, object]:
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    decoded = orjson.loads(frame[4:])
    assert isinstance(decoded, dict)
    return decoded


def test_a_request_crosses_whole() -> None:
    request = ChatRequest(
        messages=(
            Message("system", "Be brief."),
            Message("user", "look", parts=("look", Media("image", "image/png", b"\x89PNG\x00"))),
            Message("assistant", "", tool_calls=(ToolCall("c1", "f", '{"a":1}', "sig"),)),
            Message("tool", "done", tool_call_id="c1", name="f"),
        ),
        temperature=0.3,
        stop=("END",),
        tools=(Tool("f", "does f", {"type": "object"}, True),),
        tool_choice=ToolChoice("required", "f"),
        logit_bias={17: -100},
        response_format={"type": "json_object"},
        n=2,
        logprobs=True,
        top_logprobs=3,
        continue_final=True,
    )
    data = body(stream_message(request))
    assert data["op"] == "stream"
    assert request_of(data["request"]) == request  # type: ignore[arg-type]


def test_a_delta_crosses_whole() -> None:
    delta = Delta(
        text="Hi",
        finish_reason="tool_calls",
        usage=Usage(3, 4, None, 1),
        model_version="adapter@v2",
        tool_calls=(ToolCallDelta(0, "c1", "f", "{}"),),
        logprobs=[{"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}],
        index=1,
    )
    assert delta_of(body(delta_message(delta))["delta"]) == delta  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [BackendBusy("gemma", "queue full"), Unsupported("gemma", "no"), UpstreamError("g", "x")],
)
def test_an_error_keeps_its_type(error: UpstreamError) -> None:
    back = error_of(body(error_message(error))["error"])  # type: ignore[arg-type]
    assert type(back) is type(error)
    assert (back.backend, back.message, back.counts) == (error.backend, error.message, error.counts)


def test_an_error_the_hop_does_not_know_stays_an_upstream_error() -> None:
    back = error_of(body(error_message(UpstreamTimeout("gemma", "idle", 2)))["error"])  # type: ignore[arg-type]
    assert type(back) is UpstreamError and back.message == "idle timeout after 2s"
    assert type(error_of({"type": "Nonsense", "backend": "g", "message": "m"})) is UpstreamError


async def test_frames_are_bounded_and_end_cleanly() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data((MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(FrameError):
        await read_frame(reader)
    reader = asyncio.StreamReader()
    reader.feed_data(delta_message(Delta(text="a")))
    reader.feed_eof()
    assert (await read_frame(reader))["delta"]["text"] == "a"
    assert await read_frame(reader) is None  # closed between frames
    reader = asyncio.StreamReader()
    reader.feed_data(b"\x00\x00\x00\x09{")
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError):  # closed inside a frame
        await read_frame(reader)
