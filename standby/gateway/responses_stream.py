"""A failover stream as the Responses API's server-sent events.

The sequence: ``response.created``, ``response.in_progress``; for a thought summary, a
``reasoning`` item (``response.output_item.added``, ``response.reasoning_summary_part.added``,
``response.reasoning_summary_text.delta`` per piece, ``.reasoning_summary_text.done``,
``.reasoning_summary_part.done``, ``.output_item.done``); for text, a ``message`` item
(``response.output_item.added``, ``response.content_part.added``, ``response.output_text.delta``
per piece, then ``.output_text.done``, ``.content_part.done``, ``.output_item.done``); for each
call, a ``function_call`` item (``.output_item.added``, ``.function_call_arguments.delta`` per
piece, ``.function_call_arguments.done``, ``.output_item.done``); then ``response.completed``, or
``response.incomplete`` (the answer was cut by ``max_output_tokens`` or a content filter). Every
event has its ``type`` on an ``event:`` line and a ``sequence_number`` counting from 0.

Failover is the chat stream's (``FailoverStream``): a failure before the first piece fails over
before any byte is sent, text is continued on the next backend (stitched), and a stream that
broke where nothing could continue it ends in ``response.failed`` (status ``failed``, its
``error`` saying why), never in a clean end. A stream that broke during its thought summary
(no answer text yet) starts the answer over on the next backend: the summary part it cut is
done with ``status: incomplete`` (its item ``incomplete`` too), a next Gemini's own summary
is the item's next part, and the answer follows as usual.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from standby.gateway.failover import FailoverStream, StreamFailure
from standby.gateway.responses_body import (
    INCOMPLETE,
    ResponseShape,
    call_item,
    message_item,
    reasoning_item,
    summary_part,
    text_part,
)
from standby.gateway.responses_ids import ResponseIds
from standby.gateway.routes import OnEnd
from standby.gateway.streaming import Last, failure_message
from standby.protocol import Delta
from standby.tool_calls import ToolCall, ToolCallDelta


class _Events:
    """Numbers the events and writes each as an SSE ``event:`` / ``data:`` pair."""

    __slots__ = ("seq",)

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self.seq}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def text_delta(self, head: bytes, text: str) -> bytes:
        """A ``response.output_text.delta`` event, its bytes up to the text given (``head``,
        made once per message by ``delta_head``): the same bytes as the call above, for the
        event every piece of text sends."""
        seq = self.seq
        self.seq += 1
        return head + orjson.dumps(text) + b',"logprobs":[],"sequence_number":%d}\n\n' % seq


def delta_head(mid: str, index: int) -> bytes:
    """The start of a message's ``response.output_text.delta`` events, to its ``delta``."""
    where = orjson.dumps({"item_id": mid, "output_index": index, "content_index": 0})
    return (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        + where[1:-1]
        + b',"delta":'
    )


class _Call:
    """One function call being streamed: its item id, place in the output, pieces so far."""

    __slots__ = ("args", "call_id", "id", "index", "name", "signature")

    def __init__(self, index: int, piece: ToolCallDelta, ids: ResponseIds) -> None:
        self.id = ids.item("fc")
        self.index = index
        self.call_id = piece.id or ids.item("call")
        self.name = piece.name or ""
        self.signature = piece.signature
        self.args: list[str] = []

    def item(self, status: str) -> dict[str, Any]:
        call = ToolCall(self.call_id, self.name, "".join(self.args), self.signature)
        return call_item(self.id, call, status)


class _Reasoning:
    """The reasoning item being streamed: its id, place in the output, its summary parts' pieces
    (the last part taking pieces while ``open``), and whether a failover cut a part."""

    __slots__ = ("cut", "id", "index", "open", "parts")

    def __init__(self, index: int, ids: ResponseIds) -> None:
        self.id = ids.item("rs")
        self.index = index
        self.parts: list[list[str]] = []
        self.open = False
        self.cut = False

    def item(self, status: str) -> dict[str, Any]:
        return reasoning_item(self.id, ["".join(p) for p in self.parts], status)


class ResponseEvents:
    """The output of one streamed response, item by item, as events."""

    def __init__(self, shape: ResponseShape) -> None:
        self.shape = shape
        self.event = _Events()
        self.output: list[dict[str, Any]] = []  # finished items, and open ones in their place
        self.reasoning: _Reasoning | None = None
        self.message: tuple[str, int, list[str]] | None = None  # id, output index, texts
        self.calls: dict[int, _Call] = {}  # by the delta's call index
        self.open_call: _Call | None = None
        self.final: dict[str, Any] | None = None  # the finished response object
        self.delta_head = b""  # the open message's text delta events start so

    def start(self) -> bytes:
        body = orjson.Fragment(orjson.dumps(self.shape.body(status="in_progress", output=[])))
        return self.event("response.created", response=body) + self.event(
            "response.in_progress", response=body
        )

    def piece(self, delta: Delta) -> list[bytes]:
        out: list[bytes] = []
        if delta.reasoning:
            out += self._reasoning_piece(delta.reasoning)
        if delta.text:
            out += self._close_reasoning() + self._close_call()
            if self.message is None:
                out += self._open_message()
            assert self.message is not None
            self.message[2].append(delta.text)
            out.append(self.event.text_delta(self.delta_head, delta.text))
        for p in delta.tool_calls:
            out += self._call_piece(p)
        return out

    def finish(self, delta: Delta, extra: dict[str, Any]) -> list[bytes]:
        """The last events of a finished answer."""
        assert delta.finish_reason is not None
        status = "incomplete" if delta.finish_reason in INCOMPLETE else "completed"
        out = self._close_reasoning()
        if all(item["type"] == "reasoning" for item in self.output):
            out += self._open_message()  # an empty answer is an empty message, as whole
        out += self._close_message(status) + self._close_call()
        body = self.final = self.shape.finished(
            self.output, delta.finish_reason, delta.usage, extra
        )
        kind = "response.completed" if body["status"] == "completed" else "response.incomplete"
        out.append(self.event(kind, response=body))
        return out

    def interrupted(self) -> list[bytes]:
        """The backend broke during a thought summary and the stream goes on elsewhere: that
        summary part is done, ``incomplete``; the next backend's summary starts the next."""
        r = self.reasoning
        if r is None or not r.open:
            return []
        r.cut = True
        return self._end_part(incomplete=True)

    def failed(self, error: Exception, extra: dict[str, Any]) -> bytes:
        """``response.failed``: what was sent stays in the output, marked incomplete."""
        if self.reasoning is not None:
            self.output[self.reasoning.index] = self.reasoning.item("incomplete")
        if self.message is not None:
            mid, index, texts = self.message
            self.output[index] = message_item(mid, "".join(texts), "incomplete")
        if self.open_call is not None:
            self.output[self.open_call.index] = self.open_call.item("incomplete")
        message = failure_message(error)
        body = self.shape.body(
            status="failed",
            output=self.output,
            error={"code": "server_error", "message": message},
            extra=extra,
        )
        return self.event("response.failed", response=body)

    def _reasoning_piece(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        r = self.reasoning
        if r is None:
            out += self._close_message() + self._close_call()
            r = self.reasoning = _Reasoning(len(self.output), self.shape.ids)
            item = r.item("in_progress")
            self.output.append(item)
            out.append(self.event("response.output_item.added", output_index=r.index, item=item))
        where = {"item_id": r.id, "output_index": r.index}
        if not r.open:
            r.open = True
            r.parts.append([])
            out.append(
                self.event(
                    "response.reasoning_summary_part.added",
                    **where,
                    summary_index=len(r.parts) - 1,
                    part=summary_part(""),
                )
            )
        r.parts[-1].append(text)
        out.append(
            self.event(
                "response.reasoning_summary_text.delta",
                **where,
                summary_index=len(r.parts) - 1,
                delta=text,
            )
        )
        return out

    def _end_part(self, *, incomplete: bool = False) -> list[bytes]:
        """The events that finish the open summary part (``incomplete``: a failover cut it)."""
        r = self.reasoning
        if r is None or not r.open:
            return []
        r.open = False
        text = "".join(r.parts[-1])
        where = {"item_id": r.id, "output_index": r.index, "summary_index": len(r.parts) - 1}
        cut = {"status": "incomplete"} if incomplete else {}
        return [
            self.event("response.reasoning_summary_text.done", **where, text=text),
            self.event(
                "response.reasoning_summary_part.done", **where, part=summary_part(text), **cut
            ),
        ]

    def _close_reasoning(self) -> list[bytes]:
        r = self.reasoning
        if r is None:
            return []
        out = self._end_part()
        self.reasoning = None
        item = r.item("incomplete" if r.cut else "completed")
        self.output[r.index] = item
        out.append(self.event("response.output_item.done", output_index=r.index, item=item))
        return out

    def _open_message(self) -> list[bytes]:
        mid, index = self.shape.ids.item("msg"), len(self.output)
        self.message = (mid, index, [])
        self.delta_head = delta_head(mid, index)
        item = message_item(mid, None, "in_progress")
        self.output.append(item)
        return [
            self.event("response.output_item.added", output_index=index, item=item),
            self.event(
                "response.content_part.added",
                item_id=mid,
                output_index=index,
                content_index=0,
                part=text_part(""),
            ),
        ]

    def _close_message(self, status: str = "completed") -> list[bytes]:
        if self.message is None:
            return []
        mid, index, texts = self.message
        self.message = None
        text = "".join(texts)
        item = message_item(mid, text, status)
        self.output[index] = item
        where = {"item_id": mid, "output_index": index, "content_index": 0}
        return [
            self.event("response.output_text.done", **where, text=text, logprobs=[]),
            self.event("response.content_part.done", **where, part=text_part(text)),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    def _call_piece(self, p: ToolCallDelta) -> list[bytes]:
        out: list[bytes] = []
        call = self.calls.get(p.index)
        if call is None:
            out += self._close_reasoning() + self._close_message() + self._close_call()
            call = self.calls[p.index] = self.open_call = _Call(len(self.output), p, self.shape.ids)
            item = call.item("in_progress")
            self.output.append(item)
            out.append(self.event("response.output_item.added", output_index=call.index, item=item))
        elif p.signature is not None:
            call.signature = p.signature
        if p.arguments:
            call.args.append(p.arguments)
            out.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=call.id,
                    output_index=call.index,
                    delta=p.arguments,
                )
            )
        return out

    def _close_call(self) -> list[bytes]:
        call = self.open_call
        if call is None:
            return []
        self.open_call = None
        item = call.item("completed")
        self.output[call.index] = item
        return [
            self.event(
                "response.function_call_arguments.done",
                item_id=call.id,
                output_index=call.index,
                name=call.name,
                arguments=item["arguments"],
            ),
            self.event("response.output_item.done", output_index=call.index, item=item),
        ]


async def response_events(
    stream: FailoverStream,
    first: Delta | StreamFailure,
    shape: ResponseShape,
    on_end: OnEnd,
    keep: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """The stream's deltas as Responses events. ``on_end(outcome, final delta)`` runs exactly
    once, with ``ok`` or ``error``, however the stream ends (client disconnects included).
    ``keep(response)`` stores a finished response before its last event is sent, so a client
    may continue it as soon as it sees ``response.completed``; a failed one is not kept."""
    events = ResponseEvents(shape)
    status = "error"
    final: Delta | None = None
    try:
        out = [events.start()]  # the opening events go out with the first piece's, in one send
        item: Delta | StreamFailure | None = first
        iterator = aiter(stream)
        resumed = 0  # the stream's moves to another backend seen so far
        while item is not None:
            if isinstance(item, StreamFailure):
                out.append(events.failed(item.error, stream.outcome.extra()))
                yield Last(b"".join(out))
                return
            if stream.resumed != resumed:
                resumed = stream.resumed
                out += events.interrupted()
            out += events.piece(item)
            if item.finish_reason is not None:
                out += events.finish(item, stream.outcome.extra())
                status, final = "ok", item
                if keep is not None and events.final is not None:
                    await keep(events.final)
            if final is not None:
                yield Last(b"".join(out))
                return
            if out:
                yield b"".join(out)
                out = []
            item = await anext(iterator, None)
    finally:
        # Bookkeeping first: if the client went away this task may be cancelled at any await.
        stream.abandon()
        on_end(status, final)
        await stream.aclose()
